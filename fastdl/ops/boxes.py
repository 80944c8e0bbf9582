"""Box operations and box-regression losses, differentiable, with torchvision's names.

Boxes are ``(x1, y1, x2, y2)`` rows (``'xyxy'``) unless a function says otherwise.
Every function takes Tensors or ndarrays (float32 or float64) and returns Tensors
whose gradients flow back to the boxes.

Zero-area policy (one rule for the whole family): a ratio whose denominator is
zero — the union of two degenerate boxes, the enclosing box of two identical
points — is taken as 0, never NaN. So the IoU of two zero-area boxes is 0 (as
``fastdl.detection.box_iou``), GIoU of identical zero-area boxes is 0 (their
loss is 1), and a zero-height box has aspect angle ``atan2(w, 0) = pi/2`` in
CIoU. Inverted boxes (``x2 < x1`` or ``y2 < y1``) and non-finite coordinates
are rejected with a ValueError.

Formulas (torchvision's, from the GIoU and DIoU/CIoU papers)::

    IoU  = I / U
    GIoU = IoU - (C - U) / C                      C: area of the enclosing box
    DIoU = IoU - d^2 / (c^2 + eps)                d: centre distance, c: enclosing diagonal
    CIoU = DIoU - alpha v,  v = 4/pi^2 (atan(w1/h1) - atan(w2/h2))^2,
           alpha = v / (1 - IoU + v + eps), held constant (no gradient)

The losses (``1 - GIoU`` ...) compare matched rows and add ``eps`` to the
denominators as torchvision's losses do.
"""
import math

import numpy as np

from fastdl._checks import check_reduction, is_real, non_negative_float
from fastdl.autograd import Function, Tensor
from fastdl.grad_mode import no_grad
from fastdl.tensor_math import maximum, minimum, where
from fastdl.tensor_shape import stack

__all__ = ["box_area", "box_convert", "clip_boxes_to_image", "remove_small_boxes",
           "generalized_box_iou", "distance_box_iou", "complete_box_iou",
           "generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss",
           "giou_loss", "diou_loss", "ciou_loss", "BOX_FORMATS"]

#: The box formats :func:`box_convert` reads and writes.
BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


def _as_boxes(op, name, boxes, pairwise=True, ordered=True):
    """``boxes`` as a float Tensor of shape (N, 4) (or (..., 4) when not ``pairwise``)."""
    tensor = boxes if isinstance(boxes, Tensor) else Tensor(np.asarray(boxes))
    data = np.asarray(tensor)
    if data.dtype not in (np.float32, np.float64):
        raise TypeError("%s: %s must be float32 or float64, got %s" % (op, name, data.dtype))
    if (data.ndim != 2 if pairwise else data.ndim < 1) or data.shape[-1] != 4:
        raise ValueError("%s: %s must have shape %s, got %s"
                         % (op, name, "(N, 4)" if pairwise else "(..., 4)", data.shape))
    if not np.isfinite(data).all():
        raise ValueError("%s: %s contain NaN or infinite coordinates" % (op, name))
    if ordered and (np.any(data[..., 2] < data[..., 0]) or np.any(data[..., 3] < data[..., 1])):
        raise ValueError("%s: %s need x2 >= x1 and y2 >= y1 (xyxy format)" % (op, name))
    return tensor


def _ratio(numerator, denominator):
    """``numerator / denominator``, 0 where the denominator is 0 (the numerator is then 0
    too: I <= U <= C); the safe denominator keeps the gradient finite as well."""
    return numerator / where(np.asarray(denominator) == 0, 1.0, denominator)


def _columns(boxes):
    return boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]


# ------------------------------------------------------------------- single boxes
def box_area(boxes):
    """Areas ``(x2 - x1) (y2 - y1)`` of ``boxes (N, 4)`` → ``(N,)``."""
    x1, y1, x2, y2 = _columns(_as_boxes("box_area", "boxes", boxes))
    return (x2 - x1) * (y2 - y1)


