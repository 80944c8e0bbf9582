"""InferencePlan: a validated op list over NumPy buffers, safe to call from many threads.

Construction checks every op against the plan's input shape (shape inference),
so a plan loaded from a file can never drive a kernel out of bounds. Each call
takes a set of intermediate buffers for its input shape from a pool (or makes
one), so concurrent callers never share buffers; the pool keeps at most
``max_shapes`` input shapes (least recently used go), so memory stays flat
when the batch size varies.
"""
import collections
import json
import math
import numbers
import threading

import numpy as np

from fastdl.kernels import conv as conv_kernels
from fastdl.kernels import dense as dense_kernels
from fastdl.kernels import direct as direct_kernels
from fastdl.kernels import pool as pool_kernels
from fastdl.safetensors_io import load_file, save_file
from fastdl.shapes import conv_output_size, conv_transpose_output_size, is_int

FORMAT_VERSION = 1
#: The most memory, in bytes, ``load`` lets a plan file ask for: what one call at batch
#: 1 (``warmup``'s) holds by ``InferencePlan.call_bytes``' estimate — the input, every
#: intermediate and output value (the plan keeps a buffer per op), the copies its
#: kernels make and its prepared (packed) weights. ``load(path, max_bytes=...)`` raises
#: it; a call at batch N holds about N times the values.
MAX_PLAN_BYTES = 256 << 20
#: The most ops a plan file may hold (ResNet-152 has about 160).
MAX_OPS = 4096
#: The largest JSON header a plan file may have: a plan of ``MAX_OPS`` ops takes about
#: 1 MiB, and the objects Python builds for hostile JSON take up to ~25 times its size.
MAX_PLAN_HEADER_BYTES = 4 << 20
#: The largest int a plan may give for a size, channel count, stride, padding, dilation,
#: window or value id (the kernels' C ints then never overflow).
MAX_INT = 1 << 24
# the most elements one value may have at batch 1: the kernels index planes with C ints
_MAX_ELEMENTS = 2 ** 31 - 1

OPS = ("conv2d", "conv_transpose2d", "linear", "max_pool2d", "avg_pool2d",
       "adaptive_avg_pool2d", "flatten", "affine_channels", "activation")
ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "identity")
_ATTRIBUTES = {
    "conv2d": {"stride", "padding", "dilation", "groups", "negative_slope", "weights"},
    "conv_transpose2d": {"stride", "padding", "dilation", "groups", "output_padding",
                         "weights"},
    "linear": {"negative_slope", "weights"},
    "max_pool2d": {"kernel_size", "stride", "padding", "ceil_mode"},
    "avg_pool2d": {"kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"},
    "adaptive_avg_pool2d": {"output_size"},
    "flatten": {"start_dim"},
    "affine_channels": {"weights"},
    "activation": {"kind", "negative_slope"},
}
# the tensors each op with weights may name
_ROLES = {"conv2d": {"weight", "bias"}, "conv_transpose2d": {"weight", "bias"},
          "linear": {"weight", "bias"}, "affine_channels": {"scale", "shift"}}


def _fail(message):
    raise ValueError("invalid inference plan: " + message)


def _int(value, low, high=MAX_INT):
    """Whether ``value`` is an int (not a bool) in ``[low, high]``."""
    return is_int(value) and low <= value <= high


def _ints(value, count, what, low):
    if not isinstance(value, (list, tuple)) or len(value) != count or not all(
            _int(v, low) for v in value):
        _fail("%s must be a list of %d ints in [%d, %d], got %r" % (what, count, low, MAX_INT,
                                                                    value))
    return tuple(int(v) for v in value)


def _window(value, what, index, low):
    """A pooling window argument (an int or a pair of ints) as a pair."""
    pair = (value, value) if is_int(value) else value
    return _ints(pair, 2, "op %d: %s" % (index, what), low)


def _flag(op, key, index):
    if not isinstance(op[key], bool):
        _fail("op %d: %s must be true or false, got %r" % (index, key, op[key]))


def _weight(tensors, op, role, index, ndim):
    name = op.get("weights", {}).get(role)
    if name is None:
        return None
    array = tensors[name]   # names are checked in _validate
    if array.ndim != ndim or 0 in array.shape:
        _fail("tensor %r of op %d must be %d-D and not empty, got shape %s"
              % (name, index, ndim, array.shape))
    return array


