"""Shape arithmetic of convolutional networks."""
from fastdl._checks import is_int  # noqa: F401  (re-exported: callers still import it here)


def conv_output_size(n, kernel, stride=1, padding=0, dilation=1):
    """Output length of a convolution or pooling window along one axis.

    ``floor((n + 2*padding - dilation*(kernel - 1) - 1) / stride) + 1`` (the seed's
    formula lacked the ``+ 1`` and the dilation).

    Parameters
    ----------
    n, kernel, stride, padding, dilation : int

    Returns
    -------
    int

    Raises
    ------
    ValueError
        For non-positive ``n``/``kernel``/``stride``/``dilation``, negative
        padding, or a (dilated) kernel larger than the padded input.
    """
    for name, value, low in (("n", n, 1), ("kernel", kernel, 1), ("stride", stride, 1),
                             ("padding", padding, 0), ("dilation", dilation, 1)):
        if not is_int(value) or value < low:
            raise ValueError("conv_output_size: %s must be an int >= %d, got %r"
                             % (name, low, value))
    span = dilation * (kernel - 1) + 1
    if n + 2 * padding < span:
        raise ValueError("conv_output_size: kernel span %d exceeds padded input %d"
                         % (span, n + 2 * padding))
    return (n + 2 * padding - span) // stride + 1


def conv_transpose_output_size(n, kernel, stride=1, padding=0, output_padding=0, dilation=1):
    """Output length of a transposed convolution along one axis.

    ``(n - 1)*stride - 2*padding + dilation*(kernel - 1) + output_padding + 1``: the
    input length of the convolution whose gradient it is, ``output_padding`` choosing
    among the lengths that convolution maps to ``n``.

    Plain arithmetic on checked ints (``F.conv_transpose2d`` and the plan loader check
    the arguments): unlike :func:`conv_output_size` it raises nothing, and a padding
    wider than the kernel's span gives a length below 1.

    Parameters
    ----------
    n, kernel, stride, padding, output_padding, dilation : int

    Returns
    -------
    int
    """
    return (n - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def _window_layers(model):
    """(kernel, stride, dilation) of each conv/pool layer along the main path, in order."""
    from fastdl.nn import AvgPool2d, BasicBlock, Conv2d, MaxPool2d
    layers = []

    def visit(module):
        if isinstance(module, Conv2d):
            layers.append((module.kernel_size[0], module.stride[0], module.dilation[0]))
        elif isinstance(module, (MaxPool2d, AvgPool2d)):
            kernel = module.kernel_size if isinstance(module.kernel_size, int) \
                else module.kernel_size[0]
            stride = module.stride if module.stride is not None else kernel
            stride = stride if isinstance(stride, int) else stride[0]
            layers.append((kernel, stride, 1))
        elif isinstance(module, BasicBlock):
            visit(module.conv1)  # the main path; the shortcut's window is never larger
            visit(module.conv2)
        else:
            for child in module.children():
                visit(child)
    visit(model)
    return layers


def receptive_field(model, input_size):
    """Receptive field (in input pixels) after each conv/pool layer of ``model``.

    The seed's recurrence ``l_k = l_{k-1} + (f_k - 1) * prod(s_1..s_{k-1})``,
    with a dilated kernel ``f = d*(k - 1) + 1``. Layers are taken in module
    order; residual blocks along their main path.

    Parameters
    ----------
    model : nn.Module
    input_size : int
        Input height (= width); the field is capped at nothing, but a layer
        whose window exceeds its (padded) input raises in the model itself.

    Returns
    -------
    list of int, one per conv/pool layer; for a ``ResNetFPN``, one per pyramid
    level (shallow to deep).
    """
    if not is_int(input_size) or \
            input_size < 1:
        raise ValueError("receptive_field: input_size must be a positive int, got %r"
                         % (input_size,))
    from fastdl.models.fcn import ResNetFPN
    if isinstance(model, ResNetFPN):
        return _fpn_receptive_fields(model)
    field, jump, fields = 1, 1, []
    for kernel, stride, dilation in _window_layers(model):
        field += dilation * (kernel - 1) * jump
        jump *= stride
        fields.append(field)
    return fields


def _fpn_receptive_fields(model):
    """Per FPN level: the field of its 3×3 smoothing output.

    A level's merged map adds the nearest-upsampled deeper map, whose pixels
    see the deepest stage's field (upsampling copies, it does not widen); the
    3×3 smoothing then adds ``2 * stride`` of that level.
    """
    backbone = model.backbone
    field, jump, stage_fields, stage_jumps = 1, 1, [], []
    for part in (backbone.stem, backbone.layer1, backbone.layer2, backbone.layer3):
        for kernel, stride, dilation in _window_layers(part):
            field += dilation * (kernel - 1) * jump
            jump *= stride
        if part is not backbone.stem:
            stage_fields.append(field)
            stage_jumps.append(jump)
    fields = []
    for level, level_jump in enumerate(stage_jumps):
        seen = stage_fields[-1] if model.fpn.top_down else stage_fields[level]
        fields.append(seen + 2 * level_jump)
    return fields
