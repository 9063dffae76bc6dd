"""Training in other processes: SIGKILL in the middle of a checkpoint save, and a 2-process torchrun
(gloo) run that must equal the 1-process run with the same global batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train_toy import register

import genzoo
from genzoo.cli import main
from genzoo.train.checkpoint import read_checkpoint

TESTS = Path(__file__).resolve().parent

# Runs `genzoo <argv>` with the toy family registered; GENZOO_TEST_HANG_AT_SAVE=N makes the N-th checkpoint
# save hang (after writing optimizer.pt into the temporary directory), announcing it with a file.
DRIVER = f"""
import os, sys, time
sys.path.insert(0, {str(TESTS)!r})
import test_train_toy
test_train_toy.register()
hang_at = int(os.environ.get("GENZOO_TEST_HANG_AT_SAVE", "0"))
if hang_at:
    import genzoo.train.checkpoint as ck
    original, calls = ck.write_optimizer, []
    def write_optimizer(path, state):
        original(path, state)
        calls.append(path)
        if len(calls) == hang_at:
            flag = os.environ["GENZOO_TEST_FLAG"]
            with open(flag + ".tmp", "w") as f:  # renamed into place: the test never reads it half-written
                f.write(str(path))
            os.replace(flag + ".tmp", flag)
            time.sleep(120)
    ck.write_optimizer = write_optimizer
report = os.environ.get("GENZOO_TEST_SYNC_REPORT")
if report:  # record how the engine averages each player's gradients
    import genzoo.train.parallel as par
    original_init = par.GradientSync.__init__
    def init(self, objective, *args, **kwargs):
        original_init(self, objective, *args, **kwargs)
        modes = dict((n, self.mode(n)) for n in objective.players)
        open(report + os.environ.get("RANK", "0"), "w").write(repr(sorted(modes.items())))
    par.GradientSync.__init__ = init
from genzoo.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture()
def driver(tmp_path):
    path = tmp_path / "driver.py"
    path.write_text(DRIVER)
    return path


def child_env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", **extra)
    env.pop("WORLD_SIZE", None)
    return env


def toy_args(out, *more):
    return ["train", "--family", "toy", "--data", "shapes:8?count=24", "--out", str(out), "--batch", "8",
            "--log-every", "1", "--sample-every", "0", "--no-tensorboard", "--toy-width", "3", *more]


def test_sigkill_during_save_leaves_a_loadable_checkpoint(tmp_path, driver, monkeypatch):
    register(monkeypatch)
    out, flag = tmp_path / "run", tmp_path / "saving"
    argv = toy_args(out, "--steps", "50", "--checkpoint-every", "1")
    proc = subprocess.Popen([sys.executable, str(driver), *argv],
                            env=child_env(GENZOO_TEST_HANG_AT_SAVE="3", GENZOO_TEST_FLAG=str(flag)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the child never reached its third save"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    partial = Path(flag.read_text()).parent
    assert partial.name.startswith(".checkpoint-000003") and partial.exists()  # killed mid-save
    complete = sorted(p.name for p in out.glob("checkpoint-*"))
    assert complete == ["checkpoint-000001", "checkpoint-000002"]
    read_checkpoint(out / "checkpoint-000002")  # every file reads
    model = genzoo.load(out)
    assert genzoo.record_of(model).model_dir.name == "checkpoint-000002"
    torch.set_num_threads(1)
    assert main(toy_args(out, "--steps", "4", "--checkpoint-every", "1", "--resume")) == 0
    assert not partial.exists()
    state = json.loads((out / "checkpoint-000004" / "state.json").read_text())
    assert (state["step"], state["data_position"]) == (4, 32)


@pytest.mark.parametrize("case, extra, modes", [
    # one network per step: DistributedDataParallel, with two accumulated micro-batches per process
    ("ddp", ["--batch-per-device", "2"], [("net", "ddp")]),
    # two players per step (a GAN-like schedule): the flat all_reduce after the backward passes
    ("all_reduce", ["--toy-players", "2"], [("b", "all_reduce"), ("net", "all_reduce")]),
    # the network, its gradients and Adam state sharded over the two processes (FSDP2 on gloo)
    ("fsdp", ["--fsdp"], [("net", "fsdp")]),
])
def test_two_process_training_equals_one_process(tmp_path, driver, monkeypatch, case, extra, modes):
    register(monkeypatch)
    args = ["--steps", "3", "--checkpoint-every", "3", "--lr", "0.01", *extra]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                str(driver)]
    cmd = [*torchrun, *toy_args(tmp_path / "ddp", *args)]
    report = tmp_path / "sync-rank"
    result = subprocess.run(cmd, env=child_env(GENZOO_TEST_SYNC_REPORT=str(report)), capture_output=True,
                            timeout=180)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert [eval(report.with_name(f"sync-rank{r}").read_text()) for r in (0, 1)] == [modes, modes]
    torch.set_num_threads(1)
    one_args = [a for a in args if a != "--fsdp"]
    assert main(toy_args(tmp_path / "one", *one_args)) == 0
    for name in ("model", "ema"):
        ddp = load_file(str(tmp_path / "ddp" / "checkpoint-000003" / f"{name}.safetensors"))
        one = load_file(str(tmp_path / "one" / "checkpoint-000003" / f"{name}.safetensors"))
        assert sorted(ddp) == sorted(one)
        for k in one:
            if one[k].is_floating_point():
                torch.testing.assert_close(ddp[k], one[k], rtol=1e-5, atol=1e-6)
    one = load_file(str(tmp_path / "one" / "checkpoint-000003" / "model.safetensors"))
    ema = load_file(str(tmp_path / "one" / "checkpoint-000003" / "ema.safetensors"))
    assert any(not torch.equal(one[k], ema[k]) for k in ema)  # the weights moved during training
    config = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert config["world_size"] == 2
    lines = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3  # rank 0 alone writes
    losses_ddp = [json.loads(line)["loss/net"] for line in lines]
    losses_one = [json.loads(line)["loss/net"]
                  for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    assert losses_ddp == pytest.approx(losses_one, rel=1e-5)
    if case == "fsdp":  # resuming a sharded run: the optimiser state goes back into the shards
        more = ["--steps", "4", "--checkpoint-every", "4", "--lr", "0.01", "--fsdp", "--resume"]
        result = subprocess.run([*torchrun, *toy_args(tmp_path / "ddp", *more)], env=child_env(),
                                capture_output=True, timeout=180)
        assert result.returncode == 0, result.stderr.decode()[-3000:]
        assert main(toy_args(tmp_path / "one", "--steps", "4", "--checkpoint-every", "4", "--lr", "0.01",
                             "--resume")) == 0
        ddp = load_file(str(tmp_path / "ddp" / "checkpoint-000004" / "model.safetensors"))
        one = load_file(str(tmp_path / "one" / "checkpoint-000004" / "model.safetensors"))
        for k in one:
            if one[k].is_floating_point():
                torch.testing.assert_close(ddp[k], one[k], rtol=1e-5, atol=1e-6)


def test_fsdp_needs_processes_and_one_network_per_step(tmp_path, monkeypatch, capsys):
    register(monkeypatch)
    torch.set_num_threads(1)
    assert main(toy_args(tmp_path / "one", "--steps", "1", "--fsdp")) == 2
    assert "--fsdp: shards the network over the processes of a torchrun run" in capsys.readouterr().err
