"""Normalisation kernels: batch, layer, instance and group norm, forward and backward.

Design
------
One layout serves all four. The input is viewed, without copying, as
``(A, K, S, B)``: statistics are taken per ``k`` over ``(a, s, b)``, and the
affine parameter of element ``(a, k, s, b)`` is ``weight[(k % P) * S + s]``:

=============  ======================  ===========  ======  ====
norm           view of x               K            S       P
=============  ======================  ===========  ======  ====
batch_norm     (N, C, 1, H*W)          C            1       C
group_norm     (1, N*G, C/G, H*W)      N*G          C/G     G
instance_norm  (1, N*C, 1, H*W)        N*C          1       C
layer_norm     (1, rows, 1, D)         rows         1       1
=============  ======================  ===========  ======  ====

Layer norm's weight runs along ``B`` instead (``weight_along_run``: one
weight per element of the row); it has its own row kernels (last point below).

For a given ``(a, k)`` the ``S * B`` elements are one contiguous run.

* Forward fuses statistics, normalisation and the affine step. The ``prange``
  runs over fixed chunks of ``k``; for each ``k`` the statistics pass is
  followed at once by the normalise pass, so the second read of that ``k``'s
  data usually hits cache. Statistics are two-pass moments over blocks of
  ``_BLOCK`` elements (in cache), merged across blocks with Chan's formula:
  stable for large means, one read from memory. Within a block, the second
  pass sums the deviations from a pivot (the first pass's mean) with their
  squares, and the mean and variance are corrected by the deviations' mean.
  Sums run in x's dtype over spans of ``_SPAN`` elements and are added in
  float64: float32 statistics hold ~1e-7 of the spread at any offset, and the
  memory-bound passes run at the full SIMD width.
* Backward per ``k`` does the two reductions ``sum(w * g)`` and
  ``sum(w * g * x_hat)`` (in x's dtype over pieces of at most ``_SPAN``
  elements, the pieces added in float64, as the statistics) then writes ``dx``
  in a second pass over the (cached) data. ``grad_weight`` / ``grad_bias`` are
  summed per fixed chunk of ``k`` into a ``(chunks, P * S)`` float64 buffer,
  then over chunks in order, all inside the kernel: the Python between
  kernels runs with caches the kernel has just flushed, so each NumPy call
  there costs tens of microseconds. On one image with runs of 32 KiB and more
  (group norm), the reductions also prefetch ``dx``'s run for writing, so that
  the second pass, from L2, does not wait for its stores' lines.
* Layer norm runs on the ``(rows, row_length)`` view with row kernels of
  its own: forward, ``prange`` over fixed chunks of rows, each row's moments
  (one block when the row fits) then its normalisation, the rows ahead left to
  the hardware prefetcher; backward, per fixed
  chunk of rows, the two row sums (float32 spans, float64 total) as the row
  comes in from memory, then ``dx`` and the parameter terms in a second pass
  (in L1). The per-column ``g`` and ``g * x_hat`` terms of ``grad_weight`` /
  ``grad_bias`` are summed in x's dtype over tiles of ``_PARAM_TILE`` rows
  before joining the float64 chunk sums: a float64 read-modify-write per
  element cost as much as the rest of the backward.
* Reproducibility: every reduction runs sequentially inside one ``k`` or one
  fixed chunk, and neither depends on the thread count, so results are bitwise
  identical at any number of threads (torch's are not: pytorch#88718).
* One parallel loop per kernel call, over the fixed chunks: workers that have
  stopped spinning between parallel loops sleep, and each loop wakes them, tens
  of microseconds on a busy host. Even an ``np.zeros`` in a parallel kernel
  is a parallel loop of its own: the backward's per-chunk parameter sums were
  zeroed that way, and zeroing them inside the chunk loop made the batch, group
  and instance norm backward 10-20 % faster. The fixed chunks share the ``k`` out
  evenly (sizes differ by at most one), so each thread gets its share.
* Batch norm on 4x4 and 8x8 maps walks a chunk of channels in memory order, image
  by image (``_norm_short``): a run is then one to four cache lines, and walking
  channel by channel jumps a whole image between them.

The compiled loops are in ``_norm_loops`` and ``_norm_short`` (``_norm_rows`` for
layer norm), the pieces they inline in ``_norm_pieces``.
"""
import math

