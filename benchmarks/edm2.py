"""EDM2 against the demo's EDM recipe on ``shapes:16``: architecture, post-hoc EMA length, and guidance.

Trains (or reuses, when ``OUT/runs/<arm>`` already holds ``--steps`` steps) two class-conditional runs
of equal width and an equal budget of images, one thread each, one after the other:

  edm    the demo's EDM recipe (genzoo/demo.py: ddpmpp 32 ch, 1 block, mult 1,2,2, no attention,
         adaptive scale, batch 64, lr 2e-3, 0.5 kimg warm-up, bf16, 10 % label dropout)
  edm2   --arch edm2 with the same width/depth, EDM2's loss (learned logvar), lr_ref 1e-2 with
         --decay-kimg 16, Adam β2 0.99

Both track the post-hoc EMA profiles (σ_rel 0.05, 0.10) and keep every checkpoint. Then, with the
shapes feature network (FD against ``--ref-count`` data images, conditional accuracy) and the
sampling speed (images/s over all samples, one thread):

  * each arm with the engine's EMA and with post-hoc EMA lengths ``--sweep`` (Heun, 12 steps, unguided);
  * on the edm arm at equal NFE (Heun, 6 and 12 steps = 22 and 46 evaluations guided, the demo's guided
    configurations): classifier-free guidance (w = 3, the demo's), autoguidance (w = 2, and 3 at 6 steps)
    by the run's checkpoint at ``--guide-step`` or (``--guide small``) by a half-width edm trained
    ``--guide-steps`` steps, as EDM2 guides by a smaller, less-trained model, and both with the guidance
    interval (0.28, 5.42] (Kynkäänniemi et al. 2024, EDM2 ImageNet-512) at the most steps whose NFE
    stays within the budget.

Prints a markdown table (and writes ``OUT/table.md``, ``OUT/results.json`` and
``OUT/phema.png``: FD and accuracy against the EMA length). Run:
``OMP_NUM_THREADS=1 python benchmarks/edm2.py --out /tmp/edm2-bench`` (about 1.5 h on 1 busy core
at the defaults: two 1000-step runs and ~30 evaluated configurations).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

COMMON = dict(data="shapes:16", precision="bf16", label_dropout=0.1, lr_warmup_kimg=0.5, batch=64,
              model_channels=32, num_blocks=1, channel_mult="1,2,2", attn_res="", checkpoint_every=100,
              keep_last=0, sample_every=0, log_every=10, tensorboard=False, seed=0, resume=True)
ARMS = {
    "edm": dict(COMMON, family="diffusion", arch="ddpmpp", lr=2e-3, adaptive_scale=True),
    "edm2": dict(COMMON, family="diffusion", arch="edm2", lr_ref=1e-2, decay_kimg=16),
}
#: autoguidance's guide as EDM2 trains it: the same recipe at half the width, trained for a fraction of the
#: main run (``--guide small``); ``--guide checkpoint`` uses the edm run's own checkpoint instead
GUIDE_ARM = dict(ARMS["edm"], model_channels=16)
GUIDANCE = 3.0  # the demo's classifier-free guidance scale
INTERVAL = (0.28, 5.42)


def heun_nfe(steps: int, interval: tuple[float, float] | None, guided: bool) -> int:
    """Closed-form NFE of EDM's Heun sampler (σ_min 0.002, σ_max 80, ρ 7) with guidance costing 2."""
    from genzoo.diffusion.samplers import sigma_steps

    sig = sigma_steps("edm", steps, 0.002, 80.0)
    evaluated = torch.cat([sig, sig[1:]])
    if not guided:
        return len(evaluated)
    inside = torch.ones(len(evaluated), dtype=torch.bool) if interval is None else \
        (evaluated > interval[0]) & (evaluated <= interval[1])
    return int(len(evaluated) + inside.sum())


def steps_for_nfe(budget: int, interval: tuple[float, float]) -> int:
    """The most Heun steps whose guided NFE with ``interval`` stays within ``budget``."""
    steps = 2
    while heun_nfe(steps + 1, interval, True) <= budget:
        steps += 1
    return steps


def train_arms(out: Path, steps: int, arms: list[str]) -> None:
    from genzoo.train.engine import train

    for name in arms:
        flags = ARMS[name]
        run = out / "runs" / name
        print(f"training {name} for {steps} steps -> {run}", flush=True)
        train(dict(flags, out=str(run), steps=steps))


