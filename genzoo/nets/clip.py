"""A small image-text contrastive model (a genzoo "CLIP") that trains on a CPU from captioned images.

GigaGAN (Kang et al., CVPR 2023, Sec. 3.4) trains its generator with two terms built on a frozen CLIP:
the CLIP contrastive loss (G's image, embedded by CLIP's image encoder, must match its own caption's
text embedding against the other captions of the batch) and a vision-aided discriminator (a trainable
head on frozen CLIP image features). Real CLIP weights cannot be downloaded here, so genzoo trains its
own on the training set's (image, caption) pairs (:func:`genzoo.train.clip.pretrain_clip`):

- image tower: a conv-BatchNorm-ReLU CNN with max-pooling (the design that learns shape at 16 px from
  ~10k images, docs/gigagan.md), its last map flattened (so position survives) and projected;
- text tower: :class:`~genzoo.nets.text.LearnedTextEncoder` (vocabulary tokenizer, small transformer,
  mean-pooled) and a linear projection;
- symmetric InfoNCE over the batch with a learned temperature (Radford et al. 2021, Fig. 3).

Files are safetensors with the config in the metadata (:func:`save_clip`, :func:`load_clip`): no code
runs when one is read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from genzoo.errors import UserError
from genzoo.nets import register
from genzoo.nets.text import LearnedTextEncoder, VocabTokenizer, masked_mean

#: the ``genzoo`` metadata value that marks a file as a genzoo CLIP
FILE_KIND = "clip"
#: CLIP's initial temperature 0.07 and its cap on the logit scale (Radford et al. 2021)
INIT_TEMPERATURE = 0.07
MAX_LOGIT_SCALE = 100.0


class ImageTower(nn.Module):
    """uint8-free image encoder: float images in [-1, 1] -> features [N, 4·width·2·2] -> embedding.

    conv-BN-ReLU x2 at full resolution, then one conv-BN-ReLU per halving, max-pooled down to 2x2;
    the 2x2 map is flattened (a global average would drop where the object is).
    """

    def __init__(self, resolution: int = 16, channels: int = 3, width: int = 32, embed_dim: int = 64):
        super().__init__()
        if resolution < 4 or resolution & (resolution - 1):
            raise ValueError(f"ImageTower: resolution must be a power of two >= 4, got {resolution}")

        def unit(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

        layers, c, res = [*unit(channels, width), *unit(width, width)], width, resolution
        while res > 2:
            out = min(4 * width, 2 * c)
            layers += [nn.MaxPool2d(2), *unit(c, out)]
            c, res = out, res // 2
        self.body = nn.Sequential(*layers)
        self.feature_dim = c * 2 * 2
        self.proj = nn.Linear(self.feature_dim, embed_dim)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The flattened last map [N, feature_dim] (what the vision-aided discriminator reads)."""
        return self.body(images).flatten(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(images))


#: text towers: bag (mean of word embeddings, then a linear map) or transformer (LearnedTextEncoder)
TEXT_TOWERS = ("bag", "transformer")


class TextTower(nn.Module):
    """Captions -> embedding over the vocabulary tokenizer: ``bag`` averages per-word embeddings (N(0, 1)
    init) and maps them linearly; ``transformer`` is the learned word-token transformer, mean-pooled,
    then a linear map."""

    def __init__(self, vocab: Sequence[str], dim: int = 64, depth: int = 1, embed_dim: int = 64,
                 kind: str = "bag"):
        super().__init__()
        if kind not in TEXT_TOWERS:
            raise ValueError(f"TextTower: kind must be one of {TEXT_TOWERS}, got {kind!r}")
        self.kind = kind
        if kind == "transformer":
            self.encoder = LearnedTextEncoder(dim=dim, depth=depth, heads=4, vocab=list(vocab))
        else:
            self.tokenizer = VocabTokenizer(list(vocab))
            self.words = nn.Embedding(self.tokenizer.vocab_size, dim)
            nn.init.normal_(self.words.weight)
        self.proj = nn.Linear(dim, embed_dim)

    def forward(self, captions: Sequence[str]) -> torch.Tensor:
        if self.kind == "transformer":
            return self.proj(self.encoder(list(captions)).global_)
        ids, mask = self.tokenizer(list(captions))
        ids, mask = ids.to(self.words.weight.device), mask.to(self.words.weight.device)
        return self.proj(masked_mean(self.words(ids), mask))


