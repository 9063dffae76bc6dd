"""The gradio page of ``genzoo serve``: Sample, Compare, Edit and Reports tabs.

The widgets only collect values; :mod:`genzoo.serve.requests` does the work. Each button runs a
generator that starts the request in a worker thread and reports its progress; the Stop button closes
the generator, which tells the worker to stop at the next batch. Nothing a request makes is kept
outside its own call (and the session's ``gr.State``), so several browser tabs never mix results.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry
# gradio summarises its event log with pandas after every event by default (for its monitoring page,
# which the app does not use): seconds per click on a busy CPU
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000000")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

from genzoo.errors import UserError  # noqa: E402
from genzoo.serve.controls import (  # noqa: E402
    ControlSpec,
    control_key,
    control_keys,
    sample_controls,
    sampleable_families,  # noqa: E402
    to_flags,
)
from genzoo.serve.discovery import ModelEntry, ReportEntry  # noqa: E402
from genzoo.serve.requests import (  # noqa: E402
    IMAGE_OPERATIONS,
    Cancelled,
    ModelCache,
    SampleResult,
    run_edit,
    run_sample,
)

COMPARE_SLOTS = 4
EDIT_OPERATIONS = ("inpaint", "stroke", "colorize", "superres", "denoise", "interpolate")
#: CSS: small images are shown enlarged with sharp pixels
CSS = (".gz-image img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; } "
       "canvas { image-rendering: pixelated; }")
THEME_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]  # no web fonts fetched
#: gradio's progress tracker, found by the default of a handler's ``progress`` argument (it reports to
#: the event it is called from, so one instance serves every request)
PROGRESS = gr.Progress()


# ------------------------------------------------------------------------------------------------ helpers


def _page_error(message: str) -> gr.Error:
    """A one-line message in the page that stays until closed (no traceback anywhere)."""
    return gr.Error(message, print_exception=False, duration=None)


def _error_message(err: BaseException) -> str:
    if isinstance(err, UserError):
        return str(err)
    return f"{type(err).__name__}: {err}"


def _in_worker(work: Callable[[Callable[[], bool], Callable[[int, int], None]], Any],
               progress: gr.Progress, what: str) -> Iterator[Any]:
    """Run ``work(should_stop, report)`` in a thread; yield None while it runs (so that the page can
    cancel: closing this generator stops the worker at its next check), then its result as the last
    item. Errors become a one-line ``gr.Error``; a cancel a ``gr.Warning``."""
    stop = threading.Event()
    updates: queue.Queue[tuple[int, int]] = queue.Queue()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = work(stop.is_set, lambda done, total: updates.put((done, total)))
        except BaseException as err:  # handed to the page below
            box["error"] = err

    thread = threading.Thread(target=target, name=f"genzoo-serve-{what}", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(1.0)
            while not updates.empty():
                done, total = updates.get()
                progress((done, total), desc=f"{what}: {done}/{total} images", unit="images")
            if thread.is_alive():
                yield None  # a point where Stop can close this generator
    finally:
        stop.set()
    error = box.get("error")
    if isinstance(error, Cancelled):
        gr.Warning(f"{what}: {error}")
        yield Cancelled
        return
    if error is not None:
        if not isinstance(error, UserError):
            traceback.print_exception(error, file=sys.stderr)
        raise _page_error(f"{what}: {_error_message(error)}")
    yield box["result"]


def _parse_classes(text: str | None) -> list[int] | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return [int(t) for t in text.replace(" ", ",").split(",") if t]
    except ValueError:
        raise UserError(f"--class: expected class numbers like 3 or 1,2,3, got {text!r}") from None


class ControlPanel:
    """The sample controls of every family (:func:`control_keys`), built from :func:`sample_controls`;
    only the group of the selected model's family is visible."""

    def __init__(self, keys: Sequence[str], prefix: str, shown: str | None = None) -> None:
        self.specs = {key: sample_controls(key) for key in keys}
        self.groups: dict[str, gr.Column] = {}
        self.slots: list[tuple[str, ControlSpec]] = []
        self.components: list[gr.components.Component] = []
        for key in keys:
            with gr.Column(visible=key == shown, elem_id=f"{prefix}-{key}") as column:
                specs = self.specs[key]
                for spec in [s for s in specs if s.primary]:
                    self._add(key, spec, prefix)
                more = [s for s in specs if not s.primary]
                if more:
                    with gr.Accordion(f"more {key} options", open=False):
                        for spec in more:
                            self._add(key, spec, prefix)
            self.groups[key] = column

    def _add(self, family: str, spec: ControlSpec, key: str) -> None:
        self.slots.append((family, spec))
        self.components.append(_widget(spec, f"{key}-{family}-{spec.label}"))

    def flags(self, family: str, values: Sequence[Any]) -> list[str]:
        chosen = {spec.flag: value for (fam, spec), value in zip(self.slots, values) if fam == family}
        return to_flags(self.specs[family], chosen)

    def show(self, key: str | None) -> list[Any]:
        return [gr.update(visible=k == key) for k in self.groups]


