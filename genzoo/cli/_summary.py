"""The one line each command prints before long work: what it is about to do, on what, with what."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from genzoo.checkpoints.record import config_of, find_record


def settings_text(settings: Mapping[str, Any]) -> str:
    """``--steps 18 --guidance 3`` for the settings that differ from the defaults; "defaults" if none."""
    parts = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif value is not None and value is not False:
            shown = "(model)" if find_record(value) is not None else value  # a loaded guide or classifier
            parts.append(f"{flag} {shown}")
    return " ".join(parts) or "defaults"


def summary_line(command: str, path: Any, model: Any, device: Any, extra: str = "",
                 settings: Mapping[str, Any] | None = None) -> str:
    """``genzoo sample: runs/edm (diffusion, edm/ddpmpp) on cpu, ...; settings: --steps 18``."""
    config = config_of(model)
    kind = "/".join(str(config[k]) for k in ("precond", "arch") if config.get(k))
    what = f"{config.get('family', '?')}{', ' + kind if kind else ''}"
    line = f"genzoo {command}: {path} ({what}) on {device}"
    if extra:
        line += f", {extra}"
    if settings is not None:
        line += f"; settings: {settings_text(settings)}"
    return line
