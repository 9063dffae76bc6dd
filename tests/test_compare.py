"""`genzoo compare`: table, Pareto front, plots, grids and an HTML page whose links resolve."""

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from genzoo.cli import main
from genzoo.errors import UserError
from genzoo.io import NpzWriter, save_grid
from genzoo.metrics.compare import pareto_front
from genzoo.metrics.record import read_metrics, write_metrics


def test_pareto_front_both_directions():
    points = [(1, 10.0), (2, 5.0), (3, 6.0), (4, 1.0), (5, 1.0)]
    assert pareto_front(points) == [0, 1, 3]  # (3, 6) is dominated by (2, 5); (5, 1) by (4, 1)
    assert pareto_front(points, x_lower_better=False) == [4]  # (5, 1) is best on both axes
    assert pareto_front(points, y_lower_better=False) == [0]


def test_pareto_front_speed_axis_exact():
    # images/s higher is better, FD lower is better: a fast bad GAN and a slow good diffusion both survive.
    points = [(500.0, 30.0), (5.0, 8.0), (50.0, 40.0), (5.0, 9.0)]
    assert pareto_front(points, x_lower_better=False) == [1, 0]


def test_metrics_json_validation_and_merge(tmp_path):
    path = write_metrics(tmp_path / "metrics.json", {"model": "a", "nfe": 35})
    write_metrics(path, {"fd": 3.5, "features": "shapes"})
    record = read_metrics(path)
    assert record["nfe"] == 35 and record["fd"] == 3.5 and record["model"] == "a"
    with pytest.raises(UserError, match="'nfe' must be a number"):
        write_metrics(path, {"nfe": "many"})


def make_run(root: Path, name: str, family: str, nfe: float, speed: float, fd: float, grid: bool) -> Path:
    run = root / name
    images = np.random.default_rng(len(name)).integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)
    record = {
        "model": name,
        "family": family,
        "sampler": {"steps": nfe},
        "nfe": nfe,
        "images_per_s": speed,
        "fd": fd,
        "precision": 0.7,
        "recall": 0.5,
        "accuracy": 0.9,
        "features": "shapes",
    }
    if grid:
        save_grid(images, run / "grid.png")
        record["grid"] = "grid.png"
    else:
        with NpzWriter(run / "samples.npz") as out:
            out.write(images)
        record["samples"] = "samples.npz"
    write_metrics(run / "metrics.json", record)
    return run


def test_compare_writes_table_plots_grids_and_html_with_working_links(tmp_path, capsys):
    make_run(tmp_path / "runs", "edm-heun-18", "diffusion", 35, 4.0, 5.0, grid=True)
    make_run(tmp_path / "runs", "cm-1step", "consistency", 1, 150.0, 9.0, grid=False)
    gan = make_run(tmp_path, "biggan", "gan", 1, 400.0, 12.0, grid=True)
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "runs"), str(gan / "metrics.json"), "--out", str(out)]) == 0
    assert "edm-heun-18" in capsys.readouterr().out
    with open(out / "table.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["model"] for r in rows] == ["cm-1step", "edm-heun-18", "biggan"]
    assert rows[1]["NFE"] == "35" and rows[1]["FD (shapes)"] == "5"
    assert "| biggan | gan |" in (out / "table.md").read_text()
    page = (out / "index.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 2 + 3  # two plots, three grids
    for src in sources:
        assert (out / src).is_file() and (out / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", src
    assert "quality_vs_nfe.png" in sources and "quality_vs_speed.png" in sources
    assert 'href="table.csv"' in page and "http" not in page  # nothing fetched from elsewhere


def test_compare_embed_and_errors(tmp_path):
    make_run(tmp_path, "only", "gan", 1, 10.0, 3.0, grid=True)
    assert main(["compare", str(tmp_path / "only"), "--out", str(tmp_path / "o"), "--embed"]) == 0
    page = (tmp_path / "o" / "index.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3
    assert main(["compare", str(tmp_path / "missing"), "--out", str(tmp_path / "o2")]) == 2
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.json").write_text(json.dumps({"fd": "x"}))
    assert main(["compare", str(tmp_path / "broken")]) == 2
