"""Winograd minimal filtering for 3×3 stride-1 convolutions (Lavin & Gray 2016, "Fast Algorithms for
Convolutional Neural Networks").

F(m×m, 3×3) computes an m×m output tile from an (m+2)×(m+2) input tile with (m+2)² multiplies instead of
9m²: Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A (Lavin & Gray eq. 8). Summed over input channels the element-wise
product becomes one matrix multiply per tile position (eq. 12), [tiles, C_in] × [C_in, C_out]: for F(4×4)
36 products of 1/16 of the map each, 4× fewer multiplies than direct convolution, plus the transforms
(memory-bound passes over 2.25× the map). The transforms come from Toom-Cook interpolation at the points
0, ±1, ±2, …, ∞ (:func:`winograd_matrices`). F(4×4) on float32/float64 CPU maps runs its input and output
transforms as C kernels (``winograd.c`` through ``cpu_kernels``: one pass each, straight from and into the
channels_last map, the zero padding and edge tiles in the kernel) around the 36 products in torch; the
backward is the same convolution with the flipped, transposed filter for the input and Vᵀ(A dY Aᵀ) for
the weight. Without the kernels (no compiler), and for other tile sizes, everything is PyTorch matrix
multiplies and copies, the backward written out as the same chain transposed.

:class:`Conv3x3` is the drop-in ``nn.Conv2d`` the ADM UNet's blocks use; where the Winograd path measured
faster on the CPU (:func:`winograd_pays`, docs/performance.md) it takes it, elsewhere ``F.conv2d``.
"""

from __future__ import annotations

import math
import threading
from fractions import Fraction
from functools import cache

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from genzoo.nets import cpu_kernels


def _points(count: int) -> list[Fraction]:
    """0, 1, −1, 2, −2, …: the finite interpolation points (∞ is the last one)."""
    pts = [Fraction(0)]
    k = 1
    while len(pts) < count:
        pts += [Fraction(k), Fraction(-k)]
        k += 1
    return pts[:count]


def _evaluation(points: list[Fraction], n: int) -> list[list[Fraction]]:
    """Rows [1, a, a², …, a^(n−1)] for each finite point a, then [0, …, 0, 1] for ∞ (the leading
    coefficient): the values of a degree n−1 polynomial at the points, as a matrix."""
    rows = [[a**k for k in range(n)] for a in points]
    return rows + [[Fraction(0)] * (n - 1) + [Fraction(1)]]


def _inverse(matrix: list[list[Fraction]]) -> list[list[Fraction]]:
    """Exact inverse by Gauss-Jordan elimination over the rationals."""
    n = len(matrix)
    aug = [list(row) + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if aug[r][col] != 0)
        aug[col], aug[pivot] = aug[pivot], aug[col]
        lead = aug[col][col]
        aug[col] = [v / lead for v in aug[col]]
        for r in range(n):
            if r != col and aug[r][col] != 0:
                f = aug[r][col]
                aug[r] = [a - f * b for a, b in zip(aug[r], aug[col])]
    return [row[n:] for row in aug]


@cache
def winograd_matrices(m: int, r: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Aᵀ [m, α], G [α, r], Bᵀ [α, α]) in float64 for F(m, r), α = m + r − 1, with
    y = Aᵀ[(G g) ⊙ (Bᵀ d)] the correlation y_i = Σ_k g_k d_(i+k) (Lavin & Gray eq. 7).

    Toom-Cook: a linear convolution s = h * g is s = V_α⁻¹[(V_m h) ⊙ (V_r g)] with V_n the evaluation
    matrix of degree n−1 polynomials at α points; the correlation is its transpose in h,
    y = V_mᵀ[(V_r g) ⊙ (V_α⁻ᵀ d)], so Aᵀ = V_mᵀ, G = V_r, Bᵀ = V_α⁻ᵀ. Each row i of Bᵀ is scaled to
    integers and row i of G divided by the same factor (the product is unchanged).
    """
    alpha = m + r - 1
    pts = _points(alpha - 1)
    v_m, v_r, v_a = _evaluation(pts, m), _evaluation(pts, r), _evaluation(pts, alpha)
    inv = _inverse(v_a)
    bt = [[inv[j][i] for j in range(alpha)] for i in range(alpha)]  # V_α⁻ᵀ
    g = [list(row) for row in v_r]
    for i, row in enumerate(bt):
        scale = math.lcm(*(v.denominator for v in row))
        bt[i] = [v * scale for v in row]
        g[i] = [v / scale for v in g[i]]
    at = [[v_m[j][i] for j in range(alpha)] for i in range(m)]

    def tensor(rows: list[list[Fraction]]) -> torch.Tensor:
        return torch.tensor([[float(v) for v in row] for row in rows], dtype=torch.float64)

    return tensor(at), tensor(g), tensor(bt)


@cache
def _transforms(m: int, dtype: torch.dtype, device: torch.device
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 2-D transforms as Kronecker products, which act on a tile flattened row-major:
    Aᵀ⊗Aᵀ [m², α²] (output), G⊗G [α², 9] (filter), Bᵀ⊗Bᵀ [α², α²] (input)."""
    at, g, bt = winograd_matrices(m)
    with torch.inference_mode(False):  # cached: must serve autograd calls too
        return tuple(torch.kron(a, a).to(dtype=dtype, device=device) for a in (at, g, bt))


