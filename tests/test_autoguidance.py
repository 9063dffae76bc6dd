"""Autoguidance (Karras et al. 2024) and the guidance interval (Kynkäänniemi et al. 2024): identities on
the analytic mixture, unguided steps outside the interval, the NFE count in closed form, the API's
--guide-model, the CD teacher, and the CLI's errors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from closed_forms import heun_nfe

from genzoo.checkpoints import save_model_dir
from genzoo.cli import main
from genzoo.diffusion import samplers as S
from genzoo.diffusion.analytic import AnalyticDenoiser, random_mixture
from genzoo.diffusion.family import build_diffusion_model
from genzoo.diffusion.guidance import AutoGuidance, ClassifierFreeGuidance
from genzoo.errors import UserError

NET = dict(resolution=8, in_channels=3, out_channels=3, label_dim=4, model_channels=8, channel_mult=[1, 2],
           num_blocks=1, attn_resolutions=[])


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def mixtures():
    return random_mixture(dim=3, components=6, num_classes=3, seed=4), \
        random_mixture(dim=3, components=6, num_classes=3, seed=5)


class Counting(torch.nn.Module):
    """A denoiser that records the σ of every call."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []
        for name in ("sigma_min", "sigma_max", "sigma_data", "label_dim"):
            setattr(self, name, getattr(inner, name))

    def round_sigma(self, sigma):
        return self.inner.round_sigma(sigma)

    def forward(self, x, sigma, class_labels=None, **cond):
        self.calls.append(torch.as_tensor(sigma).reshape(-1).clone())
        return self.inner(x, sigma, class_labels, **cond)


