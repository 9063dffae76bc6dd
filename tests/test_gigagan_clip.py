"""genzoo's small CLIP (nets/clip.py, train/clip.py) and GigaGAN's CLIP loss and vision-aided D."""

import math

import pytest
import torch
from safetensors.torch import save_file

from genzoo.cli import main
from genzoo.data import load_dataset
from genzoo.errors import UserError
from genzoo.gan import gigagan as giga
from genzoo.nets.clip import (
    ContrastiveImageText,
    caption_targets,
    contrastive_logits,
    info_nce,
    load_clip,
    save_clip,
    symmetric_info_nce,
)
from genzoo.nets.text import build_vocabulary
from genzoo.train.clip import attribute_alternatives, pretrain_clip, swap_phrase, zero_shot_accuracy
from genzoo.train.data import collate, to_batch

DATA = "shapes:16?count=64"


def _tiny_clip(seed: int = 0, resolution: int = 16) -> ContrastiveImageText:
    torch.manual_seed(seed)
    vocab = build_vocabulary(load_dataset(DATA).captions)
    return ContrastiveImageText(vocab, resolution=resolution, width=4, text_dim=8, embed_dim=8).eval()


def _tiny_config(**extra):
    config = {"arch": "gigagan", "g_ch": 8, "d_ch": 8, "z_dim": 8, "w_dim": 16, "text_dim": 16,
              "text_depth": 1, "kernels": 2, "attn_res": "8", "data": DATA}
    config.update(extra)
    return config


def test_info_nce_of_identity_aligned_embeddings_has_its_closed_form():
    # one-hot e_i for image and text: logits s on the diagonal, 0 elsewhere -> log(1 + (N - 1) e^{-s})
    n, s = 5, 2.5
    e = torch.eye(n, dtype=torch.float64)
    logits = contrastive_logits(e, e, s)
    expected = math.log(1 + (n - 1) * math.exp(-s))
    eps = 8 * torch.finfo(torch.float64).eps
    assert abs(float(info_nce(logits)) - expected) <= eps
    assert abs(float(symmetric_info_nce(logits)) - expected) <= eps


def test_contrastive_logits_and_info_nce_match_a_hand_computation_in_float64():
    g = torch.Generator().manual_seed(1)
    img = torch.nn.functional.normalize(torch.randn(3, 4, generator=g, dtype=torch.float64), dim=1)
    txt = torch.nn.functional.normalize(torch.randn(3, 4, generator=g, dtype=torch.float64), dim=1)
    scale = 7.0
    logits = contrastive_logits(img, txt, scale)
    by_hand = [[scale * sum(float(img[i, k] * txt[j, k]) for k in range(4)) for j in range(3)]
               for i in range(3)]
    assert torch.allclose(logits, torch.tensor(by_hand, dtype=torch.float64), rtol=0, atol=1e-12)
    rows = [-(by_hand[i][i] - math.log(sum(math.exp(v) for v in by_hand[i]))) for i in range(3)]
    cols = [-(by_hand[j][j] - math.log(sum(math.exp(by_hand[i][j]) for i in range(3)))) for j in range(3)]
    tol = 64 * torch.finfo(torch.float64).eps * max(abs(v) for v in rows + cols)
    assert abs(float(info_nce(logits)) - sum(rows) / 3) <= tol
    assert abs(float(symmetric_info_nce(logits)) - (sum(rows) + sum(cols)) / 6) <= tol


def test_identical_captions_share_the_positive_weight():
    targets = caption_targets(["a", "b", "a"])
    assert torch.equal(targets, torch.tensor([[0.5, 0, 0.5], [0, 1, 0], [0.5, 0, 0.5]]))
    # with duplicates the loss is the cross-entropy against the split target, by hand
    logits = torch.tensor([[1.0, 0.0, 1.0], [0.0, 2.0, 0.0], [1.0, 0.0, 1.0]], dtype=torch.float64)
    logp = [[v - math.log(sum(math.exp(u) for u in row)) for v in row] for row in logits.tolist()]
    expected = -(0.5 * logp[0][0] + 0.5 * logp[0][2] + logp[1][1] + 0.5 * logp[2][0] + 0.5 * logp[2][2]) / 3
    assert abs(float(info_nce(logits, targets)) - expected) <= 16 * torch.finfo(torch.float64).eps


