"""Detection operators with ``torchvision.ops``' names: box geometry and IoU losses,
RoI Align / RoI pooling (and their FPN form), and the sigmoid focal loss.

Everything here is differentiable through fastdl's autograd; the RoI ops run on
the compiled kernels of ``fastdl.kernels.detection``. Box IoU, NMS and anchors
live in :mod:`fastdl.detection`.
"""
from fastdl.functional.loss import sigmoid_focal_loss
from fastdl.ops.boxes import (BOX_FORMATS, box_area, box_convert, ciou_loss, clip_boxes_to_image,
                              complete_box_iou, complete_box_iou_loss, diou_loss,
                              distance_box_iou, distance_box_iou_loss, generalized_box_iou,
                              generalized_box_iou_loss, giou_loss, remove_small_boxes)
from fastdl.ops.roi import (LevelMapper, MultiScaleRoIAlign, RoIAlign, RoIPool,
                            convert_boxes_to_roi_format, roi_align, roi_pool)

__all__ = ["BOX_FORMATS", "LevelMapper", "MultiScaleRoIAlign", "RoIAlign", "RoIPool",
           "box_area", "box_convert", "ciou_loss", "clip_boxes_to_image", "complete_box_iou",
           "complete_box_iou_loss", "convert_boxes_to_roi_format", "diou_loss",
           "distance_box_iou", "distance_box_iou_loss", "generalized_box_iou",
           "generalized_box_iou_loss", "giou_loss", "remove_small_boxes", "roi_align",
           "roi_pool", "sigmoid_focal_loss"]
