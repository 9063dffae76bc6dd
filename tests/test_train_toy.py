"""A tiny family used by the training-engine tests (registered as "toy" by monkeypatching), and the
tests of its pieces that need no training run: EMA rules, data order, config files."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
import torch.nn as nn

import genzoo.family
from genzoo.family import Family
from genzoo.options import Options, option
from genzoo.train.objective import Batch, Objective, OptimizerSpec, StepResult


class ToyNet(nn.Module):
    """A one-conv denoiser ``net(x, labels) -> x0``, with a label bias and optional dropout."""

    def __init__(self, channels: int = 3, num_classes: int = 0, width: int = 4, dropout: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, channels, 3, padding=1)
        self.label_bias = nn.Embedding(max(num_classes, 1), width)
        self.drop = nn.Dropout(dropout)
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(x)
        if labels is not None:
            h = h + self.label_bias(labels.clamp(min=0))[:, :, None, None]
        self.calls += 1
        return self.conv2(self.drop(torch.relu(h)))


class ToyObjective(Objective):
    """Denoising loss with per-sample noise from ``batch.rng``; ``players=2`` adds a second net "b"
    stepped after two updates of "net" (a GAN-like schedule)."""

    ema_players = ("net",)
    sampled_player = "net"

    def __init__(self, net_config: dict, lr: float, players: int = 1, nan_from: int | None = None,
                 warmup_images: float = 0.0, nan_grad: bool = False):
        super().__init__()
        nets = {"net": ToyNet(**net_config)}
        if players == 2:
            nets["b"] = ToyNet(**net_config)
        self.players = nn.ModuleDict(nets)
        self.lr, self.nan_from, self.warmup_images = lr, nan_from, warmup_images
        self.register_buffer("updates_seen", torch.zeros((), dtype=torch.int64))
        self.output_dtypes: list[torch.dtype] = []
        self.grad_norms: list[float] = []  # of the gradient the optimiser used, per update
        self.nan_grad = nan_grad

    def optimizer_specs(self) -> dict[str, OptimizerSpec]:
        return {name: OptimizerSpec(lr=self.lr, warmup_images=self.warmup_images) for name in self.players}

    def schedule(self) -> list[tuple[str, int]]:
        return [("net", 2), ("b", 1)] if "b" in self.players else [("net", 1)]

    def loss(self, player: str, batch: Batch, step: int) -> StepResult:
        noise = batch.rng.randn_like(batch.images)
        out = self.players[player](batch.images + 0.5 * noise, batch.labels)
        self.output_dtypes.append(out.dtype)
        loss = (out.float() - batch.images).square().mean()
        if self.nan_from is not None and step >= self.nan_from:
            loss = loss * float("nan")
        if self.nan_grad:  # finite value, NaN gradient (0 * d sqrt(x)/dx at x = 0) for one bias entry
            bias = self.players[player].conv1.bias[0]
            loss = loss + 0.0 * torch.sqrt(bias - bias.detach())
        return StepResult(loss, {"mse": float(loss.detach())})

    def after_update(self, player: str, step: int) -> None:
        self.updates_seen += 1
        grads = [p.grad for p in self.players[player].parameters() if p.grad is not None]
        self.grad_norms.append(float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))))


@dataclass(frozen=True)
class ToyTrainOptions(Options):
    family: ClassVar[str] = "toy"

    toy_width: int = option(4, int, "channels of the toy network")
    toy_dropout: float = option(0.0, float, "dropout of the toy network")
    toy_players: int = option(1, int, "players (2: a second one updated every other step)")
    toy_nan_from: int | None = option(None, int, "a NaN loss from this step on")
    toy_nan_grad: bool = option(False, help="a NaN gradient in one bias entry", kind="switch")


@dataclass(frozen=True)
class ToySampleOptions(Options):
    family: ClassVar[str] = "toy"

    toy_scale: float = option(1.0, float, "scale of the output")


class ToyFamily(Family):
    name = "toy"
    TrainOptions = ToyTrainOptions
    SampleOptions = ToySampleOptions

    def build_objective(self, config: dict, dataset) -> ToyObjective:
        config["arch"] = "toy"
        config["net"] = {"channels": dataset.num_channels, "num_classes": dataset.num_classes,
                         "width": config.get("toy_width") or 4, "dropout": config.get("toy_dropout") or 0.0}
        warmup = config["lr_warmup_kimg"] * 1000 if config.get("lr_warmup_kimg") else 0.0
        return ToyObjective(config["net"], lr=config.get("lr") or 1e-2, nan_from=config.get("toy_nan_from"),
                            players=config.get("toy_players") or 1, warmup_images=warmup,
                            nan_grad=bool(config.get("toy_nan_grad")))

    def build_model(self, config: dict) -> nn.Module:
        return ToyNet(**config["net"])

    def sample(self, model, rng, class_labels, options):
        config = genzoo.record_of(model).config
        res, ch = config["resolution"], config["channels"]
        x = rng.randn([len(rng), ch, res, res])
        scale = options.get("toy_scale")
        return (model(x, class_labels) * (1.0 if scale is None else float(scale))).clamp(-1, 1), 1


FAMILY = ToyFamily()


class ToyDataset(torch.utils.data.Dataset):
    """Random uint8 images with labels, the item contract of genzoo.data."""

    def __init__(self, count: int = 32, resolution: int = 8, channels: int = 3, num_classes: int = 4,
                 seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (count, channels, resolution, resolution), generator=gen,
                                    dtype=torch.uint8)
        self.labels = torch.randint(0, max(num_classes, 1), (count,), generator=gen).tolist()
        self.resolution, self.num_channels, self.num_classes = resolution, channels, num_classes
        self.captions = None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], self.labels[index]


def register(monkeypatch=None) -> None:
    """Make ``--family toy`` resolve to this module."""
    if monkeypatch is not None:
        monkeypatch.setitem(genzoo.family._FAMILY_MODULES, "toy", __name__)
    else:
        genzoo.family._FAMILY_MODULES["toy"] = __name__


def toy_config(out, **overrides) -> dict:
    config = {"family": "toy", "data": "toy", "out": str(out), "steps": 4, "batch": 8, "checkpoint_every": 2,
              "sample_every": 0, "log_every": 1, "tensorboard": False, "toy_width": 4}
    config.update(overrides)
    return config


# ----------------------------------------------------------------------------- EMA


def test_ema_constant_decay_copies_before_start_then_averages():
    from genzoo.train.ema import EMA, EMARule

    net = nn.Linear(1, 1, bias=False)
    ema = EMA({"net": net}, EMARule(decay=0.9, start_step=3))
    weights = [float(t + 1) for t in range(7)]
    for step, w in enumerate(weights):
        net.weight.data.fill_(w)
        ema.update({"net": net}, step, step * 10, 10)
    # Closed form: the copy at step 2 (start 3), then e_t = 0.9 e_{t-1} + 0.1 w_t for t = 3..6.
    expected = 0.9 ** 4 * weights[2] + sum(0.1 * 0.9 ** (6 - t) * weights[t] for t in range(3, 7))
    # float32 weights (the default dtype) after 5 updates: a few ulps
    assert ema.players["net"].weight.item() == pytest.approx(expected, rel=16 * torch.finfo().eps)


def test_ema_edm_halflife_with_rampup_matches_closed_form():
    from genzoo.train.ema import EMARule

    rule = EMARule(halflife_kimg=0.5, rampup=0.05)  # 500 images
    batch = 10
    assert rule.beta(0, 0, batch) == 0.0  # the first update copies the weights
    assert rule.beta(7, 1000, batch) == pytest.approx(0.5 ** (10 / 50))  # ramp-up: 1000 * 0.05 = 50 images
    assert rule.beta(99, 20000, batch) == pytest.approx(0.5 ** (10 / 500))  # capped at the half-life
    # Half-life semantics: after halflife/batch updates the old average keeps weight 1/2.
    assert rule.beta(99, 10**6, batch) ** (500 / batch) == pytest.approx(0.5)
    assert EMARule(halflife_kimg=0.5, rampup=None).beta(0, 0, batch) == pytest.approx(0.5 ** (10 / 500))


def test_ema_rule_from_config_prefers_halflife():
    from genzoo.train.ema import EMARule

    constant = EMARule.from_config({"ema": 0.999, "ema_start": 5})
    assert constant == EMARule(decay=0.999, start_step=5, rampup=None)
    rule = EMARule.from_config({"ema": 0.999, "ema_halflife_kimg": 10, "ema_rampup": 0.05})
    assert rule.halflife_kimg == 10 and rule.beta(0, 10**9, 100) == pytest.approx(0.5 ** (100 / 10000))
    assert EMARule.from_config({"ema_rampup": 0.05}) == EMARule(halflife_kimg=500.0, rampup=0.05)


# ----------------------------------------------------------------------------- data order


def test_data_order_is_split_over_ranks_and_rounds_and_resumable():
    from genzoo.train.data import MicroBatchIndices

    def take(order, n):
        it = iter(order)
        return [next(it) for _ in range(n)]

    size, batch = 10, 8
    one = take(MicroBatchIndices(3, size, batch, per_device=8, rank=0, world=1, position=0), 3)
    r0 = take(MicroBatchIndices(3, size, batch, per_device=2, rank=0, world=2, position=0), 6)
    r1 = take(MicroBatchIndices(3, size, batch, per_device=2, rank=1, world=2, position=0), 6)
    for u in range(3):  # update u: rounds (a0 r0, a0 r1, a1 r0, a1 r1) in order make up the global batch
        assert r0[2 * u] + r1[2 * u] + r0[2 * u + 1] + r1[2 * u + 1] == one[u]
    stream = sum(one, [])
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    assert stream[:10] != stream[10:20]  # a new permutation each epoch
    resumed = take(MicroBatchIndices(3, size, batch, per_device=8, rank=0, world=1, position=8), 2)
    assert resumed == one[1:]


# ----------------------------------------------------------------------------- config files


@pytest.mark.parametrize("suffix", [".toml", ".yaml", ".json"])
def test_config_file_formats_and_unknown_keys(tmp_path, suffix):
    from genzoo.errors import UserError
    from genzoo.train.config import load_config_file

    text = {".toml": 'batch = 16\nlr-warmup-kimg = 2.5\narch = "x"\n',
            ".yaml": "batch: 16\nlr-warmup-kimg: 2.5\narch: x\n",
            ".json": '{"batch": 16, "lr_warmup_kimg": 2.5, "arch": "x"}'}[suffix]
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    assert load_config_file(path, {"batch", "lr_warmup_kimg", "arch"}) == {"batch": 16, "lr_warmup_kimg": 2.5,
                                                                           "arch": "x"}
    with pytest.raises(UserError, match=r"c\..*unknown keys arch"):
        load_config_file(path, {"batch", "lr_warmup_kimg"})


def test_mix_seed_is_spread_and_stable():
    from genzoo.train.data import mix_seed

    seeds = {mix_seed(0, 1, s, u) for s in range(50) for u in range(4)}
    assert len(seeds) == 200 and all(0 <= s < 2**63 for s in seeds)
    assert mix_seed(1, 2, 3) == mix_seed(1, 2, 3) != mix_seed(1, 3, 2)
    assert math.isfinite(float(mix_seed(7)))
