"""What a run records and what each command says before long work (issue #17): config.json holds the
values used, the genzoo and torch versions and the command line; `genzoo --version`."""

import json

import pytest
import torch

import genzoo
from genzoo.cli import main

TINY = ["--family", "diffusion", "--arch", "ddpmpp", "--model-channels", "8", "--num-blocks", "1",
        "--channel-mult", "1", "--attn-res", "", "--data", "shapes:8", "--batch", "4", "--sample-every", "0",
        "--no-tensorboard", "--steps", "1"]


def test_version_names_genzoo_and_torch(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"genzoo {genzoo.__version__} (torch ") and torch.__version__.split("+")[0] in text


def test_config_json_records_versions_command_and_the_device_used(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    summary = next(line for line in err.splitlines() if "on cpu" in line)
    assert summary.startswith("genzoo train: diffusion (edm/ddpmpp) on cpu, 1 process(es), data shapes:8")
    config = json.loads((out / "config.json").read_text())
    assert config["genzoo_version"] == genzoo.__version__ and config["torch_version"] == torch.__version__
    command = config["command_line"]
    assert command.startswith("genzoo train --family diffusion") and "--out" in command
    assert config["device"] == "cpu" and "auto" not in json.dumps(config)
    assert config["precond"] == "edm" and config["loss"] == "edm" and config["lr"] is not None
    assert "truncation" not in config and "g_lr" not in config  # only this family's options
    # a resumed run reads its own config back (the recorded device and provenance are not settings)
    assert main(["train", "--out", str(out), "--resume", "--steps", "2"]) == 0
    assert json.loads((out / "config.json").read_text())["command_line"].endswith("--steps 2")


def test_sample_prints_one_summary_line_with_family_and_settings(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(out), "--seeds", "0-1", "--grid", str(tmp_path / "g.png"),
                 "--steps", "2", "--quiet"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"genzoo sample: {out} (diffusion, edm/ddpmpp) on cpu")
    assert first.endswith("; settings: --steps 2")
