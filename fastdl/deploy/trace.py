"""The trace front end: an eval-mode forward of a model, recorded as an op graph.

``trace(model, example)`` runs ``model(example)`` once in eval mode (grad mode on, the
input a non-leaf that requires a gradient, so in-place updates such as ``out +=
shortcut`` are recorded as new values) while ``fastdl.autograd`` tells it of every op
``Function.apply`` runs. Each op becomes one or more ``Node``s of the graph, whatever
module or Python code called it; a value is known by its ndarray (an in-place update
rebinds a Tensor to a new array while grad mode records). What each op records is
``_trace_ops``'s table:

==========================  ==================================================
node kind                   recorded from
==========================  ==================================================
conv2d, conv_transpose2d    F.conv2d / F.conv_transpose2d (the layers; weights
                            and bias from the model's parameters)
batch_norm                  F.batch_norm in eval mode (running statistics), and
                            an instance norm with running statistics
linear                      F.linear
activation                  relu (F.relu, Tensor.relu, clamp(min=0)), leaky_relu,
                            sigmoid, tanh, the elementwise activations (relu6,
                            hardtanh, clamp(lo, hi), hardsigmoid, hardswish, silu,
                            mish, gelu, elu / selu, softplus)
prelu, pad2d                F.prelu (a parameter weight), F.pad (4-D, >= 0)
max_pool2d, avg_pool2d,     F.max_pool2d (dilation 1), F.avg_pool2d (no divisor
adaptive_avg_pool2d         override), F.adaptive_avg_pool2d, and a mean over
                            (2, 3) (then a flatten unless keepdim)
flatten, reshape            a reshape / view / flatten / squeeze that keeps the
                            batch axis (flatten: to (N, -1), or merging the
                            trailing dims)
transpose                   permute / transpose keeping the batch axis first
slice                       basic indexing that keeps the whole batch (slices
                            with a positive step; an int index or None then a
                            reshape), chunk, split, narrow
concat                      torch.cat along an axis after the batch
binary                      + - * / of two values (broadcasting after the batch),
                            or of a value and a number or a parameter / buffer;
                            -x (times -1)
expand                      Tensor.expand keeping the batch axis
resize                      F.interpolate (nearest, nearest-exact, bilinear,
                            bicubic) of a 4-D input; nn.Upsample
softmax                     softmax / log_softmax along an axis after the batch
group_norm, layer_norm      F.group_norm, F.layer_norm, and an instance norm
                            without running statistics (groups = channels)
(none)                      clone / contiguous, dropout in eval (the same value)
unsupported                 anything else (kept to be named where it is used)
==========================  ==================================================

Nothing here decides what a plan can run: ``graph_lowering`` lowers the graph, and
refuses what it cannot. Weights are read from the model's parameters and buffers
alone; a tensor that is neither one of them nor computed from the input by the traced
ops is refused where an op uses it. An op whose output does not keep the batch on its
axis 0 (a reduction over it, a reshape that merges it) is unsupported.

The forward may return one Tensor (a plan with one output) or a tuple or list of
Tensors (a plan with ``outputs``, returning a tuple). A dict is refused: a plan's
outputs are positional, and keys would be lost silently.
"""
import threading

import numpy as np

from fastdl import autograd
from fastdl.autograd import Tensor
from fastdl.deploy import _trace_ops
from fastdl.deploy._trace_ops import Unsupported
from fastdl.grad_mode import enable_grad

INPUT = -1            # the graph input's value reference; node i's output is value i
_LOCK = threading.Lock()


class Node:
    """One traced op: ``kind``; ``inputs``, the value references it reads (computed
    values only); ``attributes`` (ints, pairs, flags); ``arrays`` (role: ndarray, from the
    model's parameters and buffers, or a number the forward used); ``names`` (role: the
    parameter's or buffer's name); ``where``, the path and class of the innermost module
    that ran it, and ``modules``, the (path, class name) of every module running it,
    outermost first; ``shape``, its output's shape after the batch axis."""

    __slots__ = ("kind", "inputs", "attributes", "arrays", "names", "where", "modules",
                 "shape")

    def __init__(self, kind, inputs, attributes, arrays, names, modules, shape):
        self.kind, self.inputs, self.attributes = kind, list(inputs), attributes
        self.arrays, self.names, self.modules = arrays, names, tuple(modules)
        self.where = describe(self.modules[-1] if self.modules else None)
        self.shape = tuple(shape)

    def signature(self):
        """What the node does, without its weights' values: equal for equal graphs (an
        unsupported op's reason, which may quote sizes, left out)."""
        return (self.kind, tuple(self.inputs), tuple(sorted(
            (key, repr(value)) for key, value in self.attributes.items()
            if key != "reason")), tuple(sorted(self.names.items())), self.where, self.shape)


def describe(module):
    """Where an op ran: ``module``'s (path, class name), or None (the model's forward
    outside any module)."""
    if module is None:
        return "the model's forward"
    path, kind = module
    return "module %r (%s)" % (path or "model", kind)