def sample_and_score(model: Any, options: dict[str, Any], path: Path, count: int, extractor, reference,
                     ref_count: int, batch: int = 128) -> dict[str, Any]:
    from genzoo.api import sample
    from genzoo.io import NpzWriter
    from genzoo.metrics import evaluate

    seconds, nfe = 0.0, 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with NpzWriter(path) as writer:
        for start in range(0, count, batch):
            seeds = list(range(start, min(start + batch, count)))
            begin = time.perf_counter()
            images, labels, nfe = sample(model, seeds, batch_size=batch, **options)
            seconds += time.perf_counter() - begin
            writer.write(images, labels)
    quality = evaluate(path, reference, metrics=("fid", "acc"), features="shapes", ref_count=ref_count,
                       extractor=extractor)
    return {"fd": float(quality["fd"]), "accuracy": float(quality["accuracy"]), "nfe": int(nfe),
            "images_per_s": count / seconds}


def train_guide(out: Path, steps: int) -> Path:
    """The half-width guide of autoguidance, trained ``steps`` steps (reused when already there)."""
    from genzoo.train.engine import train

    run = out / "runs" / "guide"
    print(f"training the half-width guide for {steps} steps -> {run}", flush=True)
    train(dict(GUIDE_ARM, out=str(run), steps=steps))
    return run


def guide_model(out: Path, guide: str, guide_step: int) -> tuple[Path, str]:
    """(model directory, description) of autoguidance's guide."""
    from genzoo.checkpoints import list_checkpoints

    if guide == "small":
        run = out / "runs" / "guide"
        return run, f"the half-width edm at {list_checkpoints(run)[-1].name}"
    run = out / "runs" / "edm"
    found = next((c for c in list_checkpoints(run) if int(c.name.split("-")[1]) >= guide_step), None)
    if found is None:
        raise SystemExit(f"{run}: no checkpoint at or after step {guide_step} to guide with")
    return found, found.name


