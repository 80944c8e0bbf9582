"""Independent NumPy/SciPy references the kernel tests compare against.

Each reference is written the obvious way (SciPy filters, NumPy reductions,
explicit loops), never by calling fastdl, so that a test compares two
implementations that share no code.
"""
import numpy as np
from scipy import ndimage


# ---------------------------------------------------------------------------
# Finite differences
# ---------------------------------------------------------------------------

def finite_difference_vjp(function, inputs, grad_out, index, step=1e-6):
    """Central-difference gradient of ``sum(function(*inputs) * grad_out)`` w.r.t. one input.

    Parameters
    ----------
    function : callable returning one ndarray
    inputs : list of float64 ndarrays (not modified)
    grad_out : ndarray, shape of the output
    index : int
        Which input to differentiate.
    step : float

    Returns
    -------
    ndarray, shape of ``inputs[index]``
    """
    inputs = [np.array(value, dtype=np.float64, copy=True) for value in inputs]
    target = inputs[index]
    gradient = np.zeros_like(target)
    flat_target = target.reshape(-1)
    flat_gradient = gradient.reshape(-1)
    for i in range(flat_target.size):
        saved = flat_target[i]
        flat_target[i] = saved + step
        plus = np.sum(function(*inputs) * grad_out)
        flat_target[i] = saved - step
        minus = np.sum(function(*inputs) * grad_out)
        flat_target[i] = saved
        flat_gradient[i] = (plus - minus) / (2 * step)
    return gradient


# ---------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------

def _pool_output_size(size, kernel, stride, padding, ceil_mode):
    span = size + 2 * padding - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _pool_geometry(shape, kernel, stride, padding, ceil_mode):
    """Output sizes and the extra right/bottom cells a ceil_mode window overhangs."""
    out_h = _pool_output_size(shape[-2], kernel[0], stride[0], padding[0], ceil_mode)
    out_w = _pool_output_size(shape[-1], kernel[1], stride[1], padding[1], ceil_mode)
    extra_h = max(0, (out_h - 1) * stride[0] + kernel[0] - (shape[-2] + 2 * padding[0]))
    extra_w = max(0, (out_w - 1) * stride[1] + kernel[1] - (shape[-1] + 2 * padding[1]))
    return out_h, out_w, extra_h, extra_w


def _window_starts(kernel, stride, n_out):
    # scipy's filters centre a size-k window at start + k // 2
    return kernel // 2 + stride * np.arange(n_out)


def max_pool2d_reference(x, kernel, stride, padding, ceil_mode=False):
    """``scipy.ndimage.maximum_filter`` on the -inf padded input, sampled at the strides."""
    out_h, out_w, extra_h, extra_w = _pool_geometry(x.shape, kernel, stride, padding, ceil_mode)
    padded = np.pad(x.astype(np.float64),
                    ((0, 0), (0, 0), (padding[0], padding[0] + extra_h),
                     (padding[1], padding[1] + extra_w)), constant_values=-np.inf)
    filtered = ndimage.maximum_filter(padded, size=(1, 1) + tuple(kernel), mode="constant",
                                      cval=-np.inf)
    rows = _window_starts(kernel[0], stride[0], out_h)
    cols = _window_starts(kernel[1], stride[1], out_w)
    return filtered[:, :, rows][:, :, :, cols]