import numpy as np

# is_int tests plain types first: the checks run on every call, after kernels that
# streamed megabytes through the caches, where the numbers ABCs are slow
from fastdl._checks import is_int
from fastdl.kernels._norm_loops import (affine_segments_kernel, moments_kernel,
                                        normalize_input_grad_kernel)
from fastdl.kernels._norm_short import memory_order

__all__ = [
    "batch_norm_forward", "batch_norm_backward",
    "batch_norm_statistics", "batch_norm_backward_reduce", "batch_norm_backward_input",
    "channel_affine_",
    "layer_norm_forward", "layer_norm_backward",
    "group_norm_forward", "group_norm_backward",
    "instance_norm_forward", "instance_norm_backward",
]

from fastdl.kernels._norm_driver import (_Layout, _affine_vectors, _backward, _check_backward,
                                         _check_input, _check_running, _forward, _param_vector,
                                         _public_backward, _running_statistics,
                                         _update_running)

# ---------------------------------------------------------------------------
# Batch norm
# ---------------------------------------------------------------------------

def _batch_norm_layout(shape):
    return _Layout(shape[0], shape[1], 1, math.prod(shape[2:]), shape[1])


def batch_norm_forward(x, weight, bias, running_mean, running_var, training, momentum=0.1,
                       eps=1e-5, num_batches_tracked=None, statistics=None):
    """Batch normalisation over (N, *spatial) per channel, updating running stats in place.

    ``y = weight * (x − μ) / √(σ² + eps) + bias`` with μ, σ² the batch mean and
    biased variance per channel (training) or the running statistics (eval). In
    training, ``running_var`` receives the unbiased ``σ² · n / (n − 1)``,
    n = N · prod(spatial).

    Parameters
    ----------
    x : ndarray, (N, C) or (N, C, *spatial), float32 or float64
    weight, bias : ndarray (C,) or None
    running_mean, running_var : ndarray (C,) or None
        Updated in place in training; required in eval.
    training : bool
    momentum : float or None
        None: cumulative average with factor ``1 / num_batches_tracked``.
    eps : float
    num_batches_tracked : int, optional
        Batches seen including this one (only for ``momentum=None``).
    statistics : (mean, var, count), optional
        Training only: the statistics to use instead of x's, float64 (C,) mean and
        biased variance over ``count`` values per channel: those of a batch that x
        is part of (``SyncBatchNorm``'s, from ``batch_norm_statistics`` of every part).

    Returns
    -------
    y : ndarray, shape and dtype of ``x``
    mean, inv_std : ndarray, (C,), float64
        μ and ``1 / √(σ² + eps)`` of the statistics used; with ``x`` they are
        what ``batch_norm_backward`` needs (``x_hat = (x − μ) · inv_std``).

    Raises
    ------
    ValueError
        Wrong shapes, one value per channel in training, eval without running stats.
    """
    name = "batch_norm"
    x, eps, layout = _check_input(name, x, 2, eps, _batch_norm_layout)
    weight, bias = _affine_vectors(name, weight, bias, (x.shape[1],), x.dtype)
    _check_running(name, running_mean, running_var, x.shape[1],
                   None if training else "when not training")
    if not training:
        y, mean, _, inv_std = _forward(x, layout, weight, bias, eps,
                                       *_running_statistics(running_mean, running_var, eps, 1))
        return y, mean, inv_std
    count = layout.count if statistics is None else statistics[2]
    if count <= 1:
        raise ValueError("%s: Expected more than 1 value per channel when training, "
                         "got input size %s" % (name, x.shape))
    factor = None
    if running_mean is not None or running_var is not None:
        if momentum is not None:
            factor = float(momentum)
        elif num_batches_tracked is not None and num_batches_tracked >= 1:
            # torch's cumulative moving average: factor 1 / batches seen
            factor = 1.0 / num_batches_tracked
        else:
            raise ValueError("%s: momentum=None (cumulative average) needs "
                             "num_batches_tracked >= 1, got %r" % (name, num_batches_tracked))
    if statistics is None:
        y, mean, var, inv_std = _forward(x, layout, weight, bias, eps)
    else:
        mean, var = (np.ascontiguousarray(s, dtype=np.float64) for s in statistics[:2])
        y, mean, _, inv_std = _forward(x, layout, weight, bias, eps, mean,
                                       1.0 / np.sqrt(var + eps))
    _update_running(running_mean, running_var, mean, var, count, factor)
    return y, mean, inv_std


