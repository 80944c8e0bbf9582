"""Test helpers for users' own ops, the ones fastdl's own tests use.

``gradcheck`` compares the autograd's gradients with central finite
differences (in float64); ``assert_close`` compares Tensors or arrays.
"""
import numpy as np

from fastdl.autograd import Tensor

__all__ = ["gradcheck", "assert_close", "numerical_grad"]


def _array(value):
    return value.array if isinstance(value, Tensor) else np.asarray(value)


def assert_close(actual, expected, rtol=1e-7, atol=0.0, msg=""):
    """Assert ``|actual - expected| <= atol + rtol * |expected|`` elementwise.

    Accepts Tensors or arrays.
    """
    np.testing.assert_allclose(_array(actual), _array(expected), rtol=rtol, atol=atol,
                               err_msg=msg)


def _scalar_output(fn, inputs, projection):
    out = fn(*inputs)
    outputs = out if isinstance(out, (tuple, list)) else (out,)
    total = 0.0
    for value, weights in zip(outputs, projection):
        total += float(np.sum(_array(value).astype(np.float64) * weights))
    return total


def numerical_grad(fn, inputs, index, projection, eps=1e-6):
    """Central finite-difference gradient of ``sum(fn(*inputs) * projection)``.

    Differentiates with respect to ``inputs[index]`` (a float64 Tensor).
    """
    data = inputs[index].array
    grad = np.zeros(data.shape, dtype=np.float64)
    flat = data.reshape(-1)
    for i in range(flat.size):
        original = flat[i]
        flat[i] = original + eps
        plus = _scalar_output(fn, inputs, projection)
        flat[i] = original - eps
        minus = _scalar_output(fn, inputs, projection)
        flat[i] = original
        grad.reshape(-1)[i] = (plus - minus) / (2 * eps)
    return grad


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0):
    """Check the autograd's gradients of ``fn`` against finite differences.

    The output(s) are projected onto fixed random weights so that every
    output element contributes; gradients are compared for every input that
    is a float64 Tensor with ``requires_grad``.

    Parameters
    ----------
    fn : callable
        Takes ``*inputs``, returns a Tensor or a tuple of Tensors.
    inputs : sequence of Tensor (and other arguments)
        Differentiated inputs must be float64 (finite differences need it).
    eps, atol, rtol : float

    Returns
    -------
    bool
        True.

    Raises
    ------
    AssertionError
        Naming the input and the worst element when a gradient disagrees.
    TypeError
        If a differentiated input is not float64.
    """
    inputs = list(inputs)
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise TypeError("gradcheck: input %d must be float64, got %s" % (i, inputs[i].dtype))
        inputs[i].grad = None
    rng = np.random.default_rng(seed)
    out = fn(*inputs)
    outputs = out if isinstance(out, (tuple, list)) else (out,)
    projection = [rng.normal(size=_array(o).shape) for o in outputs]
    total = None
    for value, weights in zip(outputs, projection):
        term = (value * Tensor(weights.astype(value.dtype))).sum()
        total = term if total is None else total + term
    total.backward()
    for i in checked:
        analytic = np.zeros(inputs[i].shape) if inputs[i].grad is None else _array(inputs[i].grad)
        numeric = numerical_grad(fn, inputs, i, projection, eps)
        error = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
        if np.any(error > 0):
            worst = np.unravel_index(np.argmax(error), error.shape)
            raise AssertionError(
                "gradcheck: gradient of input %d disagrees at index %s: autograd %.10g, "
                "finite differences %.10g" % (i, worst, analytic[worst], numeric[worst]))
    return True
