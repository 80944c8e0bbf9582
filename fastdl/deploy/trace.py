"""The trace front end: an eval-mode forward of a model, recorded as an op graph.

``trace(model, example)`` runs ``model(example)`` once in eval mode (grad mode on, the
input a non-leaf that requires a gradient, so in-place updates such as ``out +=
shortcut`` are recorded as new values) while ``fastdl.autograd`` tells it of every op
``Function.apply`` runs. Each op becomes a ``Node`` of the graph, whatever module or
Python code called it; a value is known by its ndarray (an in-place update rebinds a
Tensor to a new array while grad mode records):

==========================  ==================================================
node kind                   recorded from
==========================  ==================================================
conv2d, conv_transpose2d    F.conv2d / F.conv_transpose2d (the layers; weights
                            and bias from the model's parameters)
batch_norm                  F.batch_norm in eval mode (running statistics)
linear                      F.linear
activation                  relu (F.relu, Tensor.relu, clamp(min=0)), leaky_relu,
                            sigmoid, tanh
max_pool2d, avg_pool2d,     F.max_pool2d (dilation 1), F.avg_pool2d (no divisor
adaptive_avg_pool2d         override), F.adaptive_avg_pool2d
flatten                     a reshape / view / flatten that keeps the leading dims
                            and merges the rest
add                         the sum of two computed values (``+``, ``+=``)
unsupported                 anything else (kept to be named where it is used)
==========================  ==================================================

Nothing here decides what a plan can run: ``graph_lowering`` lowers the graph, and
refuses what it cannot. Weights are read from the model's parameters and buffers
alone; a tensor that is neither one of them nor computed from the input by the traced
ops is refused where an op uses it.
"""
import threading

import numpy as np

from fastdl import autograd, tensor_math, tensor_ops, tensor_shape
from fastdl.autograd import Tensor
from fastdl.functional import activation as activation_functions
from fastdl.functional.conv import Conv2d, ConvTranspose2d
from fastdl.functional.linear import Linear
from fastdl.functional.normalization import BatchNorm
from fastdl.functional.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from fastdl.grad_mode import enable_grad
from fastdl.kernels import activation as activation_kernels, pool as pool_kernels

INPUT = -1            # the graph input's value reference; node i's output is value i
_LOCK = threading.Lock()


class Node:
    """One traced op: ``kind``; ``inputs``, the value references it reads (computed
    values only); ``attributes`` (ints, pairs, flags); ``arrays`` (role: ndarray, from the
    model's parameters and buffers); ``names`` (role: the parameter's or buffer's name);
    ``where``, the path and class of the innermost module that ran it."""

    __slots__ = ("kind", "inputs", "attributes", "arrays", "names", "where")

    def __init__(self, kind, inputs, attributes, arrays, names, where):
        self.kind, self.inputs, self.attributes = kind, list(inputs), attributes
        self.arrays, self.names, self.where = arrays, names, where

    def signature(self):
        """What the node does, without its weights' values: equal for equal graphs."""
        return (self.kind, tuple(self.inputs), tuple(sorted(
            (key, repr(value)) for key, value in self.attributes.items())),
            tuple(sorted(self.names.items())), self.where)


class Graph:
    """The traced op graph: ``nodes``, ``output`` (a value reference), ``input_shape``
    (the example's), ``result`` (the forward's output, an ndarray)."""

    def __init__(self, nodes, output, input_shape, result):
        self.nodes, self.output = nodes, output
        self.input_shape, self.result = input_shape, result

    def signature(self):
        return [node.signature() for node in self.nodes] + [("output", self.output)]


def _pair(value):
    return [int(value), int(value)] if np.ndim(value) == 0 else [int(v) for v in value]