class _Workspace(threading.local):
    """One flat buffer per thread for the transforms' temporaries (never saved, never returned): fresh
    multi-megabyte allocations are page-faulted in by the kernel on every call, which cost as much as
    the transforms themselves on the CPU."""

    buffer: torch.Tensor | None = None
    #: larger needs get a buffer of their own for the call (memory held between calls stays bounded)
    max_kept = 1 << 26

    def take(self, like: torch.Tensor, *shapes: tuple[int, ...]) -> list[torch.Tensor]:
        """Disjoint views of the given shapes, valid until the next call on this thread."""
        sizes = [math.prod(shape) for shape in shapes]
        buf = self.buffer
        if buf is None or buf.numel() < sum(sizes) or buf.dtype != like.dtype or buf.device != like.device:
            with torch.inference_mode(False):
                buf = torch.empty(sum(sizes), dtype=like.dtype, device=like.device)
            if sum(sizes) <= self.max_kept:
                self.buffer = buf
        views, start = [], 0
        for shape, size in zip(shapes, sizes):
            views.append(buf[start:start + size].view(shape))
            start += size
        return views


_WORKSPACE = _Workspace()


def _tiles(h: int, w: int, m: int) -> tuple[int, int]:
    return -(-h // m), -(-w // m)


@cache
def _filter_transforms(dtype: torch.dtype, device: torch.device
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """G⊗G [36, 9] of F(4×4, 3×3), the same with its columns reversed (the transform of the filter flipped
    in both spatial directions: tap s = 3r + c becomes 8 − s), and G [6, 3]."""
    kg = _transforms(4, dtype, device)[1]
    with torch.inference_mode(False):
        return kg, kg.flip(1).contiguous(), winograd_matrices(4)[1].to(dtype=dtype, device=device)


#: elements between the C kernels' 36 planes beyond their size (one 64-byte line): planes a power of two
#: apart put the 36 streams of a tile into the same cache sets, which cost the transforms up to 5×
PLANE_PAD = 16


def _padded_planes(flat: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """[36, rows, cols] view of a workspace slice [36, rows·cols + PLANE_PAD]."""
    return flat[:, :rows * cols].view(36, rows, cols)


def _native_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, adjoint: bool = False
                 ) -> torch.Tensor:
    """conv2d(x, weight, bias, padding=1) through F(4×4, 3×3) with the C transforms (cpu_kernels): V = Bᵀ d B
    of every tile straight from the channels_last map into [36, tiles, C_in] (the zero padding in the
    kernel), M = V U (36 products in torch), Y = Aᵀ M A + bias straight into a fresh channels_last map.
    ``adjoint``: convolve with the filter flipped and transposed instead (x has weight's C_out channels;
    the input gradient of a stride-1 'same' convolution). Every temporary lives in the workspace."""
    n, _, h, w = x.shape
    co, ci = weight.shape[:2]
    c_in, c_out = (co, ci) if adjoint else (ci, co)
    tiles = n * math.prod(_tiles(h, w, 4))
    u, v, prod = (_padded_planes(t, r, c) for t, (r, c) in zip(_WORKSPACE.take(
        x, *((36, r * c + PLANE_PAD) for r, c in ((c_in, c_out), (tiles, c_in), (tiles, c_out)))),
        ((c_in, c_out), (tiles, c_in), (tiles, c_out))))
    # U = (G⊗G) g, contiguous [36, C_in, C_out] as the products read it fastest: the adjoint's U' (the
    # flipped filter's transform) is one matrix multiply on the filter's rows; U needs the channels
    # swapped, which the C kernel does in blocks (a transposed view costs bmm a copy of U, a transposed
    # copy of the filter costs torch more than the transform)
    kg, kg_flipped, g = _filter_transforms(x.dtype, x.device)
    if adjoint:
        torch.mm(kg_flipped, weight.detach().reshape(co * ci, 9).t(), out=u.flatten(1))
    else:
        cpu_kernels.winograd_filter(weight, g, u)
    cpu_kernels.winograd_input(x.contiguous(memory_format=torch.channels_last), v)
    torch.bmm(v, u, out=prod)
    out = torch.empty((n, c_out, h, w), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    return cpu_kernels.winograd_output(prod, bias, out)


#: the weight gradient through Winograd (dU = Vᵀ·(A dY Aᵀ), V recomputed from the saved input) where True,
#: else oneDNN's direct weight gradient (``aten.convolution_backward``)
WINOGRAD_WEIGHT_GRAD = True


class _NativeWinogradConv(torch.autograd.Function):
    """y = conv2d(x, weight, bias, padding=1) for a 3×3 kernel through F(4×4, 3×3), the transforms in C.

    Backward: dx is the same convolution of dy with the flipped, transposed filter (a stride-1 'same'
    convolution's adjoint); dU = dMᵀ V with dM = A dY Aᵀ tile by tile and V recomputed from x (nothing
    but x is saved), dg = (G⊗G)ᵀ dU (Lavin & Gray §4: the same transforms serve the gradients)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None  # type: ignore[override]
                ) -> torch.Tensor:
        out = _native_conv(x, weight, bias)
        if x.is_contiguous():
            out = out.contiguous()
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        n, ci, h, w = x.shape
        co = weight.shape[0]
        g = grad.contiguous(memory_format=torch.channels_last)
        dx = dweight = dbias = None
        if ctx.needs_input_grad[0]:
            dx = _native_conv(g, weight, None, adjoint=True)
            if x.is_contiguous():
                dx = dx.contiguous()
        if ctx.needs_input_grad[1] and WINOGRAD_WEIGHT_GRAD:
            tiles = n * math.prod(_tiles(h, w, 4))
            v, dm, du = _WORKSPACE.take(g, (36, tiles * ci + PLANE_PAD), (36, tiles * co + PLANE_PAD),
                                        (36, co, ci))
            v, dm = _padded_planes(v, tiles, ci), _padded_planes(dm, tiles, co)
            cpu_kernels.winograd_input(x.contiguous(memory_format=torch.channels_last), v)
            cpu_kernels.winograd_output_adjoint(g, dm)
            torch.bmm(dm.transpose(1, 2), v, out=du)
            kg = _filter_transforms(g.dtype, g.device)[0]
            dweight = torch.mm(du.view(36, co * ci).t(), kg).view(co, ci, 3, 3)
        elif ctx.needs_input_grad[1]:
            dweight = torch.ops.aten.convolution_backward(
                g, x.contiguous(memory_format=torch.channels_last), weight, None, [1, 1], [1, 1], [1, 1],
                False, [0, 0], 1, [False, True, False])[1]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            dbias = g.permute(0, 2, 3, 1).reshape(-1, co).sum(0)
        return dx, dweight, dbias


class _WinogradConv(torch.autograd.Function):
    """y = conv2d(x, weight, bias, padding=1) for a 3×3 kernel through F(m×m, 3×3).

    Forward: the zero-padded map's (m+2)² tiles at stride m, d; V = (Bᵀ⊗Bᵀ) d [α², tiles, C_in];
    U = (G⊗G) g [α², C_in, C_out]; M = V U, one matrix multiply per tile position; Y = (Aᵀ⊗Aᵀ) M laid out
    in the map with the bias added. Backward is the same chain transposed: dM = (Aᵀ⊗Aᵀ)ᵀ dY, dU = Vᵀ dM,
    dV = dM Uᵀ, dd = (Bᵀ⊗Bᵀ)ᵀ dV added back into the overlapping tiles, dg = (G⊗G)ᵀ dU. Only V is saved.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,  # type: ignore[override]
                m: int) -> torch.Tensor:
        n, ci, h, w = x.shape
        co = weight.shape[0]
        th, tw, alpha = *_tiles(h, w, m), m + 2
        tiles = n * th * tw
        ka, kg, kb = _transforms(m, x.dtype, x.device)
        hp, wp = th * m + 2, tw * m + 2
        # V is saved for backward; in inference it is a temporary too
        keep_v = any(ctx.needs_input_grad[:2])
        xp, d, prod, y, *v_buffer = _WORKSPACE.take(
            x, (n, hp, wp, ci), (alpha, alpha, n, th, tw, ci), (alpha * alpha, tiles, co),
            (m * m, tiles * co), *(() if keep_v else ((alpha * alpha, tiles * ci),)))
        # zero padding: the border rows and columns, then the map (any memory format) copied in as NHWC
        xp[:, 0].zero_()
        xp[:, h + 1:].zero_()
        xp[:, :, 0].zero_()
        xp[:, :, w + 1:].zero_()
        xp[:, 1:h + 1, 1:w + 1].copy_(x.permute(0, 2, 3, 1))
        d.copy_(xp.unfold(1, alpha, m).unfold(2, alpha, m).permute(4, 5, 0, 1, 2, 3))
        v = torch.mm(kb, d.view(alpha * alpha, -1), out=v_buffer[0] if v_buffer else None)
        v = v.view(alpha * alpha, tiles, ci)
        u = torch.mm(kg, weight.reshape(co * ci, 9).t()).view(-1, co, ci).transpose(1, 2)
        torch.bmm(v, u, out=prod)
        torch.mm(ka, prod.view(alpha * alpha, -1), out=y)
        y = y.view(m, m, n, th, tw, co)
        channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        if channels_last:
            out = x.new_empty(n, th * m, tw * m, co)
            dest = out.view(n, th, m, tw, m, co).permute(2, 4, 0, 1, 3, 5)
            out = out.permute(0, 3, 1, 2)
        else:
            out = x.new_empty(n, co, th * m, tw * m)
            dest = out.view(n, co, th, m, tw, m).permute(3, 5, 0, 2, 4, 1)
        if bias is None:
            dest.copy_(y)
        else:
            torch.add(y, bias, out=dest)
        if th * m != h or tw * m != w:
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            out = out[:, :, :h, :w].contiguous(memory_format=fmt)
        ctx.save_for_backward(*((v, u) if keep_v else ()))
        ctx.m, ctx.x_shape, ctx.x_contiguous, ctx.has_bias = m, x.shape, x.is_contiguous(), bias is not None
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        v, u = ctx.saved_tensors or (None, None)  # nothing saved when only the bias needs a gradient
        m, (n, ci, h, w) = ctx.m, ctx.x_shape
        co = grad.shape[1]
        th, tw, alpha = *_tiles(h, w, m), m + 2
        tiles = n * th * tw
        ka, kg, kb = _transforms(m, grad.dtype, grad.device)
        dy, dprod, dv, dd = _WORKSPACE.take(grad, (m, m, n, th, tw, co), (alpha * alpha, tiles * co),
                                            (alpha * alpha, tiles, ci), (alpha, alpha, n, th, tw, ci))
        g = grad.permute(0, 2, 3, 1)
        if th * m != h or tw * m != w:
            g = F.pad(g, (0, 0, 0, tw * m - w, 0, th * m - h))
        dy.copy_(g.reshape(n, th, m, tw, m, co).permute(2, 4, 0, 1, 3, 5))
        torch.mm(ka.t(), dy.view(m * m, -1), out=dprod)
        dprod = dprod.view(alpha * alpha, tiles, co)
        dx = dweight = dbias = None
        if ctx.needs_input_grad[0]:
            torch.bmm(dprod, u.transpose(1, 2), out=dv)
            torch.mm(kb.t(), dv.view(alpha * alpha, -1), out=dd.view(alpha * alpha, -1))
            # the padded map's gradient as m×m blocks, one more block row and column for the overlap:
            # rows m, m+1 of a tile are rows 0, 1 of the next block
            gx = grad.new_empty(n, th + 1, m, tw + 1, m, ci)
            gx[:, th].zero_()
            gx[:, :, :, tw].zero_()
            blocks = gx.permute(2, 4, 0, 1, 3, 5)  # [m(row), m(col), N, th+1, tw+1, C]
            blocks[:, :, :, :th, :tw] = dd[:m, :m]
            blocks[:2, :, :, 1:, :tw] += dd[m:, :m]
            blocks[:, :2, :, :th, 1:] += dd[:m, m:]
            blocks[:2, :2, :, 1:, 1:] += dd[m:, m:]
            dx = gx.view(n, (th + 1) * m, (tw + 1) * m, ci)[:, 1:h + 1, 1:w + 1].permute(0, 3, 1, 2)
            if ctx.x_contiguous:
                dx = dx.contiguous()
        if ctx.needs_input_grad[1]:
            du = torch.bmm(v.transpose(1, 2), dprod)  # [α², C_in, C_out]
            dweight = torch.mm(du.transpose(1, 2).reshape(alpha * alpha, co * ci).t(), kg).view(co, ci, 3, 3)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            dbias = grad.sum((0, 2, 3))
        return dx, dweight, dbias, None


def winograd_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                    m: int = 4) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` for a 3×3 kernel through F(m×m, 3×3) (Lavin & Gray eq. 12:
    one [tiles, C_in] × [C_in, C_out] product per tile position); the output keeps x's memory format.
    F(4×4) on float32/float64 CPU maps runs its transforms in C where the native kernels are built
    (``genzoo.nets.cpu_kernels``), everything else through PyTorch ops."""
    if m == 4 and cpu_kernels.takes_winograd(x) and weight.dtype == x.dtype:
        return _NativeWinogradConv.apply(x, weight, bias)
    return _WinogradConv.apply(x, weight, bias, m)


#: F(m×m, 3×3) tile size: F(4×4) does 4× fewer multiplies and stays within ~1e-5 of float64 in float32
#: (F(6×6) loses two more digits)
TILE = 4
#: the measured break-even of the PyTorch-ops path (benchmarks/winograd.py, 1 thread, float32, session 9):
#: with fewer output channels its transforms, separate passes over 2.25× the map, cost more than the 4×
#: fewer multiplies save, and it pays in training only
MIN_OUT_CHANNELS = 128
#: the same for the C transforms (one pass each, no padded or gathered copies; session 10): every 3×3
#: convolution of the ADM UNet (64-256 channels) measured faster, forward and forward+backward
NATIVE_MIN_OUT_CHANNELS = 64


def _plain(t: torch.Tensor) -> bool:
    """Neither a forward-mode dual tensor (sCM's tangents) nor a torch.func-wrapped one: the Winograd
    function has a backward only, so those keep ``F.conv2d``'s derivative rules."""
    return not torch._C._functorch.is_functorch_wrapped_tensor(t) and fwAD.unpack_dual(t).tangent is None


def winograd_pays(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Where F(4×4, 3×3) measured faster than ``F.conv2d`` on the CPU (docs/performance.md): float32
    channels_last maps, one torch thread, no autocast, no compiled graph, plain tensors; with the C
    transforms (``cpu_kernels.takes_winograd``) at least ``NATIVE_MIN_OUT_CHANNELS`` output channels,
    forward (sampling) and training alike; with the PyTorch ops only in training (autograd recording) and
    at least ``MIN_OUT_CHANNELS``. Contiguous (NCHW) maps, bfloat16/float16, CUDA and several threads keep
    ``F.conv2d``."""
    # compiling first: under torch.compile nothing after it is traced (get_num_threads would break the graph)
    if not (not torch.compiler.is_compiling() and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and torch.get_num_threads() == 1
            and not torch.is_autocast_enabled("cpu") and _plain(x) and _plain(weight)
            and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()):
        return False
    if cpu_kernels.takes_winograd(x):
        return weight.shape[0] >= NATIVE_MIN_OUT_CHANNELS
    return (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
            and weight.shape[0] >= MIN_OUT_CHANNELS)


class Conv3x3(nn.Conv2d):
    """``nn.Conv2d(in, out, 3, padding=1)`` (same parameters, same ``state_dict``) that runs float32 maps
    through :func:`winograd_conv2d` where :func:`winograd_pays` and ``winograd`` is set (the default),
    elsewhere ``F.conv2d``."""

    def __init__(self, in_channels: int, out_channels: int, winograd: bool = True):
        super().__init__(in_channels, out_channels, 3, padding=1)
        self.winograd = winograd

    def uses_winograd(self, x: torch.Tensor) -> bool:
        return self.winograd and winograd_pays(x, self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.uses_winograd(x):
            return winograd_conv2d(x, self.weight, self.bias, TILE)
        return super().forward(x)


def use_winograd(net: nn.Module, enabled: bool = True) -> nn.Module:
    """Switch every :class:`Conv3x3` of ``net`` to (or off) the Winograd path; returns ``net``."""
    for module in net.modules():
        if isinstance(module, Conv3x3):
            module.winograd = enabled
    return net