def box_convert(boxes, in_fmt, out_fmt):
    """Convert ``boxes (N, 4)`` between ``'xyxy'``, ``'xywh'`` (corner, size) and
    ``'cxcywh'`` (centre, size); differentiable."""
    for name, fmt in (("in_fmt", in_fmt), ("out_fmt", out_fmt)):
        if fmt not in BOX_FORMATS:
            raise ValueError("box_convert: %s must be one of %s, got %r"
                             % (name, ", ".join(BOX_FORMATS), fmt))
    boxes = _as_boxes("box_convert", "boxes", boxes, ordered=False)
    a, b, c, d = _columns(boxes)
    if in_fmt == "xywh":
        x1, y1, x2, y2 = a, b, a + c, b + d
    elif in_fmt == "cxcywh":
        x1, y1, x2, y2 = a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d
    else:
        x1, y1, x2, y2 = a, b, c, d
    if out_fmt == "xywh":
        columns = (x1, y1, x2 - x1, y2 - y1)
    elif out_fmt == "cxcywh":
        columns = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
    else:
        columns = (x1, y1, x2, y2)
    return stack(list(columns), dim=1)


def _image_size(op, size):
    if not isinstance(size, (tuple, list)) or len(size) != 2 or \
            not all(isinstance(s, (int, np.integer)) and s >= 0 for s in size):
        raise ValueError("%s: size must be (height, width) of ints >= 0, got %r" % (op, size))
    return int(size[0]), int(size[1])


def clip_boxes_to_image(boxes, size):
    """Clamp ``boxes (N, 4)`` to an image of ``size = (height, width)``: x into
    ``[0, width]``, y into ``[0, height]`` (the gradient is zero where clamped)."""
    height, width = _image_size("clip_boxes_to_image", size)
    x1, y1, x2, y2 = _columns(_as_boxes("clip_boxes_to_image", "boxes", boxes, ordered=False))
    return stack([x1.clamp(0, width), y1.clamp(0, height), x2.clamp(0, width),
                  y2.clamp(0, height)], dim=1)


def remove_small_boxes(boxes, min_size):
    """Indices (int64) of the boxes whose width and height are both ``>= min_size``."""
    if isinstance(min_size, bool) or not is_real(min_size):
        raise TypeError("remove_small_boxes: min_size must be a number, got %r" % (min_size,))
    data = np.asarray(_as_boxes("remove_small_boxes", "boxes", boxes, ordered=False))
    keep = (data[:, 2] - data[:, 0] >= min_size) & (data[:, 3] - data[:, 1] >= min_size)
    return np.nonzero(keep)[0].astype(np.int64)


# ------------------------------------------------------------------------- shared parts
class AspectAngle(Function):
    """``atan2(width, height)``: ``atan(w / h)`` for ``h > 0``, ``pi/2`` at ``h = 0 < w``,
    and 0 with zero gradient for a point box."""

    @staticmethod
    def forward(ctx, width, height):
        ctx.save_for_backward(width, height)
        return np.arctan2(width, height)

    @staticmethod
    def backward(ctx, grad_output):
        width, height = ctx.saved_tensors
        norm = width * width + height * height
        scale = grad_output / np.where(norm == 0, 1, norm)
        return scale * height, -scale * width


def _geometry(boxes1, boxes2):
    """Intersection, union, enclosing box (width, height) and centre distance squared of
    two broadcastable box Tensors (..., 4)."""
    x1, y1, x2, y2 = _columns(boxes1)
    u1, v1, u2, v2 = _columns(boxes2)
    inter = ((minimum(x2, u2) - maximum(x1, u1)).clamp(min=0)
             * (minimum(y2, v2) - maximum(y1, v1)).clamp(min=0))
    union = (x2 - x1) * (y2 - y1) + (u2 - u1) * (v2 - v1) - inter
    enclosing_width = maximum(x2, u2) - minimum(x1, u1)
    enclosing_height = maximum(y2, v2) - minimum(y1, v1)
    centre_distance = ((x1 + x2 - u1 - u2) / 2) ** 2 + ((y1 + y2 - v1 - v2) / 2) ** 2
    return inter, union, enclosing_width, enclosing_height, centre_distance


def _aspect_penalty(boxes1, boxes2, iou, eps):
    """CIoU's ``alpha v`` with alpha held constant."""
    x1, y1, x2, y2 = _columns(boxes1)
    u1, v1, u2, v2 = _columns(boxes2)
    difference = AspectAngle.apply(x2 - x1, y2 - y1) - AspectAngle.apply(u2 - u1, v2 - v1)
    v = (4 / math.pi ** 2) * difference ** 2
    with no_grad():
        alpha = _ratio(v, 1 - iou + v + eps).detach()
    return alpha * v


def _generalized(boxes1, boxes2, eps):
    inter, union, width, height, _ = _geometry(boxes1, boxes2)
    enclosing = width * height
    return _ratio(inter, union + eps) - _ratio(enclosing - union, enclosing + eps)


