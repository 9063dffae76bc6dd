"""The training engine on the toy family: exact resume, accumulation, schedules, precision, NaN stop,
time budget, checkpoints (keep-last, corrupt fallback, config differences), feedback files."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train_toy import ToyDataset, register, toy_config

from genzoo.errors import Terminated, UserError
from genzoo.train.engine import NonFiniteLoss, train


@pytest.fixture(autouse=True)
def toy_family(monkeypatch):
    register(monkeypatch)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: thread hand-offs cost more than they save on a busy machine
    yield
    torch.set_num_threads(threads)


def weights(run, step, name="model"):
    return load_file(str(run / f"checkpoint-{step:06d}" / f"{name}.safetensors"))


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def spy_objectives(monkeypatch):
    from genzoo.family import get_family

    family, made = get_family("toy"), []
    original = family.build_objective

    def spy(config, dataset):
        made.append(original(config, dataset))
        return made[-1]

    monkeypatch.setattr(family, "build_objective", spy)
    return made


def test_resume_is_bit_exact(tmp_path):
    data = ToyDataset(count=12)  # 12 images, batch 8: the data order crosses epochs mid-batch
    common = dict(toy_dropout=0.2, ema_halflife_kimg=0.05, lr_warmup_kimg=0.016, toy_players=2)
    straight = train(toy_config(tmp_path / "a", steps=4, checkpoint_every=4, **common), dataset=data)
    half = train(toy_config(tmp_path / "b", steps=2, **common), dataset=data)
    train(toy_config(tmp_path / "b", steps=4, resume=True, **common), dataset=data)
    for name in ("model", "ema", "objective"):
        assert_same(weights(straight, 4, name), weights(half, 4, name))
    opt_a = torch.load(straight / "checkpoint-000004" / "optimizer.pt", weights_only=True)
    opt_b = torch.load(half / "checkpoint-000004" / "optimizer.pt", weights_only=True)
    for player in ("net", "b"):
        for key, state in opt_a["optimizers"][player]["state"].items():
            for k, v in state.items():
                assert torch.equal(v, opt_b["optimizers"][player]["state"][key][k])
    state = json.loads((half / "checkpoint-000004" / "state.json").read_text())
    # Two players, three updates per step ([("net", 2), ("b", 1)]), each drawing a global batch of 8.
    assert (state["step"], state["images_seen"], state["data_position"]) == (4, 32, 96)
    assert opt_b["optimizers"]["net"]["state"][0]["step"].item() == 8
    assert opt_b["optimizers"]["b"]["state"][0]["step"].item() == 4
    # The first step runs at lr 0 (EDM's ramp-up uses the images seen before the step).
    lines = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["ema_beta"] == 0.0
    # lr = 0.01 * min(images seen before the step / 16, 1) over a 16-image warm-up
    assert [line["lr/net"] for line in lines] == pytest.approx([0.0, 0.005, 0.01, 0.01])


def test_accumulation_matches_one_big_batch(tmp_path):
    data = ToyDataset(count=16)
    one = train(toy_config(tmp_path / "one", steps=2, batch=8), dataset=data)
    acc = train(toy_config(tmp_path / "acc", steps=2, batch=8, batch_per_device=2), dataset=data)
    a, b = weights(one, 2), weights(acc, 2)
    for k in a:
        if k.endswith(".calls"):  # forward calls: 1 per update vs 4 (one per micro-batch)
            assert (a[k].item(), b[k].item()) == (2, 8)
        else:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    with pytest.raises(UserError, match="--batch 8: must be a multiple of --batch-per-device"):
        train(toy_config(tmp_path / "bad", batch=8, batch_per_device=3), dataset=data)


def test_bf16_autocast_trains_on_cpu(tmp_path, monkeypatch):
    seen = spy_objectives(monkeypatch)
    run = train(toy_config(tmp_path, steps=12, precision="bf16", checkpoint_every=12, lr=0.02),
                dataset=ToyDataset(count=32))
    assert set(seen[0].output_dtypes) == {torch.bfloat16}
    losses = [json.loads(line)["loss/net"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 12 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < 0.9 * sum(losses[:3]) / 3
    assert all(v.dtype == torch.float32 for v in weights(run, 12).values() if v.is_floating_point())


def test_gradient_clipping(tmp_path, monkeypatch):
    made = spy_objectives(monkeypatch)
    run = train(toy_config(tmp_path, steps=3, grad_clip=1e-3), dataset=ToyDataset())
    logged = [json.loads(line)["net/grad_norm"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert min(logged) > 1e-2  # the norms before clipping
    assert max(made[0].grad_norms) == pytest.approx(1e-3, rel=1e-4)  # what Adam received


def test_nonfinite_gradients_are_replaced_as_in_edm(tmp_path, monkeypatch):
    made = spy_objectives(monkeypatch)
    run = train(toy_config(tmp_path, steps=2, toy_nan_grad=True), dataset=ToyDataset())
    assert all(torch.isfinite(v).all() for v in weights(run, 2).values() if v.is_floating_point())
    assert made[0].players["net"].conv1.bias.grad[0].item() == 0.0  # NaN -> 0
    assert all(torch.isfinite(torch.tensor(made[0].grad_norms)))


def test_fp16_needs_cuda(tmp_path):
    with pytest.raises(UserError, match="--precision fp16: needs a CUDA device"):
        train(toy_config(tmp_path, precision="fp16"), dataset=ToyDataset())


def test_nonfinite_losses_stop_with_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLoss, match=r"NaN/Inf for 3 consecutive.*checkpoint-000002"):
        train(toy_config(tmp_path, steps=20, toy_nan_from=3, max_nonfinite=3), dataset=ToyDataset())
    from genzoo.checkpoints import list_checkpoints

    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-000002"]
    assert all(torch.isfinite(v).all() for v in weights(tmp_path, 2).values() if v.is_floating_point())


def test_minutes_stops_on_time(tmp_path):
    start = time.monotonic()
    run = train(toy_config(tmp_path, steps=None, minutes=0.02, checkpoint_every=10**6), dataset=ToyDataset())
    elapsed = time.monotonic() - start
    times = [json.loads(line)["time_s"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    # It stops at the first step that ends after the 1.2 s budget, and saves a checkpoint there.
    assert times[-1] >= 1.2 - 0.05 and (len(times) == 1 or times[-2] < 1.2 + 0.05)
    assert elapsed >= 1.2
    state = json.loads(next(run.glob("checkpoint-*/state.json")).read_text())
    assert state["step"] == len(times)
    with pytest.raises(UserError, match="--steps N or --minutes M"):
        train(toy_config(tmp_path / "x", steps=None), dataset=ToyDataset())


def test_keep_last_and_refuse_to_overwrite(tmp_path):
    train(toy_config(tmp_path, steps=6, checkpoint_every=1, keep_last=2), dataset=ToyDataset())
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-000005", "checkpoint-000006"]
    with pytest.raises(UserError, match="already holds checkpoints.*--resume"):
        train(toy_config(tmp_path, steps=8), dataset=ToyDataset())


def test_resume_corrupt_checkpoint_falls_back(tmp_path, capsys):
    train(toy_config(tmp_path, steps=4), dataset=ToyDataset())
    bad = tmp_path / "checkpoint-000004" / "model.safetensors"
    bad.write_bytes(bad.read_bytes()[:50])
    capsys.readouterr()
    train(toy_config(tmp_path, steps=5, resume=True), dataset=ToyDataset())
    err = capsys.readouterr().err
    assert f"{bad}: corrupt or truncated" in err and "falling back" in err
    assert "resumed from" in err and "checkpoint-000002 at step 2" in err
    assert json.loads((tmp_path / "checkpoint-000005" / "state.json").read_text())["step"] == 5


def test_resume_with_other_architecture_lists_differences(tmp_path, capsys):
    train(toy_config(tmp_path, steps=2), dataset=ToyDataset())
    with pytest.raises(UserError, match=r"does not fit this config:\n  net: .*'width': 4.*'width': 8"):
        train(toy_config(tmp_path, steps=4, resume=True, toy_width=8), dataset=ToyDataset())
    with pytest.raises(UserError, match=r"resolution: 8 in the checkpoint, 4 now"):
        train(toy_config(tmp_path, steps=4, resume=True), dataset=ToyDataset(resolution=4))
    train(toy_config(tmp_path, steps=3, resume=True, lr=0.5), dataset=ToyDataset())
    assert "settings changed" in capsys.readouterr().err


def test_feedback_files_and_sample_grids(tmp_path, monkeypatch):
    import sys
    import types

    from PIL import Image

    scalars = []

    class FakeWriter:
        def __init__(self, log_dir):
            self.log_dir = log_dir

        def add_scalar(self, key, value, step):
            scalars.append((key, value, step))

        def close(self):
            pass

    fake_module = types.SimpleNamespace(SummaryWriter=FakeWriter)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake_module)
    run = train(toy_config(tmp_path, steps=4, log_every=2, sample_every=2, tensorboard=True,
                           sample_seeds="0-5"), dataset=ToyDataset())
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [2, 4]
    assert {"kimg", "img_per_s", "loss/net", "net/mse", "lr/net", "ema_beta"} <= set(lines[0])
    assert ("loss/net", lines[1]["loss/net"], 4) in scalars
    grids = sorted(p.name for p in (run / "samples").iterdir())
    assert grids == ["step-000002.png", "step-000004.png"]
    with Image.open(run / "samples" / grids[0]) as im:
        assert im.size == (3 * 10 + 2, 2 * 10 + 2)  # 6 seeds of 8 px in a 3x2 grid, 2 px padding
    config = json.loads((run / "config.json").read_text())
    assert (config["sampled_player"], config["num_classes"], config["resolution"], config["channels"]) == \
        ("net", 4, 8, 3)
    assert config["arch"] == "toy" and config["net"]["width"] == 4


def test_loader_workers_keep_the_order(tmp_path):
    a = train(toy_config(tmp_path / "w0", steps=2, workers=0), dataset=ToyDataset())
    b = train(toy_config(tmp_path / "w2", steps=2, workers=2), dataset=ToyDataset())
    assert_same(weights(a, 2), weights(b, 2))


def _unresolved(value, where=""):
    """Paths in a config.json whose value is "auto"."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _unresolved(v, f"{where}.{k}")]
    return [where] if value == "auto" else []


