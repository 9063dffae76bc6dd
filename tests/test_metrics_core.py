"""Fréchet distance, streaming statistics, IS, precision/recall and KID against closed forms."""

import numpy as np
import pytest
import torch

from genzoo.metrics import (
    FeatureStats,
    frechet_distance,
    frechet_distance_features,
    inception_score,
    kid,
    mean_cov,
    precision_recall,
)


def test_frechet_distance_matches_closed_form_for_commuting_gaussians():
    # Diagonal covariances commute: tr(sqrt(S1 S2)) = sum sqrt(a_i b_i),
    # so FD = |dmu|^2 + sum (sqrt a - sqrt b)^2.
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    a, b = rng.uniform(0.5, 3, 5), rng.uniform(0.5, 3, 5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_rotated_gaussians_and_one_dimension():
    # W2 between N(0, s1^2) and N(m, s2^2) in 1-D is m^2 + (s1 - s2)^2.
    assert frechet_distance([0.0], [[4.0]], [3.0], [[1.0]]) == pytest.approx(9 + 1)
    # Same covariance rotated into a full matrix: FD depends only on the means.
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    sigma = q @ np.diag(rng.uniform(0.1, 2, 6)) @ q.T
    mu = rng.normal(size=6)
    assert frechet_distance(mu, sigma, mu + 1, sigma) == pytest.approx(6.0, abs=1e-8)


def test_fid_of_a_set_against_itself_is_zero_even_when_singular():
    features = np.random.default_rng(2).normal(size=(50, 64))  # fewer samples than dimensions
    mu, sigma = mean_cov(features)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-5
    assert abs(frechet_distance_features(features, features)) < 1e-5


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="mismatched"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_streaming_stats_equal_numpy_in_any_batching():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(301, 7)) * 3 + 1000  # a large common offset tests the shifted sums
    stats = FeatureStats()
    for i, chunk in enumerate(np.array_split(features, [1, 50, 51, 200])):
        stats.update(torch.from_numpy(chunk) if i % 2 else chunk)  # tensors and arrays alike
    mu, sigma = stats.mean_cov()
    np.testing.assert_allclose(mu, features.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(features, rowvar=False), rtol=1e-9, atol=1e-9)
    assert stats.count == 301 and mu.dtype == np.float64
    with pytest.raises(ValueError, match="dimension"):
        stats.update(np.zeros((2, 8)))


def test_inception_score_constant_is_one_and_uniform_one_hot_is_k():
    k = 10
    constant = torch.zeros(200, k)
    constant[:, 3] = 50.0
    mean, std = inception_score(constant, splits=4)
    assert mean == pytest.approx(1.0, abs=1e-9) and std == pytest.approx(0.0, abs=1e-9)
    one_hot = 200.0 * torch.eye(k).repeat(20, 1)  # every split of 50 rows holds each class 5 times
    mean, std = inception_score(one_hot, splits=4)
    assert mean == pytest.approx(k, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)
    # ADM's block scheme: blocks of split_size rows.
    assert inception_score(one_hot, split_size=100)[0] == pytest.approx(k, rel=1e-9)


def test_inception_score_two_classes_closed_form():
    # p(y|x) = (0.9, 0.1) for half, (0.1, 0.9) for the rest: IS = exp(KL((.9,.1) || (.5,.5))).
    # float64 inputs: a float32 log differs in its last bits between CPUs' vector maths.
    p = torch.tensor([[0.9, 0.1], [0.1, 0.9]], dtype=torch.float64).repeat(50, 1)
    kl = 0.9 * np.log(0.9 / 0.5) + 0.1 * np.log(0.1 / 0.5)
    assert inception_score(p.log(), splits=1)[0] == pytest.approx(np.exp(kl), rel=1e-9)


def _cluster(rng, centre, n, dim=2):
    return rng.normal(size=(n, dim)) + np.asarray(centre, dtype=np.float64)


def test_precision_recall_on_constructed_clouds():
    rng = np.random.default_rng(4)
    a, b, c = _cluster(rng, (0, 0), 100), _cluster(rng, (1000, 0), 100), _cluster(rng, (-1000, 0), 100)
    real = np.concatenate([a, b])
    fake = np.concatenate([a.copy(), c])  # half the fakes are real points, half lie far from everything
    precision, recall = precision_recall(real, fake, k=3, batch_size=37)
    assert precision == pytest.approx(0.5)  # fakes in C are outside every real ball
    assert recall == pytest.approx(0.5)  # reals in B are outside every fake ball
    assert precision_recall(real, real, k=3) == (1.0, 1.0)


def test_precision_counts_points_exactly_at_the_kth_neighbour_radius():
    real = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    # k=1 radii: 1, 1, 1, 1, 7. A fake at 17 is exactly 7 from the real point at 10; one at 17.5 is not.
    precision, _ = precision_recall(real, np.array([[17.0], [17.5], [0.5], [5.5]]), k=1)
    assert precision == pytest.approx(3 / 4)


def _mmd2_brute_force(x, y):
    kernel = lambda a, b: (a @ b / x.shape[1] + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(kernel(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(kernel(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(kernel(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_equals_brute_force_unbiased_mmd_and_separates_distributions():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(12, 4)), rng.normal(size=(12, 4)) + 0.5
    mean, std = kid(x, y, subsets=3, subset_size=50)  # capped at 12: a subset of everything is everything
    assert mean == pytest.approx(_mmd2_brute_force(x, y), rel=1e-9) and std == pytest.approx(0, abs=1e-12)
    same = kid(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)), subsets=5, subset_size=200)[0]
    shifted = kid(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)) + 1, subsets=5, subset_size=200)[0]
    assert abs(same) < 0.05 < shifted
