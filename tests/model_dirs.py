"""Tiny converted model directories that several test files build."""

from __future__ import annotations

from pathlib import Path

import torch

from genzoo.checkpoints import get_source, save_model_dir
from genzoo.checkpoints.consistency_models import network_kwargs
from genzoo.nets.adm import ADMUNet


def consistency_model_dir(root: Path, flags: dict) -> Path:
    """A consistency-models UNet with the released flags ``flags`` and small random weights (seed 0),
    converted as `genzoo convert --from consistency-models` writes it."""
    torch.manual_seed(0)
    net = ADMUNet(**network_kwargs(flags))
    for p in net.parameters():
        p.data.normal_(0, 0.05)
    source = get_source("consistency-models")
    config, weights = source.to_genzoo(source.load(net.state_dict(), **flags), flags)
    return save_model_dir(root / "model", config, weights)