def test_config_json_records_the_values_used(tmp_path, capsys):
    """Unset engine settings are resolved (device, micro-batch, loader workers) and recorded as such; a
    resume re-resolves the machine's own (workers) and carries the rest."""
    run = train(toy_config(tmp_path / "run", steps=2, batch=8, device="auto"), dataset=ToyDataset())
    config = json.loads((run / "config.json").read_text())
    assert not _unresolved(config)
    assert (config["device"], config["batch_per_device"], config["workers"], config["precision"]) == \
        ("cpu", 8, 0, "fp32")
    train(toy_config(tmp_path / "acc", steps=2, batch=8, batch_per_device=2, workers=1), dataset=ToyDataset())
    again = train({"out": str(tmp_path / "acc"), "resume": True, "steps": 3}, dataset=ToyDataset())
    config = json.loads((again / "config.json").read_text())
    assert (config["batch_per_device"], config["workers"]) == (2, 0)


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import genzoo.train.checkpoint as ck

    original, calls = ck.write_optimizer, []

    def full_disk(path, state):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        original(path, state)

    monkeypatch.setattr(ck, "write_optimizer", full_disk)
    with pytest.raises(UserError, match=r"checkpoint-000004: cannot write the checkpoint .*No space left.*"
                                        r"checkpoint-000002 is intact"):
        train(toy_config(tmp_path, steps=6), dataset=ToyDataset())
    assert sorted(p.name for p in tmp_path.iterdir() if "checkpoint" in p.name) == ["checkpoint-000002"]
    ck.read_checkpoint(tmp_path / "checkpoint-000002")


