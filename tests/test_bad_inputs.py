"""The bad-input corpus (issue #16): every command and the Python API refuse bad input with exit code 2
and one line on stderr, never a traceback, and never change a file on disk.

The tiny model, sample files and folders are built once per module; each case runs ``genzoo.cli.main``
in-process and compares every file of the module's folder (names and bytes) before and after.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import genzoo
from genzoo.cli import main
from genzoo.errors import UserError

TINY_TRAIN = ["--family", "diffusion", "--arch", "ddpmpp", "--data", "shapes:8?count=16", "--batch", "4",
              "--model-channels", "8", "--num-blocks", "1", "--channel-mult", "1", "--attn-res", "",
              "--sample-every", "0", "--no-tensorboard", "--log-every", "1"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A trained tiny class-conditional diffusion run (16 classes, 8 px) and the files the cases use."""
    root = tmp_path_factory.mktemp("corpus")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", *TINY_TRAIN, "--out", str(root / "run"), "--steps", "2",
                     "--checkpoint-every", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    ckpt = root / "run" / "checkpoint-000002"
    rng = np.random.default_rng(0)
    np.savez(root / "existing.npz", arr_0=rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8))
    (root / "existing.png").write_bytes(b"not really a png, but a user's file that must survive")
    (root / "existing.json").write_text('{"user": "data"}\n')
    np.savez(root / "s16.npz", arr_0=rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8))
    np.savez(root / "ref8.npz", arr_0=rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8))
    np.savez(root / "one.npz", arr_0=rng.integers(0, 256, (1, 8, 8, 3), dtype=np.uint8))
    np.savez(root / "five.npz", arr_0=rng.integers(0, 256, (4, 8, 8, 5), dtype=np.uint8))
    np.savez(root / "empty.npz", arr_0=np.zeros((0, 8, 8, 3), dtype=np.uint8))
    np.savez(root / "neglabel.npz", arr_0=rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8),
             arr_1=np.array([0, -1, 1]))
    (root / "notes.txt").write_text("not an npz\n")
    from PIL import Image

    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / "img8.png")
    Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8)).save(root / "mask4.png")
    (root / "folder").mkdir()
    (root / "folder" / "user-file.txt").write_text("someone else's\n")
    for name, net in (("netlist", [1, 2]), ("netnull", None)):
        shutil.copytree(ckpt, root / name)
        config = json.loads((root / name / "config.json").read_text())
        config["net"] = net
        (root / name / "config.json").write_text(json.dumps(config))
    shutil.copytree(ckpt, root / "nanmodel")
    for weights in ("model", "ema"):
        state = load_file(str(root / "nanmodel" / f"{weights}.safetensors"))
        key = sorted(state)[0]
        state[key] = torch.full_like(state[key], float("nan"))
        save_file(state, str(root / "nanmodel" / f"{weights}.safetensors"))
    (root / "netlist.toml").write_text("net = [1, 2]\n")
    (root / "negsteps.toml").write_text("steps = -3\n")
    (root / "nanlr.toml").write_text("lr = nan\nsteps = 1\n")
    return root


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def T(*more):  # a train command into a fresh run directory
    return ["train", *TINY_TRAIN, "--out", "{root}/newrun", *more]


def S(*more):  # a sample command over the existing output
    return ["sample", "--ckpt", "{root}/run", "--seeds", "0-3", "--steps", "2", "--out",
            "{root}/existing.npz",
            *more]


def E(*more):  # an eval command
    return ["eval", "--features", "shapes", "--out", "{root}/existing.json", *more]


def ED(op, *more):  # an edit command
    images = [] if op == "interpolate" else ["--image", "{root}/img8.png"]
    return ["edit", op, "--ckpt", "{root}/run", *images, "--out", "{root}/folder", "--steps", "2", *more]


