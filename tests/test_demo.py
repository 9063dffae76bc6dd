"""`genzoo demo` end to end with tiny networks: the report's structure, where its numbers come from,
and resuming."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from closed_forms import heun_nfe

from genzoo.demo import DONE_FILE, GUIDANCE, LANES, plan_demo, run_demo
from genzoo.errors import UserError
from genzoo.gan.gigagan import CLIP_FILE
from genzoo.metrics.record import LABELS, read_metrics
from genzoo.nets.clip import load_clip, save_clip

SAMPLES = 32
STEPS = 2


class _Page(HTMLParser):
    """Tables (rows of cell texts), headings, image sources and <pre> blocks of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.headings: list[str] = []
        self.images: list[str] = []
        self.pres: list[str] = []
        self._cell: list[str] | None = None
        self._text: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag in ("h1", "h2", "pre"):
            self._text = []
        elif tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag in ("h1", "h2"):
            self.headings.append("".join(self._text))
            self._text = None
        elif tag == "pre":
            self.pres.append("".join(self._text))
            self._text = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._text is not None:
            self._text.append(data)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    printed: list[str] = []
    # lanes=True: the training runs go through the two worker processes the default demo uses
    result = run_demo(out, minutes=1, tiny=True, train_steps=STEPS, num_samples=SAMPLES, threads=1,
                      lanes=True, log=printed.append)
    return out, result, printed


def _page(out: Path) -> _Page:
    page = _Page()
    page.feed((out / "report.html").read_text())
    return page


def _close(cell: str, value: float) -> bool:
    """A table cell (4 significant digits, or an integer) shows ``value``."""
    shown = float(cell)
    return math.isclose(shown, value, rel_tol=1e-3, abs_tol=1e-12)


def test_report_structure(demo):
    out, result, printed = demo
    assert result.report == out / "report.html"
    page = _page(out)
    for heading in ("Table", "Quality against cost", "Samples", "Training runs", "Reproduce every number"):
        assert heading in page.headings
    plan = plan_demo(out, 1, tiny=True, train_steps=STEPS, num_samples=SAMPLES)
    main = page.tables[0]
    assert [row[0] for row in main[1:]] == [stage.name for stage in plan.evals]
    assert {row[1] for row in main[1:]} == {"diffusion", "consistency", "gan"}
    # one grid per configuration and both plots, every image a file next to the report
    assert len([s for s in page.images if s.startswith("grids/")]) == len(plan.evals)
    assert {"quality_vs_nfe.png", "quality_vs_speed.png"} <= set(page.images)
    for src in page.images:
        assert (out / src).is_file(), src
    # the final lines printed are the table, the report's path and the command serving the models
    assert printed[-1] == f"explore the models: genzoo serve {out}"
    assert printed[-2] == f"report: {out / 'report.html'}"
    assert printed[-3] == result.table.rstrip("\n") == (out / "table.md").read_text().rstrip("\n")
    # ... and that command finds every trained model and the report
    from genzoo.serve.discovery import discover_models, discover_reports

    found = {entry.path.name: entry.family for entry in discover_models([out])}
    assert found == {stage.name: stage.family for stage in plan.train}
    assert [r.html for r in discover_reports([out])] == [out / "report.html"]
    # a command to reproduce each configuration, naming its sample flags
    commands = "\n".join(page.pres)
    for stage in plan.evals:
        assert f"--model {stage.name} " in commands
    assert "genzoo sample --ckpt" in commands and f"--guidance {GUIDANCE}" in commands
    assert commands.count("genzoo train --family") == len(plan.train)


def test_report_commands_parse_to_the_settings_used(demo):
    """The train and sample commands in the report give the configs the demo ran with."""
    import shlex

    from genzoo.cli import build_parser
    from genzoo.cli.train import config_from_args

    out, _, _ = demo
    plan = plan_demo(out, 1, tiny=True, train_steps=STEPS, num_samples=SAMPLES)
    lines = [line for block in _page(out).pres for line in block.splitlines()]
    train_lines = [line for line in lines if line.startswith("genzoo train ")]
    assert len(train_lines) == len(plan.train)
    for stage, line in zip(plan.train, train_lines):
        parsed = config_from_args(build_parser().parse_args(shlex.split(line)[1:]))
        for key, value in stage.config.items():
            if key not in ("log_every", "tensorboard"):
                assert parsed[key] == value, (stage.name, key)
    sample_lines = [line for line in lines if line.startswith("genzoo sample ")]
    assert len(sample_lines) == len(plan.evals)
    for stage, line in zip(plan.evals, sample_lines):
        args = vars(build_parser().parse_args(shlex.split(line)[1:]))
        assert args["seeds"] == f"0-{SAMPLES - 1}" and args["ckpt"] == str(out / "runs" / stage.run)
        for key, value in stage.options.items():
            assert args[key] == value, (stage.name, key)