def batch_norm_backward(grad_out, x, mean, inv_std, weight, training, needs_grad_x=True,
                        needs_grad_weight=True, needs_grad_bias=True):
    """Gradients of ``batch_norm_forward``.

    Training (batch statistics), with means over (N, *spatial) per channel::

        dx = inv_std · (w·g − mean(w·g) − x_hat · mean(w·g·x_hat)),
        x_hat = (x − μ) · inv_std

    eval (running statistics): ``dx = inv_std · w · g``.

    Parameters
    ----------
    grad_out, x : ndarray, shape of x, float32 or float64
        The output gradient and the forward's input.
    mean, inv_std : ndarray, (C,)
        As returned by ``batch_norm_forward``.
    weight : ndarray (C,) or None
    training : bool
        Whether the forward used batch statistics.
    needs_grad_x, needs_grad_weight, needs_grad_bias : bool

    Returns
    -------
    grad_x : ndarray (shape of x) or None
    grad_weight : ndarray (C,) or None (also None when ``weight`` is None)
    grad_bias : ndarray (C,) or None
    """
    shape = np.shape(x)
    return _public_backward("batch_norm_backward", _batch_norm_layout(shape), shape[1:2],
                            grad_out, x, mean, inv_std, weight, training,
                            (needs_grad_x, needs_grad_weight, needs_grad_bias))


def batch_norm_statistics(x):
    """Per-channel mean and biased variance of ``x`` over (N, *spatial), as
    ``batch_norm_forward`` takes them in training.

    Parameters
    ----------
    x : ndarray, (N, C) or (N, C, *spatial), float32 or float64

    Returns
    -------
    mean, var : ndarray, (C,), float64
    """
    x, _, layout = _check_input("batch_norm_statistics", x, 2, 0.0, _batch_norm_layout)
    mean, var = np.empty(layout.n_kept), np.empty(layout.n_kept)
    x3 = layout.view(x)
    moments_kernel(x3, mean, var, memory_order(x3, layout.n_sub))
    return mean, var


def batch_norm_backward_reduce(grad_out, x, mean, inv_std):
    """Per-channel sums of ``g`` and ``g · x_hat`` over (N, *spatial): the bias and
    weight gradients of ``batch_norm_forward``, and the terms of its input gradient.

    Parameters
    ----------
    grad_out, x : ndarray, shape of x, float32 or float64
    mean, inv_std : ndarray, (C,), the statistics the forward used

    Returns
    -------
    sum_grad, sum_grad_x_hat : ndarray, (C,), float64
    """
    name = "batch_norm_backward_reduce"
    grad_out, x = _check_backward(name, grad_out, x, mean, inv_std, np.shape(x)[1])
    ones = np.ones(x.shape[1], dtype=x.dtype)
    _, sum_grad_x_hat, sum_grad = _backward(grad_out, x, _batch_norm_layout(x.shape), ones,
                                            mean, inv_std, True, False)
    return sum_grad, sum_grad_x_hat


