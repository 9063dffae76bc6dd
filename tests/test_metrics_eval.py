"""Reference files (ADM layout), streaming reads, evaluate() and `genzoo eval` on shapes, cost measurement."""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

import genzoo
from genzoo.cli import main
from genzoo.data import ShapesDataset
from genzoo.errors import UserError
from genzoo.io import NpzWriter
from genzoo.metrics import (
    CallCounter,
    Reference,
    evaluate,
    iter_npz_images,
    load_reference,
    measure_cost,
    save_reference,
)
from genzoo.metrics.shapes_features import load_shapes_classifier


def shapes_arrays(count, seed=0, res=32):
    data = ShapesDataset(res, count=count, seed=seed)
    images = np.stack([data.image(i) for i in range(count)])
    return images, data.labels[:count].copy()


def test_adm_reference_layout_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    ref = Reference(
        features="inception",
        mu=rng.normal(size=4),
        sigma=np.eye(4) * 2,
        mu_s=rng.normal(size=3),
        sigma_s=np.eye(3),
        images=rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8),
    )
    path = save_reference(tmp_path / "VIRTUAL_test.npz", ref)
    with np.load(path) as data:  # exactly the ADM evaluator's keys, nothing pickled
        assert sorted(data.files) == ["arr_0", "mu", "mu_s", "sigma", "sigma_s"]
    back = load_reference(path)
    assert back.features == "inception"
    for key in ("mu", "sigma", "mu_s", "sigma_s", "images"):
        np.testing.assert_array_equal(getattr(back, key), getattr(ref, key))
    # A non-Inception reference records its feature network.
    save_reference(tmp_path / "shapes_ref.npz", Reference(features="shapes", mu=np.zeros(2), sigma=np.eye(2)))
    assert load_reference(tmp_path / "shapes_ref.npz").features == "shapes"


def test_bad_reference_files_are_named(tmp_path):
    bad = tmp_path / "ref.npz"
    np.savez(bad, mu=np.zeros(3), sigma=np.eye(2))
    with pytest.raises(UserError, match="ref.npz.*'mu' and 'sigma'"):
        load_reference(bad)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="junk.npz: not a readable"):
        load_reference(tmp_path / "junk.npz")


@pytest.mark.parametrize("writer", ["genzoo", "compressed"])
def test_npz_images_stream_in_batches(tmp_path, writer):
    images = np.random.default_rng(1).integers(0, 256, (23, 6, 5, 3), dtype=np.uint8)
    path = tmp_path / "s.npz"
    if writer == "genzoo":
        with NpzWriter(path) as out:
            out.write(images[:10])
            out.write(images[10:])
    else:
        np.savez_compressed(path, arr_0=images)
    batches = list(iter_npz_images(path, batch_size=7))
    assert [len(b) for b in batches] == [7, 7, 7, 2]
    np.testing.assert_array_equal(np.concatenate(batches), images)
    assert sum(len(b) for b in iter_npz_images(path, batch_size=7, limit=9)) == 9


@pytest.fixture(scope="module")
def classifier():
    return load_shapes_classifier()


@pytest.mark.parametrize("res", [32, 16])
def test_bundled_shapes_classifier_recognises_unseen_shapes(classifier, res):
    images, labels = shapes_arrays(200, seed=7, res=res)  # seed 7: items never seen in training
    with torch.no_grad():
        logits = classifier(torch.from_numpy(images).permute(0, 3, 1, 2))["logits"]
    assert (logits.argmax(1).numpy() == labels).mean() > 0.93
    assert classifier.report["num_classes"] == 16


def test_evaluate_shapes_features_ranks_real_above_noise(tmp_path, classifier):
    real, labels = shapes_arrays(200, seed=3)
    with NpzWriter(tmp_path / "real.npz") as out:
        out.write(real, labels)
    common = dict(features="shapes", ref_count=200, pr_count=200, batch_size=100, extractor=classifier)
    good = genzoo.evaluate(tmp_path / "real.npz", "shapes", metrics=["fid", "pr", "acc", "kid"], **common)
    assert good["num_samples"] == 200 and good["num_ref"] == 200
    assert good["accuracy"] > 0.9 and good["precision"] > 0.6 and good["recall"] > 0.6
    wrong = evaluate(tmp_path / "real.npz", "shapes", metrics=["acc"], labels=(labels + 1) % 16, **common)
    assert wrong["accuracy"] < 0.2
    noise = np.random.default_rng(0).integers(0, 256, (200, 32, 32, 3), dtype=np.uint8)
    bad = evaluate(noise, "shapes", metrics=["fid", "pr", "kid"], **common)
    assert bad["fd"] > 5 * good["fd"] and bad["precision"] < good["precision"] and bad["kid"] > good["kid"]
    # The same set as its own reference: FD 0 and full precision/recall.
    ref = save_reference(tmp_path / "self.npz", Reference(features="shapes", images=real))
    same = evaluate(real, ref, metrics=["fid", "pr"], **common)
    assert abs(same["fd"]) < 1e-6 and same["precision"] == same["recall"] == 1.0