def _output_image(label: str, elem_id: str, height: int) -> gr.Image:
    """A result image: PNG (lossless, the pixels as computed), shown enlarged."""
    return gr.Image(label=label, type="numpy", format="png", interactive=False, elem_classes="gz-image",
                    elem_id=elem_id, height=height)


def _widget(spec: ControlSpec, elem_id: str) -> gr.components.Component:
    """One control; empty means the family's default (the flag is not given), as on the command line."""
    info = spec.help or None
    if spec.kind == "flag":
        return gr.Checkbox(value=bool(spec.default), label=spec.label, info=info, elem_id=elem_id)
    if spec.kind == "choice":
        return gr.Dropdown(choices=[("default", ""), *[(c, c) for c in spec.choices or ()]],
                           value="" if spec.default is None else str(spec.default), label=spec.label,
                           info=info, elem_id=elem_id)
    placeholder = "default" if spec.default is None else f"default: {spec.default}"
    return gr.Textbox("", label=spec.label, info=info, lines=2 if spec.kind == "lines" else 1,
                      elem_id=elem_id, placeholder="one per line; " + placeholder if spec.kind == "lines"
                      else placeholder)


# ------------------------------------------------------------------------------------------------ app


class App:
    """The models and reports shown, the device, and the cache of loaded models."""

    def __init__(self, models: Sequence[ModelEntry], reports: Sequence[ReportEntry] = (),
                 device: str = "cpu") -> None:
        self.models = {m.label: m for m in models}
        self.reports = {r.name: r for r in reports}
        self.device = device
        self.cache = ModelCache()

    def model(self, label: str | None) -> ModelEntry:
        if not label or label not in self.models:
            raise UserError("pick a model first" if not label else f"{label}: no such model in this app")
        return self.models[label]

    def labels(self, families: Sequence[str]) -> list[str]:
        return [label for label, m in self.models.items() if m.family in families]

    # --------------------------------------------------------------------------------- requests

    def sample(self, label: str, seeds: str, classes: str, batch: float | None, panel: ControlPanel,
               values: Sequence[Any], progress: gr.Progress, what: str = "sample") -> Iterator[Any]:
        """Yields None while running, then the :class:`SampleResult` (or :class:`Cancelled`)."""
        try:
            entry = self.model(label)
            flags = panel.flags(control_key(entry.config), values)
            class_labels = _parse_classes(classes)
        except UserError as err:
            raise _page_error(f"{what}: {err}") from None

        def work(should_stop, report):
            return run_sample(entry.path, seeds, class_labels, flags, int(batch) if batch else None,
                              self.device, self.cache, report, should_stop)

        yield from _in_worker(work, progress, what)

    def edit(self, label: str, operation: str, editor: dict | None, options: dict[str, Any],
             progress: gr.Progress) -> Iterator[Any]:
        try:
            entry = self.model(label)
            image, mask = _editor_image(editor, operation)
        except UserError as err:
            raise _page_error(f"edit: {err}") from None

        def work(_should_stop, _report):
            return run_edit(operation, entry.path, image, mask, device=self.device, **options)

        yield from _in_worker(work, progress, operation)