def batch_norm_backward_input(grad_out, x, mean, inv_std, weight, sum_grad, sum_grad_x_hat,
                              count):
    """Input gradient of a training ``batch_norm_forward`` whose statistics were taken
    over a batch of ``count`` values per channel that x is part of::

        dx = inv_std · w · (g − sum_grad / count − x_hat · sum_grad_x_hat / count)

    Parameters
    ----------
    grad_out, x, mean, inv_std, weight
        As ``batch_norm_backward``.
    sum_grad, sum_grad_x_hat : ndarray, (C,)
        ``batch_norm_backward_reduce``'s sums over that whole batch.
    count : int

    Returns
    -------
    grad_x : ndarray, shape of x
    """
    name = "batch_norm_backward_input"
    grad_out, x = _check_backward(name, grad_out, x, mean, inv_std, np.shape(x)[1])
    layout = _batch_norm_layout(x.shape)
    weight = _param_vector(name, "weight", weight, (x.shape[1],), 1.0, x.dtype)
    # the means of w·g and w·g·x_hat, as batch_norm_backward takes them over x alone
    mean_grad, mean_grad_x_hat = (weight.astype(np.float64) * np.asarray(sums, np.float64)
                                  / count for sums in (sum_grad, sum_grad_x_hat))
    mean, inv_std = (np.ascontiguousarray(v, dtype=np.float64).ravel() for v in (mean, inv_std))
    grad_x = np.empty_like(layout.view(x))
    normalize_input_grad_kernel(layout.view(grad_out), layout.view(x), weight, layout.n_params,
                                layout.n_sub, mean, inv_std, mean_grad, mean_grad_x_hat, grad_x)
    return grad_x.reshape(x.shape)


def channel_affine_(x, scale, shift, residual=None, negative_slope=None):
    """``x = act(x * scale + shift + residual)`` in place, per channel (axis 1): an eval-mode
    batch norm applied after a conv (``scale = w / sqrt(var + eps)``, ``shift = b - mean *
    scale``), with the conv's residual add and activation, in one pass.

    Parameters
    ----------
    x : ndarray (N, C, *spatial), C-contiguous, float32 or float64
        Written in place.
    scale, shift : ndarray (C,)
        Rounded to x's dtype.
    residual : ndarray, shape and dtype of x, optional
    negative_slope : float, optional
        ``v if v > 0 else negative_slope * v`` last (0: ReLU).

    Returns
    -------
    x
    """
    if not isinstance(x, np.ndarray) or x.dtype not in (np.float32, np.float64) \
            or x.ndim < 2 or not x.flags.c_contiguous or not x.flags.writeable:
        raise ValueError("channel_affine_: x must be a writable C-contiguous float32/float64 "
                         "array of 2+ dimensions")
    channels = x.shape[1]
    scale = np.ascontiguousarray(scale, dtype=x.dtype)
    shift = np.ascontiguousarray(shift, dtype=x.dtype)
    if scale.shape != (channels,) or shift.shape != (channels,):
        raise ValueError("channel_affine_: scale and shift must have shape (%d,), got %s, %s"
                         % (channels, scale.shape, shift.shape))
    if residual is not None and (residual.shape != x.shape or residual.dtype != x.dtype):
        raise ValueError("channel_affine_: residual must be a %s array of shape %s, got %s %s"
                         % (x.dtype, x.shape, residual.dtype, residual.shape))
    view = x.reshape(x.shape[0], channels, -1)
    affine_segments_kernel(view, np.zeros(channels, x.dtype), scale, shift,
                           view if residual is None else np.ascontiguousarray(
                               residual).reshape(view.shape),
                           residual is not None, negative_slope is not None,
                           x.dtype.type(0.0 if negative_slope is None else negative_slope),
                           view)
    return x


# ---------------------------------------------------------------------------
# Layer norm
# ---------------------------------------------------------------------------

def _normalized_shape(name, x_shape, normalized_shape):
    if is_int(normalized_shape) or isinstance(normalized_shape, bool):  # torch: bools too
        normalized_shape = (normalized_shape,)
    try:
        normalized_shape = tuple(int(n) for n in normalized_shape)
    except TypeError:
        raise TypeError("%s: normalized_shape must be an int or a sequence of ints, got %r"
                        % (name, normalized_shape)) from None
    trailing = tuple(x_shape[len(x_shape) - len(normalized_shape):])
    if not normalized_shape or len(normalized_shape) > len(x_shape) \
            or trailing != normalized_shape:
        raise ValueError("%s: input of shape %s does not end with normalized_shape %s"
                         % (name, tuple(x_shape), normalized_shape))
    if 0 in normalized_shape:
        raise ValueError("%s: normalized_shape %s has no elements to take statistics over"
                         % (name, normalized_shape))
    return normalized_shape


