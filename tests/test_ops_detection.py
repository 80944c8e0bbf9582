"""fastdl.ops: box ops and IoU losses, RoI Align/pooling, FPN levels, sigmoid focal loss,
against the NumPy references of torchvision's formulas (tests/reference_detection.py)."""
import numpy as np
import pytest

import fastdl
import reference_detection as ref
from fastdl import ops
from fastdl.functional import binary_cross_entropy_with_logits
from fastdl.testing import gradcheck

try:   # an extra oracle where a torchvision matching the installed torch imports
    import torch
    import torchvision.ops as tv_ops
except Exception:   # noqa: BLE001 (a torchvision built for another torch fails to load)
    tv_ops = None


def boxes(rng, n, dtype=np.float64, degenerate=0, low=1.0):
    xy = rng.uniform(0, 40, size=(n, 2))
    wh = rng.uniform(low, 20, size=(n, 2))
    wh[:degenerate] = 0
    return np.concatenate([xy, xy + wh], axis=1).astype(dtype)


def tensor(array, grad=False):
    return fastdl.Tensor(np.array(array), requires_grad=grad)


# ------------------------------------------------------------------------ box ops
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["generalized_box_iou", "distance_box_iou", "complete_box_iou"])
def test_pairwise_iou_variants_match_reference(name, dtype, rng):
    a = boxes(rng, 9, dtype, degenerate=2)
    b = np.concatenate([boxes(rng, 6, dtype, degenerate=1), a[:3]])
    reference = {"generalized_box_iou": ref.giou, "distance_box_iou": ref.diou,
                 "complete_box_iou": ref.ciou}[name]
    out = getattr(ops, name)(a, b)
    assert out.shape == (9, 9) and out.dtype == dtype
    assert np.isfinite(np.asarray(out)).all()
    rtol = 1e-5 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(np.asarray(out), ref.pairwise(reference, a.astype(np.float64),
                                                             b.astype(np.float64)),
                               rtol=rtol, atol=rtol)


@pytest.mark.parametrize("name", ["generalized_box_iou_loss", "distance_box_iou_loss",
                                  "complete_box_iou_loss"])
def test_losses_match_reference_and_reduce(name, rng):
    a, b = boxes(rng, 12), boxes(rng, 12)
    b[:3] = a[:3] + 0.5   # overlapping pairs as well as disjoint ones
    reference = {"generalized_box_iou_loss": lambda p, q: 1 - ref.giou(p, q, 1e-7),
                 "distance_box_iou_loss": lambda p, q: 1 - ref.diou(p, q),
                 "complete_box_iou_loss": lambda p, q: 1 - ref.ciou(p, q)}[name]
    expected = np.array([reference(p, q) for p, q in zip(a, b)])
    loss = getattr(ops, name)
    np.testing.assert_allclose(np.asarray(loss(a, b)), expected, rtol=1e-10)
    np.testing.assert_allclose(float(loss(a, b, reduction="sum")), expected.sum(), rtol=1e-10)
    np.testing.assert_allclose(float(loss(a, b, reduction="mean")), expected.mean(), rtol=1e-10)
    assert float(loss(a[:0], b[:0], reduction="mean")) == 0.0   # torchvision: 0, not NaN
    assert np.asarray(loss(a[0], b[0])).shape == ()            # single (4,) boxes
    assert ops.giou_loss is ops.generalized_box_iou_loss
    assert ops.diou_loss is ops.distance_box_iou_loss
    assert ops.ciou_loss is ops.complete_box_iou_loss


@pytest.mark.parametrize("name", ["generalized_box_iou_loss", "distance_box_iou_loss"])
def test_losses_gradcheck(name, rng):
    a, b = boxes(rng, 5), boxes(rng, 5)
    b[:2] = a[:2] + rng.uniform(0.2, 2.0, size=(2, 4))
    loss = getattr(ops, name)
    gradcheck(lambda p, q: loss(p, q), [tensor(a, True), tensor(b, True)])
    pairwise = ops.generalized_box_iou if name.startswith("gen") else ops.distance_box_iou
    gradcheck(lambda p, q: pairwise(p, q), [tensor(a, True), tensor(b[:3], True)])


