"""``genzoo demo``: diffusion vs consistency vs GAN on the built-in shapes data, quality against cost.

:func:`run_demo` trains a class-conditional EDM diffusion model, distils a consistency model from it,
trains a BigGAN and a text-conditional GigaGAN (all with :func:`genzoo.train.engine.train`), samples
each at several costs, measures every configuration with the shapes feature network (FD,
precision/recall, conditional accuracy) and its cost (NFE, images/s), writes one ``metrics.json`` per
configuration and ties them together with :func:`genzoo.metrics.compare.compare` in ``report.html``.

Layout of the output directory::

    demo.json                the demo's settings (a re-run must use the same resolution)
    runs/<model>/            genzoo training runs; demo-done.json once the stage has finished
    reference.npz            shapes-feature statistics (and images) of the data: the FD / P-R reference
    evals/<config>/          samples.npz (ADM layout), grid.png, metrics.json
    report.html              table, quality-vs-cost plots with the Pareto front, grids, commands
    table.md, table.csv, quality_vs_nfe.png, quality_vs_speed.png, grids/

Every stage is skipped when its outputs exist, and an interrupted training resumes from its last
checkpoint with the rest of its time share, so running the same command again continues the demo.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genzoo.checkpoints.record import record_of
from genzoo.errors import Terminated, UserError

#: Training runs in two lanes that run side by side, one CPU thread each, when the machine has two cores
#: or more: a small network gains little from a second thread (measured: EDM 490 images/s alone on two
#: threads against 303 on one thread beside another run, BigGAN 265 against 200), so two 1-thread runs
#: get through more images together. A lane's runs follow each other (CD needs EDM).
LANES = (("edm", "cd"), ("biggan", "gigagan"))
#: fraction of the demo's minutes each training run gets (of wall time, within its lane); the rest
#: (~25%) goes to sampling and evaluation. Without lanes the shares are halved to keep the budget.
#: The GAN lane: BigGAN learns shapes between ~50k and ~77k images (0.33 -> 0.70 accuracy) and trains at
#: ~200-280 images/s, so 40% (6 minutes) keeps it past ~75k (measured: 100k, accuracy 0.79); GigaGAN's CLIP
#: recipe learns shapes with the images it sees (0.44 / 0.51 accuracy at 24k / 48k, ~170 images/s), so it
#: gets the rest of the lane (35%, its CLIP's pretraining included) instead of 20% (measured: 48k images,
#: 0.48 against 0.27-0.30 before; docs/demo.md, docs/gigagan.md "Session 11: a cheaper network").
TRAIN_SHARES = {"edm": 0.58, "cd": 0.17, "biggan": 0.40, "gigagan": 0.35}
#: caption attributes whose one-word-changed captions are extra negatives of GigaGAN's CLIP loss
GIGAGAN_CLIP_NEGATIVES = "shape,color,size,position"
#: samples per configuration at the default 15 minutes (scaled with --minutes)
DEFAULT_SAMPLES = 512
DEFAULT_MINUTES = 15.0
DONE_FILE = "demo-done.json"
SAMPLE_BATCH = 128
#: classifier-free guidance scale of the guided EDM configurations and of the CD teacher
GUIDANCE = 3.0
#: σ interval of the interval-guided row (Kynkäänniemi et al. 2024); at equal NFE it halved FD against
#: guiding every step on shapes (docs/edm2-training.md)
GUIDANCE_INTERVAL = "0.28,5.42"
#: resolutions every network of the demo has defaults for
RESOLUTIONS = (16, 32)


@dataclass
class TrainStage:
    """One training run of the demo: engine config (the `genzoo train` flags) and its time share."""

    name: str
    family: str
    config: dict[str, Any]
    share: float
    title: str
    lane: int = 0


@dataclass
class EvalStage:
    """One sampling configuration of a trained model, evaluated into ``evals/<name>/metrics.json``."""

    name: str
    run: str
    options: dict[str, Any]
    title: str


@dataclass
class DemoPlan:
    train: list[TrainStage]
    evals: list[EvalStage]
    num_samples: int
    ref_count: int
    sample_batch: int


@dataclass
class DemoResult:
    out_dir: Path
    report: Path
    table: str
    records: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ plan

def _networks(resolution: int, tiny: bool) -> dict[str, dict[str, Any]]:
    """Network widths and batch sizes per run; ``tiny`` for tests (seconds, not minutes)."""
    if tiny:
        return {
            "edm": dict(batch=8, model_channels=8, num_blocks=1, channel_mult="1,2", attn_res="",
                        adaptive_scale=True),
            "cd": dict(batch=8, trajectory_pool=16),
            "biggan": dict(batch=8, g_ch=4, d_ch=4, z_dim=16, shared_dim=8, attn_res="none"),
            "gigagan": dict(batch=8, g_ch=8, d_ch=8, z_dim=16, w_dim=16, text_dim=16, text_depth=1, kernels=2,
                            attn_res="none", clip_pretrain_images=64),
        }
    return {
        # batch 64 without attention: ~490 images/s on 2 cores, 2.3x the throughput of batch 16 with
        # attention, and shapes come with images seen (docs/demo.md, "Tuning")
        "edm": dict(batch=64, model_channels=32, num_blocks=1, channel_mult="1,2,2", attn_res="",
                    adaptive_scale=True),
        # exact targets from a pool of the teacher's trajectories on its 10-point grid: one-step accuracy
        # 0.55 where paper CD's one-step targets give 0.39 in the same 2.5 minutes (docs/demo.md, "CD")
        "cd": dict(batch=32, num_scales=10, cd_targets="trajectory", trajectory_pool=512),
        "biggan": dict(batch=32, g_ch=16, d_ch=16, z_dim=64, shared_dim=32),
        # the CLIP recipe on cheap networks: at ch 16 with attention at 8 px only, batch 32, 1.5x the images
        # per CPU-second of ch 32 and as much accuracy per image (docs/gigagan.md, "Session 11: a cheaper
        # network"); a CLIP of 96k pairs (~1 CPU-minute) reads shape (zero-shot 0.95), of 48k not yet (0.59)
        "gigagan": dict(batch=32, g_ch=16, d_ch=16, z_dim=32, w_dim=64, text_dim=64, text_depth=1,
                        kernels=4, attn_res="8", clip_pretrain_images=96000),
    }


def plan_demo(out_dir: str | Path, minutes: float = DEFAULT_MINUTES, resolution: int = 16,
              num_samples: int | None = None, tiny: bool = False, train_steps: int | None = None,
              gigagan: bool = True, ref_count: int | None = None, lanes: bool = True) -> DemoPlan:
    """The demo's stages: training runs (engine configs) and the sampling configurations to evaluate.

    ``lanes``: the training runs of :data:`LANES` run side by side (each gets its share of the wall
    time); otherwise one after the other with half the share each.
    """
    out = Path(out_dir).resolve()
    data = f"shapes:{resolution}"
    nets = _networks(resolution, tiny)
    common = dict(data=data, resume=True, checkpoint_every=50 if not tiny else 1000, keep_last=2,
                  sample_every=0, log_every=10, tensorboard=False, seed=0)
    train = [
        # channels_last: with the fused GroupNorm+SiLU CPU kernel 1.5x the images per CPU-second of the
        # contiguous layout for this DDPM++ (docs/performance.md, "The demo's training lanes")
        TrainStage("edm", "diffusion", dict(common, family="diffusion", arch="ddpmpp", precision="bf16",
                                            channels_last=True, label_dropout=0.1, lr=2e-3,
                                            lr_warmup_kimg=0.5, **nets["edm"]),
                   TRAIN_SHARES["edm"], "EDM diffusion (class-conditional, 10% label dropout for CFG)"),
        TrainStage("cd", "consistency", dict(common, family="consistency", mode="cd", precision="bf16",
                                             channels_last=True,
                                             teacher=str(out / "runs" / "edm"), teacher_guidance=GUIDANCE,
                                             lr=1e-3, **nets["cd"]),
                   TRAIN_SHARES["cd"],
                   f"consistency model distilled from the EDM model guided at w={GUIDANCE:g} (CD, trajectory "
                   "targets, L2)"),
        # BigGAN's networks with StyleGAN2's optimisation (non-saturating loss, R1, lr 2e-3, β2 0.99):
        # on shapes it learns shapes in fewer images than BigGAN's hinge loss at 2e-4 (docs/demo.md)
        # channels_last: 250 against 189 images/s at 16 px, batch 32, 1 thread (docs/demo.md, "Tuning")
        TrainStage("biggan", "gan", dict(common, family="gan", arch="biggan", precision="bf16", d_steps=1,
                                         channels_last=True,
                                         loss="ns", r1_gamma=0.1, g_lr=2e-3, d_lr=2e-3, betas="0,0.99",
                                         ema_halflife_kimg=1.0, **nets["biggan"]),
                   TRAIN_SHARES["biggan"], "BigGAN (class-conditional, non-saturating loss with R1)"),
    ]
    if gigagan:
        # the CLIP recipe of docs/gigagan.md (issue #23): D with He init and max pooling, the CLIP loss with
        # one-attribute-changed captions as extra negatives and the vision-aided D, both on a genzoo CLIP
        # trained first on the training pairs (its time counts in the stage's share: train_stage)
        train.append(TrainStage("gigagan", "gan", dict(common, family="gan", arch="gigagan", precision="fp32",
                                                       d_init="he", d_pool="max", clip_weight=2.0,
                                                       vision_weight=2.0, clip_shift=1,
                                                       clip_negatives=GIGAGAN_CLIP_NEGATIVES,
                                                       **nets["gigagan"]),
                                TRAIN_SHARES["gigagan"],
                                "GigaGAN (text-conditional, learned text encoder; CLIP loss and vision-aided "
                                "D on a small CLIP trained first)"))
    for stage in train:
        stage.lane = next(i for i, lane in enumerate(LANES) if stage.name in lane)
        if not lanes:
            stage.share /= 2
        stage.config["out"] = str(out / "runs" / stage.name)
        if train_steps is not None:
            stage.config["steps"] = int(train_steps)
        else:
            stage.config["minutes"] = round(minutes * stage.share, 3)
    steps = (3, 6, 12) if not tiny else (2, 3)
    evals = [EvalStage(f"edm-heun-{n}", "edm", {"sampler": "heun", "steps": n}, f"Heun, {n} steps")
             for n in steps]
    guided = {"sampler": "heun", "guidance": GUIDANCE}
    evals += [EvalStage(f"edm-heun-{n}-cfg{GUIDANCE:g}", "edm", dict(guided, steps=n),
                        f"Heun, {n} steps, CFG w={GUIDANCE:g}") for n in steps[-2:]]
    n = steps[-1] + steps[-1] // 2  # about the NFE of the last guided row: unguided steps cost one evaluation
    evals += [EvalStage(f"edm-heun-{n}-cfg{GUIDANCE:g}-interval", "edm",
                        dict(guided, steps=n, guidance_interval=GUIDANCE_INTERVAL),
                        f"Heun, {n} steps, CFG w={GUIDANCE:g} for σ in ({GUIDANCE_INTERVAL})")]
    evals += [EvalStage("cd-1step", "cd", {"steps": 1}, "one step"),
              EvalStage("cd-2step", "cd", {"steps": 2}, "two steps")]
    evals += [EvalStage("biggan", "biggan", {}, "one pass"),
              EvalStage("biggan-trunc0.5", "biggan", {"truncation": 0.5}, "one pass, truncation 0.5")]
    if gigagan:
        evals += [EvalStage("gigagan", "gigagan", {}, "one pass, dataset captions as prompts"),
                  EvalStage("gigagan-trunc0.7", "gigagan", {"truncation": 0.7}, "one pass, truncation 0.7")]
    if num_samples is None:
        num_samples = max(128, int(round(DEFAULT_SAMPLES * minutes / DEFAULT_MINUTES / 64)) * 64)
    batch = min(SAMPLE_BATCH, max(1, num_samples // 2))
    num_samples = max(2, num_samples // batch) * batch  # whole batches: one warm-up, the rest timed
    return DemoPlan(train, evals, num_samples, ref_count or max(num_samples, 2000 if not tiny else 64), batch)


# ------------------------------------------------------------------------------------------------ helpers

def _say(message: str) -> None:
    print(f"genzoo demo: {message}", file=sys.stderr, flush=True)


def _flag_command(prefix: str, config: dict[str, Any], skip: Sequence[str] = ()) -> str:
    """``genzoo train --family ... --data ...``: the flags that give ``config`` (True -> bare flag)."""
    parts = [prefix]
    first = ("family", "arch", "mode", "data", "out")
    for key in sorted(config, key=lambda k: (first.index(k) if k in first else len(first))):
        value = config[key]
        if key in skip or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        parts.append(flag if value is True else f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)


def _display(path: Path, out: Path, shown: str) -> str:
    """``path`` as the user sees it: under the ``--out`` they gave."""
    try:
        return str(Path(shown) / path.relative_to(out))
    except ValueError:
        return str(path)


def _latest_state(run_dir: Path) -> dict[str, Any] | None:
    from genzoo.checkpoints import list_checkpoints, read_json

    checkpoints = list_checkpoints(run_dir) if run_dir.is_dir() else []
    return read_json(checkpoints[-1] / "state.json") if checkpoints else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    from genzoo.checkpoints import write_json_atomic

    write_json_atomic(path, data)


# ------------------------------------------------------------------------------------------------ stages

def train_stage(stage: TrainStage, out: Path) -> dict[str, Any]:
    """Train (or resume) one run with the rest of its time share; returns its summary (demo-done.json)."""
    from genzoo.train.engine import train

    run_dir = Path(stage.config["out"])
    done = run_dir / DONE_FILE
    if done.is_file():
        return json.loads(done.read_text())
    config = dict(stage.config)
    clip_seconds = _pretrain_clip(config)
    state = _latest_state(run_dir)
    if config.get("minutes") is not None:
        left = config["minutes"] * 60 - clip_seconds - (state or {}).get("train_seconds", 0.0)
        if state is not None and left <= 0:
            config = None  # its share was used up before an interruption: keep the last checkpoint
        else:
            config["minutes"] = max(left, 1.0) / 60
    elif state is not None and state["step"] >= config["steps"]:
        config = None
    if config is not None:
        if state is not None:
            _say(f"{stage.name}: resuming at step {state['step']}")
        train(config)
    state = _latest_state(run_dir)
    if state is None:
        raise UserError(f"{run_dir}: training wrote no checkpoint")
    summary = {"run": stage.name, "family": stage.family, "title": stage.title, "step": int(state["step"]),
               "images_seen": int(state["images_seen"]),
               "train_minutes": round((float(state.get("train_seconds", 0.0)) + clip_seconds) / 60, 2)}
    if clip_seconds:
        summary["clip_minutes"] = round(clip_seconds / 60, 2)
    _write_json(done, summary)
    return summary


def _pretrain_clip(config: dict[str, Any]) -> float:
    """Train the run's CLIP (``--clip-pretrain-images``) before the engine starts, so that its time counts
    in the stage's share; returns its wall seconds (0 without one). The engine reads it back from the run
    directory, as on ``--resume``; a resumed demo reads the seconds from the saved CLIP's report."""
    if not config.get("clip_pretrain_images"):
        return 0.0
    from genzoo.data import load_dataset
    from genzoo.gan.gigagan import frozen_clip

    clip = frozen_clip(dict(config), load_dataset(config["data"]))
    report = clip.report
    return float(report.get("wall_seconds", report.get("cpu_seconds", 0.0)))