def _infer_conv(op, index, shape, tensors, transposed):
    weight = _weight(tensors, op, "weight", index, 4)
    if weight is None:
        _fail("op %d (%s) has no weight" % (index, op["op"]))
    stride = _ints(op["stride"], 2, "stride", 1)
    padding = _ints(op["padding"], 2, "padding", 0)
    dilation = _ints(op["dilation"], 2, "dilation", 1)
    groups = op["groups"]
    if not _int(groups, 1) or len(shape) != 4:
        _fail("op %d: bad groups %r or input shape %s" % (index, groups, shape))
    channels = shape[1]
    if transposed:
        out_channels = weight.shape[1] * groups
        output_padding = _ints(op["output_padding"], 2, "output_padding", 0)
        if weight.shape[0] != channels or channels % groups:
            _fail("op %d: weight %s does not fit %d input channels" % (index, weight.shape,
                                                                       channels))
        if any(output_padding[a] >= max(stride[a], dilation[a]) for a in (0, 1)):
            _fail("op %d: output_padding %s must be smaller than stride or dilation"
                  % (index, output_padding))
        size = [conv_transpose_output_size(shape[2 + a], weight.shape[2 + a], stride[a],
                                           padding[a], output_padding[a], dilation[a])
                for a in (0, 1)]
        if min(size) < 1:
            _fail("op %d: empty output" % index)
    else:
        out_channels = weight.shape[0]
        if weight.shape[1] * groups != channels or out_channels % groups:
            _fail("op %d: weight %s with groups=%d does not fit %d input channels"
                  % (index, weight.shape, groups, channels))
        try:
            size = [conv_output_size(shape[2 + a], weight.shape[2 + a], stride[a],
                                     padding[a], dilation[a]) for a in (0, 1)]
        except ValueError as error:
            _fail("op %d: %s" % (index, error))
    bias = _weight(tensors, op, "bias", index, 1)
    if bias is not None and bias.shape != (out_channels,):
        _fail("op %d: bias shape %s, expected (%d,)" % (index, bias.shape, out_channels))
    return (shape[0], out_channels, size[0], size[1])


def _infer(op, index, shapes, tensors):
    """Output shape of ``op`` given its input shapes; raise on any inconsistency."""
    shape = shapes[0]
    kind = op["op"]
    if kind in ("conv2d", "conv_transpose2d"):
        out = _infer_conv(op, index, shape, tensors, kind == "conv_transpose2d")
        if len(shapes) > 1 and shapes[1] != out:
            _fail("op %d: residual shape %s differs from the output %s" % (index, shapes[1],
                                                                           out))
        return out
    if kind == "linear":
        weight = _weight(tensors, op, "weight", index, 2)
        if weight is None or len(shape) != 2 or shape[1] != weight.shape[1]:
            _fail("op %d: linear weight %s does not fit input %s"
                  % (index, None if weight is None else weight.shape, shape))
        bias = _weight(tensors, op, "bias", index, 1)
        if bias is not None and bias.shape != (weight.shape[0],):
            _fail("op %d: bias shape %s" % (index, bias.shape))
        return (shape[0], weight.shape[0])
    if kind in ("max_pool2d", "avg_pool2d"):
        kernel = _window(op["kernel_size"], "kernel_size", index, 1)
        stride = op["stride"]
        if stride is not None and stride != []:   # None or []: the kernel size
            _window(stride, "stride", index, 1)
        _window(op["padding"], "padding", index, 0)
        _flag(op, "ceil_mode", index)
        if kind == "avg_pool2d":
            _flag(op, "count_include_pad", index)
        if len(shape) != 4:
            _fail("op %d: pooling needs a 4-D input, got %s" % (index, shape))
        try:
            _, _, _, output_hw = pool_kernels.validate_pool2d_args(
                kind, shape, kernel, op["stride"], op["padding"], op["ceil_mode"])
        except (TypeError, ValueError) as error:
            _fail("op %d: %s" % (index, error))
        return shape[:2] + tuple(output_hw)
    if kind == "adaptive_avg_pool2d":
        size = _ints(op["output_size"], 2, "output_size", 1)
        if len(shape) != 4:
            _fail("op %d: adaptive pooling needs a 4-D input, got %s" % (index, shape))
        return shape[:2] + size
    if kind == "flatten":
        start = op["start_dim"]
        if not is_int(start) or not 1 <= start < len(shape):
            _fail("op %d: bad start_dim %r for shape %s" % (index, start, shape))
        return shape[:start] + (math.prod(shape[start:]),)
    if kind == "affine_channels":
        for role in ("scale", "shift"):
            array = _weight(tensors, op, role, index, 1)
            if array is None or len(shape) < 2 or array.shape != (shape[1],):
                _fail("op %d: %s must have shape (%d,)" % (index, role, shape[1]))
        return shape
    if op["kind"] not in ACTIVATIONS:
        _fail("op %d: unknown activation %r" % (index, op["kind"]))
    if op["kind"] == "leaky_relu" and op["negative_slope"] is None:
        _fail("op %d: leaky_relu needs a negative_slope" % index)
    return shape


