"""GigaGAN's text path (issue #23): collision-free tokens, one-attribute negatives, text lr, probes."""

import pytest
import torch

from genzoo import nets
from genzoo.data import load_dataset
from genzoo.data.shapes import ATTRIBUTE_WORDS, COLOR_NAMES, SHAPE_NAMES
from genzoo.errors import UserError
from genzoo.gan import gigagan as giga
from genzoo.gan import probes
from genzoo.nets.text import HashTokenizer, LearnedTextEncoder, VocabTokenizer, build_vocabulary, words_of
from genzoo.train.engine import _make_optimizer, parameter_lr_mul

CAPTION = "a large red circle in the top left on a dark background"


def shapes_vocabulary() -> list[str]:
    return build_vocabulary(load_dataset("shapes:8?count=3000").captions)


def test_no_two_words_of_the_shapes_vocabulary_share_an_id():
    vocab = shapes_vocabulary()
    every_word = {w for phrases in ATTRIBUTE_WORDS.values() for p in phrases for w in words_of(p)}
    assert every_word <= set(vocab)  # 3000 captions name every shape, colour, size and position word
    tok = VocabTokenizer(vocab)
    assert probes.tokenizer_collisions(tok, vocab) == []
    assert len({tok.word_id(w) for w in vocab}) == len(vocab)
    # the old hashing tokenizer gives "square" and "blue" one id; the probe finds it
    assert ("square", "blue") in probes.tokenizer_collisions(HashTokenizer(), ["square", "blue", "red"])


def test_vocabulary_ids_are_list_positions_so_collisions_cannot_happen():
    # any list of distinct words: id = 4 + position, injective by construction, whatever the words hash to
    words = ["square", "blue"] + [f"w{i}" for i in range(5000)]
    tok = VocabTokenizer(words)
    assert [tok.word_id(w) for w in words] == list(range(4, 4 + len(words)))
    ids, mask = tok(["a blue square", "Square BLUE zebra"])
    assert ids[0, :3].tolist() == [tok.BOS, tok.UNK, 5] and ids[0, 3:].tolist() == [4, tok.EOS]
    assert ids[1].tolist() == [tok.BOS, 4, 5, tok.UNK, tok.EOS] and mask.all()
    with pytest.raises(ValueError, match="distinct"):
        VocabTokenizer(["red", "red"])
    with pytest.raises(ValueError, match="distinct"):
        VocabTokenizer(["two words"])


def test_learned_encoder_with_a_vocabulary_sizes_its_embedding_and_old_configs_still_hash():
    enc = LearnedTextEncoder(dim=8, depth=1, heads=2, vocab=["red", "blue"])
    assert enc.token.num_embeddings == 6 and isinstance(enc.tokenizer, VocabTokenizer)
    old = LearnedTextEncoder(dim=8, depth=1, heads=2, vocab_size=50)
    assert old.token.num_embeddings == 50 and isinstance(old.tokenizer, HashTokenizer)


def test_swap_attribute_changes_exactly_one_phrase():
    gen = torch.Generator().manual_seed(0)
    for attribute, choices in ATTRIBUTE_WORDS.items():
        for _ in range(10):
            other = giga.swap_attribute(CAPTION, choices, gen)
            assert other != CAPTION
            for name, phrases in ATTRIBUTE_WORDS.items():
                found = [p for p in sorted(phrases, key=len, reverse=True) if p in other][0]
                original = [p for p in sorted(phrases, key=len, reverse=True) if p in CAPTION][0]
                assert (found != original) == (name == attribute), (attribute, other)
    assert giga.swap_attribute("a red thing", SHAPE_NAMES, gen) is None
    # whole words only: "reddish" holds no colour word
    assert giga.swap_attribute("a reddish circle", COLOR_NAMES, gen) is None


def test_matching_negatives_give_each_kind_a_share_of_the_batch():
    captions = [f"a small {c} {s} in the center on a gray background"
                for c in COLOR_NAMES for s in SHAPE_NAMES]
    kinds = list(giga.NEGATIVES)
    rows, wrong, used = giga.matching_negatives(captions, kinds, ATTRIBUTE_WORDS,
                                                torch.Generator().manual_seed(1))
    assert rows == list(range(16))  # every row got a wrong caption (all differ, all have every attribute)
    assert {used.count(k) for k in kinds} <= {3, 4}  # 16 rows over 5 kinds
    for i, w, kind in zip(rows, wrong, used):
        assert w != captions[i]
        if kind == "shape":
            assert [x for x in words_of(w) if x in SHAPE_NAMES] != [x for x in words_of(captions[i]) if
                                                                    x in SHAPE_NAMES]
            assert w.replace(next(s for s in SHAPE_NAMES if s in w), "X") == captions[i].replace(
                next(s for s in SHAPE_NAMES if s in captions[i]), "X")
    with pytest.raises(UserError, match="--match-negatives"):
        giga.parse_negatives("rolled,texture")


