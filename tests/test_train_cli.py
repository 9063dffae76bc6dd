"""`genzoo train`: flags, config files and their precedence, errors in one line with exit code 2."""

from __future__ import annotations

import json

import pytest
import torch
from test_train_toy import register

from genzoo.cli import main


@pytest.fixture(autouse=True)
def toy_family(monkeypatch):
    register(monkeypatch)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def base_args(out):
    return ["train", "--family", "toy", "--data", "shapes:8?count=16", "--out", str(out), "--log-every", "1",
            "--sample-every", "0", "--no-tensorboard"]


def test_config_file_under_explicit_flags(tmp_path):
    config_file = tmp_path / "run.toml"
    config_file.write_text('batch = 4\nsteps = 2\nseed = 5\ntoy-width = 6\nema = 0.9\nema_start = 1\n')
    # --seed 0 is the default value, given explicitly: it must beat the file's 5.
    argv = base_args(tmp_path / "run") + ["--config", str(config_file), "--steps", "3", "--seed", "0"]
    assert main(argv) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["batch"], config["steps"], config["seed"], config["toy_width"]) == (4, 3, 0, 6)
    assert (config["ema"], config["ema_start"]) == (0.9, 1) and "ema_halflife_kimg" not in config
    assert config["net"]["width"] == 6 and config["data"] == "shapes:8?count=16"
    state = json.loads((tmp_path / "run" / "checkpoint-000003" / "state.json").read_text())
    assert state["images_seen"] == 12


def test_flags_alone_and_ema_default(tmp_path):
    assert main(base_args(tmp_path / "r") + ["--steps", "1", "--batch", "2", "--resolution", "8"]) == 0
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["ema_halflife_kimg"] == 500.0 and config["ema_rampup"] == 0.05 and config["resolution"] == 8


@pytest.mark.parametrize("extra, message", [
    (["--steps", "1", "--config", "missing.toml"], "--config missing.toml: no such file"),
    (["--batch", "2"], "--steps N or --minutes M"),
    (["--steps", "1", "--device", "cuda:0"], "--device cuda:0: CUDA is not available"),
    (["--steps", "1", "--batch", "0"], "argument --batch: expected an integer >= 1"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, extra, message):
    assert main(base_args(tmp_path / "r") + extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("genzoo train: error: ") and message in err[-1]


def test_required_keys_named(tmp_path, capsys):
    assert main(["train", "--family", "toy", "--steps", "1", "--out", str(tmp_path)]) == 2
    assert "--data: required" in capsys.readouterr().err


def test_a_runs_config_json_can_be_fed_back(tmp_path):
    assert main(base_args(tmp_path / "a") + ["--steps", "1", "--batch", "2", "--toy-width", "5"]) == 0
    saved = tmp_path / "a" / "config.json"
    assert main(["train", "--config", str(saved), "--out", str(tmp_path / "b"), "--steps", "2"]) == 0
    again = json.loads((tmp_path / "b" / "config.json").read_text())
    assert (again["toy_width"], again["batch"], again["steps"], again["net"]["width"]) == (5, 2, 2, 5)


def test_resume_needs_only_out_and_steps(tmp_path):
    argv = base_args(tmp_path / "r") + ["--steps", "1", "--batch", "2", "--toy-width", "5", "--lr", "0.5"]
    assert main(argv) == 0
    assert main(["train", "--out", str(tmp_path / "r"), "--resume", "--steps", "2"]) == 0
    config = json.loads((tmp_path / "r" / "checkpoint-000002" / "config.json").read_text())
    assert (config["family"], config["toy_width"], config["lr"], config["batch"], config["steps"]) == \
        ("toy", 5, 0.5, 2, 2)


@pytest.mark.parametrize("family, listed", [("gan", "biggan"), ("diffusion", "ddpmpp")])
def test_unknown_arch_lists_the_names(tmp_path, capsys, family, listed):
    from genzoo.family import family_names

    if family not in family_names():
        pytest.skip(f"the {family} family is not installed")
    argv = ["train", "--family", family, "--arch", "nope", "--data", "shapes:8?count=8",
            "--out", str(tmp_path), "--steps", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--arch" in err and "'nope'" in err and listed in err