def _gigagan_labels(model: torch.nn.Module, seeds: Sequence[int], options: dict[str, Any]) -> list[int]:
    """The class each seed's prompt asks for (GigaGAN samples are text-conditional)."""
    from genzoo.data.shapes import caption_class
    from genzoo.gan.gigagan import prompts_for_seeds

    prompts = prompts_for_seeds(seeds, options.get("prompt"), getattr(model, "default_prompts", []))
    return [caption_class(p) for p in prompts]


def reference_stage(out: Path, resolution: int, count: int, extractor: torch.nn.Module) -> Path:
    """Shapes-feature statistics and images of the first ``count`` data items (the FD / P-R reference)."""
    from genzoo.metrics import reference_from_dataset, save_reference

    path = out / "reference.npz"
    if not path.is_file():
        _say(f"reference: shapes-feature statistics of {count} data images")
        ref, _ = reference_from_dataset(f"shapes:{resolution}", extractor, "shapes", count=count, keep=count,
                                        keep_images=count, batch_size=256)
        save_reference(path, ref)
    return path


def eval_stage(stage: EvalStage, plan: DemoPlan, out: Path, shown: str, extractor: torch.nn.Module,
               reference: Path, train_summary: dict[str, Any]) -> Path:
    """Sample one configuration (timed), evaluate it, write ``evals/<name>/metrics.json``."""
    from genzoo.api import load, sample
    from genzoo.io import NpzWriter, save_grid
    from genzoo.metrics import CallCounter, evaluate, measure_cost
    from genzoo.metrics.record import write_metrics
    from genzoo.progress import progress as progress_bar

    target = out / "evals" / stage.name
    metrics_path = target / "metrics.json"
    if metrics_path.is_file():
        return metrics_path
    model = load(out / "runs" / stage.run)
    family, arch = record_of(model).family, record_of(model).arch
    seeds = list(range(plan.num_samples))
    batches = [seeds[i:i + plan.sample_batch] for i in range(0, len(seeds), plan.sample_batch)]
    gigagan = arch == "gigagan"
    prompt_labels = _gigagan_labels(model, seeds, stage.options) if gigagan else None
    samples_path = target / "samples.npz"
    grid_images: list[torch.Tensor] = []
    reported_nfe: list[int] = []
    progress = progress_bar(plan.num_samples, f"sample {stage.name}", mininterval=1.0)
    counter = CallCounter(model)
    try:
        with NpzWriter(samples_path) as writer:
            pending = iter(batches)

            def generate(n: int) -> torch.Tensor:
                batch_seeds = next(pending)
                images, labels, nfe = sample(model, batch_seeds, batch_size=n, **stage.options)
                if prompt_labels is not None:
                    labels = torch.tensor([prompt_labels[s] for s in batch_seeds])
                writer.write(images, labels)
                if sum(len(g) for g in grid_images) < 64:
                    grid_images.append(images[:64])
                reported_nfe.append(int(nfe))
                progress.update(len(images))
                return images

            cost = measure_cost(generate, plan.sample_batch, batches=len(batches) - 1, warmup=1,
                                counter=counter)
    finally:
        counter.remove()
        progress.close()
    if counter.calls == 0:  # the family samples without calling forward (GigaGAN: map + synthesis)
        cost.nfe = float(reported_nfe[-1])
    save_grid(torch.cat(grid_images)[:64], target / "grid.png", nrow=8, scale=2)
    quality = evaluate(samples_path, reference, metrics=("fid", "pr", "acc"), features="shapes",
                       ref_count=plan.ref_count, pr_count=plan.ref_count, extractor=extractor)
    ckpt = _display(out / "runs" / stage.run, out, shown)
    samples_shown = _display(samples_path, out, shown)
    sample_flags = {k.replace("_", "-"): v for k, v in stage.options.items()}
    commands = [
        _flag_command(f"genzoo sample --ckpt {shlex.quote(ckpt)} --seeds 0-{plan.num_samples - 1} "
                      f"--batch {plan.sample_batch} --out {shlex.quote(samples_shown)}", sample_flags),
        f"genzoo eval --samples {shlex.quote(samples_shown)} --ref "
        f"{shlex.quote(_display(reference, out, shown))} --features shapes "
        f"--metrics {'fid,pr' if gigagan else 'fid,pr,acc'} --pr-count {plan.ref_count} "
        f"--ref-count {plan.ref_count} --model {stage.name} --family {family} --nfe {cost.nfe:g}",
    ]
    record = {
        "model": stage.name, "family": family, "arch": arch, "run": stage.run,
        "sampler": dict(stage.options), "title": stage.title, "features": "shapes",
        "ref": "reference.npz", "samples": "samples.npz", "grid": "grid.png",
        "nfe": cost.nfe, "images_per_s": cost.images_per_s, "latency_s": cost.latency_s,
        "peak_memory_mb": cost.peak_memory_mb, "batch_size": cost.batch_size,
        "fd": quality.get("fd"), "precision": quality.get("precision"), "recall": quality.get("recall"),
        "accuracy": quality.get("accuracy"), "num_samples": quality.get("num_samples"),
        "num_ref": quality.get("num_ref"), "train": train_summary, "commands": commands,
    }
    if gigagan:
        record["accuracy_note"] = "requested class = the colour and shape named in each seed's prompt"
    write_metrics(metrics_path, record, merge=False)
    return metrics_path


