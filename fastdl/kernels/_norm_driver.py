"""The shared driver of the normalisation kernels: one forward and one backward for
every ``(A, K, S, B)`` layout (see :mod:`fastdl.kernels.norm`), the argument checks the
four norms share, and the running-statistics update."""
import math

import numpy as np

# is_real tests plain types first: the checks run on every call, after kernels that
# streamed megabytes through the caches, where the numbers ABCs are slow
from fastdl._checks import is_real
from fastdl.kernels._norm_loops import (LONG_RUN_BYTES, affine_segments_kernel,
                                        given_vectors_kernel, normalize_backward_kernel,
                                        normalize_forward_kernel)
from fastdl.kernels._norm_rows import layer_norm_backward_kernel, layer_norm_forward_kernel
from fastdl.kernels._norm_short import memory_order

class _Layout:
    """The ``(A, K, S, B)`` view of one input and its parameter period ``P``.

    ``weight_along_run``: the layer-norm case, one weight per element of the
    run (P = S = 1, weight of length B) instead of one per ``(k % P, s)``.
    """

    def __init__(self, n_outer, n_kept, n_sub, n_inner, n_params, weight_along_run=False):
        self.n_outer, self.n_kept = n_outer, n_kept
        self.n_sub, self.n_inner, self.n_params = n_sub, n_inner, n_params
        self.weight_along_run = weight_along_run

    @property
    def run_length(self):
        return self.n_sub * self.n_inner

    @property
    def count(self):
        """Number of elements reduced into each statistic."""
        return self.n_outer * self.run_length

    @property
    def n_weights(self):
        """Length of the flat weight vector the kernels index."""
        return self.n_inner if self.weight_along_run else self.n_params * self.n_sub

    def view(self, array):
        return array.reshape(self.n_outer, self.n_kept, self.run_length)


def _check_float_array(name, argument, array):
    if not isinstance(array, np.ndarray):
        raise TypeError("%s: %s must be a numpy.ndarray, got %s"
                        % (name, argument, type(array).__name__))
    if array.dtype not in (np.float32, np.float64):
        raise TypeError("%s: %s must be float32 or float64, got %s"
                        % (name, argument, array.dtype))
    return np.ascontiguousarray(array)


def _param_vector(name, argument, value, shape, fill, dtype):
    """``weight``/``bias`` as a flat contiguous vector of ``dtype`` (``fill`` for None)."""
    if value is None:
        return np.full(math.prod(shape), fill, dtype=dtype)
    value = _check_float_array(name, argument, value)
    if value.shape != tuple(shape):
        raise ValueError("%s: %s must have shape %s, got %s"
                         % (name, argument, tuple(shape), value.shape))
    return value.astype(dtype, copy=False).ravel()