def _distance(boxes1, boxes2, eps):
    """(DIoU, IoU)."""
    inter, union, width, height, centre_distance = _geometry(boxes1, boxes2)
    iou = _ratio(inter, union + eps)
    return iou - _ratio(centre_distance, width ** 2 + height ** 2 + eps), iou


def _complete(boxes1, boxes2, eps):
    diou, iou = _distance(boxes1, boxes2, eps)
    return diou - _aspect_penalty(boxes1, boxes2, iou, eps)


# ----------------------------------------------------------------------- pairwise
def _pairwise(op, boxes1, boxes2):
    boxes1 = _as_boxes(op, "boxes1", boxes1)
    boxes2 = _as_boxes(op, "boxes2", boxes2)
    return boxes1.reshape(-1, 1, 4), boxes2.reshape(1, -1, 4)


def generalized_box_iou(boxes1, boxes2):
    """Pairwise generalized IoU of ``boxes1 (N, 4)`` and ``boxes2 (M, 4)`` → ``(N, M)``.

    ``IoU - (C - U) / C`` with C the enclosing box's area, in ``[-1, 1]``.
    """
    return _generalized(*_pairwise("generalized_box_iou", boxes1, boxes2), 0.0)


def distance_box_iou(boxes1, boxes2, eps=1e-7):
    """Pairwise distance IoU ``IoU - d^2 / (c^2 + eps)`` → ``(N, M)``."""
    eps = non_negative_float("distance_box_iou", "eps", eps)
    return _distance(*_pairwise("distance_box_iou", boxes1, boxes2), eps)[0]


def complete_box_iou(boxes1, boxes2, eps=1e-7):
    """Pairwise complete IoU ``DIoU - alpha v`` → ``(N, M)``."""
    eps = non_negative_float("complete_box_iou", "eps", eps)
    return _complete(*_pairwise("complete_box_iou", boxes1, boxes2), eps)


# ------------------------------------------------------------------------- losses
def _matched(op, boxes1, boxes2, reduction, eps):
    check_reduction(op, reduction)
    eps = non_negative_float(op, "eps", eps)
    boxes1 = _as_boxes(op, "boxes1", boxes1, pairwise=False)
    boxes2 = _as_boxes(op, "boxes2", boxes2, pairwise=False)
    if boxes1.shape != boxes2.shape:
        raise ValueError("%s: boxes1 and boxes2 must have the same shape, got %s and %s"
                         % (op, tuple(boxes1.shape), tuple(boxes2.shape)))
    return boxes1, boxes2, eps


def _reduce(loss, reduction):
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":   # torchvision: the mean of no boxes is 0, not NaN
        return loss.mean() if loss.numel() > 0 else loss.sum() * 0.0
    return loss


def generalized_box_iou_loss(boxes1, boxes2, reduction="none", eps=1e-7):
    """``1 - GIoU`` of matched boxes ``(..., 4)`` (torchvision's loss).

    Parameters
    ----------
    boxes1, boxes2 : Tensor or ndarray (..., 4), float32 or float64, same shape
    reduction : ``'none'`` | ``'mean'`` | ``'sum'``
    eps : float >= 0, added to the union and the enclosing area
    """
    boxes1, boxes2, eps = _matched("generalized_box_iou_loss", boxes1, boxes2, reduction, eps)
    return _reduce(1 - _generalized(boxes1, boxes2, eps), reduction)


def distance_box_iou_loss(boxes1, boxes2, reduction="none", eps=1e-7):
    """``1 - DIoU`` of matched boxes ``(..., 4)`` (arguments as
    :func:`generalized_box_iou_loss`)."""
    boxes1, boxes2, eps = _matched("distance_box_iou_loss", boxes1, boxes2, reduction, eps)
    return _reduce(1 - _distance(boxes1, boxes2, eps)[0], reduction)


def complete_box_iou_loss(boxes1, boxes2, reduction="none", eps=1e-7):
    """``1 - CIoU`` of matched boxes ``(..., 4)`` (arguments as
    :func:`generalized_box_iou_loss`)."""
    boxes1, boxes2, eps = _matched("complete_box_iou_loss", boxes1, boxes2, reduction, eps)
    return _reduce(1 - _complete(boxes1, boxes2, eps), reduction)


giou_loss = generalized_box_iou_loss
diou_loss = distance_box_iou_loss
ciou_loss = complete_box_iou_loss
