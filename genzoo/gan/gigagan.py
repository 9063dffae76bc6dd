"""GigaGAN (Kang et al., CVPR 2023): training objectives, sampling and the latent/prompt controls.

The ``gan`` family dispatches ``--arch gigagan`` here through the hooks ``add_train_arguments``,
``add_sample_arguments``, ``build_objective``, ``build_model`` and ``sample``.

Two tasks share the hooks (``--gigagan-task``):

- ``generator`` (default): text-to-image G and the multi-scale, text-conditioned D of
  :mod:`genzoo.nets.gigagan`, trained on a captioned dataset with the non-saturating loss summed
  over every (input scale, output scale) prediction, the matching-aware loss (a real image with a
  mismatched caption counts as fake, Sec. 3.3) and lazy R1;
- ``upsampler``: the asymmetric UNet super-resolution network trained on (low-res, high-res) pairs
  made from any dataset by area-downsampling, with a D that also sees the low-res input, and an L1
  reconstruction term.

Controls: :func:`style_mix` (different w at coarse and fine layers), :func:`prompt_mix` (different
prompts at different scales), :func:`interpolate_latents` and :func:`interpolate_prompts`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from genzoo import nets
from genzoo.errors import UserError
from genzoo.family import add_argument_once
from genzoo.gan.latents import slerp
from genzoo.gan.losses import ns_d_loss, ns_g_loss, r1_penalty
from genzoo.gan.objective import frozen
from genzoo.nets.gigagan import GigaGANGenerator, image_pyramid
from genzoo.nets.text import TextEmbedding
from genzoo.seeds import StackedRandomGenerator
from genzoo.train.objective import Batch, Objective, OptimizerSpec, StepResult

TASKS = ("generator", "upsampler")
TEXT_ENCODERS = ("learned", "minilm", "clip")
DEFAULT_LR = 2e-3  # StyleGAN2-style settings (Adam beta (0, 0.99)) at the CPU scale
MAX_DEFAULT_PROMPTS = 64


# -- controls -------------------------------------------------------------------------------------
def style_mix(w_coarse: torch.Tensor, w_fine: torch.Tensor, boundary: int, num_ws: int) -> torch.Tensor:
    """Per-layer styles [N, num_ws, w_dim]: layers < ``boundary`` take ``w_coarse``, the rest ``w_fine``.

    ``boundary`` 0 gives pure ``w_fine``; ``boundary`` = num_ws gives pure ``w_coarse``.
    """
    if not 0 <= boundary <= num_ws:
        raise UserError(f"--mix-layer: expected 0..{num_ws}, got {boundary}")
    coarse = (torch.arange(num_ws, device=w_coarse.device) < boundary)[None, :, None]
    return torch.where(coarse, w_coarse[:, None], w_fine[:, None])


def block_first_layers(G: GigaGANGenerator) -> list[int]:
    """Index of the first style layer of each synthesis block."""
    starts, index = [], 0
    for block in G.blocks:
        starts.append(index)
        index += block.num_ws
    return starts


@torch.no_grad()
def prompt_mix(
    G: GigaGANGenerator,
    z: torch.Tensor,
    prompts_coarse: Sequence[str],
    prompts_fine: Sequence[str],
    boundary: int,
    truncation: float = 1.0,
    rng: Any = None,
) -> torch.Tensor:
    """Prompt mixing: coarse layers (styles and cross-attention) follow one prompt, fine layers another."""
    text_c, text_f = G.encode_text(prompts_coarse), G.encode_text(prompts_fine)
    ws = style_mix(G.map(z, text_c, truncation), G.map(z, text_f, truncation), boundary, G.num_ws)
    texts = [text_c if start < boundary else text_f for start in block_first_layers(G)]
    return G.synthesis(ws, texts, rng)[G.resolution]


@torch.no_grad()
def interpolate_latents(
    G: GigaGANGenerator, z0: torch.Tensor, z1: torch.Tensor, prompt: str, steps: int, truncation: float = 1.0
) -> torch.Tensor:
    """Images along the great circle from z0 to z1 (1-D latents) for one prompt: [steps, C, H, W]."""
    zs = slerp(z0, z1, steps)
    text = G.encode_text([prompt] * steps)
    return G.synthesis(G.map(zs, text, truncation), text, _ConstNoise())[G.resolution]


@torch.no_grad()
def interpolate_prompts(
    G: GigaGANGenerator, z: torch.Tensor, prompt_a: str, prompt_b: str, steps: int, truncation: float = 1.0
) -> torch.Tensor:
    """Prompt interpolation: one latent z (1-D), text embeddings lerped from a to b: [steps, C, H, W]."""
    a, b = G.encode_text([prompt_a]), G.encode_text([prompt_b])
    texts = [a.lerp(b, float(t)) for t in torch.linspace(0, 1, steps)]
    text = TextEmbedding(
        torch.cat([t.local for t in texts]),
        torch.cat([t.mask for t in texts]),
        torch.cat([t.global_ for t in texts]),
    )
    zs = z[None].expand(steps, -1)
    return G.synthesis(G.map(zs, text, truncation), text, _ConstNoise())[G.resolution]


class _ConstNoise:
    """Noise inputs fixed across the frames of an interpolation (the same seed-0 draw in each frame)."""

    def randn(self, size: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        frame = torch.randn(tuple(size[1:]), generator=torch.Generator().manual_seed(0), dtype=dtype)
        return frame[None].expand(size[0], *frame.shape)


def mismatched_captions(
    captions: Sequence[str], generator: torch.Generator | None = None
) -> tuple[list[str], torch.Tensor]:
    """Captions rolled by a random offset in [1, N-1], and a mask of the rows whose caption really differs.

    These pairs (real image, wrong caption) are the negatives of the matching-aware loss.
    """
    n = len(captions)
    if n < 2:
        return list(captions), torch.zeros(n, dtype=torch.bool)
    shift = int(torch.randint(1, n, (1,), generator=generator))
    rolled = [captions[(i + shift) % n] for i in range(n)]
    return rolled, torch.tensor([a != b for a, b in zip(captions, rolled)])


def mean_over_scales(logits: dict, fn) -> torch.Tensor:
    """A loss averaged over the discriminator's (input scale, output scale) predictions."""
    return torch.stack([fn(v) for v in logits.values()]).mean()