# ------------------------------------------------------------------------------------------------ report

def _report_sections(plan: DemoPlan, summaries: dict[str, dict[str, Any]], out: Path, shown: str,
                     minutes: float | None) -> str:
    """HTML added to the compare page: the training runs and the commands behind every number."""
    rows = []
    for stage in plan.train:
        s = summaries[stage.name]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            stage.name, stage.family, stage.config.get("arch") or "", s["step"], s["images_seen"],
            s["train_minutes"], stage.title)) + "</tr>")
    train_cmds = []
    for stage in plan.train:
        config = dict(stage.config, out=_display(Path(stage.config["out"]), out, shown))
        if config.get("teacher"):
            config["teacher"] = _display(Path(config["teacher"]), out, shown)
        train_cmds.append(_flag_command("genzoo train", config, skip=("log_every", "tensorboard")))
    first_samples = _display(out / "evals" / plan.evals[0].name / "samples.npz", out, shown)
    ref_cmd = (f"genzoo eval --samples {shlex.quote(first_samples)} --ref shapes:{stage_resolution(plan)} "
               "--features shapes "
               f"--ref-count {plan.ref_count} --pr-count {plan.ref_count} --save-ref "
               f"{shlex.quote(_display(out / 'reference.npz', out, shown))}")
    eval_cmds = []
    for stage in plan.evals:
        record = json.loads((out / "evals" / stage.name / "metrics.json").read_text())
        eval_cmds.append(f"# {stage.name}: {stage.title}\n" + "\n".join(record.get("commands", [])))
    shares = "; ".join(", ".join(f"{s.name} {s.share:.0%}" for s in plan.train if s.lane == lane)
                       for lane in sorted({s.lane for s in plan.train}))
    parallel = " (runs separated by ';' train side by side, one thread each)" if ";" in shares else ""
    budget = (f"a budget of {minutes:g} minutes shared as {shares}{parallel}; the rest samples and evaluates"
              if minutes is not None else "a fixed number of steps each")
    pre = lambda lines: "<pre>" + html.escape("\n".join(lines)) + "</pre>"  # noqa: E731
    return f"""
<style>pre{{white-space:pre-wrap;overflow-wrap:anywhere;background:#f7f7f7;padding:8px;font-size:12px}}
table.runs td{{text-align:left}} table.runs td:nth-child(n+4):nth-child(-n+6){{text-align:right}}</style>
<h2>Training runs</h2>
<p>All runs use the built-in <code>shapes:{stage_resolution(plan)}</code> data
(16 classes: 4 shapes × 4 colours) and the genzoo training engine, with {budget}.
NFE counts network evaluations per image; a classifier-free-guided step evaluates the network on the
requested and the null label, so it counts twice. Images/s is measured over the timed batches of
{plan.sample_batch} images. Conditional accuracy: the fraction of samples the shapes classifier assigns to
the class asked for (for GigaGAN, the class named in the prompt).</p>
<table class="runs"><thead><tr><th>run</th><th>family</th><th>arch</th><th>steps</th><th>images seen</th>
<th>train minutes</th><th>model</th></tr></thead><tbody>{"".join(rows)}</tbody></table>
<h2>Reproduce every number</h2>
<p>Train (each command resumes its run when stopped):</p>
{pre(train_cmds)}
<p>Reference statistics for FD and precision/recall (the first {plan.ref_count} data images):</p>
{pre([ref_cmd])}
<p>Sample and evaluate each configuration (the eval command writes the configuration's metrics.json; GigaGAN's
accuracy needs the prompts' classes, which the demo records):</p>
{pre(eval_cmds)}
<p>Then the table, plots and grids:</p>
{pre([f"genzoo compare {shlex.quote(_display(out / 'evals', out, shown))} --out {shlex.quote(shown)}"])}
"""


