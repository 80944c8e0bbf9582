"""Fully convolutional nets and the FPN: any input size, gradients, shapes, receptive fields."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastdl
from fastdl import nn
from fastdl.data import make_shapes
from fastdl.models import FPN, fcn, receptive_field, resnet_fpn
from fastdl.testing import gradcheck


@pytest.mark.parametrize("size", [(17, 23), (32, 32), (64, 48)])
def test_fcn_accepts_any_input_size(size):
    fastdl.manual_seed(0)
    model = fcn(in_channels=2, num_classes=3, width=4, depth=3)
    out = model(fastdl.Tensor(np.zeros((2, 2) + size, np.float32)))
    assert out.shape == (2, 3) + size
    assert not any(isinstance(m, nn.Linear) for m in model.modules())


def test_fcn_gradcheck(rng):
    fastdl.manual_seed(0)
    model = fcn(in_channels=1, num_classes=2, width=2, depth=2).double()
    x = fastdl.Tensor(rng.normal(size=(2, 1, 5, 7)), requires_grad=True)
    params = list(model.parameters())[:4]     # the first conv and BN, and the input
    assert gradcheck(lambda x_, *p: model(x_), [x] + params)


def test_per_pixel_losses_with_class_weights_train_an_fcn(rng):
    images, masks, _ = make_shapes(16, 16, seed=1)
    fastdl.manual_seed(0)
    model = fcn(1, 3, width=4, depth=2)
    logits = model(fastdl.Tensor(images))
    weight = np.array([0.2, 1.0, 1.0])
    for loss in (fastdl.functional.cross_entropy(logits, masks, weight),
                 fastdl.functional.focal_loss(logits, masks, weight)):
        assert np.isfinite(loss.item())


def test_fpn_shapes_and_hand_computed_receptive_fields():
    fastdl.manual_seed(0)
    model = resnet_fpn(width=4, out_channels=8)
    maps = model(fastdl.Tensor(np.zeros((1, 3, 17, 23), np.float32)))
    assert [m.shape for m in maps] == [(1, 8, 17, 23), (1, 8, 9, 12), (1, 8, 5, 6)]
    # ResNet-8 stages end at fields 7 (stride 1), 13 (stride 2), 25 (stride 4); every level
    # sees the deepest field through the top-down path, plus its 3x3 smoothing: 25 + 2*stride.
    assert receptive_field(model, 32) == [27, 29, 33]
    assert receptive_field(resnet_fpn(width=4, top_down=False), 32) == [9, 17, 33]
    with pytest.raises(ValueError, match="expected 3 feature maps"):
        FPN([4, 8, 16], 8)([fastdl.Tensor(np.zeros((1, 4, 4, 4), np.float32))])


def test_make_shapes_masks_agree_with_boxes():
    images, masks, boxes = make_shapes(20, 24, min_size=3, max_size=6, seed=3)
    assert images.shape == (20, 1, 24, 24) and masks.shape == (20, 24, 24)
    for mask, image_boxes in zip(masks, boxes):
        for x1, y1, x2, y2, label in image_boxes:
            assert 3 <= x2 - x1 <= 6 and label in (1, 2)
        assert set(np.unique(mask)) <= {0, 1, 2}


def test_segmentation_example_reaches_mean_iou_08():
    example = os.path.join(os.path.dirname(__file__), os.pardir, "examples",
                           "segment_shapes.py")
    result = subprocess.run([sys.executable, example], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert float(result.stdout.split("mean IoU on 128 held-out scenes: ")[1][:5]) >= 0.8
