"""Constant folding for :mod:`fastdl.deploy.onnx_import`: the small subgraphs exporters
write to compute shapes (``Shape -> Gather -> Unsqueeze -> Concat -> Reshape``) or to
move weights (``Identity``, ``Transpose``, ``Unsqueeze`` of an initializer) are
evaluated with NumPy at import time, since a plan's input shape is fixed but for the
batch.

The batch size is not known, so a computation that reads a value's shape runs twice,
at each of ``BATCHES``: where both runs agree the result is an ordinary constant,
else it is ``Batched`` (its two results), and the converter that reads it (a Reshape's
target shape, a Resize's sizes) tells the batch entries from the fixed ones. Every
result is bounded (``MAX_FOLD_ELEMENTS``, and the bytes of all of them together count
towards ``max_bytes`` as the file's tensors do) before it is allocated: a result may
hold at most ``MAX_FOLD_ELEMENTS`` elements, and at most a quarter as many as the
bytes ``max_bytes`` leaves (a float32 each), checked before the array is made.
"""
import math

import numpy as np

from fastdl.deploy._onnx_files import _fail
from fastdl.deploy._opgraph import MAX_ELEMENTS

#: Two batch sizes a shape computation is evaluated at (unlikely to be a model's size).
BATCHES = (1009, 2003)
#: The most elements one folded result may have (the plan's limit for one value).
MAX_FOLD_ELEMENTS = MAX_ELEMENTS
# ONNX's Slice ends meaning "to the end" are any int at least the size
_INT64_MAX = np.iinfo(np.int64).max


class Batched:
    """A constant that depends on the batch size: ``arrays[i]`` is its value when the
    batch is ``BATCHES[i]``."""

    __slots__ = ("arrays",)

    def __init__(self, arrays):
        self.arrays = tuple(arrays)


def combine(results):
    """One constant from the results at each batch size: the ndarray where they agree,
    else ``Batched``."""
    first = results[0]
    if all(r.shape == first.shape and r.dtype == first.dtype and np.array_equal(r, first)
           for r in results[1:]):
        return first
    return Batched(results)


class _Site(str):
    """Where a fold happens (its text names the node) and the most elements one of its
    results may have."""

    def __new__(cls, where, elements):
        site = super().__new__(cls, where)
        site.elements = elements
        return site


def _bounded(where, count):
    limit = getattr(where, "elements", MAX_FOLD_ELEMENTS)
    if count > limit:
        _fail("%s: a constant of %d elements (more than %d) would be computed"
              % (where, count, limit))
    return count


def _axis(where, axis, ndim):
    axis = int(axis)
    if not -ndim <= axis < max(ndim, 1):
        _fail("%s: axis %d is out of range for %d dims" % (where, axis, ndim))
    return axis % max(ndim, 1)


def _ints(array):
    return [int(v) for v in np.asarray(array).reshape(-1)]


# -------------------------------------------------------------------- the evaluators
# name: (attributes allowed, evaluate(where, attributes, inputs, opset) -> list of arrays)

def _shape(where, attributes, inputs, opset):
    shape = np.array(inputs[0].shape, np.int64)
    start, end = attributes.get("start", 0), attributes.get("end", len(shape))
    return [shape[slice(start, end)]]


