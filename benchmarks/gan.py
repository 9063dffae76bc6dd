"""Sampling speed: a GAN generator (one network evaluation per image) next to EDM's diffusion sampler.

    python benchmarks/gan.py [--batch 16] [--repeats 3] [--threads N] [--full]
    python benchmarks/gan.py --ckpt runs/biggan [--per-class 16] [--grids DIR]   # truncation sweep

For each resolution it times, with random weights, no grad, fp32:
- BigGAN and BigGAN-deep generators (``genzoo.nets.biggan``), 1 NFE per image;
- EDM's deterministic Heun sampler (``genzoo.diffusion.samplers.edm_sampler``, 18 steps = 35 NFE) over
  a DDPM++ UNet (``ddpmpp``, ch 32: parameters of the same order), wrapped in the EDM preconditioning.
Prints images/s (best of ``--repeats``), parameters and ms per network evaluation. ``--full`` adds the
released BigGAN-deep 128 px generator size (ch 128; about 50M parameters, slow on a CPU).

With ``--ckpt`` (a GAN trained on ``shapes``) it instead sweeps the truncation ψ over the same seeds
and prints, per ψ: the conditional accuracy (the bundled shapes classifier's prediction equals the
requested class), the spread of the classifier's features around each class mean (variety), and the
per-pixel standard deviation across a class's samples. ``--grids DIR`` writes one grid per ψ (one
row per class).
"""

from __future__ import annotations

import argparse
import time

import torch

from genzoo import nets


def best_rate(fn, batch: int, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return batch / best


def params(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def gan_row(name: str, arch: str, batch: int, repeats: int, **kw) -> tuple:
    torch.manual_seed(0)
    G = nets.build(arch, **kw).eval()
    z = torch.randn(batch, G.z_dim)
    y = torch.randint(0, G.num_classes, (batch,))
    with torch.no_grad():
        rate = best_rate(lambda: G(z, y), batch, repeats)
    return name, kw["resolution"], params(G), 1, rate


def diffusion_row(name: str, resolution: int, batch: int, repeats: int, steps: int, **kw) -> tuple | None:
    try:
        from genzoo.diffusion.precond import build_denoiser
        from genzoo.diffusion.samplers import edm_sampler
    except ImportError:
        return None
    torch.manual_seed(0)
    net = nets.build("ddpmpp", resolution=resolution, label_dim=16, **kw).eval()
    denoiser = build_denoiser("edm", net).eval()
    latents = torch.randn(batch, 3, resolution, resolution)
    labels = torch.randint(0, 16, (batch,))
    with torch.no_grad():
        rate = best_rate(lambda: edm_sampler(denoiser, latents * 80, labels, num_steps=steps), batch, repeats)
    return name, resolution, params(net), 2 * steps - 1, rate


def truncation_sweep(
    ckpt: str, per_class: int, psis: list[float | None], grids: str | None, standing: int, raw: bool = False
) -> None:
    import genzoo
    from genzoo.io import save_grid
    from genzoo.metrics.shapes_features import classifier_accuracy, load_shapes_classifier

    model = genzoo.load(ckpt, ema=not raw)
    classifier = load_shapes_classifier()
    k = genzoo.record_of(model).num_classes
    labels = [c for c in range(k) for _ in range(per_class)]
    print(
        f"{ckpt}: {k} classes x {per_class} samples, same seeds for every psi, standing stats {standing}, "
        f"{'raw' if raw else 'EMA'} weights"
    )
    print(f"{'psi':>6s} {'cond. accuracy':>15s} {'feature spread':>15s} {'pixel std':>10s}")
    for psi in psis:
        images, label_t, _ = genzoo.sample(
            model,
            range(len(labels)),
            class_labels=labels,
            batch_size=64,
            truncation=psi,
            standing_stats=standing,
        )
        accuracy = classifier_accuracy(classifier, images, label_t)
        with torch.no_grad():
            feats = classifier(images)["pool"].view(k, per_class, -1)
        spread = (feats - feats.mean(1, keepdim=True)).norm(dim=-1).mean().item()
        pixel_std = images.float().view(k, per_class, -1).std(1).mean().item()
        name = "none" if psi is None else f"{psi:g}"
        print(f"{name:>6s} {accuracy:15.3f} {spread:15.3f} {pixel_std:10.2f}")
        if grids:
            rows = images.view(k, per_class, *images.shape[1:])[:, :8].reshape(-1, *images.shape[1:])
            save_grid(rows, f"{grids}/truncation-{name}.png", nrow=min(per_class, 8), scale=3)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=18, help="EDM sampler steps (NFE = 2·steps − 1)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--full", action="store_true", help="also the released BigGAN-deep 128 px size")
    parser.add_argument("--ckpt", help="a GAN run trained on shapes: sweep the truncation instead")
    parser.add_argument("--per-class", type=int, default=16, help="with --ckpt: samples per class")
    parser.add_argument("--psi", default="none,2,1,0.5,0.25", help="with --ckpt: truncation values")
    parser.add_argument("--standing-stats", type=int, default=0, help="with --ckpt: standing-stat batches")
    parser.add_argument("--grids", help="with --ckpt: directory for one grid per psi")
    parser.add_argument("--raw", action="store_true", help="with --ckpt: the raw G instead of its EMA")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.ckpt:
        psis = [None if p == "none" else float(p) for p in args.psi.split(",")]
        truncation_sweep(args.ckpt, args.per_class, psis, args.grids, args.standing_stats, args.raw)
        return
    b, r = args.batch, args.repeats
    print(f"threads {torch.get_num_threads()}, batch {b}, fp32, no grad, best of {r}")
    print(f"{'model':44s} {'px':>4s} {'Mparams':>8s} {'NFE/img':>8s} {'img/s':>9s} {'ms/NFE/img':>11s}")
    jobs = []
    for res in (32, 64):
        attn = [res // 2]
        common = dict(resolution=res, ch=32, num_classes=16, attn_res=attn)
        jobs.append(lambda c=common: gan_row("BigGAN G (ch 32)", "biggan", b, r, z_dim=120, **c))
        jobs.append(lambda c=common: gan_row("BigGAN-deep G (ch 32)", "biggan-deep", b, r, z_dim=128, **c))
        unet = dict(model_channels=32, channel_mult=(1, 2, 2), num_blocks=2, attn_resolutions=attn)
        name = f"EDM Heun {args.steps} steps, DDPM++ (ch 32)"
        jobs.append(lambda res=res, u=unet, name=name: diffusion_row(name, res, b, r, args.steps, **u))
    if args.full:
        full = dict(resolution=128, ch=128, z_dim=128, num_classes=1000, attn_res=[64], bn_eps=1e-4)
        jobs.append(lambda: gan_row("BigGAN-deep 128 G (ch 128)", "biggan-deep", max(b // 4, 1), 1, **full))
    for job in jobs:
        row = job()
        if row is None:
            print("(diffusion sampler not available)", flush=True)
            continue
        name, res, mp, nfe, rate = row
        print(f"{name:44s} {res:4d} {mp:8.2f} {nfe:8d} {rate:9.2f} {1000 / rate / nfe:11.2f}", flush=True)


if __name__ == "__main__":
    main()
