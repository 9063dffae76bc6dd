"""Consistency models: the boundary parameterisation, the CT/iCT schedules, multistep sampling."""

import math

import pytest
import torch
import torch.nn as nn

from genzoo.consistency import (
    ConsistencyModel,
    ct_num_scales,
    ct_target_ema,
    ict_num_scales,
    ict_pair_probabilities,
    karras_index_sigmas,
    parse_sigmas,
    parse_ts,
    sample,
    scalings,
    ternary_search,
)
from genzoo.consistency.distances import get_distance, l2_32, pseudo_huber
from genzoo.consistency.sampling import schedule_sigmas
from genzoo.errors import UserError
from genzoo.seeds import StackedRandomGenerator


class TinyNet(nn.Module):
    """forward(x, noise_labels, class_labels=None): a conv whose output depends on the noise label."""

    def __init__(self, channels=3, resolution=8):
        super().__init__()
        self.resolution, self.in_channels, self.out_channels = resolution, channels, channels
        self.label_dim = 0
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.noise_labels = []

    def forward(self, x, noise_labels, class_labels=None):
        self.noise_labels.append(noise_labels.detach().clone())
        return torch.tanh(self.conv(x)) * 3 + noise_labels.reshape(-1, 1, 1, 1)


def test_scalings_match_the_paper_and_hit_the_boundary():
    sigma = torch.tensor([0.002, 0.5, 80.0], dtype=torch.float64)
    c_skip, c_out, c_in = scalings(sigma)
    assert c_skip[0] == 1 and c_out[0] == 0
    # σ = 0.5: c_skip = .25/(.498² + .25), c_out = .498·.5/√.5, c_in = 1/√.5
    assert c_skip[1].item() == pytest.approx(0.25 / (0.498 ** 2 + 0.25), rel=1e-12)
    assert c_out[1].item() == pytest.approx(0.498 * 0.5 / math.sqrt(0.5), rel=1e-12)
    assert c_in[1].item() == pytest.approx(1 / math.sqrt(0.5), rel=1e-12)
    assert c_skip[2].item() == pytest.approx(0.25 / (79.998 ** 2 + 0.25), rel=1e-12)


def test_f_at_sigma_min_is_exactly_the_identity():
    torch.manual_seed(0)
    f = ConsistencyModel(TinyNet())
    x = torch.randn(4, 3, 8, 8) * 3
    assert torch.equal(f(x, f.sigma_min), x)
    assert torch.equal(f(x, torch.full((4,), 0.002)), x)
    assert not torch.allclose(f(x, 1.0), x)
    f(x, 2.0)
    assert torch.allclose(f.model.noise_labels[-1], torch.full((4,), 0.25 * math.log(2.0)))


def test_ct_schedules_against_hand_computed_values():
    # N(k) = ceil(sqrt(k/K((s1+1)^2 - s0^2) + s0^2) - 1) + 1 with s0 = 2, s1 = 150, K = 100
    assert ct_num_scales(0, 100) == 2
    assert ct_num_scales(50, 100) == math.ceil(math.sqrt(0.5 * (151 ** 2 - 4) + 4) - 1) + 1 == 107
    assert ct_num_scales(100, 100) == 151
    expected = math.ceil(math.sqrt(0.1 * (201 ** 2 - 4) + 4) - 1) + 1
    assert ct_num_scales(10, 100, s0=2, s1=200) == expected == 64
    # mu(k) = exp(s0 ln mu0 / N(k))
    assert ct_target_ema(0, 100, mu0=0.95) == pytest.approx(0.95)
    assert ct_target_ema(50, 100, mu0=0.9) == pytest.approx(math.exp(2 * math.log(0.9) / 107))
    assert ct_target_ema(100, 100, mu0=0.95) == pytest.approx(0.95 ** (2 / 151))


