"""Turn an eval-mode model into a flat list of ops over named weights (an op graph).

Every module class the compiler supports has a lowering registered for it
(``register_lowering``): ``lower(builder, path, module, value, following)`` emits the
module's ops through ``builder`` and returns the id of the value it outputs. Dispatch is
by class object, never by class name or attributes: a module is lowered by the lowering
of the nearest registered class in its MRO, and only while it keeps that class's
``forward`` (a subclass that computes something else is refused; a user's class that
only shares a name with one of fastdl's is not mistaken for it). ``following`` holds
the modules after it in a Sequential: a convolution or linear layer takes the
BatchNorm after it into its weights and the ReLU / LeakyReLU after that into its
epilogue (``Following.take``), and a residual block's add goes into its second
convolution's epilogue. A module without a lowering raises a ValueError naming its path
and its class with the module it comes from, and a layer option a plan cannot run (a
dilated max pool, an AvgPool2d divisor_override, ...) one naming the module, its class
and the option — never a silently wrong plan. So does a forward hook or pre-hook on any
module of the model (``Module.has_forward_hooks``): it could change what a call returns.

The builder knows the shape of every value it emits (at batch 1, from the example
input), so a lowering can resolve what depends on it: the None entries of an adaptive
pool's output size, the dims a Flatten spans.

The ops are those of ``_opgraph``: ``{"op": name, "inputs": [value ids], "output": id,
...attrs, "weights": {role: tensor name}}``; value 0 is the plan's input.
"""
import numpy as np

from fastdl import nn
from fastdl.deploy._opgraph import infer
from fastdl.deploy.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights
from fastdl.functional.elementwise import SELU_ALPHA, SELU_SCALE
from fastdl.models.resnet import ResNet

# registered class: lower(builder, path, module, value, following) -> value id
_LOWERINGS = {}


def register_lowering(*classes):
    """Register the decorated ``lower(builder, path, module, value, following) -> value``
    as the lowering of ``classes`` (and of their subclasses that keep their forward)."""
    def register(lower):
        for cls in classes:
            _LOWERINGS[cls] = lower
        return lower
    return register


def _keeps(kind, cls):
    """Whether class ``kind`` computes what ``cls`` does: it keeps ``cls``'s forward and
    the function that forward calls (``_function``: CELU is an ELU calling another)."""
    return kind.forward is cls.forward and getattr(kind, "_function", None) is getattr(
        cls, "_function", None)


def _lowering_class(module):
    """The registered class whose lowering compiles ``module`` (the nearest in its MRO),
    or None: none is registered, or ``module`` overrides that class's forward."""
    for cls in type(module).__mro__:
        if cls in _LOWERINGS:
            return cls if _keeps(type(module), cls) else None
    return None


def lowers(module):
    """Whether a registered lowering compiles ``module`` (``deploy.compile`` traces the
    forward of any other module instead)."""
    return _lowering_class(module) is not None


def _is(module, cls):
    """Whether ``module`` is a ``cls`` that keeps its forward."""
    return isinstance(module, cls) and _keeps(type(module), cls)


def _join(parent, child):
    return child if not parent else "%s.%s" % (parent, child)


class NoLowering(ValueError):
    """A module inside the model has no registered lowering (``deploy.compile`` then
    tries a trace of the whole model's forward)."""


def _unsupported(path, module, reason=None):
    kind = type(module)
    registered = next((cls for cls in kind.__mro__ if cls in _LOWERINGS), None)
    error = NoLowering if reason is None and registered is None else ValueError
    if reason is None:
        reason = ("no lowering is registered for it" if registered is None else
                  "it overrides the %s of %s.%s, which that class's lowering compiles"
                  % ("forward" if kind.forward is not registered.forward else
                     "function (_function) the forward calls", registered.__module__,
                     registered.__qualname__))
    raise error("deploy.compile: cannot compile module %r (%s) of class %s.%s: %s; "
                     "supported are Sequential, BasicBlock, ResNet and the layers of "
                     "fastdl.nn" % (path or "model", kind.__name__, kind.__module__,
                                    kind.__qualname__, reason))


def refuse(path, module, option, reason):
    """Raise the ValueError of a layer option a plan cannot run: ``option`` (as the layer
    is built, ``"dilation=2"``) of ``module`` at ``path``, and why."""
    kind = type(module)
    raise ValueError("deploy.compile: cannot compile module %r (%s.%s): %s is not supported: "
                     "%s" % (path or "model", kind.__module__, kind.__qualname__, option,
                             reason))