class _Recorder:
    """Turns the ops ``Function.apply`` reports into nodes."""

    def __init__(self, model, example):
        self.thread = threading.get_ident()
        self.nodes, self.values, self.keep = [], {}, []
        self.constants = {}     # id(array): (name, array) of the model's parameters, buffers
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            array = getattr(tensor, "array", tensor)
            if isinstance(array, np.ndarray):
                self.constants[id(array)] = (name, array)
        self.stack = []          # (path, class name) of the modules running
        self.example = example

    # ------------------------------------------------------------ where
    def where(self):
        if not self.stack:
            return "the model's forward"
        path, kind = self.stack[-1]
        return "module %r (%s)" % (path or "model", kind)

    def hooks(self, model):
        handles = []
        for path, module in model.named_modules():
            def enter(module, args, path=path):
                self.stack.append((path, type(module).__name__))

            def leave(module, args, output):
                if self.stack:
                    self.stack.pop()
            handles.append(module.register_forward_pre_hook(enter))
            handles.append(module.register_forward_hook(leave))
        return handles

    # ------------------------------------------------------------ values
    def ref(self, tensor):
        """('value', ref), ('constant', name, array) or ('unknown',) of a Tensor or
        ndarray argument."""
        array = tensor._data if isinstance(tensor, Tensor) else tensor
        if id(array) in self.values:
            return ("value", self.values[id(array)])
        if id(array) in self.constants:
            return ("constant",) + self.constants[id(array)]
        return ("unknown",)

    def add(self, kind, inputs, attributes=None, arrays=None, names=None):
        self.nodes.append(Node(kind, inputs, attributes or {}, arrays or {}, names or {},
                               self.where()))
        return len(self.nodes) - 1

    def bind(self, tensor, ref):
        self.keep.append(tensor._data)     # alive while tracing: ids are not reused
        self.values[id(tensor._data)] = ref

    # ------------------------------------------------------------ the hook
    def __call__(self, function, args, kwargs, result):
        if threading.get_ident() != self.thread:
            return
        outputs = result if isinstance(result, tuple) else (result,)
        refs = [self.ref(a) for a in args if isinstance(a, Tensor)]
        values = [r[1] for r in refs if r[0] == "value"]
        if not values:        # an op on constants or on tensors made outside the trace
            return
        try:
            ref = self.node(function, args, kwargs, outputs)
        except _Unsupported as reason:
            ref = self.add("unsupported", values, {"op": function.__name__,
                                                   "reason": str(reason)})
        self.bind(outputs[0], ref)
        for index, extra in enumerate(outputs[1:], 1):
            self.bind(extra, self.add("unsupported", [ref], {
                "op": "%s (output %d)" % (function.__name__, index), "reason": ""}))

    def value(self, arg):
        found = self.ref(arg)
        if found[0] != "value":
            raise _Unsupported("its input is not computed from the model's input")
        return found[1]

    def weight(self, arg, role, arrays, names, required=True):
        if arg is None or (isinstance(arg, Tensor) and arg._data is None):
            if required:
                raise _Unsupported("it has no %s" % role)
            return
        found = self.ref(arg)
        if found[0] != "constant":
            raise _Unsupported("its %s is %s" % (role, "computed from the input" if
                                                 found[0] == "value" else
                                                 "not a parameter or buffer of the model"))
        names[role], arrays[role] = found[1], found[2]

    def node(self, function, args, kwargs, outputs):
        """The node of one op (its reference); _Unsupported where it is none of ours."""
        if kwargs:
            raise _Unsupported("called with keywords %s" % sorted(kwargs))
        out = outputs[0]._data
        arrays, names = {}, {}
        if function is Conv2d or function is ConvTranspose2d:
            x = self.value(args[0])
            self.weight(args[1], "weight", arrays, names)
            self.weight(args[2], "bias", arrays, names, required=False)
            if function is Conv2d:
                stride, padding, dilation, groups = args[3:7]
                relu = len(args) > 7 and bool(args[7])
                attributes = dict(stride=_pair(stride), padding=_pair(padding),
                                  dilation=_pair(dilation), groups=int(groups))
                ref = self.add("conv2d", [x], attributes, arrays, names)
                if relu:
                    self.bind(outputs[0], ref)
                    ref = self.add("activation", [ref], dict(kind="relu",
                                                             negative_slope=0.0))
                return ref
            stride, padding, output_padding, groups, dilation = args[3:8]
            return self.add("conv_transpose2d", [x], dict(
                stride=_pair(stride), padding=_pair(padding), dilation=_pair(dilation),
                groups=int(groups), output_padding=_pair(output_padding)), arrays, names)
        if function is BatchNorm:
            x = self.value(args[0])
            running_mean, running_var, training, _, eps = args[3:8]
            if training or running_mean is None:
                raise _Unsupported("batch_norm normalises with the batch's statistics "
                                   "(training mode, or no running statistics)")
            self.weight(args[1], "weight", arrays, names, required=False)
            self.weight(args[2], "bias", arrays, names, required=False)
            self.weight(running_mean, "running_mean", arrays, names)
            self.weight(running_var, "running_var", arrays, names)
            return self.add("batch_norm", [x], dict(eps=float(eps)), arrays, names)
        if function is Linear:
            x = self.value(args[0])
            self.weight(args[1], "weight", arrays, names)
            self.weight(args[2], "bias", arrays, names, required=False)
            return self.add("linear", [x], {}, arrays, names)
        kind = self.activation_kind(function, args)
        if kind is not None:
            slope = float(args[1]) if kind == "leaky_relu" else 0.0
            return self.add("activation", [self.value(args[0])],
                            dict(kind=kind, negative_slope=slope))
        if function is MaxPool2d:
            if args[1] is not pool_kernels.max_pool2d_forward:
                raise _Unsupported("only max pooling with dilation 1 is supported")
            kernel, stride, padding, ceil_mode = args[2]
            return self.add("max_pool2d", [self.value(args[0])], dict(
                kernel_size=_pair(kernel), stride=_pair(kernel if stride is None or
                                                        stride == [] else stride),
                padding=_pair(padding), ceil_mode=bool(ceil_mode)))
        if function is AvgPool2d:
            kernel, stride, padding, ceil_mode, include, divisor = args[1:7]
            if divisor is not None:
                raise _Unsupported("divisor_override is not supported")
            return self.add("avg_pool2d", [self.value(args[0])], dict(
                kernel_size=_pair(kernel), stride=_pair(kernel if stride is None or
                                                        stride == [] else stride),
                padding=_pair(padding), ceil_mode=bool(ceil_mode),
                count_include_pad=bool(include)))
        if function is AdaptiveAvgPool2d:
            if out.ndim != 4:
                raise _Unsupported("only 4-D inputs are supported")
            return self.add("adaptive_avg_pool2d", [self.value(args[0])],
                            dict(output_size=[int(n) for n in out.shape[2:]]))
        if function is tensor_shape.Reshape:
            before, after = np.shape(args[0]._data), out.shape
            start = len(after) - 1
            if start < 1 or before[:start] != after[:start]:
                raise _Unsupported("only a reshape that keeps the leading (batch) dims and "
                                   "merges the rest (a flatten) is supported; %s -> %s"
                                   % (tuple(before), tuple(after)))
            return self.add("flatten", [self.value(args[0])], dict(start_dim=start))
        if function is tensor_ops.Add:
            found = [self.ref(a) if isinstance(a, Tensor) else ("number",) for a in args]
            if len(args) != 2 or any(f[0] != "value" for f in found):
                raise _Unsupported("only the sum of two values computed from the input (a "
                                   "residual) is supported, not the sum with a constant")
            if np.shape(args[0]._data) != np.shape(args[1]._data):
                raise _Unsupported("the two values have shapes %s and %s (a broadcast)"
                                   % (np.shape(args[0]._data), np.shape(args[1]._data)))
            return self.add("add", [found[0][1], found[1][1]])
        raise _Unsupported("")

    @staticmethod
    def activation_kind(function, args):
        if function is activation_functions.ReLU:
            return "relu"
        if function is activation_functions.Sigmoid:
            return "sigmoid"
        if function is activation_functions.Tanh:
            return "tanh"
        if function is activation_functions.LeakyReLU:
            return "leaky_relu"
        if function is tensor_math.Clamp and len(args) == 3 and args[2] is None and \
                np.ndim(args[1]) == 0 and args[1] == 0:
            return "relu"
        if function is tensor_math.FromOutput and len(args) == 3:
            if args[1] is activation_kernels.sigmoid_forward:
                return "sigmoid"
            if args[1] is activation_kernels.tanh_forward:
                return "tanh"
        return None


