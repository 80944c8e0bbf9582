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
and its class with the module it comes from — never a silently wrong plan.

The ops are those of ``_opgraph``: ``{"op": name, "inputs": [value ids], "output": id,
...attrs, "weights": {role: tensor name}}``; value 0 is the plan's input.
"""
import numpy as np

from fastdl import nn
from fastdl.deploy.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights
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


def _lowering_class(module):
    """The registered class whose lowering compiles ``module`` (the nearest in its MRO),
    or None: none is registered, or ``module`` overrides that class's forward."""
    for cls in type(module).__mro__:
        if cls in _LOWERINGS:
            return cls if type(module).forward is cls.forward else None
    return None


def _is(module, cls):
    """Whether ``module`` is a ``cls`` that keeps its forward."""
    return isinstance(module, cls) and type(module).forward is cls.forward


def _join(parent, child):
    return child if not parent else "%s.%s" % (parent, child)


def _unsupported(path, module, reason=None):
    kind = type(module)
    registered = next((cls for cls in kind.__mro__ if cls in _LOWERINGS), None)
    if reason is None:
        reason = ("no lowering is registered for it" if registered is None else
                  "it overrides the forward of %s.%s, which that class's lowering compiles"
                  % (registered.__module__, registered.__qualname__))
    raise ValueError("deploy.compile: cannot compile module %r (%s) of class %s.%s: %s; "
                     "supported are Sequential, BasicBlock, ResNet and the layers of "
                     "fastdl.nn" % (path or "model", kind.__name__, kind.__module__,
                                    kind.__qualname__, reason))


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
    """The ops and the weights emitted so far."""

    def __init__(self):
        self.ops, self.tensors, self.next_id = [], {}, 1

    def weight(self, prefix, role, array):
        name = "%s.%s" % (prefix, role)
        self.tensors[name] = np.ascontiguousarray(array)
        return name

    def emit(self, op, inputs, **attributes):
        output = self.next_id
        self.next_id += 1
        self.ops.append(dict(op=op, inputs=list(inputs), output=output, **attributes))
        return output

    def lower(self, path, module, value, following=None):
        """Emit the ops of ``module`` (at ``path``) on value ``value``; its output's id."""
        cls = _lowering_class(module)
        if cls is None:
            _unsupported(path, module)
        return _LOWERINGS[cls](self, path, module, value,
                               Following() if following is None else following)

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


def build_graph(model):
    """(ops, tensors) of ``model`` in eval mode; the model's own mode is left as it was."""
    was_training = model.training
    model.eval()
    try:
        builder = Builder()
        output = builder.lower("", model, 0)
    finally:
        model.train(was_training)
    if not builder.ops or builder.ops[-1]["output"] != output:
        builder.ops.append(dict(op="activation", inputs=[output], output=builder.next_id,
                                kind="identity", negative_slope=0.0))
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


def _zero_padding(name, conv):
    """The conv's zero padding as [rows, cols] (``'valid'``: none; ``'same'``: half the
    kernel's span where that is even); a ValueError for what a plan cannot pad."""
    if getattr(conv, "padding_mode", "zeros") != "zeros":
        raise ValueError("deploy.compile: %s: only padding_mode='zeros' is supported, got %r"
                         % (name or "model", conv.padding_mode))
    if conv.padding == "valid":
        return [0, 0]
    if conv.padding == "same":
        spans = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
        if any(span % 2 for span in spans):
            raise ValueError("deploy.compile: %s: padding='same' pads one side more than the "
                             "other here; give the padding as ints" % (name or "model"))
        return [span // 2 for span in spans]
    return list(conv.padding)


def _conv(builder, name, conv, value, bn=None, slope=None, residual=None):
    weight = conv.weight.array
    bias = None if conv.bias is None else conv.bias.array
    transposed = isinstance(conv, nn.ConvTranspose2d)
    if bn is not None:
        weight, bias = fuse_conv_bn_weights(weight, bias, *_bn_arrays(bn),
                                            transposed=transposed, groups=conv.groups)
    weights = {"weight": builder.weight(name, "weight", weight)}
    if bias is not None:
        weights["bias"] = builder.weight(name, "bias", bias)
    attributes = dict(stride=list(conv.stride), padding=_zero_padding(name, conv),
                      dilation=list(conv.dilation), groups=conv.groups, weights=weights)
    if transposed:
        if residual is not None or slope is not None:
            raise ValueError("deploy.compile: no fused epilogue on transposed convolutions")
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


@register_lowering(nn.Dropout, nn.Identity)
def _lower_nothing(builder, path, module, value, following):
    return value


def _activation_lowering(kind):
    def lower(builder, path, module, value, following):
        return builder.emit("activation", [value], kind=kind,
                            negative_slope=getattr(module, "negative_slope", 0.0))
    return lower


register_lowering(nn.ReLU)(_activation_lowering("relu"))
register_lowering(nn.LeakyReLU)(_activation_lowering("leaky_relu"))
register_lowering(nn.Sigmoid)(_activation_lowering("sigmoid"))
register_lowering(nn.Tanh)(_activation_lowering("tanh"))


@register_lowering(nn.MaxPool2d)
def _lower_max_pool(builder, path, pool, value, following):
    dilation = getattr(pool, "dilation", 1)
    if dilation not in (1, (1, 1), [1, 1]) or getattr(pool, "return_indices", False):
        raise ValueError("deploy.compile: %s: only MaxPool2d(dilation=1, return_indices=False)"
                         " is supported" % (path or "model"))
    return builder.emit("max_pool2d", [value], kernel_size=pool.kernel_size,
                        stride=pool.stride, padding=pool.padding, ceil_mode=pool.ceil_mode)


@register_lowering(nn.AvgPool2d)
def _lower_avg_pool(builder, path, pool, value, following):
    if getattr(pool, "divisor_override", None) is not None:
        raise ValueError("deploy.compile: %s: only AvgPool2d(divisor_override=None) is "
                         "supported" % (path or "model"))
    return builder.emit("avg_pool2d", [value], kernel_size=pool.kernel_size,
                        stride=pool.stride, padding=pool.padding, ceil_mode=pool.ceil_mode,
                        count_include_pad=pool.count_include_pad)


@register_lowering(nn.AdaptiveAvgPool2d)
def _lower_adaptive_avg_pool(builder, path, pool, value, following):
    size = pool.output_size
    return builder.emit("adaptive_avg_pool2d", [value],
                        output_size=list(size) if isinstance(size, (tuple, list))
                        else [size, size])


@register_lowering(nn.Flatten)
def _lower_flatten(builder, path, flatten, value, following):
    if flatten.end_dim != -1:
        raise ValueError("deploy.compile: %s: only Flatten(end_dim=-1) is supported"
                         % (path or "model"))
    return builder.emit("flatten", [value], start_dim=flatten.start_dim)


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
