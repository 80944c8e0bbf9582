"""Independent NumPy references for the graph ops of inference plans, and an interpreter of
a plan's op list built on them (and on ``reference``'s conv, pool and norm references).

Written from the ops' definitions (torch's coordinate rules for resizing, the softmax
and norm formulas), in float64, never by calling fastdl.
"""
import math

import numpy as np

from reference import (adaptive_avg_pool2d_reference, conv2d_reference, group_norm_reference,
                       layer_norm_reference, max_pool2d_reference)

_CUBIC_A = -0.75   # Keys' constant, as torch's bicubic


def softmax_reference(x, axis, log=False):
    """Softmax (or log-softmax) along ``axis`` in float64, shifted by the maximum."""
    x = np.asarray(x, np.float64)
    shifted = x - x.max(axis=axis, keepdims=True)
    total = np.exp(shifted).sum(axis=axis, keepdims=True)
    return shifted - np.log(total) if log else np.exp(shifted) / total


def _keys(distance):
    """Keys' cubic convolution kernel at ``|distance|``."""
    s, a = abs(distance), _CUBIC_A
    if s <= 1:
        return ((a + 2) * s - (a + 3)) * s * s + 1
    if s < 2:
        return ((a * s - 5 * a) * s + 8 * a) * s - 4 * a
    return 0.0


def resize_matrix(mode, n_in, n_out, align_corners, scale=None):
    """The (n_out, n_in) matrix of one axis of torch's ``interpolate``.

    Source coordinates: the ratio is ``(n_in - 1) / (n_out - 1)`` with align_corners,
    else ``1 / scale`` where a scale factor is given, else ``n_in / n_out``. Nearest
    modes compute ``floor(dst * ratio)`` (``(dst + 0.5) * ratio``) in float32, as ATen;
    linear ``ratio * (dst + 0.5) - 0.5`` clamped at 0 (``ratio * dst`` aligned); cubic
    the same unclamped, with its four taps clamped to the edge.
    """
    if align_corners:
        ratio = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    elif scale is not None:
        ratio = 1.0 / scale
    else:
        ratio = n_in / n_out
    matrix = np.zeros((n_out, n_in))
    for dst in range(n_out):
        if mode in ("nearest", "nearest_exact"):
            ratio32 = (np.float32(1.0 / scale) if scale is not None
                       else np.float32(n_in) / np.float32(n_out))
            offset = np.float32(0.5 if mode == "nearest_exact" else 0.0)
            source = min(int(np.floor((np.float32(dst) + offset) * ratio32)), n_in - 1)
            matrix[dst, source] = 1.0
            continue
        src = ratio * dst if align_corners else ratio * (dst + 0.5) - 0.5
        if mode == "bilinear":
            src = max(src, 0.0)
            low = min(int(math.floor(src)), n_in - 1)
            high = min(low + 1, n_in - 1)
            matrix[dst, low] += 1 - (src - low)
            matrix[dst, high] += src - low
        else:
            base = math.floor(src)
            for offset in range(-1, 3):
                matrix[dst, min(max(base + offset, 0), n_in - 1)] += _keys(src - (base + offset))
    return matrix


def resize_reference(x, mode, size, align_corners=False, scale=None):
    """``x (N, C, H, W)`` resized to ``size`` by the per-axis matrices, in float64."""
    scale = (None, None) if scale is None else scale
    rows = resize_matrix(mode, x.shape[2], size[0], align_corners, scale[0])
    cols = resize_matrix(mode, x.shape[3], size[1], align_corners, scale[1])
    return np.einsum("oh,nchw,pw->ncop", rows, np.asarray(x, np.float64), cols)


_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}
_ACTIVATIONS = {"relu": lambda x: np.maximum(x, 0), "tanh": np.tanh,
                "sigmoid": lambda x: 1 / (1 + np.exp(-x)), "identity": lambda x: x}


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def _weights(op, tensors):
    return {role: np.asarray(tensors[name], np.float64)
            for role, name in op.get("weights", {}).items()}


def apply_op(op, arrays, tensors):
    """Op ``op`` of a plan on its float64 input ``arrays``, the obvious way."""
    kind, x, weights = op["op"], arrays[0], _weights(op, tensors)
    if kind == "conv2d":
        out = conv2d_reference(x, weights["weight"], weights.get("bias"), op["stride"],
                               op["padding"], op["dilation"], op["groups"])
        if len(arrays) > 1:
            out = out + arrays[1]
        slope = op["negative_slope"]
        return out if slope is None else np.where(out > 0, out, slope * out)
    if kind == "activation":
        return _ACTIVATIONS[op["kind"]](x)
    if kind == "max_pool2d":
        kernel = _pair(op["kernel_size"])
        return max_pool2d_reference(x, kernel, _pair(op["stride"] or kernel),
                                    _pair(op["padding"]), op["ceil_mode"])
    if kind == "adaptive_avg_pool2d":
        return adaptive_avg_pool2d_reference(x, op["output_size"])
    if kind == "flatten":
        return x.reshape(x.shape[:op["start_dim"]] + (-1,))
    if kind == "linear":
        out = x @ weights["weight"].T + weights.get("bias", 0.0)
        slope = op["negative_slope"]
        return out if slope is None else np.where(out > 0, out, slope * out)
    if kind == "binary":
        a, b = (arrays if len(arrays) == 2 else
                (weights["other"], x) if op["reverse"] else (x, weights["other"]))
        return _BINARY[op["kind"]](a, b)
    if kind == "concat":
        return np.concatenate(arrays, axis=op["axis"])
    if kind == "slice":
        taken = list(range(op["start"], op["stop"], op["step"]))
        return np.take(x, taken, axis=op["axis"])
    if kind == "reshape":
        return x.reshape((len(x),) + tuple(op["shape"]))
    if kind == "transpose":
        return np.transpose(x, op["perm"])
    if kind == "resize":
        return resize_reference(x, op["mode"], op["size"], op["align_corners"], op["scale"])
    if kind == "softmax":
        return softmax_reference(x, op["axis"], op["log"])
    if kind == "group_norm":
        return group_norm_reference(x, op["groups"], weights.get("weight"),
                                    weights.get("bias"), op["eps"])
    if kind == "layer_norm":
        normalized = x.shape[x.ndim - op["normalized_ndim"]:]
        return layer_norm_reference(x, normalized, weights.get("weight"), weights.get("bias"),
                                    op["eps"])
    raise NotImplementedError(kind)


def run_reference(ops, tensors, x, outputs=None):
    """A plan's op list run op by op in float64: the last value, or the tuple of
    ``outputs``."""
    values = [np.asarray(x, np.float64)]
    for op in ops:
        values.append(apply_op(op, [values[i] for i in op["inputs"]], tensors))
    return values[-1] if outputs is None else tuple(values[i] for i in outputs)