class Graph:
    """The traced op graph: ``nodes``; ``outputs``, the value references the forward
    returns; ``several``, whether it returns them as a tuple or list (else one Tensor);
    ``input_shape`` (the example's, after the batch); ``results`` (the forward's outputs,
    ndarrays, one per entry of ``outputs``)."""

    def __init__(self, nodes, outputs, several, input_shape, results):
        self.nodes, self.outputs, self.several = nodes, list(outputs), bool(several)
        self.input_shape, self.results = input_shape, list(results)

    def signature(self):
        return [node.signature() for node in self.nodes] + [
            ("outputs", tuple(self.outputs), self.several)]


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
        self.batch = example.shape[0]
        self.output_shape = None  # the shape of the op being recorded's (first) output

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

    def add(self, kind, inputs, attributes=None, arrays=None, names=None, shape=None):
        """Append a node (its output shape after the batch: ``shape``, else the recorded
        op's output's); returns its reference."""
        self.nodes.append(Node(kind, inputs, attributes or {}, arrays or {}, names or {},
                               self.stack, self.output_shape if shape is None else shape))
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
        out = outputs[0]._data
        self.output_shape = np.shape(out)[1:]
        try:
            if np.ndim(out) == 0 or out.shape[0] != self.batch:
                raise Unsupported("its output of shape %s does not keep the batch (%d) on "
                                  "its axis 0" % (np.shape(out), self.batch))
            if kwargs:
                raise Unsupported("called with keywords %s" % sorted(kwargs))
            ref = _trace_ops.node(self, function, args, outputs)
        except Unsupported as reason:
            ref = self.add("unsupported", values, {"op": function.__name__,
                                                   "reason": str(reason)})
        self.bind(outputs[0], ref)
        for index, extra in enumerate(outputs[1:], 1):
            self.output_shape = np.shape(extra._data)[1:]
            self.bind(extra, self.add("unsupported", [ref], {
                "op": "%s (output %d)" % (function.__name__, index), "reason": ""}))

    def value(self, arg):
        """The reference of a computed value argument; Unsupported for anything else."""
        found = self.ref(arg) if isinstance(arg, Tensor) else ("unknown",)
        if found[0] != "value":
            raise Unsupported("its input is not computed from the model's input")
        return found[1]

    def weight(self, arg, role, arrays, names, required=True):
        """Put the parameter or buffer ``arg`` into ``arrays``/``names`` as ``role``."""
        if arg is None or (isinstance(arg, Tensor) and arg._data is None):
            if required:
                raise Unsupported("it has no %s" % role)
            return
        found = self.ref(arg)
        if found[0] != "constant":
            raise Unsupported("its %s is %s" % (role, "computed from the input" if
                                                found[0] == "value" else
                                                "not a parameter or buffer of the model"))
        names[role], arrays[role] = found[1], found[2]


def _model_name(model):
    return "%s (%s)" % ("model", type(model).__name__)


def _outputs(recorder, output, name):
    """(refs, several) of the forward's ``output``: one Tensor, or a tuple / list of
    them."""
    several = isinstance(output, (tuple, list))
    if isinstance(output, dict):
        raise ValueError("deploy.compile: the forward of %s returns a dict; a plan's outputs "
                         "are positional: return a tuple or list of Tensors (e.g. "
                         "tuple(outputs.values()), in a known order) to compile it" % name)
    items = list(output) if several else [output]
    if several and not items:
        raise ValueError("deploy.compile: the forward of %s returns an empty %s"
                         % (name, type(output).__name__))
    refs = []
    for index, item in enumerate(items):
        what = "its output %d" % index if several else "it"
        if not isinstance(item, Tensor):
            raise ValueError("deploy.compile: the forward of %s returns %s, not a Tensor "
                             "or a tuple or list of Tensors (%s is a %s)"
                             % (name, type(output).__name__, what, type(item).__name__))
        found = recorder.ref(item)
        if found[0] != "value":
            raise ValueError("deploy.compile: %s of %s is %s, not computed from its input by "
                             "ops the trace sees" % (
                                 "the output" if not several else "output %d" % index, name,
                                 "a parameter or buffer" if found[0] == "constant" else
                                 "a tensor made outside fastdl's ops (e.g. from a NumPy "
                                 "array)"))
        refs.append(found[1])
    return refs, several, items


def trace(model, example):
    """The ``Graph`` of ``model``'s eval-mode forward on ``example`` (an ndarray).

    The mode of the model and of each of its modules is left as it was. Raises
    ValueError where the forward does not return one Tensor, or a tuple or list of
    Tensors, computed from its input, or where the forward itself raises.
    """
    example = np.ascontiguousarray(example)
    name = _model_name(model)
    with _LOCK:
        modes = [(module, module.training) for module in model.modules()]
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
            for module, training in modes:   # each its own (a container's may differ)
                module.training = training
    refs, several, items = _outputs(recorder, output, name)
    return Graph(recorder.nodes, refs, several, example.shape[1:],
                 [np.array(item._data, copy=True) for item in items])


__all__ = ["Graph", "INPUT", "Node", "describe", "trace"]
