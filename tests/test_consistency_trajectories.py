"""CD with trajectory targets: the teacher's ODE trajectories, the pool that holds them, the objective."""

import pytest
import torch

from genzoo.consistency import ConsistencyModel
from genzoo.consistency.model import karras_index_sigmas
from genzoo.consistency.objective import ConsistencyObjective
from genzoo.consistency.trajectories import TrajectoryPool, teacher_trajectory
from genzoo.diffusion.analytic import AnalyticDenoiser, GaussianMixture, random_mixture
from genzoo.errors import UserError
from genzoo.train.objective import Batch
from tests.test_consistency_train import MLP, _mixture, one_step_curve


def _gaussian():
    cov = torch.diag(torch.tensor([0.3, 0.05])).unsqueeze(0)
    return GaussianMixture(torch.zeros(1, 2), cov, shape=(2, 1, 1))


def _labelled_mixture():
    m = random_mixture(dim=2, components=4, num_classes=2, seed=3, scale=0.3, spread=0.8)
    return GaussianMixture(m.means, m.covs, m.weights, m.classes, shape=(2, 1, 1))


def test_teacher_trajectory_follows_the_closed_form_flow():
    mix = _gaussian()
    grid = karras_index_sigmas(6).double()
    noise = torch.randn(32, 2, 1, 1, dtype=torch.float64)
    start = noise * grid[0]
    exact = torch.stack([mix.flow(start, float(grid[0]), float(s)) for s in grid], 1)

    def errors(steps):
        states, end = teacher_trajectory(AnalyticDenoiser(mix), noise, grid, None, steps=steps)
        assert states.shape == (32, 5, 2, 1, 1) and end.shape == (32, 2, 1, 1)
        torch.testing.assert_close(states[:, 0], start.float())
        return (torch.cat([states, end[:, None]], 1) - exact).abs().amax((0, 2, 3, 4))

    fine, coarse = errors(16), errors(4)
    assert (fine[1:] < 5e-3).all() and (fine[1:] < coarse[1:] / 12).all()  # Heun: second order, 4x -> 16x


def _pool(mix, size=8, refresh=3, seed=0, steps=1):
    return TrajectoryPool(AnalyticDenoiser(mix), karras_index_sigmas(5), (2, 1, 1), mix.num_classes,
                          size=size, refresh=refresh, seed=seed, steps=steps)


def test_the_pool_is_a_function_of_the_step():
    mix = _labelled_mixture()
    cpu = torch.device("cpu")
    walked, jumped, rebuilt = _pool(mix), _pool(mix), _pool(mix)
    assert walked.block_steps == 2  # ⌈32/3⌉ steps, capped at size/refresh
    for step in range(8):
        walked.advance(step, cpu)
    jumped.advance(5, cpu)
    jumped.advance(7, cpu)
    rebuilt.advance(7, cpu)  # a run resumed at step 7
    for other in (jumped, rebuilt):
        torch.testing.assert_close(other.states, walked.states, rtol=0, atol=0)
        torch.testing.assert_close(other.ends, walked.ends, rtol=0, atol=0)
        assert torch.equal(other.labels, walked.labels)
    # after step 7 (block 3) the pool holds trajectories count-size … count-1, trajectory k in slot k mod size
    count = walked.count_after(7)
    assert count == 8 + 4 * 2 * 3 and walked.count == count
    newest = count - 1
    states, ends, labels = walked.generate([newest], cpu)
    assert torch.equal(walked.ends[newest % 8], ends[0]) and walked.labels[newest % 8] == labels[0]
    assert set(walked.labels.tolist()) <= {0, 1}
    other_seed = _pool(mix, seed=1)
    other_seed.advance(7, cpu)
    assert not torch.equal(other_seed.ends, walked.ends)
    with pytest.raises(ValueError, match="refresh"):
        _pool(mix, size=2, refresh=3)


def test_draw_pairs_points_with_the_end_of_their_own_trajectory():
    mix = _gaussian()
    pool = _pool(mix, size=16, refresh=4, steps=16)
    pool.advance(0, torch.device("cpu"))
    x_n, sigma, target, labels = pool.draw(64, torch.device("cpu"))
    assert labels is None and x_n.shape == (64, 2, 1, 1) and sigma.dtype == torch.float32
    grid = karras_index_sigmas(5)
    assert set(sigma.tolist()) <= set(grid[:-1].float().tolist())  # never σ_min, where f is the identity
    for i in range(64):  # x_n lies on the trajectory ending at target: the exact flow maps one to the other
        exact = mix.flow(x_n[i:i + 1].double(), float(sigma[i]), float(grid[-1]))
        assert (exact - target[i:i + 1]).abs().max() < 0.01


def test_trajectory_targets_lower_the_one_step_distance():
    torch.manual_seed(0)
    mix = _mixture()
    student = ConsistencyModel(MLP(), sigma_data=mix.sigma_data)
    objective = ConsistencyObjective(student, "cd", AnalyticDenoiser(mix), num_scales=10,
                                     cd_targets="trajectory", trajectory_pool=256, trajectory_refresh=16,
                                     image_shape=(2, 1, 1))
    batch = Batch(images=torch.zeros(128, 2, 1, 1), labels=torch.full((128,), -1))  # the data is not used
    distances = one_step_curve(objective, mix, 160, lambda g: batch)
    assert distances[-1] < 0.15 * distances[0], distances
    # the loss is the mean distance of the student at pool points to their trajectory ends
    torch.manual_seed(7)
    result = objective.loss("net", batch, 160)
    torch.manual_seed(7)
    x_n, sigma, target, _ = objective.pool.draw(128, torch.device("cpu"))
    expected = (student(x_n, sigma) - target).square().flatten(1).mean(1).mean()
    torch.testing.assert_close(result.loss, expected)


def test_trajectory_target_errors():
    teacher = AnalyticDenoiser(_gaussian())
    with pytest.raises(UserError, match="--cd-targets trajectory: needs --mode cd"):
        ConsistencyObjective(ConsistencyModel(MLP()), "ict", None, total_steps=10, cd_targets="trajectory")
    with pytest.raises(UserError, match="--cd-targets"):
        ConsistencyObjective(ConsistencyModel(MLP()), "cd", teacher, cd_targets="exact")
    with pytest.raises(UserError, match="--trajectory-refresh 0"):
        ConsistencyObjective(ConsistencyModel(MLP()), "cd", teacher, cd_targets="trajectory",
                             trajectory_refresh=0, image_shape=(2, 1, 1))
