"""Network throughput against the machine's own peak, and the ADM UNet against the official code.

    python benchmarks/networks.py [--quick] [--threads 1] [--device cpu|cuda] [--repeats 5]
        [--official /tmp/gd] [--before main] [--profile] [--compile] [--without-kernel]
        [--without-winograd]
        [--sections peak,nets,sampling,official,demo]

Sections (each prints a table):
  peak      fp32 and bf16 matrix-multiply TFLOP/s of this machine, measured in the same run;
  nets      every network family at two sizes: forward and forward+backward images/s in fp32 and bf16
            autocast, FLOPs per image (``torch.utils.flop_counter``) and the achieved fraction of the peak
            of the same precision;
  sampling  images/s of each family at the demo's setting (EDM Heun 6 steps, consistency 1 step, BigGAN),
            after a warm-up;
  official  with ``--official PATH`` (a checkout of openai/guided-diffusion, not part of genzoo): the
            official ``UNetModel`` and genzoo's ADM UNet holding the same weights, 32 px, 64 channels,
            mult 1,2,2, attention 16,8, batch 16; ratios against official fp32 (genzoo fp32 channels_last
            forward+backward with its default Winograd 3x3 convolutions; ``--without-winograd`` adds rows
            with every convolution direct);
  bound     with ``--official PATH``: genzoo's fp32 ADM step taken apart (its convolutions, norms and
            attention cores replayed alone, NCHW and NHWC) against the official step: the speed-up genzoo
            would reach if everything but its convolutions were free, and the convolutions' fraction of peak
            (direct, and with the 3x3 ones that genzoo.nets.winograd.Conv3x3 takes through Winograd);
  demo      with ``--before REV``: the demo's EDM training lane (DDPM++, bf16) with ``genzoo/nets/unet.py`` as
            at git revision REV against the working tree (the modules it imports, such as
            ``genzoo/nets/fused.py``, are the working tree's on both sides: ``benchmarks/demo_lanes.py``
            compares whole packages through the training engine).

Timings that are compared are interleaved (A, B, A, B, ...) and the medians compared, so a shared, loaded
machine slows both sides alike; ``--threads`` fixes torch's thread count (state the load with the result).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch.utils.flop_counter import FlopCounterMode

from genzoo import nets
from genzoo.nets.winograd import use_winograd

Step = Callable[[], None]


# ------------------------------------------------------------------------------------------ timing


def interleaved_runs(steps: dict[str, Step], repeats: int, sync: Callable[[], None]
                     ) -> dict[str, tuple[list[float], list[float]]]:
    """Wall and process-CPU seconds of each call of each step, the steps run in turn ``repeats`` times after
    one warm-up. With a fixed thread count, CPU seconds barely move with other processes' load."""
    for step in steps.values():
        step()
    sync()
    times: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            wall, cpu = time.perf_counter(), time.process_time()
            step()
            sync()
            times[name][0].append(time.perf_counter() - wall)
            times[name][1].append(time.process_time() - cpu)
    return times


def interleaved(steps: dict[str, Step], repeats: int, sync: Callable[[], None]) -> dict[str, float]:
    """Median seconds per call of each step (see ``interleaved_runs``): process-CPU seconds when the work
    runs on the CPU (robust to other processes' load), wall seconds on an accelerator."""
    clock = 1 if sync is cpu_sync else 0
    return {k: statistics.median(v[clock]) for k, v in interleaved_runs(steps, repeats, sync).items()}


def cpu_sync() -> None:
    """Nothing to wait for on the CPU."""


def ratio_line(label: str, batch: int, runs: tuple[list[float], list[float]],
               base: tuple[list[float], list[float]]) -> str:
    """img/s (wall, CPU) and the speed-up over ``base``: median of the per-round ratios [min-max]."""
    out = f"{label:34s}"
    for i, unit in ((0, "img/s"), (1, "img/cpu-s")):
        ratios = [b / a for a, b in zip(runs[i], base[i])]
        out += (f" {batch / statistics.median(runs[i]):7.2f} {unit} x{statistics.median(ratios):.2f} "
                f"[{min(ratios):.2f}-{max(ratios):.2f}] |")
    return out.rstrip(" |")


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def forward_step(net: torch.nn.Module, call: Callable[[], torch.Tensor], device: torch.device,
                 bf16: bool) -> Step:
    def step() -> None:
        with torch.inference_mode(), autocast(device, bf16):
            call()
    return step