@register("genzoo-clip")
class ContrastiveImageText(nn.Module):
    """The two towers and the learned logit scale log(1/τ) (initial τ = 0.07, scale capped at 100)."""

    def __init__(self, vocab: Sequence[str], resolution: int = 16, channels: int = 3, width: int = 32,
                 text_dim: int = 64, text_depth: int = 1, embed_dim: int = 64, text_tower: str = "bag"):
        super().__init__()
        self.config = {"vocab": list(vocab), "resolution": int(resolution), "channels": int(channels),
                       "width": int(width), "text_dim": int(text_dim), "text_depth": int(text_depth),
                       "embed_dim": int(embed_dim), "text_tower": str(text_tower)}
        self.resolution, self.channels = int(resolution), int(channels)
        self.image = ImageTower(resolution, channels, width, embed_dim)
        self.text = TextTower(vocab, text_dim, text_depth, embed_dim, text_tower)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / INIT_TEMPERATURE)))

    def logit_scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings of float images in [-1, 1]."""
        return F.normalize(self.image(images), dim=-1)

    def encode_text(self, captions: Sequence[str]) -> torch.Tensor:
        """Unit-norm text embeddings."""
        return F.normalize(self.text(captions), dim=-1)

    def forward(self, images: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
        """Logits [N images, N captions]: the scaled cosine similarities."""
        return contrastive_logits(self.encode_image(images), self.encode_text(captions), self.logit_scale())


def contrastive_logits(image_emb: torch.Tensor, text_emb: torch.Tensor, scale: torch.Tensor | float
                       ) -> torch.Tensor:
    """s · <e_img_i, e_txt_j> for unit-norm embeddings: [N, M] (CLIP, Radford et al. 2021, Fig. 3)."""
    return scale * image_emb @ text_emb.t()


def caption_targets(captions: Sequence[str], device: torch.device | None = None) -> torch.Tensor:
    """Row-stochastic targets [N, N]: item i's positives are the items with the same caption as i
    (usually only i itself), with equal weight."""
    same = torch.tensor([[a == b for b in captions] for a in captions], dtype=torch.float32, device=device)
    return same / same.sum(1, keepdim=True)


def info_nce(logits: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over rows of the cross-entropy −Σ_j y_ij log softmax_j(logits_i) (identity targets when None):
    GigaGAN's CLIP loss (Sec. 3.4) is this over (G's images, their captions)."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    logp = F.log_softmax(logits, dim=1)
    if targets is None:
        return -logp.diagonal().mean()
    return -(targets.to(logp) * logp).sum(1).mean()


def symmetric_info_nce(logits: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's training loss: the mean of the image->text and text->image cross-entropies."""
    t = None if targets is None else targets.t() / targets.t().sum(1, keepdim=True)
    return 0.5 * (info_nce(logits, targets) + info_nce(logits.t(), t))


class VisionAidedHead(nn.Module):
    """The trainable part of the vision-aided discriminator (Kumari et al. 2022, used by GigaGAN): on
    frozen CLIP image features f and the frozen CLIP text embedding t, logit = linear(h) + <h, proj(t)>/√d
    with h = lReLU(linear(f)) (a projection discriminator head)."""

    def __init__(self, feature_dim: int, text_dim: int, hidden: int = 128):
        super().__init__()
        self.hidden = nn.Linear(feature_dim, hidden)
        self.linear = nn.Linear(hidden, 1)
        self.proj = nn.Linear(text_dim, hidden)

    def forward(self, features: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.hidden(features), 0.2)
        return self.linear(h)[:, 0] + (self.proj(text_emb.to(h.dtype)) * h).sum(1) / math.sqrt(h.shape[1])


# -- files -----------------------------------------------------------------------------------------
def save_clip(model: ContrastiveImageText, path: str | Path, report: dict[str, Any] | None = None) -> Path:
    """Write the model as safetensors (config and training report in the metadata), atomically."""
    from safetensors.torch import save_file

    from genzoo.io.atomic import atomic_output

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"genzoo": FILE_KIND, "config": json.dumps(model.config), "report": json.dumps(report or {})}
    with atomic_output(path, "--clip-model") as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return Path(path)


def load_clip(path: str | Path, flag: str = "--clip-model") -> ContrastiveImageText:
    """A genzoo CLIP from a file written by :func:`save_clip`, frozen and in eval mode; its training
    report is ``model.report``. Safetensors only: weights and JSON, never code."""
    from safetensors import SafetensorError, safe_open

    from genzoo.checkpoints import load_safetensors, load_state_into

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{flag} {path}: no such file")
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{flag} {path}: not a safetensors file ({err})") from None
    if metadata.get("genzoo") != FILE_KIND:
        raise UserError(f"{flag} {path}: not a genzoo CLIP file (made by --clip-pretrain-images or "
                        "genzoo.train.clip.pretrain_clip)")
    try:
        config = json.loads(metadata["config"])
        with torch.random.fork_rng(devices=[]):  # reading a file leaves the caller's random stream alone
            model = ContrastiveImageText(**config)
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{flag} {path}: unreadable model config in the metadata ({err})") from None
    load_state_into(model, load_safetensors(path), str(path))
    model.report = json.loads(metadata.get("report") or "{}")
    return model.eval().requires_grad_(False)
