"""Optional ``torch.compile`` of a network for sampling, with a clean fallback where it cannot run.

Inductor fuses the elementwise work between convolutions (GroupNorm, scale-shift, SiLU, residual adds) into
generated kernels; with ``freezing`` it also pre-packs the convolution weights for oneDNN, which pays on
CPU. Frozen weights are constants of the compiled graph, so this is for inference only: weights loaded or
changed after the first call are not seen. Compiling costs tens of seconds to minutes per model and input
shape (docs/performance.md), so it only pays for long sampling runs.
"""

from __future__ import annotations

import os
import shutil
import warnings

import torch
import torch.nn as nn


def compile_unavailable(device: torch.device | str) -> str | None:
    """Why ``torch.compile`` cannot run on ``device`` here (no C++ compiler, no Triton), or None."""
    device = torch.device(device)
    try:
        import torch._dynamo as dynamo

        if not dynamo.is_dynamo_supported():
            return "torch.compile does not support this Python"
    except Exception as exc:  # an import error or unsupported platform: report it, never crash
        return f"torch.compile is unavailable ({type(exc).__name__})"
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "Triton is not installed"
    if device.type == "cpu":
        names = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
        return None if any(n and shutil.which(n) for n in names) else "no C++ compiler found (set CXX)"
    return f"not supported on {device.type}"


def compile_for_inference(module: nn.Module, device: torch.device | str) -> bool:
    """Compile ``module`` in place (``nn.Module.compile``: same object, same state_dict keys) with frozen
    weights; False, with a one-line warning, where compiling cannot run (the module then runs eagerly)."""
    reason = compile_unavailable(device)
    if reason is not None:
        warnings.warn(f"--compile: {reason}; running uncompiled", stacklevel=2)
        return False
    module.compile(options={"freezing": True})
    return True