def _randn(batch: Batch, shape: Sequence[int], device: torch.device) -> torch.Tensor:
    if batch.rng is not None:
        return batch.rng.randn(list(shape)).to(device)
    return torch.randn(*shape, device=device)


# -- objectives ----------------------------------------------------------------------------------
class GigaGANObjective(Objective):
    """Text-to-image GigaGAN: players G and D; schedule D then G; EMA of G is sampled."""

    ema_players = ("G",)
    sampled_player = "G"

    def __init__(
        self,
        G: nn.Module,
        D: nn.Module,
        lr: float = DEFAULT_LR,
        betas: tuple[float, float] = (0.0, 0.99),
        r1_gamma: float = 0.1,
        r1_interval: int = 4,
        match_weight: float = 1.0,
    ):
        super().__init__()
        self.players = nn.ModuleDict({"G": G, "D": D})
        self.lr, self.betas = float(lr), tuple(betas)
        self.r1_gamma, self.r1_interval, self.match_weight = (
            float(r1_gamma),
            max(1, int(r1_interval)),
            float(match_weight),
        )

    def optimizer_specs(self) -> dict[str, OptimizerSpec]:
        return {name: OptimizerSpec(lr=self.lr, betas=self.betas) for name in ("G", "D")}

    def schedule(self) -> list[tuple[str, int]]:
        return [("D", 1), ("G", 1)]

    def _captions(self, batch: Batch) -> list[str]:
        if not batch.captions:
            raise UserError(
                "--arch gigagan: the dataset has no captions; use a captioned dataset such as shapes"
            )
        return list(batch.captions)

    def loss(self, player: str, batch: Batch, step: int) -> StepResult:
        G, D = self.players["G"], self.players["D"]
        captions = self._captions(batch)
        device = batch.images.device
        z = _randn(batch, (len(captions), G.z_dim), device)
        if player == "D":
            with torch.no_grad():
                fake = G(z, prompts=captions, rng=batch.rng, return_pyramid=True)
            text = D.encode_text(captions)
            do_r1 = self.r1_gamma > 0 and step % self.r1_interval == 0
            real = batch.images.detach().requires_grad_(do_r1)
            real_logits = D(image_pyramid(real, D.pyramid), text)
            fake_logits = D({r: fake[r] for r in D.pyramid}, text)
            loss = torch.stack([ns_d_loss(real_logits[k], fake_logits[k]) for k in real_logits]).mean()
            logs = {
                "D/loss": float(loss),
                "D/real": float(torch.stack(list(real_logits.values())).mean()),
                "D/fake": float(torch.stack(list(fake_logits.values())).mean()),
            }
            wrong, differs = mismatched_captions(captions)
            if self.match_weight > 0 and bool(differs.any()):
                rows = differs.nonzero()[:, 0].to(device)
                mis_logits = D(
                    image_pyramid(batch.images[rows], D.pyramid),
                    D.encode_text([wrong[i] for i in rows.tolist()]),
                )
                match = mean_over_scales(mis_logits, lambda v: F.softplus(v).mean())
                loss = loss + self.match_weight * match
                logs["D/mismatch"] = float(torch.stack(list(mis_logits.values())).mean())
            if do_r1:
                penalty = r1_penalty(torch.stack(list(real_logits.values())).sum(0), real)
                loss = loss + 0.5 * self.r1_gamma * self.r1_interval * penalty
                logs["D/r1"] = float(penalty)
            return StepResult(loss, logs)
        if player == "G":
            fake = G(z, prompts=captions, rng=batch.rng, return_pyramid=True)
            with frozen(D):
                fake_logits = D({r: fake[r] for r in D.pyramid}, prompts=captions)
            loss = mean_over_scales(fake_logits, ns_g_loss)
            return StepResult(loss, {"G/loss": float(loss)})
        raise ValueError(f"unknown player {player!r}; expected 'G' or 'D'")