def _editor_image(editor: dict | None, operation: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(RGB image, mask) from an ImageEditor value: the background (for strokes, the painting over it) and
    the painted pixels of the layers as the inpainting mask."""
    if operation not in IMAGE_OPERATIONS:
        return None, None
    background = None if editor is None else editor.get("background")
    if background is None:
        raise UserError(f"{operation}: upload an image or start from a sample first")
    background = np.asarray(background)
    layers = [np.asarray(layer) for layer in (editor.get("layers") or []) if layer is not None]
    painted = np.zeros(background.shape[:2], dtype=bool)
    for layer in layers:
        if layer.ndim == 3 and layer.shape[-1] == 4 and layer.shape[:2] == painted.shape:
            painted |= layer[..., 3] > 0
    source = editor.get("composite") if operation == "stroke" else background
    image = np.asarray(source if source is not None else background)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.shape[-1] == 4:  # drop alpha: composite over white as a viewer would
        alpha = image[..., 3:].astype(np.float64) / 255
        image = np.round(image[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    return image.astype(np.uint8), painted


def _cost_markdown(result: SampleResult) -> str:
    return f"**{result.cost()}**\n\n`{result.command}`"


def build_app(models: Sequence[ModelEntry], reports: Sequence[ReportEntry] = (),
              device: str = "cpu") -> gr.Blocks:
    """The page for these models and reports."""
    app = App(models, reports, device)
    keys = [k for k in control_keys() if any(control_key(m.config) == k for m in models)]
    sample_labels = app.labels(sampleable_families())
    edit_labels = app.labels(("consistency", "diffusion"))

    with gr.Blocks(title="genzoo", analytics_enabled=False) as blocks:
        gr.Markdown("# genzoo\nSample, compare and edit GANs, diffusion and consistency models. "
                    "Every result shows its cost and the `genzoo` command that reproduces it.")
        with gr.Tab("Sample", id="sample"):
            _sample_tab(app, keys, sample_labels)
        with gr.Tab("Compare", id="compare"):
            _compare_tab(app, keys, sample_labels)
        with gr.Tab("Edit", id="edit"):
            _edit_tab(app, edit_labels, sample_labels)
        with gr.Tab("Reports", id="reports"):
            _reports_tab(app)
    return blocks


def _model_info(app: App, label: str | None) -> str:
    if not label:
        return ""
    entry = app.model(label)
    c = entry.config
    classes = int(c.get("num_classes", 0) or 0)
    res = c.get("resolution") or (c.get("net") or {}).get("resolution") or "?"
    return (f"`{entry.path}` · {entry.family} · {c.get('arch', '?')} · {res} px · "
            + (f"{classes} classes" if classes else "unconditional"))


def _num_classes(app: App, label: str | None) -> int:
    return int(app.model(label).config.get("num_classes", 0) or 0) if label else 0


def _sample_tab(app: App, families: list[str], labels: list[str]) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            model = gr.Dropdown(labels, value=labels[0] if labels else None, label="model",
                                elem_id="sample-model")
            first = labels[0] if labels else None
            info = gr.Markdown(_model_info(app, first), elem_id="sample-info")
            seeds = gr.Textbox("0-15", label="seeds", info="e.g. 0-15,100: one image per seed",
                               elem_id="sample-seeds")
            classes = gr.Textbox("", label="class", visible=_num_classes(app, first) > 0,
                                 info="one class for all, one per seed, or empty: "
                                 "drawn from the seed", elem_id="sample-class")
            batch = gr.Number(8, precision=0, label="batch", info="images per batch (the images do not "
                              "depend on it)", elem_id="sample-batch")
            panel = ControlPanel(families, "sample", control_key(app.model(first).config) if first else None)
            with gr.Row():
                run = gr.Button("Generate", variant="primary", elem_id="sample-run")
                stop = gr.Button("Stop", elem_id="sample-stop")
        with gr.Column(scale=2):
            grid = _output_image("samples", "sample-grid", 512)
            cost = gr.Markdown(elem_id="sample-cost", elem_classes="gz-cost")

    def on_model(label):
        key = control_key(app.model(label).config) if label else None
        return [_model_info(app, label), gr.update(visible=_num_classes(app, label) > 0), *panel.show(key)]

    outs = [info, classes, *panel.groups.values()]
    model.change(on_model, model, outs, queue=False, show_progress="hidden")

    def generate(label, seeds_text, class_text, batch_size, *values, progress=PROGRESS):
        for item in app.sample(label, seeds_text, class_text, batch_size, panel, values, progress):
            if item is None:
                yield gr.skip(), gr.skip()
            elif item is Cancelled:
                yield gr.skip(), "cancelled"
            else:
                yield item.grid, _cost_markdown(item)

    event = run.click(generate, [model, seeds, classes, batch, *panel.components], [grid, cost],
                      concurrency_limit=4)
    stop.click(None, None, None, cancels=[event])


def _compare_tab(app: App, families: list[str], labels: list[str]) -> None:
    gr.Markdown("Two to four models on the same seeds and classes, each with its own settings; the cost "
                "of each request is shown under its images.")
    with gr.Row():
        seeds = gr.Textbox("0-7", label="seeds", elem_id="compare-seeds")
        classes = gr.Textbox("", label="class", info="one for all, one per seed, or empty: from the seed "
                             "(unconditional models ignore it)", elem_id="compare-class")
        batch = gr.Number(8, precision=0, label="batch", elem_id="compare-batch")
    slots = []
    with gr.Row(equal_height=False):
        for i in range(COMPARE_SLOTS):
            with gr.Column(min_width=240):
                default = labels[i] if i < min(3, len(labels)) else None
                model = gr.Dropdown([("(none)", ""), *[(lab, lab) for lab in labels]], value=default or "",
                                    label=f"model {i + 1}", elem_id=f"compare-model-{i}")
                panel = ControlPanel(families, f"compare{i}",
                                     control_key(app.model(default).config) if default else None)
                grid = _output_image(f"model {i + 1}", f"compare-grid-{i}", 320)
                cost = gr.Markdown(elem_id=f"compare-cost-{i}", elem_classes="gz-cost")
            slots.append((model, panel, grid, cost))

            def on_model(label, panel=panel):
                return panel.show(control_key(app.model(label).config) if label else None)

            model.change(on_model, model, list(panel.groups.values()), queue=False,
                         show_progress="hidden")
    with gr.Row():
        run = gr.Button("Compare", variant="primary", elem_id="compare-run")
        stop = gr.Button("Stop", elem_id="compare-stop")

    sizes = [1 + len(panel.components) for _, panel, _, _ in slots]

    def compare(seeds_text, class_text, batch_size, *values, progress=PROGRESS):
        chosen, start = [], 0
        for i, size in enumerate(sizes):
            label, controls = values[start], values[start + 1:start + size]
            start += size
            if label:
                chosen.append((i, label, controls))
        if not 2 <= len(chosen) <= COMPARE_SLOTS:
            raise _page_error(f"compare: pick two to four models, got {len(chosen)}")
        outputs: list[Any] = [gr.skip()] * (2 * COMPARE_SLOTS)
        for i in range(COMPARE_SLOTS):
            if i not in [c[0] for c in chosen]:
                outputs[2 * i], outputs[2 * i + 1] = None, ""
        for i, label, controls in chosen:
            panel = slots[i][1]
            for item in app.sample(label, seeds_text, class_text, batch_size, panel, controls, progress,
                                   what=f"model {i + 1}"):
                if item is None:
                    yield outputs
                elif item is Cancelled:
                    outputs[2 * i + 1] = "cancelled"
                    yield outputs
                    return
                else:
                    outputs[2 * i], outputs[2 * i + 1] = item.grid, f"**{label}**\n\n" + _cost_markdown(item)
                    yield list(outputs)

    inputs = [seeds, classes, batch]
    for model, panel, _, _ in slots:
        inputs += [model, *panel.components]
    event = run.click(compare, inputs, [c for _, _, grid, cost in slots for c in (grid, cost)],
                      concurrency_limit=4)
    stop.click(None, None, None, cancels=[event])


def _edit_tab(app: App, labels: list[str], source_labels: list[str]) -> None:
    gr.Markdown("Zero-shot edits with a consistency or diffusion model (`genzoo edit`). Paint the region "
                "to inpaint (or your strokes) with the brush; the image must be at the model's resolution.")
    with gr.Row():
        with gr.Column(scale=1):
            model = gr.Dropdown(labels, value=labels[0] if labels else None, label="model",
                                elem_id="edit-model")
            operation = gr.Radio(list(EDIT_OPERATIONS), value="inpaint", label="operation",
                                 elem_id="edit-operation")
            with gr.Row():
                source = gr.Dropdown(source_labels, value=labels[0] if labels else None,
                                     label="start from a sample of", elem_id="edit-source")
                source_seed = gr.Number(0, precision=0, label="seed", elem_id="edit-source-seed")
            pick = gr.Button("Use this sample as the image", elem_id="edit-pick")
            seeds = gr.Textbox("", label="seed", info="the edit's noise seed (default 0); interpolate: two "
                               "seeds, e.g. 0,1", elem_id="edit-seeds")
            classes = gr.Textbox("", label="class", info="class-conditional models (default: from the seed)",
                                 elem_id="edit-class")
            steps = gr.Textbox("", label="steps", info="network evaluations (default: the "
                              "operation's)", elem_id="edit-steps")
            ts = gr.Textbox("", label="ts", info="consistency models: grid indices, e.g. 0,10,20",
                            elem_id="edit-ts")
            factor = gr.Number(2, precision=0, label="factor", visible=False, elem_id="edit-factor")
            sigma = gr.Textbox("", label="sigma", visible=False, placeholder="stroke: default 20",
                               info="stroke: the noise level to start from; denoise: the noise level",
                               elem_id="edit-sigma")
            add_noise = gr.Checkbox(True, label="add that noise first", visible=False,
                                    elem_id="edit-add-noise")
            num = gr.Number(8, precision=0, label="images along the path", visible=False, elem_id="edit-num")
            with gr.Row():
                run = gr.Button("Edit", variant="primary", elem_id="edit-run")
                stop = gr.Button("Stop", elem_id="edit-stop")
        with gr.Column(scale=2):
            editor = gr.ImageEditor(label="input: paint the mask or strokes", type="numpy", format="png",
                                    image_mode="RGBA", sources=("upload", "clipboard"), height=420,
                                    brush=gr.Brush(default_size=2, colors=["#ffffff", "#000000", "#ff0000",
                                                                           "#00a000", "#0000ff"],
                                                   color_mode="defaults"),
                                    transforms=(), elem_id="edit-editor")
            with gr.Row():
                shown_input = _output_image("input as the model sees it", "edit-input", 256)
                result = _output_image("result", "edit-result", 256)
                mask_shown = _output_image("mask (white: generated)", "edit-mask", 256)
            slider = gr.Slider(0, 1, value=0, step=1 / 7, label="interpolation α", visible=False,
                               elem_id="edit-alpha")
            frames = gr.State([])
            cost = gr.Markdown(elem_id="edit-cost", elem_classes="gz-cost")

    def on_operation(op):
        return [gr.update(visible=op == "superres"), gr.update(visible=op in ("stroke", "denoise")),
                gr.update(visible=op == "denoise"), gr.update(visible=op == "interpolate"),
                gr.update(visible=op == "interpolate"), gr.update(visible=op != "interpolate")]

    operation.change(on_operation, operation, [factor, sigma, add_noise, num, slider, editor], queue=False,
                     show_progress="hidden")

    def use_sample(label, seed, progress=PROGRESS):
        for item in app.sample(label, str(int(seed or 0)), "", 1, _NO_PANEL, (), progress, what="sample"):
            if isinstance(item, SampleResult):
                yield {"background": item.images[0], "layers": [], "composite": item.images[0]}
            else:
                yield gr.skip()

    pick.click(use_sample, [source, source_seed], editor)

    def do_edit(label, op, image, seed_text, class_text, n_steps, ts_text, fac, sig, noise, count,
                progress=PROGRESS):
        # text as typed: the CLI's parser checks it (``genzoo edit``'s messages)
        options = dict(seeds=seed_text or None, class_label=class_text or None, steps=n_steps or None,
                       ts=ts_text or None)
        if op == "superres":
            options["factor"] = int(fac) if fac else None
        if op in ("stroke", "denoise"):
            options["sigma"] = sig
        if op == "denoise":
            options["add_noise"] = bool(noise)
        if op == "interpolate":
            options["num"] = int(count) if count else None
        for item in app.edit(label, op, image, options, progress):
            if item is None:
                yield [gr.skip()] * 6
            elif item is Cancelled:
                yield [gr.skip()] * 5 + ["cancelled"]
            else:
                n = len(item.results)
                cost_text = f"**{n} image{'s' if n > 1 else ''} · {item.seconds:.3f} s**\n\n`{item.command}`"
                mask = None if item.mask is None else np.repeat(item.mask[..., None] * np.uint8(255), 3, -1)
                if item.inputs is None:
                    yield (None, item.results[0], mask, item.results,
                           gr.update(value=0, step=1 / max(n - 1, 1)), cost_text)
                else:
                    yield item.inputs[0], item.results[0], mask, [], gr.skip(), cost_text

    inputs = [model, operation, editor, seeds, classes, steps, ts, factor, sigma, add_noise, num]
    outputs = [shown_input, result, mask_shown, frames, slider, cost]
    event = run.click(do_edit, inputs, outputs, concurrency_limit=4)
    stop.click(None, None, None, cancels=[event])

    def on_slide(alpha, images):
        if not images:
            return gr.skip()
        return images[int(round(float(alpha) * (len(images) - 1)))]

    slider.change(on_slide, [slider, frames], result, queue=False, show_progress="hidden")


class _NoPanel:
    """The controls of a request with the family defaults only."""

    @staticmethod
    def flags(_family: str, _values: Sequence[Any]) -> list[str]:
        return []


_NO_PANEL: Any = _NoPanel()


def _reports_tab(app: App) -> None:
    names = list(app.reports)
    if not names:
        gr.Markdown("No `genzoo compare` or `genzoo demo` reports (report.html, table.md) under the folders "
                    "given.")
        return
    report = gr.Dropdown(names, value=names[0], label="report", elem_id="report-pick")
    first_table, first_page = _report_view(app, names[0])
    table = gr.Markdown(first_table, elem_id="report-table")
    page = gr.HTML(first_page, elem_id="report-page")

    def show(name):
        if name not in app.reports:
            raise _page_error(f"{name}: no such report")
        return _report_view(app, name)

    report.change(show, report, [table, page], queue=False)


def _report_view(app: App, name: str) -> tuple[str, str]:
    """(Markdown table, HTML embedding the report page) of a report."""
    entry = app.reports[name]
    text = entry.table.read_text() if entry.table is not None else ""
    html = ""
    if entry.html is not None:
        src = f"/gradio_api/file={entry.html}"
        html = (f'<p><a href="{src}" target="_blank">open {entry.html.name} in a new tab</a></p>'
                f'<iframe src="{src}" style="width:100%;height:900px;border:1px solid #ccc"></iframe>')
    return text, html


def launch(blocks: gr.Blocks, reports: Sequence[ReportEntry], host: str = "127.0.0.1", port: int = 7860,
           block: bool = True) -> Any:
    """Start the server: no share link, no telemetry; only the report folders are served as files."""
    blocks.queue(default_concurrency_limit=4)
    return blocks.launch(server_name=host, server_port=port, share=False, inbrowser=False,
                         prevent_thread_lock=not block, show_error=False, quiet=not block,
                         allowed_paths=[str(r.folder) for r in reports], footer_links=[], run_history=False,
                         enable_monitoring=False,
                         theme=gr.themes.Default(font=THEME_FONTS, font_mono=["ui-monospace", "monospace"]),
                         css=CSS, ssr_mode=False, mcp_server=False, pwa=False)