def train_step(net: torch.nn.Module, call: Callable[[], torch.Tensor], device: torch.device,
               bf16: bool) -> Step:
    def step() -> None:
        net.zero_grad(set_to_none=True)
        with autocast(device, bf16):
            out = call()
        out.float().square().mean().backward()
    return step


def without_norm_kernel(call: Callable[[], torch.Tensor], off: bool = True) -> Callable[[], torch.Tensor]:
    """``call`` with the compiled GroupNorm+SiLU CPU kernel off where ``off``: its norms take the PyTorch path
    (as before the kernel), and so do their backwards, which follow the forward's choice."""
    from genzoo.nets import cpu_kernels

    def wrapped() -> torch.Tensor:
        saved = cpu_kernels.library
        cpu_kernels.library = lambda: None
        try:
            return call()
        finally:
            cpu_kernels.library = saved
    return wrapped if off else call


def flops(step: Step) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


def peak(device: torch.device, n: int, sync: Callable[[], None], repeats: int) -> dict[str, float]:
    """TFLOP/s of an n×n matrix multiply in fp32 and bf16 (the machine's attainable peak)."""
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        sec = interleaved({name: lambda a=a, b=b: a @ b}, repeats, sync)[name]
        out[name] = 2 * n**3 / sec / 1e12
    return out


# ------------------------------------------------------------------------------------------ networks


def adm_config(channels: int, res: int = 32) -> dict:
    return dict(image_size=res, num_channels=channels, num_res_blocks=2, channel_mult="1,2,2",
                attention_resolutions=f"{res // 2},{res // 4}", num_head_channels=32, learn_sigma=True,
                resblock_updown=True, use_new_attention_order=True, use_scale_shift_norm=True)


