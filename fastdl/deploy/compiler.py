"""Turn an eval-mode model into a flat list of ops over named weights (an op graph).

The walk knows the layers of ``fastdl.nn`` and the model zoo. It folds each
BatchNorm into the convolution or linear layer before it, and fuses the ReLU /
LeakyReLU that follows, and a residual block's add, into the convolution's
epilogue. Anything else raises a ValueError naming the module — never a
silently wrong plan.

An op is a dict: ``{"op": name, "inputs": [value ids], "output": id, ...attrs,
"weights": {role: tensor name}}``; value 0 is the plan's input.
"""
import numpy as np

from fastdl import nn
from fastdl.deploy.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights
from fastdl.models.resnet import ResNet


def _join(parent, child):
    return child if not parent else "%s.%s" % (parent, child)


class _Builder:
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


def _activation_of(module):
    if isinstance(module, nn.ReLU):
        return 0.0
    if isinstance(module, nn.LeakyReLU):
        return float(module.negative_slope)
    return None


def _bn_arrays(bn):
    if bn.running_mean is None:
        raise ValueError("deploy.compile: %r has no running statistics (track_running_stats="
                         "False); it cannot be folded for inference" % (bn,))
    weight = None if bn.weight is None else bn.weight.data
    bias = None if bn.bias is None else bn.bias.data
    return bn.running_mean, bn.running_var, bn.eps, weight, bias


def _conv(builder, name, conv, value, bn=None, slope=None, residual=None):
    weight = conv.weight.data
    bias = None if conv.bias is None else conv.bias.data
    transposed = isinstance(conv, nn.ConvTranspose2d)
    if bn is not None:
        weight, bias = fuse_conv_bn_weights(weight, bias, *_bn_arrays(bn),
                                            transposed=transposed, groups=conv.groups)
    weights = {"weight": builder.weight(name, "weight", weight)}
    if bias is not None:
        weights["bias"] = builder.weight(name, "bias", bias)
    attributes = dict(stride=list(conv.stride), padding=list(conv.padding),
                      dilation=list(conv.dilation), groups=conv.groups, weights=weights)
    if transposed:
        if residual is not None or slope is not None:
            raise ValueError("deploy.compile: no fused epilogue on transposed convolutions")
        return builder.emit("conv_transpose2d", [value],
                            output_padding=list(conv.output_padding), **attributes)
    inputs = [value] if residual is None else [value, residual]
    return builder.emit("conv2d", inputs, negative_slope=slope, **attributes)


def _basic_block(builder, name, block, value):
    hidden = _conv(builder, _join(name, "conv1"), block.conv1, value, block.bn1, 0.0)
    if block.shortcut is None:
        identity = value
    else:
        identity = _conv(builder, _join(name, "shortcut"), block.shortcut[0], value,
                         block.shortcut[1])
    return _conv(builder, _join(name, "conv2"), block.conv2, hidden, block.bn2, 0.0,
                 identity)


def _sequence(builder, parent, modules, value):
    """Compile a list of (name, module), folding BN and activations forward."""
    index = 0
    while index < len(modules):
        name, module = modules[index]
        name = _join(parent, name)
        following = [m for _, m in modules[index + 1:index + 3]]
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            bn = following[0] if following and isinstance(following[0], nn.BatchNorm2d) \
                else None
            after = following[1 if bn is not None else 0] if len(following) > (
                1 if bn is not None else 0) else None
            slope = None if isinstance(module, nn.ConvTranspose2d) else _activation_of(after)
            value = _conv(builder, name, module, value, bn, slope)
            index += 1 + (bn is not None) + (slope is not None)
            continue
        if isinstance(module, nn.Linear):
            bn = following[0] if following and isinstance(following[0], nn.BatchNorm1d) \
                else None
            weight = module.weight.data
            bias = None if module.bias is None else module.bias.data
            if bn is not None:
                weight, bias = fuse_linear_bn_weights(weight, bias, *_bn_arrays(bn))
            after = following[1 if bn is not None else 0] if len(following) > (
                1 if bn is not None else 0) else None
            slope = _activation_of(after)
            weights = {"weight": builder.weight(name, "weight", weight)}
            if bias is not None:
                weights["bias"] = builder.weight(name, "bias", bias)
            value = builder.emit("linear", [value], negative_slope=slope, weights=weights)
            index += 1 + (bn is not None) + (slope is not None)
            continue
        value = _single(builder, name, module, value)
        index += 1
    return value