def test_phrase_swaps_and_attribute_alternatives():
    caption = "a small red circle in the top left on a dark background"
    assert swap_phrase(caption, ("circle", "square"), "square") == caption.replace("circle", "square")
    assert swap_phrase(caption, ("blue",), "green") is None
    words = {"shape": ("circle", "square", "cross"), "position": ("in the top left", "in the center")}
    alternatives = attribute_alternatives(caption, words)
    assert alternatives["shape"] == [caption.replace("circle", "square"), caption.replace("circle", "cross")]
    assert alternatives["position"] == [caption.replace("in the top left", "in the center")]


def test_clip_file_round_trip_and_errors(tmp_path):
    model = _tiny_clip()
    path = save_clip(model, tmp_path / "clip.safetensors", {"images": 123})
    loaded = load_clip(path)
    assert loaded.report == {"images": 123} and not any(p.requires_grad for p in loaded.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    captions = ["a small red circle in the center on a dark background"] * 3
    assert torch.equal(model(x, captions), loaded(x, captions))
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(1)}, str(other))
    for bad, message in ((other, "not a genzoo CLIP"), (tmp_path / "none.safetensors", "no such file")):
        with pytest.raises(UserError, match=message):
            load_clip(bad)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(UserError, match="--clip-model .*junk"):
        load_clip(tmp_path / "junk.safetensors")


def test_pretraining_is_deterministic_and_zero_shot_accuracy_is_a_fraction():
    data = load_dataset(DATA)
    a, report = pretrain_clip(data, 64, seed=3, batch=32, width=4, embed_dim=8, text_dim=8)
    b, _ = pretrain_clip(data, 64, seed=3, batch=32, width=4, embed_dim=8, text_dim=8)
    assert report["images"] == 64 and report["steps"] == 2
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    images = torch.stack([data[i][0] for i in range(8)]).float() / 127.5 - 1
    acc = zero_shot_accuracy(a, images, [data.captions[i] for i in range(8)], data.attribute_words)
    assert set(acc) == {"shape", "color", "size", "position"}
    assert all(8 * v == round(8 * v) and 0 <= v <= 1 for v in acc.values())