def test_ciou_gradient_holds_alpha_constant(rng):
    """CIoU's alpha has no gradient (torchvision): compare with finite differences of
    DIoU loss + alpha0 * v, alpha0 frozen at the evaluation point."""
    a, b = boxes(rng, 4), boxes(rng, 4)
    b[:2] = a[:2] + rng.uniform(0.2, 2.0, size=(2, 4))
    weights = rng.normal(size=4)

    def v_of(x, y):
        return 4 / np.pi ** 2 * (np.arctan2(x[2] - x[0], x[3] - x[1])
                                 - np.arctan2(y[2] - y[0], y[3] - y[1])) ** 2

    def frozen(p, q, alphas):
        return sum(w * (1 - ref.diou(x, y) + alpha * v_of(x, y))
                   for w, x, y, alpha in zip(weights, p, q, alphas))

    alphas = []
    for x, y in zip(a, b):
        inter, union, _, _, _ = ref.box_parts(x, y)
        iou, v = inter / (union + 1e-7), v_of(x, y)
        alphas.append(v / (1 - iou + v + 1e-7))
    p, q = tensor(a, True), tensor(b, True)
    (ops.ciou_loss(p, q) * fastdl.Tensor(weights)).sum().backward()
    for index, (analytic, array) in enumerate([(np.asarray(p.grad), a), (np.asarray(q.grad), b)]):
        numeric = np.zeros_like(array)
        for i in np.ndindex(array.shape):
            plus, minus = array.copy(), array.copy()
            plus[i] += 1e-6
            minus[i] -= 1e-6
            args_plus = (plus, b) if index == 0 else (a, plus)
            args_minus = (minus, b) if index == 0 else (a, minus)
            numeric[i] = (frozen(*args_plus, alphas) - frozen(*args_minus, alphas)) / 2e-6
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)


def test_zero_area_policy_gives_zero_never_nan():
    point = np.array([[3.0, 4.0, 3.0, 4.0]])
    line = np.array([[1.0, 1.0, 5.0, 1.0]])          # zero height
    for a, b in [(point, point), (line, line), (point, line)]:
        for fn in (ops.generalized_box_iou, ops.distance_box_iou, ops.complete_box_iou):
            assert np.isfinite(np.asarray(fn(a, b))).all()
    assert float(ops.generalized_box_iou(point, point)[0, 0]) == 0.0   # pytorch/vision#7746
    p = tensor(point, True)
    for loss in (ops.giou_loss, ops.diou_loss, ops.ciou_loss):
        for eps in (1e-7, 0.0):
            p.grad = None
            value = loss(p, point, eps=eps, reduction="sum")
            value.backward()
            assert float(value) == 1.0 and np.isfinite(np.asarray(p.grad)).all()
    p = tensor(line, True)
    ops.ciou_loss(p, boxes(np.random.default_rng(1), 1), reduction="sum").backward()
    assert np.isfinite(np.asarray(p.grad)).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_box_convert_area_clip_and_remove_small(dtype, rng):
    b = boxes(rng, 7, dtype)
    xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], 1)
    cxcywh = np.concatenate([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], 1)
    forms = {"xyxy": b, "xywh": xywh, "cxcywh": cxcywh}
    for source, array in forms.items():
        for target, expected in forms.items():
            out = ops.box_convert(array, source, target)
            assert out.dtype == dtype
            np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ops.box_area(b)), xywh[:, 2] * xywh[:, 3], rtol=1e-6)
    wide = np.array([[-5, 2, 30, 50], [1, -1, 3, 4]], dtype=dtype)
    np.testing.assert_array_equal(np.asarray(ops.clip_boxes_to_image(wide, (40, 20))),
                                  [[0, 2, 20, 40], [1, 0, 3, 4]])
    small = np.array([[0, 0, 1, 5], [0, 0, 5, 5], [2, 2, 4, 9]], dtype=dtype)
    assert ops.remove_small_boxes(small, 2).tolist() == [1, 2]
    gradcheck(lambda x: ops.box_convert(x, "cxcywh", "xywh"), [tensor(cxcywh.astype(float),
                                                                      True)])