CASES = {
    # ------------------------------------------------------------------ train
    "train-steps-negative": T("--steps", "-5"),
    "train-steps-zero": T("--steps", "0"),
    "train-steps-text": T("--steps", "ten"),
    "train-steps-float": T("--steps", "1.5"),
    "train-minutes-negative": T("--minutes", "-1"),
    "train-minutes-nan": T("--minutes", "nan"),
    "train-minutes-inf": T("--minutes", "inf"),
    "train-keep-last-negative": T("--steps", "1", "--keep-last", "-2"),
    "train-ema-2": T("--steps", "1", "--ema", "2"),
    "train-ema-1": T("--steps", "1", "--ema", "1"),
    "train-ema-negative": T("--steps", "1", "--ema", "-0.1"),
    "train-lr-nan": T("--steps", "1", "--lr", "nan"),
    "train-lr-inf": T("--steps", "1", "--lr", "inf"),
    "train-lr-zero": T("--steps", "1", "--lr", "0"),
    "train-lr-negative": T("--steps", "1", "--lr", "-1e-3"),
    "train-lr-text": T("--steps", "1", "--lr", "fast"),
    "train-channel-mult-text": T("--steps", "1", "--channel-mult", "a,b"),
    "train-channel-mult-zero": T("--steps", "1", "--channel-mult", "0,1"),
    "train-attn-res-text": T("--steps", "1", "--attn-res", "x"),
    "train-attn-res-negative": T("--steps", "1", "--attn-res", "-4"),
    "train-batch-zero": T("--steps", "1", "--batch", "0"),
    "train-batch-per-device-negative": T("--steps", "1", "--batch-per-device", "-1"),
    "train-batch-not-multiple": T("--steps", "1", "--batch", "4", "--batch-per-device", "3"),
    "train-checkpoint-every-zero": T("--steps", "1", "--checkpoint-every", "0"),
    "train-log-every-zero": T("--steps", "1", "--log-every", "0"),
    "train-sample-every-negative": T("--steps", "1", "--sample-every", "-1"),
    "train-sample-seeds-backwards": T("--steps", "1", "--sample-seeds", "5-2"),
    "train-seed-negative": T("--steps", "1", "--seed", "-1"),
    "train-resolution-zero": T("--steps", "1", "--resolution", "0"),
    "train-workers-negative": T("--steps", "1", "--workers", "-1"),
    "train-grad-clip-zero": T("--steps", "1", "--grad-clip", "0"),
    "train-max-nonfinite-zero": T("--steps", "1", "--max-nonfinite", "0"),
    "train-ema-halflife-negative": T("--steps", "1", "--ema-halflife-kimg", "-1"),
    "train-ema-rampup-negative": T("--steps", "1", "--ema-rampup", "-1"),
    "train-warmup-nan": T("--steps", "1", "--lr-warmup-kimg", "nan"),
    "train-label-dropout-above-1": T("--steps", "1", "--label-dropout", "1.5"),
    "train-dropout-1": T("--steps", "1", "--dropout", "1"),
    "train-p-std-zero": T("--steps", "1", "--p-std", "0"),
    "train-augment-2": T("--steps", "1", "--augment", "2"),
    "train-model-channels-zero": T("--steps", "1", "--model-channels", "0"),
    "train-num-blocks-zero": T("--steps", "1", "--num-blocks", "0"),
    "train-precision-fp16-cpu": T("--steps", "1", "--precision", "fp16", "--device", "cpu"),
    "train-unknown-family": ["train", "--family", "nosuch", "--data", "shapes:8", "--out", "{root}/newrun",
                             "--steps", "1"],
    "train-unknown-flag": T("--steps", "1", "--no-such-flag", "3"),
    "train-no-length": T(),
    "train-digits-1": ["train", "--family", "diffusion", "--data", "digits:1", "--out", "{root}/newrun",
                       "--steps", "1"],
    "train-shapes-2": ["train", "--family", "diffusion", "--data", "shapes:2", "--out", "{root}/newrun",
                       "--steps", "1"],
    "train-out-is-a-file": ["train", *TINY_TRAIN, "--out", "{root}/existing.json", "--steps", "1"],
    "train-existing-run-without-resume": ["train", *TINY_TRAIN, "--out", "{root}/run", "--steps", "3"],
    "train-config-net-list": T("--steps", "1", "--config", "{root}/netlist.toml"),
    "train-config-negative-steps": T("--config", "{root}/negsteps.toml"),
    "train-config-nan-lr": T("--config", "{root}/nanlr.toml"),
    "train-config-missing": T("--steps", "1", "--config", "{root}/missing.toml"),
    "train-gan-betas": ["train", "--family", "gan", "--data", "shapes:8", "--out", "{root}/newrun", "--steps",
                        "1", "--betas", "2,0"],
    "train-gan-g-lr": ["train", "--family", "gan", "--data", "shapes:8", "--out", "{root}/newrun", "--steps",
                       "1", "--g-lr", "-1"],
    "train-gan-d-steps": ["train", "--family", "gan", "--data", "shapes:8", "--out", "{root}/newrun",
                          "--steps", "1", "--d-steps", "0"],
    "train-gan-z-dim": ["train", "--family", "gan", "--data", "shapes:8", "--out", "{root}/newrun", "--steps",
                        "1", "--z-dim", "0"],
    "train-cm-mu0": ["train", "--family", "consistency", "--data", "shapes:8", "--out", "{root}/newrun",
                     "--steps", "1", "--mu0", "2"],
    "train-cm-num-scales": ["train", "--family", "consistency", "--data", "shapes:8", "--out",
                            "{root}/newrun",
                            "--steps", "1", "--num-scales", "0"],
    "train-cm-sigma-data": ["train", "--family", "consistency", "--data", "shapes:8", "--out",
                            "{root}/newrun", "--steps", "1", "--sigma-data", "0"],
    # ------------------------------------------------------------------ sample
    "sample-class-negative": S("--class", "-5"),
    "sample-class-99": S("--class", "99"),
    "sample-class-16": S("--class", "16"),
    "sample-two-classes-four-seeds": S("--class", "1", "--class", "2"),
    "sample-guidance-nan": S("--guidance", "nan"),
    "sample-guidance-inf": S("--guidance", "inf"),
    "sample-sigma-min-above-max": S("--sigma-min", "100", "--sigma-max", "1"),
    "sample-sigma-min-zero": S("--sigma-min", "0"),
    "sample-device-cuda": S("--device", "cuda"),
    "sample-device-nonsense": S("--device", "toaster"),
    "sample-grid-txt": S("--grid", "{root}/x.txt"),
    "sample-grid-folder": S("--grid", "{root}/folder"),
    "sample-seeds-backwards": S("--seeds", "5-2"),
    "sample-seeds-text": S("--seeds", "abc"),
    "sample-seeds-empty": S("--seeds", ","),
    "sample-batch-zero": S("--batch", "0"),
    "sample-steps-zero": S("--steps", "0"),
    "sample-churn-negative": S("--churn", "-1"),
    "sample-rho-zero": S("--rho", "0"),
    "sample-s-noise-nan": S("--s-noise", "nan"),
    "sample-eta-negative": S("--eta", "-1"),
    "sample-truncation-zero": S("--truncation", "0"),
    "sample-standing-stats-negative": S("--standing-stats", "-1"),
    "sample-out-txt": ["sample", "--ckpt", "{root}/run", "--steps", "2", "--out", "{root}/notes.txt"],
    "sample-out-folder": ["sample", "--ckpt", "{root}/run", "--steps", "2", "--out", "{root}/folder"],
    "sample-no-output": ["sample", "--ckpt", "{root}/run", "--steps", "2"],
    "sample-ckpt-missing": ["sample", "--ckpt", "{root}/missing", "--out", "{root}/existing.npz"],
    "sample-ckpt-foreign-folder": ["sample", "--ckpt", "{root}/folder", "--out", "{root}/existing.npz"],
    "sample-ckpt-nan-weights": ["sample", "--ckpt", "{root}/nanmodel", "--out", "{root}/existing.npz"],
    "sample-ckpt-net-list": ["sample", "--ckpt", "{root}/netlist", "--out", "{root}/existing.npz"],
    "sample-ckpt-net-null": ["sample", "--ckpt", "{root}/netnull", "--out", "{root}/existing.npz"],
    "sample-unknown-sampler": S("--sampler", "nosuch"),
    "sample-missing-ckpt-flag": ["sample", "--out", "{root}/existing.npz"],
    # ------------------------------------------------------------------ eval
    "eval-one-image": E("--samples", "{root}/one.npz", "--ref", "{root}/ref8.npz"),
    "eval-five-channels": E("--samples", "{root}/five.npz", "--ref", "{root}/ref8.npz"),
    "eval-pr-count-zero": E("--samples", "{root}/ref8.npz", "--ref", "{root}/ref8.npz", "--pr-count", "0"),
    "eval-out-missing-folder": ["eval", "--features", "shapes", "--samples", "{root}/ref8.npz", "--ref",
                                "{root}/ref8.npz", "--out", "{root}/missing/metrics.json"],
    "eval-out-folder": ["eval", "--features", "shapes", "--samples", "{root}/ref8.npz", "--ref",
                        "{root}/ref8.npz", "--out", "{root}/folder"],
    "eval-16px-vs-8px": E("--samples", "{root}/s16.npz", "--ref", "{root}/ref8.npz"),
    "eval-16px-vs-shapes-8": E("--samples", "{root}/s16.npz", "--ref", "shapes:8"),
    "eval-samples-missing": E("--samples", "{root}/missing.npz", "--ref", "{root}/ref8.npz"),
    "eval-samples-not-npz": E("--samples", "{root}/notes.txt", "--ref", "{root}/ref8.npz"),
    "eval-num-samples-zero": E("--samples", "{root}/ref8.npz", "--ref", "{root}/ref8.npz", "--num-samples",
                               "0"),
    "eval-ref-count-negative": E("--samples", "{root}/ref8.npz", "--ref", "shapes:8", "--ref-count", "-1"),
    "eval-batch-zero": E("--samples", "{root}/ref8.npz", "--ref", "{root}/ref8.npz", "--batch", "0"),
    "eval-unknown-metric": E("--samples", "{root}/ref8.npz", "--ref", "{root}/ref8.npz", "--metrics",
                             "nosuch"),
    "eval-unknown-features": ["eval", "--features", "nosuch", "--samples", "{root}/ref8.npz", "--ref",
                              "{root}/ref8.npz"],
    "eval-nfe-nan": E("--samples", "{root}/ref8.npz", "--ref", "{root}/ref8.npz", "--nfe", "nan"),
    "eval-device-cuda": E("--samples", "{root}/ref8.npz", "--ref", "{root}/ref8.npz", "--device", "cuda"),
    "eval-save-ref-txt": E("--samples", "{root}/ref8.npz", "--ref", "{root}/ref8.npz", "--save-ref",
                           "{root}/ref.txt"),
    # ------------------------------------------------------------------ edit
    "edit-superres-factor-zero": ED("superres", "--factor", "0"),
    "edit-superres-factor-3": ED("superres", "--factor", "3"),
    "edit-class-99": ED("denoise", "--sigma", "0.1", "--class", "99"),
    "edit-class-negative": ED("denoise", "--sigma", "0.1", "--class", "-1"),
    "edit-out-names-a-file": ["edit", "denoise", "--ckpt", "{root}/run", "--image", "{root}/img8.png",
                              "--sigma", "0.1", "--out", "{root}/existing.json"],
    "edit-interpolate-num-1": ED("interpolate", "--num", "1"),
    "edit-interpolate-three-seeds": ED("interpolate", "--seeds", "1,2,3"),
    "edit-steps-zero": ED("denoise", "--sigma", "0.1", "--steps", "0"),
    "edit-stroke-sigma-negative": ED("stroke", "--sigma", "-1"),
    "edit-denoise-sigma-nan": ED("denoise", "--sigma", "nan"),
    "edit-image-missing": ["edit", "colorize", "--ckpt", "{root}/run", "--image", "{root}/missing.png",
                           "--out", "{root}/folder"],
    "edit-image-not-an-image": ["edit", "colorize", "--ckpt", "{root}/run", "--image", "{root}/notes.txt",
                                "--out", "{root}/folder"],
    "edit-device-cuda": ED("colorize", "--device", "cuda"),
    "edit-inpaint-mask-size": ED("inpaint", "--mask", "{root}/mask4.png"),
    "edit-seeds-text": ED("colorize", "--seeds", "x"),
    "edit-seeds-count": ED("colorize", "--seeds", "1,2"),
    "edit-ckpt-nan": ["edit", "colorize", "--ckpt", "{root}/nanmodel", "--image", "{root}/img8.png", "--out",
                      "{root}/folder"],
    "edit-no-operation": ["edit"],
    # ------------------------------------------------------------------ data
    "data-info-grid-txt": ["data", "info", "shapes:8?count=4", "--grid", "{root}/g.txt"],
    "data-info-grid-count-zero": ["data", "info", "shapes:8?count=4", "--grid", "{root}/g.png",
                                  "--grid-count",
                                  "0"],
    "data-info-digits-1": ["data", "info", "digits:1"],
    "data-info-shapes-2": ["data", "info", "shapes:2"],
    "data-info-shapes-text": ["data", "info", "shapes:x"],
    "data-info-unknown-kind": ["data", "info", "nosuch:thing"],
    "data-info-resolution-zero": ["data", "info", "shapes", "--resolution", "0"],
    "data-info-missing-npz": ["data", "info", "npz:{root}/missing.npz"],
    "data-export-empty-zip": ["data", "export", "npz:{root}/empty.npz", "{root}/out.zip"],
    "data-export-empty-npz": ["data", "export", "npz:{root}/empty.npz", "{root}/out.npz"],
    "data-export-negative-label": ["data", "export", "npz:{root}/neglabel.npz", "{root}/out.zip"],
    "data-export-negative-label-npz": ["data", "export", "npz:{root}/neglabel.npz", "{root}/existing.npz"],
    "data-export-to-folder": ["data", "export", "shapes:8?count=4", "{root}/folder"],
    "data-export-txt": ["data", "export", "shapes:8?count=4", "{root}/out.txt"],
    "data-export-max-items-zero": ["data", "export", "shapes:8?count=4", "{root}/out.zip", "--max-items",
                                   "0"],
    "data-export-batch-zero": ["data", "export", "shapes:8?count=4", "{root}/out.zip", "--batch", "0"],
    "data-export-workers-negative": ["data", "export", "shapes:8?count=4", "{root}/out.zip", "--workers",
                                     "-1"],
    # ------------------------------------------------------------------ convert, compare, features, upsample
    "convert-into-foreign-folder": ["convert", "--from", "guided-diffusion", "{root}/notes.txt",
                                    "{root}/folder"],
    "convert-unknown-source": ["convert", "--from", "nosuch", "{root}/notes.txt", "{root}/newmodel"],
    "convert-input-not-weights": ["convert", "--from", "guided-diffusion", "{root}/notes.txt",
                                  "{root}/newmodel"],
    "convert-dangling-flag": ["convert", "--from", "guided-diffusion", "{root}/notes.txt", "{root}/newmodel",
                              "--num_channels"],
    "convert-out-is-a-file": ["convert", "--from", "guided-diffusion", "{root}/notes.txt",
                              "{root}/existing.json"],
    "compare-missing": ["compare", "{root}/missing", "--out", "{root}/cmp"],
    "compare-out-is-a-file": ["compare", "{root}/existing.json", "--out", "{root}/existing.png"],
    "features-count-zero": ["features", "train", "--count", "0", "--out", "{root}/c.safetensors"],
    "features-steps-negative": ["features", "train", "--steps", "-1", "--out", "{root}/c.safetensors"],
    "features-out-txt": ["features", "train", "--out", "{root}/c.txt"],
    "features-out-folder": ["features", "train", "--out", "{root}/folder"],
    "upsample-input-missing": ["upsample", "--upsampler", "{root}/run", "--input", "{root}/missing.npz",
                               "--out", "{root}/existing.npz"],
    "upsample-out-txt": ["upsample", "--upsampler", "{root}/run", "--input", "{root}/ref8.npz", "--out",
                         "{root}/notes.txt"],
    "upsample-batch-zero": ["upsample", "--upsampler", "{root}/run", "--input", "{root}/ref8.npz", "--out",
                            "{root}/existing.npz", "--batch", "0"],
    "upsample-seed-negative": ["upsample", "--upsampler", "{root}/run", "--input", "{root}/ref8.npz", "--out",
                               "{root}/existing.npz", "--seed", "-1"],
    "upsample-not-an-upsampler": ["upsample", "--upsampler", "{root}/run", "--input", "{root}/ref8.npz",
                                  "--out", "{root}/existing.npz"],
    "compare-run-without-metrics": ["compare", "{root}/run", "--out", "{root}/cmp"],
    "unknown-command": ["nosuch"],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_cli_input_exits_2_with_one_line_and_changes_nothing(world, name, capsys):
    argv = [a.replace("{root}", str(world)) for a in CASES[name]]
    before = snapshot(world)
    capsys.readouterr()
    assert main(argv) == 2, name
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err and "error" in lines[0]
    assert snapshot(world) == before


API_CASES = {
    "load-net-list": lambda w: genzoo.load(w / "netlist"),
    "load-net-null": lambda w: genzoo.load(w / "netnull"),
    "load-nan-weights": lambda w: genzoo.load(w / "nanmodel"),
    "load-missing": lambda w: genzoo.load(w / "missing"),
    "sample-two-labels-four-seeds": lambda w: genzoo.sample(genzoo.load(w / "run"), "0-3", class_labels=[1,
                                                                                                         2],
                                                            steps=2),
    "sample-label-99": lambda w: genzoo.sample(genzoo.load(w / "run"), "0-3", class_labels=99, steps=2),
    "sample-seeds-backwards": lambda w: genzoo.sample(genzoo.load(w / "run"), "3-0", steps=2),
    "train-steps-negative": lambda w: genzoo.train({"family": "diffusion", "data": "shapes:8",
                                                    "out": str(w / "newrun"), "steps": -5}),
    "train-lr-nan": lambda w: genzoo.train({"family": "diffusion", "data": "shapes:8",
                                            "out": str(w / "newrun"),
                                            "steps": 1, "lr": float("nan")}),
    "train-net-list": lambda w: genzoo.train({"family": "diffusion", "data": "shapes:8",
                                              "out": str(w / "newrun"), "steps": 1, "net": [1, 2]}),
    "train-ema-2": lambda w: genzoo.train({"family": "diffusion", "data": "shapes:8",
                                           "out": str(w / "newrun"),
                                           "steps": 1, "ema": 2}),
    "evaluate-one-image": lambda w: genzoo.evaluate(w / "one.npz", w / "ref8.npz", features="shapes"),
    "evaluate-16-vs-8": lambda w: genzoo.evaluate(w / "s16.npz", w / "ref8.npz", features="shapes"),
}


@pytest.mark.parametrize("name", sorted(API_CASES))
def test_bad_api_input_raises_one_line_user_error(world, name):
    before = snapshot(world)
    with pytest.raises(UserError) as info:
        API_CASES[name](world)
    assert "\n" not in str(info.value) and str(info.value)
    assert snapshot(world) == before


def test_the_corpus_is_large():
    assert len(CASES) + len(API_CASES) >= 100


def test_a_real_process_prints_one_line(world):
    argv = [sys.executable, "-m", "genzoo", *[a.replace("{root}", str(world)) for a in S("--class", "99")]]
    before = snapshot(world)
    plain = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 2 and plain.stderr.strip().count("\n") == 0, plain.stderr
    assert "--class 99" in plain.stderr and "Traceback" not in plain.stderr
    assert snapshot(world) == before


def test_genzoo_debug_shows_the_traceback_of_a_user_error(world, monkeypatch, capsys):
    monkeypatch.setenv("GENZOO_DEBUG", "1")
    assert main([a.replace("{root}", str(world)) for a in S("--class", "99")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("genzoo sample: error: --class 99")


def test_a_genuine_bug_keeps_its_traceback(monkeypatch):
    import genzoo.cli.data as data_cli

    def broken(args):
        raise RuntimeError("a bug in genzoo")

    monkeypatch.setattr(data_cli, "run_info", broken)
    with pytest.raises(RuntimeError, match="a bug in genzoo"):
        main(["data", "info", "shapes:8"])


def test_eval_compares_other_resolutions_only_when_asked(world, tmp_path, capsys):
    argv = ["eval", "--features", "shapes", "--metrics", "fid", "--samples", str(world / "s16.npz"), "--ref",
            str(world / "ref8.npz"), "--out", str(tmp_path / "m.json")]
    assert main(argv) == 2 and "pass --resize" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()
    assert main([*argv, "--resize"]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["fd"] > 0
