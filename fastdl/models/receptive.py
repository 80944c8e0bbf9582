"""Receptive fields of networks built from ``fastdl.nn`` layers, the zoo's FPN included.

The classic recurrence, per axis and layer by layer in module order (residual
blocks along their main path: the shortcut's window is never larger). A layer
widens the field by ``reach * jump`` input pixels, ``jump`` being the input
distance between neighbouring pixels of its input map and ``reach`` how many
of those steps its window spans; then it scales the jump. With stride (scale
factor) ``s``:

* Conv2d, MaxPool2d, AvgPool2d: ``reach = dilation * (kernel - 1)``, jump × s.
* ConvTranspose2d: ``reach = dilation * (kernel - 1) / s``, jump ÷ s. It is a
  stride-1 conv over its input spread ``s`` pixels apart (zeros between), so
  its window spans that many of the finer output steps.
* Upsample: jump ÷ s; ``reach`` 0 (nearest copies), 1 (linear and bilinear read
  two neighbours) or 3 (bicubic reads four).

Without upsampling every field is a whole number of pixels, the exact extent
of what one output reads. After an upsampling layer a window can fall between
input pixels: the field is then a fraction, an upper bound of that extent.
"""
from fractions import Fraction

from fastdl import nn
from fastdl._checks import is_int, pair
from fastdl.models.fcn import ResNetFPN

__all__ = ["receptive_field"]


# input steps one interpolated output reads beyond the first (nearest, area: none)
_INTERPOLATION_REACH = {"linear": 1, "bilinear": 1, "bicubic": 3}


def _window(module, axis):
    """``(reach, jump factor)`` of one layer along ``axis``; None for layers without a window."""
    if isinstance(module, nn.Conv2d):
        return module.dilation[axis] * (module.kernel_size[axis] - 1), module.stride[axis]
    if isinstance(module, nn.ConvTranspose2d):
        stride = module.stride[axis]
        return (Fraction(module.dilation[axis] * (module.kernel_size[axis] - 1), stride),
                Fraction(1, stride))
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        kernel = pair(module.kernel_size, "kernel_size", type(module).__name__)[axis]
        stride = module.stride
        if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
            return kernel - 1, kernel
        return kernel - 1, pair(stride, "stride", type(module).__name__)[axis]
    if isinstance(module, nn.Upsample):
        scale = module.scale_factor
        if scale is None:
            raise ValueError("receptive_field: an Upsample to a fixed size has no fixed scale; "
                             "give it a scale_factor")
        scale = Fraction(scale[axis] if isinstance(scale, (tuple, list)) else scale)
        if scale == 1:
            return 0, 1
        if module.mode == "area" and scale < 1:   # an average over 1/scale pixels
            return 1 / scale - 1, 1 / scale
        return _INTERPOLATION_REACH.get(module.mode, 0), 1 / scale
    return None


def _windows(model, axis):
    """``(reach, jump factor)`` of each windowed layer along the main path, in order."""
    windows = []

    def visit(module):
        window = _window(module, axis)
        if window is not None:
            windows.append(window)
        elif isinstance(module, nn.BasicBlock):
            visit(module.conv1)
            visit(module.conv2)
        else:
            for child in module.children():
                visit(child)
    visit(model)
    return windows


def _fields(model, axis):
    field, jump, fields = Fraction(1), Fraction(1), []
    for reach, factor in _windows(model, axis):
        field += reach * jump
        jump *= factor
        fields.append(field)
    return fields


def _fpn_fields(model, axis):
    """Per FPN level: the field of its smoothing conv's output.

    A level's merged map adds the nearest-upsampled deeper map, whose pixels
    see the deepest stage's field (upsampling copies, it does not widen); the
    smoothing conv then widens it at that level's jump.
    """
    backbone = model.backbone
    field, jump, stage_fields, stage_jumps = Fraction(1), Fraction(1), [], []
    for part in (backbone.stem, backbone.layer1, backbone.layer2, backbone.layer3):
        for reach, factor in _windows(part, axis):
            field += reach * jump
            jump *= factor
        if part is not backbone.stem:
            stage_fields.append(field)
            stage_jumps.append(jump)
    fields = []
    for level, level_jump in enumerate(stage_jumps):
        seen = stage_fields[-1] if model.fpn.top_down else stage_fields[level]
        reach, _ = _window(model.fpn.smooth[level], axis)
        fields.append(seen + reach * level_jump)
    return fields


def _number(field):
    return int(field) if field.denominator == 1 else float(field)


def receptive_field(model, input_size):
    """Receptive field (in input pixels) after each windowed layer of ``model``.

    Parameters
    ----------
    model : nn.Module
        Conv2d, ConvTranspose2d, MaxPool2d, AvgPool2d and Upsample layers count,
        in module order; residual blocks along their main path.
    input_size : int or (H, W)
        The input's height and width (an int: a square input). The field is
        not capped at the input: a layer whose window exceeds its (padded)
        input raises in the model itself.

    Returns
    -------
    list, one entry per windowed layer (for a ``ResNetFPN``, one per pyramid
    level, shallow to deep): the field along the height for an int
    ``input_size``, a pair ``(field_h, field_w)`` for a pair. A field is an
    int, or a float after an upsampling layer (see the module notes).

    Raises
    ------
    ValueError
        If ``input_size`` is not a positive int or a pair of positive ints.
    """
    try:
        height, width = pair(input_size, "input_size", "receptive_field")
    except TypeError:
        height = width = 0
    if height < 1 or width < 1:
        raise ValueError("receptive_field: input_size must be a positive int or a pair of "
                         "them (H, W), got %r" % (input_size,))
    fields_of = _fpn_fields if isinstance(model, ResNetFPN) else _fields
    along_h = [_number(field) for field in fields_of(model, 0)]
    if is_int(input_size):
        return along_h
    along_w = [_number(field) for field in fields_of(model, 1)]
    return list(zip(along_h, along_w))