def max_pool2d_indices_reference(x, kernel, stride, padding, ceil_mode=False):
    """Explicit loops: flat in-plane index of the first maximum of each window."""
    n, c, height, width = x.shape
    out_h, out_w, _, _ = _pool_geometry(x.shape, kernel, stride, padding, ceil_mode)
    indices = np.empty((n, c, out_h, out_w), dtype=np.int64)
    for oh in range(out_h):
        h0 = max(oh * stride[0] - padding[0], 0)
        h1 = min(oh * stride[0] - padding[0] + kernel[0], height)
        for ow in range(out_w):
            w0 = max(ow * stride[1] - padding[1], 0)
            w1 = min(ow * stride[1] - padding[1] + kernel[1], width)
            window = x[:, :, h0:h1, w0:w1].reshape(n, c, -1)
            first = np.argmax(window, axis=2)       # first occurrence of the maximum
            indices[:, :, oh, ow] = (h0 + first // (w1 - w0)) * width + w0 + first % (w1 - w0)
    return indices


def avg_pool2d_reference(x, kernel, stride, padding, ceil_mode=False, count_include_pad=True):
    """``scipy.ndimage.uniform_filter`` window sums divided by torch's divisor.

    The divisor counts the padded cells with ``count_include_pad`` (never the
    cells a ``ceil_mode`` window overhangs past the padding), else the real cells.
    """
    out_h, out_w, extra_h, extra_w = _pool_geometry(x.shape, kernel, stride, padding, ceil_mode)
    pads = ((0, 0), (0, 0), (padding[0], padding[0] + extra_h),
            (padding[1], padding[1] + extra_w))
    size = (1, 1) + tuple(kernel)
    area = kernel[0] * kernel[1]

    def window_sums(array):
        return ndimage.uniform_filter(array, size=size, mode="constant", cval=0.0) * area

    sums = window_sums(np.pad(x.astype(np.float64), pads))
    real = np.pad(np.ones((1, 1) + x.shape[2:]), pads)
    if count_include_pad:
        counted = np.pad(np.ones((1, 1, x.shape[2] + 2 * padding[0],
                                  x.shape[3] + 2 * padding[1])),
                         ((0, 0), (0, 0), (0, extra_h), (0, extra_w)))
    else:
        counted = real
    divisor = np.rint(window_sums(counted))
    rows = _window_starts(kernel[0], stride[0], out_h)
    cols = _window_starts(kernel[1], stride[1], out_w)
    return sums[:, :, rows][:, :, :, cols] / divisor[:, :, rows][:, :, :, cols]


def adaptive_avg_pool2d_reference(x, output_size):
    """Explicit loops over torch's bins [floor(i*H/out), ceil((i+1)*H/out))."""
    out_h, out_w = output_size
    height, width = x.shape[-2:]
    out = np.empty(x.shape[:-2] + (out_h, out_w))
    for i in range(out_h):
        h0, h1 = (i * height) // out_h, -(-((i + 1) * height) // out_h)
        for j in range(out_w):
            w0, w1 = (j * width) // out_w, -(-((j + 1) * width) // out_w)
            out[..., i, j] = x[..., h0:h1, w0:w1].astype(np.float64).mean(axis=(-2, -1))
    return out


# ---------------------------------------------------------------------------
# Normalisation (zscore-style: (x - mean) / sqrt(biased var + eps))
# ---------------------------------------------------------------------------

def zscore_reference(x, axes, eps):
    """``(x − mean) / √(var + eps)`` over ``axes`` with the biased variance, in float64."""
    x = x.astype(np.float64)
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


def _channel_shape(x):
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def _affine(x_hat, weight, bias, shape):
    y = x_hat
    if weight is not None:
        y = y * np.asarray(weight, np.float64).reshape(shape)
    if bias is not None:
        y = y + np.asarray(bias, np.float64).reshape(shape)
    return y


def batch_norm_reference(x, weight, bias, eps, running_mean=None, running_var=None):
    """Training mode (batch statistics) or, given running statistics, eval mode."""
    shape = _channel_shape(x)
    if running_mean is None:
        axes = (0,) + tuple(range(2, x.ndim))
        x_hat = zscore_reference(x, axes, eps)
    else:
        x_hat = ((x.astype(np.float64) - np.reshape(running_mean, shape))
                 / np.sqrt(np.reshape(running_var, shape).astype(np.float64) + eps))
    return _affine(x_hat, weight, bias, shape)


def layer_norm_reference(x, normalized_shape, weight, bias, eps):
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    return _affine(zscore_reference(x, axes, eps), weight, bias, normalized_shape)


def group_norm_reference(x, num_groups, weight, bias, eps):
    grouped = x.reshape(x.shape[0], num_groups, -1)
    x_hat = zscore_reference(grouped, (2,), eps).reshape(x.shape)
    return _affine(x_hat, weight, bias, _channel_shape(x))


def instance_norm_reference(x, weight, bias, eps):
    axes = tuple(range(2, x.ndim))
    return _affine(zscore_reference(x, axes, eps), weight, bias, _channel_shape(x))


# ---------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------

def conv2d_reference(x, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                     groups=1):
    """Grouped, strided, dilated cross-correlation via ``scipy.signal.correlate``.

    One 2-D correlation per (image, output channel, input channel), summed over
    the group's input channels; stride by slicing the stride-1 result.
    """
    from scipy import signal
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    n, _, _, _ = x.shape
    c_out, c_in_group, kh, kw = weight.shape
    padded = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    dilated = np.zeros((c_out, c_in_group, dilation[0] * (kh - 1) + 1,
                        dilation[1] * (kw - 1) + 1))
    dilated[:, :, ::dilation[0], ::dilation[1]] = weight
    out_per_group = c_out // groups
    out = []
    for image in range(n):
        planes = []
        for oc in range(c_out):
            first = (oc // out_per_group) * c_in_group
            total = sum(signal.correlate(padded[image, first + ic], dilated[oc, ic],
                                         mode="valid") for ic in range(c_in_group))
            planes.append(total[::stride[0], ::stride[1]])
        out.append(planes)
    out = np.array(out)
    if bias is not None:
        out = out + np.asarray(bias, dtype=np.float64).reshape(1, -1, 1, 1)
    return out


def conv2d_grads_reference(x, weight, grad_out, stride=(1, 1), padding=(0, 0), groups=1):
    """``(grad_input, grad_weight)`` of a grouped, strided conv (dilation 1), tap by tap.

    For each tap (i, j), the output grid reads the padded input at ``(oh * stride + i,
    ow * stride + j)``: the input gradient scatters ``grad_out * weight[..., i, j]``
    there, the weight gradient sums ``grad_out * input`` over it (float64).
    """
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    grad_out = np.asarray(grad_out, dtype=np.float64)
    n, channels, height, width = x.shape
    c_out, c_in_group, kh, kw = weight.shape
    out_h, out_w = grad_out.shape[2:]
    padded = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    grad_padded = np.zeros_like(padded)
    grad_weight = np.zeros_like(weight)
    out_per_group = c_out // groups
    for oc in range(c_out):
        first = (oc // out_per_group) * c_in_group
        for ic in range(c_in_group):
            for i in range(kh):
                for j in range(kw):
                    rows = slice(i, i + stride[0] * (out_h - 1) + 1, stride[0])
                    cols = slice(j, j + stride[1] * (out_w - 1) + 1, stride[1])
                    grad_weight[oc, ic, i, j] = np.sum(
                        grad_out[:, oc] * padded[:, first + ic, rows, cols])
                    grad_padded[:, first + ic, rows, cols] += grad_out[:, oc] * weight[oc, ic,
                                                                                      i, j]
    grad_input = grad_padded[:, :, padding[0]:padding[0] + height,
                             padding[1]:padding[1] + width]
    return grad_input, grad_weight


def bilinear_matrix(size, scale, dtype):
    """Dense ``(size * scale, size)`` matrix of torch's align_corners=False bilinear
    upsampling, built row by row with ``np.add.at``."""
    out_size = size * scale
    source = np.maximum((np.arange(out_size) + 0.5) / scale - 0.5, 0.0)
    low = np.minimum(np.floor(source).astype(np.int64), size - 1)
    high = np.minimum(low + 1, size - 1)
    fraction = source - low
    matrix = np.zeros((out_size, size), dtype=np.float64)
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, low), 1.0 - fraction)
    np.add.at(matrix, (rows, high), fraction)
    return matrix.astype(dtype)


def stored_layout(array, layout):
    """``array`` (N, C, H, W) as a plan stores it: inside a zero border ``(rows, cols)``
    and, for ``(rows, cols, stride_h, stride_w)``, split into the phase planes of that
    stride, (N, sh * sw * C, (H + 2 rows) / sh, (W + 2 cols) / sw), plane (a, b) of
    channel c at ``(a * sw + b) * C + c`` holding ``padded[c, a::sh, b::sw]``."""
    rows, cols, stride_h, stride_w = (tuple(layout) + (1, 1))[:4]
    padded = np.pad(array, ((0, 0), (0, 0), (rows, rows), (cols, cols)))
    assert padded.shape[2] % stride_h == 0 and padded.shape[3] % stride_w == 0
    return np.concatenate([padded[:, :, a::stride_h, b::stride_w] for a in range(stride_h)
                           for b in range(stride_w)], axis=1)


def from_stored_layout(stored, layout):
    """The padded image (N, C, H + 2 rows, W + 2 cols) of an array ``stored_layout``
    made: its border, then its interior."""
    rows, cols, stride_h, stride_w = (tuple(layout) + (1, 1))[:4]
    n, planes, plane_rows, plane_cols = stored.shape
    channels = planes // (stride_h * stride_w)
    padded = np.empty((n, channels, plane_rows * stride_h, plane_cols * stride_w),
                      stored.dtype)
    for a in range(stride_h):
        for b in range(stride_w):
            phase = a * stride_w + b
            padded[:, :, a::stride_h, b::stride_w] = stored[:, phase * channels:
                                                            (phase + 1) * channels]
    return padded
