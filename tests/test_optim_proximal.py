"""optim.ProximalL1: the soft-threshold step after any optimizer, and sparse regression."""
import numpy as np
import pytest

import fastdl
import fastdl.functional as F
from fastdl import optim
from fastdl.kernels.optim import make_chunks
from fastdl.kernels.proximal import soft_threshold_

IRRELEVANT = [0, 2, 3, 5, 6, 8, 9]


def sparse_problem():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((200, 10))
    truth = np.zeros(10)
    truth[[1, 4, 7]] = [2.0, -3.0, 1.5]
    target = features @ truth + 0.01 * rng.standard_normal(200)
    return fastdl.Tensor(features), fastdl.Tensor(target), truth


def train(proximal, l1=0.1, steps=300):
    features, target, _ = sparse_problem()
    weight = fastdl.Tensor(np.zeros(10), requires_grad=True)
    sgd = optim.SGD([weight], lr=0.05)
    stepper = optim.ProximalL1(sgd, l1) if proximal else sgd
    for _ in range(steps):
        stepper.zero_grad()
        loss = ((features @ weight - target) ** 2).mean() / 2
        if not proximal:
            loss = loss + l1 * F.l1_penalty([weight])
        loss.backward()
        stepper.step()
    return np.array(weight)


def test_proximal_l1_zeroes_irrelevant_weights_where_the_subgradient_does_not():
    _, _, truth = sparse_problem()
    proximal, subgradient = train(True), train(False)
    assert (proximal[IRRELEVANT] == 0).sum() == 7        # exactly zero
    assert (subgradient[IRRELEVANT] == 0).sum() == 0     # left oscillating around 0
    # lasso shrinks the relevant weights by about l1 / Var(feature)
    np.testing.assert_allclose(proximal[[1, 4, 7]], truth[[1, 4, 7]], atol=0.2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_soft_threshold_kernel(dtype):
    values = np.array([-3.0, -0.5, 0.0, 0.2, 0.5, 2.0, np.nan], dtype=dtype)
    starts, ends, segments = make_chunks([0, 4], [4, 3])
    soft_threshold_(values, starts, ends, segments, np.array([0.5, 1.0]))
    np.testing.assert_array_equal(values[:6], np.array([-2.5, 0, 0, 0, 0, 1.0], dtype=dtype))
    assert np.isnan(values[6])   # NaN is not hidden as 0


def test_threshold_follows_each_group_lr_and_scheduler():
    a = fastdl.Tensor(np.full(3, 1.0), requires_grad=True)
    b = fastdl.Tensor(np.full(2, 1.0), requires_grad=True)
    frozen = fastdl.Tensor(np.full(2, 1.0), requires_grad=True)   # no gradient: untouched
    sgd = optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.2, "l1": 0.0},
                     {"params": [frozen], "lr": 0.1}], lr=0.1)
    scheduler = optim.lr_scheduler.StepLR(sgd, step_size=1, gamma=0.5)
    stepper = optim.ProximalL1(sgd, l1=1.0)
    for expected in (0.9, 0.85):   # thresholds lr*l1 = 0.1, then 0.05 after the scheduler
        stepper.zero_grad()
        ((a * 0).sum() + (b * 0).sum()).backward()
        stepper.step()
        scheduler.step()
        np.testing.assert_allclose(np.array(a), expected)
    np.testing.assert_array_equal(np.array(b), 1.0)        # the group's l1 = 0
    np.testing.assert_array_equal(np.array(frozen), 1.0)


def test_proximal_l1_arguments():
    weight = fastdl.Tensor(np.zeros(2), requires_grad=True)
    with pytest.raises(ValueError, match="l1 must be a number >= 0"):
        optim.ProximalL1(optim.SGD([weight], lr=0.1), -1.0)
    with pytest.raises(TypeError, match="optimizer must be a fastdl.optim.Optimizer"):
        optim.ProximalL1([weight], 0.1)