def test_text_encoders_get_their_own_learning_rate():
    assert parameter_lr_mul("text.token.weight", {"text.": 0.1}) == 0.1
    assert parameter_lr_mul("mapping.layers.0.weight", {"text.": 0.1}) == 1.0
    assert parameter_lr_mul("text.token.weight", {"text.": 0.1, "text.token": 0.5}) == 0.5  # longest prefix
    G = nets.build("gigagan-generator", resolution=8, z_dim=8, w_dim=8, channel_base=64, channel_max=8,
                   num_kernels=1, attn_res=(), text={"kind": "learned", "dim": 8, "depth": 1, "heads": 2,
                                                     "vocab": ["red"]})
    D = nets.build("gigagan-discriminator", resolution=8, channel_base=64, channel_max=8, attn_res=(),
                   text={"kind": "learned", "dim": 8, "depth": 1, "heads": 2, "vocab": ["red"]})
    spec = giga.GigaGANObjective(G, D, lr=2e-3, text_lr_mul=0.1).optimizer_specs()["G"]
    opt = _make_optimizer(G, spec)
    text_ids = {id(p) for p in G.text.parameters()}
    for group in opt.param_groups:
        is_text = {id(p) in text_ids for p in group["params"]}
        assert len(is_text) == 1
        assert group["lr"] == pytest.approx(2e-4 if is_text.pop() else 2e-3, rel=1e-12)


def tiny_gigagan(vocab):
    torch.manual_seed(0)
    text = {"kind": "learned", "dim": 16, "depth": 1, "heads": 2, "vocab": vocab}
    G = nets.build("gigagan-generator", resolution=8, z_dim=8, w_dim=16, channel_base=128, channel_max=16,
                   num_kernels=2, attn_res=(), text=text).eval()
    return G


def test_with_z_fixed_changing_only_the_shape_word_changes_the_image():
    vocab = shapes_vocabulary()
    captions = [f"a medium red {s} in the center on a gray background" for s in SHAPE_NAMES]
    G = tiny_gigagan(vocab)
    moved = probes.image_swap_sensitivity(G, captions, {"shape": SHAPE_NAMES}, seeds=[3] * 4)
    assert moved["shape"] > 1e-3
    # ... and the same caption with the same seed gives the same image (so the change is the word's)
    same = probes.image_swap_sensitivity(G, captions, {"shape": ["circle"]}, seeds=[3] * 4)
    assert same == {}  # a one-phrase attribute has nothing to swap to
    t = probes.text_swap_sensitivity(G.text, captions, {"shape": SHAPE_NAMES, "color": COLOR_NAMES})
    assert t["shape"] > 0.05 and t["color"] > 0.05


class _ShapeWordD(torch.nn.Module):
    """A stand-in D: logit = +1 when the prompt names the image's shape (read from a pixel), else 0."""

    pyramid = [8]

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, pyramid, prompts):
        images = pyramid[8]
        shape_of_image = images[:, 0, 0, 0].round().long()
        named = torch.tensor([next(SHAPE_NAMES.index(w) for w in words_of(p) if w in SHAPE_NAMES)
                              for p in prompts])
        return {(8, 4): (named == shape_of_image).float()}


def test_matching_accuracy_is_one_for_the_attribute_d_reads_and_zero_for_the_ones_it_ignores():
    captions = [f"a small {c} {s} at the top on a dark background" for s in SHAPE_NAMES for c in COLOR_NAMES]
    images = torch.zeros(16, 3, 8, 8)
    images[:, 0, 0, 0] = torch.tensor([float(SHAPE_NAMES.index(words_of(c)[3])) for c in captions])
    acc = probes.matching_accuracy(_ShapeWordD(), images, captions, ATTRIBUTE_WORDS)
    assert acc == {"shape": 1.0, "color": 0.0, "size": 0.0, "position": 0.0}


def test_gigagan_trains_with_rpgan_and_r2_on_every_pyramid_level():
    from genzoo.train.objective import Batch

    vocab = ["a", "red", "blue", "circle", "square"]
    G = tiny_gigagan(vocab).train()
    D = nets.build("gigagan-discriminator", resolution=8, channel_base=128, channel_max=16, attn_res=(),
                   pyramid=G.pyramid, text={"kind": "learned", "dim": 16, "depth": 1, "heads": 2,
                                            "vocab": vocab})
    objective = giga.GigaGANObjective(G, D, loss="rpgan", r1_gamma=1.0, r2_gamma=2.0, r1_interval=2)
    batch = Batch(images=torch.rand(4, 3, 8, 8) * 2 - 1, labels=torch.full((4,), -1),
                  captions=["a red circle", "a blue square", "a red square", "a blue circle"])
    due = objective.loss("D", batch, step=2)
    assert due.logs["D/r1"] > 0 and due.logs["D/r2"] > 0
    assert {"D/r1", "D/r2"}.isdisjoint(objective.loss("D", batch, step=1).logs)  # lazy: every 2nd step
    due.loss.backward()
    D.zero_grad(set_to_none=True)
    g = objective.loss("G", batch, step=2)
    g.loss.backward()
    assert all(p.grad is None for p in D.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in G.parameters())
