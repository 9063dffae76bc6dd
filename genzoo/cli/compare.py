"""``genzoo compare``: quality against cost across runs, as a table, plots and one HTML page."""

from __future__ import annotations

import argparse

ORDER = 50


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="table, plots (quality vs NFE and vs images/s, Pareto front), grids, HTML page",
        description="Read metrics.json files (written by `genzoo eval` and `genzoo demo`; schema in "
        "docs/metrics.md) and write table.md, table.csv, quality_vs_nfe.png, "
        "quality_vs_speed.png, grids/ and index.html into --out.",
    )
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_OR_METRICS",
        help="metrics.json files, run directories holding one, or directories of such runs",
    )
    parser.add_argument("--out", default="compare", help="output directory (default ./compare)")
    parser.add_argument("--quality", help="quality number to plot (default fd, else accuracy)")
    parser.add_argument("--embed", action="store_true", help="embed images in index.html (one portable file)")
    parser.add_argument("--title", default="genzoo: quality vs cost", help="page title")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from genzoo.metrics.compare import compare

    result = compare(args.runs, args.out, quality=args.quality, embed=args.embed, title=args.title)
    print(result["markdown"].read_text(), end="")
    for line in result["skipped"]:
        print(f"skipped: {line}")
    print(
        f"wrote {result['html']} ({len(result['records'])} configurations, {len(result['plots'])} plots, "
        f"{len(result['grids'])} grids)"
    )
    return 0