def test_ict_curriculum_doubles_and_pairs_follow_the_lognormal():
    # s0 = 10, s1 = 1280: 8 stages of K' = floor(800 / 8) = 100 steps each
    assert [ict_num_scales(k, 800) for k in (0, 99, 100, 250, 700, 799)] == [11, 11, 21, 41, 1281, 1281]
    sigmas = karras_index_sigmas(11).flip(0)
    p = ict_pair_probabilities(sigmas)
    assert p.shape == (10,) and p.sum().item() == pytest.approx(1.0)
    cdf = lambda s: torch.erf((s.log() + 1.1) / (math.sqrt(2) * 2.0))  # noqa: E731
    expected = cdf(sigmas[1:]) - cdf(sigmas[:-1])
    assert torch.allclose(p, expected / expected.sum())


def test_distances():
    x, y = torch.zeros(2, 3, 64, 64), torch.ones(2, 3, 64, 64)
    c = 0.00054 * math.sqrt(3 * 64 * 64)
    assert torch.allclose(pseudo_huber(x, y), torch.full((2,), math.sqrt(3 * 64 * 64 + c * c) - c))
    assert torch.allclose(l2_32(x, 2 * y), torch.full((2,), 4.0))
    assert torch.allclose(get_distance("l1")(x, -y), torch.ones(2))
    with pytest.raises(UserError, match="--lpips-weights"):
        get_distance("lpips")
    with pytest.raises(UserError, match="--distance"):
        get_distance("l3")


def test_schedule_indices_and_nfe():
    grid = karras_index_sigmas(40)
    assert grid[0].item() == pytest.approx(80.0) and grid[-1].item() == pytest.approx(0.002)
    sig = schedule_sigmas(0.002, 80.0, 7.0, 40, parse_ts("0,22,39"))
    assert sig == pytest.approx([80.0, grid[22].item()])  # the last index is σ_min: no evaluation
    assert schedule_sigmas(0.002, 80.0, 7.0, 1) == pytest.approx([80.0])
    assert len(schedule_sigmas(0.002, 80.0, 7.0, 3)) == 3
    with pytest.raises(UserError, match="--ts"):
        parse_ts("0,22,22")
    with pytest.raises(UserError, match="outside"):
        schedule_sigmas(0.002, 80.0, 7.0, 20, [0, 22, 39])


def test_one_and_two_step_sampling_follow_algorithm_1():
    torch.manual_seed(0)
    f = ConsistencyModel(TinyNet()).eval()
    rng = StackedRandomGenerator("cpu", [3, 4])
    images, nfe = sample(f, rng.randn_like, (2, 3, 8, 8), steps=1)
    z = StackedRandomGenerator("cpu", [3, 4]).randn((2, 3, 8, 8))
    assert nfe == 1 and torch.allclose(images, f(z * 80.0, 80.0).clamp(-1, 1))
    # two steps on ts = 0, 22, 39: x0 = f(80 z), then x0 + z'·sqrt(t22² − σ_min²)
    rng = StackedRandomGenerator("cpu", [3, 4])
    images, nfe = sample(f, rng.randn_like, (2, 3, 8, 8), steps=40, ts=[0, 22, 39])
    rng = StackedRandomGenerator("cpu", [3, 4])
    x0 = f(rng.randn((2, 3, 8, 8)) * 80.0, 80.0).clamp(-1, 1)
    t = karras_index_sigmas(40)[22].item()
    expected = f(x0 + rng.randn((2, 3, 8, 8)) * math.sqrt(t * t - 0.002 ** 2), t).clamp(-1, 1)
    assert nfe == 2 and torch.allclose(images, expected, atol=1e-6)


