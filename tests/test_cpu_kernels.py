"""The compiled GroupNorm(+scale-shift)+SiLU CPU kernel (genzoo/nets/group_norm_silu.c through
genzoo/nets/cpu_kernels.py): values and every gradient against the float64 definition, odd shapes, maps it
does not take, the networks with and without it, and the PyTorch fallback where no compiler builds it."""

import logging
import subprocess

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import genzoo.nets.fused as fusedmod
from genzoo import nets
from genzoo.nets import cpu_kernels
from tests.test_fused import _Norm, assert_norm_silu_matches_reference, reference_norm_silu

needs_kernel = pytest.mark.skipif(cpu_kernels.library() is None, reason="no C compiler built the kernel")

# (N, C, H, W, groups): C not a multiple of the vector width (14 channels per group), groups of one
# channel, one pixel per map, and a network's shape
SHAPES = {"odd widths": (3, 70, 9, 7, 5), "one channel per group": (2, 7, 3, 3, 7),
          "one pixel": (4, 8, 1, 1, 2), "network": (2, 64, 16, 16, 32)}


def _tolerance(dtype):
    """float32: sums of a few hundred float32 terms, added in double, and a polynomial exp (a few ulp);
    bfloat16: the output's and the gradient's roundings (2^-9 relative each) dominate."""
    return 64 * torch.finfo(torch.float32).eps if dtype == torch.float32 else 4 * torch.finfo(dtype).eps


def _norm(c, groups, gen):
    norm = torch.nn.GroupNorm(groups, c)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(c, generator=gen))
        norm.bias.copy_(torch.randn(c, generator=gen))
    return norm


def _run(norm, x, ss, adaptive):
    if adaptive is None:
        return fusedmod.group_norm(norm, x)
    return fusedmod.norm_silu(norm, x, tuple(ss) if adaptive else None)


@needs_kernel
@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("adaptive", [None, False, True], ids=["norm only", "plain", "scale-shift"])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["contiguous", "cl"])
def test_kernel_equals_the_definition_in_value_and_gradient(shape, dtype, adaptive, fmt):
    """Output and the gradients of x, weight, bias, scale and shift equal the float64 definition
    (Wu & He 2018, Eq. 1-2; ADM's scale-shift) to a few roundings of the dtype, in its dtype and layout.
    Offset inputs (mean 3, std 2) check that neither the variance nor the gradient sums cancel."""
    n, c, h, w, groups = SHAPES[shape]
    gen = torch.Generator().manual_seed(11)
    norm = _norm(c, groups, gen)
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64) * 2 + 3
    x = x.to(dtype).contiguous(memory_format=fmt).requires_grad_()
    ss = [torch.randn(n, 2 * c, 1, 1, generator=gen).to(dtype).chunk(2, dim=1)[i].requires_grad_()
          for i in range(2)] if adaptive else []
    assert fusedmod.native_group_norm_pays(norm, x)
    got = _run(norm, x, ss, adaptive)
    assert got.grad_fn.name() == "_NativeGroupNormSiLUBackward"
    assert got.dtype == dtype and got.is_contiguous(memory_format=fmt)
    grads = assert_norm_silu_matches_reference(got, x, norm, ss, adaptive is not None, _tolerance(dtype), gen)
    assert grads[0].dtype == dtype and all(g.dtype == dtype for g in grads[3:])


@needs_kernel
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["contiguous", "cl"])
def test_gradients_laid_out_otherwise_are_taken(fmt):
    """An expanded gradient (of ``.sum()``) and one in the other layout give the same input gradient."""
    gen = torch.Generator().manual_seed(3)
    norm = _norm(16, 4, gen)
    x = torch.randn(2, 16, 5, 4, generator=gen).contiguous(memory_format=fmt).requires_grad_()
    fusedmod.norm_silu(norm, x).sum().backward()
    other = torch.contiguous_format if fmt == torch.channels_last else torch.channels_last
    ones = torch.ones(x.shape).contiguous(memory_format=other)
    (again,) = torch.autograd.grad(fusedmod.norm_silu(norm, x), x, ones)
    xd = x.detach().double().requires_grad_()
    plain = _Norm(norm, norm.weight.detach().double(), norm.bias.detach().double())
    reference_norm_silu(xd, plain).sum().backward()
    for g in (x.grad, again):
        assert (g.double() - xd.grad).norm() <= _tolerance(torch.float32) * xd.grad.norm()


