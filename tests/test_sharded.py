"""`torchrun -m genzoo sample|eval` with 2 processes (gloo, CPU) equals the 1-process run byte for byte;
PNG-folder samples; memory that does not grow with the number of images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from model_dirs import consistency_model_dir

from genzoo.cli import main

TINY = dict(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="8",
            num_head_channels=16, class_cond=True, num_classes=4, resblock_updown=True)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return consistency_model_dir(tmp_path_factory.mktemp("cm"), TINY)


def child_env():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def torchrun(*argv: str, nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "genzoo", *argv]
    result = subprocess.run(cmd, env=child_env(), capture_output=True, timeout=300, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_two_process_sample_and_eval_equal_one_process(model_dir, tmp_path):
    # 7 seeds in batches of 2: 4 batches, the last short, shared unevenly by the 2 ranks
    sample = ["sample", "--ckpt", str(model_dir), "--seeds", "3-9", "--batch", "2", "--device", "auto"]
    one, two = tmp_path / "one", tmp_path / "two"
    run = torchrun(*sample, "--out", str(two / "s.npz"), "--grid", str(two / "g.png"))
    assert "2 process(es)" in run.stdout and "on cpu" in run.stdout
    assert run.stdout.count("images/s") == 1  # rank 0 alone reports
    assert main([*sample, "--out", str(one / "s.npz"), "--grid", str(one / "g.png")]) == 0
    assert main([*sample, "--out", str(one / "png")]) == 0
    assert (two / "s.npz").read_bytes() == (one / "s.npz").read_bytes()
    assert (two / "g.png").read_bytes() == (one / "g.png").read_bytes()
    names = sorted(p.name for p in (one / "png").iterdir())
    assert names == [".genzoo-output", *(f"{s:06d}.png" for s in range(3, 10)), "cost.json", "dataset.json"]
    assert main([*sample, "--out", str(one / "png")]) == 0  # genzoo's own folder may be written again
    with np.load(one / "s.npz") as f:
        images, labels = f["arr_0"], f["arr_1"]
    from genzoo.io import load_image

    for i, seed in enumerate(range(3, 10)):  # the folder holds the .npz's images under their seeds
        assert np.array_equal(load_image(one / "png" / f"{seed:06d}.png"), images[i])
    recorded = json.loads((one / "png" / "dataset.json").read_text())["labels"]
    assert recorded[2] == ["000005.png", int(labels[2])]

    # eval: samples sharded, and the reference statistics pass over a dataset spec too
    evaluate = ["eval", "--ref", "shapes:16?count=40", "--features", "shapes", "--metrics", "fid,acc",
                "--ref-count", "37", "--batch", "4", "--device", "auto"]
    torchrun(*evaluate, "--samples", str(two / "s.npz"), "--save-ref", str(two / "ref.npz"),
             "--out", str(two / "m.json"))
    assert main([*evaluate, "--samples", str(one / "s.npz"), "--save-ref", str(one / "ref.npz"),
                 "--out", str(one / "m.json")]) == 0
    assert main([*evaluate, "--samples", str(one / "png"), "--out", str(one / "m_png.json")]) == 0
    with np.load(one / "ref.npz") as a, np.load(two / "ref.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            assert np.array_equal(a[key], b[key]), key
    m1, m2, m_png = (json.loads((d / n).read_text()) for d, n in
                     ((one, "m.json"), (two, "m.json"), (one, "m_png.json")))
    assert m1["num_samples"] == m2["num_samples"] == m_png["num_samples"] == 7 and m1["num_ref"] == 37
    assert m1["fd"] == m2["fd"] == m_png["fd"] and m1["accuracy"] == m2["accuracy"] == m_png["accuracy"]


MEMORY_DRIVER = """
import json, sys
sys.path.insert(0, {tests!r})
import numpy as np, torch
import test_train_toy
test_train_toy.register()
torch.set_num_threads(1)
from genzoo.checkpoints import save_model_dir
from genzoo.cli import main
from genzoo.metrics import Reference, evaluate, peak_memory
from test_train_toy import ToyNet

class Pool(torch.nn.Module):  # a stand-in feature network: 4 channel statistics per image
    def forward(self, images):
        x = images.float()
        return {{"pool": torch.cat([x.mean((2, 3)), x.std((2, 3))[:, :1]], 1)}}

stage, n, out = sys.argv[1], int(sys.argv[2]), {out!r}
if stage == "sample":
    net = {{"channels": 3, "num_classes": 0, "width": 2}}
    config = {{"family": "toy", "net": net, "resolution": 32, "channels": 3}}
    model = save_model_dir(f"{{out}}/model{{n}}", config,
                           {{"model": {{"net." + k: v for k, v in ToyNet(**net).state_dict().items()}}}})
    with peak_memory("cpu") as memory:
        assert main(["sample", "--ckpt", str(model), "--seeds", f"0-{{n - 1}}", "--batch", "250",
                     "--out", f"{{out}}/s{{n}}.npz", "--quiet"]) == 0
else:
    ref = Reference(features="shapes", mu=np.zeros(4), sigma=np.eye(4))
    with peak_memory("cpu") as memory:
        evaluate(f"{{out}}/s{{n}}.npz", ref, ["fid"], features="shapes", extractor=Pool(), batch_size=250)
print(json.dumps({{stage + str(n): memory["peak_memory_mb"]}}))
"""


def test_sample_and_eval_memory_does_not_grow_with_the_number_of_images(tmp_path):
    from genzoo.metrics.reference import npz_image_count

    script = tmp_path / "memory.py"
    script.write_text(MEMORY_DRIVER.format(tests=str(Path(__file__).parent), out=str(tmp_path)))
    peaks = {}
    for stage in ("sample", "eval"):  # each measurement in a fresh process, two at a time
        procs = [subprocess.Popen([sys.executable, str(script), stage, str(n)], env=child_env(), text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for n in (2000, 20000)]
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=300)
            assert proc.returncode == 0, stderr[-3000:]
            peaks.update(json.loads(stdout.strip().splitlines()[-1]))
    assert npz_image_count(tmp_path / "s20000.npz") == (20000, (32, 32, 3))
    # 18,000 more 32x32 RGB images are 55 MB as uint8 (221 MB as float): kept in memory, they would show
    for stage in ("sample", "eval"):
        assert peaks[f"{stage}20000"] - peaks[f"{stage}2000"] < 20, peaks


def test_two_process_edit_equals_one_process(model_dir, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        paths += ["--image", str(tmp_path / f"{i}.png")]
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(paths[-1])
    argv = ["edit", "denoise", "--ckpt", str(model_dir), *paths, "--sigma", "0.5", "--add-noise",
            "--steps", "1", "--seeds", "5,6,7", "--batch", "2"]
    torchrun(*argv, "--out", str(tmp_path / "two"))
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == ["denoise-000.png", "denoise-001.png", "denoise-002.png", "grid.png"]
    for name in names:
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
