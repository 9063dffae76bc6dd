"""Parsers of the gan family's list-valued options, shared by BigGAN and GigaGAN (no family imports)."""

from __future__ import annotations

from genzoo.errors import UserError


def parse_betas(text: str | tuple | list) -> tuple[float, float]:
    """``"0,0.999"`` -> (0.0, 0.999)."""
    if isinstance(text, (tuple, list)):
        values = list(text)
    else:
        values = str(text).split(",")
    try:
        b1, b2 = (float(v) for v in values)
    except ValueError:
        raise UserError(f"--betas: expected two numbers like '0,0.999', got {text!r}") from None
    if not (0 <= b1 < 1 and 0 <= b2 < 1):
        raise UserError(f"--betas: both must lie in [0, 1), got {text!r}")
    return b1, b2


def parse_resolutions(text: str | list | None) -> list[int] | None:
    """``"16,32"`` -> [16, 32]; "" or "none" -> []; None -> None (the architecture's default)."""
    if text is None or isinstance(text, list):
        return text
    if text.strip().lower() in ("", "none"):
        return []
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"--attn-res: expected resolutions like '32' or '16,32', got {text!r}") from None