def _single(builder, name, module, value):
    if isinstance(module, nn.Sequential):
        return _sequence(builder, name, list(module.named_children()), value)
    if isinstance(module, nn.BasicBlock):
        return _basic_block(builder, name, module, value)
    if isinstance(module, ResNet):
        value = _sequence(builder, _join(name, "stem"), list(module.stem.named_children()),
                          value)
        for stage in ("layer1", "layer2", "layer3"):
            value = _single(builder, _join(name, stage), getattr(module, stage), value)
        value = builder.emit("adaptive_avg_pool2d", [value], output_size=[1, 1])
        value = builder.emit("flatten", [value], start_dim=1)
        return _sequence(builder, name, [("fc", module.fc)], value)
    if isinstance(module, (nn.Dropout, nn.Identity)):
        return value
    if isinstance(module, (nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh)):
        kind = {nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu", nn.Sigmoid: "sigmoid",
                nn.Tanh: "tanh"}[type(module)]
        return builder.emit("activation", [value], kind=kind,
                            negative_slope=getattr(module, "negative_slope", 0.0))
    if isinstance(module, nn.MaxPool2d):
        return builder.emit("max_pool2d", [value], kernel_size=module.kernel_size,
                            stride=module.stride, padding=module.padding,
                            ceil_mode=module.ceil_mode)
    if isinstance(module, nn.AvgPool2d):
        return builder.emit("avg_pool2d", [value], kernel_size=module.kernel_size,
                            stride=module.stride, padding=module.padding,
                            ceil_mode=module.ceil_mode,
                            count_include_pad=module.count_include_pad)
    if isinstance(module, nn.AdaptiveAvgPool2d):
        size = module.output_size
        return builder.emit("adaptive_avg_pool2d", [value],
                            output_size=list(size) if isinstance(size, (tuple, list))
                            else [size, size])
    if isinstance(module, nn.Flatten):
        if module.end_dim != -1:
            raise ValueError("deploy.compile: %s: only Flatten(end_dim=-1) is supported"
                             % (name or "model"))
        return builder.emit("flatten", [value], start_dim=module.start_dim)
    if isinstance(module, nn.BatchNorm2d):   # a BN not after a conv: per-channel affine
        mean, var, eps, gamma, beta = _bn_arrays(module)
        scale = (1.0 if gamma is None else gamma) / np.sqrt(var.astype(np.float64) + eps)
        shift = (0.0 if beta is None else beta) - mean * scale
        dtype = module.running_mean.dtype
        return builder.emit("affine_channels", [value], weights={
            "scale": builder.weight(name, "scale", np.asarray(scale, dtype)),
            "shift": builder.weight(name, "shift", np.asarray(shift, dtype))})
    raise ValueError("deploy.compile: cannot compile module %r (%s): supported are "
                     "Sequential, BasicBlock, ResNet and the layers of fastdl.nn"
                     % (name or "model", type(module).__name__))


def build_graph(model):
    """(ops, tensors) of ``model`` in eval mode; the model's own mode is left as it was."""
    was_training = model.training
    model.eval()
    try:
        builder = _Builder()
        output = _single(builder, "", model, 0)
    finally:
        model.train(was_training)
    if not builder.ops or builder.ops[-1]["output"] != output:
        builder.ops.append(dict(op="activation", inputs=[output], output=builder.next_id,
                                kind="identity", negative_slope=0.0))
    return builder.ops, builder.tensors