def _gather(where, attributes, inputs, opset):
    data, indices = inputs
    axis = _axis(where, attributes.get("axis", 0), data.ndim)
    indices = np.asarray(indices)
    if indices.dtype.kind not in "iu":
        _fail("%s: indices must be ints" % where)
    size = data.shape[axis]
    if np.any(indices < -size) or np.any(indices >= size):
        _fail("%s: an index is out of range for a size of %d" % (where, size))
    _bounded(where, indices.size * (data.size // max(size, 1)))
    return [np.take(data, np.where(indices < 0, indices + size, indices), axis=axis)]


def _concat(where, attributes, inputs, opset):
    arrays = [np.atleast_1d(a) if a.ndim == 0 else a for a in inputs]
    axis = _axis(where, attributes.get("axis", 0), arrays[0].ndim)
    try:
        return [np.concatenate(arrays, axis=axis)]
    except ValueError as error:
        _fail("%s: %s" % (where, error))


def _axes_of(where, attributes, inputs, opset, since):
    """The ``axes`` of Squeeze/Unsqueeze/Reduce*: an input from ``since`` on, an
    attribute before; None where absent."""
    if opset >= since:
        return None if len(inputs) < 2 or inputs[1] is None else _ints(inputs[1])
    return attributes.get("axes")


def _unsqueeze(where, attributes, inputs, opset):
    data, axes = inputs[0], _axes_of(where, attributes, inputs, opset, 13)
    if axes is None:
        _fail("%s: axes are required" % where)
    ndim = data.ndim + len(axes)
    axes = sorted(_axis(where, a, ndim) for a in axes)
    if len(set(axes)) != len(axes):
        _fail("%s: repeated axes %s" % (where, axes))
    shape = list(data.shape)
    for a in axes:
        shape.insert(a, 1)
    return [data.reshape(shape)]


def _squeeze(where, attributes, inputs, opset):
    data, axes = inputs[0], _axes_of(where, attributes, inputs, opset, 13)
    if axes is None:
        axes = [a for a, n in enumerate(data.shape) if n == 1]
    axes = {_axis(where, a, data.ndim) for a in axes}
    if any(data.shape[a] != 1 for a in axes):
        _fail("%s: squeezes an axis of size other than 1" % where)
    return [data.reshape([n for a, n in enumerate(data.shape) if a not in axes])]


def slice_ranges(where, shape, starts, ends, axes, steps):
    """``{axis: (start, stop, step)}`` of an ONNX Slice on ``shape``, clamped as ONNX
    clamps (a negative step runs from ``start`` down to, not including, ``stop``, which
    may then be -1)."""
    ndim = len(shape)
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps):
        _fail("%s: starts, ends, axes and steps differ in length" % where)
    ranges = {}
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = _axis(where, axis, ndim)
        if axis in ranges or step == 0:
            _fail("%s: a repeated axis or a zero step" % where)
        size = shape[axis]
        start = start + size if start < 0 else start
        end = end + size if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), size), min(max(end, 0), size)
        else:
            start, end = min(max(start, 0), size - 1), min(max(end, -1), size - 1)
        ranges[axis] = (start, end, step)
    return ranges


def _slice_inputs(where, attributes, inputs, opset):
    """(starts, ends, axes, steps) of a Slice: inputs from opset 10 on, attributes before."""
    if opset >= 10:
        lists = [None if i >= len(inputs) or inputs[i] is None else _ints(inputs[i])
                 for i in range(1, 5)]
        if lists[0] is None or lists[1] is None:
            _fail("%s: starts and ends are required" % where)
        return lists
    return (attributes.get("starts"), attributes.get("ends"), attributes.get("axes"), None)


def _slice(where, attributes, inputs, opset):
    data = inputs[0]
    starts, ends, axes, steps = _slice_inputs(where, attributes, inputs, opset)
    index = [slice(None)] * data.ndim
    for axis, (start, end, step) in slice_ranges(where, data.shape, starts, ends, axes,
                                                 steps).items():
        index[axis] = np.arange(start, end, step)
        data = np.take(data, index[axis], axis=axis)
    return [data]


def reshape_target(where, shape, target, allowzero=False):
    """The shape ONNX's Reshape gives ``shape`` for ``target`` (0: copy, -1: infer)."""
    target = list(target)
    if sum(1 for n in target if n == -1) > 1 or any(n < -1 for n in target):
        _fail("%s: target shape %s has more than one -1 or a size below -1" % (where, target))
    out = []
    for index, n in enumerate(target):
        if n == 0 and not allowzero:
            if index >= len(shape):
                _fail("%s: target shape %s copies an axis the input has not" % (where, target))
            n = shape[index]
        out.append(n)
    total = math.prod(shape)
    if -1 in out:
        known = math.prod(n for n in out if n != -1)
        if known == 0 or total % known:
            _fail("%s: cannot reshape %s to %s" % (where, tuple(shape), target))
        out[out.index(-1)] = total // known
    if math.prod(out) != total:
        _fail("%s: cannot reshape %s to %s" % (where, tuple(shape), target))
    return out


def _reshape(where, attributes, inputs, opset):
    data, target = inputs
    return [data.reshape(reshape_target(where, data.shape, _ints(target),
                                        attributes.get("allowzero", 0)))]


def _transpose(where, attributes, inputs, opset):
    data = inputs[0]
    perm = attributes.get("perm", list(range(data.ndim))[::-1])
    if sorted(perm) != list(range(data.ndim)):
        _fail("%s: perm %s is not a permutation of %d axes" % (where, perm, data.ndim))
    return [np.ascontiguousarray(np.transpose(data, perm))]


def _cast(where, attributes, inputs, opset):
    import onnx
    to = attributes.get("to")
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(to))
    except (KeyError, TypeError, ValueError):
        _fail("%s: cast to data type %r is not supported" % (where, to))
    if dtype.kind not in "biuf":
        _fail("%s: cast to %s is not supported" % (where, dtype))
    return [inputs[0].astype(dtype)]


