"""``genzoo convert``: an official released checkpoint -> a genzoo model directory.

``genzoo convert --from SOURCE [--preset NAME] IN OUT_DIR [--flag value ...]`` loads ``IN`` with the
source's importer (``genzoo.checkpoints.load_official``; weights-only or a restricted unpickler, never
running a file's code), with the preset's flags overridden by the trailing ``--flag value`` pairs (the
source's own flag names), and writes
``OUT_DIR/config.json`` + ``model.safetensors``, which ``genzoo sample`` and ``genzoo.load`` open.
"""

from __future__ import annotations

import argparse
from typing import Any

ORDER = 60


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert an official released checkpoint into a genzoo model directory",
        description="Convert an official checkpoint (guided-diffusion, improved-diffusion, edm, ...) into a "
        "genzoo model directory. Flags after OUT_DIR are the source's own config flags, e.g. "
        "--num_channels 192 --learn_sigma True; they override the preset's.",
    )
    parser.add_argument(
        "--from", dest="source", required=True, help="checkpoint format, e.g. guided-diffusion"
    )
    parser.add_argument("--preset", default=None, help="released configuration (see --list-presets)")
    parser.add_argument("--list-presets", action="store_true", help="print the source's presets and exit")
    parser.add_argument("input", nargs="?",
                        help="the official checkpoint (.pt/.pth/.bin/.safetensors; an edm .pkl snapshot)")
    parser.add_argument("out_dir", nargs="?", help="the genzoo model directory to write")
    parser.add_argument("flags", nargs=argparse.REMAINDER, help="--flag value pairs of the source's config")
    parser.set_defaults(func=run)


def parse_flag_pairs(items: list[str]) -> dict[str, Any]:
    """``--num_channels 192 --learn-sigma=True`` -> ``{"num_channels": "192", "learn_sigma": "True"}``
    (values stay strings; the source types them)."""
    from genzoo.errors import UserError

    flags: dict[str, Any] = {}
    i = 0
    while i < len(items):
        item = items[i]
        if not item.startswith("--") or len(item) < 3:
            raise UserError(f"convert: expected --flag value pairs after OUT_DIR, got {item!r}")
        if "=" in item:
            name, value = item[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(items):
                raise UserError(f"convert: flag {item} needs a value")
            name, value = item[2:], items[i + 1]
            i += 2
        flags[name.replace("-", "_")] = value
    return flags


def run(args: argparse.Namespace) -> int:
    from genzoo.checkpoints import get_source, load_official, resolve_flags, save_model_dir
    from genzoo.errors import UserError
    from genzoo.io import check_output_folder
    from genzoo.progress import progress

    source = get_source(args.source)
    if args.list_presets:
        for name in sorted(source.presets):
            print(name)
        return 0
    if not args.input or not args.out_dir:
        raise UserError("convert: give IN (the official checkpoint) and OUT_DIR")
    if source.to_genzoo is None:
        raise UserError(
            f"--from {source.name}: this source can be loaded with genzoo.checkpoints.load_official "
            "but not converted"
        )
    check_output_folder(args.out_dir, "OUT_DIR")  # before the (slow) load: never into another folder
    flags = parse_flag_pairs(args.flags or [])
    print(f"genzoo convert: {args.input} ({source.name}) -> {args.out_dir} on cpu")
    bar = progress(3, "convert", unit="stage")
    bar.set_postfix_str("read")
    module = load_official(source.name, args.input, preset=args.preset, **flags)
    bar.update()
    bar.set_postfix_str("convert")
    config, weights = source.to_genzoo(module, resolve_flags(source, args.preset, flags))
    bar.update()
    bar.set_postfix_str("write")
    config["converted_from"] = {
        "source": source.name,
        "preset": args.preset,
        "file": str(args.input),
        "flags": {k: str(v) for k, v in flags.items()},
    }
    save_model_dir(args.out_dir, config, weights)
    bar.update()
    bar.close()
    params = sum(v.numel() for state in weights.values() for v in state.values())
    print(
        f"wrote {args.out_dir}: family {config.get('family')}, arch {config.get('arch')}, "
        f"{params / 1e6:.2f}M parameters"
    )
    return 0