def test_every_number_comes_from_a_file_the_run_wrote(demo):
    out, _, _ = demo
    page = _page(out)
    header, *rows = page.tables[0]
    keys = {label: key for key, label in LABELS.items()}
    keys["FD (shapes)"] = "fd"
    numeric = [h for h in header if h not in ("model", "family", "settings")]
    assert {"NFE", "images/s", "FD (shapes)", "precision", "recall", "cond. accuracy"} <= set(numeric)
    checked = 0
    for row in rows:
        record = read_metrics(out / "evals" / row[0] / "metrics.json")
        assert row[1] == record["family"]
        for title, cell in zip(header, row):
            if title in numeric and cell:
                assert _close(cell, record[keys[title]]), (row[0], title, cell, record[keys[title]])
                checked += 1
    assert checked >= 6 * len(rows)
    # the training table: steps, images and minutes from each run's last checkpoint
    runs = page.tables[1]
    assert runs[0][:6] == ["run", "family", "arch", "steps", "images seen", "train minutes"]
    for row in runs[1:]:
        run_dir = out / "runs" / row[0]
        checkpoint = sorted(run_dir.glob("checkpoint-*"))[-1]
        state = json.loads((checkpoint / "state.json").read_text())
        assert int(row[3]) == state["step"] == STEPS
        assert int(row[4]) == state["images_seen"]
        clip = run_dir / CLIP_FILE  # GigaGAN's CLIP pretraining counts in its training time
        clip_seconds = load_clip(clip).report["wall_seconds"] if clip.is_file() else 0.0
        assert row[0] != "gigagan" or clip_seconds > 0
        minutes = (state["train_seconds"] + clip_seconds) / 60
        assert abs(float(row[5]) - minutes) <= 0.0051  # shown to 0.01 min
        assert json.loads((run_dir / DONE_FILE).read_text())["step"] == state["step"]


def test_records_match_their_samples_and_costs(demo):
    out, _, _ = demo
    plan = plan_demo(out, 1, tiny=True, train_steps=STEPS, num_samples=SAMPLES)
    for stage in plan.evals:
        record = read_metrics(out / "evals" / stage.name / "metrics.json")
        with np.load(out / "evals" / stage.name / "samples.npz") as data:
            assert data["arr_0"].shape == (SAMPLES, 16, 16, 3) and data["arr_0"].dtype == np.uint8
            labels = data["arr_1"]
        assert len(labels) == SAMPLES and labels.min() >= 0 and labels.max() < 16
        assert record["num_samples"] == SAMPLES and 0 <= record["accuracy"] <= 1
        assert record["fd"] >= 0 and record["images_per_s"] > 0
        steps = stage.options.get("steps")
        if stage.run == "edm":  # Heun: 2N - 1 evaluations; CFG evaluates each (in its interval) twice
            lo, hi = map(float, stage.options.get("guidance_interval", "0,inf").split(","))
            assert record["nfe"] == heun_nfe(steps, lo, hi, 2 if stage.options.get("guidance") else 1)
        elif stage.run == "cd":
            assert record["nfe"] == steps
        else:
            assert record["nfe"] == 1
    # the same seeds ask for the same classes from every class-conditional model
    with np.load(out / "evals" / "edm-heun-2" / "samples.npz") as a, \
            np.load(out / "evals" / "biggan" / "samples.npz") as b:
        assert np.array_equal(a["arr_1"], b["arr_1"])


def test_rerun_skips_finished_stages_and_resumes_training(demo, capsys):
    out, _, _ = demo
    before = {p: p.stat().st_mtime_ns for p in out.glob("evals/*/metrics.json")}
    # an interrupted EDM run: no done marker, and its evaluations not written yet
    (out / "runs" / "edm" / DONE_FILE).unlink()
    for stage_dir in out.glob("evals/edm-*"):
        (stage_dir / "metrics.json").unlink()
    run_demo(out, minutes=1, tiny=True, train_steps=STEPS + 1, num_samples=SAMPLES, threads=1, lanes=False,
             log=None)
    err = capsys.readouterr().err
    assert f"edm: resuming at step {STEPS}" in err
    last = sorted((out / "runs" / "edm").glob("checkpoint-*"))[-1]
    state = json.loads((last / "state.json").read_text())
    assert state["step"] == STEPS + 1
    assert sorted((out / "runs" / "cd").glob("checkpoint-*"))[-1].name == f"checkpoint-{STEPS:06d}"
    for path, mtime in before.items():
        if not re.search(r"evals/edm-", str(path)):
            assert path.stat().st_mtime_ns == mtime, path  # finished stages were not redone
        else:
            assert path.is_file()