def _layer_norm_layout(x_shape, normalized_shape):
    row_length = math.prod(normalized_shape)
    n_rows = math.prod(x_shape) // row_length
    return _Layout(1, n_rows, 1, row_length, 1, weight_along_run=True)


def layer_norm_forward(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Layer normalisation over the trailing ``normalized_shape`` dimensions.

    Parameters
    ----------
    x : ndarray, (*, *normalized_shape), float32 or float64
    normalized_shape : int or tuple of int
    weight, bias : ndarray of shape ``normalized_shape``, or None
    eps : float

    Returns
    -------
    y : ndarray, shape and dtype of ``x``
    mean, inv_std : ndarray, ``x.shape[:-len(normalized_shape)]``, float64
    """
    name = "layer_norm"
    normalized_shape = _normalized_shape(name, np.shape(x), normalized_shape)
    x, eps, layout = _check_input(name, x, 1, eps,
                                  lambda shape: _layer_norm_layout(shape, normalized_shape))
    weight, bias = _affine_vectors(name, weight, bias, normalized_shape, x.dtype)
    y, mean, _, inv_std = _forward(x, layout, weight, bias, eps)
    stats_shape = x.shape[:x.ndim - len(normalized_shape)]
    return y, mean.reshape(stats_shape), inv_std.reshape(stats_shape)


def layer_norm_backward(grad_out, x, mean, inv_std, weight, normalized_shape,
                        needs_grad_x=True, needs_grad_weight=True, needs_grad_bias=True):
    """Gradients of ``layer_norm_forward`` (``batch_norm_backward``'s formula per row).

    Parameters
    ----------
    grad_out, x, mean, inv_std, weight, needs_*
        As ``batch_norm_backward``; statistics and parameters shaped as the forward's.
    normalized_shape : int or tuple of int

    Returns
    -------
    grad_x (shape of x), grad_weight, grad_bias (``normalized_shape``), each or None
    """
    name = "layer_norm_backward"
    normalized_shape = _normalized_shape(name, np.shape(x), normalized_shape)
    layout = _layer_norm_layout(np.shape(x), normalized_shape)
    return _public_backward(name, layout, normalized_shape, grad_out, x, mean, inv_std, weight,
                            True, (needs_grad_x, needs_grad_weight, needs_grad_bias))


# ---------------------------------------------------------------------------
# Group norm and instance norm
# ---------------------------------------------------------------------------

def _group_norm_layout(name, shape, num_groups):
    n_channels = shape[1]
    if not is_int(num_groups):
        raise TypeError("%s: num_groups must be an int, got %r" % (name, num_groups))
    if num_groups < 1 or n_channels % num_groups != 0:
        raise ValueError("%s: num_channels (%d) must be divisible by num_groups (%d)"
                         % (name, n_channels, num_groups))
    spatial = math.prod(shape[2:])
    return _Layout(1, shape[0] * num_groups, n_channels // num_groups, spatial,
                   int(num_groups))


def group_norm_forward(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Group normalisation: statistics per (sample, group of C / G channels).

    Parameters
    ----------
    x : ndarray, (N, C) or (N, C, *spatial), float32 or float64
    num_groups : int
        G; C must be divisible by G (G = 1: layer norm over (C, *spatial);
        G = C: instance norm).
    weight, bias : ndarray (C,) or None
    eps : float

    Returns
    -------
    y : ndarray, shape and dtype of ``x``
    mean, inv_std : ndarray, (N, G), float64

    Raises
    ------
    ValueError
        C not divisible by G, wrong shapes.
    """
    name = "group_norm"
    x, eps, layout = _check_input(name, x, 2, eps,
                                  lambda shape: _group_norm_layout(name, shape, num_groups))
    weight, bias = _affine_vectors(name, weight, bias, (x.shape[1],), x.dtype)
    y, mean, _, inv_std = _forward(x, layout, weight, bias, eps)
    return y, mean.reshape(x.shape[0], num_groups), inv_std.reshape(x.shape[0], num_groups)


def group_norm_backward(grad_out, x, mean, inv_std, weight, num_groups, needs_grad_x=True,
                        needs_grad_weight=True, needs_grad_bias=True):
    """Gradients of ``group_norm_forward`` (``batch_norm_backward``'s formula per group).

    Parameters
    ----------
    grad_out, x, mean, inv_std, weight, needs_*
        As ``batch_norm_backward``; ``mean`` and ``inv_std`` are (N, G).
    num_groups : int

    Returns
    -------
    grad_x (shape of x), grad_weight, grad_bias ((C,)), each or None
    """
    name = "group_norm_backward"
    shape = np.shape(x)
    return _public_backward(name, _group_norm_layout(name, shape, num_groups), shape[1:2],
                            grad_out, x, mean, inv_std, weight, True,
                            (needs_grad_x, needs_grad_weight, needs_grad_bias))


def _instance_norm_layout(shape):
    return _group_norm_layout("instance_norm", shape, shape[1])


def instance_norm_forward(x, running_mean=None, running_var=None, weight=None, bias=None,
                          use_input_stats=True, momentum=0.1, eps=1e-5):
    """Instance normalisation: statistics per (sample, channel) over the spatial axes.

    With ``use_input_stats`` the running statistics (if given) are updated in
    place with the batch average of the per-instance mean and unbiased
    variance, as torch; otherwise they normalise.

    Parameters
    ----------
    x : ndarray, (N, C, *spatial), float32 or float64
    running_mean, running_var : ndarray (C,) or None
    weight, bias : ndarray (C,) or None
    use_input_stats : bool
    momentum, eps : float

    Returns
    -------
    y : ndarray, shape and dtype of ``x``
    mean, inv_std : ndarray, (N, C), float64
    """
    name = "instance_norm"
    x, eps, layout = _check_input(name, x, 3, eps, _instance_norm_layout)
    n_samples, n_channels = x.shape[:2]
    weight, bias = _affine_vectors(name, weight, bias, (n_channels,), x.dtype)
    _check_running(name, running_mean, running_var, n_channels,
                   None if use_input_stats else "when use_input_stats=False")
    if not use_input_stats:
        y, mean, _, inv_std = _forward(x, layout, weight, bias, eps,
                                       *_running_statistics(running_mean, running_var, eps,
                                                            n_samples))
        return y, mean.reshape(n_samples, n_channels), inv_std.reshape(n_samples, n_channels)
    if layout.count <= 1:
        raise ValueError("%s: Expected more than 1 spatial element when training, "
                         "got input size %s" % (name, x.shape))
    y, mean, var, inv_std = _forward(x, layout, weight, bias, eps)
    _update_running(running_mean, running_var, mean.reshape(n_samples, -1).mean(axis=0),
                    var.reshape(n_samples, -1).mean(axis=0), layout.count, float(momentum))
    return y, mean.reshape(n_samples, n_channels), inv_std.reshape(n_samples, n_channels)


def instance_norm_backward(grad_out, x, mean, inv_std, weight, use_input_stats=True,
                           needs_grad_x=True, needs_grad_weight=True, needs_grad_bias=True):
    """Gradients of ``instance_norm_forward``.

    Parameters
    ----------
    grad_out, x, mean, inv_std, weight, needs_*
        As ``batch_norm_backward``; ``mean`` and ``inv_std`` are (N, C).
    use_input_stats : bool
        As given to the forward (False: the statistics were constants).

    Returns
    -------
    grad_x (shape of x), grad_weight, grad_bias ((C,)), each or None
    """
    name = "instance_norm_backward"
    shape = np.shape(x)
    if len(shape) < 3:
        raise ValueError("%s: input must be (N, C, *spatial), got shape %s" % (name, shape))
    return _public_backward(name, _instance_norm_layout(shape), shape[1:2], grad_out, x,
                            mean, inv_std, weight, use_input_stats,
                            (needs_grad_x, needs_grad_weight, needs_grad_bias))