def stage_resolution(plan: DemoPlan) -> int:
    return int(plan.train[0].config["data"].split(":")[1])


def write_report(plan: DemoPlan, summaries: dict[str, dict[str, Any]], out: Path, shown: str,
                 minutes: float | None) -> tuple[Path, str, list[dict[str, Any]]]:
    """``report.html`` (the compare page plus the runs and commands), the Markdown table, the records."""
    from genzoo.metrics.compare import compare

    targets = [out / "evals" / s.name / "metrics.json" for s in plan.evals]
    result = compare(targets, out, title=f"genzoo demo: diffusion vs consistency vs GAN on shapes "
                                         f"({stage_resolution(plan)} px)")
    page = Path(result["html"]).read_text()
    page = page.replace("</body>", _report_sections(plan, summaries, out, shown, minutes) + "</body>", 1)
    report = out / "report.html"
    report.write_text(page)
    Path(result["html"]).unlink()
    return report, result["markdown"].read_text(), result["records"]


# ------------------------------------------------------------------------------------------------ main

def run_demo(out_dir: str | Path = "demo-out", minutes: float = DEFAULT_MINUTES, resolution: int = 16, *,
             num_samples: int | None = None, tiny: bool = False, train_steps: int | None = None,
             gigagan: bool = True, threads: int | None = None, lanes: bool | None = None,
             log: Callable[[str], None] | None = print) -> DemoResult:
    """Run (or continue) the demo in ``out_dir``; returns the report path and the Markdown table.

    ``minutes`` is the total budget; each training run gets its share of it (:data:`TRAIN_SHARES`) and
    the number of samples per configuration scales with it. ``train_steps`` trains a fixed number of
    steps instead, ``tiny`` uses tiny networks (both for tests); ``threads`` sets torch's CPU threads.
    ``lanes`` trains the runs of :data:`LANES` side by side in two processes (default: with two or more
    CPU cores and not ``tiny``), each with half the threads.
    """
    if minutes <= 0:
        raise UserError(f"--minutes: expected a positive number, got {minutes}")
    if resolution not in RESOLUTIONS:
        raise UserError(f"--resolution: the demo runs at 16 or 32 px, got {resolution}")
    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        if lanes is None:
            lanes = not tiny and (os.cpu_count() or 1) >= 2
        return _run(out_dir, minutes, resolution, num_samples, tiny, train_steps, gigagan, bool(lanes), log)
    finally:
        torch.set_num_threads(threads_before)


