"""GigaGAN (Kang et al., CVPR 2023): training objectives, sampling and the latent/prompt controls.

The ``gan`` family dispatches ``--arch gigagan`` here: its options are :class:`GigaGANTrainOptions` and
:class:`GigaGANSampleOptions`; the hooks are ``build_objective``, ``build_model`` and ``sample``.

Two tasks share the hooks (``--gigagan-task``):

- ``generator`` (default): text-to-image G and the multi-scale, text-conditioned D of
  :mod:`genzoo.nets.gigagan`, trained on a captioned dataset with the non-saturating (or rpgan) loss
  averaged over every (input scale, output scale) prediction, the matching-aware loss (a real image
  with a mismatched caption counts as fake, Sec. 3.3) and lazy R1 (and R2);
- ``upsampler``: the asymmetric UNet super-resolution network trained on (low-res, high-res) pairs
  made from any dataset by area-downsampling, with a D that also sees the low-res input, and an L1
  reconstruction term.

Controls: :func:`style_mix` (different w at coarse and fine layers), :func:`prompt_mix` (different
prompts at different scales), :func:`interpolate_latents` and :func:`interpolate_prompts`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from genzoo import nets
from genzoo import validate as V
from genzoo.errors import UserError
from genzoo.gan.latents import slerp
from genzoo.gan.parse import parse_betas, parse_resolutions
from genzoo.nets.clip import (
    VisionAidedHead,
    caption_targets,
    contrastive_logits,
    info_nce,
    load_clip,
    save_clip,
)
from genzoo.nets.gigagan import (
    D_HEADS,
    D_INITS,
    D_NORMS,
    D_POOLS,
    UPSAMPLER_BASES,
    UPSAMPLER_LATENTS,
    GigaGANGenerator,
    image_pyramid,
)
from genzoo.nets.text import TextEmbedding, build_vocabulary, phrase_pattern
from genzoo.options import Options, option
from genzoo.seeds import StackedRandomGenerator
from genzoo.train.adversarial import discriminator_loss, frozen, generator_loss
from genzoo.train.objective import Batch, Objective, OptimizerSpec, StepResult

TEXT_ENCODERS = ("learned", "minilm", "clip")
TOKENIZERS = ("vocab", "hash")
#: kinds of wrong captions for the matching-aware loss: "rolled" (another item's caption: the paper's
#: mismatched pairs) and one per caption attribute (the caption with only that attribute changed)
NEGATIVES = ("rolled", "shape", "color", "size", "position")
DEFAULT_LR = 2e-3  # StyleGAN2-style settings (Adam beta (0, 0.99)) at the CPU scale
MAX_DEFAULT_PROMPTS = 64
#: the genzoo CLIP that --clip-pretrain-images trains, in the run directory
CLIP_FILE = "clip.safetensors"
#: gigagan-upsampler: the probability of each input degradation (``--degrade``)
DEGRADE_PROBABILITY = 0.5


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


def swap_attribute(
    caption: str, choices: Sequence[str], generator: torch.Generator | None = None
) -> str | None:
    """``caption`` with its one phrase from ``choices`` replaced by a different, random one of them.

    The longest phrase found (as whole words) is swapped; None when the caption has none of them.
    """
    text = str(caption)
    for phrase in sorted(choices, key=len, reverse=True):
        pattern = phrase_pattern(phrase)
        if pattern.search(text):
            others = [c for c in choices if c != phrase]
            if not others:
                return None
            other = others[int(torch.randint(len(others), (1,), generator=generator))]
            return pattern.sub(other, text, count=1)
    return None


def matching_negatives(
    captions: Sequence[str],
    kinds: Sequence[str],
    attribute_words: Mapping[str, Sequence[str]] | None,
    generator: torch.Generator | None = None,
) -> tuple[list[int], list[str], list[str]]:
    """Wrong captions for the matching-aware loss: (rows, wrong captions, kind of each), one per row at most.

    Row i takes the kind ``kinds[(i + offset) % len(kinds)]`` (a random offset per call), so every kind
    gets an equal share of the batch at the cost of one D pass; "rolled" is another row's caption, an
    attribute kind the row's caption with only that attribute's phrase changed. Rows whose caption does
    not change (the same rolled caption, no phrase of the attribute) are left out.
    """
    kinds = list(kinds)
    rolled, differs = mismatched_captions(captions, generator)
    offset = int(torch.randint(len(kinds), (1,), generator=generator))
    rows, wrong, used = [], [], []
    for i, caption in enumerate(captions):
        kind = kinds[(i + offset) % len(kinds)]
        if kind == "rolled":
            other = rolled[i] if bool(differs[i]) else None
        else:
            other = swap_attribute(caption, (attribute_words or {}).get(kind, ()), generator)
        if other is not None and other != caption:
            rows.append(i)
            wrong.append(other)
            used.append(kind)
    return rows, wrong, used


def parse_negatives(text: str | Sequence[str]) -> list[str]:
    """``"rolled,shape"`` -> ["rolled", "shape"] (the --match-negatives flag)."""
    kinds = [k.strip() for k in (text.split(",") if isinstance(text, str) else text) if k.strip()]
    bad = [k for k in kinds if k not in NEGATIVES]
    if bad or not kinds:
        raise UserError(f"--match-negatives: expected a comma list of {', '.join(NEGATIVES)}, got {text!r}")
    return kinds


def _randn(batch: Batch, shape: Sequence[int], device: torch.device) -> torch.Tensor:
    if batch.rng is not None:
        return batch.rng.randn(list(shape)).to(device)
    return torch.randn(*shape, device=device)


# -- objectives ----------------------------------------------------------------------------------
class _TwoPlayer(Objective):
    """Players G and D (EMA of G sampled), one D step then one G step, lazy R1 (and R2) on D.

    ``text_lr_mul`` scales the learning rate of each player's text encoder (its ``text.`` parameters).
    """

    ema_players = ("G",)
    sampled_player = "G"

    def __init__(
        self,
        G: nn.Module,
        D: nn.Module,
        lr: float = DEFAULT_LR,
        d_lr: float | None = None,
        betas: tuple[float, float] = (0.0, 0.99),
        r1_gamma: float = 0.1,
        r1_interval: int = 4,
        r2_gamma: float = 0.0,
        loss: str = "ns",
        text_lr_mul: float = 1.0,
    ):
        super().__init__()
        self.players = nn.ModuleDict({"G": G, "D": D})
        self.lr, self.d_lr = float(lr), float(lr if d_lr is None else d_lr)
        self.betas = tuple(betas)
        self.r1_gamma, self.r1_interval = float(r1_gamma), max(1, int(r1_interval))
        self.r2_gamma, self.loss_name = float(r2_gamma), loss
        self.text_lr_mul = float(text_lr_mul)

    def optimizer_specs(self) -> dict[str, OptimizerSpec]:
        mul = {"text.": self.text_lr_mul} if self.text_lr_mul != 1.0 else {}
        return {
            "G": OptimizerSpec(lr=self.lr, betas=self.betas, lr_mul=dict(mul)),
            "D": OptimizerSpec(lr=self.d_lr, betas=self.betas, lr_mul=dict(mul)),
        }

    def schedule(self) -> list[tuple[str, int]]:
        return [("D", 1), ("G", 1)]

    def penalties_due(self, step: int) -> tuple[float, float]:
        """(γ₁, γ₂) at this step: lazy regularisation (StyleGAN2) every r1_interval steps, else zeros."""
        if step % self.r1_interval:
            return 0.0, 0.0
        return self.r1_gamma, self.r2_gamma

    def d_step(self, real_logits: dict, fake_logits: dict, real: torch.Tensor, fake: torch.Tensor,
               step: int) -> tuple[torch.Tensor, dict]:
        """D's loss with lazy R1/R2 scaled by the interval. All pyramid levels are pooled from ``real``
        (and from G's full-resolution output), so one gradient covers every input scale."""
        r1, r2 = self.penalties_due(step)
        return discriminator_loss(
            self.loss_name, real_logits, fake_logits, real, fake, r1, r2, self.r1_interval
        )

    def g_loss(self, D: nn.Module, fake_logits: dict, real_inputs: Any) -> torch.Tensor:
        """G's loss over the scales; rpgan pairs each fake with D's logit of the batch's real image."""
        real_logits = None
        if self.loss_name == "rpgan":
            with torch.no_grad():
                real_logits = D(*real_inputs[0], **real_inputs[1])
        return generator_loss(self.loss_name, fake_logits, real_logits)


class GigaGANObjective(_TwoPlayer):
    """Text-to-image GigaGAN: multi-scale GAN loss + matching-aware loss + lazy R1 (and R2).

    ``negatives``: the kinds of wrong caption (:data:`NEGATIVES`) whose pairs with real images D must
    call fake; the attribute kinds need the dataset's ``attribute_words`` (phrases per attribute).
    """

    def __init__(
        self,
        G: nn.Module,
        D: nn.Module,
        match_weight: float = 1.0,
        negatives: Sequence[str] = ("rolled",),
        attribute_words: Mapping[str, Sequence[str]] | None = None,
        clip: nn.Module | None = None,
        clip_weight: float = 0.0,
        vision_weight: float = 0.0,
        clip_negatives: Sequence[str] = (),
        clip_shift: int = 0,
        **kwargs: Any,
    ):
        super().__init__(G, D, **kwargs)
        self.clip_weight, self.vision_weight = float(clip_weight), float(vision_weight)
        if (self.clip_weight > 0 or self.vision_weight > 0) and clip is None:
            raise UserError("--clip-weight/--vision-weight: give --clip-model FILE or "
                            "--clip-pretrain-images N")
        if self.vision_weight > 0 and getattr(D, "vision", None) is None:
            raise ValueError("vision_weight > 0 needs D.vision (a VisionAidedHead); see build_objective")
        object.__setattr__(self, "clip", clip)  # frozen, never saved (a file of its own)
        self.clip_negatives = list(clip_negatives)
        self.clip_shift = int(clip_shift)
        self.match_weight = float(match_weight)
        self.negatives = list(negatives)
        self.attribute_words = {k: list(v) for k, v in (attribute_words or {}).items()}

    def _captions(self, batch: Batch) -> list[str]:
        if not batch.captions:
            raise UserError("--arch gigagan: the dataset has no captions; use a captioned one such as shapes")
        return list(batch.captions)

    def loss(self, player: str, batch: Batch, step: int) -> StepResult:
        G, D = self.players["G"], self.players["D"]
        captions = self._captions(batch)
        z = _randn(batch, (len(captions), G.z_dim), batch.images.device)
        r1, r2 = self.penalties_due(step)
        if player == "D":
            with torch.no_grad():
                fake = G(z, prompts=captions, rng=batch.rng, return_pyramid=True)
            fake = {r: fake[r].detach().requires_grad_(r2 > 0) for r in D.pyramid}
            text = D.encode_text(captions)
            real = batch.images.detach().requires_grad_(r1 > 0)
            loss, logs = self.d_step(
                D(image_pyramid(real, D.pyramid), text), D(fake, text), real, list(fake.values()), step
            )
            if self.vision_weight > 0:
                vision = self.vision_d_loss(D, batch.images, fake[G.resolution].detach(), captions)
                logs["D/vision"] = float(vision.detach())
                loss = loss + self.vision_weight * vision
            if self.match_weight > 0:
                match = self.matching_aware_loss(D, batch.images, captions, logs)
                if match is not None:
                    loss = loss + self.match_weight * match
            return StepResult(loss, logs)
        if player == "G":
            fake = G(z, prompts=captions, rng=batch.rng, return_pyramid=True)
            with frozen(D):
                text = D.encode_text(captions)
                fake_logits = D({r: fake[r] for r in D.pyramid}, text)
                loss = self.g_loss(D, fake_logits, ((image_pyramid(batch.images, D.pyramid), text), {}))
                logs = {"G/loss": float(loss.detach())}
                if self.clip_weight > 0 or self.vision_weight > 0:
                    loss = loss + self.clip_g_loss(D, fake[G.resolution], captions, logs)
            return StepResult(loss, logs)
        raise ValueError(f"unknown player {player!r}; expected 'G' or 'D'")

    def clip_g_loss(self, D: nn.Module, images: torch.Tensor, captions: list[str], logs: dict
                    ) -> torch.Tensor:
        """G's CLIP terms (Sec. 3.4): λ_CLIP · the cross-entropy of G's image, embedded by the frozen CLIP,
        picking its own caption among the batch's (:func:`~genzoo.nets.clip.info_nce`; identical captions
        count as positives), + λ_vision · softplus(−V(x, c)) of the vision-aided head V on frozen CLIP
        features. Call with D frozen."""
        clip = self.clip
        with torch.no_grad():
            text_emb = clip.encode_text(captions)
        features = clip.image.features(random_shift(images, self.clip_shift))
        loss = images.new_zeros(())
        if self.clip_weight > 0:
            image_emb = F.normalize(clip.image.proj(features), dim=-1)
            logits = contrastive_logits(image_emb, text_emb, clip.logit_scale())
            targets = caption_targets(captions, logits.device)
            if self.clip_negatives:
                extra = self.attribute_negative_logits(image_emb, captions)
                logits = torch.cat([logits, extra], 1)
                targets = torch.cat([targets, targets.new_zeros(extra.shape)], 1)
            term = info_nce(logits, targets)
            logs["G/clip"] = float(term.detach())
            loss = loss + self.clip_weight * term
        if self.vision_weight > 0:
            term = F.softplus(-D.vision(features, text_emb)).mean()
            logs["G/vision"] = float(term.detach())
            loss = loss + self.vision_weight * term
        return loss

    def attribute_negative_logits(self, image_emb: torch.Tensor, captions: list[str]) -> torch.Tensor:
        """Extra CLIP-loss columns [N, A]: the scaled similarity of image i to its own caption with one
        attribute of ``clip_negatives`` changed to each other value (rows with fewer are padded with a
        logit that softmax ignores): the in-batch captions nearly always differ in several attributes, so
        without these the loss barely asks for the shape (docs/gigagan.md)."""
        from genzoo.train.clip import attribute_alternatives

        words = {k: self.attribute_words.get(k, ()) for k in self.clip_negatives}
        groups = [[c for alts in attribute_alternatives(caption, words).values() for c in alts]
                  for caption in captions]
        width = max((len(g) for g in groups), default=0)
        out = image_emb.new_full((len(captions), width), -1e4)
        flat = [c for g in groups for c in g]
        if not flat:
            return out
        with torch.no_grad():
            alt_emb = self.clip.encode_text(flat)
        scale, start = self.clip.logit_scale(), 0
        rows = []
        for i, g in enumerate(groups):
            row = scale * alt_emb[start : start + len(g)] @ image_emb[i]
            rows.append(torch.cat([row, out[i, len(g):]]))
            start += len(g)
        return torch.stack(rows)

    def vision_d_loss(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor, captions: list[str]
                      ) -> torch.Tensor:
        """The vision-aided discriminator's loss (Kumari et al. 2022, as GigaGAN uses it): the
        non-saturating logistic loss of the head V on the frozen CLIP's image features and text
        embedding, softplus(−V(x_real, c)) + softplus(V(G(z, c), c))."""
        clip = self.clip
        with torch.no_grad():
            text_emb = clip.encode_text(captions)
            f_real = clip.image.features(random_shift(real, self.clip_shift))
            f_fake = clip.image.features(random_shift(fake, self.clip_shift))
        return F.softplus(-D.vision(f_real, text_emb)).mean() + F.softplus(D.vision(f_fake, text_emb)).mean()

    def matching_aware_loss(
        self, D: nn.Module, images: torch.Tensor, captions: list[str], logs: dict | None = None
    ) -> torch.Tensor | None:
        """GigaGAN Sec. 3.3: E[softplus(D(x, c_wrong))]: a real image with a wrong caption is fake.

        The wrong captions are :func:`matching_negatives` of the configured kinds; None when no row
        of the batch got one.
        """
        rows, wrong, kinds = matching_negatives(captions, self.negatives, self.attribute_words)
        if not rows:
            return None
        logits = D(image_pyramid(images[rows], D.pyramid), D.encode_text(wrong))
        per_row = torch.stack([F.softplus(v) for v in logits.values()]).mean(0)
        if logs is not None:
            logs["D/mismatch"] = float(per_row.detach().mean())
            for kind in sorted(set(kinds)):
                picked = [j for j, k in enumerate(kinds) if k == kind]
                logs[f"D/mismatch_{kind}"] = float(per_row.detach()[picked].mean())
        return per_row.mean()


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """Each image translated by its own random (dy, dx) in [-max_shift, max_shift] pixels, edges
    reflect-padded; differentiable (a crop). ``max_shift`` 0 returns ``images``."""
    if max_shift <= 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4, mode="reflect")
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator).tolist()
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)])


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image isotropic Gaussian blur (``sigma`` [N] in pixels; 0 leaves an image as it is)."""
    radius = max(1, int(torch.ceil(3 * sigma.max()).item()))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    weights = torch.exp(-0.5 * (offsets[None] / sigma.clamp_min(1e-3)[:, None].to(x.dtype)) ** 2)
    weights = weights / weights.sum(1, keepdim=True)
    n, c, h, w = x.shape
    kernel = weights.repeat_interleave(c, 0)  # [N*C, K]
    y = F.pad(x.reshape(1, n * c, h, w), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, kernel[:, None, None, :], groups=n * c)
    y = F.conv2d(y, kernel[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def degrade(hr: torch.Tensor, scale: int, probability: float, generator: torch.Generator | None = None
            ) -> torch.Tensor:
    """The upsampler's low-res input: area downsampling, or with ``probability`` per stage a
    Real-ESRGAN-style first-order degradation (the paper's Sec. 3.5 trains on degraded inputs):
    Gaussian blur (σ ~ U(0.2, 1)·scale/2 HR pixels), a random resize kernel (area, bilinear or bicubic,
    antialiased) and Gaussian noise (σ ~ U(0, 0.05) in [-1, 1] units). JPEG is not simulated."""
    n, size = len(hr), hr.shape[-1] // scale
    u = torch.rand(n, 4, generator=generator).to(hr.device)
    x = hr
    if probability > 0:
        sigma = (0.2 + 0.8 * u[:, 1]) * scale / 2
        sigma = torch.where(u[:, 0] < probability, sigma, torch.zeros_like(sigma))
        if bool((sigma > 0).any()):
            x = gaussian_blur(x, sigma)
    low = F.adaptive_avg_pool2d(x, size)
    if probability > 0:
        mode = int(torch.randint(3, (1,), generator=generator))
        if mode:
            resized = F.interpolate(x, size=size, mode=("bilinear", "bicubic")[mode - 1], antialias=True,
                                    align_corners=False)
            low = torch.where((u[:, 2] < probability)[:, None, None, None], resized, low)
        noise = torch.randn(low.shape, generator=generator).to(low.device)
        strength = torch.where(u[:, 3] < probability, 0.05 * u[:, 1], torch.zeros_like(u[:, 1]))
        low = low + noise * strength[:, None, None, None]
    return low.clamp(-1, 1)


class UpsamplerObjective(_TwoPlayer):
    """GigaGAN upsampler (Sec. 3.5): (low-res, high-res) pairs made by :func:`degrade`; the GAN loss with
    the multi-scale D (which also sees the low-res input), + L1 and, with a weights file, LPIPS."""

    def __init__(self, G: nn.Module, D: nn.Module, l1_weight: float = 10.0, lpips_weight: float = 0.0,
                 lpips: nn.Module | None = None, degrade: float = DEGRADE_PROBABILITY, **kwargs: Any):
        super().__init__(G, D, **kwargs)
        self.l1_weight, self.lpips_weight = float(l1_weight), float(lpips_weight)
        self.degrade = float(degrade)
        if self.lpips_weight > 0 and lpips is None:
            raise UserError("--lpips-weight: give the LPIPS weights file with --lpips-weights FILE "
                            "(genzoo never downloads weights)")
        object.__setattr__(self, "lpips", lpips)  # frozen, never saved

    def loss(self, player: str, batch: Batch, step: int) -> StepResult:
        G, D = self.players["G"], self.players["D"]
        hr = batch.images
        low = degrade(hr, G.scale, self.degrade)
        prompts = list(batch.captions or []) if G.text is not None else None
        if G.text is not None and not prompts:
            raise UserError("--upsampler-text: the dataset has no captions")
        z = _randn(batch, (len(hr), G.z_dim), hr.device) if G.latent == "random" else None  # None: z = 0
        if player == "D":
            with torch.no_grad():
                fake = G(low, z, prompts=prompts, rng=batch.rng)
            r1, r2 = self.penalties_due(step)
            text = D.encode_text(prompts) if D.text is not None else None
            real = hr.detach().requires_grad_(r1 > 0)
            fake = fake.detach().requires_grad_(r2 > 0)
            loss, logs = self.d_step(D(real, text, cond=low), D(fake, text, cond=low), real, fake, step)
            return StepResult(loss, logs)
        if player == "G":
            fake = G(low, z, prompts=prompts, rng=batch.rng)
            with frozen(D):
                text = D.encode_text(prompts) if D.text is not None else None
                fake_logits = D(fake, text, cond=low)
                adv = self.g_loss(D, fake_logits, ((hr, text), {"cond": low}))
            l1 = (fake - hr).abs().mean()
            loss = adv + self.l1_weight * l1
            logs = {"G/loss": float(adv.detach()), "G/l1": float(l1.detach())}
            if self.lpips_weight > 0:
                perceptual = self.lpips.to(hr.device)(fake.float(), hr.float()).mean()  # both in [-1, 1]
                loss = loss + self.lpips_weight * perceptual
                logs["G/lpips"] = float(perceptual.detach())
            return StepResult(loss, logs)
        raise ValueError(f"unknown player {player!r}; expected 'G' or 'D'")


# -- the hooks the gan family calls ----------------------------------------------------------------
#: --arch names served here: the text-to-image generator and the super-resolution upsampler
ARCHES = ("gigagan", "gigagan-upsampler")
#: defaults of the shared gan flags (None there) when --arch is a GigaGAN one
DEFAULTS = {
    "z_dim": 64,
    "g_ch": 64,
    "d_ch": 64,
    "attn_res": "8,16",
    "r1_gamma": 0.1,
    "betas": "0,0.99",
    "loss": "ns",
    "g_lr": DEFAULT_LR,
    "d_lr": DEFAULT_LR,
    "r2_gamma": 0.0,
    "match_negatives": ",".join(NEGATIVES),
    "text_tokenizer": "vocab",
    "text_lr_mul": 0.1,
    "d_head": "projection",
    "d_norm": "none",
    "d_pool": "avg",
    "d_init": "torch",
    "upsampler_base": "bicubic",
    "upsampler_latent": "zero",
}

#: gan family (BigGAN) options GigaGAN does not read
NOT_READ = ("d_steps", "adam_eps", "ortho_reg", "diffaugment", "shared_dim")
#: GigaGAN options one of its networks does not read
NOT_READ_BY = {
    "gigagan": ("upsample_scale", "upsampler_text", "upsampler_base", "upsampler_latent", "degrade",
                "lpips_weight", "lpips_weights", "l1_weight"),
    "gigagan-upsampler": ("match_weight", "match_negatives", "d_norm", "d_pool", "d_init", "clip_weight",
                          "vision_weight", "clip_model", "clip_pretrain_images", "clip_negatives",
                          "clip_shift"),
}


@dataclass(frozen=True)
class GigaGANTrainOptions(Options):
    """GigaGAN's own ``genzoo train --family gan`` options; it also reads the gan family's --z-dim, --g-ch,
    --d-ch, --attn-res, --r1-gamma, --g-lr, --d-lr, --betas and --loss (unset: ``DEFAULTS`` above)."""

    family: ClassVar[str] = "gan (GigaGAN)"
    #: the help group of these flags in ``genzoo train --help``
    group: ClassVar[str] = "gan family (GigaGAN: --arch gigagan | gigagan-upsampler)"

    text_encoder: str = option("learned", help="text encoder: learned (trains with the GAN), minilm (frozen "
                               "all-MiniLM-L6-v2 from genzoo[text]) or clip (frozen open_clip text tower "
                               "from --text-weights)", choices=TEXT_ENCODERS)
    text_weights: str | None = option(None, None, "local open_clip weights file for --text-encoder clip")
    text_dim: int = option(128, V.positive_int, "width of GigaGAN's learned text layers (default 128)")
    text_depth: int = option(2, V.positive_int, "learned attention layers over the text (default 2)")
    kernels: int = option(4, V.positive_int, "GigaGAN: kernels per adaptive-kernel bank (default 4)")
    w_dim: int = option(128, V.positive_int, "GigaGAN: style size (default 128)")
    match_weight: float = option(1.0, V.nonnegative_float, "GigaGAN: weight of the matching-aware loss (real "
                                 "image + wrong caption = fake; default 1)")
    match_negatives: str | None = option(None, None, "GigaGAN: kinds of wrong caption for the matching-aware "
                                         f"loss, a comma list of {', '.join(NEGATIVES)} (default: all; the "
                                         "paper's: rolled = another item's caption)")
    text_tokenizer: str | None = option(None, help="--text-encoder learned: vocab (the training captions' "
                                        "words, one id each; default) or hash (CRC32 buckets, which can "
                                        "collide: the old default)", choices=TOKENIZERS)
    text_lr_mul: float | None = option(None, V.positive_float, "GigaGAN: learning-rate multiplier of G's and "
                                       f"D's text encoders (default {DEFAULTS['text_lr_mul']}; 1: the "
                                       "players' lr)")
    d_head: str | None = option(None, help="GigaGAN: D's prediction head at each scale: projection (linear "
                                "+ <proj(t_global), f> on averaged features; default) or cmap "
                                "(StyleGAN2-ADA: minibatch stddev, conv, fully connected over the flattened "
                                "map, projected onto the mapped text, no unconditional term)",
                                choices=D_HEADS)
    d_norm: str | None = option(None, help="GigaGAN: normalisation after each conv of D's trunk: none "
                                "(default) or batch (BatchNorm)", choices=D_NORMS)
    d_pool: str | None = option(None, help="GigaGAN: pooling of the residual branch of D's down stages: avg "
                                "(default) or max", choices=D_POOLS)
    d_init: str | None = option(None, help="GigaGAN: initialisation of D's convs: torch (PyTorch's default; "
                                "default) or he (He normal, zero biases; with --d-pool max D's trunk learns "
                                "shape at 16 px)", choices=D_INITS)
    clip_weight: float = option(0.0, V.nonnegative_float, "GigaGAN: weight of the CLIP contrastive loss on G "
                                "(Sec. 3.4; needs --clip-model or --clip-pretrain-images; default 0: off)")
    vision_weight: float = option(0.0, V.nonnegative_float, "GigaGAN: weight of the vision-aided "
                                  "discriminator loss (a trainable head on frozen CLIP image features; needs "
                                  "--clip-model or --clip-pretrain-images; default 0: off)")
    clip_negatives: str | None = option(None, None, "GigaGAN: comma list of caption attributes (shape, "
                                        "color, size, position) whose one-attribute-changed captions join "
                                        "the CLIP loss as extra negatives of each image (default: none, the "
                                        "paper's in-batch captions only)")
    clip_shift: int = option(0, V.nonnegative_int, "GigaGAN: translate G's (and, for the vision-aided D, the "
                             "real) images by a random shift of up to N pixels before the frozen CLIP, so "
                             "G cannot satisfy it with pixel-exact patterns (default 0)")
    clip_model: str | None = option(None, None, "GigaGAN: a genzoo CLIP file (safetensors, from "
                                    "--clip-pretrain-images or genzoo.train.clip) for --clip-weight and "
                                    "--vision-weight")
    clip_pretrain_images: int = option(0, V.nonnegative_int, "GigaGAN: first train a genzoo CLIP on this "
                                       "many of the training set's (image, caption) pairs, saved as "
                                       f"{CLIP_FILE} in the run directory and reused on --resume (default 0)")
    r1_interval: int = option(4, V.positive_int, "GigaGAN: lazy R1 (and R2) every N steps (default 4)")
    upsample_scale: int = option(4, V.positive_int, "gigagan-upsampler: scale factor (default 4)")
    upsampler_text: bool = option(False, help="gigagan-upsampler: condition on the captions too",
                                  kind="switch")
    upsampler_base: str | None = option(None, help="gigagan-upsampler: the fixed upsampling the network adds "
                                        "its residual to: bicubic (default) or bilinear (before issue #23)",
                                        choices=UPSAMPLER_BASES)
    upsampler_latent: str | None = option(None, help="gigagan-upsampler: z in training and sampling: zero "
                                          "(default; deterministic) or random (z ~ N(0, I), style-based as "
                                          "the generator: before issue #23)", choices=UPSAMPLER_LATENTS)
    degrade: float | None = option(None, V.nonnegative_float, "gigagan-upsampler: probability of each input "
                                   "degradation (blur, resize kernel, noise; default "
                                   f"{DEGRADE_PROBABILITY}; 0: area downsampling only)")
    lpips_weight: float | None = option(None, V.nonnegative_float, "gigagan-upsampler: LPIPS loss weight "
                                        "(default 1 with --lpips-weights, else 0)")
    lpips_weights: str | None = option(None, None, "LPIPS (VGG) weights file, never downloaded (see "
                                       "genzoo.nets.lpips)")
    l1_weight: float = option(10.0, V.nonnegative_float, "gigagan-upsampler: L1 reconstruction weight "
                              "(default 10)")


@dataclass(frozen=True)
class GigaGANSampleOptions(Options):
    """``genzoo sample`` options of a GigaGAN generator."""

    family: ClassVar[str] = "gan (GigaGAN)"

    prompt: list[str] | None = option(None, None, "GigaGAN: text prompt; repeat for several (seed s takes "
                                      "prompt s mod count); default: captions saved with the run",
                                      kind="repeat")
    prompt_fine: str | None = option(None, None, "GigaGAN prompt mixing: this prompt drives the fine layers "
                                     "(>= --mix-layer)")
    style_seed: int | None = option(None, V.nonnegative_int, "GigaGAN style mixing: fine layers (>= "
                                    "--mix-layer) take this seed's w")
    mix_layer: int | None = option(None, V.nonnegative_int, "GigaGAN: first style layer of the fine part "
                                   "(default: half the layers)")
    truncation: float | None = option(None, V.positive_float, "truncation psi (GigaGAN: in w-space, toward "
                                      "the prompt's mean style)")


def _get(config: dict[str, Any], key: str, default: Any = None) -> Any:
    value = config.get(key)
    if value is not None:
        return value
    return DEFAULTS[key] if default is None else default


def _text_config(config: dict[str, Any], dataset: Any = None) -> dict[str, Any]:
    kind = config.get("text_encoder") or "learned"
    text = {
        "kind": kind,
        "dim": int(_get(config, "text_dim", 128)),
        "depth": int(_get(config, "text_depth", 2)),
    }
    tokenizer = _get(config, "text_tokenizer")
    if tokenizer not in TOKENIZERS:
        raise UserError(f"--text-tokenizer: expected vocab or hash, got {tokenizer!r}")
    if kind == "learned" and tokenizer == "vocab":
        captions = getattr(dataset, "captions", None)
        if not captions:
            raise UserError("--text-tokenizer vocab: the dataset has no captions to take the words from")
        text["vocab"] = build_vocabulary(captions)
    if kind == "clip":
        if not config.get("text_weights"):
            raise UserError("--text-encoder clip: give --text-weights FILE (local open_clip weights)")
        text["weights"] = str(config["text_weights"])
    return text


def _choice(config: dict[str, Any], key: str, choices: Sequence[str]) -> str:
    value = _get(config, key)
    if value not in choices:
        raise UserError(f"--{key.replace('_', '-')}: expected one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _check_resolution(resolution: int) -> None:
    if resolution < 8 or resolution & (resolution - 1):
        raise UserError(f"--resolution: GigaGAN needs a power-of-two resolution >= 8, got {resolution}")


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
    arch = config.get("arch") or "gigagan"
    if arch not in ARCHES:
        raise UserError(f"--arch: expected one of {', '.join(ARCHES)}, got {arch!r}")
    resolution = int(dataset.resolution)
    channels = int(getattr(dataset, "num_channels", 3))
    _check_resolution(resolution)
    if config.get("diffaugment"):
        raise UserError("--diffaugment: not supported with GigaGAN (its D sees aligned multi-scale pyramids)")
    loss = _get(config, "loss")
    if loss not in ("ns", "rpgan"):
        raise UserError(f"--loss {loss}: GigaGAN trains with ns (non-saturating, the paper's) or rpgan")
    negatives = parse_negatives(_get(config, "match_negatives"))
    d_head = _choice(config, "d_head", D_HEADS)
    for key in DEFAULTS:  # resolved values are saved in config.json
        config[key] = _get(config, key)
    if config.get("ema") is None and config.get("ema_halflife_kimg") is None:
        config["ema_halflife_kimg"] = 10.0  # StyleGAN2's G EMA (10 kimg at batch 32), ramped up
    g_ch, d_ch, kernels = int(config["g_ch"]), int(config["d_ch"]), int(_get(config, "kernels", 4))
    common = {
        "lr": float(config["g_lr"]),
        "d_lr": float(config["d_lr"]),
        "betas": parse_betas(config["betas"]),
        "r1_gamma": float(config["r1_gamma"]),
        "r1_interval": int(_get(config, "r1_interval", 4)),
        "r2_gamma": float(config["r2_gamma"]),
        "loss": loss,
        "text_lr_mul": float(config["text_lr_mul"]),
    }
    config.update(
        {
            "arch": arch,
            "resolution": resolution,
            "channels": channels,
            "num_classes": 0,
            "sampled_player": "G",
        }
    )
    if arch == "gigagan-upsampler":
        scale = int(_get(config, "upsample_scale", 4))
        if scale < 2 or scale & (scale - 1) or resolution % (scale * 4):
            raise UserError(
                f"--upsample-scale {scale}: expected a power of two >= 2 with the data resolution "
                f"{resolution} divisible by 4x the scale"
            )
        text = _text_config(config, dataset) if config.get("upsampler_text") else None
        if text is not None and not getattr(dataset, "captions", None):
            raise UserError(f"--upsampler-text: the dataset {config.get('data')} has no captions")
        if d_head == "cmap" and text is None:
            raise UserError("--d-head cmap: the upsampler's D needs text to project onto (--upsampler-text)")
        net = {
            "img_channels": channels,
            "scale": scale,
            "down": 2,
            "channels": g_ch,
            "num_kernels": kernels,
            "in_resolution": resolution // scale,
            "text": text,
            "base": _choice(config, "upsampler_base", UPSAMPLER_BASES),
            "latent": _choice(config, "upsampler_latent", UPSAMPLER_LATENTS),
        }
        config["net"] = net
        D = nets.build(
            "gigagan-discriminator",
            resolution=resolution,
            img_channels=channels,
            channel_base=32 * d_ch,
            channel_max=d_ch,
            text=text,
            cond_channels=channels,
            head=d_head,
        )
        lpips_file = config.get("lpips_weights")
        lpips_weight = config.get("lpips_weight")
        lpips_weight = float(1.0 if lpips_weight is None and lpips_file else lpips_weight or 0.0)
        degrade_p = float(_get(config, "degrade", DEGRADE_PROBABILITY))
        if not 0 <= degrade_p <= 1:
            raise UserError(f"--degrade: expected a probability in [0, 1], got {degrade_p}")
        config.update({"lpips_weight": lpips_weight, "degrade": degrade_p})
        lpips = None
        if lpips_weight > 0:
            if not lpips_file:
                raise UserError("--lpips-weight: give the LPIPS weights file with --lpips-weights FILE")
            from genzoo.nets.lpips import LPIPS

            lpips = LPIPS.from_file(lpips_file)
        return UpsamplerObjective(
            nets.build("gigagan-upsampler", **net),
            D,
            l1_weight=float(_get(config, "l1_weight", 10.0)),
            lpips_weight=lpips_weight,
            lpips=lpips,
            degrade=degrade_p,
            **common,
        )
    if not getattr(dataset, "captions", None):
        raise UserError(f"--data {config.get('data')}: GigaGAN needs a captioned dataset (e.g. shapes)")
    text = _text_config(config, dataset)
    attn = parse_resolutions(config["attn_res"])
    net = {
        "resolution": resolution,
        "img_channels": channels,
        "z_dim": int(config["z_dim"]),
        "w_dim": int(_get(config, "w_dim", 128)),
        "channel_base": 32 * g_ch,
        "channel_max": g_ch,
        "num_kernels": kernels,
        "attn_res": attn,
        "text": text,
        "default_prompts": default_prompts(dataset),
    }
    config["net"] = net
    G = nets.build("gigagan-generator", **net)
    clip_negatives = parse_clip_negatives(config.get("clip_negatives"), dataset)
    if clip_negatives and not float(config.get("clip_weight") or 0.0):
        raise UserError("--clip-negatives: used only by --clip-weight; set it above 0")
    clip = frozen_clip(config, dataset)  # after every cheap check: it may train a CLIP
    D = nets.build(
        "gigagan-discriminator",
        resolution=resolution,
        img_channels=channels,
        channel_base=32 * d_ch,
        channel_max=d_ch,
        pyramid=G.pyramid,
        attn_res=[r for r in attn if r < resolution],
        text=text,
        head=d_head,
        norm=_choice(config, "d_norm", D_NORMS),
        pool=_choice(config, "d_pool", D_POOLS),
        init=_choice(config, "d_init", D_INITS),
    )
    vision_weight = float(config.get("vision_weight") or 0.0)
    if vision_weight > 0:  # D's optimiser trains the head with D (keys "D.vision.*")
        D.add_module("vision", VisionAidedHead(clip.image.feature_dim, clip.config["embed_dim"]))
    return GigaGANObjective(
        G,
        D,
        match_weight=float(_get(config, "match_weight", 1.0)),
        negatives=negatives,
        attribute_words=getattr(dataset, "attribute_words", None),
        clip=clip,
        clip_weight=float(config.get("clip_weight") or 0.0),
        clip_negatives=clip_negatives,
        clip_shift=int(config.get("clip_shift") or 0),
        vision_weight=vision_weight,
        **common,
    )


def parse_clip_negatives(text: str | Sequence[str] | None, dataset: Any) -> list[str]:
    """``"shape,color"`` -> ["shape", "color"] (--clip-negatives): attributes of the dataset's captions."""
    if not text:
        return []
    kinds = [k.strip() for k in (text.split(",") if isinstance(text, str) else text) if k.strip()]
    known = list(getattr(dataset, "attribute_words", None) or {})
    bad = [k for k in kinds if k not in known]
    if bad or not kinds:
        raise UserError(f"--clip-negatives: expected a comma list of the data's caption attributes "
                        f"({', '.join(known) or 'none'}), got {text!r}")
    return kinds


def frozen_clip(config: dict[str, Any], dataset: Any) -> nn.Module | None:
    """The frozen genzoo CLIP of --clip-weight / --vision-weight: read from --clip-model, or trained on
    --clip-pretrain-images of the training pairs and saved as ``CLIP_FILE`` in the run directory (read
    back from there on --resume). None when both weights are 0."""
    weights = float(config.get("clip_weight") or 0.0), float(config.get("vision_weight") or 0.0)
    path, images = config.get("clip_model"), int(config.get("clip_pretrain_images") or 0)
    if path and images:
        raise UserError("--clip-model, --clip-pretrain-images: give one of them, not both")
    if not any(weights):
        if path or images:
            flag = "--clip-model" if path else "--clip-pretrain-images"
            raise UserError(f"{flag}: used only by --clip-weight or --vision-weight; set one of them above 0")
        return None
    if not path and not images:
        raise UserError("--clip-weight/--vision-weight: give --clip-model FILE or --clip-pretrain-images N "
                        "(CLIP weights are never downloaded)")
    if path:
        clip = load_clip(path)
    else:
        if not config.get("out"):
            raise UserError("--clip-pretrain-images: needs the run directory (--out) to save the CLIP in")
        saved = Path(config["out"]) / CLIP_FILE
        if saved.is_file():
            clip = load_clip(saved, "--clip-pretrain-images (resumed)")
        else:
            from genzoo.train.clip import pretrain_clip

            clip, report = pretrain_clip(dataset, images, seed=int(config.get("seed") or 0))
            clip.report = report
            if int(os.environ.get("RANK", "0")) == 0:  # every rank trains the same CLIP; one writes it
                save_clip(clip, saved, report)
        config["clip_pretrain_report"] = clip.report
    resolution, channels = int(dataset.resolution), int(getattr(dataset, "num_channels", 3))
    if (clip.resolution, clip.channels) != (resolution, channels):
        raise UserError(f"--clip-model {path or saved}: a CLIP for {clip.channels}-channel {clip.resolution} "
                        f"px images; the data has {channels}-channel {resolution} px images")
    return clip


def build_model(config: dict[str, Any]) -> nn.Module:
    if "net" not in config:
        raise UserError("config.json: a GigaGAN model needs a 'net' entry with the network settings")
    arch = config.get("arch") or "gigagan"
    return nets.build(
        "gigagan-upsampler" if arch == "gigagan-upsampler" else "gigagan-generator", **config["net"]
    )


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


@torch.no_grad()
def upsample(
    upsampler: nn.Module,
    images: torch.Tensor,
    prompts: Sequence[str] | str | None = None,
    seeds: Sequence[int] | None = None,
    batch_size: int = 64,
) -> torch.Tensor:
    """Super-resolve any images (uint8 NCHW or float in [-1, 1]) with a GigaGAN upsampler -> float in [-1, 1].

    ``prompts``: one for all or one per image (required by a text-conditioned upsampler, refused by
    an unconditional one). ``seeds``: per-image noise, and z for an upsampler trained with random z
    (default: z = 0, no noise: deterministic).
    """
    from genzoo.nets.gigagan import GigaGANUpsampler

    if not isinstance(upsampler, GigaGANUpsampler):
        raise UserError(
            "--upsampler: this run is not a GigaGAN upsampler (train one with --arch gigagan-upsampler)"
        )
    x = images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images.float()
    n, c, h, w = x.shape
    if c != upsampler.img_channels:
        raise UserError(f"--input: the upsampler expects {upsampler.img_channels}-channel images, got {c}")
    step = 2**upsampler.down
    if h % step or w % step:
        raise UserError(f"--input: image sides must be multiples of {step} for this upsampler, got {h}x{w}")
    if isinstance(prompts, str):
        prompts = [prompts]
    if upsampler.text is None and prompts:
        raise UserError("--prompt: this upsampler is not text-conditioned")
    if upsampler.text is not None:
        if not prompts:
            raise UserError("--prompt: this upsampler is text-conditioned; give --prompt TEXT")
        prompts = list(prompts) * n if len(prompts) == 1 else list(prompts)
        if len(prompts) != n:
            raise UserError(f"--prompt: give one prompt or one per image ({n}), got {len(prompts)}")
    if seeds is not None and len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds for {n} images")
    upsampler.eval()
    device = next(upsampler.parameters()).device
    out = []
    for start in range(0, n, batch_size):
        rows = slice(start, min(n, start + batch_size))
        batch = x[rows].to(device)
        rng = StackedRandomGenerator(device, seeds[rows]) if seeds is not None else None
        random_z = rng is not None and upsampler.latent == "random"
        z = rng.randn([len(batch), upsampler.z_dim]) if random_z else None
        sr = upsampler(batch, z, prompts=prompts[rows] if prompts else None, rng=rng)
        out.append(sr.clamp(-1, 1).cpu())
    return torch.cat(out)
