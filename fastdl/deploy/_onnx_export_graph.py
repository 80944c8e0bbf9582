"""ONNX forms of the plan's graph ops, for :mod:`fastdl.deploy.onnx_export`.

=============  ==========================================================================
plan op        ONNX
=============  ==========================================================================
binary         Add, Sub, Mul, Div (a constant ``other`` as an initializer; ``reverse``:
               it first)
concat         Concat
slice          Slice (starts, ends, axes, steps as initializers)
reshape        Reshape to ``[0, sizes...]`` (0: the batch, copied)
transpose      Transpose
resize         Resize: nearest as asymmetric + floor, nearest_exact as half_pixel +
               round_prefer_ceil, bilinear / bicubic (-0.75) as half_pixel or
               align_corners; ``scale`` as scales, else sizes (opset 18 on: of axes 2, 3;
               before: after the input's own batch and channels, from its Shape)
softmax        Softmax / LogSoftmax (before opset 13, an axis other than the last moved
               last by Transposes)
group_norm     GroupNormalization (opset 21 on), else Reshape to (N, G, -1),
               InstanceNormalization, Reshape back, Mul, Add
layer_norm     LayerNormalization (opset 17 on), else its ReduceMean form
=============  ==========================================================================

Each writer is ``write(graph, index, op, names, out) -> out`` on the exporter's graph.
"""
import math

import numpy as np

_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div"}


def _ints(*values):
    return np.array(values, np.int64)


def _binary(graph, index, op, names, out):
    inputs = [names[i] for i in op["inputs"]]
    if "other" in op.get("weights", {}):
        other = graph.weight(op, "other")
        inputs = [other, inputs[0]] if op["reverse"] else [inputs[0], other]
    return graph.node(_BINARY[op["kind"]], inputs, out)


def _concat(graph, index, op, names, out):
    return graph.node("Concat", [names[i] for i in op["inputs"]], out, axis=op["axis"])


def _slice(graph, index, op, names, out):
    arguments = [graph.constant(stem, _ints(op[key])) for stem, key in (
        ("starts", "start"), ("ends", "stop"), ("axes", "axis"), ("steps", "step"))]
    return graph.node("Slice", [names[op["inputs"][0]]] + arguments, out)


def _reshape(graph, index, op, names, out):
    shape = graph.constant("shape", _ints(0, *op["shape"]))
    return graph.node("Reshape", [names[op["inputs"][0]], shape], out)


def _transpose(graph, index, op, names, out):
    return graph.node("Transpose", [names[op["inputs"][0]]], out, perm=list(op["perm"]))


_RESIZE = {"nearest": dict(mode="nearest", coordinate_transformation_mode="asymmetric",
                           nearest_mode="floor"),
           "nearest_exact": dict(mode="nearest",
                                 coordinate_transformation_mode="half_pixel",
                                 nearest_mode="round_prefer_ceil"),
           "bilinear": dict(mode="linear"), "bicubic": dict(mode="cubic",
                                                            cubic_coeff_a=-0.75)}


def _resize(graph, index, op, names, out):
    x = names[op["inputs"][0]]
    shape = graph.plan.shapes[op["inputs"][0]]
    attributes = dict(_RESIZE[op["mode"]])
    if op["mode"] in ("bilinear", "bicubic"):
        attributes["coordinate_transformation_mode"] = (
            "align_corners" if op["align_corners"] else "half_pixel")
    roi = "" if graph.opset >= 13 else graph.constant("roi", np.zeros(0, np.float32))
    # align_corners maps by the output size (ONNX's scales, by in * scale unrounded)
    if op["scale"] is not None and not op["align_corners"]:
        scales = np.array([1.0, 1.0] + list(op["scale"]), np.float32)
        if [math.floor(n * float(s)) for n, s in zip(shape[2:], scales[2:])] != list(
                op["size"]) or list(scales[2:].astype(np.float64)) != list(op["scale"]):
            graph.refuse(index, op, "scale %s is not a float32 ONNX's scales can hold"
                         % (op["scale"],))
        return graph.node("Resize", [x, roi, graph.constant("scales", scales)], out,
                          **attributes)
    empty = "" if graph.opset >= 13 else graph.constant("scales", np.zeros(0, np.float32))
    if graph.opset >= 18:
        sizes = graph.constant("sizes", _ints(*op["size"]))
        return graph.node("Resize", [x, roi, empty, sizes], out, axes=[2, 3], **attributes)
    # the batch is dynamic: the sizes of (N, C) come from the input's Shape
    leading = graph.node("Shape", [x], graph.fresh("shape"), end=2) if graph.opset >= 15 \
        else graph.node("Slice", [graph.node("Shape", [x], graph.fresh("shape")),
                                  graph.constant("starts", _ints(0)),
                                  graph.constant("ends", _ints(2))], graph.fresh("shape"))
    sizes = graph.node("Concat", [leading, graph.constant("sizes", _ints(*op["size"]))],
                       graph.fresh("sizes"), axis=0)
    return graph.node("Resize", [x, roi, empty, sizes], out, **attributes)


