"""The cascade detector: losses, stage targets at rising IoU thresholds, gradients,
a short training run, the inference format."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastdl
from fastdl import deploy, optim
from fastdl.data import make_shapes
from fastdl.models import CascadeDetector, cascade_detector
from fastdl.models.cascade import STAGE_WEIGHTS, stage_targets


def scenes(n, seed=0):
    images, _, boxes = make_shapes(n, 32, max_objects=3, min_size=3, max_size=12, seed=seed)
    return images, [{"boxes": b[:, :4], "labels": b[:, 4].astype(np.int64)} for b in boxes]


def model(**options):
    fastdl.manual_seed(0)
    return cascade_detector(num_classes=2, in_channels=1, **options)


def test_losses_are_finite_scalars_on_a_tiny_batch():
    images, targets = scenes(2)
    detector = model()
    losses = detector(images, targets)
    expected = {"loss_objectness", "loss_rpn_box_reg"} | {
        "loss_%s_%d" % (kind, stage) for kind in ("classifier", "box_reg") for stage in range(3)}
    assert set(losses) == expected
    for name, value in losses.items():
        assert value.shape == () or value.numel() == 1, name
        assert np.isfinite(float(value.item())), name
        assert float(value.item()) >= 0, name


def test_anchor_head_and_box_head_shapes():
    images, targets = scenes(2)
    detector = model()
    features = detector.features(fastdl.Tensor(images))
    assert [tuple(f.shape) for f in features.values()] == [(2, 16, 32, 32), (2, 16, 16, 16),
                                                           (2, 16, 8, 8)]
    outputs = detector.anchor_head(list(features.values()))
    anchors = detector.anchors((32, 32))
    for (scores, deltas), anchor in zip(outputs, anchors):
        assert tuple(scores.shape) == (2, len(anchor))
        assert tuple(deltas.shape) == (2, len(anchor), 4)
    boxes = [t["boxes"] for t in targets]
    logits, deltas, refined = detector._run_stage(0, features, boxes, (32, 32))
    count = sum(len(b) for b in boxes)
    assert tuple(logits.shape) == (count, 3) and tuple(deltas.shape) == (count, 4)
    assert [r.shape for r in refined] == [b.shape for b in boxes]


def test_stage_targets_rise_with_the_iou_threshold():
    gt = np.array([[10.0, 10.0, 20.0, 20.0]])
    # IoU with gt: 1, 0.81 (9x9 inside), 0.64 (8x8), 0.49 (7x7), 0 (elsewhere)
    proposals = np.array([[10, 10, 20, 20], [10, 10, 19, 19], [10, 10, 18, 18],
                          [10, 10, 17, 17], [0, 0, 5, 5]], dtype=np.float64)
    labels_by_stage = []
    for stage, threshold in enumerate((0.5, 0.6, 0.7)):
        labels, deltas, iou = stage_targets(proposals, gt, [2], threshold, STAGE_WEIGHTS[stage])
        np.testing.assert_allclose(iou, [1.0, 0.81, 0.64, 0.49, 0.0])
        labels_by_stage.append(labels.tolist())
        assert np.all(deltas[labels == 0] == 0)
        assert np.all(deltas[0] == 0)               # the exact box needs no correction
        positive = np.flatnonzero(labels)
        np.testing.assert_allclose(
            fastdl.detection.decode_boxes(deltas[positive], proposals[positive],
                                          STAGE_WEIGHTS[stage]),
            np.repeat(gt, len(positive), axis=0), atol=1e-9)
    assert labels_by_stage == [[2, 2, 2, 0, 0], [2, 2, 2, 0, 0], [2, 2, 0, 0, 0]]
    labels, deltas, iou = stage_targets(proposals, np.zeros((0, 4)), [], 0.5)
    assert not labels.any() and not deltas.any() and not iou.any()


def test_later_stages_train_on_the_refined_boxes():
    images, targets = scenes(2)
    detector = model()
    seen = []
    original = detector._stage_loss

    def spy(stage, logits, deltas, stage_boxes, stage_targets_):
        seen.append([b.copy() for b in stage_boxes])
        return original(stage, logits, deltas, stage_boxes, stage_targets_)

    detector._stage_loss = spy
    detector(images, targets)
    assert len(seen) == 3
    for before, after in zip(seen, seen[1:]):
        # stage t+1 sees stage t's refined boxes (moved by its deltas), then the GT again
        assert all(len(a) == len(b) + len(t["boxes"]) for a, b, t in zip(after, before,
                                                                        targets))
        assert all(np.array_equal(a[len(b):], t["boxes"]) for a, b, t in zip(after, before,
                                                                             targets))
        assert any(not np.allclose(a[:len(b)], b) for a, b in zip(after, before))


def test_a_gradient_reaches_every_parameter():
    images, targets = scenes(4)
    detector = model()
    loss = sum(detector(images, targets).values())
    loss.backward()
    missing = [name for name, p in detector.named_parameters()
               if p.grad is None or not np.any(np.asarray(p.grad))]
    assert not missing


def test_a_short_training_run_lowers_the_loss():
    images, targets = scenes(8, seed=3)
    detector = model(stage_ious=(0.5, 0.6))
    optimizer = optim.Adam(detector.parameters(), lr=3e-3)
    history = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = sum(detector(images, targets).values())
        loss.backward()
        optimizer.step()
        history.append(float(loss.item()))
    assert np.all(np.isfinite(history))
    assert history[-1] < 0.7 * history[0]


def test_inference_returns_boxes_scores_labels_per_image():
    images, _ = scenes(3)
    detector = model()
    detector.eval()
    outputs = detector(images)
    assert len(outputs) == 3
    for output in outputs:
        assert set(output) == {"boxes", "scores", "labels"}
        boxes, scores, labels = (output[k].numpy() for k in ("boxes", "scores", "labels"))
        assert boxes.ndim == 2 and boxes.shape[1] == 4 and boxes.dtype == np.float32
        assert scores.shape == labels.shape == (len(boxes),)
        assert labels.dtype == np.int64 and set(labels.tolist()) <= {1, 2}
        assert len(boxes) <= detector.detections_per_img
        assert np.all(scores >= detector.box_score_thresh) and np.all(scores <= 1)
        assert np.all(np.diff(scores) <= 1e-7)             # by decreasing score
        assert np.all(boxes[:, 2] >= boxes[:, 0]) and np.all(boxes[:, 3] >= boxes[:, 1])
        assert np.all(boxes >= 0) and np.all(boxes <= 32)


def test_single_scale_and_single_stage_variants():
    images, targets = scenes(2)
    single = model(levels=(2,), anchor_sizes=((4, 6, 8, 12, 16, 24),), stage_ious=(0.5,))
    assert set(single(images, targets)) == {"loss_objectness", "loss_rpn_box_reg",
                                            "loss_classifier_0", "loss_box_reg_0"}
    assert len(single.anchors((32, 32))) == 1 and len(single.box_heads) == 1
    single.eval()
    assert len(single(images)) == 2


def test_argument_errors():
    with pytest.raises(ValueError, match="levels"):
        CascadeDetector(levels=(3,), anchor_sizes=((4,),))
    with pytest.raises(ValueError, match="anchor_sizes"):
        CascadeDetector(levels=(0, 1), anchor_sizes=((4,),))
    with pytest.raises(ValueError, match="same number"):
        CascadeDetector(levels=(0, 1), anchor_sizes=((4,), (8, 12)))
    with pytest.raises(ValueError, match="stage_ious"):
        CascadeDetector(stage_ious=(0.5, 0.6, 0.7, 0.8))
    images, targets = scenes(2)
    detector = model()
    with pytest.raises(ValueError, match="needs targets"):
        detector(images)
    with pytest.raises(ValueError, match="one target per image"):
        detector(images, targets[:1])


def test_an_image_without_objects_trains_as_background():
    images = np.zeros((2, 1, 32, 32), dtype=np.float32)
    targets = [{"boxes": np.zeros((0, 4)), "labels": np.zeros(0, dtype=np.int64)},
               {"boxes": np.array([[3.0, 3.0, 8.0, 8.0]]), "labels": np.array([1])}]
    detector = model()
    losses = detector(images, targets)
    loss = sum(losses.values())
    loss.backward()
    assert all(np.isfinite(float(v.item())) for v in losses.values())


@pytest.mark.parametrize("options", [{}, {"levels": (2,), "anchor_sizes": ((4, 8),),
                                          "stage_ious": (0.5,)}])
def test_compiled_inference_equals_the_eager_detections(options):
    images, targets = scenes(3, seed=5)
    detector = model(**options)
    optimizer = optim.SGD(detector.parameters(), lr=0.01, momentum=0.9)
    for _ in range(2):      # trained a little: BN statistics and heads away from their init
        losses = detector(images, targets)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    detector.eval()
    compiled = deploy.compile(detector, images[:1])
    # the dense stage's plan equals its eager outputs (several outputs, one tuple)
    eager = [np.asarray(t.array) for t in detector.dense_stage()(fastdl.Tensor(images))]
    planned = compiled.dense(images)
    assert isinstance(planned, tuple) and len(planned) == len(eager)
    for got, want in zip(planned, eager):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    for batch in (images[:1], images):
        expected, got = detector(batch), compiled(batch)
        assert len(got) == len(expected)
        for mine, theirs in zip(got, expected):
            assert len(theirs["boxes"]) > 0
            np.testing.assert_array_equal(mine["labels"].array, theirs["labels"].array)
            np.testing.assert_allclose(mine["boxes"].array, theirs["boxes"].array, atol=1e-3)
            np.testing.assert_allclose(mine["scores"].array, theirs["scores"].array,
                                       atol=1e-5)
    with pytest.raises(ValueError, match=r"expected images \(N, 1, 32, 32\)"):
        compiled(np.zeros((1, 1, 16, 16), np.float32))


def test_the_example_runs_and_its_plans_give_the_eager_ap():
    example = os.path.join(os.path.dirname(__file__), os.pardir, "examples",
                           "detect_cascade.py")
    result = subprocess.run([sys.executable, example, "--epochs", "1", "--train", "32",
                             "--test", "16"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    table = result.stdout.split("all objects are COCO-small)\n")[1]
    rows = [line.split() for line in table.splitlines() if line.strip()]
    assert len(rows) == 3
    for row in rows:   # AP (eager) and plan AP, the first and last numbers
        assert float(row[-7]) == float(row[-1]), row