def test_autoguidance_formula_and_guide_equal_to_main(mixtures):
    main_mix, guide_mix = mixtures
    D, G = AnalyticDenoiser(main_mix), AnalyticDenoiser(guide_mix)
    x = torch.randn(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y, sigma = torch.arange(16) % 3, torch.linspace(0.1, 5, 16, dtype=torch.float64)
    torch.testing.assert_close(AutoGuidance(D, G, 2.5)(x, sigma, y), G(x, sigma, y) + 2.5 * (D(x, sigma, y)
                                                                                           - G(x, sigma, y)))
    # the guide equal to the main model: exactly no guidance, along a whole sampler trajectory
    assert torch.equal(AutoGuidance(D, D, 3.0)(x, sigma, y), D(x, sigma, y))
    z = torch.randn(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(S.edm_sampler(AutoGuidance(D, D, 3.0), z, y, num_steps=8),
                       S.edm_sampler(D, z, y, num_steps=8))
    assert torch.equal(AutoGuidance(D, G, 1.0)(x, sigma, y), D(x, sigma, y))  # w = 1: the main model


def test_interval_guides_only_inside_and_per_item(mixtures):
    D, G = AnalyticDenoiser(mixtures[0]), AnalyticDenoiser(mixtures[1])
    x = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = torch.arange(6) % 3
    sigma = torch.tensor([0.1, 0.5, 0.50001, 2.0, 3.0, 9.0], dtype=torch.float64)
    for guided in (AutoGuidance(D, G, 2.0, interval=(0.5, 3.0)),
                   ClassifierFreeGuidance(D, 2.0, interval=(0.5, 3.0))):
        full = type(guided)(D, G, 2.0) if isinstance(guided, AutoGuidance) else ClassifierFreeGuidance(D, 2.0)
        out, want_guided, plain = guided(x, sigma, y), full(x, sigma, y), D(x, sigma, y)
        inside = torch.tensor([False, False, True, True, True, False])  # σ_lo < σ <= σ_hi
        assert torch.equal(out[inside], want_guided[inside]) and torch.equal(out[~inside], plain[~inside])
        assert not torch.equal(want_guided[~inside], plain[~inside])  # guidance does change those items


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny class-conditional denoiser and a differently initialised 'guide', saved as model dirs."""
    root = tmp_path_factory.mktemp("guide")
    config = {"family": "diffusion", "arch": "ddpmpp", "net": NET, "precond": "edm", "resolution": 8,
              "channels": 3, "num_classes": 4, "sampled_player": "net"}
    for name, seed in (("main", 0), ("guide", 1)):
        torch.manual_seed(seed)
        model = build_diffusion_model(config)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        save_model_dir(root / name, config, {"model": {f"net.{k}": v for k, v in model.state_dict().items()}})
    other = dict(config, net=dict(NET, resolution=4), resolution=4)
    save_model_dir(root / "small", other, {"model": {f"net.{k}": v for k, v in
                                                      build_diffusion_model(other).state_dict().items()}})
    return root


def test_sampling_with_a_guide_model_nfe_and_the_interval(models):
    from genzoo.api import load, sample

    model = load(models / "main")
    seeds, labels = [3, 4], [1, 2]
    plain, _, nfe_plain = sample(model, seeds, labels, steps=5)
    assert nfe_plain == 9
    # the guide equal to the main model: no guidance (same images), two evaluations per step
    same, _, nfe = sample(model, seeds, labels, steps=5, guidance=2.5, guide_model=str(models / "main"))
    assert torch.equal(same, plain) and nfe == 18
    guided, _, nfe = sample(model, seeds, labels, steps=5, guidance=2.5, guide_model=str(models / "guide"))
    assert nfe == 18 and not torch.equal(guided, plain)
    # an interval that holds no σ of the grid: every step unguided, one evaluation each
    none, _, nfe = sample(model, seeds, labels, steps=5, guidance=2.5, guide_model=str(models / "guide"),
                          guidance_interval="100,200")
    assert torch.equal(none, plain) and nfe == 9
    everything, _, nfe = sample(model, seeds, labels, steps=5, guidance=2.5,
                                guide_model=str(models / "guide"), guidance_interval="0,80")
    assert torch.equal(everything, guided) and nfe == 18
    for sampler in ("heun", "euler", "ddim", "dpmpp2m"):
        for lo, hi in ((0.3, 5.0), (1.0, 80.0)):
            for guide in (None, str(models / "guide")):
                _, _, nfe = sample(model, seeds, labels, steps=6, sampler=sampler, guidance=2.0,
                                   guide_model=guide, guidance_interval=f"{lo},{hi}")
                if sampler == "heun":
                    assert nfe == heun_nfe(6, lo, hi, 2)
                else:
                    grid = S.noise_levels(model, "edm", 6)[:-1]
                    assert nfe == 6 + int(((grid > lo) & (grid <= hi)).sum()), sampler


def test_steps_outside_the_interval_are_unguided(mixtures):
    """Counting the calls per σ: outside the interval the main model alone, once; inside both."""
    D, G = Counting(AnalyticDenoiser(mixtures[0])), Counting(AnalyticDenoiser(mixtures[1]))
    z = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    y = torch.arange(4) % 3
    S.edm_sampler(AutoGuidance(D, G, 2.0, interval=(0.3, 5.0)), z, y, num_steps=10)
    main_sigmas, guide_sigmas = torch.cat(D.calls), torch.cat(G.calls)
    assert len(main_sigmas) == 19
    assert bool(((guide_sigmas > 0.3) & (guide_sigmas <= 5.0)).all())
    assert len(guide_sigmas) == int(((main_sigmas > 0.3) & (main_sigmas <= 5.0)).sum()) > 0


def test_guidance_errors(models, capsys):
    from genzoo.api import load, sample

    model = load(models / "main")
    with pytest.raises(UserError, match="--guide-model: needs --guidance"):
        sample(model, [0], steps=2, guide_model=str(models / "guide"))
    with pytest.raises(UserError, match="the guide's resolution is 4"):
        sample(model, [0], steps=2, guidance=2.0, guide_model=str(models / "small"))
    out = str(models / "x.npz")
    bad = [
        (["--guidance-interval", "0.1,1"], "--guidance-interval: needs --guidance"),
        (["--guidance", "2", "--guidance-interval", "3,1"], "SIGMA_LO < SIGMA_HI"),
        (["--guidance", "2", "--guidance-interval", "a"], "SIGMA_LO,SIGMA_HI"),
        (["--guidance", "2", "--guide-model", str(models / "missing")], "--guide-model: "),
    ]
    for flags, message in bad:
        assert main(["sample", "--ckpt", str(models / "main"), "--seeds", "0", "--steps", "2", "--out", out,
                     *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_cd_teacher_with_autoguidance_and_interval(models):
    from genzoo.api import load
    from genzoo.consistency.family import FAMILY as CM

    data = SimpleNamespace(resolution=8, num_channels=3, num_classes=4)
    objective = CM.build_objective({"mode": "cd", "teacher": str(models / "main"), "teacher_guidance": 2.0,
                                    "teacher_guide_model": str(models / "guide"),
                                    "teacher_guidance_interval": "0.5,3"}, data)
    teacher = objective.teacher
    assert isinstance(teacher, AutoGuidance) and teacher.interval == (0.5, 3.0)
    main_model, guide = load(models / "main"), load(models / "guide")
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([1, 3])
    with torch.no_grad():
        for s in (1.0, 4.0):
            sigma = torch.full((2,), s)
            d, g = main_model(x, sigma, y), guide(x, sigma, y)
            expected = g + 2.0 * (d - g) if 0.5 < s <= 3 else d
            torch.testing.assert_close(teacher(x, sigma, y), expected, rtol=1e-5, atol=1e-6)
    cfg = CM.build_objective({"mode": "cd", "teacher": str(models / "main"), "teacher_guidance": 2.0,
                              "teacher_guidance_interval": "0.5,3"}, data)
    assert isinstance(cfg.teacher, ClassifierFreeGuidance) and cfg.teacher.interval == (0.5, 3.0)
    for mode in ("ect", "scm"):  # ECT's and sCM's distillation guide the teacher the same way
        guided = CM.build_objective({"mode": mode, "teacher": str(models / "main"), "teacher_guidance": 2.0,
                                     "teacher_guidance_interval": "0.5,3", "steps": 10}, data).teacher
        assert isinstance(guided, ClassifierFreeGuidance) and guided.interval == (0.5, 3.0)
    with pytest.raises(UserError, match="--teacher-guide-model: needs --teacher-guidance"):
        CM.build_objective({"mode": "cd", "teacher": str(models / "main"),
                            "teacher_guide_model": str(models / "guide")}, data)
    with pytest.raises(UserError, match="--teacher-guide-model: the guide's resolution"):
        CM.build_objective({"mode": "cd", "teacher": str(models / "main"), "teacher_guidance": 2.0,
                            "teacher_guide_model": str(models / "small")}, data)
