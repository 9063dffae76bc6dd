"""One 3×3 stride-1 convolution: Winograd F(m×m, 3×3) (``genzoo.nets.winograd``) against ``F.conv2d``.

    python benchmarks/winograd.py [--threads 1] [--repeats 7] [--variants ...] [--shapes ...]

At the ADM UNet's shapes of issue #24 (batch 16; 64→64 at 32², 128→128 at 16² and 8², and the res
blocks' in/out mixes), float32, forward (inference_mode) and forward+backward (gradients of input,
weight and bias): process-CPU milliseconds, medians of interleaved rounds, and each variant's speed-up
over ``F.conv2d`` in the same memory layout (median of per-round ratios). Also the float32 error of each
variant against the float64 convolution, relative to the output's largest magnitude.
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from genzoo.nets import cpu_kernels, winograd
from genzoo.nets.winograd import winograd_conv2d

#: the 3×3 stride-1 convolutions of the issue's ADM UNet (N x C_in x C_out x H=W) and how many it has
SHAPES = ["16x64x64x32", "16x128x128x16", "16x128x128x8", "16x128x128x32", "16x128x64x32", "16x256x128x16",
          "16x192x64x32", "16x256x128x8", "16x192x128x16", "16x64x128x16", "16x64x64x16"]


def parse_shape(text: str) -> tuple[int, int, int, int]:
    n, ci, co, hw = (int(v) for v in text.split("x"))
    return n, ci, co, hw


def conv_fn(variant: str):
    """``conv2d``; ``fM`` (F(M×M, 3×3), e.g. f4: the C transforms where built); ``f4-torch`` (F(4×4) in
    PyTorch ops only); ``f4-dw`` (the C transforms with oneDNN's direct weight gradient)."""
    if variant == "conv2d":
        return lambda x, w, b: F.conv2d(x, w, b, padding=1)
    m = int(variant[1:].partition("-")[0])
    return lambda x, w, b: winograd_conv2d(x, w, b, m)


@contextmanager
def configured(variant: str):
    """The variant's options (PyTorch-only transforms, direct weight gradient) for a whole step."""
    option = variant.partition("-")[2]
    saved = cpu_kernels.library, winograd.WINOGRAD_WEIGHT_GRAD
    if option == "torch":
        cpu_kernels.library = lambda: None
    winograd.WINOGRAD_WEIGHT_GRAD = option != "dw"
    try:
        yield
    finally:
        cpu_kernels.library, winograd.WINOGRAD_WEIGHT_GRAD = saved


def step(variant: str, x, w, b, train: bool):
    fn = conv_fn(variant)
    if not train:
        def run() -> None:
            with torch.inference_mode(), configured(variant):
                fn(x, w, b)
        return run
    xg, wg, bg = (t.detach().requires_grad_() for t in (x, w, b))
    grad = torch.ones_like(F.conv2d(x, w, b, padding=1), memory_format=torch.preserve_format)

    def run() -> None:
        with configured(variant):
            out = fn(xg, wg, bg)
            out.backward(grad)
        xg.grad = wg.grad = bg.grad = None
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--variants", default="f4")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="NxCINxCOUTxHW, comma-separated")
    parser.add_argument("--layouts", default="nchw,nhwc")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = args.variants.split(",")
    print(f"# 3x3 conv, fp32, {torch.get_num_threads()} threads, process-CPU ms (medians of {args.repeats} "
          "interleaved rounds); xR = speed-up over F.conv2d in the same layout (median of per-round ratios)")
    for shape in args.shapes.split(","):
        n, ci, co, hw = parse_shape(shape)
        gen = torch.Generator().manual_seed(0)
        x64 = torch.randn(n, ci, hw, hw, generator=gen, dtype=torch.float64)
        w64 = torch.randn(co, ci, 3, 3, generator=gen, dtype=torch.float64) / (3 * ci**0.5)
        b64 = torch.randn(co, generator=gen, dtype=torch.float64)
        ref = F.conv2d(x64, w64, b64, padding=1)
        errs = {}
        for v in variants:
            with configured(v):
                got = conv_fn(v)(x64.float(), w64.float(), b64.float()).double()
            errs[v] = ((got - ref).abs().max() / ref.abs().max()).item()
        for layout in args.layouts.split(","):
            fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
            x = x64.float().contiguous(memory_format=fmt)
            w, b = w64.float(), b64.float()
            for train in (False, True):
                steps = {v: step(v, x, w, b, train) for v in ["conv2d"] + variants}
                for s in steps.values():
                    s()
                times: dict[str, list[float]] = {k: [] for k in steps}
                for _ in range(args.repeats):
                    for k, s in steps.items():
                        t0 = time.process_time()
                        s()
                        times[k].append(time.process_time() - t0)
                base = times["conv2d"]
                pass_ = "f+b" if train else "fwd"
                row = f"{shape:15s} {layout} {pass_}  conv2d {statistics.median(base) * 1e3:7.2f}"
                for v in variants:
                    ratio = statistics.median(b0 / t for b0, t in zip(base, times[v]))
                    row += f" | {v} {statistics.median(times[v]) * 1e3:7.2f} x{ratio:.2f}"
                print(row, flush=True)
        direct = F.conv2d(x64.float(), w64.float(), b64.float(), padding=1).double()
        errs = {"conv2d": ((direct - ref).abs().max() / ref.abs().max()).item()} | errs
        print(f"{shape:15s} fp32 error vs float64 (rel. to max |y|): "
              + " ".join(f"{v} {e:.1e}" for v, e in errs.items()), flush=True)


if __name__ == "__main__":
    main()
