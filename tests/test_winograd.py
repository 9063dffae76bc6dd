"""Winograd F(m×m, 3×3) convolutions (Lavin & Gray 2016) against direct convolution."""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F

from genzoo.nets import adm, cpu_kernels, winograd
from genzoo.nets.adm import ADMUNet
from genzoo.nets.winograd import Conv3x3, use_winograd, winograd_conv2d, winograd_matrices

EPS32 = torch.finfo(torch.float32).eps
EPS64 = torch.finfo(torch.float64).eps
needs_kernel = pytest.mark.skipif(cpu_kernels.library() is None, reason="no C compiler built the kernels")
#: the autograd node of the path winograd_conv2d takes here: the C transforms where they are built
WINOGRAD_NODE = "_WinogradConvBackward" if cpu_kernels.library() is None else "_NativeWinogradConvBackward"


@pytest.fixture(params=["native", "pytorch"])
def path(request, monkeypatch):
    """Each test twice: with the C transforms (where built) and with the PyTorch ops only, as where no
    compiler is found."""
    if request.param == "native" and cpu_kernels.library() is None:
        pytest.skip("no C compiler built the kernels")
    if request.param == "pytorch":
        monkeypatch.setattr(cpu_kernels, "library", lambda: None)
    return request.param


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
def test_float64_values_and_gradients_equal_conv2d(m, hw, channels_last, bias, path):
    """Exact in exact arithmetic: float64 agrees with F.conv2d(padding=1) to rounding (1e-12 relative),
    values and the gradients of input, weight and bias; sizes not multiples of m (edge tiles, the zero
    padding) included; 5 and 7 channels, then 21 and 17 (whole vectors of the C kernels and a rest); the
    output keeps the input's memory format."""
    wide = hw == (11, 9)
    x, weight, b = _conv_case(*hw, bias=bias, cin=21 if wide else 5, cout=17 if wide else 7)
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
def test_only_the_inputs_that_need_gradients_get_them(needs, path):
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
def test_float32_stays_within_a_dtype_derived_bound(channels_last, path):
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