#: a lane worker is running its stages (SIGTERM then raises, so training saves and finally blocks run)
_lane_busy = False
#: the demo process a lane worker serves
_demo_pid = -1


def _train_lane(stages: list[TrainStage], out: Path, threads: int,
                position: int) -> dict[str, dict[str, Any]]:
    """Train one lane's runs in order (in a worker process): ``threads`` torch threads, progress bars on
    terminal line ``position``."""
    global _lane_busy
    torch.set_num_threads(threads)
    os.environ["TQDM_POSITION"] = str(position)  # tqdm reads TQDM_* defaults from the environment
    _lane_busy = True
    try:
        return {stage.name: train_stage(stage, out) for stage in stages}
    except Terminated:
        if os.getppid() != _demo_pid:  # saved and stopped, and the demo is gone: its queue would keep us
            sys.stderr.flush()
            os._exit(143)
        raise  # the demo is stopping: it shuts the pool down (an abrupt exit would make it kill the others)
    finally:
        _lane_busy = False


def _train_all(plan: DemoPlan, out: Path, lanes: bool, total: int) -> dict[str, dict[str, Any]]:
    """Every training run: side by side by lane in worker processes, or one after the other."""
    for i, stage in enumerate(plan.train, 1):
        budget = (f"{stage.config['minutes']:.1f} min" if stage.config.get("minutes") is not None
                  else f"{stage.config['steps']} steps")
        where = f", lane {stage.lane + 1}" if lanes else ""
        _say(f"[{i}/{total}] train {stage.name}: {stage.title} ({budget}{where})")
    if not lanes:
        return {stage.name: train_stage(stage, out) for stage in plan.train}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    groups = [[s for s in plan.train if s.lane == lane] for lane in sorted({s.lane for s in plan.train})]
    threads = max(1, torch.get_num_threads() // len(groups))
    summaries: dict[str, dict[str, Any]] = {}
    with ProcessPoolExecutor(len(groups), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_lane_worker_signals, initargs=(os.getpid(),)) as pool:
        futures = [pool.submit(_train_lane, group, out, threads, position)
                   for position, group in enumerate(groups)]
        try:
            for future in futures:
                summaries.update(future.result())  # a failed run raises here, with its own error
        except BaseException:
            _stop_lanes(pool)  # Ctrl-C, SIGTERM or a failed lane: the others save and stop too
            raise
    return {stage.name: summaries[stage.name] for stage in plan.train}


def _lane_worker_signals(parent: int) -> None:
    """A lane worker stops only when the demo tells it to (:func:`_stop_lanes`, or the demo's death):
    it ignores SIGINT, which a terminal's Ctrl-C sends to every process of the group, and SIGTERM stops
    its lane with :class:`~genzoo.errors.Terminated` (in training, after the engine saves a checkpoint);
    an idle worker leaves the exit to the pool's shutdown, or exits at once if the demo is gone."""
    global _demo_pid
    _demo_pid = parent
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_terminated)
    threading.Thread(target=_terminate_when_orphaned, args=(parent,), daemon=True).start()


