"""`sample` writes its cost beside the samples, `eval` records it (paths relative to metrics.json), and
`compare` over CLI runs draws the quality-versus-cost plots and says what it left out."""

from __future__ import annotations

import json

import pytest
from test_train_toy import ToyNet, register

from genzoo.checkpoints import save_model_dir
from genzoo.cli import main


def toy_model(path, width=2, resolution=8):
    net = {"channels": 3, "num_classes": 4, "width": width}
    config = {"family": "toy", "net": net, "resolution": resolution, "channels": 3, "num_classes": 4}
    weights = {"net." + k: v for k, v in ToyNet(**net).state_dict().items()}
    return save_model_dir(path, config, {"model": weights})


def test_sample_cost_eval_and_compare(tmp_path, monkeypatch, capsys):
    register(monkeypatch)
    model = toy_model(tmp_path / "model")
    run = tmp_path / "runs" / "toy"
    assert main(["sample", "--ckpt", str(model), "--seeds", "0-9", "--batch", "4",
                 "--out", str(run / "s.npz"), "--quiet"]) == 0
    cost = json.loads((run / "s.cost.json").read_text())
    # ToyNet: conv 3->2 and conv 2->3, 3x3 kernels, at 8x8; 2 FLOPs per multiply-add, one evaluation
    assert cost["flops_per_image"] == 2 * (3 * 2 * 9 * 64) * 2
    params = (3 * 2 * 9 + 2) + (2 * 3 * 9 + 3) + 4 * 2
    assert cost["parameters"] == params and cost["nfe"] == 1 and cost["params_x_nfe"] == params
    assert cost["num_images"] == 10 and cost["batch_size"] == 4 and cost["images_per_s"] > 0
    assert cost["latency_s"] > 0 and cost["peak_memory_mb"] > 0 and cost["sampler"]["toy_scale"] == 1.0
    assert main(["sample", "--ckpt", str(model), "--seeds", "0-9", "--out", str(run / "png"), "--quiet"]) == 0
    assert json.loads((run / "png" / "cost.json").read_text())["flops_per_image"] == cost["flops_per_image"]

    assert main(["eval", "--samples", str(run / "s.npz"), "--ref", "shapes:8?count=20",
                 "--features", "shapes", "--metrics", "fid", "--ref-count", "20"]) == 0
    record = json.loads((run / "metrics.json").read_text())
    assert record["samples"] == "s.npz" and record["cost"] == "s.cost.json"
    for key in ("nfe", "images_per_s", "latency_s", "flops_per_image", "params_x_nfe"):
        assert record[key] == cost[key], key
    other = tmp_path / "runs" / "nocost"
    other.mkdir()
    (other / "metrics.json").write_text(json.dumps({"model": "nocost", "fd": 3.0, "features": "shapes"}))
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "runs"), "--out", str(tmp_path / "cmp"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    for plot in ("quality_vs_nfe.png", "quality_vs_speed.png", "quality_vs_flops.png"):
        assert (tmp_path / "cmp" / plot).is_file()
    assert "skipped: nocost" in printed and "no NFE; left out of quality_vs_nfe.png" in printed
    assert "no images/s; left out of quality_vs_speed.png" in printed
    assert "skipped: toy" not in printed


@pytest.mark.parametrize("quiet", [False, True])
def test_progress_bars_only_in_a_terminal_unless_quiet(tmp_path, quiet):
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios
    from pathlib import Path

    model = tmp_path / "model"
    driver = tmp_path / "driver.py"
    driver.write_text(f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                      "import test_train_toy; test_train_toy.register()\n"
                      "from test_sample_cost import toy_model\n"
                      f"toy_model({str(model)!r})\n"
                      "from genzoo.cli import main; sys.exit(main(sys.argv[1:]))\n")
    argv = [sys.executable, str(driver), "sample", "--ckpt", str(model), "--seeds", "0-9", "--batch", "2",
            "--out", str(tmp_path / "s.npz")] + (["--quiet"] if quiet else [])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    piped = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and "img/s" not in piped.stderr and "10/10" not in piped.stderr
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a 120-column terminal
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert proc.wait(timeout=120) == 0
    drawn = b"10/10" in seen and b"img/s" in seen
    assert drawn != quiet, seen.decode(errors="replace")[-500:]


def test_eval_blocks_equal_separate_evaluations_of_each_block(tmp_path, capsys):
    import numpy as np
    import torch

    from genzoo.io import NpzWriter
    from genzoo.metrics import Reference, evaluate

    class Pool(torch.nn.Module):  # a stand-in feature network: channel means and one std
        def forward(self, images):
            x = images.double()
            return {"pool": torch.cat([x.mean((2, 3)), x.std((2, 3))[:, :1]], 1),
                    "logits": x.mean((2, 3)) / 32}

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (23, 4, 4, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, 23)
    ref = Reference(features="shapes", mu=np.full(4, 100.0), sigma=np.eye(4) * 50)
    result = evaluate(images, ref, ["fid", "acc"], features="shapes", extractor=Pool(), labels=labels,
                      batch_size=4, blocks=3)  # blocks of 7 straddle the batches of 4; 2 images left out
    assert result["block_size"] == 7 and len(result["fd_blocks"]) == 3
    for i in range(3):
        alone = evaluate(images[7 * i:7 * (i + 1)], ref, ["fid", "acc"], features="shapes", extractor=Pool(),
                         labels=labels[7 * i:7 * (i + 1)], batch_size=5)
        assert result["fd_blocks"][i] == pytest.approx(alone["fd"], rel=1e-9)
        assert result["accuracy_blocks"][i] == alone["accuracy"]
    values = np.array(result["fd_blocks"])
    assert result["fd_mean"] == pytest.approx(values.mean()) and result["fd_min"] == values.min()
    assert result["fd_block_std"] == pytest.approx(np.sqrt(((values - values.mean()) ** 2).sum() / 2))
    with NpzWriter(tmp_path / "s.npz") as out:
        out.write(images, labels)
    assert main(["eval", "--samples", str(tmp_path / "s.npz"), "--ref", "shapes:4?count=20", "--features",
                 "shapes", "--metrics", "fid", "--ref-count", "20", "--blocks", "2", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "over 2 blocks of 11" in printed and "minimum" in printed
    assert main(["eval", "--samples", str(tmp_path / "s.npz"), "--ref", "shapes", "--features", "shapes",
                 "--metrics", "fid", "--blocks", "0"]) == 2
    assert "--blocks: expected an integer >= 1, got '0'" in capsys.readouterr().err
