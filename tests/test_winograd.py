"""Winograd F(m×m, 3×3) convolutions (Lavin & Gray 2016) against direct convolution."""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F

from genzoo.nets import adm, winograd
from genzoo.nets.adm import ADMUNet
from genzoo.nets.winograd import Conv3x3, use_winograd, winograd_conv2d, winograd_matrices

EPS32 = torch.finfo(torch.float32).eps
EPS64 = torch.finfo(torch.float64).eps


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("m", [2, 4, 6])
def test_one_dimensional_minimal_filtering_is_the_correlation(m):
    """y = Aᵀ[(G g) ⊙ (Bᵀ d)] (Lavin & Gray eq. 7) is y_i = Σ_k g_k d_(i+k), with α = m + 2 multiplies."""
    at, g, bt = winograd_matrices(m)
    assert at.shape == (m, m + 2) and g.shape == (m + 2, 3) and bt.shape == (m + 2, m + 2)
    gen = torch.Generator().manual_seed(0)
    d = torch.randn(m + 2, generator=gen, dtype=torch.float64)
    k = torch.randn(3, generator=gen, dtype=torch.float64)
    direct = torch.stack([(k * d[i:i + 3]).sum() for i in range(m)])
    torch.testing.assert_close(at @ ((g @ k) * (bt @ d)), direct, rtol=100 * EPS64, atol=100 * EPS64)


