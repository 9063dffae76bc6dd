"""``genzoo serve``: a local web app over the API (the design's top layer, beside ``genzoo.cli``).

- :mod:`genzoo.serve.discovery`: runs, models and reports under the folders given;
- :mod:`genzoo.serve.controls`: widget specs read from each family's ``genzoo sample`` flags;
- :mod:`genzoo.serve.requests`: what the buttons do, as plain functions (the CLI's parser and code);
- :mod:`genzoo.serve.app`: the gradio page (needs the ``genzoo[ui]`` extra).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from genzoo.errors import UserError

LOCAL_HOSTS = {"localhost"}


def is_local(host: str) -> bool:
    """True when ``host`` is reachable from this machine only (a loopback address or localhost)."""
    if host in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(paths: Sequence[str | Path], host: str = "127.0.0.1", port: int = 7860, device: str = "auto",
          block: bool = True):
    """Find the models and reports under ``paths`` and serve the app on ``host:port``.

    ``block=False`` returns the running server (gradio's ``(app, local_url, share_url)``) for tests.
    ``device`` (``auto``: CUDA when available) is resolved once and passed as ``--device`` to every
    request's command line.
    """
    from genzoo.serve.controls import sampleable_families
    from genzoo.serve.discovery import discover_models, discover_reports

    if importlib.util.find_spec("gradio") is None:
        raise UserError("serve: the web app needs gradio; install it with: pip install 'genzoo[ui]'")
    if not 0 < int(port) < 65536:
        raise UserError(f"--port: expected a port number 1-65535, got {port}")
    from genzoo.train.distributed import pick_device

    device = str(pick_device(device))
    models = discover_models(paths, families=sampleable_families())
    reports = discover_reports(paths)
    if not models:
        raise UserError(f"{' '.join(str(p) for p in paths)}: no genzoo runs or models found (a run has "
                        "checkpoint-*/config.json, a model directory config.json with a 'family')")
    if not is_local(host):
        print(f"genzoo serve: warning: listening on {host}: anyone who can reach this machine on port "
              f"{port} can use the app and read the report folders; the default 127.0.0.1 keeps it local",
              file=sys.stderr)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from genzoo.serve.app import build_app, launch

    print(f"genzoo serve: {len(models)} models, {len(reports)} reports, on {device}; http://{host}:{port}",
          file=sys.stderr, flush=True)
    blocks = build_app(models, reports, device)
    try:
        return launch(blocks, reports, host, port, block=block)
    except OSError as err:  # the port is taken, or the address is not this machine's
        raise UserError(f"--host {host} --port {port}: cannot listen there ({err})") from None
