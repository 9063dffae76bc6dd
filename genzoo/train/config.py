"""The training config: the `genzoo train` flags (engine and families), config files, and which
differences matter when resuming.

A config is a flat dict whose keys are the flag names with underscores (``--batch-per-device`` ->
``batch_per_device``). Precedence: flag defaults < ``--config FILE`` < flags given explicitly.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from genzoo import validate as V
from genzoo.errors import UserError
from genzoo.family import family_names, get_family
from genzoo.options import unknown_option_error
from genzoo.seeds import seeds_text

#: keys whose change makes a checkpoint unusable (the networks would not fit, or sample differently)
STRUCTURAL_KEYS = ("family", "arch", "net", "resolution", "channels", "num_classes", "sampled_player")
#: keys that only steer this invocation: never reported as resume differences
RUN_KEYS = ("steps", "minutes", "resume", "config", "device", "workers", "log_every", "tensorboard", "out",
            "genzoo_version", "torch_version", "command_line")
PRECISIONS = ("fp32", "bf16", "fp16")


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every family shares (issue #3)."""
    fam = family_names()
    add = parser.add_argument
    add("--config", help="TOML, YAML or JSON file with the same keys as the flags (flags override it)")
    add("--family", choices=fam or None, help="model family: " + ", ".join(fam))
    add("--data", help="dataset spec, e.g. shapes or shapes:32 (see genzoo.data)")
    add("--arch", help="network name from the registry (genzoo.nets.names()); default: the family's")
    add("--out", help="run directory: config.json, metrics.jsonl, checkpoint-NNNNNN/, samples/")
    add("--steps", type=V.positive_int, help="train until this many steps (counting steps before a --resume)")
    add("--minutes", type=V.positive_float,
        help="wall-clock budget of this invocation; a checkpoint is saved at the end")
    add("--batch", type=V.positive_int, default=64, help="global batch size per update (default 64)")
    add("--batch-per-device", type=V.positive_int,
        help="micro-batch per process; gradient accumulation makes up --batch (default: --batch / processes)")
    add("--lr", type=V.positive_float, help="learning rate (default: the family's)")
    add("--lr-warmup-kimg", type=V.nonnegative_float,
        help="linear learning-rate ramp-up over this many thousand images (default: the family's; EDM 10000)")
    add("--ema", type=V.finite_float(0, 1, hi_open=True),
        help="constant EMA decay per step, e.g. 0.9999 (BigGAN)")
    add("--ema-start", type=V.nonnegative_int, default=0,
        help="with --ema: the EMA copies the weights before this step")
    add("--ema-halflife-kimg", type=V.nonnegative_float,
        help="EDM EMA: half-life in thousands of images (EDM 500); takes precedence over --ema")
    add("--ema-rampup", type=V.nonnegative_float, default=0.05,
        help="EDM EMA ramp-up ratio: half-life <= images seen x this (default 0.05; 0 = off)")
    add("--phema-stds", default="0.050,0.100",
        help="post-hoc EMA: relative widths σ_rel of the power-function EMAs tracked and stored in "
             "OUT/phema/ for `genzoo phema` (default 0.050,0.100, EDM2's; \"\" = off)")
    add("--phema-snapshot-kimg", type=V.positive_float,
        help="post-hoc EMA: also store snapshots every this many thousand images (default: at every "
             "checkpoint only)")
    add("--precision", choices=PRECISIONS, default="fp32",
        help="fp32, bf16 autocast (CPU and CUDA) or fp16 autocast with a grad scaler (CUDA)")
    add("--channels-last", action="store_true", help="channels_last memory format for networks and images")
    add("--grad-clip", type=V.positive_float, help="clip each player's gradient norm to this value")
    add("--max-nonfinite", type=V.positive_int, default=10,
        help="stop after this many consecutive non-finite losses (default 10)")
    add("--checkpoint-every", type=V.positive_int, default=1000,
        help="steps between checkpoints (default 1000)")
    add("--keep-last", type=V.nonnegative_int, default=3, help="checkpoints to keep (default 3; 0 keeps all)")
    add("--sample-every", type=V.nonnegative_int, default=1000,
        help="steps between sample grids (default 1000; 0 = never)")
    add("--sample-seeds", default="0-15", type=seeds_text, help="seeds of the sample grids (default 0-15)")
    add("--resume", action="store_true", help="continue from the latest complete checkpoint in --out")
    add("--seed", type=V.nonnegative_int, default=0,
        help="random seed of initialisation, data order and noise (default 0)")
    add("--resolution", type=V.positive_int,
        help="image resolution to load the data at (default: the data's own)")
    add("--device", default="auto", help="torch device (default: cuda if available, else cpu)")
    add("--fsdp", action="store_true",
        help="under torchrun: shard the network, its gradients and optimiser state over the processes "
             "(FSDP2), for a network that does not fit one device; objectives that train one network per "
             "step (default: DistributedDataParallel)")
    add("--workers", type=V.nonnegative_int,
        help="data-loader worker processes (default: 0 on CPU, 4 on CUDA)")
    add("--log-every", type=V.positive_int, default=10,
        help="steps between lines of metrics.jsonl (default 10)")
    add("--tensorboard", action=argparse.BooleanOptionalAction, default=True,
        help="write TensorBoard events to OUT/tensorboard when tensorboard is installed (default on)")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Engine flags, then each family's (a flag two families declare is added once, by
    ``options.add_arguments``)."""
    add_engine_arguments(parser)
    for name in family_names():
        get_family(name).add_train_arguments(parser)


def _train_actions() -> list[argparse.Action]:
    parser = argparse.ArgumentParser(add_help=False)
    add_train_arguments(parser)
    return list(parser._actions)


def default_config() -> dict[str, Any]:
    """Every train flag with its default value."""
    return {a.dest: a.default for a in _train_actions() if a.dest != "help"}


def load_config_file(path: str | Path, valid_keys: Iterable[str]) -> dict[str, Any]:
    """Read a TOML/YAML/JSON config; keys may use dashes or underscores; unknown keys are errors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--config {path}: no such file")
    text = path.read_text()
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise UserError(f"--config {path}: expected a .toml, .yaml, .yml or .json file")
    except UserError:
        raise
    except ImportError:
        raise UserError(f"--config {path}: reading YAML needs pyyaml (pip install pyyaml)") from None
    except Exception as err:  # noqa: BLE001 - each format has its own error type
        raise UserError(f"--config {path}: cannot parse ({type(err).__name__}: {err})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a table of keys, got {type(data).__name__}")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    valid = set(valid_keys)
    if "sampled_player" in data:
        # A run's own config.json: keep the flags, drop what the engine and family resolved from them.
        # The machine's own settings (device, loader workers) are resolved again by each invocation.
        dropped = {"sampled_player", "num_classes", "channels", "net", "resume", "config", "device",
                   "workers", *RESOLVED_KEYS}
        data = {k: v for k, v in data.items() if k in valid and k not in dropped}
    unknown = sorted(set(data) - valid)
    if unknown:
        raise UserError(f"--config {path}: unknown keys {', '.join(unknown)}; valid keys are the train flags "
                        f"with underscores, e.g. {', '.join(sorted(valid)[:6])} ...")
    return data


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults < (with ``resume``) the run's saved ``OUT/config.json`` < the ``config`` file < the given
    keys; with basic checks. So ``--out RUN --resume`` alone continues a run with its own settings.

    Keys the engine writes into a run's ``config.json`` (``net``, ``sampled_player``, ...) are
    accepted, so a saved config can be fed back; any other unknown key is an error.
    """
    defaults = default_config()
    valid = set(defaults) | set(STRUCTURAL_KEYS) | set(RESOLVED_KEYS)
    unknown = sorted(set(config) - valid)
    if unknown:
        raise UserError(f"train config: unknown keys {', '.join(unknown)}; valid keys are the train flags "
                        "with underscores (see genzoo train --help)")
    merged = dict(defaults)
    saved = Path(str(config.get("out") or "")) / "config.json"
    if config.get("resume") and config.get("out") and saved.is_file():
        merged.update(load_config_file(saved, valid))
    file_keys: dict[str, Any] = {}
    if config.get("config"):
        file_keys = load_config_file(config["config"], valid)
        merged.update(file_keys)
    merged.update(config)
    merged = V.check_config(merged, _train_actions())  # values from files and the API: the flags' checks
    _check(merged)
    return _family_keys_only(merged, {**file_keys, **config}, defaults)


def family_train_keys(family: str) -> dict[str, Any]:
    """The family's train option names -> their specs (of every options type it trains with)."""
    return {spec.name: spec for kind in get_family(family).train_option_types() for spec in kind.specs()}