def _held(op, shapes, out, tensors, itemsize):
    """Bytes a call at batch 1 holds for ``op`` (input ``shapes``, output ``out``): its
    output, the copies its kernel makes (and the zero borders ``_borders`` may give the
    buffers it reads), and its prepared weights. An upper bound, not an exact count."""
    kind, size = op["op"], math.prod(out)
    if kind == "flatten":
        return 0                                       # a view
    if kind == "affine_channels":
        return 2 * size * itemsize                     # x * scale, then + shift
    if kind in ("max_pool2d", "adaptive_avg_pool2d"):
        # the plan's buffer, and where the window is not 2x2 (1x1) a new output, and for
        # max pooling its int64 argmax
        return size * (2 * itemsize + (8 if kind == "max_pool2d" else 0))
    held = size * itemsize
    if kind in ("conv2d", "conv_transpose2d", "linear"):
        weight = tensors[op["weights"]["weight"]]
        # packed in blocks of up to 24 rows or columns (dense panels: padded, then
        # transposed; the direct loops' blocks, of a transposed conv's flipped weights),
        # for a direct 3x3 conv also as Winograd's 16 planes (made, packed and joined:
        # 3 x 16/9 of the weights at once)
        copies = 3 if kind == "linear" else 8
        held += (copies * weight.size + 32 * (weight.size // min(weight.shape[:2]))) \
            * itemsize
    if kind == "conv2d":
        _, channels, height, width = shapes[0]
        rows, cols = op["padding"]
        held += channels * ((height + 2 * rows) * (width + 2 * cols) - height * width) \
            * itemsize                                 # the input's border, at most
    return held


def _validate(ops, tensors, input_shape, dtype, max_bytes=None):
    """The shape of every value (0: the input; i + 1: op i's output) at batch 1, and the
    bytes a call at batch 1 holds (``_held``); raise ValueError on any inconsistency,
    or where those bytes pass ``max_bytes``."""
    if not isinstance(ops, list) or not ops:
        _fail("ops must be a non-empty list")
    itemsize = np.dtype(dtype).itemsize
    shapes = {0: (1,) + tuple(input_shape)}
    if len(input_shape) != 3 or math.prod(input_shape) > _MAX_ELEMENTS or not all(
            _int(n, 1) for n in input_shape):
        _fail("input_shape %s must be 3 sizes in [1, %d], of at most %d elements"
              % (tuple(input_shape), MAX_INT, _MAX_ELEMENTS))
    held = math.prod(input_shape) * itemsize           # the input
    for index, op in enumerate(ops):
        if not isinstance(op, dict) or op.get("op") not in OPS:
            _fail("op %d is unknown: %r" % (index, op.get("op") if isinstance(op, dict)
                                            else op))
        kind = op["op"]
        extra = set(op) - {"op", "inputs", "output"} - _ATTRIBUTES[kind]
        missing = _ATTRIBUTES[kind] - set(op) - {"weights"}
        if extra or missing:
            _fail("op %d (%s): unexpected %s, missing %s" % (index, kind, sorted(extra),
                                                            sorted(missing)))
        inputs = op.get("inputs")
        if not isinstance(inputs, list) or not 1 <= len(inputs) <= 2 or not all(
                _int(i, 0, index) for i in inputs):
            _fail("op %d: inputs %r must name earlier values" % (index, inputs))
        if len(inputs) == 2 and kind != "conv2d":
            _fail("op %d: only conv2d takes a residual input" % index)
        if not is_int(op.get("output")) or op["output"] != index + 1:
            _fail("op %d: output id must be %d" % (index, index + 1))
        weights = op.get("weights", {})
        if not isinstance(weights, dict) or not set(weights) <= _ROLES.get(kind, set()) \
                or not all(isinstance(name, str) and name in tensors
                           for name in weights.values()):
            _fail("op %d: weights %r must map %s to tensors of the plan"
                  % (index, weights, sorted(_ROLES.get(kind, ()))))
        slope = op.get("negative_slope")
        if slope is not None and (not isinstance(slope, numbers.Real) or isinstance(
                slope, bool) or not math.isfinite(slope)):
            _fail("op %d: negative_slope must be a finite number or null" % index)
        sources = [shapes[i] for i in inputs]
        shapes[index + 1] = out = _infer(op, index, sources, tensors)
        if not all(_int(n, 1) for n in out[1:]) or math.prod(out) > _MAX_ELEMENTS:
            _fail("op %d: output shape %s (at batch 1) has a size outside [1, %d] or more "
                  "than %d elements" % (index, out, MAX_INT, _MAX_ELEMENTS))
        held += _held(op, sources, out, tensors, itemsize)
        if index == len(ops) - 1:
            held += math.prod(out) * itemsize          # the copy a call returns
        if max_bytes is not None and held > max_bytes:
            _fail("a call at batch 1 would hold more than max_bytes=%d bytes by op %d (%s, "
                  "output %s); load it with a larger max_bytes if it is trusted"
                  % (max_bytes, index, kind, out))
    for name, array in tensors.items():
        if array.dtype != dtype:
            _fail("tensor %r has dtype %s, the plan is %s" % (name, array.dtype, dtype))
    return shapes, held


class _BufferSet(list):
    """One caller's intermediate buffers, by op index, and the conv chains prepared on
    them (by their first conv's index), which live and go with the buffers."""
    __slots__ = ("chains",)

    def __init__(self):
        super().__init__()
        self.chains = {}


class InferencePlan:
    """A compiled, eval-only model: ``plan(x)`` returns the logits as an ndarray.

    Parameters
    ----------
    ops : list of dict
        From ``fastdl.deploy.compile`` or a plan file.
    tensors : dict of str to ndarray
    input_shape : tuple (C, H, W)
        The batch size may vary from call to call; the rest is fixed.
    max_shapes : int
        Input shapes whose buffers are kept.
    max_bytes : int, optional
        Refuse (ValueError) a plan whose call at batch 1 would hold more bytes than
        this (``call_bytes``); None: no limit. ``load`` gives ``MAX_PLAN_BYTES``.

    Attributes
    ----------
    call_bytes : int
        An upper estimate of the bytes one call at batch 1 holds: its input, every
        intermediate and output value, the copies its kernels make and the prepared
        weights (the values scale with the batch size; the weights, too, are extra).
    """

    def __init__(self, ops, tensors, input_shape, max_shapes=4, max_bytes=None):
        self.input_shape = tuple(int(n) for n in input_shape)
        dtypes = {a.dtype for a in tensors.values()} or {np.dtype(np.float32)}
        if len(dtypes) != 1 or dtypes & {np.dtype(np.float32), np.dtype(np.float64)} != dtypes:
            _fail("tensors must share one float dtype, got %s" % sorted(map(str, dtypes)))
        self.dtype = dtypes.pop()
        self.shapes, self.call_bytes = _validate(ops, tensors, self.input_shape, self.dtype,
                                                 max_bytes)
        self.ops = ops
        self.tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
        self._shapes = collections.OrderedDict()   # batch size: (program, free buffer sets)
        self._lock = threading.Lock()
        self.max_shapes = int(max_shapes)

    # ---------------------------------------------------------------- running
    def _prepare(self, index, batch):
        """Op ``index`` as ``step(values, buffer) -> value`` for this batch size, its
        kernel's tile, thread count and packed weights prepared once; a direct conv
        comes back as its ``direct.ForwardRunner`` instead, to be chained."""
        op = self.ops[index]
        kind = op["op"]
        weights = {role: self.tensors[name] for role, name in op.get("weights", {}).items()}
        weight, bias = weights.get("weight"), weights.get("bias")
        slope = op.get("negative_slope")
        source = op["inputs"][0]
        shape = (batch,) + tuple(self.shapes[source][1:])
        if kind == "conv2d":
            run = conv_kernels.conv2d_runner(
                shape, weight, bias, tuple(op["stride"]), tuple(op["padding"]),
                tuple(op["dilation"]), op["groups"], slope)
            if isinstance(run, direct_kernels.ForwardRunner):
                return run
            residual = op["inputs"][1] if len(op["inputs"]) > 1 else None
            return lambda values, buffer: run(values[source], buffer, None if residual is None
                                              else values[residual])
        if kind == "conv_transpose2d":
            return lambda values, buffer: conv_kernels.conv_transpose2d_forward(
                values[source], weight, bias, op["stride"], op["padding"],
                op["output_padding"], op["groups"], op["dilation"])
        if kind == "linear":
            layer = dense_kernels.LinearRunner(weight, bias, slope)
            return lambda values, buffer: layer(values[source], buffer)
        if kind in ("max_pool2d", "adaptive_avg_pool2d"):
            run = (pool_kernels.max_pool2d_runner(shape, op["kernel_size"], op["stride"],
                                                  op["padding"], op["ceil_mode"])
                   if kind == "max_pool2d" else
                   pool_kernels.adaptive_avg_pool2d_runner(shape, tuple(op["output_size"])))
            return lambda values, buffer: run(values[source], buffer)
        if kind == "avg_pool2d":
            return lambda values, buffer: pool_kernels.avg_pool2d_forward(
                values[source], op["kernel_size"], op["stride"], op["padding"],
                op["ceil_mode"], op["count_include_pad"])
        if kind == "flatten":
            return lambda values, buffer: values[source].reshape(
                values[source].shape[:op["start_dim"]] + (-1,))
        if kind == "affine_channels":
            broadcast = (1, -1) + (1,) * (len(shape) - 2)
            scale, shift = weights["scale"].reshape(broadcast), weights["shift"].reshape(
                broadcast)
            return lambda values, buffer: values[source] * scale + shift
        # a standalone activation (one not fused into a conv or dense layer) runs a
        # Numba kernel: imported here, so that plans without one never load Numba
        from fastdl.kernels import activation as act_kernels
        function = {"relu": act_kernels.relu_forward, "sigmoid": act_kernels.sigmoid_forward,
                    "tanh": act_kernels.tanh_forward, "identity": lambda x: x,
                    "leaky_relu": lambda x: act_kernels.leaky_relu_forward(
                        x, op["negative_slope"])}[op["kind"]]
        return lambda values, buffer: function(values[source])

    def _head(self, runs, batch):
        """The ops of a classifier head right after the chain ``runs`` — a global average
        pool of its last output, a flatten and a linear layer, none read by anything
        else — as (pool, flatten, linear) op indices; None where there is none, or the
        batch is large enough for the dense kernels (``dense.PANEL_ROWS``) to pay."""
        pool = runs[-1][2] + 1
        if batch >= dense_kernels.PANEL_ROWS or len(runs) < 2:
            return None
        ops = self.ops[pool:pool + 3]
        if len(ops) < 3 or [op["op"] for op in ops] != ["adaptive_avg_pool2d", "flatten",
                                                        "linear"]:
            return None
        if (list(ops[0]["output_size"]) != [1, 1] or ops[1]["start_dim"] != 1
                or [op["inputs"] for op in ops] != [[pool], [pool + 1], [pool + 2]]):
            return None
        readers = [value for op in self.ops for value in op["inputs"]]
        if any(readers.count(value) != 1 for value in (pool, pool + 1, pool + 2)):
            return None
        return pool, pool + 1, pool + 2

    def _dense_tail(self, runs, batch):
        """The ops after the chain ``runs`` that it can run as dense layers in its own
        parallel region: a flatten of its last output, then consecutive linear layers
        each reading the one before (a LeNet's classifier), as (flatten, [(linear,
        LinearRunner)]); None where there are none, or the packed float32 kernel does
        not apply (fewer than ``dense.PANEL_ROWS`` rows: the head's case, or GEMVs)."""
        flatten = runs[-1][2] + 1
        if batch < dense_kernels.PANEL_ROWS or self.dtype != np.float32 or flatten >= len(
                self.ops):
            return None
        op = self.ops[flatten]
        if op["op"] != "flatten" or op["start_dim"] != 1 or op["inputs"] != [flatten]:
            return None
        linears, source = [], flatten + 1
        for index in range(flatten + 1, len(self.ops)):
            op = self.ops[index]
            if op["op"] != "linear" or op["inputs"] != [source]:
                break
            weights = op["weights"]
            linears.append((index, dense_kernels.LinearRunner(
                self.tensors[weights["weight"]],
                self.tensors[weights["bias"]] if "bias" in weights else None,
                op.get("negative_slope"))))
            source = index + 1
        return (flatten, linears) if linears else None

    def _chain(self, runs, borders, head=None, tail=None):
        """One step for consecutive direct convs ``[(index, runner, output)]``: one
        parallel region for all of them (one wake-up of the team instead of one per
        conv). ``output`` is the op whose output the conv writes: its own, or that of
        the max pool it computes in its epilogue (``_pooled``). ``borders``: the zero
        border each buffer stored with one has (``_borders``); ``head`` and ``tail``: the
        ops of a classifier head (``_head``) or the dense layers (``_dense_tail``) the
        chain runs too."""
        if len(runs) == 1 and tail is None:
            index, run, output = runs[0]
            return self._single(output, lambda values, buffer: run(
                values[self.ops[index]["inputs"][0]], buffer, self._residual(index, values)))
        threads = max(run.threads for _, run, _ in runs)
        first, key = self.ops[runs[0][0]]["inputs"][0], runs[0][0]

        def step(values, buffers):
            for _, _, output in runs:   # outputs are known before the chain runs
                values[output + 1] = buffers[output]
            if head is not None:
                pool, flatten, linear = head
                values[pool + 1] = buffers[pool]
                values[flatten + 1] = buffers[pool].reshape(buffers[pool].shape[:2])
                values[linear + 1] = buffers[linear]
            if tail is not None:
                flatten, linears = tail
                values[flatten + 1] = values[flatten].reshape(len(values[flatten]), -1)
                for index, _ in linears:
                    values[index + 1] = buffers[index]
            x = values[first]
            chain = buffers.chains.get(key)
            if chain is None:
                chain = direct_kernels.prepare_chain(
                    [(run, values[self.ops[index]["inputs"][0]], buffers[output],
                      self._residual(index, values), self._chain_borders(index, output, borders))
                     for index, run, output in runs], threads)
                if head is not None:
                    weights = self.ops[head[2]]["weights"]
                    slope = self.ops[head[2]].get("negative_slope")
                    chain.set_head(values[head[1] + 1], self.tensors[weights["weight"]],
                                   self.tensors[weights["bias"]] if "bias" in weights else None,
                                   values[head[2] + 1], slope is not None,
                                   0.0 if slope is None else slope)
                if tail is not None:
                    chain.set_dense([(values[index], layer.panels, layer.panel_bias,
                                      values[index + 1], layer.activate, layer.slope)
                                     for index, layer in tail[1]])
                # kept with the buffer set where the chain reads nothing but its first
                # input and this set's buffers (a standalone activation before it, say,
                # makes a new array every call)
                owned = {id(buffer) for buffer in buffers if buffer is not None}
                if all(array is None or array is x or id(array) in owned
                       for index, _, _ in runs for array in
                       (values[self.ops[index]["inputs"][0]], self._residual(index, values))):
                    buffers.chains[key] = chain
            chain.run(x)
        return step

    def _pooled(self, index, run):
        """``run`` with the op after it, a 2x2 max pool of its output alone, computed in
        its epilogue (``ForwardRunner.pooled``); None where that does not apply."""
        after = index + 1
        if after >= len(self.ops) or len(self.ops[index]["inputs"]) > 1:
            return None
        op = self.ops[after]
        if op["op"] != "max_pool2d" or op["inputs"] != [index + 1] or any(
                index + 1 in other["inputs"] for other in self.ops[after + 1:]):
            return None
        window = pool_kernels.validate_pool2d_args(
            "max_pool2d", run.out_shape, op["kernel_size"], op["stride"], op["padding"],
            op["ceil_mode"])
        pooled = run.pooled() if window[:3] == ((2, 2), (2, 2), (0, 0)) else None
        if pooled is None or pooled.out_shape[1:] != tuple(self.shapes[after + 1][1:]):
            return None
        return pooled

    def _chain_borders(self, index, output, borders):
        """The borders of a chained conv's input, residual and output buffers."""
        inputs = self.ops[index]["inputs"]
        return (borders.get(inputs[0] - 1, (0, 0)),
                borders.get(inputs[1] - 1, (0, 0)) if len(inputs) > 1 else (0, 0),
                borders.get(output, (0, 0)))

    def _borders(self, runs, borders):
        """Add to ``borders`` (buffer index: layout) the outputs of the chain ``runs`` that
        the chain alone reads and that convs of it read in place (``ForwardRunner.
        in_place``), so that those need no padded copy per conv and thread:

        * read only as the input of convs of one stride above 1, all reading in place
          (a ResNet stage's last output, read by the next stage's strided conv and
          shortcut): stored as that stride's phase planes inside a zero border of the
          largest padding, ``(rows, cols, stride_h, stride_w)``, where the planes cover
          the padded image exactly;
        * else, read in place by stride-1 convs: stored inside a zero border of their
          largest padding, ``(rows, cols)``; the chain's other readers read the interior.
        """
        members = {index: run for index, run, _ in runs}
        for index, run, output in runs:
            if output != index:   # a pooled conv writes the pool's output, unbordered
                continue
            readers = [reader for reader, op in enumerate(self.ops) if index + 1 in op["inputs"]]
            if not readers or any(reader not in members for reader in readers):
                continue
            # how each reader can read it in place (None: not as its input)
            layouts = [members[reader].in_place if self.ops[reader]["inputs"][0] == index + 1
                       else None for reader in readers]
            height, width = self.shapes[index + 1][2:]
            strides = {layout[1] for layout in layouts if layout is not None}
            if None not in layouts and len(strides) == 1 and strides != {(1, 1)} and not any(
                    index + 1 in self.ops[reader]["inputs"][1:] for reader in readers):
                (stride_h, stride_w), = strides
                rows = max(padding[0] for padding, _ in layouts)
                cols = max(padding[1] for padding, _ in layouts)
                if (height + 2 * rows) % stride_h == 0 and (width + 2 * cols) % stride_w == 0:
                    borders[index] = (rows, cols, stride_h, stride_w)
                    continue
            paddings = [padding for padding, stride in filter(None, layouts)
                        if stride == (1, 1)]
            border = (max([rows for rows, _ in paddings], default=0),
                      max([cols for _, cols in paddings], default=0))
            if border != (0, 0):
                borders[index] = border

    def _residual(self, index, values):
        inputs = self.ops[index]["inputs"]
        return values[inputs[1]] if len(inputs) > 1 else None

    @staticmethod
    def _single(index, run):
        def step(values, buffers):
            values[index + 1] = run(values, buffers[index])
        return step

    def _program(self, batch):
        """The steps for this batch size: consecutive direct convs as one chain, a 2x2
        max pool after one computed by it; and the borders of the buffers stored with
        one (``_borders``)."""
        program, runs, pooled, borders, done = [], [], False, {}, set()
        for index in range(len(self.ops)):
            if pooled or index in done:      # computed by the conv (chain) before
                pooled = False
                continue
            prepared = self._prepare(index, batch)
            if isinstance(prepared, direct_kernels.ForwardRunner):
                fused = self._pooled(index, prepared)
                pooled = fused is not None
                runs.append((index, fused, index + 1) if pooled else (index, prepared, index))
                continue
            if runs:
                self._borders(runs, borders)
                head = self._head(runs, batch)
                tail = None if head is not None else self._dense_tail(runs, batch)
                program.append(self._chain(runs, borders, head, tail))
                runs = []
                if head is not None:
                    done.update(head[1:])
                    continue
                if tail is not None:
                    done.update(index for index, _ in tail[1])
                    continue
            program.append(self._single(index, prepared))
        if runs:
            self._borders(runs, borders)
            program.append(self._chain(runs, borders))
        return program, borders

    def _buffers(self, batch, borders):
        """A new set of intermediate buffers for this batch size; those with a border
        are zeroed, which the convs writing their interiors keep."""
        buffers = _BufferSet()
        for index, op in enumerate(self.ops):
            if op["op"] in ("conv2d", "linear", "max_pool2d", "adaptive_avg_pool2d"):
                shape = (batch,) + self.shapes[index + 1][1:]
                if index in borders:
                    rows, cols, stride_h, stride_w = (borders[index] + (1, 1))[:4]
                    buffers.append(np.zeros(
                        (batch, stride_h * stride_w * shape[1],
                         (shape[2] + 2 * rows) // stride_h, (shape[3] + 2 * cols) // stride_w),
                        self.dtype))
                else:
                    buffers.append(np.empty(shape, dtype=self.dtype))
            else:
                buffers.append(None)
        return buffers

    def _take(self, batch):
        """The program and a free buffer set for this batch size, made on first use.

        Both are kept for the ``max_shapes`` most recently used batch sizes, under
        one lock taken once per call.
        """
        with self._lock:
            entry = self._shapes.get(batch)
            if entry is not None:
                self._shapes.move_to_end(batch)
                (program, borders), free = entry
                return program, free.pop() if free else self._buffers(batch, borders)
        program = self._program(batch)
        with self._lock:
            program, borders = self._shapes.setdefault(batch, (program, []))[0]
            while len(self._shapes) > self.max_shapes:
                self._shapes.popitem(last=False)
        return program, self._buffers(batch, borders)

    def _release(self, batch, buffers):
        with self._lock:
            entry = self._shapes.get(batch)
            if entry is not None and len(entry[1]) < 16:
                entry[1].append(buffers)

    def run(self, x):
        """Run the plan on ``x (N, C, H, W)``; returns a new ndarray."""
        if not isinstance(x, np.ndarray):
            x = np.asarray(getattr(x, "data", x))
        if x.ndim != 4 or x.shape[1:] != self.input_shape:
            raise ValueError("InferencePlan: expected input (N, %d, %d, %d), got shape %s"
                             % (self.input_shape + (x.shape,)))
        x = np.ascontiguousarray(x, dtype=self.dtype)
        batch = x.shape[0]
        program, buffers = self._take(batch)
        try:
            values = [x] + [None] * len(self.ops)
            for step in program:
                step(values, buffers)
            return np.array(values[-1], copy=True)
        finally:
            self._release(batch, buffers)

    __call__ = run

    def warmup(self):
        """Run once at batch 1 so every kernel is compiled/loaded before the first request."""
        self.run(np.zeros((1,) + self.input_shape, dtype=self.dtype))
        return self

    # ------------------------------------------------------------------- files
    def save(self, path):
        """Write the plan (weights + JSON op list) to one safetensors file, atomically."""
        description = {"format": "fastdl-plan", "version": FORMAT_VERSION,
                       "input_shape": list(self.input_shape), "dtype": str(self.dtype),
                       "ops": self.ops}
        save_file(self.tensors, path, metadata={"fastdl.plan": json.dumps(description)})

    @classmethod
    def load(cls, path, warmup=False, max_bytes=MAX_PLAN_BYTES):
        """Read and validate a plan file; nothing in it is executed or unpickled.

        Every size the file declares is checked before anything is allocated: its
        header (``MAX_PLAN_HEADER_BYTES``), op count (``MAX_OPS``), every int in it
        (``MAX_INT``), the weights against the file's own bytes, and the memory a call
        at batch 1, ``warmup``'s, holds (``call_bytes``) against ``max_bytes``.

        Parameters
        ----------
        path : str or os.PathLike
        warmup : bool
            Run the plan once at batch 1 before returning it.
        max_bytes : int or None
            Refuse a plan whose call at batch 1 would hold more bytes than this
            (default ``MAX_PLAN_BYTES``, 256 MiB); raise it for a trusted larger plan.
            None: no limit.

        Raises
        ------
        ValueError
            A truncated, corrupted or hostile file, an unknown op, tensors whose
            shapes or dtype disagree with the plan, or a plan above the limits.
        """
        if max_bytes is not None and not _int(max_bytes, 1, float("inf")):
            raise TypeError("InferencePlan.load: max_bytes must be a positive int or None, "
                            "got %r" % (max_bytes,))
        tensors, metadata = load_file(path, max_header_bytes=MAX_PLAN_HEADER_BYTES)
        try:
            description = json.loads(metadata["fastdl.plan"])
        except KeyError:
            raise ValueError("%s is not a fastdl inference plan (no plan metadata)" % path) \
                from None
        except ValueError as error:   # JSONDecodeError, or an int of too many digits
            raise ValueError("%s: plan metadata is not JSON (%s)" % (path, error)) from None
        except RecursionError:
            raise ValueError("%s: plan metadata nests too deeply" % path) from None
        if not isinstance(description, dict) or description.get("format") != "fastdl-plan" \
                or not is_int(description.get("version")) \
                or description["version"] != FORMAT_VERSION:
            raise ValueError("%s: not a fastdl plan of format version %d" % (path,
                                                                             FORMAT_VERSION))
        input_shape = _ints(description.get("input_shape"), 3, "input_shape", 1)
        ops = description.get("ops")
        if isinstance(ops, list) and len(ops) > MAX_OPS:
            _fail("%d ops, more than MAX_OPS=%d" % (len(ops), MAX_OPS))
        try:
            plan = cls(ops, tensors, input_shape, max_bytes=max_bytes)
        except (TypeError, KeyError, IndexError, AttributeError, OverflowError,
                ZeroDivisionError, RecursionError) as error:
            # the checks above should leave nothing to get here: a last line
            _fail("%s (%s)" % (error, type(error).__name__))
        if str(plan.dtype) != description.get("dtype"):
            _fail("dtype %r in the header, %s in the tensors" % (description.get("dtype"),
                                                                  plan.dtype))
        return plan.warmup() if warmup else plan