def test_f2_matrices_are_the_papers_up_to_the_sign_of_one_point():
    """F(2, 3) at the points 0, 1, −1, ∞: the paper's Aᵀ, G, Bᵀ (section 4.1), with the ∞ row's sign moved
    from Bᵀ and Aᵀ (both flip together; the product is unchanged)."""
    at, g, bt = winograd_matrices(2)
    torch.testing.assert_close(g, torch.tensor([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
                                               dtype=torch.float64))
    torch.testing.assert_close(bt[:3], torch.tensor([[1.0, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0]],
                                                    dtype=torch.float64))
    torch.testing.assert_close(at[0], torch.tensor([1.0, 1, 1, 0], dtype=torch.float64))


def _conv_case(h, w, cin=5, cout=7, n=2, dtype=torch.float64, bias=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cin, h, w, generator=gen, dtype=dtype)
    weight = torch.randn(cout, cin, 3, 3, generator=gen, dtype=dtype)
    b = torch.randn(cout, generator=gen, dtype=dtype) if bias else None
    return x, weight, b


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("hw", [(8, 8), (11, 9), (1, 1), (5, 13)], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_float64_values_and_gradients_equal_conv2d(m, hw, channels_last, bias):
    """Exact in exact arithmetic: float64 agrees with F.conv2d(padding=1) to rounding (1e-12 relative),
    values and the gradients of input, weight and bias; sizes not multiples of m included; the output
    keeps the input's memory format."""
    x, weight, b = _conv_case(*hw, bias=bias)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    leaves = [t.clone().requires_grad_() for t in (x, weight, b) if t is not None]
    ref = F.conv2d(*leaves, padding=1) if bias else F.conv2d(*leaves, None, padding=1)
    upstream = torch.randn(ref.shape, generator=torch.Generator().manual_seed(5), dtype=ref.dtype)
    ref_grads = torch.autograd.grad((ref * upstream).sum(), leaves)
    ours = [t.clone().requires_grad_() for t in leaves]
    got = winograd_conv2d(ours[0], ours[1], ours[2] if bias else None, m)
    got_grads = torch.autograd.grad((got * upstream).sum(), ours)
    assert got.shape == ref.shape
    assert got.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert rel_err(got, ref) < 1e-12
    for g, r in zip(got_grads, ref_grads):
        assert rel_err(g, r) < 1e-12


@pytest.mark.parametrize("needs", ["weight", "bias", "input"])
def test_only_the_inputs_that_need_gradients_get_them(needs):
    """One leaf needing a gradient; a second call in between reuses the workspace (nothing the first
    call's backward reads may live there)."""
    x, weight, b = _conv_case(6, 6)
    leaves = {"input": x, "weight": weight, "bias": b}
    leaf = leaves[needs].clone().requires_grad_()
    args = [leaf if name == needs else t for name, t in leaves.items()]
    out = winograd_conv2d(*args, 4)
    other = winograd_conv2d(*(a * 2 for a in args), 4)
    (got,) = torch.autograd.grad((out * other.detach()).sum(), [leaf])
    (ref,) = torch.autograd.grad((F.conv2d(*args, padding=1) * other.detach()).sum(), [leaf])
    assert rel_err(got, ref) < 1e-12


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_float32_stays_within_a_dtype_derived_bound(channels_last):
    """F(4, 3) in float32 against float64 direct convolution: the transforms' entries (up to 8 in Aᵀ, 5 in
    Bᵀ) amplify rounding, so the bound is 1000 float32 epsilons of the output's scale (≈1.2e-4), within
    the issue's 1e-4 relative up to that rounding; F.conv2d itself is within 100."""
    x, weight, b = _conv_case(16, 16, cin=64, cout=32, n=2)
    weight = weight / 24
    ref = F.conv2d(x, weight, b, padding=1)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x32 = x.float().contiguous(memory_format=fmt)
    got = winograd_conv2d(x32, weight.float(), b.float(), 4)
    assert rel_err(got.double(), ref) < 1000 * EPS32
    assert rel_err(F.conv2d(x32, weight.float(), b.float(), padding=1).double(), ref) < 100 * EPS32


def test_conv3x3_is_a_conv2d_with_the_same_state_dict_and_dispatch():
    layer = Conv3x3(4, 128)
    plain = torch.nn.Conv2d(4, 128, 3, padding=1)
    shapes = {k: v.shape for k, v in layer.state_dict().items()}
    assert shapes == {k: v.shape for k, v in plain.state_dict().items()}
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    assert not layer.uses_winograd(x)  # NCHW keeps F.conv2d
    x = x.contiguous(memory_format=torch.channels_last)
    assert layer.uses_winograd(x) and not layer.uses_winograd(x.double())  # the suite runs on 1 thread
    with torch.no_grad():
        assert not layer.uses_winograd(x)  # sampling keeps F.conv2d
    use_winograd(layer, False)
    assert not layer.uses_winograd(x)
    use_winograd(layer)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert not layer.uses_winograd(x)
    finally:
        torch.set_num_threads(threads)
    assert not Conv3x3(4, winograd.MIN_OUT_CHANNELS - 1, winograd=True).uses_winograd(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not layer.uses_winograd(x)
        assert layer(x).dtype == torch.bfloat16
    out = layer(x)
    assert type(out.grad_fn).__name__ == "_WinogradConvBackward"
    ref = plain(x)
    assert rel_err(out, ref) < 1000 * EPS32


def test_dual_and_functorch_inputs_keep_conv2d_and_its_derivatives():
    """sCM's forward-mode tangents and torch.func transforms go through F.conv2d (the Winograd function
    has no jvp): values and tangents equal the plain layer's."""
    torch.manual_seed(0)
    layer = Conv3x3(4, 128)
    plain = torch.nn.Conv2d(4, 128, 3, padding=1)
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(2, 4, 6, 6).contiguous(memory_format=torch.channels_last)
    tangent = torch.randn_like(x)
    assert layer.uses_winograd(x)
    with torch.no_grad(), fwAD.dual_level():
        dual = fwAD.make_dual(x, tangent)
        assert not layer.uses_winograd(dual)
        got, ref = fwAD.unpack_dual(layer(dual)), fwAD.unpack_dual(plain(dual))
    torch.testing.assert_close(got.tangent, ref.tangent)
    got = torch.func.jvp(layer, (x,), (tangent,))
    torch.testing.assert_close(got[1], ref.tangent)
    batched = torch.func.vmap(layer)(x[None].expand(3, *x.shape))
    torch.testing.assert_close(batched[1], plain(x))


def test_adm_unet_with_winograd_equals_without_and_keeps_its_state_dict(monkeypatch):
    """Every 3×3 block convolution through Winograd (the channel threshold lowered to reach the tiny net's
    32-64 channels): outputs and all gradients within 1e-4 relative of the direct convolutions in
    float32, channels_last, and the same state_dict keys and shapes."""
    monkeypatch.setattr(winograd, "MIN_OUT_CHANNELS", 1)
    torch.manual_seed(0)
    cfg = dict(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2",
               attention_resolutions="8", num_head_channels=16, learn_sigma=True, resblock_updown=False,
               use_scale_shift_norm=True)
    direct = use_winograd(ADMUNet(**cfg), False).to(memory_format=torch.channels_last)
    with torch.no_grad():
        for p in direct.parameters():
            p.normal_(0, 0.1)
    ours = use_winograd(ADMUNet(**cfg), True).to(memory_format=torch.channels_last)
    ours.load_state_dict(direct.state_dict())
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in direct.state_dict().items()}
    convs = [m for m in ours.modules() if isinstance(m, Conv3x3)]
    assert len(convs) == 2 * (2 + 2 + 4) + 1  # two per res block (encoder, middle, decoder), the upsampler
    assert isinstance(ours.out[2], torch.nn.Conv2d) and not isinstance(ours.out[2], Conv3x3)
    used = []
    for conv in convs:
        conv.register_forward_hook(lambda mod, inp, out: used.append(type(out.grad_fn).__name__))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 16, 16, generator=gen).contiguous(memory_format=torch.channels_last)
    t = torch.tensor([10, 700])
    upstream = torch.randn(2, 6, 16, 16, generator=gen)

    def run(net):
        out = net(x, t)
        grads = torch.autograd.grad((out * upstream).sum(), list(net.parameters()))
        return out, torch.cat([g.flatten() for g in grads])

    out, grads = run(ours)
    assert used == ["_WinogradConvBackward"] * len(convs)
    ref_out, ref_grads = run(direct)
    assert rel_err(out, ref_out) < 1e-4
    assert (grads - ref_grads).norm() <= 1e-4 * ref_grads.norm()
    assert adm.Conv3x3 is Conv3x3


def test_inference_and_a_workspace_too_large_to_keep_give_the_same_values(monkeypatch):
    """Without autograd V is a workspace temporary too; a need above the kept size gets a buffer of its
    own that is not held after the call."""
    x, weight, b = _conv_case(9, 7, cin=6, cout=5)
    ref = F.conv2d(x, weight, b, padding=1)
    with torch.inference_mode():
        assert rel_err(winograd_conv2d(x, weight, b, 4), ref) < 1e-12
    monkeypatch.setattr(winograd._WORKSPACE, "buffer", None)
    monkeypatch.setattr(winograd._WORKSPACE, "max_kept", 0)
    with torch.no_grad():
        assert rel_err(winograd_conv2d(x, weight, b, 4), ref) < 1e-12
    assert winograd._WORKSPACE.buffer is None
