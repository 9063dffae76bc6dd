"""``genzoo serve``: a local web app to sample, compare and edit models (see :mod:`genzoo.serve`)."""

from __future__ import annotations

import argparse

from genzoo import validate as V

ORDER = 85


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="a local web app to sample, compare and edit models (needs genzoo[ui])",
        description="Open runs and models in a local web app (gradio): sample with the family's own "
                    "controls, compare models on the same seeds with their cost, edit images with a "
                    "consistency or diffusion model, browse reports. Nothing is sent anywhere: no "
                    "telemetry, no share links.")
    parser.add_argument("paths", nargs="*", metavar="RUNS_OR_MODELS", default=["."],
                        help="runs, model directories, or folders searched for them and for reports "
                             "(default: the current folder)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--device", type=V.device_or_auto, default="auto",
                        help="torch device the models run on (default auto: CUDA when available); every "
                             "request's sample/edit command line gets it")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from genzoo.serve import serve

    serve(args.paths, host=args.host, port=args.port, device=args.device)
    return 0