def _terminate_when_orphaned(parent: int) -> None:
    """SIGTERM this worker once when the demo is gone (even by SIGKILL), so it saves and stops."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def _raise_terminated(signum: int, frame: Any) -> None:
    if _lane_busy:
        raise Terminated()
    if os.getppid() != _demo_pid:  # idle and orphaned: nothing to save
        os._exit(143)
    # idle with the demo alive: it shuts the pool down itself


def _stop_lanes(pool: Any) -> None:
    """SIGTERM each live lane worker: its training saves a checkpoint at the end of the step and stops;
    the pool's exit then waits for them, so no worker outlives the demo."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # shutdown forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)


def _run(out_dir: str | Path, minutes: float, resolution: int, num_samples: int | None, tiny: bool,
         train_steps: int | None, gigagan: bool, lanes: bool,
         log: Callable[[str], None] | None) -> DemoResult:
    shown = str(out_dir)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    settings = {"resolution": resolution, "tiny": tiny, "gigagan": gigagan}
    settings_file = out / "demo.json"
    if settings_file.is_file():
        saved = json.loads(settings_file.read_text())
        if {k: saved.get(k) for k in settings} != settings:
            raise UserError(f"--out {shown}: holds a demo with other settings ({saved}); "
                            "use another --out or the same settings")
    else:
        _write_json(settings_file, settings)
    plan = plan_demo(out, minutes, resolution, num_samples, tiny, train_steps, gigagan, lanes=lanes)
    total = len(plan.train) + len(plan.evals) + 1
    start = time.monotonic()
    summaries = _train_all(plan, out, lanes, total)
    from genzoo.metrics import get_extractor

    extractor = get_extractor("shapes")
    reference = reference_stage(out, resolution, plan.ref_count, extractor)
    for i, stage in enumerate(plan.evals, len(plan.train) + 1):
        _say(f"[{i}/{total}] sample + evaluate {stage.name}: {stage.title}, {plan.num_samples} images")
        eval_stage(stage, plan, out, shown, extractor, reference, summaries[stage.run])
    _say(f"[{total}/{total}] report")
    budget = None if train_steps is not None else minutes
    report, table, records = write_report(plan, summaries, out, shown, budget)
    _say(f"finished in {(time.monotonic() - start) / 60:.1f} min")
    if log is not None:
        log(table.rstrip("\n"))
        log(f"report: {Path(shown) / 'report.html'}")
        log(f"explore the models: genzoo serve {shlex.quote(shown)}")
    return DemoResult(out, report, table, records)
