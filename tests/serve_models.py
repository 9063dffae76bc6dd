"""Tiny trained models for the `genzoo serve` tests: a diffusion model, a consistency model distilled
from it and a BigGAN, each a run directory made by the training engine in a second or two."""

from __future__ import annotations

from pathlib import Path

COMMON = dict(data="shapes:16", steps=2, batch=4, sample_every=0, log_every=1, tensorboard=False, seed=0,
              checkpoint_every=2)
RUNS = {
    "edm": dict(family="diffusion", arch="ddpmpp", model_channels=8, num_blocks=1, channel_mult="1",
                attn_res="", label_dropout=0.1),
    "biggan": dict(family="gan", arch="biggan", g_ch=2, d_ch=2, z_dim=6, shared_dim=4, attn_res="none",
                   ema_start=0),
}


def make_runs(root: Path) -> dict[str, Path]:
    """Train the three tiny runs under ``root/runs``; returns name -> run directory."""
    from genzoo.train.engine import train

    out = {}
    for name, config in RUNS.items():
        out[name] = root / "runs" / name
        train({**COMMON, **config, "out": str(out[name])})
    out["cd"] = root / "runs" / "cd"
    train({**COMMON, "family": "consistency", "mode": "cd", "teacher": str(out["edm"]), "num_scales": 6,
           "out": str(out["cd"])})
    return out