def test_explicit_noise_levels_are_the_evaluations_and_renoising_levels():
    """``sigmas``: f evaluated at exactly the given levels; between them x = x₀ + z·√(σ² − σ_min²)."""
    calls = []

    class Recorder(nn.Module):
        sigma_min, sigma_max, rho = 0.002, 80.0, 7.0

        def forward(self, x, sigma, class_labels=None):
            calls.append((float(sigma), x.detach().clone()))
            return torch.full_like(x, 0.25)

    ones = lambda like: torch.ones_like(like)  # noqa: E731
    images, nfe = sample(Recorder(), ones, (1, 1, 2, 2), sigmas=[20.0, 0.821], device="cpu")
    assert nfe == 2 and [s for s, _ in calls] == [20.0, 0.821]
    assert torch.all(calls[0][1] == 20.0)
    assert torch.allclose(calls[1][1], torch.tensor(0.25 + math.sqrt(0.821 ** 2 - 0.002 ** 2)))
    assert torch.all(images == 0.25)
    # the default two-step schedule is the same as its levels given explicitly
    f = ConsistencyModel(TinyNet()).eval()
    levels = schedule_sigmas(0.002, 80.0, 7.0, 2)
    by_steps, _ = sample(f, StackedRandomGenerator("cpu", [5]).randn_like, (1, 3, 8, 8), steps=2)
    by_levels, _ = sample(f, StackedRandomGenerator("cpu", [5]).randn_like, (1, 3, 8, 8), sigmas=levels)
    assert torch.equal(by_steps, by_levels)
    with pytest.raises(ValueError, match="not both"):
        sample(f, ones, (1, 3, 8, 8), steps=2, sigmas=levels)


def test_parse_sigmas_checks_order_and_range():
    assert parse_sigmas("80,0.821", 0.002, 80.0) == [80.0, 0.821]
    assert parse_sigmas([5], 0.002, 80.0) == [5.0] and parse_sigmas(None, 0.002, 80.0) is None
    cases = [("80,x", "expected noise levels like"), ("0.8,2", "expected strictly decreasing"),
             ("2,2", "expected strictly decreasing"), ("81", r"expected .* = \(0.002, 80\], got 81$"),
             ("80,0.002", r"expected .* = \(0.002, 80\], got 80,0.002$"), (",", "expected noise levels like")]
    for text, message in cases:
        with pytest.raises(UserError, match="^--sigmas: " + message):
            parse_sigmas(text, 0.002, 80.0)


def test_ternary_search_finds_the_minimum_with_few_evaluations():
    calls = []

    def metric(i):
        calls.append(i)
        return (i - 17) ** 2 + 0.5

    best, value, seen = ternary_search(metric, 1, 38)
    assert best == 17 and value == 0.5
    assert len(calls) == len(set(calls)) < 20


def test_lpips_loads_a_user_weights_file_and_is_a_distance(tmp_path):
    from safetensors.torch import save_file

    from genzoo.nets.lpips import LPIPS

    torch.manual_seed(0)
    state = {k: (v.abs() if k.startswith("lin") else v) for k, v in LPIPS().state_dict().items()}
    assert "net.slice3.14.weight" in state and state["lin4.model.1.weight"].shape == (1, 512, 1, 1)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "lpips.safetensors"))
    distance = get_distance("lpips", str(tmp_path / "lpips.safetensors"))
    model = distance.func.__self__
    x, y = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.allclose(model(x, x), torch.zeros(2), atol=1e-6)
    d = model(x, y)
    assert d.shape == (2,) and (d > 0).all() and torch.allclose(d, model(y, x), rtol=1e-4)
    save_file({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(UserError, match="bad.safetensors.*missing keys"):
        get_distance("lpips", str(tmp_path / "bad.safetensors"))


def _random_lpips_file(tmp_path):
    from safetensors.torch import save_file

    from genzoo.nets.lpips import LPIPS

    torch.manual_seed(0)
    state = {k: (v.abs() if k.startswith("lin") else v) for k, v in LPIPS().state_dict().items()}
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "lpips.safetensors"))
    return str(tmp_path / "lpips.safetensors")


def test_lpips_working_resolution_is_lpips_of_the_pre_resized_images(tmp_path):
    """``--lpips-size S`` resizes both images bilinearly to S px, whatever their size, then takes LPIPS."""
    import torch.nn.functional as F

    weights = _random_lpips_file(tmp_path)
    x, y = torch.rand(3, 3, 16, 16) * 2 - 1, torch.rand(3, 3, 16, 16) * 2 - 1
    for size in (16, 32, 48):
        distance = get_distance("lpips", weights, lpips_size=size)
        model = distance.func.__self__
        up = [F.interpolate(v, size=size, mode="bilinear", align_corners=False) for v in (x, y)]
        torch.testing.assert_close(distance(x, y), model(*up), rtol=0, atol=0)
    same = get_distance("lpips", weights, lpips_size=16)
    torch.testing.assert_close(same(x, y), model(x, y), rtol=0, atol=0)  # at its own size: no resize
    down = same(*[F.interpolate(v, size=32) for v in (x, y)])
    assert down.shape == (3,) and (down > 0).all()  # larger images are resized down to the working size


