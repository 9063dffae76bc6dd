"""Test-wide settings: one torch thread per test process.

The suite's networks are tiny; on a 2-core machine intra-op threads cost more than they give, and
tests run in parallel processes (pytest-xdist) instead.
"""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def without_native_kernels(monkeypatch):
    """GroupNorm+SiLU through PyTorch only, as where no C compiler is found (genzoo/nets/cpu_kernels.py)."""
    from genzoo.nets import cpu_kernels

    monkeypatch.setattr(cpu_kernels, "library", lambda: None)
