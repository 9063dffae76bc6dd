"""The network registry, the family table and the CLI's handling of user errors."""

import argparse
import dataclasses

import pytest
import torch.nn as nn

from genzoo import nets
from genzoo.cli import main
from genzoo.errors import UserError
from genzoo.family import family_names, get_family
from genzoo.options import Options, add_arguments, option


def test_register_and_build_roundtrip():
    @nets.register("test-linear-net")
    class TinyNet(nn.Module):
        def __init__(self, width: int = 3):
            super().__init__()
            self.layer = nn.Linear(width, width)

    try:
        built = nets.build("test-linear-net", width=5)
        assert isinstance(built, TinyNet) and built.layer.in_features == 5
        assert "test-linear-net" in nets.names()
        with pytest.raises(ValueError, match="registered twice"):
            nets.register("test-linear-net")(lambda: nn.Identity())
    finally:
        nets._BUILDERS.pop("test-linear-net", None)


def test_unknown_network_lists_registered_names():
    with pytest.raises(UserError, match=r"--arch: unknown network 'no-such-net'; registered: "):
        nets.build("no-such-net")


def test_unknown_family_lists_available():
    with pytest.raises(UserError, match=r"--family: unknown family 'nope'; available: "):
        get_family("nope")
    assert set(family_names()) <= {"diffusion", "consistency", "gan", "classifier"}


@dataclasses.dataclass(frozen=True)
class _DiffusionLike(Options):
    steps: int = option(3, int, "steps")
    loss: str = option("edm", help="diffusion loss", choices=("edm", "vp"))


@dataclasses.dataclass(frozen=True)
class _GANLike(Options):
    steps: int = option(99, int, "steps")
    loss: str = option("hinge", help="GAN loss", choices=("hinge", "ns"))


def test_a_flag_two_families_declare_is_added_once():
    parser = argparse.ArgumentParser()
    add_arguments(parser, _DiffusionLike, family="diffusion")
    add_arguments(parser, _GANLike, family="gan")
    assert parser.parse_args([]).steps == 3  # the first declaration's default


def test_a_flag_shared_with_different_choices_accepts_each_familys_values():
    parser = argparse.ArgumentParser()
    add_arguments(parser, _DiffusionLike, family="diffusion")
    add_arguments(parser, _GANLike, family="gan")
    assert parser.parse_args(["--loss", "ns"]).loss == "ns"
    assert parser.parse_args(["--loss", "vp"]).loss == "vp"
    with pytest.raises(SystemExit):
        parser.parse_args(["--loss", "l2"])
    # the real train parser: the GAN's loss names parse, and the diffusion family refuses them itself
    from genzoo.train.config import add_train_arguments

    train_parser = argparse.ArgumentParser()
    add_train_arguments(train_parser)
    assert train_parser.parse_args(["--loss", "ns"]).loss == "ns"
    from types import SimpleNamespace

    from genzoo.errors import UserError

    data = SimpleNamespace(resolution=8, num_channels=3, num_classes=0)
    with pytest.raises(UserError, match="--loss"):
        get_family("diffusion").build_objective({"family": "diffusion", "loss": "ns", "model_channels": 8,
                                                 "channel_mult": "1,2", "num_blocks": 1}, data)


def test_cli_user_error_is_one_line_and_exit_code_2(tmp_path, capsys):
    code = main(["sample", "--ckpt", str(tmp_path / "missing"), "--grid", str(tmp_path / "g.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "no such run, checkpoint or model directory" in err[0]
    assert "Traceback" not in err[0]


def test_cli_without_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage: genzoo" in capsys.readouterr().out


def test_every_subcommand_has_help(capsys):
    from genzoo.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert "sample" in commands
    for name in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert f"usage: genzoo {name}" in capsys.readouterr().out


def test_api_names_stay_callable_after_subpackages_are_imported():
    import genzoo
    import genzoo.train.engine  # noqa: F401 - importing it rebinds the attribute genzoo.train

    assert callable(genzoo.train) and callable(genzoo.load) and callable(genzoo.sample)
    assert callable(genzoo.edit.inpaint) and callable(genzoo.checkpoints.load_official)
    with pytest.raises(UserError, match="train config: unknown keys no_such_key"):
        genzoo.train({"no_such_key": 1})