class UpsamplerObjective(Objective):
    """GigaGAN upsampler: (low-res, high-res) pairs by area-downsampling; GAN + L1 reconstruction."""

    ema_players = ("G",)
    sampled_player = "G"

    def __init__(
        self,
        G: nn.Module,
        D: nn.Module,
        lr: float = DEFAULT_LR,
        betas: tuple[float, float] = (0.0, 0.99),
        r1_gamma: float = 0.1,
        r1_interval: int = 4,
        l1_weight: float = 10.0,
    ):
        super().__init__()
        self.players = nn.ModuleDict({"G": G, "D": D})
        self.lr, self.betas = float(lr), tuple(betas)
        self.r1_gamma, self.r1_interval, self.l1_weight = (
            float(r1_gamma),
            max(1, int(r1_interval)),
            float(l1_weight),
        )

    def optimizer_specs(self) -> dict[str, OptimizerSpec]:
        return {name: OptimizerSpec(lr=self.lr, betas=self.betas) for name in ("G", "D")}

    def schedule(self) -> list[tuple[str, int]]:
        return [("D", 1), ("G", 1)]

    def loss(self, player: str, batch: Batch, step: int) -> StepResult:
        G, D = self.players["G"], self.players["D"]
        hr = batch.images
        lr_images = F.adaptive_avg_pool2d(hr, hr.shape[-1] // G.scale)
        prompts = list(batch.captions) if G.text is not None else None
        if G.text is not None and not prompts:
            raise UserError("--gigagan-task upsampler with a text encoder: the dataset has no captions")
        z = _randn(batch, (len(hr), G.z_dim), hr.device)
        if player == "D":
            with torch.no_grad():
                fake = G(lr_images, z, prompts=prompts, rng=batch.rng)
            text = D.encode_text(prompts) if D.text is not None else None
            do_r1 = self.r1_gamma > 0 and step % self.r1_interval == 0
            real = hr.detach().requires_grad_(do_r1)
            real_logits = D(real, text, cond=lr_images)
            fake_logits = D(fake, text, cond=lr_images)
            loss = torch.stack([ns_d_loss(real_logits[k], fake_logits[k]) for k in real_logits]).mean()
            logs = {"D/loss": float(loss)}
            if do_r1:
                penalty = r1_penalty(torch.stack(list(real_logits.values())).sum(0), real)
                loss = loss + 0.5 * self.r1_gamma * self.r1_interval * penalty
                logs["D/r1"] = float(penalty)
            return StepResult(loss, logs)
        if player == "G":
            fake = G(lr_images, z, prompts=prompts, rng=batch.rng)
            with frozen(D):
                fake_logits = D(fake, prompts=prompts, cond=lr_images)
            adv = mean_over_scales(fake_logits, ns_g_loss)
            l1 = (fake - hr).abs().mean()
            return StepResult(adv + self.l1_weight * l1, {"G/loss": float(adv), "G/l1": float(l1)})
        raise ValueError(f"unknown player {player!r}; expected 'G' or 'D'")


# -- the hooks the gan family calls ----------------------------------------------------------------
def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    add = lambda *flags, **kw: add_argument_once(parser, *flags, **kw)  # noqa: E731
    add(
        "--gigagan-task",
        choices=TASKS,
        default="generator",
        help="gigagan: train the text-to-image generator (default) or the super-resolution upsampler",
    )
    add(
        "--text-encoder",
        choices=TEXT_ENCODERS,
        default="learned",
        help="gigagan: text encoder: learned (trains with the GAN), minilm (frozen all-MiniLM-L6-v2 from "
        "genzoo[text]) or clip (frozen open_clip text tower from --text-weights)",
    )
    add("--text-weights", help="gigagan: local open_clip weights file for --text-encoder clip")
    add("--text-dim", type=int, default=128, help="gigagan: width of the learned text layers (default 128)")
    add(
        "--text-depth",
        type=int,
        default=2,
        help="gigagan: learned attention layers over the text (default 2)",
    )
    add(
        "--gigagan-channels",
        type=int,
        default=64,
        help="gigagan: maximum channels per layer (default 64; the paper's models use 512-1024)",
    )
    add(
        "--gigagan-kernels", type=int, default=4, help="gigagan: kernels per adaptive-kernel bank (default 4)"
    )
    add("--gigagan-z-dim", type=int, default=64, help="gigagan: latent size (default 64)")
    add("--gigagan-w-dim", type=int, default=128, help="gigagan: style size (default 128)")
    add(
        "--gigagan-attn-res",
        default="8,16",
        help="gigagan: resolutions with self- and cross-attention in G (default 8,16)",
    )
    add(
        "--match-weight",
        type=float,
        default=1.0,
        help="gigagan: weight of the matching-aware loss (real image, wrong caption = fake; default 1)",
    )
    add("--gigagan-r1", type=float, default=0.1, help="gigagan: R1 gamma (default 0.1; 0 = off)")
    add("--gigagan-r1-interval", type=int, default=4, help="gigagan: lazy R1 every N steps (default 4)")
    add("--upsample-scale", type=int, default=4, help="gigagan upsampler: scale factor (default 4)")
    add("--upsampler-text", action="store_true", help="gigagan upsampler: condition on captions too")
    add(
        "--l1-weight",
        type=float,
        default=10.0,
        help="gigagan upsampler: L1 reconstruction weight (default 10)",
    )


def add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    add = lambda *flags, **kw: add_argument_once(parser, *flags, **kw)  # noqa: E731
    add(
        "--prompt",
        action="append",
        help="gigagan: text prompt; repeat for several (seed s uses prompt s mod count); default: "
        "captions saved with the run",
    )
    add("--prompt-fine", help="gigagan prompt mixing: this prompt drives the fine layers (>= --mix-layer)")
    add(
        "--style-seed",
        type=int,
        help="gigagan style mixing: the fine layers (>= --mix-layer) take w of this seed",
    )
    add(
        "--mix-layer", type=int, help="gigagan: first style layer of the fine part (default: half the layers)"
    )
    add("--truncation", type=float, help="truncation psi (gigagan: w-space, toward the prompt's mean style)")


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    kind = config.get("text_encoder") or "learned"
    text = {
        "kind": kind,
        "dim": int(config.get("text_dim") or 128),
        "depth": int(config.get("text_depth") or 2),
    }
    if kind == "clip":
        if not config.get("text_weights"):
            raise UserError("--text-encoder clip: give --text-weights FILE (local open_clip weights)")
        text["weights"] = str(config["text_weights"])
    return text


def _resolutions(text: str, flag: str) -> list[int]:
    try:
        return [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag}: expected comma-separated resolutions like 8,16, got {text!r}") from None


def _check_resolution(resolution: int, flag: str = "--resolution") -> None:
    if resolution < 8 or resolution & (resolution - 1):
        raise UserError(f"{flag}: gigagan needs a power-of-two resolution >= 8, got {resolution}")


def default_prompts(dataset: Any, limit: int = MAX_DEFAULT_PROMPTS) -> list[str]:
    """Up to ``limit`` distinct captions from the start of the dataset (``sample``'s default prompts)."""
    captions = getattr(dataset, "captions", None)
    if not captions:
        return []
    seen: dict[str, None] = {}
    for i in range(min(len(captions), 16 * limit)):
        seen.setdefault(str(captions[i]))
        if len(seen) >= limit:
            break
    return list(seen)


def build_objective(config: dict[str, Any], dataset: Any) -> Objective:
    resolution = int(dataset.resolution)
    channels = int(getattr(dataset, "num_channels", 3))
    width = int(config.get("gigagan_channels") or 64)
    kernels = int(config.get("gigagan_kernels") or 4)
    lr = float(config.get("lr") or DEFAULT_LR)
    r1 = float(config["gigagan_r1"]) if config.get("gigagan_r1") is not None else 0.1
    r1_interval = int(config.get("gigagan_r1_interval") or 4)
    task = config.get("gigagan_task") or "generator"
    config.update(
        {
            "arch": "gigagan",
            "gigagan_task": task,
            "resolution": resolution,
            "channels": channels,
            "num_classes": 0,
            "sampled_player": "G",
        }
    )
    if task == "upsampler":
        scale = int(config.get("upsample_scale") or 4)
        _check_resolution(resolution)
        if resolution % (scale * 4):
            raise UserError(
                f"--upsample-scale {scale}: the data resolution {resolution} must divide by 4x the scale"
            )
        text = _text_config(config) if config.get("upsampler_text") else None
        if text is not None and not getattr(dataset, "captions", None):
            raise UserError(f"--upsampler-text: the dataset {config.get('data')} has no captions")
        net = {
            "img_channels": channels,
            "scale": scale,
            "down": 2,
            "channels": width,
            "num_kernels": kernels,
            "in_resolution": resolution // scale,
            "text": text,
        }
        config["net"] = net
        D = nets.build(
            "gigagan-discriminator",
            resolution=resolution,
            img_channels=channels,
            channel_base=32 * width,
            channel_max=width,
            text=text,
            cond_channels=channels,
        )
        return UpsamplerObjective(
            nets.build("gigagan-upsampler", **net),
            D,
            lr=lr,
            r1_gamma=r1,
            r1_interval=r1_interval,
            l1_weight=float(config.get("l1_weight") or 10.0),
        )
    if task != "generator":
        raise UserError(f"--gigagan-task: expected one of {', '.join(TASKS)}, got {task!r}")
    _check_resolution(resolution)
    if not getattr(dataset, "captions", None):
        raise UserError(f"--data {config.get('data')}: gigagan needs a captioned dataset (e.g. shapes)")
    text = _text_config(config)
    net = {
        "resolution": resolution,
        "img_channels": channels,
        "z_dim": int(config.get("gigagan_z_dim") or 64),
        "w_dim": int(config.get("gigagan_w_dim") or 128),
        "channel_base": 32 * width,
        "channel_max": width,
        "num_kernels": kernels,
        "attn_res": _resolutions(config.get("gigagan_attn_res") or "8,16", "--gigagan-attn-res"),
        "text": text,
        "default_prompts": default_prompts(dataset),
    }
    config["net"] = net
    G = nets.build("gigagan-generator", **net)
    D = nets.build(
        "gigagan-discriminator",
        resolution=resolution,
        img_channels=channels,
        channel_base=32 * width,
        channel_max=width,
        pyramid=G.pyramid,
        text=text,
    )
    return GigaGANObjective(
        G,
        D,
        lr=lr,
        r1_gamma=r1,
        r1_interval=r1_interval,
        match_weight=float(config.get("match_weight") if config.get("match_weight") is not None else 1.0),
    )


def build_model(config: dict[str, Any]) -> nn.Module:
    task = config.get("gigagan_task") or "generator"
    if "net" not in config:
        raise UserError("config.json: a gigagan run needs a 'net' entry with the network kwargs")
    return nets.build("gigagan-upsampler" if task == "upsampler" else "gigagan-generator", **config["net"])


def prompts_for_seeds(
    seeds: Sequence[int], prompts: Sequence[str] | str | None, fallback: Sequence[str]
) -> list[str]:
    """Seed s takes prompt s mod len(prompts): a seed's prompt never depends on batching."""
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts or fallback or [])
    if not prompts:
        raise UserError("--prompt: this GigaGAN has no saved default prompts; give --prompt TEXT")
    return [prompts[int(s) % len(prompts)] for s in seeds]


