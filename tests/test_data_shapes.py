import pickle

import numpy as np
import pytest
import torch

from genzoo.data import COLOR_NAMES, COLOR_RGB, SHAPE_NAMES, class_name, classify_color, load_dataset
from genzoo.errors import UserError


def test_items_types_and_attributes():
    ds = load_dataset("shapes")
    assert (len(ds), ds.resolution, ds.num_channels, ds.num_classes) == (50_000, 32, 3, 16)
    image, label = ds[7]
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32) and isinstance(label, int)
    a = ds.attributes(7)
    assert label == SHAPE_NAMES.index(a["shape"]) * len(COLOR_NAMES) + COLOR_NAMES.index(a["color"])
    assert class_name(label) == f"{a['color']} {a['shape']}"
    assert ds.captions[7] == (f"a {a['size']} {a['color']} {a['shape']} {a['location']} "
                              f"on a {a['background']} background")
    assert len(ds.captions) == len(ds)
    # The pixel at the shape's centre has the shape's colour (all shapes cover their centre).
    x, y = int(a["x"] * 32), int(a["y"] * 32)
    assert image[:, y, x].tolist() == list(a["rgb"])


def test_deterministic_from_index_alone():
    big, small = load_dataset("shapes"), load_dataset("shapes?count=10")
    assert len(small) == 10
    assert torch.equal(big[9][0], small[9][0]) and big.captions[9] == small.captions[9]
    assert torch.equal(big[3][0], load_dataset("shapes")[3][0])
    other_seed = load_dataset("shapes?seed=1&count=10")
    assert not torch.equal(other_seed[3][0], small[3][0])
    # Same scene at another resolution: same label and caption.
    s16 = load_dataset("shapes:16")
    assert s16.resolution == 16 and s16[5][0].shape == (3, 16, 16)
    assert s16[5][1] == big[5][1] and s16.captions[5] == big.captions[5]
    assert load_dataset("shapes", resolution=16).resolution == 16


def test_classes_balanced_and_varied():
    ds = load_dataset("shapes?count=4000")
    counts = np.bincount(ds.labels, minlength=16)
    assert counts.min() > 180 and counts.max() < 320  # uniform over 16 classes, 250 expected
    images = torch.stack([ds[i][0] for i in range(64)])
    # No two of the first 64 items are identical, and backgrounds vary.
    flat = images.flatten(1).float()
    assert torch.cdist(flat, flat).add(torch.eye(64) * 1e9).min() > 0
    assert images[:, :, 0, 0].float().std() > 20


def test_classify_color_reads_back_ground_truth():
    ds = load_dataset("shapes:16?count=400")
    images = torch.stack([ds[i][0] for i in range(400)])
    assert torch.equal(classify_color(images), torch.as_tensor(ds.labels % len(COLOR_NAMES)))
    # Float [-1, 1] input gives the same answer; a gray image has no colour.
    assert torch.equal(classify_color(images[:8].float() / 127.5 - 1), classify_color(images[:8]))
    gray = torch.full((1, 3, 8, 8), 128, dtype=torch.uint8)
    assert classify_color(gray).tolist() == [-1]
    # A flat patch of each named colour classifies as that colour.
    patches = torch.tensor(COLOR_RGB, dtype=torch.uint8)[:, :, None, None].expand(-1, -1, 4, 4)
    assert classify_color(patches).tolist() == list(range(len(COLOR_NAMES)))


def test_pickles_for_dataloader_workers():
    ds = load_dataset("shapes?count=16")
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[3][0], ds[3][0]) and clone.captions[3] == ds.captions[3]


@pytest.mark.parametrize("spec, message", [
    ("shapes:abc", "shapes:RES"), ("shapes?count=0", "count"), ("shapes?colour=red", "unknown option"),
    ("nosuch:x", "unknown kind"), ("shapes:2", "at least 4"),
])
def test_bad_specs(spec, message):
    with pytest.raises(UserError, match=message):
        load_dataset(spec)


def test_resolution_conflict():
    with pytest.raises(UserError, match="--resolution"):
        load_dataset("shapes:16", resolution=32)
