"""The FID Inception network: published key layouts, TF1 resize, sFID features, no-download behaviour."""

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from genzoo.errors import UserError
from genzoo.metrics.inception import (
    INCEPTION_ENV,
    InceptionFID,
    inception_from_state,
    load_inception,
    tf1_resize_bilinear,
)

# Shapes in the published files (torchvision Inception-v3 names, 1008-class head), from the public code.
PUBLISHED_SHAPES = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_4a_3x3.bn.running_var": (192,),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_5d.branch5x5_2.conv.weight": (64, 48, 5, 5),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
    "Mixed_6e.branch7x7dbl_4.conv.weight": (192, 192, 7, 1),
    "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
    "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
    "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}
PUBLISHED_PARAMETERS = (
    23_834_568 + 8 * 2049
)  # torchvision Inception-v3 without aux head, 1000 -> 1008 classes
WRAPPER_PREFIXES = {
    "Conv2d_1a_3x3": "blocks.0.0",
    "Conv2d_2a_3x3": "blocks.0.1",
    "Conv2d_2b_3x3": "blocks.0.2",
    "Conv2d_3b_1x1": "blocks.1.0",
    "Conv2d_4a_3x3": "blocks.1.1",
    **{f"Mixed_{n}": f"blocks.2.{i}" for i, n in enumerate(["5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e"])},
    "Mixed_7a": "blocks.3.0",
    "Mixed_7b": "blocks.3.1",
    "Mixed_7c": "blocks.3.2",
}


@functools.lru_cache(maxsize=2)
def _random_published_state(with_counters: bool) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    state = {}
    with torch.device("meta"):
        layout = InceptionFID().state_dict()
    for key, value in layout.items():
        if key.endswith("num_batches_tracked"):
            if with_counters:
                state[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(value.shape, generator=gen)
        elif key.endswith("running_mean") or key.endswith("bn.bias"):
            state[key] = 0.1 * torch.randn(value.shape, generator=gen)
        elif key.endswith("bn.weight"):
            state[key] = 1 + 0.1 * torch.randn(value.shape, generator=gen)
        else:
            fan_in = math.prod(value.shape[1:])
            state[key] = torch.randn(value.shape, generator=gen) * math.sqrt(2 / fan_in)
    return state


def random_published_state(with_counters: bool) -> dict[str, torch.Tensor]:
    """A state dict in the published layout with random values (torch-fidelity's file has no BN counters)."""
    return dict(_random_published_state(with_counters))


def test_module_has_the_published_names_and_shapes():
    state = random_published_state(with_counters=False)
    for key, shape in PUBLISHED_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    assert len(state) == 472
    params = sum(v.numel() for k, v in state.items() if not k.endswith(("running_mean", "running_var")))
    assert params == PUBLISHED_PARAMETERS


@pytest.fixture(scope="module")
def image():
    return torch.randint(
        0, 256, (1, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8
    )


@pytest.fixture(scope="module")
def fidelity_outputs(image):
    state = random_published_state(with_counters=False)
    model = inception_from_state(state, "torch-fidelity layout")
    seen = {}
    model.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: seen.setdefault("mixed_6/conv", o))
    with torch.no_grad():
        out = model(image)
    return state, {**out, **seen}


def test_torch_fidelity_layout_loads_and_gives_all_outputs(fidelity_outputs):
    state, out = fidelity_outputs
    assert (
        out["pool"].shape == (1, 2048)
        and out["spatial"].shape == (1, 2023)
        and out["logits"].shape == (1, 1008)
    )
    assert out["pool"].abs().sum() > 0 and torch.isfinite(out["pool"]).all()
    # Unbiased logits: pool_3 times the head's weight, without its bias.
    torch.testing.assert_close(out["logits"], out["pool"] @ state["fc.weight"].T, rtol=1e-5, atol=1e-5)


def assert_holds_weights(model, state):
    own = model.state_dict()
    for key, value in state.items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(own[key], value), key


def test_pytorch_fid_file_with_bn_counters_loads_the_same_weights(tmp_path, monkeypatch):
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    state = random_published_state(with_counters=True)
    torch.save(state, path)
    monkeypatch.setenv(INCEPTION_ENV, str(path))
    model = load_inception()  # found through the environment variable
    assert model.fc is not None
    assert_holds_weights(model, state)


def test_pytorch_fid_wrapper_layout_loads_without_head():
    state = random_published_state(with_counters=True)
    wrapped = {}
    for key, value in state.items():
        layer, rest = key.split(".", 1)
        if layer != "fc":
            wrapped[f"{WRAPPER_PREFIXES[layer]}.{rest}"] = value
    model = inception_from_state(wrapped)
    assert model.fc is None  # no head: pool_3 and sFID features only
    assert_holds_weights(model, {k: v for k, v in state.items() if not k.startswith("fc.")})


def test_mismatched_or_missing_weights_name_the_file(tmp_path, monkeypatch):
    state = random_published_state(with_counters=False)
    state["Mixed_6b.branch7x7_2.conv.weight"] = torch.zeros(128, 128, 7, 1)
    with pytest.raises(UserError, match="bad.pth.*Mixed_6b.branch7x7_2.conv.weight"):
        inception_from_state(state, "bad.pth")
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    with pytest.raises(UserError, match="(?s)pt_inception-2015-12-05-6726825d.pth.*GENZOO_INCEPTION"):
        load_inception(None)
    with pytest.raises(UserError, match="(?s)nothere.pth: no such file.*weights-inception-2015-12-05"):
        load_inception(tmp_path / "nothere.pth")


def test_spatial_features_are_mixed_6d_first_unit_first_7_channels_in_hwc_order(fidelity_outputs):
    _, out = fidelity_outputs
    spatial, act = out["spatial"], out["mixed_6/conv"]
    assert act.shape == (1, 192, 17, 17)
    h, w, c = 5, 11, 6
    assert spatial[0, (h * 17 + w) * 7 + c] == act[0, c, h, w]


def test_tf1_resize_matches_hand_computed_cases():
    x = torch.tensor([[0.0, 10.0], [20.0, 30.0]])[None, None]
    # 2 -> 4: source coordinates 0, 0.5, 1, 1.5 with the upper neighbour clamped to the last pixel.
    expected = torch.tensor(
        [[0, 5, 10, 10], [10, 15, 20, 20], [20, 25, 30, 30], [20, 25, 30, 30]], dtype=torch.float32
    )
    torch.testing.assert_close(tf1_resize_bilinear(x, (4, 4))[0, 0], expected)
    # 3 -> 2: source coordinates 0 and 1.5.
    row = torch.tensor([[0.0, 6.0, 12.0]])[None]
    torch.testing.assert_close(
        tf1_resize_bilinear(row[None].expand(1, 1, 3, 3), (2, 2))[0, 0, 0], torch.tensor([0.0, 9.0])
    )
    # Same size is the identity; PyTorch's half-pixel bilinear is not the same resize.
    y = torch.rand(2, 3, 5, 7)
    torch.testing.assert_close(tf1_resize_bilinear(y, (5, 7)), y)
    assert not torch.allclose(tf1_resize_bilinear(x, (4, 4)), F.interpolate(x, size=(4, 4), mode="bilinear"))