def _raise_signal_at_step_2(monkeypatch, signum: int) -> None:
    from test_train_toy import ToyObjective

    original = ToyObjective.after_update

    def after_update(self, player, step):
        original(self, player, step)
        if step == 2:
            signal.raise_signal(signum)

    monkeypatch.setattr(ToyObjective, "after_update", after_update)


def test_sigterm_finishes_the_step_and_saves(tmp_path, monkeypatch, capsys):
    _raise_signal_at_step_2(monkeypatch, signal.SIGTERM)
    before = signal.getsignal(signal.SIGTERM)
    config = toy_config(tmp_path, steps=50, checkpoint_every=100)
    # the stop is raised after the save, so a caller (the demo) cannot take the run for a finished one
    with pytest.raises(Terminated):
        train(config, dataset=ToyDataset())
    run = Path(config["out"])
    assert [p.name for p in run.glob("checkpoint-*")] == ["checkpoint-000003"]
    assert "stopped by SIGTERM at step 3" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before


def test_an_ignored_sigint_stays_ignored(tmp_path, monkeypatch):
    """A background job (nohup, `cmd &`) starts with SIGINT ignored; training must not take it up."""
    _raise_signal_at_step_2(monkeypatch, signal.SIGINT)
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        run = train(toy_config(tmp_path, steps=5, checkpoint_every=100), dataset=ToyDataset())
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
    assert [p.name for p in run.glob("checkpoint-*")] == ["checkpoint-000005"]