class _Unsupported(Exception):
    """An op the graph has no node for (the reason)."""


def trace(model, example):
    """The ``Graph`` of ``model``'s eval-mode forward on ``example`` (an ndarray).

    The model's mode is left as it was. Raises ValueError where the forward does not
    return one Tensor computed from its input, or where the forward itself raises.
    """
    example = np.ascontiguousarray(example)
    name = "%s (%s)" % ("model", type(model).__name__)
    with _LOCK:
        was_training = model.training
        model.eval()
        recorder = _Recorder(model, example)
        handles = recorder.hooks(model)
        try:
            with enable_grad():
                source = Tensor(example.copy(), requires_grad=True)
                x = source + 0.0          # a non-leaf: in-place updates on it are recorded
                recorder.bind(x, INPUT)
                autograd._tracer = recorder
                try:
                    output = model(x)
                finally:
                    autograd._tracer = None
        except RuntimeError as error:
            raise ValueError("deploy.compile: tracing the forward of %s raised: %s"
                             % (name, error)) from error
        finally:
            for handle in handles:
                handle.remove()
            model.train(was_training)
    if not isinstance(output, Tensor):
        kind = type(output).__name__
        raise ValueError("deploy.compile: the forward of %s returns %s, not one Tensor: a "
                         "plan has one output (several outputs, or a non-Tensor result, "
                         "cannot be compiled)" % (name, kind if not isinstance(
                             output, (tuple, list, dict)) else "a %s of %d values"
                             % (kind, len(output))))
    found = recorder.ref(output)
    if found[0] != "value":
        raise ValueError("deploy.compile: the output of %s is %s, not computed from its "
                         "input by ops the trace sees" % (
                             name, "a parameter or buffer" if found[0] == "constant" else
                             "a tensor made outside fastdl's ops (e.g. from a NumPy array)"))
    return Graph(recorder.nodes, found[1], example.shape[1:],
                 np.array(output._data, copy=True))


__all__ = ["Graph", "INPUT", "Node", "trace"]
