"""Quality against cost across models: a table (Markdown, CSV), plots with the Pareto front, sample
grids, and one HTML page tying them together. Input: ``metrics.json`` records (docs/metrics.md).
"""

from __future__ import annotations

import base64
import csv
import html
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from genzoo.errors import UserError
from genzoo.metrics.record import LOWER_IS_BETTER, find_metrics, metric_label, read_metrics

QUALITY_KEYS = ("fd", "sfid", "is", "precision", "recall", "kid", "accuracy")
COST_KEYS = ("nfe", "images_per_s", "latency_s", "peak_memory_mb", "flops_per_image", "params_x_nfe")
FAMILY_COLOURS = {"diffusion": "#1f77b4", "consistency": "#2ca02c", "gan": "#d62728"}


def load_records(targets: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Every metrics.json named by the targets (files, run directories, or directories of runs)."""
    records = [read_metrics(path) for target in targets for path in find_metrics(target)]
    if not records:
        raise UserError("compare: no metrics.json found")
    return records


def settings_text(record: dict[str, Any]) -> str:
    """The sampling settings that differ from the family's defaults (the record holds every value used)."""
    sampler = record.get("sampler") or {}
    defaults = _sample_defaults(str(record.get("family")))
    missing = object()
    return ", ".join(f"{k}={v}" for k, v in sampler.items() if v is not None and v != defaults.get(k,
                                                                                                   missing))


def _sample_defaults(family: str) -> dict[str, Any]:
    from genzoo.family import family_names, get_family

    if family not in family_names():
        return {}
    return {spec.name: spec.default for kind in get_family(family).sample_option_types()
            for spec in kind.specs()}


def pareto_front(
    points: Sequence[tuple[float, float]], x_lower_better: bool = True, y_lower_better: bool = True
) -> list[int]:
    """Indices of the non-dominated points (no other point is at least as good on both axes and
    strictly better on one), sorted by x."""
    sx = 1 if x_lower_better else -1
    sy = 1 if y_lower_better else -1
    keyed = [(sx * x, sy * y) for x, y in points]
    front = []
    for i, (xi, yi) in enumerate(keyed):
        dominated = any(
            (xj <= xi and yj <= yi) and (xj < xi or yj < yi) for j, (xj, yj) in enumerate(keyed) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _columns(records: list[dict[str, Any]]) -> list[str]:
    present = [k for k in COST_KEYS + QUALITY_KEYS if any(r.get(k) is not None for r in records)]
    return ["model", "family", "settings", *present]


def _features(records: list[dict[str, Any]]) -> str | None:
    kinds = {r.get("features") for r in records if r.get("fd") is not None}
    return kinds.pop() if len(kinds) == 1 else None


def _cell(value: Any, key: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if key in ("nfe",) and value == int(value):
            return str(int(value))
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def table_rows(records: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    columns = _columns(records)
    features = _features(records)
    header = [metric_label(c, features) if c not in ("model", "family", "settings") else c for c in columns]
    rows = []
    for record in records:
        values = {**record, "settings": settings_text(record)}
        rows.append([_cell(values.get(c), c) for c in columns])
    return header, rows


def write_tables(records: list[dict[str, Any]], out_dir: Path) -> tuple[Path, Path]:
    header, rows = table_rows(records)
    md = out_dir / "table.md"
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    md.write_text("\n".join(lines) + "\n")
    csv_path = out_dir / "table.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return md, csv_path


def quality_key(records: list[dict[str, Any]], requested: str | None = None) -> str:
    """The quality number to plot: ``requested``, else FD, else accuracy, else the first present."""
    for key in ([requested] if requested else []) + ["fd", "accuracy", *QUALITY_KEYS]:
        if any(r.get(key) is not None for r in records):
            return key
    raise UserError(
        "compare: the metrics files hold no quality number (fd, accuracy, ...)"
        if not requested
        else f"--quality {requested}: no metrics file has it"
    )


def plot_quality_vs_cost(records: list[dict[str, Any]], quality: str, cost: str, path: Path) -> Path | None:
    """Scatter of quality against one cost axis, one colour per family, Pareto front as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [
        (r[cost], r[quality], r) for r in records if r.get(cost) is not None and r.get(quality) is not None
    ]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    families = sorted({str(r.get("family") or "other") for _, _, r in points})
    for family in families:
        xs = [x for x, _, r in points if str(r.get("family") or "other") == family]
        ys = [y for _, y, r in points if str(r.get("family") or "other") == family]
        ax.scatter(xs, ys, s=46, label=family, color=FAMILY_COLOURS.get(family), zorder=3)
    for x, y, r in points:
        ax.annotate(str(r.get("model")), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    front = pareto_front(
        [(x, y) for x, y, _ in points],
        x_lower_better=cost in LOWER_IS_BETTER,
        y_lower_better=quality in LOWER_IS_BETTER,
    )
    fx = [points[i][0] for i in front]
    fy = [points[i][1] for i in front]
    ax.step(
        fx,
        fy,
        where="post" if cost in LOWER_IS_BETTER else "pre",  # the best quality reachable at that cost
        linestyle="--",
        color="0.35",
        zorder=2,
        label="Pareto front",
    )
    xs = [x for x, _, _ in points]
    if min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    ys = [y for _, y, _ in points]
    if min(ys) > 0 and max(ys) / min(ys) > 20:  # e.g. FD from a few sampler steps next to a good model's
        ax.set_yscale("log")
    features = _features(records)
    ax.set_xlabel(
        metric_label(cost) + (" (lower is better)" if cost in LOWER_IS_BETTER else " (higher is better)")
    )
    ax.set_ylabel(
        metric_label(quality, features)
        + (" (lower is better)" if quality in LOWER_IS_BETTER else " (higher is better)")
    )
    ax.set_title(f"{metric_label(quality, features)} vs {metric_label(cost)}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "model"


def collect_grids(records: list[dict[str, Any]], out_dir: Path, max_images: int = 64) -> dict[int, Path]:
    """Copy each record's grid into ``out_dir/grids/`` (or draw one from its samples file)."""
    from genzoo.io import save_grid
    from genzoo.progress import progress

    grids: dict[int, Path] = {}
    (out_dir / "grids").mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for i, record in enumerate(progress(records, "compare grids", unit="run")):
        base = Path(record["_path"]).parent
        name = _slug(str(record.get("model")))
        while name in used:
            name += "_"
        used.add(name)
        target = out_dir / "grids" / f"{name}.png"
        if record.get("grid"):
            source = (
                (base / record["grid"]) if not Path(record["grid"]).is_absolute() else Path(record["grid"])
            )
            if source.is_file():
                shutil.copyfile(source, target)
                grids[i] = target
                continue
        samples = record.get("samples")
        if samples:
            path = Path(samples) if Path(samples).is_absolute() else base / samples
            if path.is_file():
                from genzoo.metrics.reference import iter_npz_images

                images = next(iter(iter_npz_images(path, batch_size=max_images, limit=max_images)), None)
                if images is not None:
                    save_grid(images, target, scale=2 if images.shape[1] <= 64 else 1)
                    grids[i] = target
    return grids


def _img(path: Path, out_dir: Path, embed: bool, alt: str) -> str:
    if embed:
        src = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    else:
        src = path.relative_to(out_dir).as_posix()
    return f'<img src="{html.escape(src)}" alt="{html.escape(alt)}">'


def write_html(
    records: list[dict[str, Any]],
    out_dir: Path,
    plots: list[Path],
    grids: dict[int, Path],
    tables: tuple[Path, Path],
    embed: bool = False,
    title: str = "genzoo: quality vs cost",
) -> Path:
    header, rows = table_rows(records)
    table = [
        "<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead><tbody>"
    ]
    for row in rows:
        table.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    table.append("</tbody></table>")
    figures = "".join(f"<figure>{_img(p, out_dir, embed, p.stem)}</figure>" for p in plots)
    cards = []
    for i, record in enumerate(records):
        if i not in grids:
            continue
        caption = " · ".join(
            x
            for x in (
                str(record.get("model")),
                str(record.get("family") or ""),
                settings_text(record),
                f"NFE {_cell(record.get('nfe'), 'nfe')}" if record.get("nfe") else "",
            )
            if x
        )
        cards.append(
            f"<figure class='grid'>{_img(grids[i], out_dir, embed, str(record.get('model')))}"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    features = _features(records)
    note = (
        "Quality is measured in the features of "
        + (features or "several networks")
        + (
            "; FID uses the TF Inception network."
            if features == "inception"
            else "; FD is the Fréchet distance in the shapes classifier's feature space, "
            "conditional accuracy the fraction of samples the classifier assigns to the requested class."
            if features == "shapes"
            else "."
        )
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}}
table{{border-collapse:collapse;font-size:13px;margin:8px 0 20px}}
th,td{{border:1px solid #ccc;padding:4px 8px;text-align:right}} th{{background:#f3f3f3}}
td:nth-child(-n+3),th:nth-child(-n+3){{text-align:left}}
.plots,.grids{{display:flex;flex-wrap:wrap;gap:16px}} figure{{margin:0}}
.plots img{{max-width:640px;border:1px solid #ddd}}
.grid img{{width:260px;image-rendering:pixelated;border:1px solid #ddd}}
figcaption{{font-size:12px;max-width:260px}}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(records)} configurations. {html.escape(note)} Tables: <a href="{tables[0].name}">Markdown</a>,
<a href="{tables[1].name}">CSV</a>.</p>
<h2>Table</h2>
{"".join(table)}
<h2>Quality against cost</h2>
<div class="plots">{figures or "<p>No configuration has both a quality and a cost number.</p>"}</div>
<h2>Samples</h2>
<div class="grids">{"".join(cards) or "<p>No sample grids.</p>"}</div>
</body></html>
"""
    path = out_dir / "index.html"
    path.write_text(page)
    return path


PLOT_FILES = {"nfe": "quality_vs_nfe.png", "images_per_s": "quality_vs_speed.png"}


def skipped_from_plots(records: list[dict[str, Any]], quality: str) -> list[str]:
    """One line per configuration left out of a plot, saying which number it lacks."""
    lines = []
    for record in records:
        name = f"{record.get('model')} ({record.get('_path')})"
        if record.get(quality) is None:
            label = metric_label(quality, record.get("features"))
            lines.append(f"{name}: no {label}; left out of both plots")
            continue
        for cost, file in PLOT_FILES.items():
            if record.get(cost) is None:
                why = ("sample writes cost.json beside the samples and eval records it"
                       if cost == "images_per_s" else "record --nfe with eval, or sample's cost.json")
                lines.append(f"{name}: no {metric_label(cost)}; left out of {file} ({why})")
    return lines


def compare(
    targets: Sequence[str | Path],
    out_dir: str | Path,
    quality: str | None = None,
    embed: bool = False,
    title: str = "genzoo: quality vs cost",
) -> dict[str, Any]:
    """Write ``table.md``, ``table.csv``, ``quality_vs_nfe.png``, ``quality_vs_speed.png``,
    ``grids/*.png`` and ``index.html`` into ``out_dir``; returns their paths."""
    from genzoo.io.atomic import atomic_folder

    final = Path(out_dir)
    records = load_records(targets)
    key = quality_key(records, quality)
    with atomic_folder(final, merge=True) as out_dir:  # written into a temporary, then moved in
        tables = write_tables(records, out_dir)
        plots = [
            p
            for p in (
                plot_quality_vs_cost(records, key, "nfe", out_dir / "quality_vs_nfe.png"),
                plot_quality_vs_cost(records, key, "images_per_s", out_dir / "quality_vs_speed.png"),
                plot_quality_vs_cost(records, key, "flops_per_image", out_dir / "quality_vs_flops.png"),
            )
            if p is not None
        ]
        grids = collect_grids(records, out_dir)
        page = write_html(records, out_dir, plots, grids, tables, embed=embed, title=title)

    def moved(path: Path) -> Path:
        return final / path.relative_to(out_dir)

    return {
        "skipped": skipped_from_plots(records, key),
        "html": moved(page),
        "markdown": moved(tables[0]),
        "csv": moved(tables[1]),
        "plots": [moved(p) for p in plots],
        "grids": [moved(p) for p in grids.values()],
        "records": records,
        "quality": key,
    }