@torch.no_grad()
def sample(
    model: nn.Module, rng: StackedRandomGenerator, labels: torch.Tensor | None, options: dict[str, Any]
) -> tuple[torch.Tensor, int]:
    """One image per seed from a GigaGAN generator (prompts, truncation, style and prompt mixing)."""
    if not isinstance(model, GigaGANGenerator):
        raise UserError(
            "sample: this run is a GigaGAN upsampler; use `genzoo upsample --upsampler RUN --input ...`"
        )
    model.eval()
    n, device = len(rng), rng.device
    prompts = prompts_for_seeds(rng.seeds, options.get("prompt"), getattr(model, "default_prompts", []))
    psi = float(options.get("truncation") or 1.0)
    z = rng.randn([n, model.z_dim])
    text = model.encode_text(prompts)
    w = model.map(z, text, psi)
    boundary = options.get("mix_layer")
    boundary = model.num_ws // 2 if boundary is None else int(boundary)
    text_fine, w_fine = text, w
    if options.get("prompt_fine"):
        text_fine = model.encode_text([options["prompt_fine"]] * n)
        w_fine = model.map(z, text_fine, psi)
    if options.get("style_seed") is not None:
        z_style = StackedRandomGenerator(device, [int(options["style_seed"])] * n).randn([n, model.z_dim])
        w_fine = model.map(z_style, text_fine, psi)
    ws = style_mix(w, w_fine, boundary, model.num_ws)
    texts = [text if start < boundary else text_fine for start in block_first_layers(model)]
    images = model.synthesis(ws, texts, rng)[model.resolution]
    return images.clamp(-1, 1), 1
