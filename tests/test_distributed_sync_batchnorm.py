"""SyncBatchNorm in one process: ranks as threads, or identical ranks, against BatchNorm2d."""
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastdl
from fastdl import nn
from fastdl.distributed import SyncBatchNorm


class ThreadRanks:
    """``size`` ranks as threads of this process: ``rank(r)`` is rank r's group, whose
    Allreduce adds the ranks' arrays in rank order."""

    def __init__(self, size):
        self.size = size
        self.arrays = [None] * size
        self.barrier = threading.Barrier(size, timeout=120)

    def rank(self, rank):
        world = self

        class Rank:
            size = world.size
            backend = "threads"

            def allreduce_(self, array, op="sum", timeout=None):
                world.arrays[rank] = array.copy()
                world.barrier.wait()
                total = world.arrays[0].copy()
                for other in world.arrays[1:]:
                    total += other
                world.barrier.wait()   # all have read before the next Allreduce writes
                array[...] = total
                return array

        group = Rank()
        group.rank = rank
        return group


class IdenticalRanks:
    """A world of ``size`` ranks all holding this process's arrays."""

    rank = 0
    backend = "test"

    def __init__(self, size):
        self.size = size

    def allreduce_(self, array, op="sum", timeout=None):
        array *= array.dtype.type(self.size)
        return array


TOLERANCE = {np.float32: 1e-6, np.float64: 1e-12}


def make(layer, dtype, group=None, **options):
    fastdl.manual_seed(0)
    module = layer(3, process_group=group, **options) if group else layer(3, **options)
    if dtype == np.float64:
        module.double()
    if module.weight is not None:
        module.weight.data = np.linspace(0.5, 1.5, 3).astype(dtype)
    if module.bias is not None:
        module.bias.data = np.linspace(-1, 1, 3).astype(dtype)
    return module


def run(module, x, grad, steps=2):
    """Forward and backward ``steps`` times: the outputs, input and parameter gradients of
    the last, and the module's running statistics."""
    for _ in range(steps):
        module.zero_grad()
        x_tensor = fastdl.Tensor(x, requires_grad=True)
        y = module(x_tensor)
        y.backward(grad)
    params = [p.grad.numpy() for p in module.parameters()]
    buffers = [np.array(b) for b in module.buffers() if b is not None]
    return [y.numpy(), x_tensor.grad.numpy()] + params + buffers


def assert_close(ours, theirs, dtype):
    for index, (a, b) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(a, b, rtol=0, atol=TOLERANCE[dtype] * max(1, np.abs(b).max()),
                                   err_msg="output %d" % index)


OPTIONS = [{}, {"momentum": None}, {"affine": False}, {"track_running_stats": False},
           {"bias": False}]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", OPTIONS)
def test_two_thread_ranks_equal_batch_norm_on_the_whole_batch(rng, dtype, options):
    x = (rng.standard_normal((6, 3, 5, 4)) * 3 + 2).astype(dtype)
    grad = rng.standard_normal(x.shape).astype(dtype)
    whole = run(make(nn.BatchNorm2d, dtype, **options), x, grad)
    world = ThreadRanks(2)
    halves = (slice(0, 2), slice(2, 6))   # unequal parts
    with ThreadPoolExecutor(2) as pool:
        ranks = list(pool.map(
            lambda r: run(make(SyncBatchNorm, dtype, world.rank(r), **options),
                          x[halves[r]], grad[halves[r]]), range(2)))
    n_params = len(whole) - 2 - len([b for b in make(nn.BatchNorm2d, dtype, **options)
                                     .buffers() if b is not None])
    for rank, part in enumerate(ranks):
        assert_close(part[:2], [whole[0][halves[rank]], whole[1][halves[rank]]], dtype)
        assert_close(part[2 + n_params:], whole[2 + n_params:], dtype)   # running statistics
    # each rank's parameter gradients are its share: together, the whole batch's
    assert_close([a + b for a, b in zip(ranks[0][2:2 + n_params], ranks[1][2:2 + n_params])],
                 whole[2:2 + n_params], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_identical_ranks_equal_batch_norm_on_the_repeated_batch(rng, dtype):
    x = (rng.standard_normal((2, 3, 4, 4)) - 1).astype(dtype)
    grad = rng.standard_normal(x.shape).astype(dtype)
    whole = run(make(nn.BatchNorm2d, dtype), np.concatenate([x, x]),
                np.concatenate([grad, grad]))
    ours = run(make(SyncBatchNorm, dtype, IdenticalRanks(2)), x, grad)
    assert_close(ours[:2], [whole[0][:2], whole[1][:2]], dtype)
    assert_close([2 * g for g in ours[2:4]], whole[2:4], dtype)
    assert_close(ours[4:], whole[4:], dtype)


def test_one_rank_and_eval_are_batch_norm_bitwise(rng):
    x = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    grad = rng.standard_normal(x.shape).astype(np.float32)
    reference = run(make(nn.BatchNorm2d, np.float32), x, grad)
    for result in (run(make(SyncBatchNorm, np.float32), x, grad),
                   run(make(SyncBatchNorm, np.float32, IdenticalRanks(1)), x, grad)):
        for a, b in zip(result, reference):
            np.testing.assert_array_equal(a, b)
    trained = make(SyncBatchNorm, np.float32, IdenticalRanks(2))
    run(trained, x, grad)
    trained.eval()
    plain = make(nn.BatchNorm2d, np.float32)
    plain.load_state_dict(trained.state_dict())
    plain.eval()
    np.testing.assert_array_equal(trained(fastdl.Tensor(x)).numpy(),
                                  plain(fastdl.Tensor(x)).numpy())


def test_bad_inputs_are_refused(rng):
    layer = make(SyncBatchNorm, np.float32, IdenticalRanks(2))
    with pytest.raises(ValueError, match="expected 3 channels"):
        layer(fastdl.Tensor(np.zeros((2, 4, 3, 3), np.float32)))
    with pytest.raises(ValueError, match="4 dimensions"):
        layer(fastdl.Tensor(np.zeros((2, 3, 3), np.float32)))
    with pytest.raises(TypeError, match="float32 or float64"):
        layer(fastdl.Tensor(np.zeros((2, 3, 3, 3), np.int64)))


def test_convert_sync_batchnorm_keeps_the_state(rng):
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.Sequential(nn.BatchNorm2d(3)))
    model[1][0].running_mean[:] = [1, 2, 3]
    SyncBatchNorm.convert_sync_batchnorm(model)
    assert type(model[1][0]) is SyncBatchNorm
    np.testing.assert_array_equal(model[1][0].running_mean, [1, 2, 3])