def _forward(x, layout, weight, bias, eps, mean=None, inv_std=None):
    """Normalise ``x`` on ``layout``; input statistics unless ``mean``/``inv_std`` are given.

    Returns y (shape of x), and mean, var, inv_std as float64 (K,) vectors (var is
    None with given statistics). Only ``y`` is written: the backward recomputes
    ``x_hat`` from ``x``, ``mean`` and ``inv_std`` (one stream less each way).
    """
    x3 = layout.view(x)
    y = np.empty_like(x3)
    use_input_stats = mean is None
    var = np.empty(layout.n_kept)
    if use_input_stats:
        mean = np.empty(layout.n_kept)
        inv_std = np.empty(layout.n_kept)
    if layout.weight_along_run:
        # layer norm (always input statistics) on (rows, row_length)
        layer_norm_forward_kernel(x3[0], weight, bias, eps, mean, var, inv_std, y[0])
    elif use_input_stats:
        normalize_forward_kernel(x3, weight, bias, layout.n_params, layout.n_sub, eps,
                                 use_input_stats, mean, var, inv_std, y,
                                 memory_order(x3, layout.n_sub))
    else:
        shifts, scales, offsets = given_vectors_kernel(weight, bias, layout.n_params,
                                                       layout.n_sub, mean, inv_std, x3)
        segments = x3.reshape(x3.shape[0], -1, x3.shape[2] // layout.n_sub)
        affine_segments_kernel(segments, shifts, scales, offsets, segments, False, False,
                               x3.dtype.type(0), y.reshape(segments.shape))
    return y.reshape(x.shape), mean, var if use_input_stats else None, inv_std


def _backward(grad_out, x, layout, weight, mean, inv_std, use_input_stats, needs_grad_x):
    """Gradients on ``layout``: grad_x (or None) and flat float64 grad_weight, grad_bias."""
    grad3 = layout.view(grad_out)
    x3 = layout.view(x)
    # dx not needed: an empty (1, 0, 0) array the kernels never write, still indexable as grad_x[0]
    grad_x = np.empty_like(x3) if needs_grad_x else np.empty((1, 0, 0), x.dtype)
    mean = np.ascontiguousarray(mean, dtype=np.float64).ravel()
    inv_std = np.ascontiguousarray(inv_std, dtype=np.float64).ravel()
    if layout.weight_along_run:
        grad_weight, grad_bias = layer_norm_backward_kernel(
            grad3[0], x3[0], weight, mean, inv_std, needs_grad_x, grad_x[0])
    else:
        long_runs = (needs_grad_x and layout.n_outer == 1
                     and layout.run_length * x.itemsize >= LONG_RUN_BYTES)
        grad_weight, grad_bias = normalize_backward_kernel(
            grad3, x3, weight, layout.n_params, layout.n_sub, mean, inv_std, use_input_stats,
            needs_grad_x, grad_x, grad_x if long_runs else None, memory_order(x3, layout.n_sub))
    return (grad_x.reshape(x.shape) if needs_grad_x else None), grad_weight, grad_bias


def _check_backward(name, grad_out, x, mean, inv_std, n_kept):
    grad_out = _check_float_array(name, "grad_out", grad_out)
    x = _check_float_array(name, "input", x)
    if grad_out.shape != x.shape:
        raise ValueError("%s: grad_out has shape %s but input has shape %s"
                         % (name, grad_out.shape, x.shape))
    for label, stats in (("mean", mean), ("inv_std", inv_std)):
        if np.size(stats) != n_kept:
            raise ValueError("%s: %s has %d values, expected %d"
                             % (name, label, np.size(stats), n_kept))
    return grad_out.astype(x.dtype, copy=False), x


def _public_backward(name, layout, param_shape, grad_out, x, mean, inv_std, weight,
                     use_input_stats, needs):
    """Validate, run ``_backward`` and shape the parameter gradients (the four backwards)."""
    needs_grad_x, needs_grad_weight, needs_grad_bias = needs
    grad_out, x = _check_backward(name, grad_out, x, mean, inv_std, layout.n_kept)
    weight_vector = _param_vector(name, "weight", weight, param_shape, 1.0, x.dtype)
    grad_x, grad_weight, grad_bias = _backward(grad_out, x, layout, weight_vector, mean, inv_std,
                                               bool(use_input_stats), needs_grad_x)
    grad_weight = (grad_weight.reshape(param_shape).astype(weight.dtype)
                   if needs_grad_weight and weight is not None else None)
    grad_bias = (grad_bias.reshape(param_shape).astype(grad_out.dtype)
                 if needs_grad_bias else None)
    return grad_x, grad_weight, grad_bias


def _check_input(name, x, min_ndim, eps, layout_of):
    """Validated contiguous ``x``, ``eps`` as a float, and ``x``'s layout."""
    x = _check_float_array(name, "input", x)
    if x.ndim < min_ndim:
        raise ValueError("%s: input must be (N, C%s), got shape %s"
                         % (name, ", *spatial" if min_ndim > 2 else "[, *spatial]", x.shape))
    if not is_real(eps) or not eps >= 0:
        raise ValueError("%s: eps must be a non-negative number, got %r" % (name, eps))
    return x, float(eps), layout_of(x.shape)


def _affine_vectors(name, weight, bias, shape, dtype):
    return (_param_vector(name, "weight", weight, shape, 1.0, dtype),
            _param_vector(name, "bias", bias, shape, 0.0, dtype))


def _check_running(name, running_mean, running_var, n_channels, required):
    for argument, running in (("running_mean", running_mean), ("running_var", running_var)):
        if running is None:
            if required:
                raise ValueError("%s: running_mean and running_var are required %s"
                                 % (name, required))
            continue
        if not isinstance(running, np.ndarray) or running.dtype not in (np.float32,
                                                                         np.float64):
            raise TypeError("%s: %s must be a float32 or float64 numpy.ndarray, got %r"
                            % (name, argument,
                               getattr(running, "dtype", type(running).__name__)))
        if running.shape != (n_channels,):
            raise ValueError("%s: %s must have shape %s, got %s"
                             % (name, argument, (n_channels,), running.shape))


def _running_statistics(running_mean, running_var, eps, repeats):
    """Fixed statistics from running ones, repeated for every sample when ``repeats > 1``."""
    mean = running_mean.astype(np.float64)
    inv_std = running_var.astype(np.float64)
    inv_std += eps
    np.sqrt(inv_std, out=inv_std)
    np.reciprocal(inv_std, out=inv_std)
    if repeats == 1:
        # eval batch norm, once per layer and call: np.tile's copies took half its
        # Python time at batch 1
        return mean, inv_std
    return np.tile(mean, repeats), np.tile(inv_std, repeats)


def _update_running(running_mean, running_var, mean, var, count, factor):
    """``running ← (1 − factor) · running + factor · batch``, in place; var made unbiased."""
    for running, batch in ((running_mean, mean), (running_var, var * (count / (count - 1)))):
        if running is not None:
            running *= 1.0 - factor
            running += (factor * batch).astype(running.dtype)
