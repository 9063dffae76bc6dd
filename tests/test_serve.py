"""`genzoo serve`: model discovery, controls derived from the families' flags, the request functions
against `genzoo sample` / `genzoo edit`, and the page itself driven in headless Chromium."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serve_models import make_runs

from genzoo.cli import main
from genzoo.errors import UserError
from genzoo.serve import is_local
from genzoo.serve.controls import control_key, sample_controls, to_flags
from genzoo.serve.discovery import discover_models, discover_reports
from genzoo.serve.requests import Cancelled, command_line, parse_cli, run_edit, run_sample, sample_argv

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return make_runs(tmp_path_factory.mktemp("serve"))


def _config(path: Path, data: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(data))


# ------------------------------------------------------------------------------------------------ discovery


def test_discovery_finds_runs_and_model_dirs_once_and_skips_other_folders(tmp_path):
    _config(tmp_path / "runs" / "edm" / "checkpoint-000004", {"family": "diffusion"})
    _config(tmp_path / "runs" / "edm" / "checkpoint-000008", {"family": "diffusion", "arch": "ddpmpp"})
    _config(tmp_path / "converted" / "cm", {"family": "consistency"})
    _config(tmp_path / "converted" / "clf", {"family": "classifier"})
    _config(tmp_path / "notes", {"name": "not a genzoo model"})
    _config(tmp_path / ".venv" / "hidden", {"family": "gan"})
    (tmp_path / "runs" / "empty").mkdir()
    found = discover_models([tmp_path])
    assert {(e.path.relative_to(tmp_path).as_posix(), e.family) for e in found} == {
        ("runs/edm", "diffusion"), ("converted/cm", "consistency"), ("converted/clf", "classifier")}
    # the run is described by its latest checkpoint's config
    assert next(e for e in found if e.family == "diffusion").config["arch"] == "ddpmpp"
    # only sampleable families when asked; a model given directly is taken as it is, once
    sampleable = discover_models([tmp_path, tmp_path / "converted" / "cm"],
                                 families=("diffusion", "consistency"))
    assert sorted(e.family for e in sampleable) == ["consistency", "diffusion"]
    assert [e.path for e in discover_models([tmp_path / "runs" / "edm"])] == [tmp_path / "runs" / "edm"]
    with pytest.raises(UserError, match="no such model"):
        discover_models([tmp_path / "missing"])


def test_discovery_finds_reports(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "report.html").write_text("<h1>r</h1>")
    (tmp_path / "cmp").mkdir()
    (tmp_path / "cmp" / "table.md").write_text("| a |")
    reports = {r.folder.name: r for r in discover_reports([tmp_path])}
    assert set(reports) == {"demo", "cmp"}
    assert reports["demo"].html == (tmp_path / "demo" / "report.html").resolve()
    assert reports["demo"].table is None
    assert reports["cmp"].table is not None and reports["cmp"].html is None


def test_only_loopback_hosts_count_as_local():
    assert is_local("127.0.0.1") and is_local("localhost") and is_local("::1")
    assert not is_local("0.0.0.0") and not is_local("192.168.1.4") and not is_local("example.org")


# ------------------------------------------------------------------------------------------------ controls


def _flags(key: str) -> set[str]:
    return {spec.flag for spec in sample_controls(key)}


def test_controls_come_from_each_familys_own_flags():
    diffusion, gan, consistency = _flags("diffusion"), _flags("gan"), _flags("consistency")
    assert {"--sampler", "--steps", "--guidance", "--churn", "--classifier"} <= diffusion
    assert "--truncation" in gan
    assert {"--steps", "--ts"} <= consistency
    # never another family's control
    assert not {"--truncation", "--ts", "--prompt"} & diffusion
    assert not {"--steps", "--sampler", "--guidance", "--prompt"} & gan
    assert not {"--guidance", "--sampler", "--truncation"} & consistency
    # GigaGAN (the gan family's delegate) gets prompts and its truncation, BigGAN neither prompts nor mixing
    assert {"--prompt", "--style-seed", "--truncation"} <= _flags("gan-text")
    assert "--standing-stats" not in _flags("gan-text")
    assert control_key({"family": "gan", "arch": "gigagan"}) == "gan-text"
    assert control_key({"family": "gan", "arch": "biggan-deep"}) == "gan"
    specs = {s.flag: s for s in sample_controls("diffusion")}
    assert specs["--sampler"].kind == "choice" and "heun" in specs["--sampler"].choices
    assert specs["--steps"].kind == "int" and specs["--guidance"].kind == "float"
    assert specs["--no-clip"].kind == "flag" and {s.flag: s for s in sample_controls("gan-text")}[
        "--prompt"].kind == "lines"
    with pytest.raises(UserError, match="no sampling controls"):
        sample_controls("classifier")


def test_widget_values_become_the_clis_flags():
    specs = sample_controls("diffusion")
    flags = to_flags(specs, {"--sampler": "euler", "--steps": "4", "--guidance": 2.5, "--churn": "",
                             "--eta": None, "--no-clip": False})
    assert flags == ["--sampler", "euler", "--steps", "4", "--guidance", "2.5"]
    args = parse_cli(sample_argv("run", "0-3", [2], flags, batch=2))
    parsed = (args.sampler, args.steps, args.guidance, args.class_label, args.batch)
    assert parsed == ("euler", 4, 2.5, [2], 2)
    assert args.churn is None  # left out: the family default, as on the command line
    assert to_flags(sample_controls("gan-text"), {"--prompt": "a red square\n\nblue disc"}) == [
        "--prompt", "a red square", "--prompt", "blue disc"]
    with pytest.raises(UserError, match="--steps: expected an integer"):
        to_flags(specs, {"--steps": "four"})
    with pytest.raises(UserError, match="--sampler: expected one of"):
        to_flags(specs, {"--sampler": "nope"})
    with pytest.raises(UserError, match="--truncation: not a sample option"):
        to_flags(specs, {"--truncation": 0.5})
    with pytest.raises(UserError, match="invalid choice"):
        parse_cli(["sample", "--ckpt", "x", "--sampler", "nope"])


# ------------------------------------------------------------------------------------------------ requests

SETTINGS = {  # run -> (control key, widget values)
    "edm": ("diffusion", {"--sampler": "euler", "--steps": 2}),
    "cd": ("consistency", {"--steps": 2}),
    "biggan": ("gan", {"--truncation": 0.5}),
}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_sample_request_equals_the_api_and_the_cli(runs, tmp_path, name):
    import genzoo

    key, values = SETTINGS[name]
    flags = to_flags(sample_controls(key), values)
    result = run_sample(runs[name], "3-6", [1], flags, batch=3)
    assert result.images.shape == (4, 16, 16, 3) and result.images.dtype == np.uint8
    assert result.nfe == {"edm": 2, "cd": 2, "biggan": 1}[name] and result.seconds > 0
    options = {flag.lstrip("-").replace("-", "_"): value for flag, value in values.items()}
    images, labels, _ = genzoo.sample(genzoo.load(runs[name]), "3-6", class_labels=1, **options)
    np.testing.assert_array_equal(result.images, images.permute(0, 2, 3, 1).numpy())
    np.testing.assert_array_equal(result.labels, labels.numpy())
    # the command shown is the CLI's, and it writes the same pixels and grid
    argv = result.command.split()[1:]
    assert argv[-2:] == ["--grid", "grid.png"]
    assert main([*argv[:-2], "--out", str(tmp_path / "s.npz"), "--grid", str(tmp_path / "g.png")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "s.npz")["arr_0"], result.images)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "g.png")), result.grid)


def test_sample_request_reports_progress_stops_and_names_bad_input(runs):
    seen = []
    with pytest.raises(Cancelled, match="after 2 of 6"):
        run_sample(runs["biggan"], "0-5", batch=2, progress=lambda d, t: seen.append((d, t)),
                   should_stop=lambda: len(seen) > 1)
    assert seen == [(0, 6), (2, 6)]
    with pytest.raises(UserError, match="no such run"):
        run_sample(runs["edm"].parent / "missing", "0")
    with pytest.raises(UserError, match="--seeds"):
        run_sample(runs["edm"], "a-b")
    with pytest.raises(UserError, match="--steps"):
        run_sample(runs["edm"], "0", flags=["--steps", "x"])


def test_edit_request_equals_the_cli(runs, tmp_path):
    image = run_sample(runs["cd"], "0", [2]).images[0]
    mask = np.zeros((16, 16), dtype=bool)
    mask[3:9, 5:13] = True
    result = run_edit("inpaint", runs["cd"], image, mask, seeds="4", class_label=2, steps=2)
    Image.fromarray(image).save(tmp_path / "in.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    assert main(["edit", "inpaint", "--ckpt", str(runs["cd"]), "--image", str(tmp_path / "in.png"), "--mask",
                 str(tmp_path / "mask.png"), "--out", str(tmp_path / "out"), "--seeds", "4", "--class", "2",
                 "--steps", "2"]) == 0
    cli_result = np.asarray(Image.open(tmp_path / "out" / "inpaint-000.png"))
    np.testing.assert_array_equal(result.results[0], cli_result)
    np.testing.assert_array_equal(result.results[0][~mask], image[~mask])  # known pixels kept
    assert "--mask mask.png" in result.command and result.mask is not None
    frames = run_edit("interpolate", runs["edm"], seeds="0,1", num=3, steps=2, class_label=0)
    assert frames.inputs is None and len(frames.results) == 3
    with pytest.raises(UserError, match="the mask is empty"):
        run_edit("inpaint", runs["cd"], image, np.zeros((16, 16), dtype=bool))
    with pytest.raises(UserError, match="the model makes 16x16"):
        run_edit("colorize", runs["cd"], np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(UserError, match="a consistency or diffusion model"):
        run_edit("denoise", runs["biggan"], image, sigma=0.1)


def test_editor_value_gives_the_background_and_the_painted_mask():
    pytest.importorskip("gradio")
    from genzoo.serve.app import _editor_image

    background = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    layer = np.zeros((4, 4, 4), dtype=np.uint8)
    layer[1, 2] = [255, 255, 255, 255]
    layer[3, 0] = [0, 0, 0, 40]  # any painted alpha counts
    composite = np.concatenate([background, np.full((4, 4, 1), 255, np.uint8)], -1)
    composite[1, 2, :3] = 255
    value = {"background": background, "layers": [layer], "composite": composite}
    image, mask = _editor_image(value, "inpaint")
    np.testing.assert_array_equal(image, background)
    assert mask.sum() == 2 and mask[1, 2] and mask[3, 0]
    strokes, _ = _editor_image(value, "stroke")  # strokes: the painting over the image
    assert (strokes[1, 2] == 255).all() and (strokes[0, 0] == background[0, 0]).all()
    with pytest.raises(UserError, match="upload an image"):
        _editor_image({"background": None, "layers": [], "composite": None}, "inpaint")


def test_closing_a_request_stops_its_worker_and_requests_do_not_share_results(runs):
    pytest.importorskip("gradio")
    import threading

    from genzoo.serve.app import _in_worker
    from genzoo.serve.requests import ModelCache

    stopped = threading.Event()

    def work(should_stop, report):
        while not should_stop():
            report(0, 1)
            time.sleep(0.01)
        stopped.set()

    running = _in_worker(work, lambda *a, **k: None, "sample")
    assert next(running) is None  # still running: the page can cancel
    running.close()  # what gradio does on Stop
    assert stopped.wait(10)
    # two requests at once on one cache: each gets exactly what it gets alone
    cache, results = ModelCache(), {}
    alone = {name: run_sample(runs[name], "0-3", [1]).images for name in ("edm", "biggan")}
    threads = [threading.Thread(target=lambda n=name: results.__setitem__(n, run_sample(
        runs[n], "0-3", [1], batch=1, cache=cache).images)) for name in ("edm", "biggan", "edm")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, images in results.items():
        np.testing.assert_array_equal(images, alone[name])


def test_the_serve_device_reaches_the_command_lines_it_runs(tmp_path, capsys):
    """`genzoo serve --device D`: D (auto resolved once) is on every request's sample and edit command line,
    so the CLI's own default (auto) never overrides it."""
    from genzoo.serve.requests import edit_argv

    for device in ("cpu", "auto"):
        assert parse_cli(sample_argv("run", "0-3", device=device)).device == device
        assert parse_cli(edit_argv("interpolate", "run", seeds="0,1", device=device)).device == device
    assert "--device cpu" in command_line(sample_argv("run", "0", device="cpu"))
    assert main(["serve", str(tmp_path), "--device", "gpu"]) == 2
    assert "--device" in capsys.readouterr().err
    if importlib.util.find_spec("gradio") is not None:  # auto is resolved before anything is served
        assert main(["serve", str(tmp_path), "--device", "auto"]) == 2
        assert "no genzoo runs or models found" in capsys.readouterr().err


