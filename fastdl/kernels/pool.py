"""2-D pooling kernels: max, average and adaptive average, forward and backward.

Design
------
* Every kernel works on a stack of planes: ``x.reshape(N * C, H, W)``. Planes are
  independent, so the outer loop is a ``prange`` over them (N*C is in the
  hundreds at CNN shapes, plenty for a static split; tasks of
  ``_PLANES_PER_TASK`` planes share one scratch buffer).
* Window bounds follow torch exactly. A window starts at ``o * stride - padding``
  and is clipped to the input; padded cells never enter a max (they are not
  read at all), and ``ceil_mode`` drops a last window that would start in the
  right/bottom padding, so no window is ever empty. The bounds are computed
  once per axis (``_pool_windows``, ``_adaptive_windows``), so average and
  adaptive average pooling are one kernel with different windows.
* Max pooling is reduced separably: every input row's column windows first,
  then row windows over those, with the inner loop over independent outputs
  (one loop per window would chain all its compares one after another).
  Average pooling sums each output row's row window first (contiguous rows
  into a float64 row between zero pads), then its column windows, and
  multiplies by a table of reciprocal divisors (``_mean_scales``: a division
  per output cost more than the sums); its backward spreads every output
  row's scaled gradient over its columns and lets each input row gather the
  spread rows covering it, so each cell of the gradient is written once.
* Max pooling returns, per output, the flat index ``h * W + w`` of its argmax
  within the plane (int64, as torch's ``return_indices``). Ties go to the first
  maximum in row-major window order and a NaN wins (torch's
  ``val > max || isnan(val)``). Backward scatters through these indices, so
  the gradient of a tied window goes to exactly one cell and the gradient sum
  equals the upstream sum.
* Sums are accumulated in float64 whatever the input dtype (``np.float64``
  accumulators: uncompiled, under NEP 50, a Python float plus a float32 would
  be float32).
* Fast paths: 2x2 windows tiling the input (kernel == stride == 2, no
  padding) run unrolled straight-line kernels for max and average pooling;
  3-wide stride-2 windows (the overlapping 3x3 s2 pools of ResNet-style
  stems) read their taps at literal offsets, which LLVM vectorises with
  shuffles where a run-time stride gives gathers (max pooling runs one loop
  over the whole plane when W = 2 W_out, as rows of 16 to 64 windows are too
  short for a vector loop); output size 1 of adaptive pooling is one
  contiguous sum per plane.
* Average pooling multiplies by a float64 reciprocal where torch divides: a
  float64 result can differ from the quotient in its last bit; a float32 one,
  rounded from the float64 product, practically never.
* The Numba loops (``_pool_loops``) are imported on first use. Inference's
  2x2 max pool and every global mean run compiled C loops (``fastdl_ext.pool``):
  a served plan made of those, convolutions and dense layers never loads Numba.
"""

import numpy as np

from fastdl import runtime
from fastdl._checks import is_int, pair
from fastdl_ext import pool as _ext

__all__ = [
    "validate_pool2d_args", "pool2d_output_size",
    "max_pool2d_forward", "max_pool2d_backward", "max_pool2d_runner",
    "avg_pool2d_forward", "avg_pool2d_backward",
    "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward",
    "adaptive_avg_pool2d_runner",
]

# Input elements below which the Numba loops run serially: waking the thread pool
# costs tens of µs, more than pooling a LeNet-sized map.
_SERIAL_BELOW = 1 << 16


def _loops():
    """The Numba loops, imported on first use: the inference runners' common cases
    (2x2 max pooling, the global mean) are compiled C loops (``fastdl_ext.pool``), so
    a served plan made of them never loads Numba."""
    from fastdl.kernels import _pool_loops
    return _pool_loops


# ---------------------------------------------------------------------------
# Argument handling (the public boundary)
# ---------------------------------------------------------------------------