def test_evaluate_errors_are_clear(tmp_path, classifier):
    images, _ = shapes_arrays(8)
    inception_only = save_reference(tmp_path / "VIRTUAL.npz", Reference(mu=np.zeros(4), sigma=np.eye(4)))
    with pytest.raises(UserError, match="statistics of 'inception' features and no images"):
        evaluate(images, inception_only, metrics=["fid"], features="shapes", extractor=classifier)
    with pytest.raises(UserError, match="acc.*no requested labels"):
        evaluate(images, "shapes", metrics=["acc"], features="shapes", extractor=classifier)
    with pytest.raises(UserError, match="sfid.*--features inception"):
        evaluate(images, "shapes", metrics=["sfid"], features="shapes", extractor=classifier)
    with pytest.raises(UserError, match="unknown fidd"):
        evaluate(images, "shapes", metrics=["fidd"], features="shapes", extractor=classifier)


def test_genzoo_eval_cli_writes_metrics_json(tmp_path, capsys):
    real, labels = shapes_arrays(120, seed=5)
    with NpzWriter(tmp_path / "run" / "samples.npz") as out:
        out.write(real, labels)
    (tmp_path / "run" / "metrics.json").write_text(json.dumps({"model": "m", "nfe": 35}))  # the demo's fields
    code = main(
        [
            "eval",
            "--samples",
            str(tmp_path / "run" / "samples.npz"),
            "--ref",
            "shapes",
            "--features",
            "shapes",
            "--metrics",
            "fid,pr,acc",
            "--ref-count",
            "200",
            "--save-ref",
            str(tmp_path / "ref.npz"),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "FD (shapes)" in printed and "cond. accuracy" in printed
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["model"] == "m" and record["nfe"] == 35 and record["schema"] == "genzoo-metrics/1"
    assert record["accuracy"] > 0.9 and record["features"] == "shapes" and record["num_ref"] == 200
    assert load_reference(tmp_path / "ref.npz").images.shape == (200, 32, 32, 3)
    assert main(["eval", "--samples", str(tmp_path / "none.npz"), "--ref", "shapes"]) == 2
    assert "none.npz: no such file" in capsys.readouterr().err


def test_measure_cost_counts_network_evaluations():
    net = nn.Linear(4, 4)
    counter = CallCounter(net)

    def sampler(n):  # 5 steps, the last on a doubled batch (as classifier-free guidance does)
        x = torch.randn(n, 4)
        for _ in range(4):
            x = net(x)
        return net(torch.cat([x, x]))[:n]

    cost = measure_cost(sampler, batch_size=8, batches=2, counter=counter)
    assert cost.nfe == pytest.approx(6.0) and cost.num_images == 16 and cost.images_per_s > 0
    assert cost.peak_memory_mb is None or cost.peak_memory_mb > 1
    reported = measure_cost(lambda n: (torch.zeros(n, 3, 8, 8), 35), batch_size=4, batches=1)
    assert reported.nfe == 35 and reported.latency_s >= 0


def test_one_nfe_counter_serves_the_samplers_and_cost_measurements():
    """Wrapped in the denoiser's place or hooked on the module, the same counter gives the same count."""
    from genzoo.diffusion import samplers as S
    from genzoo.nfe import NFECounter

    assert S.NFECounter is NFECounter and issubclass(CallCounter, NFECounter)
    net = nn.Linear(4, 4)
    hooked, wrapped = NFECounter(net, images=3, hook=True), NFECounter(net, images=3)
    x = torch.randn(3, 4)
    for _ in range(4):  # 4 plain calls and one on a doubled (guided) batch: 6 evaluations per image
        x = wrapped(x)
    wrapped(torch.cat([x, x]))
    assert (hooked.calls, hooked.rows, hooked.nfe) == (wrapped.calls, wrapped.rows, wrapped.nfe) == (5, 18, 6)
    assert hooked.per_image(3, 1) == 6.0
    hooked.remove()
    wrapped(x)
    assert (hooked.calls, wrapped.calls) == (5, 6)
