"""Nothing lost (issue #16): SIGKILL during training and during `sample`, SIGINT during `sample`, and two
`sample` processes writing one file. Every file left on disk loads or is absent, a previous output is
intact, and a killed run resumes exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_train_process import DRIVER, child_env, toy_args
from test_train_toy import register

import genzoo
from genzoo.checkpoints import list_checkpoints
from genzoo.cli import main
from genzoo.train.checkpoint import read_checkpoint


@pytest.fixture()
def driver(tmp_path):
    path = tmp_path / "driver.py"
    path.write_text(DRIVER)
    return path


def wait_for(condition, proc, seconds=120.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "child exited"
        assert time.monotonic() < deadline, "the child never got there"
        time.sleep(0.01)


def temporaries(folder: Path, name: str) -> list[Path]:
    return sorted(folder.glob(f".{name}.*"))


def test_sigkill_during_training_then_resume_is_exact(tmp_path, driver, monkeypatch):
    register(monkeypatch)
    run = tmp_path / "run"
    flags = ("--checkpoint-every", "1", "--keep-last", "1")
    proc = subprocess.Popen([sys.executable, str(driver), *toy_args(run, "--steps", "400", *flags)],
                            env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: (run / "checkpoint-000003").exists() or (run / "checkpoint-000004").exists(), proc)
        os.kill(proc.pid, signal.SIGKILL)  # somewhere in a step, a save or a prune
        proc.wait(timeout=30)
    finally:
        proc.kill()
    visible = list_checkpoints(run)
    assert visible, "pruning must never leave the run without a checkpoint"
    for path in visible:  # every visible checkpoint is complete and loads
        read_checkpoint(path)
        genzoo.load(path)
    target = int(visible[-1].name.split("-")[1]) + 3
    assert main(toy_args(run, "--steps", str(target), "--resume", *flags)) == 0
    assert main(toy_args(tmp_path / "ref", "--steps", str(target), *flags)) == 0
    name = f"checkpoint-{target:06d}"
    resumed, reference = (load_file(str(d / name / "model.safetensors")) for d in (run, tmp_path / "ref"))
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in resumed)  # bit for bit
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, target + 1))  # no step logged twice across the kill and the resume
    assert [p.name for p in list_checkpoints(run)] == [name]


@pytest.fixture()
def toy_run(tmp_path, monkeypatch):
    register(monkeypatch)
    assert main(toy_args(tmp_path / "run", "--steps", "1", "--checkpoint-every", "1")) == 0
    return tmp_path / "run"


def _default_signal_dispositions() -> None:
    """In the child before exec: Ctrl-C and SIGTERM as a shell gives them to a command. A test worker may
    have SIGINT ignored or blocked (both are inherited through exec), and then the child would never see
    the signal this test sends."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def _start_sample(driver, run, out, seeds, *more):
    argv = ["sample", "--ckpt", str(run), "--seeds", seeds, "--batch", "64", "--out", str(out), *more]
    return subprocess.Popen([sys.executable, str(driver), *argv], env=child_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, preexec_fn=_default_signal_dispositions)


def _good_file(path: Path) -> bytes:
    np.savez(path, arr_0=np.full((2, 8, 8, 3), 7, dtype=np.uint8), arr_1=np.array([1, 2]))
    return path.read_bytes()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_a_killed_or_interrupted_sample_leaves_the_previous_output(tmp_path, driver, toy_run, sig):
    out = tmp_path / "good.npz"
    good = _good_file(out)
    # far more seeds than can be written before the signal lands, even with this process descheduled
    proc = _start_sample(driver, toy_run, out, "0-999999")
    try:
        wait_for(lambda: any(p.stat().st_size > 0 for p in temporaries(tmp_path, out.name)), proc)
        os.kill(proc.pid, sig)
        code = proc.wait(timeout=60)
        err = proc.stderr.read().decode()
    finally:
        proc.kill()
    assert out.read_bytes() == good  # the previous output is intact
    with np.load(out) as f:
        assert f["arr_0"].shape == (2, 8, 8, 3)
    if sig != signal.SIGKILL:  # Ctrl-C: 130, SIGTERM: 143; one line, and the temporaries are gone
        assert code == {signal.SIGINT: 130, signal.SIGTERM: 143}[sig], err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert temporaries(tmp_path, out.name) == []  # removed on the way out
    else:
        assert code == -signal.SIGKILL
    # the next write to the same file succeeds and sweeps away what a killed process left
    assert main(["sample", "--ckpt", str(toy_run), "--seeds", "0-2", "--out", str(out)]) == 0
    assert temporaries(tmp_path, out.name) == []
    with np.load(out) as f:
        assert f["arr_0"].shape == (3, 8, 8, 3)


def test_two_samples_to_one_file_do_not_mix(tmp_path, driver, toy_run):
    out = tmp_path / "both.npz"
    seeds = ("0-499", "1000-1499")
    procs = [_start_sample(driver, toy_run, out, s) for s in seeds]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()
    model = genzoo.load(toy_run)
    expected = [genzoo.sample(model, s, batch_size=250)[0].permute(0, 2, 3, 1).numpy() for s in seeds]
    with np.load(out) as f:
        images = f["arr_0"]
    assert any(images.shape == e.shape and (images == e).all() for e in expected)  # one run, whole
    assert temporaries(tmp_path, out.name) == []