class Following:
    """The modules after one in a Sequential, which its lowering may fold into its ops."""

    def __init__(self, modules=()):
        self._modules, self.taken = list(modules), 0

    def take(self, *classes):
        """The next module, consumed, where it is one of ``classes`` (keeping its forward);
        else None."""
        if self.taken < len(self._modules) and any(
                _is(self._modules[self.taken], cls) for cls in classes):
            self.taken += 1
            return self._modules[self.taken - 1]
        return None


class Builder:
    """The ops and the weights emitted so far, and the shape of every value at batch 1
    (``shape``) from the input's ``(C, H, W)``."""

    def __init__(self, input_shape):
        self.ops, self.tensors, self.next_id = [], {}, 1
        self.shapes = {0: (1,) + tuple(int(n) for n in input_shape)}
        self._where = ("", None)   # the module being lowered, for errors

    def shape(self, value):
        """Value ``value``'s shape at batch 1."""
        return self.shapes[value]

    def weight(self, prefix, role, array):
        name = "%s.%s" % (prefix, role)
        self.tensors[name] = np.ascontiguousarray(array)
        return name

    def emit(self, op, inputs, **attributes):
        output = self.next_id
        entry = dict(op=op, inputs=list(inputs), output=output, **attributes)
        try:
            shape = infer(entry, output - 1, self.shapes, self.tensors)
        except ValueError as error:   # the model would fail on this input too
            path, module = self._where
            raise ValueError("deploy.compile: module %r (%s) does not fit its input %s: %s"
                             % (path or "model", type(module).__name__,
                                self.shapes[entry["inputs"][0]], error)) from None
        self.next_id += 1
        self.ops.append(entry)
        self.shapes[output] = shape
        return output

    def lower(self, path, module, value, following=None):
        """Emit the ops of ``module`` (at ``path``) on value ``value``; its output's id."""
        cls = _lowering_class(module)
        if cls is None:
            _unsupported(path, module)
        where, self._where = self._where, (path, module)
        try:
            return _LOWERINGS[cls](self, path, module, value,
                                   Following() if following is None else following)
        finally:
            self._where = where

    def sequence(self, parent, children, value):
        """Emit ``children`` ((name, module) pairs) in order, each one's output the next
        one's input; a lowering may fold the modules after it into its ops."""
        children = list(children)
        index = 0
        while index < len(children):
            name, module = children[index]
            following = Following(module for _, module in children[index + 1:])
            value = self.lower(_join(parent, name), module, value, following)
            index += 1 + following.taken
        return value


def _refuse_hooks(model):
    for path, module in model.named_modules():
        if module.has_forward_hooks():
            kind = type(module)
            raise ValueError("deploy.compile: cannot compile module %r (%s.%s): it has a "
                             "forward hook or pre-hook, which could change what it returns "
                             "and which a plan would not run; remove it (its handle's "
                             "remove()) before compiling"
                             % (path or "model", kind.__module__, kind.__qualname__))


def build_graph(model, input_shape):
    """(ops, tensors) of ``model`` in eval mode, for inputs of ``input_shape`` (C, H,
    W); the model's own mode is left as it was."""
    _refuse_hooks(model)
    was_training = model.training
    model.eval()
    try:
        builder = Builder(input_shape)
        output = builder.lower("", model, 0)
    finally:
        model.train(was_training)
    if not builder.ops or builder.ops[-1]["output"] != output:
        builder.emit("activation", [output], kind="identity", negative_slope=0.0)
    return builder.ops, builder.tensors


# ------------------------------------------------------------------ the lowerings

def _bn_arrays(bn):
    if bn.running_mean is None:
        raise ValueError("deploy.compile: %r has no running statistics (track_running_stats="
                         "False); it cannot be folded for inference" % (bn,))
    weight = None if bn.weight is None else bn.weight.array
    bias = None if bn.bias is None else bn.bias.array
    return bn.running_mean, bn.running_var, bn.eps, weight, bias


def _take_activation(following):
    """The negative slope of a ReLU (0) or LeakyReLU next in ``following``, taken to run
    in the layer's epilogue; None where there is none."""
    activation = following.take(nn.ReLU, nn.LeakyReLU)
    if activation is None:
        return None
    return 0.0 if isinstance(activation, nn.ReLU) else float(activation.negative_slope)