def network_cases(quick: bool) -> list[tuple[str, str, dict, int, str]]:
    """(label, registry name, config, resolution, call kind) at a small and a larger size."""
    res = 16 if quick else 32
    cases = []
    for ch in (32, 64) if quick else (64, 128):
        cases += [
            (f"adm ch{ch}", "adm", adm_config(ch, res), res, "unet"),
            (f"ddpmpp ch{ch}", "ddpmpp", dict(resolution=res, model_channels=ch, num_blocks=2,
                                             attn_resolutions=(res // 2,), adaptive_scale=True), res, "unet"),
            (f"songunet ch{ch}", "songunet", dict(img_resolution=res, in_channels=3, out_channels=3,
                                                 model_channels=ch, channel_mult=(1, 2), num_blocks=1,
                                                 attn_resolutions=(res // 2,), dropout=0.0), res, "unet"),
            (f"dhariwalunet ch{ch}", "dhariwalunet", dict(img_resolution=res, in_channels=3, out_channels=3,
                                                         model_channels=ch, channel_mult=(1, 2), num_blocks=1,
                                                         attn_resolutions=(res // 2,), dropout=0.0),
             res, "unet"),
            (f"biggan ch{ch // 2}", "biggan", dict(resolution=res, ch=ch // 2, z_dim=64, shared_dim=32,
                                                   num_classes=10, attn_res=(res // 2,)), res, "gan"),
            (f"gigagan ch{ch * 2}", "gigagan-generator", dict(resolution=res, channel_max=ch * 2,
                                                             channel_base=ch * 2 * res), res, "gigagan"),
        ]
    return cases


def make_call(net: torch.nn.Module, kind: str, batch: int, res: int, device: torch.device
              ) -> Callable[[], torch.Tensor]:
    gen = torch.Generator(device="cpu").manual_seed(0)
    if kind == "unet":
        x = torch.randn(batch, 3, res, res, generator=gen).to(device)
        t = torch.rand(batch, generator=gen).to(device)
        return lambda: net(x, t)
    z = torch.randn(batch, net.z_dim, generator=gen).to(device)
    if kind == "gan":
        y = torch.randint(0, 10, (batch,), generator=gen).to(device)
        return lambda: net(z, y)
    prompts = ["a red circle"] * batch
    return lambda: net(z, prompts=prompts)


def section_nets(args: argparse.Namespace, device: torch.device, sync, pk: dict[str, float]) -> None:
    print(f"\n## networks (batch {args.batch}, {torch.get_num_threads()} threads, medians of {args.repeats}; "
          f"on the CPU images per CPU-second)")
    print(f"{'network':22s} {'params':>8s} {'GFLOP/img f':>11s} {'f+b':>7s} | "
          f"{'fwd fp32':>8s} {'fwd bf16':>8s} {'f+b fp32':>8s} {'f+b bf16':>8s} img/s | "
          f"{'% peak f+b fp32':>15s} {'bf16':>6s}")
    for label, name, cfg, res, kind in network_cases(args.quick):
        torch.manual_seed(0)
        net = nets.build(name, **cfg).to(device)
        call = make_call(net, kind, args.batch, res, device)
        steps = {f"{p} {'bf16' if bf else 'fp32'}": (forward_step if p == "fwd" else train_step)(
            net, call, device, bf) for p in ("fwd", "f+b") for bf in (False, True)}
        f_fwd = flops(call) / args.batch
        f_fb = flops(steps["f+b fp32"]) / args.batch
        sec = interleaved(steps, args.repeats, sync)
        ips = {k: args.batch / v for k, v in sec.items()}
        params = sum(p.numel() for p in net.parameters()) / 1e6
        frac = [f_fb * ips[f"f+b {p}"] / (pk[p] * 1e12) * 100 for p in ("fp32", "bf16")]
        print(f"{label:22s} {params:7.2f}M {f_fwd / 1e9:11.3f} {f_fb / 1e9:7.3f} | "
              f"{ips['fwd fp32']:8.1f} {ips['fwd bf16']:8.1f} {ips['f+b fp32']:8.1f} "
              f"{ips['f+b bf16']:8.1f}       | "
              f"{frac[0]:14.1f}% {frac[1]:5.1f}%")


# ------------------------------------------------------------------------------------------ sampling


def section_sampling(args: argparse.Namespace, device: torch.device, sync) -> None:
    from genzoo.demo import _networks
    from genzoo.diffusion.precond import EDMDenoiser
    from genzoo.diffusion.samplers import edm_sampler

    demo = _networks(16, tiny=False)
    e = demo["edm"]
    torch.manual_seed(0)
    unet = nets.build("ddpmpp", resolution=16, label_dim=10, model_channels=e["model_channels"],
                      num_blocks=e["num_blocks"], channel_mult=[int(c) for c in e["channel_mult"].split(",")],
                      attn_resolutions=(), adaptive_scale=True).to(device).eval()
    den = EDMDenoiser(unet)
    b = demo["biggan"]
    gan = nets.build("biggan", resolution=16, ch=b["g_ch"], z_dim=b["z_dim"], shared_dim=b["shared_dim"],
                     num_classes=10, attn_res=()).to(device).eval()
    n = args.sample_batch
    x = torch.randn(n, 3, 16, 16, device=device)
    y = torch.randint(0, 10, (n,), device=device)
    z = torch.randn(n, gan.z_dim, device=device)
    runs = {}
    for prec in ("fp32", "bf16"):
        def ctx(prec=prec):
            return autocast(device, prec == "bf16")

        def heun(ctx=ctx):
            with torch.inference_mode(), ctx():
                edm_sampler(den, x, y, num_steps=6)

        def one_step(ctx=ctx):
            with torch.inference_mode(), ctx():
                den(x * 80, torch.full((n,), 80.0, device=device), y)

        def biggan(ctx=ctx):
            with torch.inference_mode(), ctx():
                gan(z, y)
        runs |= {f"EDM DDPM++ Heun 6 steps {prec}": heun, f"consistency 1 step {prec}": one_step,
                 f"BigGAN G {prec}": biggan}
    sec = interleaved(runs, args.repeats, sync)
    print(f"\n## sampling at the demo setting (16 px, batch {n}; on the CPU images per CPU-second)")
    for k, v in sec.items():
        print(f"{k:34s} {n / v:9.1f} img/s")


# ------------------------------------------------------------------------------------------ official


def load_official(path: str) -> Callable[..., torch.nn.Module]:
    sys.path.insert(0, path)
    from guided_diffusion.script_util import create_model  # type: ignore[import-not-found]
    return create_model


def official_and_genzoo(args: argparse.Namespace, device: torch.device
                        ) -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The official ``UNetModel`` and genzoo's ADM UNet at the issue's configuration, holding the same
    random weights (the zero-initialised layers randomised too), and an input batch."""
    create_model = load_official(args.official)
    cfg = dict(adm_config(64), class_cond=False, dropout=0.0)
    torch.manual_seed(0)
    official = create_model(**cfg).to(device)
    ours = nets.build("adm", **cfg).to(device)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(args.official_batch, 3, 32, 32, generator=gen).to(device)
    t = torch.randint(0, 1000, (args.official_batch,), generator=gen).to(device)
    with torch.no_grad():
        for p in official.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    ours.load_state_dict(official.state_dict())
    return official, ours, x, t


def section_official(args: argparse.Namespace, device: torch.device, sync) -> None:
    official, ours, x, t = official_and_genzoo(args, device)
    cfg = dict(adm_config(64), class_cond=False, dropout=0.0)
    ours_cl = nets.build("adm", **cfg).to(device)
    ours_cl.load_state_dict(official.state_dict())
    ours_cl = ours_cl.to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():  # same weights -> same outputs
        ref = official(x, t)
        err = max((ours(x, t) - ref).abs().max().item(), (ours_cl(x_cl, t) - ref).abs().max().item())
    print(f"\n## ADM vs official guided-diffusion (32 px, ch 64, mult 1,2,2, attention 16,8, "
          f"batch {args.official_batch}, {torch.get_num_threads()} threads; max |Δ| of outputs {err:.1e}, "
          f"scale {ref.abs().max().item():.1f})")
    cases = {
        "official fp32": (official, x),
        "genzoo fp32": (ours, x),
        "genzoo fp32 channels_last": (ours_cl, x_cl),
        "genzoo bf16": (ours, x),
        "genzoo bf16 channels_last": (ours_cl, x_cl),
    }
    if args.without_kernel:
        cases |= {f"{k} (PyTorch norms)": v for k, v in cases.items() if k.startswith("genzoo")}
    if args.without_winograd:  # the same weights, every convolution through F.conv2d
        direct, direct_cl = (use_winograd(copy.deepcopy(net), False) for net in (ours, ours_cl))
        cases |= {"genzoo fp32 no Winograd": (direct, x), "genzoo fp32 channels_last no Winograd":
                  (direct_cl, x_cl)}
    print("speed-up against official fp32: median of per-round ratios [min-max], wall clock | CPU time")
    passes = [("forward+backward", train_step, cases), ("forward", forward_step, cases)]
    for pass_, make, chosen in passes:
        steps = {k: make(net, without_norm_kernel(lambda net=net, xx=xx: net(xx, t), "PyTorch norms" in k),
                         device, "bf16" in k)
                 for k, (net, xx) in chosen.items()}
        runs = interleaved_runs(steps, args.repeats, sync)
        for k, v in runs.items():
            print(ratio_line(f"{pass_} {k}", args.official_batch, v, runs["official fp32"]), flush=True)
        if args.compile and pass_ == "forward" and chosen is cases:  # after the rest: it takes minutes
            from genzoo.nets.compiled import compile_for_inference
            compiled = nets.build("adm", **cfg).to(device).to(memory_format=torch.channels_last)
            compiled.load_state_dict(official.state_dict())
            compile_for_inference(compiled, device)
            start = time.perf_counter()
            with torch.inference_mode():
                got = compiled(x_cl, t)
            seconds = time.perf_counter() - start
            print(f"compiled (inductor, frozen weights, channels_last) in {seconds:.0f} s; "
                  f"max |Δ| {(got - ref).abs().max().item():.1e}", flush=True)
            chosen = {k: cases[k] for k in ("official fp32", "genzoo fp32 channels_last")}
            passes.append(("forward", forward_step, chosen | {"genzoo fp32 compiled channels_last":
                                                              (compiled, x_cl)}))
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        for k in ("genzoo fp32 channels_last", "genzoo bf16 channels_last"):
            net, xx = cases[k]
            step = train_step(net, lambda net=net, xx=xx: net(xx, t), device, "bf16" in k)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                step()
            print(f"\n### profile: {k}, forward+backward\n"
                  + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


# ------------------------------------------------------------------------------------------ bound


def record_adm_parts(net: torch.nn.Module, x: torch.Tensor, t: torch.Tensor) -> dict[str, list]:
    """The inputs of every 2-D convolution, GroupNorm(+SiLU) and attention core in one forward of genzoo's
    ADM UNet (its module-level helpers swapped for recorders for the duration of the call)."""
    from genzoo.nets import adm

    rec: dict[str, list] = {"conv": [], "norm": [], "attention": []}
    saved = adm.norm_silu, adm.group_norm, adm.attend_packed_tokens

    def norm_silu(norm, h, scale_shift=None):
        ss = None if scale_shift is None else tuple(s.detach().clone() for s in scale_shift)
        rec["norm"].append((saved[0], norm, h.detach().clone(), ss))
        return saved[0](norm, h, scale_shift)

    def group_norm(norm, h):
        rec["norm"].append((lambda n, a, s: saved[1](n, a), norm, h.detach().clone(), None))
        return saved[1](norm, h)

    def attend(qkv, heads, new_order, **kw):
        rec["attention"].append((qkv.detach().clone(), heads, new_order, kw))
        return saved[2](qkv, heads, new_order, **kw)

    def conv_hook(m, inp, out):
        rec["conv"].append((inp[0].detach().clone(), m.weight.detach(), m.bias.detach(), m.stride, m.padding,
                            inp[0].requires_grad))
    hooks = [m.register_forward_hook(conv_hook) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    adm.norm_silu, adm.group_norm, adm.attend_packed_tokens = norm_silu, group_norm, attend
    try:
        net(x.requires_grad_(False), t)
    finally:
        adm.norm_silu, adm.group_norm, adm.attend_packed_tokens = saved
        for h in hooks:
            h.remove()
    return rec


def part_step(kind: str, items: list, train: bool, layout: torch.memory_format) -> Step:
    """All recorded calls of one kind replayed in isolation, forward (inference_mode) or forward+backward."""
    import torch.nn.functional as F

    from genzoo.nets.fused import attend_packed_tokens

    def prep(t: torch.Tensor, grad: bool) -> torch.Tensor:
        t = t.contiguous(memory_format=layout) if t.dim() == 4 else t.clone()
        return t.requires_grad_(grad and train)

    if kind in ("conv", "conv-winograd"):
        args = [(prep(a, g), prep(w, True), prep(b, True), s, p) for a, w, b, s, p, g in items]
        fn = F.conv2d
        if kind == "conv-winograd":  # the rule of genzoo.nets.winograd.Conv3x3
            from genzoo.nets import winograd

            def fn(a, w, b, s, p):
                # the image-facing convolutions (3 channels in or out) are plain Conv2d layers
                if w.shape[2:] == (3, 3) and s == (1, 1) and p == (1, 1) and min(w.shape[:2]) > 3 and (
                        winograd.winograd_pays(a, w)):
                    return winograd.winograd_conv2d(a, w, b, winograd.TILE)
                return F.conv2d(a, w, b, s, p)
    elif kind == "norm":
        args = [(n, prep(a, True), None if ss is None else tuple(prep(q, True) for q in ss), f)
                for f, n, a, ss in items]

        def fn(n, a, ss, f):
            return f(n, a, ss)
    else:
        args = [(prep(q, True), h, o, kw) for q, h, o, kw in items]

        def fn(q, h, o, kw):
            return attend_packed_tokens(q, h, o, **kw)
    calls = [lambda fn=fn, a=a: fn(*a) for a in args]
    def tensors(a: tuple) -> list[torch.Tensor]:
        flat = [t for v in a for t in (v if isinstance(v, tuple) else (v,))]
        flat += [p for v in a if isinstance(v, torch.nn.Module) for p in v.parameters()]
        return [t for t in flat if isinstance(t, torch.Tensor) and t.requires_grad]
    leaves = [tensors(a) for a in args]
    grads: list[torch.Tensor] = []  # dense output gradients in the outputs' layout, as in the network

    def step() -> None:
        for i, call in enumerate(calls):
            if train:
                out = call()
                if len(grads) <= i:
                    grads.append(torch.randn_like(out))
                torch.autograd.grad(out, leaves[i], grads[i])  # no accumulation into .grad
            else:
                with torch.inference_mode():
                    call()
    return step


def copy_pass(maps: list[torch.Tensor]) -> Step:
    """One read and one write of every map (into preallocated outputs): the memory-traffic unit."""
    outs = [torch.empty_like(m) for m in maps]

    def step() -> None:
        for m, o in zip(maps, outs):
            o.copy_(m)
    return step


def section_bound(args: argparse.Namespace, device: torch.device, sync) -> None:
    """Where genzoo's fp32 ADM step goes, and the speed-up over the official code it could reach if all
    but its convolutions were free: the recorded convolutions, norms and attention cores replayed alone."""
    official, ours, x, t = official_and_genzoo(args, device)
    ours_cl = ours.to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    rec = record_adm_parts(ours_cl, x_cl, t)
    m1, m2 = (torch.randn(2048, 2048, device=device) for _ in range(2))
    print(f"\n## fp32 bound: genzoo ADM channels_last vs official (batch {args.official_batch}, "
          f"{torch.get_num_threads()} threads, CPU ms per step, medians of {args.repeats}; "
          f"{len(rec['conv'])} convolutions, {len(rec['norm'])} norms, {len(rec['attention'])} attention "
          "cores)")
    for train, make in ((False, forward_step), (True, train_step)):
        steps = {"official": make(official, lambda: official(x, t), device, False),
                 "genzoo channels_last": make(ours_cl, lambda: ours_cl(x_cl, t), device, False),
                 "convolutions NCHW": part_step("conv", rec["conv"], train, torch.contiguous_format),
                 "convolutions NHWC": part_step("conv", rec["conv"], train, torch.channels_last),
                 "convolutions NHWC Winograd": part_step("conv-winograd", rec["conv"], train,
                                                         torch.channels_last),
                 "GroupNorm(+SiLU) NHWC": part_step("norm", rec["norm"], train, torch.channels_last),
                 "attention cores": part_step("attention", rec["attention"], train, torch.channels_last),
                 "one copy of the norm maps": copy_pass([m for _, _, m, _ in rec["norm"]]),
                 "fp32 matmul 2048": lambda: m1 @ m2}
        conv_flops = flops(part_step("conv", rec["conv"], train, torch.contiguous_format))
        sec = interleaved(steps, args.repeats, sync)
        base, ours_s = sec["official"], sec["genzoo channels_last"]
        print(f"{'forward+backward' if train else 'forward'}: convolutions {conv_flops / 1e9:.1f} GFLOP")
        for k, v in sec.items():
            peak_flops = 2 * 2048**3 / sec["fp32 matmul 2048"]
            extra = (f"  {conv_flops / v / peak_flops * 100:4.0f}% of the fp32 matmul peak "
                     f"({peak_flops / 1e9:.0f} GFLOP/s in this run)" if k.startswith("conv") else "")
            if k == "convolutions NHWC Winograd":
                extra = f"  x{sec['convolutions NHWC'] / v:.2f} the direct NHWC convolutions"
            print(f"  {k:24s} {v * 1e3:8.1f} ms  {100 * v / ours_s:5.1f}% of genzoo's step{extra}")
        parts = sec["convolutions NHWC"] + sec["GroupNorm(+SiLU) NHWC"] + sec["attention cores"]
        print(f"  measured genzoo/official x{base / ours_s:.2f}; bound if all but the NHWC convolutions were "
              f"free x{base / sec['convolutions NHWC']:.2f} (Winograd: "
              f"x{base / sec['convolutions NHWC Winograd']:.2f}); if all but convolutions, norms and "
              f"attention were free x{base / parts:.2f}", flush=True)


# ------------------------------------------------------------------------------------------ demo lane


def module_at(rev: str, path: str, name: str):
    """``path`` as at git revision ``rev``, imported as module ``name`` (its registrations dropped)."""
    src = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True, check=True).stdout
    src = re.sub(r"^@register\(.*\)\n", "", src, flags=re.M)
    tmp = tempfile.NamedTemporaryFile("w", suffix=".py", delete=False)
    tmp.write(src)
    tmp.close()
    spec = importlib.util.spec_from_file_location(name, tmp.name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    os.unlink(tmp.name)
    return module


def section_demo(args: argparse.Namespace, device: torch.device, sync) -> None:
    from genzoo.demo import _networks
    from genzoo.nets.unet import DDPMppUNet

    old = module_at(args.before, "genzoo/nets/unet.py", "_unet_before")
    e = _networks(16, tiny=False)["edm"]
    cfg = dict(resolution=16, label_dim=10, model_channels=e["model_channels"], num_blocks=e["num_blocks"],
               channel_mult=[int(c) for c in e["channel_mult"].split(",")], attn_resolutions=(),
               adaptive_scale=True)
    torch.manual_seed(0)
    after = DDPMppUNet(**cfg).to(device)
    before = old.DDPMppUNet(**cfg).to(device)
    before.load_state_dict(after.state_dict())
    n = e["batch"]
    x = torch.randn(n, 3, 16, 16, device=device)
    t = torch.rand(n, device=device)
    y = torch.randint(0, 10, (n,), device=device)
    steps = {}
    for fmt in ("contiguous", "channels_last"):
        mf = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
        for label, net in ((f"before ({args.before})", before), ("after", after)):
            net = net.to(memory_format=mf)
            xx = x.contiguous(memory_format=mf)
            steps[f"{label} {fmt}"] = train_step(net, lambda net=net, xx=xx: net(xx, t, y), device, True)
    sec = interleaved(steps, args.repeats, sync)
    base = sec[f"before ({args.before}) contiguous"]
    print(f"\n## demo EDM lane: DDPM++ ch{e['model_channels']}, 16 px, batch {n}, bf16 forward+backward")
    for k, v in sec.items():
        print(f"{k:34s} {n / v:8.1f} img/s  x{base / v:.2f}")


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--sample-batch", type=int, default=64)
    parser.add_argument("--official", metavar="PATH", help="a checkout of openai/guided-diffusion")
    parser.add_argument("--official-batch", type=int, default=16)
    parser.add_argument("--before", metavar="REV", help="git revision for the demo lane's before")
    parser.add_argument("--profile", action="store_true", help="profile table of the ADM steps")
    parser.add_argument("--compile", action="store_true",
                        help="official section: also genzoo's ADM forward compiled (frozen weights)")
    parser.add_argument("--without-kernel", action="store_true",
                        help="official section: also each genzoo case with the compiled GroupNorm+SiLU "
                             "kernel off (the PyTorch path), interleaved")
    parser.add_argument("--sections", default="peak,nets,sampling,official,demo")
    parser.add_argument("--without-winograd", action="store_true",
                        help="official section: also genzoo fp32 with every convolution through F.conv2d")
    args = parser.parse_args()
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.batch = args.batch or (4 if args.quick else 16)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else cpu_sync
    sections = set(args.sections.split(","))
    print(f"# genzoo networks benchmark: torch {torch.__version__}, {device}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    pk = peak(device, 1024 if args.quick else 2048, sync, args.repeats)
    print(f"peak matmul: fp32 {pk['fp32']:.3f} TFLOP/s, bf16 {pk['bf16']:.3f} TFLOP/s"
          + (" (per CPU-second: images/s on the CPU are per CPU-second too)" if sync is cpu_sync else ""))
    if "nets" in sections:
        section_nets(args, device, sync, pk)
    if "sampling" in sections:
        section_sampling(args, device, sync)
    if "official" in sections and args.official:
        section_official(args, device, sync)
    if "bound" in sections and args.official:
        section_bound(args, device, sync)
    if "demo" in sections and args.before:
        section_demo(args, device, sync)


if __name__ == "__main__":
    main()