def test_serve_needs_models(tmp_path):
    pytest.importorskip("gradio")
    from genzoo.serve import serve

    with pytest.raises(UserError, match="no genzoo runs or models found"):
        serve([tmp_path], block=False)


# ------------------------------------------------------------------------------------------------ browser


def _browser_ready() -> str | None:
    """None when the browser test can run, else why not."""
    import importlib.util

    for module in ("gradio", "playwright"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[dev]')"
    if not os.access(CHROMIUM, os.X_OK):
        return "no chromium browser (apt-get install chromium)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shown_image(page, base: str, selector: str) -> np.ndarray:
    """The PNG an image component shows, read from the server as the browser got it."""
    src = page.get_attribute(f"{selector} img", "src")
    with urllib.request.urlopen(src if src.startswith("http") else base + src) as response:
        return np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))


def _choose(page, elem_id: str, option: str) -> None:
    page.click(f"#{elem_id} input")
    page.locator(f"#{elem_id}").get_by_role("option", name=option, exact=True).click()


def _cli_grid(tmp_path: Path, argv: list[str]) -> np.ndarray:
    out = tmp_path / f"grid-{len(list(tmp_path.glob('grid-*')))}.png"
    assert main([*argv, "--grid", str(out)]) == 0
    return np.asarray(Image.open(out))


