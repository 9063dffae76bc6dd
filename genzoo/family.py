"""Families (diffusion, consistency, gan, classifier): what the engine, ``genzoo.load`` and the CLI
need from each, found by name.

A family module exposes ``FAMILY``, an instance of a :class:`Family` subclass.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from genzoo.checkpoints.record import config_of, describe
from genzoo.errors import UserError
from genzoo.options import Options, add_arguments
from genzoo.seeds import StackedRandomGenerator

_FAMILY_MODULES = {
    "diffusion": "genzoo.diffusion.family",
    "consistency": "genzoo.consistency.family",
    "gan": "genzoo.gan.family",
    "classifier": "genzoo.diffusion.classifier_family",
}


class Family:
    """Base class: override what the family supports.

    ``SampleOptions`` and ``TrainOptions`` are the family's typed options (:mod:`genzoo.options`); the
    CLI flags, the API's keyword checks and the web app's controls derive from them.
    """

    name: str = ""
    SampleOptions: type[Options] | None = None
    TrainOptions: type[Options] | None = None

    def add_train_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this family's `genzoo train` flags (default: one per field of ``TrainOptions``)."""
        if self.TrainOptions is not None:
            add_arguments(parser.add_argument_group(f"{self.name} family"), self.TrainOptions,
                          family=self.name)

    def add_sample_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this family's `genzoo sample` flags (default: one per field of ``SampleOptions``)."""
        if self.SampleOptions is not None:
            add_arguments(parser, self.SampleOptions, family=self.name)

    def sample_option_types(self) -> list[type[Options]]:
        """Every sample options type of the family (one per kind of model it samples)."""
        return [self.SampleOptions] if self.SampleOptions is not None else []

    def train_option_types(self) -> list[type[Options]]:
        """Every train options type of the family; their fields are the train keys it takes."""
        return [self.TrainOptions] if self.TrainOptions is not None else []

    def sample_options_type(self, model: nn.Module) -> type[Options]:
        """The options this model samples with (a family with several kinds of model overrides this)."""
        kinds = self.sample_option_types()
        if not kinds:
            raise UserError(f"the {self.name} family does not sample")
        return kinds[0]

    def sample_options(self, model: nn.Module, values: Mapping[str, Any] | Options | None = None) -> Options:
        """Checked sample options for ``model``: an option the family does not take is a UserError naming
        it and the family. Precedence: the fields' defaults < the model's published settings
        (``config["sampling_defaults"]``, e.g. EDM's 40 Heun steps at 64 px) < the values given (None =
        not given)."""
        kind = self.sample_options_type(model)
        if isinstance(values, kind):
            return values
        given = {k: v for k, v in dict(values or {}).items() if v is not None}
        kind.build(given)  # unknown names and bad values are refused as given, before any default
        config = config_of(model)
        published = {k: v for k, v in (config.get("sampling_defaults") or {}).items() if k in kind.names()}
        return kind.build({**published, **given})

    def build_objective(self, config: dict[str, Any], dataset: Any) -> Any:
        """The training :class:`~genzoo.train.Objective` for a resolved config and dataset."""
        raise UserError(f"--family {self.name}: training is not available")

    def record_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """What a run's ``config.json`` records of a config resolved by :meth:`build_objective`: the family
        fills in the values it applied without writing them back and leaves out the options that do not
        apply to this run (another arch's, another mode's); unset (None) values are left out by the
        engine. Default: the config as it is."""
        return config

    def build_model(self, config: dict[str, Any]) -> nn.Module:
        """The sampling model (random weights) described by a saved ``config.json``."""
        raise NotImplementedError

    def labels_for(self, model: nn.Module, seeds: list[int], options: Options) -> list[int] | None:
        """Class labels the sample options fix for these seeds (e.g. a super-resolution model's base
        samples), else None: the caller's ``--class`` or labels drawn from the seeds."""
        return None

    def prompts_for(self, model: nn.Module, seeds: list[int], options: Options) -> list[str] | None:
        """The text prompt each seed is sampled with (text-conditional models), else None."""
        return None

    def prepare_sampling(self, model: nn.Module, options: Options) -> Options:
        """Resolve sample options once before the batches (e.g. a search over them); default: as given."""
        return options

    def sample(self, model: nn.Module, rng: StackedRandomGenerator, class_labels: torch.Tensor | None,
               options: Options) -> tuple[torch.Tensor, int]:
        """Generate one image per seed of ``rng``: (float NCHW in [-1, 1], network evaluations per image).

        ``options`` are the model's :meth:`sample_options` (a dict is checked into them).
        """
        raise NotImplementedError


