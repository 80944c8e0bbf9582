"""The autograd against finite differences and NumPy."""
import numpy as np
import pytest

import fastdl
from fastdl.tensor_buffers import FlatBuffers
from fastdl import Tensor
from fastdl.testing import assert_close, gradcheck


def t(rng, *shape):
    return Tensor(rng.normal(size=shape), requires_grad=True)


@pytest.mark.parametrize("op", [
    lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b, lambda a, b: a / (b * b + 1),
    lambda a, b: 2.0 * a - b / 3.0 + 1.0, lambda a, b: 1.0 / (a * a + 1) - (-b),
])
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)),
                                    ((), (2, 3))])
def test_broadcasting_arithmetic_gradients(rng, op, shapes):
    assert gradcheck(op, [t(rng, *shapes[0]), t(rng, *shapes[1])])


@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)),
                                    ((4,), (4,)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (1, 4, 2))])
def test_matmul_gradients(rng, shapes):
    assert gradcheck(lambda a, b: a @ b, [t(rng, *shapes[0]), t(rng, *shapes[1])])


@pytest.mark.parametrize("op", [
    lambda a: a.exp(), lambda a: (a * a + 1).log(), lambda a: (a * a + 1).sqrt(),
    lambda a: a.abs(), lambda a: a.clamp(-0.5, 0.5), lambda a: a ** 3, lambda a: a.relu(),
    lambda a: a.reshape(4, 3), lambda a: a.transpose(), lambda a: a.permute(1, 0),
    lambda a: a.flatten(), lambda a: a[1:, ::2], lambda a: a[[0, 2, 2]],
    lambda a: a[np.array([0, 1]), np.array([3, 3])],
    lambda a: a.sum(), lambda a: a.sum(dim=1), lambda a: a.mean(dim=0, keepdim=True),
    lambda a: a.mean(), lambda a: a.max(dim=1).values, lambda a: a.max(),
    lambda a: a.min(dim=0, keepdim=True)[0], lambda a: a.min(),
    lambda a: fastdl.cat([a, a * 2], dim=1), lambda a: fastdl.stack([a, a], dim=0),
    lambda a: a.double(),
])
def test_unary_and_shape_op_gradients(rng, op):
    assert gradcheck(op, [t(rng, 3, 4)])


def test_values_match_numpy(rng):
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(4, 2))
    assert_close((Tensor(a) @ Tensor(b)).exp().sum(dim=0), np.exp(a @ b).sum(axis=0),
                 rtol=1e-12)
    assert_close(Tensor(a).max(dim=1).values, a.max(axis=1))


def test_gradients_accumulate_and_reuse_of_a_tensor(rng):
    x = t(rng, 3)
    y = (x * x).sum() + x.sum()           # x used three times
    y.backward()
    assert_close(x.grad, 2 * x.array + 1, rtol=1e-12)
    (x * 3).sum().backward()              # accumulates
    assert_close(x.grad, 2 * x.array + 4, rtol=1e-12)


def test_max_routes_gradient_to_first_maximum():
    x = Tensor(np.array([[1.0, 3.0, 3.0]]), requires_grad=True)
    x.max(dim=1).values.sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 1, 0]])


def test_no_grad_records_nothing(rng):
    x = t(rng, 3)
    with fastdl.no_grad():
        y = x * 2
    assert not y.requires_grad and y.is_leaf
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_backward_twice_raises_unless_retained(rng):
    x = t(rng, 3)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert_close(x.grad, 4 * x.array, rtol=1e-12)
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_deep_graph_has_no_recursion_limit():
    x = Tensor(np.ones(2), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y + 1.0
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0, 1.0])


def test_nonscalar_backward_needs_grad(rng):
    x = t(rng, 3)
    with pytest.raises(RuntimeError, match="one-element"):
        (x * 2).backward()
    with pytest.raises(RuntimeError, match="shape"):
        (x * 2).backward(np.ones(4))


def test_default_dtype_and_integer_tensors():
    assert fastdl.tensor([1.0, 2.0]).dtype == np.float32
    assert fastdl.tensor(np.ones(2)).dtype == np.float64
    assert fastdl.tensor([1, 2]).dtype == np.int64
    with pytest.raises(TypeError, match="floating-point"):
        Tensor(np.arange(3), requires_grad=True)


def test_detach_and_flat_buffers_contract(rng):
    x = t(rng, 2, 2)
    values = x.numpy().copy()
    params, grads = np.empty(4), np.zeros(4)
    buffers = FlatBuffers([x], params, grads)
    assert x.numpy().base is params and np.array_equal(x.numpy(), values)
    (x * 3).sum().backward()
    (x * 2).sum().backward()
    assert x.grad.numpy().base is grads and np.all(grads == 5)
    x.data = np.ones((2, 2))                  # same shape and dtype: copied into the buffer
    assert buffers.intact() and np.all(params == 1)
    x.data = np.ones(4)                       # another shape: unpacked
    assert not buffers.intact() and x.numpy().base is not params
    assert not x.detach().requires_grad


def test_flat_buffers_take_assigned_gradients_and_zero(rng):
    x, y = t(rng, 2), t(rng, 3)
    x.grad = np.full(2, 7.0)
    grads = np.zeros(5)
    buffers = FlatBuffers([x, y], np.empty(5), grads)
    assert x.grad.numpy().base is grads and y.grad is None  # packing copies a gradient in
    assigned = fastdl.Tensor(np.full(2, 4.0))
    x.grad = assigned
    buffers.store_assigned_grads()
    assert x.grad is assigned and np.array_equal(grads, [4, 4, 0, 0, 0])
    grads[2:] = 9
    buffers.gather_grads()                    # y has no gradient: zeros, and stays None
    assert np.array_equal(grads, [4, 4, 0, 0, 0]) and y.grad is None
    buffers.zero_grads()
    assert not grads.any() and x.grad.numpy().base is grads and y.grad.numpy().base is grads


def test_a_gradient_of_the_wrong_shape_is_refused_before_it_reaches_a_kernel(rng):
    class Truncating(fastdl.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            return a.copy()

        @staticmethod
        def backward(ctx, grad):
            return grad[:, :, :3]          # one row short: a conv kernel would read past it
    x = t(rng, 1, 2, 6, 6)
    w = t(rng, 3, 2, 3, 3)
    with pytest.raises(RuntimeError, match=r"Truncating.backward returned a gradient of shape "
                                           r"\(1, 3, 3, 4\) for an input of shape \(1, 3, 4, 4\)"):
        Truncating.apply(fastdl.functional.conv2d(x, w)).sum().backward()


def test_gradcheck_detects_a_wrong_gradient(rng):
    class Wrong(fastdl.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            return a * 2

        @staticmethod
        def backward(ctx, grad):
            return grad * 3
    with pytest.raises(AssertionError, match="disagrees"):
        gradcheck(lambda a: Wrong.apply(a), [t(rng, 3)])