def _softmax(graph, index, op, names, out):
    kind = "LogSoftmax" if op["log"] else "Softmax"
    x, axis = names[op["inputs"][0]], op["axis"]
    ndim = len(graph.plan.shapes[op["inputs"][0]])
    if graph.opset >= 13 or axis == ndim - 1:
        return graph.node(kind, [x], out, axis=axis)
    # before opset 13 Softmax normalises over every axis from ``axis`` on: move it last
    perm = [a for a in range(ndim) if a != axis] + [axis]
    moved = graph.node("Transpose", [x], graph.fresh("moved"), perm=perm)
    value = graph.node(kind, [moved], graph.fresh("softmax"), axis=ndim - 1)
    return graph.node("Transpose", [value], out, perm=list(np.argsort(perm)))


def _affine_weights(graph, op, shape):
    """The norm's weight and bias as initializers of ``shape`` (ones and zeros where
    the op has none)."""
    names = []
    for role, neutral in (("weight", np.ones), ("bias", np.zeros)):
        if role in op.get("weights", {}):
            names.append(graph.weight(op, role, shape))
        else:
            names.append(graph.constant(role, neutral(shape, graph.dtype)))
    return names


def _group_norm(graph, index, op, names, out):
    x, shape = names[op["inputs"][0]], graph.plan.shapes[op["inputs"][0]]
    groups, eps = op["groups"], float(op["eps"])
    if graph.opset >= 21:
        scale, bias = _affine_weights(graph, op, (shape[1],))
        return graph.node("GroupNormalization", [x, scale, bias], out, num_groups=groups,
                          epsilon=eps)
    grouped = graph.node("Reshape", [x, graph.constant("shape", _ints(0, groups, -1))],
                         graph.fresh("grouped"))
    ones, zeros = (graph.constant(stem, fill(groups, graph.dtype)) for stem, fill in
                   (("ones", np.ones), ("zeros", np.zeros)))
    normal = graph.node("InstanceNormalization", [grouped, ones, zeros],
                        graph.fresh("normal"), epsilon=eps)
    weights = op.get("weights", {})
    back = graph.node("Reshape", [normal, graph.constant("shape", _ints(0, *shape[1:]))],
                      out if not weights else graph.fresh("normal"))
    if not weights:
        return back
    channel = (shape[1],) + (1,) * (len(shape) - 2)
    scale, bias = _affine_weights(graph, op, channel)
    scaled = graph.node("Mul", [back, scale], graph.fresh("scaled"))
    return graph.node("Add", [scaled, bias], out)


def _layer_norm(graph, index, op, names, out):
    x, shape = names[op["inputs"][0]], graph.plan.shapes[op["inputs"][0]]
    k, eps = op["normalized_ndim"], float(op["eps"])
    axis = len(shape) - k
    scale, bias = _affine_weights(graph, op, tuple(shape[axis:]))
    if graph.opset >= 17:
        return graph.node("LayerNormalization", [x, scale, bias], out, axis=axis,
                          epsilon=eps)
    axes = list(range(axis, len(shape)))
    mean = graph.node("ReduceMean", [x], graph.fresh("mean"), axes=axes, keepdims=1)
    centred = graph.node("Sub", [x, mean], graph.fresh("centred"))
    square = graph.node("Mul", [centred, centred], graph.fresh("square"))
    variance = graph.node("ReduceMean", [square], graph.fresh("variance"), axes=axes,
                          keepdims=1)
    shifted = graph.node("Add", [variance, graph.constant("eps", np.array(eps, graph.dtype))],
                         graph.fresh("variance"))
    deviation = graph.node("Sqrt", [shifted], graph.fresh("deviation"))
    normal = graph.node("Div", [centred, deviation], graph.fresh("normal"))
    scaled = graph.node("Mul", [normal, scale], graph.fresh("scaled"))
    return graph.node("Add", [scaled, bias], out)


WRITERS = {"binary": _binary, "concat": _concat, "slice": _slice, "reshape": _reshape,
           "transpose": _transpose, "resize": _resize, "softmax": _softmax,
           "group_norm": _group_norm, "layer_norm": _layer_norm}

__all__ = ["WRITERS"]
