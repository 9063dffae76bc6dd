"""Hand-written CPU kernels, compiled at first use into one library: the fused GroupNorm(+scale-shift)+SiLU
of ``group_norm_silu.c``, forward and backward, over float32 and bfloat16 maps, and the tile transforms of
the Winograd F(4×4, 3×3) convolution of ``winograd.c`` (float32 and float64 channels_last maps).

The C sources need no torch headers, so they compile in about two seconds (``gcc -O3 -march=native -fopenmp
-shared``) with no network; the library is cached under ``$XDG_CACHE_HOME/genzoo/kernels`` (else
``~/.cache/genzoo/kernels``), keyed by the sources, the compiler's version, the flags and the CPU, built in a
temporary folder beside it and renamed into place, so concurrent processes never see a partial file. It is
called through ctypes on the tensors' memory. Without a compiler, or when the build or the load fails,
``library()`` is None (logged once at debug level) and callers keep their PyTorch paths: same results,
only slower. ``GENZOO_NATIVE_KERNELS=0`` turns the kernels off.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

_SOURCES = tuple(Path(__file__).with_name(name) for name in ("group_norm_silu.c", "winograd.c"))
# the first set that builds is used; the last two need no OpenMP runtime (one thread) and no CPU-specific
# code (-fopenmp-simd keeps the vectorisation hints)
_FLAG_SETS = (
    ("-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp"),
    ("-O3", "-march=native", "-fopenmp"),
    ("-O3", "-fopenmp-simd"),
    ("-O3",),
)
_log = logging.getLogger(__name__)
_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_tried = False

_p = ctypes.c_void_p
_i64 = ctypes.c_int64
_int = ctypes.c_int
_FORWARD_ARGS = (_p, _p, _int, _int, _i64, _i64, _i64, _i64, _p, _p, _p, _p, ctypes.c_double, _int, _p, _p,
                 _int)
_BACKWARD_ARGS = (_p, _p, _p, _int, _int, _i64, _i64, _i64, _i64, _p, _p, _p, _p, _int, _p, _p, _p, _p, _int)
#: (map, planes, N, H, W, C, tile rows, tile columns, plane stride, threads); the output transform also
#: takes the bias
_WINOGRAD_ARGS = (_p, _p, _i64, _i64, _i64, _i64, _i64, _i64, _i64, _int)
_WINOGRAD_OUTPUT_ARGS = (_p, _p, _p, _i64, _i64, _i64, _i64, _i64, _i64, _i64, _int)


def compiler() -> str | None:
    """The C compiler: ``$CC``, else gcc, else cc on the PATH; None where there is none."""
    return os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")


def cache_dir() -> Path:
    """Where compiled kernels are kept: ``$XDG_CACHE_HOME/genzoo/kernels``, else
    ``~/.cache/genzoo/kernels``."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "genzoo" / "kernels"


def _cpu_signature() -> str:
    """The CPU's model and flags (``-march=native`` code runs only on a CPU like the one it was built on)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    keep = [line for line in lines if line.startswith(("model name", "flags", "Features"))]
    return platform.machine() + "\n" + "\n".join(dict.fromkeys(keep))


def _build(cc: str) -> Path:
    """Compile the sources with the first flag set that builds, or return the cached library; raises when
    none builds."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60).stdout
    sources = [path.read_bytes() for path in _SOURCES]
    errors = []
    for flags in _FLAG_SETS:
        key = hashlib.sha256(b"\0".join([*sources, cc.encode(), version.encode(), " ".join(flags).encode(),
                                         _cpu_signature().encode()])).hexdigest()[:20]
        target = cache_dir() / f"genzoo-kernels-{key}.so"
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
            built = Path(tmp) / target.name
            command = [cc, *flags, "-shared", "-fPIC", *map(str, _SOURCES), "-o", str(built), "-lm"]
            run = subprocess.run(command, capture_output=True, text=True, timeout=300)
            if run.returncode == 0:
                os.replace(built, target)
                return target
            errors.append(f"{' '.join(flags)}: {run.stderr.strip()[-500:]}")
    raise RuntimeError("; ".join(errors))


def library() -> ctypes.CDLL | None:
    """The compiled kernels, built at the first call; None (logged once) where they cannot be built."""
    global _library, _tried
    if _tried:
        return _library
    with _lock:
        if not _tried:
            _library = _load()
            _tried = True
    return _library