def pool2d_output_size(size, kernel, stride, padding, ceil_mode):
    """Output length of one pooled axis, with torch's ``ceil_mode`` rule.

    ``out = floor_or_ceil((size + 2 * padding - kernel) / stride) + 1``; in
    ``ceil_mode`` the last window is dropped when it would start in the padding
    (``(out - 1) * stride >= size + padding``).

    Parameters
    ----------
    size, kernel, stride, padding : int
    ceil_mode : bool

    Returns
    -------
    int
    """
    span = size + 2 * padding - kernel
    if ceil_mode:
        out = -(-span // stride) + 1
        if (out - 1) * stride >= size + padding:
            out -= 1
    else:
        out = span // stride + 1
    return out


def _check_array(name, x, ndims=(3, 4)):
    if not isinstance(x, np.ndarray):
        raise TypeError("%s: input must be a numpy.ndarray, got %s" % (name, type(x).__name__))
    if x.dtype not in (np.float32, np.float64):
        raise TypeError("%s: input must be float32 or float64, got %s" % (name, x.dtype))
    if x.ndim not in ndims:
        raise ValueError("%s: input must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape %s"
                         % (name, x.shape))


def validate_pool2d_args(name, input_shape, kernel_size, stride=None, padding=0,
                         ceil_mode=False):
    """Check and normalise the window arguments of ``max_pool2d`` / ``avg_pool2d``.

    Parameters
    ----------
    name : str
        Calling function, used in error messages.
    input_shape : tuple of int
        ``(C, H, W)`` or ``(N, C, H, W)``.
    kernel_size, stride, padding : int or pair of ints
        ``stride=None`` (or an empty sequence) means ``stride = kernel_size``.
    ceil_mode : bool

    Returns
    -------
    kernel, stride, padding, output_hw : tuples of two ints

    Raises
    ------
    TypeError
        Non-integer window arguments.
    ValueError
        Wrong input rank, kernel or stride ≤ 0, negative padding, padding larger
        than half the kernel (as torch), or an empty output.
    """
    if len(input_shape) not in (3, 4):
        raise ValueError("%s: input must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape %s"
                         % (name, tuple(input_shape)))
    kernel = pair(kernel_size, "kernel_size", name)
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        stride = kernel
    stride = pair(stride, "stride", name)
    padding = pair(padding, "padding", name)
    if min(kernel) <= 0:
        raise ValueError("%s: kernel_size must be positive, got %s" % (name, kernel))
    if min(stride) <= 0:
        raise ValueError("%s: stride must be positive, got %s" % (name, stride))
    if min(padding) < 0:
        raise ValueError("%s: padding must be non-negative, got %s" % (name, padding))
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError("%s: padding should be at most half of kernel size, got padding=%s "
                         "and kernel_size=%s" % (name, padding, kernel))
    height, width = input_shape[-2:]
    output_hw = (pool2d_output_size(height, kernel[0], stride[0], padding[0], ceil_mode),
                 pool2d_output_size(width, kernel[1], stride[1], padding[1], ceil_mode))
    if min(output_hw) < 1:
        raise ValueError("%s: input of spatial size %s is too small for kernel_size=%s, "
                         "stride=%s, padding=%s (output size %s)"
                         % (name, (height, width), kernel, stride, padding, output_hw))
    return kernel, stride, padding, output_hw


def _planes(x):
    """C-contiguous ``(N * C, H, W)`` view (a copy only when ``x`` is not contiguous)."""
    x = np.ascontiguousarray(x)
    return x.reshape(-1, x.shape[-2], x.shape[-1])


def _pool_windows(size, out_size, kernel, stride, padding, count_include_pad=True):
    """Clipped windows along one axis: int64 ``starts``, ``stops`` and divisor ``counts``.

    torch's rule: window ``o`` spans ``[o * stride - padding, + kernel)``; its
    padded extent stops at ``size + padding`` (a ceil_mode window hanging past
    the padding counts those cells for nobody, not even with
    ``count_include_pad``); the cells read are clipped to ``[0, size)``.
    """
    starts = np.arange(out_size, dtype=np.int64) * stride - padding
    stops = np.minimum(starts + kernel, size + padding)
    padded_counts = stops - starts
    starts = np.maximum(starts, 0)
    stops = np.minimum(stops, size)
    return starts, stops, (padded_counts if count_include_pad else stops - starts)


def _adaptive_windows(size, out_size):
    """torch's adaptive bins: ``[floor(o * size / out), ceil((o + 1) * size / out))``."""
    outputs = np.arange(out_size, dtype=np.int64)
    starts = outputs * size // out_size
    stops = -(-((outputs + 1) * size) // out_size)
    return starts, stops, stops - starts


def _out_planes(name, out, shape):
    """A view of the caller's ``out`` as ``shape``; an out that only a copy could
    reshape would lose the result, so it is refused."""
    if not out.flags.c_contiguous:
        raise ValueError("%s: out must be a C-contiguous writable array, got strides %s"
                         % (name, out.strides))
    return out.reshape(shape)


def _full_2x2_windows(input_shape, kernel, stride, padding, output_hw):
    """Whether every window is a full 2x2 block (the fast paths' case)."""
    return (kernel == stride == (2, 2) and padding == (0, 0)
            and 2 * output_hw[0] <= input_shape[-2] and 2 * output_hw[1] <= input_shape[-1])


# ---------------------------------------------------------------------------
# Max pooling
# ---------------------------------------------------------------------------


def max_pool2d_forward(x, kernel_size, stride=None, padding=0, ceil_mode=False):
    """2-D max pooling with argmax indices.

    Parameters
    ----------
    x : ndarray, (N, C, H, W) or (C, H, W), float32 or float64
    kernel_size, stride, padding : int or pair of ints
        ``stride=None`` means ``stride = kernel_size``; padding ≤ kernel_size // 2.
    ceil_mode : bool
        Round the output size up (torch's rule; see ``pool2d_output_size``).

    Returns
    -------
    out : ndarray, (N, C, H_out, W_out), dtype of ``x``
        ``H_out = floor_or_ceil((H + 2 * padding - kernel) / stride) + 1``.
    indices : ndarray, (N, C, H_out, W_out), int64
        Flat index ``h * W + w`` of each maximum within its plane; ties go to the
        first maximum in row-major window order.
    """
    _check_array("max_pool2d", x)
    kernel, stride, padding, output_hw = validate_pool2d_args(
        "max_pool2d", x.shape, kernel_size, stride, padding, ceil_mode)
    planes = _planes(x)
    out = np.empty((planes.shape[0],) + output_hw, dtype=x.dtype)
    indices = np.empty(out.shape, dtype=np.int64)
    small = planes.size < _SERIAL_BELOW
    loops = _loops()
    if _full_2x2_windows(x.shape, kernel, stride, padding, output_hw):
        (loops._max_pool2d_forward_2x2_serial if small
         else loops.max_pool2d_forward_2x2_kernel)(planes, out, indices)
    else:
        if x.shape[-2] * x.shape[-1] >= 2 ** 31:   # the loops keep positions in int32
            raise ValueError("max_pool2d: planes of 2**31 cells or more are not supported, "
                             "got %s" % (x.shape[-2:],))
        h_windows = _pool_windows(x.shape[-2], output_hw[0], kernel[0], stride[0], padding[0])
        w_windows = _pool_windows(x.shape[-1], output_hw[1], kernel[1], stride[1], padding[1])
        (loops._max_pool2d_forward_serial if small else loops.max_pool2d_forward_kernel)(
            planes, h_windows[0], h_windows[1], w_windows[0], w_windows[1], kernel[1],
            stride[1], padding[1], out, indices)
    shape = x.shape[:-2] + output_hw
    return out.reshape(shape), indices.reshape(shape)


def max_pool2d_runner(input_shape, kernel_size, stride=None, padding=0, ceil_mode=False):
    """A prepared ``run(x, out=None)`` for inference: the pooled values only, no argmax.

    The arguments are checked once, here; ``run`` expects C-contiguous inputs of
    ``input_shape`` (N, C, H, W) and returns (N, C, H_out, W_out).
    """
    kernel, stride, padding, output_hw = validate_pool2d_args(
        "max_pool2d", input_shape, kernel_size, stride, padding, ceil_mode)
    if not _full_2x2_windows(input_shape, kernel, stride, padding, output_hw):
        return lambda x, out=None: max_pool2d_forward(x, kernel, stride, padding,
                                                      ceil_mode)[0]
    height, width = input_shape[-2:]
    planes = int(np.prod(input_shape[:-2]))
    out_shape = tuple(input_shape[:-2]) + output_hw
    threads = runtime.get_num_threads()

    def run(x, out=None):
        if out is None:
            out = np.empty(out_shape, dtype=x.dtype)
        target = _out_planes("max_pool2d", out, (planes,) + output_hw)
        if out.dtype != x.dtype:
            raise ValueError("max_pool2d: out must be %s, as x, got %s" % (x.dtype, out.dtype))
        if x.dtype == np.float32:
            _ext.max_pool2d_2x2_into(x.reshape(planes, height, width), target, threads)
        else:
            # the compiled loop's 8-lane vectors of doubles span two AVX2 registers and
            # live on the stack, which makes it slower than the Numba loop
            target[...] = max_pool2d_forward(x, kernel, stride, padding,
                                             ceil_mode)[0].reshape(target.shape)
        return out
    return run


def max_pool2d_backward(grad_out, indices, input_shape):
    """Gradient of ``max_pool2d``: scatter ``grad_out`` through the argmax indices.

    Parameters
    ----------
    grad_out : ndarray, (N, C, H_out, W_out), float32 or float64
    indices : ndarray, (N, C, H_out, W_out), integer
        As returned by ``max_pool2d_forward``.
    input_shape : tuple of int
        Shape of the forward input, (N, C, H, W) or (C, H, W).

    Returns
    -------
    grad_x : ndarray, ``input_shape``, dtype of ``grad_out``
    """
    _check_array("max_pool2d_backward", grad_out)
    input_shape = tuple(int(n) for n in input_shape)
    if indices.shape != grad_out.shape:
        raise ValueError("max_pool2d_backward: indices has shape %s but grad_out has shape %s"
                         % (indices.shape, grad_out.shape))
    if input_shape[:-2] != grad_out.shape[:-2]:
        raise ValueError("max_pool2d_backward: input_shape %s does not match grad_out shape %s"
                         % (input_shape, grad_out.shape))
    grad_planes = _planes(grad_out)
    index_planes = np.ascontiguousarray(indices, dtype=np.int64).reshape(grad_planes.shape)
    grad_x = np.empty((grad_planes.shape[0], input_shape[-2] * input_shape[-1]),
                      dtype=grad_out.dtype)
    out_of_range = np.zeros(grad_planes.shape[0], dtype=np.int64)
    _loops().max_pool2d_backward_kernel(grad_planes, index_planes, grad_x, out_of_range)
    if out_of_range.any():
        raise ValueError("max_pool2d_backward: %d indices lie outside the %s input planes"
                         % (out_of_range.sum(), input_shape[-2:]))
    return grad_x.reshape(input_shape)


# ---------------------------------------------------------------------------
# Average pooling
# ---------------------------------------------------------------------------


def _mean_scales(height, width, output_hw, kernel, stride, padding, count_include_pad,
                 divisor_override=None):
    """Row windows of avg_pool2d (int64 ``starts``, ``stops``) and the (out_h, out_w)
    float64 reciprocals of each output's divisor (``divisor_override`` for all).

    The loops multiply by these: a division per output cost more than the sums.
    """
    rows = _pool_windows(height, output_hw[0], kernel[0], stride[0], padding[0],
                         count_include_pad)
    if divisor_override is not None:
        return rows[0], rows[1], np.full(output_hw, 1.0 / divisor_override)
    cols = _pool_windows(width, output_hw[1], kernel[1], stride[1], padding[1],
                         count_include_pad)
    return rows[0], rows[1], 1.0 / np.outer(rows[2], cols[2]).astype(np.float64)


def _check_divisor(name, divisor_override):
    if divisor_override is not None and (not is_int(divisor_override)
                                         or divisor_override == 0):
        raise ValueError("%s: divisor must be not zero, got divisor_override=%r"
                         % (name, divisor_override))


def avg_pool2d_forward(x, kernel_size, stride=None, padding=0, ceil_mode=False,
                       count_include_pad=True, divisor_override=None):
    """2-D average pooling.

    Parameters
    ----------
    x : ndarray, (N, C, H, W) or (C, H, W), float32 or float64
    kernel_size, stride, padding : int or pair of ints
        ``stride=None`` means ``stride = kernel_size``; padding ≤ kernel_size // 2.
    ceil_mode : bool
    count_include_pad : bool
        Divide by the window size including zero padding (cells past the padded
        input in ``ceil_mode`` never count), else by the number of input cells.
    divisor_override : int, optional
        Divide every window's sum by this instead.

    Returns
    -------
    out : ndarray, (N, C, H_out, W_out), dtype of ``x``
        ``H_out = floor_or_ceil((H + 2 * padding - kernel) / stride) + 1``.
    """
    _check_array("avg_pool2d", x)
    _check_divisor("avg_pool2d", divisor_override)
    kernel, stride, padding, output_hw = validate_pool2d_args(
        "avg_pool2d", x.shape, kernel_size, stride, padding, ceil_mode)
    planes = _planes(x)
    out = np.empty((planes.shape[0],) + output_hw, dtype=x.dtype)
    if divisor_override is None and _full_2x2_windows(x.shape, kernel, stride, padding,
                                                      output_hw):
        _loops().avg_pool2d_forward_2x2_kernel(planes, out)
    else:
        starts, stops, scales = _mean_scales(x.shape[-2], x.shape[-1], output_hw, kernel,
                                             stride, padding, count_include_pad,
                                             divisor_override)
        _loops().avg_pool2d_forward_kernel(planes, starts, stops, kernel[1], stride[1],
                                           padding[1], scales, out)
    return out.reshape(x.shape[:-2] + output_hw)


def avg_pool2d_backward(grad_out, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None):
    """Gradient of ``avg_pool2d`` with respect to its input.

    Parameters
    ----------
    grad_out : ndarray, (N, C, H_out, W_out), float32 or float64
    input_shape : tuple of int
        Shape of the forward input.
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        As given to ``avg_pool2d_forward``.

    Returns
    -------
    grad_x : ndarray, ``input_shape``, dtype of ``grad_out``
    """
    _check_array("avg_pool2d_backward", grad_out)
    input_shape = tuple(int(n) for n in input_shape)
    kernel, stride, padding, output_hw = validate_pool2d_args(
        "avg_pool2d_backward", input_shape, kernel_size, stride, padding, ceil_mode)
    if grad_out.shape != input_shape[:-2] + output_hw:
        raise ValueError("avg_pool2d_backward: grad_out has shape %s, expected %s"
                         % (grad_out.shape, input_shape[:-2] + output_hw))
    grad_planes = _planes(grad_out)
    grad_x = np.empty((grad_planes.shape[0],) + input_shape[-2:], dtype=grad_out.dtype)
    if divisor_override is None and _full_2x2_windows(input_shape, kernel, stride, padding,
                                                      output_hw):
        _loops().avg_pool2d_backward_2x2_kernel(grad_planes, grad_x)
    else:
        starts, stops, scales = _mean_scales(input_shape[-2], input_shape[-1], output_hw,
                                             kernel, stride, padding, count_include_pad,
                                             divisor_override)
        # the output rows whose windows cover input row h: [first_out[h], stop_out[h])
        rows = np.arange(input_shape[-2])
        first_out = np.searchsorted(stops, rows, side="right")
        stop_out = np.searchsorted(starts, rows, side="right")
        _loops().avg_pool2d_backward_kernel(grad_planes, scales, kernel[0], stride[0],
                                            padding[0], kernel[1], stride[1], padding[1],
                                            first_out, stop_out, grad_x)
    return grad_x.reshape(input_shape)


# ---------------------------------------------------------------------------
# Adaptive average pooling
# ---------------------------------------------------------------------------


def _adaptive_output_size(name, input_shape, output_size):
    if is_int(output_size):
        output_size = (output_size, output_size)
    if not isinstance(output_size, (tuple, list)) or len(output_size) != 2:
        raise TypeError("%s: output_size must be an int or a pair of ints/None, got %r"
                        % (name, output_size))
    sizes = []
    for axis, size in zip(input_shape[-2:], output_size):
        size = axis if size is None else size
        if not is_int(size):
            raise TypeError("%s: output_size must be an int or a pair of ints/None, got %r"
                            % (name, output_size))
        if size < 1:
            raise ValueError("%s: output_size must be positive, got %r" % (name, output_size))
        sizes.append(int(size))
    return tuple(sizes)


def adaptive_avg_pool2d_forward(x, output_size):
    """2-D adaptive average pooling (output size 1: the global average pool).

    Parameters
    ----------
    x : ndarray, (N, C, H, W) or (C, H, W), float32 or float64
    output_size : int or pair of (int or None)
        None keeps that input dimension.

    Returns
    -------
    out : ndarray, (N, C, H_out, W_out), dtype of ``x``
        Output cell i averages input rows ``floor(i * H / H_out)`` to
        ``ceil((i + 1) * H / H_out) - 1`` (likewise for columns), as torch.
    """
    _check_array("adaptive_avg_pool2d", x)
    output_hw = _adaptive_output_size("adaptive_avg_pool2d", x.shape, output_size)
    if min(x.shape[-2:]) < 1:
        raise ValueError("adaptive_avg_pool2d: input has an empty spatial dimension, shape %s"
                         % (x.shape,))
    planes = _planes(x)
    out = np.empty((planes.shape[0],) + output_hw, dtype=x.dtype)
    if output_hw == (1, 1):
        _ext.global_mean_into(planes.reshape(planes.shape[0], -1), out.reshape(-1),
                              runtime.get_num_threads())
    else:
        _loops().window_mean_forward_kernel(
            planes, *_adaptive_windows(x.shape[-2], output_hw[0]),
            *_adaptive_windows(x.shape[-1], output_hw[1]), out)
    return out.reshape(x.shape[:-2] + output_hw)


def adaptive_avg_pool2d_runner(input_shape, output_size):
    """A prepared ``run(x, out=None)`` of ``adaptive_avg_pool2d_forward`` for inference.

    The arguments are checked once, here; ``run`` expects C-contiguous inputs of
    ``input_shape`` (N, C, H, W). The global average pool (output 1 x 1) calls its
    loop directly: through the checking wrapper it cost as much as a ResNet's
    batch-1 conv.
    """
    output_hw = _adaptive_output_size("adaptive_avg_pool2d", input_shape, output_size)
    if min(input_shape[-2:]) < 1:
        raise ValueError("adaptive_avg_pool2d: input has an empty spatial dimension, shape %s"
                         % (tuple(input_shape),))
    if output_hw != (1, 1):
        return lambda x, out=None: adaptive_avg_pool2d_forward(x, output_hw)
    planes = int(np.prod(input_shape[:-2]))
    size = input_shape[-2] * input_shape[-1]
    out_shape = tuple(input_shape[:-2]) + (1, 1)
    threads = runtime.get_num_threads()

    def run(x, out=None):
        if out is None:
            out = np.empty(out_shape, dtype=x.dtype)
        _ext.global_mean_into(x.reshape(planes, size),
                              _out_planes("adaptive_avg_pool2d", out, (planes,)), threads)
        return out
    return run


def adaptive_avg_pool2d_backward(grad_out, input_shape):
    """Gradient of ``adaptive_avg_pool2d`` with respect to its input.

    Parameters
    ----------
    grad_out : ndarray, (N, C, H_out, W_out), float32 or float64
    input_shape : tuple of int
        Shape of the forward input.

    Returns
    -------
    grad_x : ndarray, ``input_shape``, dtype of ``grad_out``
    """
    _check_array("adaptive_avg_pool2d_backward", grad_out)
    input_shape = tuple(int(n) for n in input_shape)
    if input_shape[:-2] != grad_out.shape[:-2]:
        raise ValueError("adaptive_avg_pool2d_backward: input_shape %s does not match "
                         "grad_out shape %s" % (input_shape, grad_out.shape))
    grad_planes = _planes(grad_out)
    grad_x = np.empty((grad_planes.shape[0],) + input_shape[-2:], dtype=grad_out.dtype)
    if grad_out.shape[-2:] == (1, 1):
        _loops().global_mean_backward_kernel(grad_planes.reshape(-1),
                                             grad_x.reshape(grad_x.shape[0], -1))
    else:
        _loops().window_mean_backward_kernel(
            grad_planes, *_adaptive_windows(input_shape[-2], grad_out.shape[-2]),
            *_adaptive_windows(input_shape[-1], grad_out.shape[-1]), grad_x)
    return grad_x.reshape(input_shape)