@needs_kernel
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["contiguous", "cl"])
def test_a_sample_gets_the_same_bits_alone_in_a_batch_and_on_two_threads(fmt):
    """Each sample is normalised on its own: its output and input gradient do not depend on the batch it
    is in or on the thread count (a seed fixes an image whatever the batch size)."""
    gen = torch.Generator().manual_seed(9)
    norm = _norm(32, 8, gen)
    x = torch.randn(5, 32, 6, 7, generator=gen).bfloat16().contiguous(memory_format=fmt)
    ss = torch.randn(5, 64, 1, 1, generator=gen).bfloat16().chunk(2, dim=1)
    g = torch.randn(x.shape, generator=gen).bfloat16().contiguous(memory_format=fmt)

    def run(rows):
        xs = x[rows].contiguous(memory_format=fmt).requires_grad_()
        out = fusedmod.norm_silu(norm, xs, (ss[0][rows], ss[1][rows]))
        return out, torch.autograd.grad(out, xs, g[rows])[0]

    batch, alone = run(slice(0, 5)), run(slice(2, 3))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two = run(slice(0, 5))
    finally:
        torch.set_num_threads(threads)
    for b, a, t in zip(batch, alone, two):
        assert torch.equal(b[2:3], a) and torch.equal(b, t)


@needs_kernel
def test_maps_the_kernel_does_not_take_keep_the_pytorch_path():
    """Strided views, float64, float16 and empty maps, batches smaller than the thread count and norms other
    than ``nn.GroupNorm`` are not taken; they give the definition through the PyTorch path."""
    gen = torch.Generator().manual_seed(4)
    norm = _norm(16, 4, gen)
    wide = torch.randn(2, 16, 6, 10, generator=gen)
    strided = wide[:, :, :, ::2]
    assert not strided.is_contiguous() and not strided.is_contiguous(memory_format=torch.channels_last)
    for x in (strided, wide.double(), wide.half(), wide[:0]):
        assert not fusedmod.native_group_norm_pays(norm, x)
    assert not fusedmod.native_group_norm_pays(lambda t: t, wide)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:  # fewer samples than threads: the library splits groups among them too
        assert not fusedmod.native_group_norm_pays(norm, wide)
    finally:
        torch.set_num_threads(threads)
    assert fusedmod.native_group_norm_pays(norm, wide)
    norm64 = _norm(16, 4, gen).double()
    for x, n in ((strided, norm), (wide.double(), norm64)):
        got = fusedmod.norm_silu(n, x)
        assert got.grad_fn is None or "Native" not in got.grad_fn.name()
        ref = reference_norm_silu(x, n)
        assert (got.double() - ref).abs().max() <= 1e-4 * ref.abs().max()


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_forward_mode_ad_takes_the_library_path(grad):
    """A JVP through dual numbers (sCM's training takes one) is left to the library ops, which define it:
    the kernel and the explicit path have none. Value and tangent equal the float64 definition's.
    (Contiguous maps: the library's GroupNorm JVP fails on channels_last ones.)"""
    gen = torch.Generator().manual_seed(8)
    norm = _norm(16, 4, gen)
    x, v = (torch.randn(2, 16, 5, 6, generator=gen) for _ in range(2))
    scale, shift, ds = (torch.randn(2, 16, 1, 1, generator=gen) for _ in range(3))
    with torch.set_grad_enabled(grad), fwAD.dual_level():
        out = fusedmod.norm_silu(norm, fwAD.make_dual(x, v), (fwAD.make_dual(scale, ds), shift))
        value, tangent = fwAD.unpack_dual(out)
    plain = _Norm(norm, norm.weight.detach().double(), norm.bias.detach().double())
    ref, ref_tangent = torch.func.jvp(lambda x, s: reference_norm_silu(x, plain, s, shift.double()),
                                      (x.double(), scale.double()), (v.double(), ds.double()))
    assert (value.double() - ref).abs().max() <= 1e-4 * ref.abs().max()
    assert (tangent.double() - ref_tangent).norm() <= 1e-4 * ref_tangent.norm()