@pytest.mark.skipif(_browser_ready() is not None, reason=_browser_ready() or "")
def test_browser_samples_compares_and_inpaints_as_the_cli(runs, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from genzoo.serve import serve

    shots = tmp_path / "screenshots"
    shots.mkdir()
    report = runs["edm"].parent.parent / "report"
    report.mkdir(exist_ok=True)
    (report / "table.md").write_text("| model | FD |\n|---|---|\n| edm-heun-2 | 12.5 |\n")
    (report / "report.html").write_text("<h1>genzoo report</h1>")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    start = time.monotonic()
    serve([runs["edm"].parent.parent], port=port, block=False)
    labels = {name: f"runs/{name} ({fam}, {arch})" for name, fam, arch in
              (("edm", "diffusion", "ddpmpp"), ("cd", "consistency", "ddpmpp"), ("biggan", "gan", "biggan"))}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(base)
            # Sample: each model with its own controls; the grid is `genzoo sample`'s
            for name, (key, values) in SETTINGS.items():
                _choose(page, "sample-model", labels[name])
                expect(page.locator(f"#sample-{key}")).to_be_visible(timeout=60_000)
                for other in {"diffusion", "consistency", "gan"} - {key}:
                    expect(page.locator(f"#sample-{other}")).to_be_hidden()
                page.fill("#sample-seeds textarea, #sample-seeds input", "0-3")
                page.fill("#sample-class textarea, #sample-class input", "5")
                for flag, value in values.items():
                    widget = f"sample-{key}-{flag[2:]}"
                    if flag == "--sampler":
                        _choose(page, widget, str(value))
                    else:
                        page.fill(f"#{widget} textarea, #{widget} input", str(value))
                page.click("#sample-run")
                argv = sample_argv(runs[name], "0-3", [5], to_flags(sample_controls(key), values), batch=8)
                expect(page.locator("#sample-cost")).to_contain_text(command_line(argv), timeout=60_000)
                expected = _cli_grid(tmp_path, argv[:-2])
                np.testing.assert_array_equal(_shown_image(page, base, "#sample-grid"), expected)
                assert "images/s" in page.inner_text("#sample-cost")
                if name == "biggan":
                    page.screenshot(path=str(shots / "sample.png"), full_page=True)
            # Compare: the three models on the same seeds and class, each at its family defaults
            page.get_by_role("tab", name="Compare").click()
            page.fill("#compare-seeds textarea, #compare-seeds input", "0-3")
            page.fill("#compare-class textarea, #compare-class input", "2")
            page.click("#compare-run")
            for i, name in enumerate(["biggan", "cd", "edm"]):  # the dropdowns' default order
                argv = sample_argv(runs[name], "0-3", [2], batch=8)
                expect(page.locator(f"#compare-cost-{i}")).to_contain_text(command_line(argv), timeout=60_000)
                expected = _cli_grid(tmp_path, argv[:-2])
                np.testing.assert_array_equal(_shown_image(page, base, f"#compare-grid-{i}"), expected)
            page.screenshot(path=str(shots / "compare.png"), full_page=True)
            # Edit: start from the consistency model's sample of seed 0, paint a mask, inpaint
            page.get_by_role("tab", name="Edit").click()
            _choose(page, "edit-model", labels["cd"])
            _choose(page, "edit-source", labels["cd"])
            page.click("#edit-pick")
            canvas = page.locator("#edit-editor canvas").first
            expect(page.locator("#edit-editor")).to_contain_text("1000%", timeout=60_000)  # image loaded
            box = canvas.bounding_box()
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(cx - 40, cy - 20)
            page.mouse.down()
            for k in range(1, 21):
                page.mouse.move(cx - 40 + 4 * k, cy - 20 + 2 * k)
            page.mouse.up()
            page.fill("#edit-steps textarea, #edit-steps input", "2")
            page.fill("#edit-seeds textarea, #edit-seeds input", "7")
            page.fill("#edit-class textarea, #edit-class input", "3")
            page.click("#edit-run")
            expect(page.locator("#edit-cost")).to_contain_text("genzoo edit inpaint", timeout=60_000)
            mask = _shown_image(page, base, "#edit-mask")[..., 0] > 127
            assert 5 <= mask.sum() <= 200  # the painted stroke, not nothing, not everything
            source = tmp_path / "source.npz"
            assert main(sample_argv(runs["cd"], "0", None, grid=None) + ["--out", str(source)]) == 0
            Image.fromarray(np.load(source)["arr_0"][0]).save(tmp_path / "input.png")
            Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
            assert main(["edit", "inpaint", "--ckpt", str(runs["cd"]), "--image", str(tmp_path / "input.png"),
                         "--mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "edit"),
                         "--seeds", "7", "--class", "3", "--steps", "2"]) == 0
            np.testing.assert_array_equal(_shown_image(page, base, "#edit-result"),
                                          np.asarray(Image.open(tmp_path / "edit" / "inpaint-000.png")))
            page.screenshot(path=str(shots / "edit.png"))
            # Bad input: a message in the page, no traceback
            page.fill("#edit-steps textarea, #edit-steps input", "two")
            page.click("#edit-run")
            message = "inpaint: argument --steps: expected an integer >= 1, got 'two'"
            expect(page.get_by_text(message)).to_be_visible(timeout=60_000)
            # Reports
            page.get_by_role("tab", name="Reports").click()
            expect(page.locator("#report-table")).to_contain_text("edm-heun-2")
            expect(page.frame_locator("#report-page iframe").locator("h1")).to_have_text("genzoo report")
            # only the report folders are served as files, not the models
            with pytest.raises(urllib.error.HTTPError, match="403"):
                urllib.request.urlopen(f"{base}/gradio_api/file={runs['edm'] / 'config.json'}")
        finally:
            browser.close()
    print(f"browser test: {time.monotonic() - start:.1f} s after training")
    if os.environ.get("GENZOO_SERVE_SCREENSHOTS"):  # docs/images: refreshed by hand from here
        shutil.copytree(shots, os.environ["GENZOO_SERVE_SCREENSHOTS"], dirs_exist_ok=True)
    assert all((shots / f).stat().st_size > 0 for f in ("sample.png", "compare.png", "edit.png"))