def _load() -> ctypes.CDLL | None:
    if os.environ.get("GENZOO_NATIVE_KERNELS", "1") == "0":
        _log.debug("native CPU kernels off (GENZOO_NATIVE_KERNELS=0): GroupNorm+SiLU and Winograd run "
                   "through PyTorch")
        return None
    cc = compiler()
    if cc is None:
        _log.debug("no C compiler found: GroupNorm+SiLU and Winograd run through PyTorch")
        return None
    try:
        lib = ctypes.CDLL(str(_build(cc)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        _log.debug("native CPU kernels not built (%s): GroupNorm+SiLU and Winograd run through PyTorch", err)
        return None
    lib.gn_silu_forward.argtypes, lib.gn_silu_forward.restype = _FORWARD_ARGS, _int
    lib.gn_silu_backward.argtypes, lib.gn_silu_backward.restype = _BACKWARD_ARGS, _int
    for suffix in ("f32", "f64"):
        for name in ("wg_input", "wg_output_adjoint"):
            fn = getattr(lib, f"{name}_{suffix}")
            fn.argtypes, fn.restype = _WINOGRAD_ARGS, _int
        fn = getattr(lib, f"wg_output_{suffix}")
        fn.argtypes, fn.restype = _WINOGRAD_OUTPUT_ARGS, _int
        fn = getattr(lib, f"wg_filter_{suffix}")
        fn.argtypes, fn.restype = (_p, _p, _p, _i64, _i64, _i64, _int), None
    return lib


def reset() -> None:
    """Forget the loaded library, so the next ``library()`` builds or loads it again (for tests)."""
    global _library, _tried
    with _lock:
        _library, _tried = None, False


def _layout(x: torch.Tensor) -> int | None:
    """1 for a channels_last [N, C, H, W] map, 0 for a contiguous one, None for other strides."""
    if x.is_contiguous():
        return 0
    return 1 if x.is_contiguous(memory_format=torch.channels_last) else None


def takes(x: torch.Tensor, groups: int) -> bool:
    """True where the kernels take ``x``: a non-empty float32/bfloat16 [N, C, H, W] CPU map, contiguous or
    channels_last, with C divisible by ``groups``, at least one sample per torch thread (the kernels share
    samples among threads; the library also splits groups), and the library built."""
    return (x.device.type == "cpu" and x.dim() == 4 and x.dtype in (torch.float32, torch.bfloat16)
            and x.numel() > 0 and x.shape[1] % groups == 0 and _layout(x) is not None
            and x.shape[0] >= torch.get_num_threads() and library() is not None)


def _floats(t: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor | None:
    return None if t is None else t.detach().to(torch.float32).reshape(shape).contiguous()


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def group_norm_silu_forward(x: torch.Tensor, groups: int, weight: torch.Tensor | None,
                            bias: torch.Tensor | None, eps: float, scale: torch.Tensor | None,
                            shift: torch.Tensor | None, silu: bool
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SiLU(GroupNorm(x)·(1 + scale) + shift) (ADM §3; Wu & He 2018, Eq. 1-2) of a map that ``takes``
    accepts, in its dtype and layout; with the float32 [N, groups] mean and 1/sqrt(var + eps)."""
    n, c, h, w = x.shape
    out = torch.empty_like(x)
    mean = x.new_empty((n, groups), dtype=torch.float32)
    rstd = torch.empty_like(mean)
    params = [_floats(weight, (c,)), _floats(bias, (c,)), _floats(scale, (n, c)), _floats(shift, (n, c))]
    failed = library().gn_silu_forward(
        x.data_ptr(), out.data_ptr(), int(x.dtype == torch.bfloat16), _layout(x), n, c, h * w, groups,
        *map(_ptr, params), float(eps), int(silu), mean.data_ptr(), rstd.data_ptr(), torch.get_num_threads())
    if failed:
        raise MemoryError("group_norm_silu_forward: out of memory for its work buffers")
    return out, mean, rstd


def group_norm_silu_backward(x: torch.Tensor, grad: torch.Tensor, groups: int, weight: torch.Tensor | None,
                             bias: torch.Tensor | None, scale: torch.Tensor | None,
                             shift: torch.Tensor | None, silu: bool, mean: torch.Tensor, rstd: torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dL/dx of ``group_norm_silu_forward`` from dL/d output, recomputing the normalised map from x and
    the saved moments; with Σ dy and Σ dy·x̂ per (sample, channel) (float32 [N, C], dy the gradient at the
    normalised-and-modulated map, x̂ the normalised map), from which the parameters' gradients follow."""
    n, c, h, w = x.shape
    grad = grad.to(x.dtype).contiguous(memory_format=torch.channels_last if _layout(x) else
                                       torch.contiguous_format)
    dx = torch.empty_like(x)
    s1 = x.new_empty((n, c), dtype=torch.float32)
    p = torch.empty_like(s1)
    params = [_floats(weight, (c,)), _floats(bias, (c,)), _floats(scale, (n, c)), _floats(shift, (n, c))]
    failed = library().gn_silu_backward(
        x.data_ptr(), grad.data_ptr(), dx.data_ptr(), int(x.dtype == torch.bfloat16), _layout(x), n, c, h * w,
        groups, *map(_ptr, params), int(silu), mean.data_ptr(), rstd.data_ptr(), s1.data_ptr(), p.data_ptr(),
        torch.get_num_threads())
    if failed:
        raise MemoryError("group_norm_silu_backward: out of memory for its work buffers")
    return dx, s1, p


_WINOGRAD_DTYPES = {torch.float32: "f32", torch.float64: "f64"}


def _planes(t: torch.Tensor, rows: int, cols: int) -> bool:
    """``t`` is [36, rows, cols] with contiguous rows of ``cols``, its planes at any distance."""
    return (t.shape == (36, rows, cols) and t.stride(2) == 1 and t.stride(1) == cols
            and t.stride(0) >= rows * cols)


def takes_winograd(x: torch.Tensor) -> bool:
    """True where the Winograd transforms take ``x``: a float32/float64 CPU tensor, and the library built."""
    return x.device.type == "cpu" and x.dtype in _WINOGRAD_DTYPES and library() is not None


def _winograd_call(name: str, t: torch.Tensor, *args: int | None) -> None:
    fn = getattr(library(), f"{name}_{_WINOGRAD_DTYPES[t.dtype]}")
    if fn(*args, torch.get_num_threads()):
        raise MemoryError(f"{name}: out of memory for its work rows")


def winograd_input(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """F(4×4, 3×3)'s input transform (Lavin & Gray eq. 8, Bᵀ d B) of a channels_last [N, C, H, W] map zero
    padded by one, into ``out`` [36, N·⌈H/4⌉·⌈W/4⌉, C] (the map's dtype; contiguous planes, at any
    distance)."""
    n, c, h, w = x.shape
    assert x.is_contiguous(memory_format=torch.channels_last) and out.dtype == x.dtype
    assert _planes(out, n * -(-h // 4) * -(-w // 4), c)
    _winograd_call("wg_input", x, x.data_ptr(), out.data_ptr(), n, h, w, c, -(-h // 4), -(-w // 4),
                   out.stride(0))
    return out


def winograd_filter(weight: torch.Tensor, g: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """F(4×4, 3×3)'s filter transform (G g Gᵀ, Lavin & Gray eq. 8) of a [C_out, C_in, 3, 3] filter with the
    [6, 3] matrix ``g`` (the weight's dtype), into ``out`` [36, C_in, C_out] (the layout the products
    read; its planes at any distance)."""
    co, ci = weight.shape[:2]
    weight = weight.detach().contiguous()
    assert weight.shape[2:] == (3, 3) and g.shape == (6, 3) and g.is_contiguous() and _planes(out, ci, co)
    assert out.dtype == weight.dtype == g.dtype
    getattr(library(), f"wg_filter_{_WINOGRAD_DTYPES[weight.dtype]}")(
        weight.data_ptr(), g.data_ptr(), out.data_ptr(), co, ci, out.stride(0), torch.get_num_threads())
    return out


def winograd_output(m: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor) -> torch.Tensor:
    """F(4×4, 3×3)'s output transform (Aᵀ M A) of ``m`` [36, tiles, C] plus ``bias`` into the channels_last
    [N, C, H, W] map ``out`` (the tiles' parts outside it dropped; m's planes at any distance)."""
    n, c, h, w = out.shape
    assert out.is_contiguous(memory_format=torch.channels_last) and m.dtype == out.dtype
    assert _planes(m, n * -(-h // 4) * -(-w // 4), c)
    bias = None if bias is None else bias.detach().to(m.dtype).contiguous()
    _winograd_call("wg_output", m, m.data_ptr(), _ptr(bias), out.data_ptr(), n, h, w, c, -(-h // 4),
                   -(-w // 4), m.stride(0))
    return out


def winograd_output_adjoint(grad: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The transpose of :func:`winograd_output`'s transform (A dY Aᵀ per 4×4 tile, zero outside the map) of
    a channels_last [N, C, H, W] gradient, into ``out`` [36, tiles, C] (planes at any distance)."""
    n, c, h, w = grad.shape
    assert grad.is_contiguous(memory_format=torch.channels_last) and out.dtype == grad.dtype
    assert _planes(out, n * -(-h // 4) * -(-w // 4), c)
    _winograd_call("wg_output_adjoint", grad, grad.data_ptr(), out.data_ptr(), n, h, w, c, -(-h // 4),
                   -(-w // 4), out.stride(0))
    return out
