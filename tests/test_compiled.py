"""Optional torch.compile for sampling: equal outputs where a compiler exists, else eager with a warning."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn as nn

from genzoo.nets import compiled
from genzoo.nets.adm import AttentionBlock, ResBlock


class TinyBlocks(nn.Module):
    """An ADM residual block (scale-shift norm) and attention block: the ops the UNet is made of."""

    def __init__(self):
        super().__init__()
        self.res = ResBlock(32, 16, 0.0, out_channels=64, use_scale_shift_norm=True)
        self.attn = AttentionBlock(64, num_head_channels=32, new_order=True)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.attn(self.res(x, emb))


def tiny_inputs():
    gen = torch.Generator().manual_seed(0)
    model = TinyBlocks().eval()
    with torch.no_grad():
        for p in model.parameters():  # the zero-initialised output convs would hide the blocks
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model, torch.randn(2, 32, 8, 8, generator=gen), torch.randn(2, 16, generator=gen)


def test_without_a_compiler_the_model_runs_eagerly_with_a_one_line_warning(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    assert compiled.compile_unavailable("cpu") == "no C++ compiler found (set CXX)"
    model, x, emb = tiny_inputs()
    with torch.no_grad():
        ref = model(x, emb)
    message = r"^--compile: no C\+\+ compiler found \(set CXX\); running uncompiled$"
    with pytest.warns(UserWarning, match=message):
        assert compiled.compile_for_inference(model, "cpu") is False
    with torch.no_grad():
        assert torch.equal(model(x, emb), ref)


def test_unsupported_devices_are_named():
    assert compiled.compile_unavailable("meta") == "not supported on meta"


@pytest.mark.skipif(compiled.compile_unavailable("cpu") is not None,
                    reason=f"torch.compile cannot run here: {compiled.compile_unavailable('cpu')}")
def test_compiled_blocks_equal_the_eager_ones_in_float32():
    """Inductor reorders float32 sums (fused GroupNorm statistics, pre-packed convolutions): equal to
    1e-4 relative, the bound of the optimised path against the reference."""
    model, x, emb = tiny_inputs()
    with torch.no_grad():
        ref = model(x, emb)
        assert compiled.compile_for_inference(model, "cpu") is True
        got = model(x, emb)
    assert set(model.state_dict()) == set(TinyBlocks().state_dict())  # compiled in place: same keys
    assert (got - ref).norm() <= 1e-4 * ref.norm()


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["contiguous", "cl"])
def test_sampling_blocks_trace_as_one_graph(fmt):
    """A graph break splits the compiled network into per-block frames, each recompiled per input shape
    until Dynamo's recompile limit leaves the rest eager (an in-place ``out=`` into a channels_last map
    did that): the blocks must trace whole, in both layouts."""
    import torch._dynamo as dynamo

    if not dynamo.is_dynamo_supported():
        pytest.skip("torch.compile does not support this Python")
    model, x, emb = tiny_inputs()
    model = model.to(memory_format=fmt)
    with torch.inference_mode():
        explained = dynamo.explain(model)(x.contiguous(memory_format=fmt), emb)
    assert explained.graph_break_count == 0, [r.reason for r in explained.break_reasons]