def test_bad_settings(tmp_path):
    with pytest.raises(UserError, match="--minutes"):
        run_demo(tmp_path, minutes=0)
    with pytest.raises(UserError, match="--resolution"):
        run_demo(tmp_path, resolution=24)
    (tmp_path / "demo.json").write_text(json.dumps({"resolution": 32, "tiny": True, "gigagan": True}))
    with pytest.raises(UserError, match="other settings"):
        run_demo(tmp_path, minutes=1, resolution=16, tiny=True)


def test_cli_flags():
    from genzoo.cli import build_parser

    args = build_parser().parse_args(["demo", "--out", "d", "--minutes", "3", "--resolution", "32",
                                      "--no-gigagan"])
    assert (args.out, args.minutes, args.resolution, args.gigagan) == ("d", 3.0, 32, False)


LANE_DRIVER = """
import signal, sys
from genzoo.cli import _raise_terminated
from genzoo.demo import run_demo
signal.signal(signal.SIGTERM, _raise_terminated)  # as `genzoo demo` does
run_demo(sys.argv[1], minutes=1, tiny=True, train_steps=10**7, num_samples=8, threads=2, lanes=True, log=None)
"""


def _children(pid: int) -> list[int]:
    """The live descendants of ``pid`` (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in map(int, (task / "children").read_text().split()):
                found += [child, *_children(child)]
    return found


def _logged(metrics: Path) -> bool:
    try:
        return metrics.stat().st_size > 0
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] not in "ZX"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_stopping_the_demo_stops_its_lanes_with_their_checkpoints(tmp_path, how):
    """SIGTERM to the demo makes both training lanes save and stop, and the stopped runs are not marked
    done (a rerun resumes them); after a SIGKILL the lanes notice the demo is gone and do the same instead
    of training on unseen."""
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    parent = subprocess.Popen([sys.executable, "-c", LANE_DRIVER, str(out)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first_runs = [out / "runs" / lane[0] for lane in LANES]
    deadline = time.monotonic() + 300
    # both lanes are in their training loops (a run stopped before its first step has nothing to save)
    while not all(_logged(run / "metrics.jsonl") for run in first_runs):
        assert parent.poll() is None, parent.stderr.read()
        assert time.monotonic() < deadline, "the lanes did not start training"
        time.sleep(0.2)
    workers = _children(parent.pid)
    assert workers
    parent.send_signal(getattr(signal, how))
    _, stderr = parent.communicate(timeout=120)
    deadline = time.monotonic() + 120
    while any(map(_alive, workers)):
        assert time.monotonic() < deadline, "a lane worker outlived the demo"
        time.sleep(0.2)
    for run in first_runs:  # each lane's engine finished its step and saved before stopping
        assert not (run / DONE_FILE).is_file()
        assert list(run.glob("checkpoint-*")), f"{run.name}: no checkpoint saved; the demo said:\n{stderr}"


def test_gigagan_stage_counts_its_clip_pretraining_in_its_share(tmp_path, monkeypatch):
    """The demo's GigaGAN trains the CLIP recipe; its CLIP is trained before the engine starts (saved in
    the run directory, where the engine reads it back), and the engine gets the stage's share less the
    CLIP's time; a rerun reads the CLIP back instead of training it again."""
    import genzoo.train.engine as engine
    from genzoo.demo import train_stage

    plan = plan_demo(tmp_path, minutes=1, tiny=True)
    stage = next(s for s in plan.train if s.name == "gigagan")
    assert stage.config["clip_weight"] > 0 and stage.config["vision_weight"] > 0
    assert (stage.config["d_init"], stage.config["d_pool"]) == ("he", "max")

    class Started(Exception):
        pass

    asked: list[float] = []

    def engine_train(config):
        asked.append(config["minutes"])
        raise Started

    monkeypatch.setattr(engine, "train", engine_train)
    with pytest.raises(Started):
        train_stage(stage, tmp_path)
    clip_file = Path(stage.config["out"]) / CLIP_FILE
    report = load_clip(clip_file).report
    assert report["images"] == stage.config["clip_pretrain_images"] and report["wall_seconds"] >= 0
    share = stage.config["minutes"] * 60
    assert share > report["wall_seconds"] + 1
    assert math.isclose(asked[0] * 60, share - report["wall_seconds"], rel_tol=1e-9)
    # a rerun reads the CLIP and its time back (here a report saying it took 5 s)
    save_clip(load_clip(clip_file), clip_file, dict(report, wall_seconds=5.0))
    with pytest.raises(Started):
        train_stage(stage, tmp_path)
    assert math.isclose(asked[1] * 60, share - 5.0, rel_tol=1e-9)
    assert load_clip(clip_file).report["wall_seconds"] == 5.0  # not trained again