def _perturbed(module, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    return module.train()


ADM = dict(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="8",
           num_head_channels=16, resblock_updown=True, use_scale_shift_norm=True)
DDPMPP = dict(resolution=16, model_channels=32, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(8,),
              adaptive_scale=True)
SONG = dict(img_resolution=16, in_channels=3, out_channels=3, model_channels=32, channel_mult=(1, 2),
            num_blocks=1, attn_resolutions=(8,), dropout=0.0)
NETS = {"adm": (ADM, torch.tensor([5, 640])), "ddpmpp": (DDPMPP, torch.tensor([0.3, -1.2])),
        "songunet": (SONG, torch.tensor([0.3, -1.2]))}


@needs_kernel
@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["contiguous", "cl"])
def test_networks_with_the_kernel_equal_the_pytorch_path(name, fmt, monkeypatch):
    """ADM's, DDPM++'s and EDM's SongUNet's outputs and all gradients with the kernel equal those without it
    to 1e-4 relative in float32 (the issue's tolerance for optimised paths)."""
    config, noise_labels = NETS[name]
    model = _perturbed(nets.build(name, **config), 1).to(memory_format=fmt)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2)).contiguous(memory_format=fmt)

    def run():
        out = model(x, noise_labels)
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
        grads = torch.autograd.grad((out * weights).sum(), list(model.parameters()))
        return out.detach(), torch.cat([g.flatten() for g in grads])

    calls = []
    forward = cpu_kernels.group_norm_silu_forward
    monkeypatch.setattr(cpu_kernels, "group_norm_silu_forward", lambda *a: calls.append(1) or forward(*a))
    out, grads = run()
    norms = sum(isinstance(m, torch.nn.GroupNorm) for m in model.modules())
    assert len(calls) == norms or name == "songunet" and len(calls) == norms - 1  # its aux norm: library
    monkeypatch.setattr(cpu_kernels, "library", lambda: None)
    ref_out, ref_grads = run()
    assert (out - ref_out).norm() <= 1e-4 * ref_out.norm()
    assert (grads - ref_grads).norm() <= 1e-4 * ref_grads.norm()


@pytest.fixture
def fresh_library(monkeypatch, tmp_path):
    """A kernel cache of its own, the loaded library forgotten before and after."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cpu_kernels.reset()
    yield tmp_path / "genzoo" / "kernels"
    cpu_kernels.reset()


@pytest.mark.parametrize("how", ["no compiler", "build fails", "switched off"])
def test_without_a_built_kernel_the_pytorch_path_runs(how, fresh_library, monkeypatch, caplog):
    """No compiler, a compiler that fails, or GENZOO_NATIVE_KERNELS=0: one debug line, then the PyTorch
    path, equal to the definition."""
    if how == "no compiler":
        monkeypatch.setattr(cpu_kernels, "compiler", lambda: None)
    elif how == "build fails":
        monkeypatch.setenv("CC", "false")
    else:
        monkeypatch.setenv("GENZOO_NATIVE_KERNELS", "0")
    gen = torch.Generator().manual_seed(6)
    norm = _norm(16, 4, gen)
    x = (torch.randn(2, 16, 5, 6, generator=gen) * 2 + 3).contiguous(memory_format=torch.channels_last)
    with caplog.at_level(logging.DEBUG, logger="genzoo.nets.cpu_kernels"):
        assert cpu_kernels.library() is None and cpu_kernels.library() is None
        got = fusedmod.norm_silu(norm, x.requires_grad_())
    assert len(caplog.records) == 1 and "run through PyTorch" in caplog.records[0].getMessage()
    assert got.grad_fn.name() == "_GroupNormSiLUBackward"
    ref = reference_norm_silu(x.detach(), norm)
    assert (got.double() - ref).abs().max() <= 1e-4 * ref.abs().max()
    assert not list(fresh_library.glob("*.so"))


@needs_kernel
def test_the_build_is_cached_and_leaves_nothing_half_written(fresh_library, monkeypatch):
    """The first use compiles once into the cache (through a temporary folder that is gone afterwards);
    a later process loads the cached library without compiling."""
    compiles = []
    run = subprocess.run

    def counting(args, **kwargs):
        compiles.extend(a for a in args if a == "-shared")
        return run(args, **kwargs)

    monkeypatch.setattr(cpu_kernels.subprocess, "run", counting)
    assert cpu_kernels.library() is not None and len(compiles) == 1
    assert [p.suffix for p in fresh_library.iterdir()] == [".so"]
    cpu_kernels.reset()
    assert cpu_kernels.library() is not None and len(compiles) == 1
