"""Data-parallel helpers in one process, against a stand-in group of identical ranks."""
import numpy as np
import pytest

import fastdl
from fastdl import distributed, nn, optim


class IdenticalRanks:
    """A world of ``size`` ranks that all hold this process's arrays: an Allreduce sum
    multiplies by the size."""

    rank = 0
    backend = "test"

    def __init__(self, size=2):
        self.size = size

    def allreduce_(self, array, op="sum", timeout=None):
        array *= array.dtype.type(self.size)
        return array


def backward(model, rng):
    model(fastdl.Tensor(rng.normal(size=(4, 3)))).sum().backward()


@pytest.fixture
def model():
    fastdl.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()


def test_identical_ranks_average_to_the_local_gradients(model, rng):
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    backward(model, rng)
    model[2].bias.grad = None                              # no gradient this step
    local = [None if p.grad is None else p.grad.numpy().copy() for p in model.parameters()]
    distributed.average_gradients(optimizer, IdenticalRanks())
    for p, expected in zip(model.parameters(), local):
        if expected is None:
            assert p.grad is None
        else:
            np.testing.assert_array_equal(p.grad.numpy(), expected)
            assert np.shares_memory(p.grad.numpy(), optimizer.flat_grads)


def test_an_assigned_gradient_is_averaged_and_stepped_with(model, rng):
    optimizer = optim.SGD(model.parameters(), lr=1.0)
    weight = model[0].weight
    before = weight.numpy().copy()
    weight.grad = np.ones(weight.shape)                    # outside the flat buffer
    optimizer.gradient_buffer()[:] = 0                     # as if other ranks sent zeros
    np.testing.assert_array_equal(weight.grad.numpy(), 0)  # it now views the buffer
    optimizer.step()
    np.testing.assert_array_equal(weight.numpy(), before)


def test_a_reshaped_parameter_without_a_gradient_is_repacked_first(model, rng):
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    backward(model, rng)
    optimizer.step()
    optimizer.zero_grad()
    bias = model[2].bias
    bias.data = np.zeros((1, 2))                           # new shape, and no gradient
    backward_free = [p for p in model.parameters() if p is not bias]
    for p in backward_free:
        p.grad = np.ones(p.shape)
    distributed.average_gradients(optimizer, IdenticalRanks())
    assert bias.grad is None and bias.numpy().base is optimizer.flat_params
    assert optimizer.flat_grads.size == sum(p.numel() for p in model.parameters())
    for p in backward_free:
        np.testing.assert_array_equal(p.grad.numpy(), 1)
    optimizer.step()