def test_box_arguments_are_validated():
    good = np.array([[0.0, 0, 2, 2]])
    with pytest.raises(ValueError, match="boxes1 need x2 >= x1"):
        ops.generalized_box_iou(np.array([[2.0, 0, 1, 2]]), good)
    with pytest.raises(ValueError, match=r"boxes2 must have shape \(N, 4\)"):
        ops.distance_box_iou(good, np.zeros((2, 3)))
    with pytest.raises(TypeError, match="boxes must be float32 or float64"):
        ops.box_area(np.array([[0, 0, 2, 2]]))
    with pytest.raises(ValueError, match="NaN"):
        ops.giou_loss(np.array([[0.0, 0, np.nan, 2]]), good)
    with pytest.raises(ValueError, match="in_fmt must be one of"):
        ops.box_convert(good, "xyxyxy", "xyxy")
    with pytest.raises(ValueError, match="reduction"):
        ops.ciou_loss(good, good, reduction="avg")
    with pytest.raises(ValueError, match="eps must be a number >= 0"):
        ops.diou_loss(good, good, eps=-1)
    with pytest.raises(ValueError, match="same shape"):
        ops.diou_loss(good, np.zeros((2, 4)))
    with pytest.raises(ValueError, match="size must be"):
        ops.clip_boxes_to_image(good, (10,))


# ----------------------------------------------------------------------- RoI ops
def feature_and_rois(rng, dtype=np.float64):
    features = rng.standard_normal((2, 3, 9, 11)).astype(dtype)
    rois = np.array([[0, 1.3, 0.7, 7.9, 6.2], [1, -2.0, 3.1, 12.5, 9.4], [1, 4.0, 4.0, 4.2, 4.1],
                     [0, 0.0, 0.0, 21.0, 17.0], [1, 10.6, 8.2, 16.0, 15.0]], dtype=dtype)
    return features, rois


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio,scale,size", [(-1, 1.0, (3, 4)), (2, 0.5, (2, 2))])
def test_roi_align_matches_reference(dtype, aligned, sampling_ratio, scale, size, rng):
    features, rois = feature_and_rois(rng, dtype)
    out = ops.roi_align(features, rois, size, scale, sampling_ratio, aligned)
    assert out.shape == (5, 3) + size and out.dtype == dtype
    expected = ref.roi_align(features, rois, size, scale, sampling_ratio, aligned)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(np.asarray(out), expected, rtol=tol, atol=tol)
    per_image = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    order = np.argsort(rois[:, 0], kind="stable")
    listed = ops.roi_align(features, per_image, size, scale, sampling_ratio, aligned)
    np.testing.assert_array_equal(np.asarray(listed), np.asarray(out)[order])