def test_lpips_in_bf16_autocast_gives_an_fp32_distance_near_the_fp32_one(tmp_path):
    weights = _random_lpips_file(tmp_path)
    distance = get_distance("lpips", weights, lpips_size=32)
    x, y = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = distance(x, y)
    assert low.dtype == torch.float32  # features unit-normalised and summed in fp32
    # bf16 keeps 8 significant bits: each of the 13 convolutions rounds its inputs to ~2⁻⁸ relative
    torch.testing.assert_close(low, distance(x, y), rtol=13 * 2.0 ** -8, atol=0)


def test_lpips_mix_adds_weighted_lpips_to_the_distance(tmp_path):
    weights = _random_lpips_file(tmp_path)
    x, y = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    mixed = get_distance("pseudo-huber", weights, lpips_size=32, lpips_mix=2.5)
    perceptual = get_distance("lpips", weights, lpips_size=32)
    torch.testing.assert_close(mixed(x, y), pseudo_huber(x, y) + 2.5 * perceptual(x, y))
    torch.testing.assert_close(mixed(x, x), torch.zeros(2), rtol=0, atol=1e-6)
    with pytest.raises(UserError, match="--lpips-mix: give the LPIPS weights file"):
        get_distance("l2", lpips_mix=1.0)
    for name, mix in (("lpips", 1.0), ("l2", 0.0)):
        with pytest.raises(UserError, match="--lpips-mix: expected a weight > 0 added to another --distance"):
            get_distance(name, weights, lpips_mix=mix)


def test_lpips_size_is_refused_when_too_small_or_without_lpips(tmp_path):
    from genzoo.cli import build_parser
    from genzoo.nets.lpips import LPIPS

    weights = _random_lpips_file(tmp_path)
    with pytest.raises(UserError, match=r"--lpips-size: expected an integer of at least 16 px.*got 8"):
        get_distance("lpips", weights, lpips_size=8)
    with pytest.raises(UserError, match="--lpips-size: only --distance lpips"):
        get_distance("pseudo-huber", lpips_size=64)
    with pytest.raises(UserError, match="--lpips-size"):
        LPIPS().distance(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16), size=15)
    argv = ["train", "--family", "consistency", "--mode", "ect", "--teacher", "t", "--data", "shapes:16",
            "--out", "o", "--distance", "lpips", "--lpips-weights", weights, "--lpips-size"]
    assert build_parser().parse_args([*argv, "64"]).lpips_size == 64
    for bad in ("8", "32.5", "x"):
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args([*argv, bad])
        assert exit_.value.code == 2


def test_search_middle_step_scores_two_step_schedules_on_a_held_out_metric():
    from genzoo.consistency import search_middle_step
    from genzoo.consistency.sampling import pixel_frechet

    torch.manual_seed(0)
    f = ConsistencyModel(TinyNet()).eval()
    reference = torch.rand(16, 3, 8, 8) * 2 - 1
    metric = pixel_frechet(reference, size=2)
    best, value, seen = search_middle_step(f, metric, seeds=range(12), steps=12, batch_size=5)
    assert 1 <= best <= 10 and value == min(seen.values()) and len(seen) < 10
    images, _ = sample(f, StackedRandomGenerator("cpu", list(range(12))).randn_like, (12, 3, 8, 8), steps=12,
                       ts=[0, best, 11])
    # float32 networks run at another batch size: allow ~1000 float32 ulps of the metric
    assert metric(images) == pytest.approx(value, rel=1000 * torch.finfo(torch.float32).eps)