def _divide(a, b):
    """ONNX's Div: ints truncate towards zero, floats divide."""
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        if np.any(b == 0):
            _fail("an integer division by zero")
        quotient = np.abs(a) // np.abs(b)
        return np.where((a < 0) != (b < 0), -quotient, quotient).astype(np.result_type(a, b))
    return a / b


_ELEMENTWISE = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": _divide,
    "Equal": np.equal, "Less": np.less, "Greater": np.greater,
    "LessOrEqual": np.less_equal, "GreaterOrEqual": np.greater_equal,
    "And": np.logical_and, "Or": np.logical_or,
}
_UNARY = {"Neg": np.negative, "Abs": np.abs, "Floor": np.floor, "Ceil": np.ceil,
          "Sqrt": np.sqrt, "Not": np.logical_not, "Reciprocal": np.reciprocal,
          "Identity": lambda x: x}


def _broadcast_shape(where, arrays):
    try:
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
    except ValueError:
        _fail("%s: shapes %s do not broadcast" % (where, [a.shape for a in arrays]))
    _bounded(where, math.prod(shape))
    return shape


def _elementwise(kind):
    def evaluate(where, attributes, inputs, opset):
        _broadcast_shape(where, inputs)
        with np.errstate(all="ignore"):
            return [np.asarray(_ELEMENTWISE[kind](*inputs))]
    return evaluate


def _unary(kind):
    def evaluate(where, attributes, inputs, opset):
        with np.errstate(all="ignore"):
            return [np.asarray(_UNARY[kind](inputs[0]))]
    return evaluate


def _extremum(function):
    def evaluate(where, attributes, inputs, opset):
        _broadcast_shape(where, inputs)
        result = inputs[0]
        for array in inputs[1:]:
            result = function(result, array)
        return [np.asarray(result)]
    return evaluate


def _where(where, attributes, inputs, opset):
    _broadcast_shape(where, inputs)
    return [np.where(inputs[0].astype(bool), inputs[1], inputs[2])]


def _constant_of_shape(where, attributes, inputs, opset):
    shape = _ints(inputs[0])
    if any(n < 0 for n in shape):
        _fail("%s: negative size in %s" % (where, shape))
    _bounded(where, math.prod(shape))
    value = attributes.get("value")
    fill = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    if fill.size != 1:
        _fail("%s: value must hold one element" % where)
    return [np.full(shape, fill[0], fill.dtype)]


def _range(where, attributes, inputs, opset):
    start, limit, delta = (np.asarray(a).reshape(()) for a in inputs)
    if delta == 0:
        _fail("%s: delta is 0" % where)
    count = max(int(math.ceil((float(limit) - float(start)) / float(delta))), 0)
    _bounded(where, count)
    return [(start + np.arange(count) * delta).astype(np.result_type(start, limit, delta))]


def _expand(where, attributes, inputs, opset):
    data, shape = inputs
    try:
        out = np.broadcast_shapes(data.shape, tuple(_ints(shape)))
    except ValueError:
        _fail("%s: %s does not expand to %s" % (where, data.shape, _ints(shape)))
    _bounded(where, math.prod(out))
    return [np.broadcast_to(data, out).copy()]


def _flatten(where, attributes, inputs, opset):
    data = inputs[0]
    axis = _axis(where, attributes.get("axis", 1), data.ndim + 1)
    return [data.reshape(math.prod(data.shape[:axis]), -1)]


def _split(where, attributes, inputs, opset, outputs):
    data = inputs[0]
    axis = _axis(where, attributes.get("axis", 0), data.ndim)
    sizes = split_sizes(where, attributes, inputs, opset, data.shape[axis], outputs)
    bounds = np.cumsum([0] + sizes)
    return [np.take(data, np.arange(bounds[i], bounds[i + 1]), axis=axis)
            for i in range(len(sizes))]