def test_conv3x3_is_a_conv2d_with_the_same_state_dict_and_dispatch(path):
    native = path == "native"
    layer = Conv3x3(4, 128)
    plain = torch.nn.Conv2d(4, 128, 3, padding=1)
    shapes = {k: v.shape for k, v in layer.state_dict().items()}
    assert shapes == {k: v.shape for k, v in plain.state_dict().items()}
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    assert not layer.uses_winograd(x)  # NCHW keeps F.conv2d
    x = x.contiguous(memory_format=torch.channels_last)
    assert layer.uses_winograd(x) and not layer.uses_winograd(x.double())  # the suite runs on 1 thread
    with torch.no_grad():  # sampling: the C transforms measured faster there too, the PyTorch ops did not
        assert layer.uses_winograd(x) == native
    use_winograd(layer, False)
    assert not layer.uses_winograd(x)
    use_winograd(layer)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert not layer.uses_winograd(x)
    finally:
        torch.set_num_threads(threads)
    fewest = winograd.NATIVE_MIN_OUT_CHANNELS if native else winograd.MIN_OUT_CHANNELS
    assert not Conv3x3(4, fewest - 1, winograd=True).uses_winograd(x)
    assert Conv3x3(4, fewest, winograd=True).uses_winograd(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not layer.uses_winograd(x)
        assert layer(x).dtype == torch.bfloat16
    out = layer(x)
    node = "_NativeWinogradConvBackward" if native else "_WinogradConvBackward"
    assert type(out.grad_fn).__name__ == node
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
    monkeypatch.setattr(winograd, "NATIVE_MIN_OUT_CHANNELS", 1)
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
    assert used == [WINOGRAD_NODE] * len(convs)
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


@needs_kernel
def test_the_output_transforms_adjoint_is_its_transpose():
    """<winograd_output(M), Y> = <M, winograd_output_adjoint(Y)> in float64 (the weight gradient's dM),
    edge tiles included (the adjoint reads zeros outside the map)."""
    gen = torch.Generator().manual_seed(3)
    n, c, h, w = 2, 19, 7, 10
    tiles = n * 2 * 3
    m = torch.randn(36, tiles, c, generator=gen, dtype=torch.float64)
    y = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    y = y.contiguous(memory_format=torch.channels_last)
    out = torch.empty_like(y)
    lhs = (cpu_kernels.winograd_output(m, None, out) * y).sum()
    rhs = (m * cpu_kernels.winograd_output_adjoint(y, torch.empty_like(m))).sum()
    assert abs(lhs - rhs) <= 1e-12 * (m.abs().sum() * y.abs().max() * 64)


@needs_kernel
def test_the_input_transform_is_bt_d_b_of_the_padded_tiles():
    """winograd_input against the definition: every 6×6 window of the zero-padded map at stride 4, times
    Bᵀ⊗Bᵀ (float64, exact up to rounding)."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 9, 6, 9, generator=gen, dtype=torch.float64)
    kb = winograd._transforms(4, torch.float64, x.device)[2]
    th, tw = 2, 3
    padded = F.pad(x, (1, 4 * tw + 2 - 9 - 1, 1, 4 * th + 2 - 6 - 1))  # [N, C, 4·th + 2, 4·tw + 2]
    windows = padded.unfold(2, 6, 4).unfold(3, 6, 4)  # [N, C, th, tw, 6, 6]
    ref = kb @ windows.permute(4, 5, 0, 2, 3, 1).reshape(36, -1)
    got = cpu_kernels.winograd_input(x.contiguous(memory_format=torch.channels_last),
                                     torch.empty(36, 2 * th * tw, 9, dtype=torch.float64))
    assert rel_err(got.reshape(36, -1), ref) < 1e-13


@needs_kernel
def test_the_filter_transform_is_g_g_gt_in_padded_planes():
    """winograd_filter against (G⊗G)·g (float64), with output channels filling whole vectors and a rest
    (19), written into planes a cache line further apart than their size (as the workspace lays them)."""
    gen = torch.Generator().manual_seed(5)
    weight = torch.randn(19, 6, 3, 3, generator=gen, dtype=torch.float64)
    kg = winograd._transforms(4, torch.float64, weight.device)[1]
    ref = (kg @ weight.reshape(19 * 6, 9).t()).view(36, 19, 6).transpose(1, 2)
    planes = torch.full((36, 6 * 19 + winograd.PLANE_PAD), float("nan"), dtype=torch.float64)
    got = cpu_kernels.winograd_filter(weight, winograd_matrices(4)[1], winograd._padded_planes(planes, 6, 19))
    assert rel_err(got, ref) < 1e-13
    assert planes[:, 6 * 19:].isnan().all()  # the padding is never written


@needs_kernel
@pytest.mark.parametrize("native_weight_grad", [True, False], ids=["winograd-dw", "direct-dw"])
def test_both_weight_gradients_equal_conv2d(monkeypatch, native_weight_grad):
    """The weight gradient through Winograd (dU = dMᵀ V) or oneDNN's direct one: both equal F.conv2d's in
    float64."""
    monkeypatch.setattr(winograd, "WINOGRAD_WEIGHT_GRAD", native_weight_grad)
    x, weight, b = _conv_case(10, 7, cin=6, cout=9)
    x = x.contiguous(memory_format=torch.channels_last)
    w1, w2 = weight.clone().requires_grad_(), weight.clone().requires_grad_()
    upstream = torch.randn(2, 9, 10, 7, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    (got,) = torch.autograd.grad((winograd_conv2d(x, w1, b) * upstream).sum(), [w1])
    (ref,) = torch.autograd.grad((F.conv2d(x, w2, b, padding=1) * upstream).sum(), [w2])
    assert rel_err(got, ref) < 1e-12


@pytest.mark.parametrize("hw", [9, 8])
def test_a_sample_gets_the_same_output_in_any_batch(path, hw):
    """Each tile is transformed alone and each product row-wise, so a sample's float32 output does not
    depend on the samples beside it beyond rounding: the matrix multiply may block differently for a
    different number of tiles (here 4 against 20 at 8×8; F.conv2d's output varies with the batch too), and
    Winograd's transforms amplify that rounding, so the bound is the float32 one of
    test_float32_stays_within_a_dtype_derived_bound."""
    x, weight, b = (t.float() for t in _conv_case(hw, hw, cin=32, cout=64, n=5))
    x = x.contiguous(memory_format=torch.channels_last)
    whole = winograd_conv2d(x, weight / 24, b)
    for i in range(5):
        alone = winograd_conv2d(x[i:i + 1], weight / 24, b)
        assert (alone - whole[i:i + 1]).abs().max() <= 1000 * EPS32 * whole.abs().max()


@needs_kernel
def test_a_portable_build_without_cpu_specific_code_gives_the_same_values(monkeypatch, tmp_path):
    """The last flag set (plain -O3: no -march=native, no OpenMP, as on a CPU without AVX-512 or a
    compiler without OpenMP) builds and computes the same convolution."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(cpu_kernels, "_FLAG_SETS", (("-O3",),))
    cpu_kernels.reset()
    try:
        assert cpu_kernels.library() is not None
        x, weight, b = _conv_case(7, 6, cin=20, cout=18)
        x = x.contiguous(memory_format=torch.channels_last)
        assert rel_err(winograd_conv2d(x, weight, b), F.conv2d(x, weight, b, padding=1)) < 1e-12
    finally:
        cpu_kernels.reset()