def test_clip_options_are_validated(tmp_path, capsys):
    data = load_dataset(DATA)
    save_clip(_tiny_clip(resolution=8), tmp_path / "c8.safetensors")
    cases = [
        (_tiny_config(clip_weight=1.0), "give --clip-model FILE or --clip-pretrain-images N"),
        (_tiny_config(clip_model=str(tmp_path / "c8.safetensors")), "--clip-model: used only by"),
        (_tiny_config(clip_pretrain_images=64), "--clip-pretrain-images: used only by"),
        (_tiny_config(vision_weight=1.0, clip_model="x", clip_pretrain_images=64), "not both"),
        (_tiny_config(clip_weight=1.0, clip_model=str(tmp_path / "c8.safetensors")), "8 px images; the data"),
        (_tiny_config(clip_weight=1.0, clip_pretrain_images=64, clip_negatives="mood"), "--clip-negatives"),
    ]
    for config, message in cases:
        with pytest.raises(UserError, match=message):
            giga.build_objective(config, data)
    args = ["train", "--family", "gan", "--arch", "gigagan", "--data", DATA, "--out", str(tmp_path / "r"),
            "--steps", "1"]
    assert main([*args, "--clip-weight", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--clip-weight" in err and len(err.splitlines()) == 1
    assert main([*args, "--vision-weight", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--clip-pretrain-images" in err and len(err.splitlines()) == 1


def _batch(data, n=8):
    return to_batch(collate([(*data[i], i) for i in range(n)]), data.captions, torch.device("cpu"))


def test_losses_are_off_by_default_and_add_exactly_their_terms(tmp_path):
    data = load_dataset(DATA)
    path = save_clip(_tiny_clip(), tmp_path / "clip.safetensors")
    torch.manual_seed(0)
    plain = giga.build_objective(_tiny_config(), data)
    assert plain.clip is None and not any(".vision." in k for k in plain.players.state_dict())
    torch.manual_seed(0)
    with_clip = giga.build_objective(_tiny_config(clip_weight=0.5, vision_weight=2.0, clip_model=str(path),
                                                  clip_negatives="shape,size"), data)
    # the same networks (the CLIP is read, not drawn), plus the vision head in D
    extra = set(with_clip.players.state_dict()) - set(plain.players.state_dict())
    assert extra and all(k.startswith("D.vision.") for k in extra)
    for key, value in plain.players.state_dict().items():
        assert torch.equal(value, with_clip.players.state_dict()[key]), key
    batch = _batch(data)
    torch.manual_seed(5)
    base = plain.loss("G", batch, 1)
    torch.manual_seed(5)
    full = with_clip.loss("G", batch, 1)
    assert "G/clip" not in base.logs and {"G/clip", "G/vision"} <= set(full.logs)
    expected = float(base.loss.detach()) + 0.5 * full.logs["G/clip"] + 2.0 * full.logs["G/vision"]
    assert abs(float(full.loss) - expected) <= 1e-5 * max(1.0, abs(expected))
    # --clip-negatives: each image's own caption with the shape (3 others) or size (2 others) changed
    captions = [data.captions[i] for i in range(3)]
    image_emb = torch.nn.functional.normalize(torch.randn(3, 8), dim=1)
    extra = with_clip.attribute_negative_logits(image_emb, captions)
    shapes = ("circle", "square", "triangle", "cross")
    own = next(w for w in shapes if f" {w} " in captions[0])
    text = with_clip.clip.encode_text([captions[0].replace(f" {own} ", f" {o} ") for o in shapes if o != own])
    assert extra.shape == (3, 5)
    expected_row0 = with_clip.clip.logit_scale() * text @ image_emb[0]
    assert torch.allclose(extra[0, :3], expected_row0, atol=1e-5)
    # the D step adds the vision-aided term, and its gradient reaches the head
    torch.manual_seed(6)
    d = with_clip.loss("D", batch, 1)
    d.loss.backward()
    assert "D/vision" in d.logs and with_clip.players["D"].vision.hidden.weight.grad.abs().sum() > 0


def test_a_run_pretrains_its_clip_once_and_resumes_with_it(tmp_path):
    from genzoo.train.engine import train

    out = tmp_path / "run"
    config = {"family": "gan", "out": str(out), "steps": 1, "sample_every": 0, "checkpoint_every": 1,
              "log_every": 1, "seed": 0, "device": "cpu", "tensorboard": False, "batch": 8,
              "precision": "fp32",
              **_tiny_config(clip_weight=1.0, vision_weight=1.0, clip_pretrain_images=64)}
    train(dict(config))
    saved = out / giga.CLIP_FILE
    first = saved.read_bytes()
    assert load_clip(saved).report["images"] == 64
    train({**config, "steps": 2, "resume": True})
    assert saved.read_bytes() == first  # read back, not trained again
    assert (out / "checkpoint-000002").is_dir()


def test_random_shift_is_a_per_image_translation_with_reflected_edges():
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float64).view(2, 1, 5, 5).requires_grad_(True)
    assert giga.random_shift(x, 0) is x
    g = torch.Generator().manual_seed(0)
    y = giga.random_shift(x, 1, g)
    offsets = torch.randint(0, 3, (2, 2), generator=torch.Generator().manual_seed(0)).tolist()
    padded = torch.nn.functional.pad(x.detach(), (1, 1, 1, 1), mode="reflect")
    for i, (dy, dx) in enumerate(offsets):
        assert torch.equal(y[i].detach(), padded[i, :, dy : dy + 5, dx : dx + 5])
    y.sum().backward()
    assert x.grad.sum() == y.numel()  # a crop: every output pixel passes its gradient to one input pixel
