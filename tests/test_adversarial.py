"""The shared adversarial pieces (genzoo.train.adversarial): one D step over tensors or multi-scale dicts."""

import math

import pytest
import torch

from genzoo.train import adversarial as A

EPS64 = torch.finfo(torch.float64).eps


def test_discriminator_loss_averages_a_multi_scale_dict_and_adds_scaled_penalties():
    """D(x) = Σ_k a_k·x per scale k: R1 = E‖Σ_k a_k‖², so the step's loss has a closed form."""
    g = torch.Generator().manual_seed(0)
    a = {k: torch.randn(6, generator=g, dtype=torch.float64) for k in ("s8", "s4")}
    real = torch.randn(3, 6, generator=g, dtype=torch.float64).requires_grad_(True)
    fake = torch.randn(3, 6, generator=g, dtype=torch.float64).requires_grad_(True)
    real_logits = {k: real @ v for k, v in a.items()}
    fake_logits = {k: fake @ v for k, v in a.items()}
    loss, logs = A.discriminator_loss("ns", real_logits, fake_logits, real, fake, r1_gamma=0.5, r2_gamma=0.25,
                                      penalty_scale=4.0)
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    ns = [sum(sp(-r) for r in real_logits[k].tolist()) / 3 + sum(sp(f) for f in fake_logits[k].tolist()) / 3
          for k in a]
    grad_sq = float((a["s8"] + a["s4"]).square().sum())
    expected = sum(ns) / 2 + 0.5 * 0.5 * 4.0 * grad_sq + 0.5 * 0.25 * 4.0 * grad_sq
    assert float(loss.detach()) == pytest.approx(expected, rel=64 * EPS64)
    assert logs["D/r1"] == pytest.approx(grad_sq, rel=64 * EPS64) and logs["D/r2"] == logs["D/r1"]
    # a plain tensor is one scale; no gammas, no penalties
    loss1, logs1 = A.discriminator_loss("hinge", real_logits["s8"], fake_logits["s8"])
    assert float(loss1) == float(A.hinge_d_loss(real_logits["s8"], fake_logits["s8"]))
    assert "D/r1" not in logs1


def test_gradient_penalty_over_pyramid_levels_sums_their_squared_gradients():
    x16 = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    x8 = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    logits = 2.0 * x16.flatten(1).sum(1) + 3.0 * x8.flatten(1).sum(1)
    assert float(A.gradient_penalty(logits, [x16, x8])) == pytest.approx(4.0 * 48 + 9.0 * 12, rel=16 * EPS64)


def test_generator_loss_pairs_rpgan_per_scale():
    f64 = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    fake, real = {"a": f64(0.0, 1.0), "b": f64(2.0, -1.0)}, {"a": f64(1.0, 1.0), "b": f64(0.0, 0.0)}
    expected = (float(A.rpgan_g_loss(fake["a"], real["a"])) + float(A.rpgan_g_loss(fake["b"], real["b"]))) / 2
    assert float(A.generator_loss("rpgan", fake, real)) == pytest.approx(expected, rel=16 * EPS64)
    with pytest.raises(ValueError, match="real images"):
        A.generator_loss("rpgan", fake)