def configurations(out: Path, sweep: str, guide: tuple[Path, str],
                   arms: list[str]) -> list[tuple[str, str, Path, dict[str, Any]]]:
    """(group, name, model directory, sample options) of every row."""
    from genzoo.api import posthoc_ema
    from genzoo.checkpoints import list_checkpoints

    rows = []
    for arm in arms:
        run = out / "runs" / arm
        rows.append(("EMA", f"{arm}, engine EMA", run, {"steps": 12}))
        target = out / "phema" / arm
        models = sorted(target.glob("std-*")) if target.is_dir() else []
        if not models:
            models = posthoc_ema(run, target, sweep=sweep)
        for model in models:
            rows.append(("post-hoc EMA", f"{arm}, σ_rel {model.name[4:]}", model, {"steps": 12}))
    if "edm" not in arms:
        return rows
    if "edm2" in arms:  # the edm2 arm may have stopped earlier (--minutes): edm at equal images too
        step = lambda path: int(path.name.split("-")[1])  # noqa: E731
        last = step(list_checkpoints(out / "runs" / "edm2")[-1])
        edm = list_checkpoints(out / "runs" / "edm")
        same = min(edm, key=lambda c: abs(step(c) - last))
        if same != edm[-1] and abs(step(same) - last) <= 0.1 * last:
            rows.insert(0, ("EMA", f"edm at {same.name} (≈ edm2's images), engine EMA", same, {"steps": 12}))
    run = out / "runs" / "edm"
    guide_dir, guide_name = guide
    interval = f"{INTERVAL[0]},{INTERVAL[1]}"
    for full, weights in ((6, (2.0, 3.0)), (12, (2.0,))):  # the demo's guided configurations: 6, 12 steps
        steps = steps_for_nfe(heun_nfe(full, None, True), INTERVAL)
        rows += [
            ("guidance", f"edm, CFG w={GUIDANCE:g}, {full} steps", run,
             {"steps": full, "guidance": GUIDANCE}),
            ("guidance", f"edm, CFG w={GUIDANCE:g} in ({interval}], {steps} steps", run,
             {"steps": steps, "guidance": GUIDANCE, "guidance_interval": interval}),
        ]
        for w in weights:
            rows += [
                ("guidance", f"edm, autoguidance w={w:g} by {guide_name}, {full} steps", run,
                 {"steps": full, "guidance": w, "guide_model": str(guide_dir)}),
                ("guidance", f"edm, autoguidance w={w:g} by {guide_name} in ({interval}], {steps} steps", run,
                 {"steps": steps, "guidance": w, "guide_model": str(guide_dir),
                  "guidance_interval": interval}),
            ]
        if full == 6:
            rows.append(("guidance", "edm, unguided, 11 steps (NFE 21)", run, {"steps": 11}))
    return rows


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for arm in ARMS:
        pts = sorted((float(r["name"].split("σ_rel ")[1]), r["fd"], r["accuracy"]) for r in results
                     if r["group"] == "post-hoc EMA" and r["name"].startswith(f"{arm},"))
        if pts:
            std, fd, acc = zip(*pts)
            axes[0].plot(std, fd, "o-", label=arm)
            axes[1].plot(std, acc, "o-", label=arm)
    for ax, label in zip(axes, ("FD (shapes features, lower is better)", "conditional accuracy")):
        ax.set_xlabel("EMA length σ_rel")
        ax.set_ylabel(label)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| group | configuration | NFE | FD ↓ | accuracy ↑ | images/s |",
             "|---|---|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['group']} | {r['name']} | {r['nfe']} | {r['fd']:.2f} | {r['accuracy']:.3f} | "
                     f"{r['images_per_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/genzoo-edm2-bench")
    parser.add_argument("--steps", type=int, default=1000, help="training steps of each arm (batch 64)")
    parser.add_argument("--samples", type=int, default=512, help="samples per configuration")
    parser.add_argument("--ref-count", type=int, default=2000, help="data images of the FD reference")
    parser.add_argument("--sweep", default="0.02:0.2:10", help="post-hoc EMA lengths LO:HI:N")
    parser.add_argument("--guide", choices=("checkpoint", "small"), default="checkpoint",
                        help="autoguidance's guide: the edm run's checkpoint at --guide-step, or a "
                             "half-width edm trained --guide-steps steps (smaller, less trained: EDM2's)")
    parser.add_argument("--guide-step", type=int, default=200,
                        help="checkpoint step of the autoguidance guide (--guide checkpoint)")
    parser.add_argument("--guide-steps", type=int, default=200,
                        help="training steps of the half-width guide (--guide small)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--arms", default=",".join(ARMS), help="arms to train and measure (default all)")
    parser.add_argument("--no-train", action="store_true",
                        help="measure the runs in OUT/runs as they are (the --guide small guide is still "
                        "trained when missing)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    arms = [a for a in args.arms.split(",") if a]
    if set(arms) - set(ARMS):
        raise SystemExit(f"--arms: expected some of {', '.join(ARMS)}")
    if not args.no_train:
        train_arms(out, args.steps, arms)
    if args.guide == "small" and "edm" in arms:
        train_guide(out, args.guide_steps)  # resumes: an already trained guide is reused as it is

    from genzoo.api import load
    from genzoo.demo import reference_stage
    from genzoo.metrics import get_extractor

    extractor = get_extractor("shapes")
    reference = reference_stage(out, 16, args.ref_count, extractor)
    cache = out / "results.json"
    done = {(r["group"], r["name"]): r for r in json.loads(cache.read_text())} if cache.is_file() else {}
    results = []
    guide = guide_model(out, args.guide, args.guide_step) if "edm" in arms else (out, "")
    for group, name, model_dir, options in configurations(out, args.sweep, guide, arms):
        if (group, name) not in done:
            print(f"{group}: {name}", flush=True)
            model = load(model_dir)
            slug = "".join(c if c.isalnum() else "-" for c in f"{group}-{name}")
            record = sample_and_score(model, options, out / "samples" / f"{slug}.npz", args.samples,
                                      extractor, reference, args.ref_count)
            done[(group, name)] = dict(record, group=group, name=name, options=options)
            cache.write_text(json.dumps(list(done.values()), indent=1, default=str))
        results.append(done[(group, name)])
    text = table(results)
    (out / "table.md").write_text(text)
    plot(results, out / "phema.png")
    print(text)
    best = {arm: min((r for r in results if r["group"] == "post-hoc EMA" and r["name"].startswith(f"{arm},")),
                     key=lambda r: r["fd"], default=None) for arm in ARMS}
    for arm, r in best.items():
        if r is not None:
            print(f"best post-hoc EMA length for {arm} by FD: {r['name']} (FD {r['fd']:.2f}, "
                  f"accuracy {r['accuracy']:.3f})")
    print(f"NFE check: Heun 6 steps guided = {heun_nfe(6, None, True)}; with the interval "
          f"{INTERVAL}: {[heun_nfe(n, INTERVAL, True) for n in range(6, 12)]} for 6..11 steps")


if __name__ == "__main__":
    main()