_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate",
              "circular": "circular"}


def _padding(builder, name, conv, value):
    """The conv's input and padding ([rows, cols], zeros on both sides): a ``pad2d`` op
    first where the padding is not zeros (``padding_mode``) or pads one side more than
    the other (an even ``padding='same'``), as the layer pads its input."""
    mode = conv.padding_mode
    if mode not in _PAD_MODES:
        refuse(name, conv, "padding_mode=%r" % (mode,), "a plan pads with zeros, "
               "reflect, replicate or circular")
    if conv.padding == "valid":
        pairs = [(0, 0), (0, 0)]
    elif conv.padding == "same":
        spans = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
        pairs = [(span // 2, span - span // 2) for span in spans]
    else:
        pairs = [(p, p) for p in conv.padding]
    if mode == "zeros" and all(before == after for before, after in pairs):
        return value, [before for before, _ in pairs]
    value = builder.emit("pad2d", [value], mode=_PAD_MODES[mode],
                         padding=[n for pair in pairs for n in pair])
    return value, [0, 0]


def _conv(builder, name, conv, value, bn=None, slope=None, residual=None):
    weight = conv.weight.array
    bias = None if conv.bias is None else conv.bias.array
    transposed = isinstance(conv, nn.ConvTranspose2d)
    if bn is not None:
        weight, bias = fuse_conv_bn_weights(weight, bias, *_bn_arrays(bn),
                                            transposed=transposed, groups=conv.groups)
    if transposed:
        if residual is not None or slope is not None:
            raise ValueError("deploy.compile: no fused epilogue on transposed convolutions")
        if conv.padding_mode != "zeros":   # the layer refuses it too
            refuse(name, conv, "padding_mode=%r" % (conv.padding_mode,),
                   "a transposed convolution pads with zeros")
        padding = list(conv.padding)
    else:
        value, padding = _padding(builder, name, conv, value)
    weights = {"weight": builder.weight(name, "weight", weight)}
    if bias is not None:
        weights["bias"] = builder.weight(name, "bias", bias)
    attributes = dict(stride=list(conv.stride), padding=padding,
                      dilation=list(conv.dilation), groups=conv.groups, weights=weights)
    if transposed:
        return builder.emit("conv_transpose2d", [value],
                            output_padding=list(conv.output_padding), **attributes)
    inputs = [value] if residual is None else [value, residual]
    return builder.emit("conv2d", inputs, negative_slope=slope, **attributes)


@register_lowering(nn.Conv2d, nn.ConvTranspose2d)
def _lower_conv(builder, path, conv, value, following):
    bn = following.take(nn.BatchNorm2d)
    slope = None if isinstance(conv, nn.ConvTranspose2d) else _take_activation(following)
    return _conv(builder, path, conv, value, bn, slope)


@register_lowering(nn.Linear)
def _lower_linear(builder, path, linear, value, following):
    bn = following.take(nn.BatchNorm1d)
    weight = linear.weight.array
    bias = None if linear.bias is None else linear.bias.array
    if bn is not None:
        weight, bias = fuse_linear_bn_weights(weight, bias, *_bn_arrays(bn))
    slope = _take_activation(following)
    weights = {"weight": builder.weight(path, "weight", weight)}
    if bias is not None:
        weights["bias"] = builder.weight(path, "bias", bias)
    return builder.emit("linear", [value], negative_slope=slope, weights=weights)


@register_lowering(nn.Sequential)
def _lower_sequential(builder, path, sequential, value, following):
    return builder.sequence(path, sequential.named_children(), value)


@register_lowering(ResNet)
def _lower_resnet(builder, path, resnet, value, following):
    # ResNet.forward runs these children in this order, as a Sequential of them would
    names = ("stem", "layer1", "layer2", "layer3", "pool", "flatten", "fc")
    return builder.sequence(path, [(name, getattr(resnet, name)) for name in names], value)


def _part(path, module, cls, owner):
    """``module``, a part of ``owner`` at ``path``, checked to be a ``cls`` that keeps its
    forward."""
    if not _is(module, cls):
        _unsupported(path, module, "%s expects a %s there" % (owner, cls.__name__))
    return module


@register_lowering(nn.BasicBlock)
def _lower_basic_block(builder, path, block, value, following):
    parts = {name: _part(_join(path, name), getattr(block, name), kind, "BasicBlock")
             for name, kind in (("conv1", nn.Conv2d), ("bn1", nn.BatchNorm2d),
                                ("conv2", nn.Conv2d), ("bn2", nn.BatchNorm2d))}
    hidden = _conv(builder, _join(path, "conv1"), parts["conv1"], value, parts["bn1"], 0.0)
    identity = value
    if block.shortcut is not None:
        # a 1x1 conv and a BN (``BasicBlock.__init__``)
        where = _join(path, "shortcut")
        shortcut = _part(where, block.shortcut, nn.Sequential, "BasicBlock")
        if len(shortcut) != 2:
            _unsupported(where, shortcut, "BasicBlock expects a conv and a BatchNorm2d there")
        conv = _part(_join(where, "0"), shortcut[0], nn.Conv2d, "BasicBlock")
        bn = _part(_join(where, "1"), shortcut[1], nn.BatchNorm2d, "BasicBlock")
        identity = _conv(builder, where, conv, value, bn)
    return _conv(builder, _join(path, "conv2"), parts["conv2"], hidden, parts["bn2"], 0.0,
                 identity)


# in eval mode (the plan's) every dropout is the identity
@register_lowering(nn.Dropout, nn.Dropout2d, nn.Identity)
def _lower_nothing(builder, path, module, value, following):
    return value


@register_lowering(nn.Dropout1d)
def _lower_dropout1d(builder, path, dropout, value, following):
    rank = len(builder.shape(value))
    if rank not in (2, 3):   # the layer raises on it, in eval mode too
        refuse(path, dropout, "Dropout1d on a %d-D input" % rank, "it takes 2-D or 3-D "
               "inputs (the model raises on this one)")
    return value


def _activation_lowering(kind, parameters=None):
    """The lowering of an activation layer: a plan activation ``kind`` (a function of
    the module where it depends on its settings), with ``parameters(module)``."""
    def lower(builder, path, module, value, following):
        name = kind(module) if callable(kind) else kind
        extra = {} if parameters is None else {"parameters": [
            float(p) for p in parameters(module)]}
        if extra and not all(np.isfinite(extra["parameters"])):
            refuse(path, module, "a constant of %r" % (extra["parameters"],),
                   "a plan's activation constants are finite")
        return builder.emit("activation", [value], kind=name,
                            negative_slope=getattr(module, "negative_slope", 0.0), **extra)
    return lower


register_lowering(nn.ReLU)(_activation_lowering("relu"))
register_lowering(nn.LeakyReLU)(_activation_lowering("leaky_relu"))
register_lowering(nn.Sigmoid)(_activation_lowering("sigmoid"))
register_lowering(nn.Tanh)(_activation_lowering("tanh"))
register_lowering(nn.ReLU6)(_activation_lowering("relu6"))
register_lowering(nn.Hardtanh)(_activation_lowering(
    "hardtanh", lambda m: (m.min_val, m.max_val)))
register_lowering(nn.Hardsigmoid)(_activation_lowering("hardsigmoid"))
register_lowering(nn.Hardswish)(_activation_lowering("hardswish"))
register_lowering(nn.SiLU)(_activation_lowering("silu"))
register_lowering(nn.Mish)(_activation_lowering("mish"))
register_lowering(nn.GELU)(_activation_lowering(
    lambda m: "gelu" if m.approximate == "none" else "gelu_tanh"))
register_lowering(nn.ELU)(_activation_lowering("elu", lambda m: (m.alpha, 1.0)))
# SELU is ELU with its two constants, as functional.selu computes it
register_lowering(nn.SELU)(_activation_lowering(
    "elu", lambda m: (SELU_ALPHA, SELU_SCALE)))
register_lowering(nn.Softplus)(_activation_lowering(
    "softplus", lambda m: (m.beta, m.threshold)))


@register_lowering(nn.PReLU)
def _lower_prelu(builder, path, prelu, value, following):
    return builder.emit("prelu", [value], weights={
        "weight": builder.weight(path, "weight", prelu.weight.array)})


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


@register_lowering(nn.MaxPool2d)
def _lower_max_pool(builder, path, pool, value, following):
    if _pair(pool.dilation) != (1, 1):
        refuse(path, pool, "dilation=%r" % (pool.dilation,),
               "a plan's max pool has no dilation")
    if pool.return_indices:
        refuse(path, pool, "return_indices=True", "a plan returns one array")
    return builder.emit("max_pool2d", [value], kernel_size=pool.kernel_size,
                        stride=pool.stride, padding=pool.padding, ceil_mode=pool.ceil_mode)


@register_lowering(nn.AvgPool2d)
def _lower_avg_pool(builder, path, pool, value, following):
    if pool.divisor_override is not None:
        refuse(path, pool, "divisor_override=%r" % (pool.divisor_override,),
               "a plan's average pool divides by the window")
    return builder.emit("avg_pool2d", [value], kernel_size=pool.kernel_size,
                        stride=pool.stride, padding=pool.padding, ceil_mode=pool.ceil_mode,
                        count_include_pad=pool.count_include_pad)


def _adaptive_size(builder, path, pool, value):
    """An adaptive pool's output (H, W) on value ``value``: its ``output_size``, an int
    or a pair whose None entries keep the input's size."""
    size = pool.output_size
    pair = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    shape = builder.shape(value)
    if len(pair) != 2 or len(shape) != 4:
        refuse(path, pool, "output_size=%r" % (size,), "a plan pools (H, W) of a 4-D input, "
               "here %s" % (shape,))
    pair = tuple(shape[2 + a] if n is None else n for a, n in enumerate(pair))
    if not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1
               for n in pair):
        refuse(path, pool, "output_size=%r" % (size,), "sizes must be positive ints or None")
    return [int(n) for n in pair]


@register_lowering(nn.AdaptiveAvgPool2d)
def _lower_adaptive_avg_pool(builder, path, pool, value, following):
    return builder.emit("adaptive_avg_pool2d", [value],
                        output_size=_adaptive_size(builder, path, pool, value))


@register_lowering(nn.AdaptiveMaxPool2d)
def _lower_adaptive_max_pool(builder, path, pool, value, following):
    """Where the output size divides the input's, the bins are the windows of a max pool
    of that window and stride (a global max pool, for 1)."""
    if pool.return_indices:
        refuse(path, pool, "return_indices=True", "a plan returns one array")
    size = _adaptive_size(builder, path, pool, value)
    height, width = builder.shape(value)[2:]
    if height % size[0] or width % size[1]:
        refuse(path, pool, "output_size=%r" % (pool.output_size,),
               "a plan pools adaptively to the max only where the output size divides the "
               "input's, here %s" % ((height, width),))
    window = [height // size[0], width // size[1]]
    return builder.emit("max_pool2d", [value], kernel_size=window, stride=window, padding=0,
                        ceil_mode=False)


@register_lowering(nn.Flatten)
def _lower_flatten(builder, path, flatten, value, following):
    """Flatten of dims ``start_dim..end_dim`` (negative: from the end) of the value: none
    where they are one dim; a plan's flatten where they end with the last one."""
    rank = len(builder.shape(value))
    try:
        start, end = (int(dim) + rank if int(dim) < 0 else int(dim)
                      for dim in (flatten.start_dim, flatten.end_dim))
    except (TypeError, ValueError):
        start = end = -1
    option = "Flatten(start_dim=%r, end_dim=%r)" % (flatten.start_dim, flatten.end_dim)
    if not 0 <= start <= end < rank:
        refuse(path, flatten, option, "its dims do not fit a %d-D input" % rank)
    if start == 0:
        refuse(path, flatten, option, "a plan keeps the batch dimension")
    if start == end:
        return value
    if end != rank - 1:
        refuse(path, flatten, option, "a plan flattens up to the last dimension only (the "
               "input is %d-D)" % rank)
    return builder.emit("flatten", [value], start_dim=start)


@register_lowering(nn.BatchNorm2d)
def _lower_batch_norm(builder, path, bn, value, following):
    """A BatchNorm2d not after a conv: a per-channel affine map."""
    mean, var, eps, gamma, beta = _bn_arrays(bn)
    scale = (1.0 if gamma is None else gamma) / np.sqrt(var.astype(np.float64) + eps)
    shift = (0.0 if beta is None else beta) - mean * scale
    dtype = bn.running_mean.dtype
    return builder.emit("affine_channels", [value], weights={
        "scale": builder.weight(path, "scale", np.asarray(scale, dtype)),
        "shift": builder.weight(path, "shift", np.asarray(shift, dtype))})
