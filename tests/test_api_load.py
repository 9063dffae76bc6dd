"""genzoo.load and `genzoo sample` on the run directories the training engine writes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_train_toy import ToyDataset, register, toy_config

import genzoo
from genzoo.cli import main
from genzoo.errors import UserError
from genzoo.train.engine import train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import genzoo.family

    genzoo.family._FAMILY_MODULES["toy"] = "test_train_toy"  # module scope: undone below
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield train(toy_config(tmp_path_factory.mktemp("api") / "run", steps=4, ema_halflife_kimg=0.01),
                    dataset=ToyDataset())
    finally:
        torch.set_num_threads(threads)
        genzoo.family._FAMILY_MODULES.pop("toy", None)


def test_load_run_checkpoint_ema_and_raw(run):
    model = genzoo.load(run)
    assert genzoo.record_of(model).model_dir.name == "checkpoint-000004" and not model.training
    ema = load_file(str(run / "checkpoint-000004" / "ema.safetensors"))
    raw = load_file(str(run / "checkpoint-000004" / "model.safetensors"))
    assert torch.equal(model.conv1.weight, ema["net.conv1.weight"])
    assert not torch.equal(ema["net.conv1.weight"], raw["net.conv1.weight"])
    assert torch.equal(genzoo.load(run, ema=False).conv1.weight, raw["net.conv1.weight"])
    older = genzoo.load(run / "checkpoint-000002")
    assert genzoo.record_of(older).family == "toy"
    assert genzoo.record_of(older).model_dir.name == "checkpoint-000002"


def test_sample_cli_on_a_run(run, tmp_path, monkeypatch, capsys):
    register(monkeypatch)
    out, grid = tmp_path / "s.npz", tmp_path / "g.png"
    argv = ["sample", "--ckpt", str(run), "--seeds", "0-4", "--batch", "2", "--out", str(out),
            "--grid", str(grid)]
    assert main(argv + ["--toy-scale", "0"]) == 0
    with np.load(out) as f:
        images, labels = f["arr_0"], f["arr_1"]
    assert images.shape == (5, 8, 8, 3) and images.dtype == np.uint8 and labels.shape == (5,)
    assert (images == 128).all()  # --toy-scale 0 reached family.sample: every pixel is 0 -> 127.5 -> 128
    assert grid.is_file()
    a, _, _ = genzoo.sample(genzoo.load(run), "0-4", batch_size=5)
    b, _, _ = genzoo.sample(genzoo.load(run), "0-4", batch_size=2)
    assert torch.equal(a, b)


def test_sample_compile_without_a_compiler_warns_and_samples_the_same_images(run, tmp_path, monkeypatch):
    from genzoo.nets import compiled

    register(monkeypatch)
    monkeypatch.setattr(compiled, "compile_unavailable", lambda device: "no C++ compiler found (set CXX)")
    paths = [tmp_path / "a.npz", tmp_path / "b.npz"]
    argv = ["sample", "--ckpt", str(run), "--seeds", "0-2", "--out"]
    assert main(argv + [str(paths[0])]) == 0
    with pytest.warns(UserWarning, match="^--compile: no C"):
        assert main(argv + [str(paths[1]), "--compile"]) == 0
    with np.load(paths[0]) as a, np.load(paths[1]) as b:
        assert np.array_equal(a["arr_0"], b["arr_0"])


def test_load_errors_name_the_file(run, tmp_path):
    with pytest.raises(UserError, match="no such run, checkpoint or model directory"):
        genzoo.load(tmp_path / "nothing")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"family": "toy", "net": {"channels": 3, "num_classes": 4, '
                                        '"width": 5}}')
    (broken / "model.safetensors").write_bytes((run / "checkpoint-000004" / "model.safetensors").read_bytes())
    with pytest.raises(UserError, match=r"broken/model.safetensors: does not match the model.*shape"):
        genzoo.load(broken)


def test_record_of_a_run_a_checkpoint_and_a_model_directory(run, tmp_path):
    """genzoo.load describes what it opened in one typed record: family, config, where it came from."""
    import shutil

    from genzoo.checkpoints import read_json

    record = genzoo.record_of(genzoo.load(run))
    newest = run / "checkpoint-000004"
    assert (record.family, record.source, record.path, record.model_dir) == ("toy", "run", run, newest)
    assert (record.weights_file, record.source_format, record.ema) == (newest / "ema.safetensors", "genzoo",
                                                                       True)
    assert record.config == read_json(newest / "config.json") and record.arch == "toy"
    raw = genzoo.record_of(genzoo.load(newest, ema=False))
    assert (raw.source, raw.path, raw.weights_file, raw.ema) == ("checkpoint", newest,
                                                                 newest / "model.safetensors", False)
    copy = tmp_path / "model"  # a model directory (as genzoo convert or phema write): no training state
    copy.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(newest / name, copy / name)
    plain = genzoo.record_of(genzoo.load(copy))
    assert (plain.source, plain.model_dir, plain.weights_file) == ("model", copy, copy / "model.safetensors")
    with pytest.raises(dataclasses.FrozenInstanceError):
        plain.family = "gan"


def test_a_loaded_model_carries_no_attributes_from_outside(run):
    model = genzoo.load(run)
    assert not [a for a in ("config", "model_dir", "weights_file", "_standing_key") if hasattr(model, a)]
    with pytest.raises(TypeError, match="not a model loaded by genzoo.load"):
        genzoo.record_of(torch.nn.Linear(1, 1))