def split_sizes(where, attributes, inputs, opset, size, outputs):
    """The sizes of a Split's pieces along an axis of ``size``."""
    if opset >= 13:
        sizes = None if len(inputs) < 2 or inputs[1] is None else _ints(inputs[1])
    else:
        sizes = attributes.get("split")
    if sizes is None:
        count = attributes.get("num_outputs", outputs)
        if count < 1:
            _fail("%s: no outputs" % where)
        piece = -(-size // count)
        sizes = [min(piece, size - piece * i) for i in range(count)]
    if sum(sizes) != size or any(n < 0 for n in sizes) or len(sizes) != outputs:
        _fail("%s: split sizes %s do not cut %d into %d pieces" % (where, sizes, size,
                                                                   outputs))
    return sizes


def _reduce_prod(where, attributes, inputs, opset):
    data, axes = inputs[0], _axes_of(where, attributes, inputs, opset, 18)
    keep = bool(attributes.get("keepdims", 1))
    axes = None if not axes else tuple(_axis(where, a, data.ndim) for a in axes)
    return [np.asarray(np.prod(data, axis=axes, keepdims=keep))]


EVALUATORS = {
    "Shape": ({"start", "end"}, _shape),
    "Size": (set(), lambda where, attributes, inputs, opset: [np.array(inputs[0].size,
                                                                       np.int64)]),
    "Gather": ({"axis"}, _gather),
    "Concat": ({"axis"}, _concat),
    "Unsqueeze": ({"axes"}, _unsqueeze),
    "Squeeze": ({"axes"}, _squeeze),
    "Slice": ({"starts", "ends", "axes"}, _slice),
    "Reshape": ({"allowzero"}, _reshape),
    "Transpose": ({"perm"}, _transpose),
    "Cast": ({"to", "saturate", "round_mode"}, _cast),
    "Where": (set(), _where),
    "ConstantOfShape": ({"value"}, _constant_of_shape),
    "Range": (set(), _range),
    "Expand": (set(), _expand),
    "Flatten": ({"axis"}, _flatten),
    "Min": (set(), _extremum(np.minimum)),
    "Max": (set(), _extremum(np.maximum)),
    "ReduceProd": ({"axes", "keepdims"}, _reduce_prod),
}
EVALUATORS.update({kind: (set(), _elementwise(kind)) for kind in _ELEMENTWISE})
EVALUATORS.update({kind: (set(), _unary(kind)) for kind in _UNARY})
#: Folded with several outputs: evaluate(where, attributes, inputs, opset, outputs).
SPLITTERS = {"Split": ({"axis", "split", "num_outputs"}, _split)}


def fold(where, kind, attributes, inputs, opset, outputs, budget=None):
    """The outputs of node ``kind`` on constant ``inputs`` (ndarrays, ``Batched`` or
    None for an empty name): ndarrays where they do not depend on the batch size, else
    ``Batched``. ``budget``: the bytes the results may take (None: any)."""
    where = _Site(where, MAX_FOLD_ELEMENTS if budget is None else min(
        MAX_FOLD_ELEMENTS, max(budget, 0) // 4))
    worlds = [[a.arrays[w] if isinstance(a, Batched) else a for a in inputs]
              for w in range(len(BATCHES))]
    if not any(isinstance(a, Batched) for a in inputs):
        worlds = worlds[:1]
    results = []
    for arrays in worlds:
        if kind in SPLITTERS:
            out = SPLITTERS[kind][1](where, attributes, arrays, opset, outputs)
        else:
            out = EVALUATORS[kind][1](where, attributes, arrays, opset)
        for array in out:
            _bounded(where, array.size)
        results.append(out)
    return [combine([r[i] for r in results]) for i in range(len(results[0]))]


def allowed_attributes(kind):
    """The attribute names folding ``kind`` reads (others are refused)."""
    table = SPLITTERS if kind in SPLITTERS else EVALUATORS
    return table[kind][0]


def foldable(kind):
    return kind in EVALUATORS or kind in SPLITTERS


def batch_sizes(where, what, constant, batch_axis=0):
    """``constant`` (an ndarray or ``Batched``) as a list of ints whose entry
    ``batch_axis`` may be the batch size: ``(ints, True)`` where that entry is the
    batch (``Batched`` there and equal to ``BATCHES`` in both), ``(ints, False)`` for a
    fixed list; any other entry that depends on the batch refused."""
    if not isinstance(constant, Batched):
        return _ints(constant), False
    lists = [_ints(a) for a in constant.arrays]
    if len({len(values) for values in lists}) != 1:
        _fail("%s: %s changes length with the batch size" % (where, what))
    values = lists[0]
    for index in range(len(values)):
        column = [values_[index] for values_ in lists]
        if index == batch_axis and column == list(BATCHES):
            continue
        if len(set(column)) != 1:
            _fail("%s: %s has an entry %d computed from the batch size other than the "
                  "batch itself" % (where, what, index))
    return values, True


__all__ = ["BATCHES", "Batched", "EVALUATORS", "MAX_FOLD_ELEMENTS", "allowed_attributes",
           "batch_sizes", "combine", "fold", "foldable", "reshape_target", "slice_ranges",
           "split_sizes"]
