"""Test-wide settings: one torch thread per test process.

The suite's networks are tiny; on a 2-core machine intra-op threads cost more than they give, and
tests run in parallel processes (pytest-xdist) instead.
"""

import torch

torch.set_num_threads(1)