def test_roi_align_gradcheck_and_deterministic_backward(rng):
    features, rois = feature_and_rois(rng)
    for aligned in (False, True):
        gradcheck(lambda x: ops.roi_align(x, rois, (2, 3), 0.8, 2, aligned),
                  [tensor(features, True)])
    x = tensor(features, True)
    grads = []
    for _ in range(2):
        x.grad = None
        (ops.roi_align(x, rois, 3, 1.0, -1) * np.arange(5 * 3 * 9).reshape(5, 3, 3, 3)).sum() \
            .backward()
        grads.append(np.array(x.grad))
    np.testing.assert_array_equal(grads[0], grads[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale,size", [(1.0, (3, 3)), (0.5, (2, 4))])
def test_roi_pool_matches_reference_and_gradcheck(dtype, scale, size, rng):
    features, rois = feature_and_rois(rng, dtype)
    out = ops.roi_pool(features, rois, size, scale)
    np.testing.assert_allclose(np.asarray(out), ref.roi_pool(features, rois, size, scale),
                               rtol=1e-6)
    if dtype == np.float64:   # random normal features: no ties
        gradcheck(lambda x: ops.roi_pool(x, rois, size, scale), [tensor(features, True)])


def test_roi_pool_ties_route_to_first_maximum():
    x = tensor(np.ones((1, 1, 6, 6)), True)
    out = ops.roi_pool(x, np.array([[0, 0.0, 0.0, 5.0, 5.0]]), 2, 1.0)
    out.sum().backward()
    grad = np.asarray(x.grad)
    assert grad.sum() == 4.0   # the upstream sum: one maximum per bin
    assert grad[0, 0, 0, 0] == 1 and grad[0, 0, 0, 3] == 1 and grad[0, 0, 3, 3] == 1


@pytest.mark.skipif(tv_ops is None, reason="torchvision not importable")
def test_roi_ops_match_torchvision(rng):
    features, rois = feature_and_rois(rng)
    x, r = torch.tensor(features), torch.tensor(rois)
    for aligned in (False, True):
        np.testing.assert_allclose(np.asarray(ops.roi_align(features, rois, 3, 0.5, -1, aligned)),
                                   tv_ops.roi_align(x, r, 3, 0.5, -1, aligned).numpy(),
                                   rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(ops.roi_pool(features, rois, 3, 0.5)),
                               tv_ops.roi_pool(x, r, 3, 0.5).numpy())
    a, b = boxes(rng, 6), boxes(rng, 6)
    np.testing.assert_allclose(np.asarray(ops.ciou_loss(a, b)),
                               tv_ops.complete_box_iou_loss(torch.tensor(a), torch.tensor(b)))


def test_roi_arguments_are_validated(rng):
    features, rois = feature_and_rois(rng)
    with pytest.raises(ValueError, match=r"batch indices must be integers in \[0, 2\)"):
        ops.roi_align(features, np.array([[2, 0, 0, 3, 3.0]]), 2)
    with pytest.raises(ValueError, match=r"boxes must be \(K, 5\)"):
        ops.roi_pool(features, rois[:, 1:], 2)
    with pytest.raises(ValueError, match=r"input must have shape \(N, C, H, W\)"):
        ops.roi_align(features[0], rois, 2)
    with pytest.raises(ValueError, match="output_size must be positive"):
        ops.roi_align(features, rois, (0, 2))
    with pytest.raises(ValueError, match="spatial_scale must be a number > 0"):
        ops.roi_pool(features, rois, 2, spatial_scale=0)
    with pytest.raises(ValueError, match=r"boxes\[1\] must have shape \(K, 4\)"):
        ops.roi_align(features, [rois[:2, 1:], rois[:2]], 2)


def test_level_mapper_and_multiscale_roi_align(rng):
    mapper = ops.LevelMapper(2, 5)
    sides = np.array([0.0, 10.0, 112.0, 223.0, 224.0, 448.0, 1000.0])
    box_list = [np.stack([np.zeros(7), np.zeros(7), sides, sides], 1)]
    expected = np.clip(np.floor(4 + np.log2(np.maximum(sides, 1e-300) / 224) + 1e-6), 2, 5) - 2
    assert mapper(box_list).tolist() == expected.astype(int).tolist()

    feats = {"p2": rng.standard_normal((2, 2, 16, 16)), "p3": rng.standard_normal((2, 2, 8, 8))}
    pooler = ops.MultiScaleRoIAlign(["p2", "p3"], 2, 2, canonical_scale=16, canonical_level=3)
    per_image = [boxes(rng, 4), boxes(rng, 3)]
    per_image[0][0] = [0, 0, 60, 60]   # large: level p3
    out = pooler(feats, per_image, [(64, 64), (60, 62)])
    levels = ops.LevelMapper(2, 3, 16, 3)(per_image)
    rois = ops.convert_boxes_to_roi_format(per_image)
    for k, level in enumerate(levels):
        name, scale = [("p2", 0.25), ("p3", 0.125)][level]
        np.testing.assert_allclose(np.asarray(out[k]),
                                   np.asarray(ops.roi_align(feats[name], rois[k:k + 1], 2,
                                                            scale, 2))[0])
    assert set(levels.tolist()) == {0, 1}
    x = tensor(feats["p3"], True)
    pooler({"p2": feats["p2"], "p3": x}, per_image, [(64, 64)] * 2).sum().backward()
    assert x.grad is not None and np.abs(np.asarray(x.grad)).sum() > 0


# ----------------------------------------------------------------- sigmoid focal loss
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_focal_loss_matches_reference(dtype, rng):
    x = (rng.standard_normal((4, 6)) * 3).astype(dtype)
    t = (rng.uniform(size=(4, 6)) > 0.6).astype(dtype)
    for alpha, gamma in [(0.25, 2), (-1, 0.5), (0.5, 0)]:
        expected = ref.sigmoid_focal_loss(x, t, alpha, gamma)
        out = ops.sigmoid_focal_loss(x, t, alpha, gamma)
        assert out.dtype == dtype
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(np.asarray(out), expected, rtol=tol, atol=tol)
        np.testing.assert_allclose(float(ops.sigmoid_focal_loss(x, t, alpha, gamma, "mean")),
                                   expected.mean(), rtol=tol)
    gradcheck(lambda z: ops.sigmoid_focal_loss(z, t.astype(float), 0.25, 2, "sum"),
              [tensor(x.astype(float), True)])
    gradcheck(lambda z: ops.sigmoid_focal_loss(z, np.full((4, 6), 0.3), 0.25, 1.5),
              [tensor(x.astype(float), True)])


def test_sigmoid_focal_loss_gradient_matches_torch_autograd(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(20) * 4
    t = (rng.uniform(size=20) > 0.5).astype(float)
    z = torch.tensor(x, requires_grad=True)
    p = torch.sigmoid(z)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(z, torch.tensor(t),
                                                              reduction="none")
    p_t = p * torch.tensor(t) + (1 - p) * (1 - torch.tensor(t))
    alpha_t = 0.25 * torch.tensor(t) + 0.75 * (1 - torch.tensor(t))
    (alpha_t * ce * (1 - p_t) ** 2).sum().backward()
    ours = tensor(x, True)
    ops.sigmoid_focal_loss(ours, t, reduction="sum").backward()
    np.testing.assert_allclose(np.asarray(ours.grad), z.grad.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_sigmoid_focal_loss_saturated_logits_stay_finite(gamma):
    x = tensor([100.0, -100.0, 100.0, -100.0, 800.0, -800.0], True)
    t = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    loss = ops.sigmoid_focal_loss(x, t, alpha=-1, gamma=gamma, reduction="sum")
    loss.backward()
    grad = np.asarray(x.grad)
    assert np.isfinite(float(loss)) and np.isfinite(grad).all()
    assert abs(grad[0]) < 1e-40 and abs(grad[1]) < 1e-40   # p_t = 1: (almost) no push
    assert grad[4] == 0.0 and grad[5] == 0.0
    np.testing.assert_allclose(grad[[2, 3]], [1.0, -1.0])
    if gamma == 0.0:   # exactly BCE with logits
        bce = binary_cross_entropy_with_logits(x.detach(), t, reduction="sum")
        assert float(loss) == pytest.approx(float(bce), rel=1e-15)


def test_sigmoid_focal_loss_arguments():
    x = np.zeros(3)
    with pytest.raises(ValueError, match="targets shape"):
        ops.sigmoid_focal_loss(x, np.zeros(4))
    with pytest.raises(ValueError, match="gamma must be a number >= 0"):
        ops.sigmoid_focal_loss(x, x, gamma=-1)
    with pytest.raises(ValueError, match="alpha must be in"):
        ops.sigmoid_focal_loss(x, x, alpha=2)
    with pytest.raises(ValueError, match="reduction"):
        ops.sigmoid_focal_loss(x, x, reduction="avg")
    with pytest.raises(TypeError, match="inputs must be float32 or float64"):
        ops.sigmoid_focal_loss(np.zeros(3, dtype=np.int64), x)
