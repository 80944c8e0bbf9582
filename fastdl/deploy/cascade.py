"""Compiled inference of a :class:`fastdl.models.CascadeDetector` up to its NMS.

The dense stage (backbone, FPN and anchor head: one plan with several outputs) and
each box head (pooled RoI features to logits and deltas) become inference plans;
proposals, RoI Align and the NMS, whose sizes depend on the scores, stay NumPy.
"""
import numpy as np

__all__ = ["CompiledCascade", "compile_cascade"]


def _array(value):
    return np.asarray(getattr(value, "array", value))


class CompiledCascade:
    """A :class:`CascadeDetector`'s inference with its dense stage and box heads as
    inference plans: ``compiled(images)`` returns one dict of ``boxes``, ``scores`` and
    ``labels`` per image, as the eager model in eval mode does.

    Attributes
    ----------
    dense : InferencePlan
        Backbone, FPN and anchor head (``DenseStage``'s outputs).
    heads : list of InferencePlan
        Each stage's box head: pooled RoI features to (logits, deltas).
    """

    def __init__(self, detector, dense, heads, input_shape):
        self.detector, self.dense, self.heads = detector, dense, heads
        self.input_shape = tuple(input_shape)

    def __call__(self, images):
        images = _array(images)
        if images.ndim != 4 or images.shape[1:] != self.input_shape:
            raise ValueError("CompiledCascade: expected images (N, %d, %d, %d), got shape %s"
                             % (self.input_shape + (images.shape,)))
        images = images.astype(self.dense.dtype, copy=False)
        return self.detector.detect(images, tuple(images.shape[-2:]), self.dense,
                                    self.heads)


def compile_cascade(detector, example, max_shapes=4):
    """A :class:`CompiledCascade` of ``detector`` (put in eval mode) for images shaped
    like ``example (N, C, H, W)``; the batch size may vary, and ``max_shapes`` batch
    sizes keep their buffers in each plan (the box heads see varying proposal counts)."""
    from fastdl import deploy
    detector.eval()
    example = _array(example)
    dense = deploy.compile(detector.dense_stage(), example, max_shapes)
    pooled = np.zeros((2, detector.anchor_head.conv.out_channels)
                      + tuple(detector.roi_pool.output_size), example.dtype)
    heads = [deploy.compile(head, pooled, max_shapes) for head in detector.box_heads]
    return CompiledCascade(detector, dense, heads, example.shape[1:])