def load_model(path: str | Path, ema: bool = True, device: str | torch.device = "cpu") -> nn.Module:
    """``genzoo.load`` (see :func:`genzoo.api.load`), here for the layers below the API that are handed a
    path in a config (a teacher, a guide model)."""
    from genzoo.checkpoints import model_dir_candidates

    if Path(path).suffix == ".pkl" and Path(path).is_file():
        return _load_snapshot(Path(path), ema, device)
    candidates = model_dir_candidates(path)
    for i, model_dir in enumerate(candidates):
        try:
            model = _load_dir(model_dir, ema, Path(path))
            break
        except UserError:
            # a run's checkpoint pruned (or broken) while we read it: the next newest complete one
            if i + 1 == len(candidates) or (model_dir / "config.json").is_file():
                raise
    return model.to(device).eval()


def _load_dir(model_dir: Path, ema: bool, opened: Path) -> nn.Module:
    from genzoo.checkpoints import CHECKPOINT_PATTERN, load_safetensors, load_state_into, read_json

    config = read_json(model_dir / "config.json")
    if not isinstance(config, dict) or "family" not in config:
        raise UserError(f"{model_dir / 'config.json'}: no 'family' key; not a genzoo model")
    if "net" in config and not isinstance(config["net"], dict):
        raise UserError(f"{model_dir / 'config.json'}: 'net' must be a table of network settings, got "
                        f"{type(config['net']).__name__}")
    family = get_family(config["family"])
    try:
        model = family.build_model(config)
    except (TypeError, ValueError, KeyError) as err:
        raise UserError(f"{model_dir / 'config.json'}: cannot build the {config['family']} model "
                        f"({type(err).__name__}: {err})") from None
    prefix = config.get("sampled_player", "net") + "."
    state: dict[str, torch.Tensor] = {}
    weights_file = model_dir / "ema.safetensors"
    if ema and weights_file.is_file():
        state = _with_prefix(load_safetensors(weights_file), prefix)
    if not state:  # no EMA file, or its EMA covers other players only
        weights_file = model_dir / "model.safetensors"
        state = _with_prefix(load_safetensors(weights_file), prefix)
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise UserError(f"{weights_file}: weights hold NaN or Inf values (first: {bad}); the model is broken")
    load_state_into(model, state, str(weights_file))
    if model_dir != opened:
        source = "run"
    elif CHECKPOINT_PATTERN.match(model_dir.name) or (model_dir / "state.json").is_file():
        source = "checkpoint"
    else:
        source = "model"
    describe(model, config, source, path=opened, model_dir=model_dir, weights_file=weights_file, ema=ema)
    return model


def _load_snapshot(path: Path, ema: bool, device: str | torch.device) -> nn.Module:
    """An official network snapshot as a genzoo model (its config is what ``genzoo convert`` writes)."""
    from genzoo.checkpoints import source_for_pickle

    if not ema:
        raise UserError(f"--raw: {path} is a network snapshot, which holds only the EMA weights")
    source, snapshot = source_for_pickle(path)
    model = source.load(snapshot)
    config, _ = source.to_genzoo(model, {})
    config["converted_from"] = {"source": source.name, "preset": None, "file": str(path), "flags": {}}
    describe(model, config, "snapshot", path=path, weights_file=path, ema=ema)
    return model.to(device).eval()


def _with_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of one player (keys ``"<player>.<key>"``), with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def family_names() -> list[str]:
    """Families whose module is present in this install."""
    return [name for name, mod in _FAMILY_MODULES.items() if importlib.util.find_spec(mod) is not None]


def get_family(name: str) -> Family:
    if name not in _FAMILY_MODULES or importlib.util.find_spec(_FAMILY_MODULES[name]) is None:
        raise UserError(f"--family: unknown family {name!r}; available: {', '.join(family_names())}")
    return importlib.import_module(_FAMILY_MODULES[name]).FAMILY