def _family_keys_only(merged: dict[str, Any], given: Mapping[str, Any],
                      defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Refuse an option the family does not take (a flag, a --config key or an API key, unless unset) and
    check the family's values against its own options (their choices); drop the other families'
    unset options, so config.json holds the options of this run's family only."""
    family = merged["family"]
    own = family_train_keys(family)
    engine = {a.dest for a in _engine_actions()}
    for key, value in given.items():
        if key in defaults and key not in engine and key not in own and value is not None \
                and value is not False:
            raise unknown_option_error(key, family, sorted(own), what="train option")
    for key, spec in own.items():
        if merged.get(key) is not None:
            merged[key] = spec.parse(merged[key], family)
    return {k: v for k, v in merged.items() if k in engine or k in own or k not in defaults}


def _engine_actions() -> list[argparse.Action]:
    parser = argparse.ArgumentParser(add_help=False)
    add_engine_arguments(parser)
    return list(parser._actions)


#: keys the engine adds to config.json besides the structural ones
RESOLVED_KEYS = ("world_size", "genzoo_version", "torch_version", "command_line")


def _check(config: Mapping[str, Any]) -> None:
    for key in ("family", "data", "out"):
        if not config.get(key):
            raise UserError(f"--{key.replace('_', '-')}: required (a flag or a key of the --config file)")
    if config.get("steps") is None and config.get("minutes") is None:
        raise UserError("--steps N or --minutes M: give at least one to say how long to train")
    for key in ("batch", "checkpoint_every", "log_every"):
        if int(config[key]) < 1:
            raise UserError(f"--{key.replace('_', '-')}: expected a positive integer, got {config[key]}")
    if config.get("batch_per_device") is not None and int(config["batch_per_device"]) < 1:
        raise UserError(f"--batch-per-device: expected a positive integer, got {config['batch_per_device']}")
    kimg = config.get("phema_snapshot_kimg")
    if kimg is not None and not float(kimg) > 0:
        raise UserError(f"--phema-snapshot-kimg: expected a positive number of thousand images, got {kimg}")
    if config.get("net") is not None and not isinstance(config["net"], dict):
        raise UserError(f"net: expected a table of network settings, got {type(config['net']).__name__}")
    for action in _train_actions():
        value = config.get(action.dest)
        if action.choices is not None and value is not None and value not in action.choices:
            raise UserError(f"{action.option_strings[-1]}: expected one of "
                            f"{', '.join(map(str, action.choices))}, got {value!r}")
    if config["precision"] not in PRECISIONS:
        raise UserError(f"--precision: expected one of {', '.join(PRECISIONS)}, got {config['precision']!r}")


def structural_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Lines ``key: saved -> current`` for differences that make the checkpoint unusable."""
    return [f"{k}: {saved.get(k)!r} in the checkpoint, {current.get(k)!r} now" for k in STRUCTURAL_KEYS
            if _norm(saved.get(k)) != _norm(current.get(k))]


def other_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Differences in settings that may change: reported, not refused."""
    keys = sorted((set(saved) | set(current)) - set(STRUCTURAL_KEYS) - set(RUN_KEYS))
    return [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in keys
            if _norm(saved.get(k)) != _norm(current.get(k))]


def _norm(value: Any) -> Any:
    """Compare as JSON would store it (tuples are lists)."""
    return json.loads(json.dumps(value, default=str))
