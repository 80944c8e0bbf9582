"""Every loss, as a function and as a module, against torch (float64) and finite differences."""
import warnings

import numpy as np
import pytest

import fastdl
from fastdl import functional as F
from fastdl import nn
from fastdl.kernels.loss import TargetIndexError
from fastdl.testing import gradcheck

REDUCTIONS = ("none", "mean", "sum")


def _data(rng):
    """Arrays shared by the cases: logits (4, 5, 3), class targets, probabilities."""
    x = rng.normal(size=(4, 5, 3))
    y = rng.normal(size=(4, 5, 3))
    y[0, 0, 0] = x[0, 0, 0]                     # an exact tie: sign(0) = 0 for L1
    labels = rng.integers(0, 5, size=(4, 3))
    labels[0, 0] = -100                         # an ignored sample
    soft = np.exp(y) / np.exp(y).sum(axis=1, keepdims=True)
    weight = rng.uniform(0.5, 2.0, size=5)
    return dict(x=x, y=y, labels=labels, labels_1=np.where(labels < 0, 1, labels), soft=soft,
                weight=weight,
                log_p=x - np.log(np.exp(x).sum(axis=1, keepdims=True)),
                p=1 / (1 + np.exp(-x)), unit=rng.uniform(size=x.shape),
                sign=np.where(y > 0, 1.0, -1.0), pos_weight=rng.uniform(0.5, 3.0, size=3))


# name: (fastdl call, torch call, input keys, indices of differentiated inputs)
CASES = {
    "cross_entropy": (lambda f, a, b, d, r: f.cross_entropy(a, b, d["weight"], reduction=r),
                      "x labels", (0,)),
    "cross_entropy_smoothing": (
        lambda f, a, b, d, r: f.cross_entropy(a, b, d["weight"], reduction=r,
                                              label_smoothing=0.2), "x labels", (0,)),
    "cross_entropy_smoothing_unweighted": (
        lambda f, a, b, d, r: f.cross_entropy(a, b, reduction=r, label_smoothing=0.3),
        "x labels", (0,)),
    "cross_entropy_probabilities": (
        lambda f, a, b, d, r: f.cross_entropy(a, b, d["weight"], reduction=r,
                                              label_smoothing=0.1), "x soft", (0, 1)),
    "nll_loss": (lambda f, a, b, d, r: f.nll_loss(a, b, d["weight"], reduction=r),
                 "log_p labels", (0,)),
    "nll_loss_ignore_1": (lambda f, a, b, d, r: f.nll_loss(a, b, ignore_index=1, reduction=r),
                          "log_p labels_1", (0,)),
    "mse_loss": (lambda f, a, b, d, r: f.mse_loss(a, b, reduction=r), "x y", (0, 1)),
    "mse_loss_weight": (lambda f, a, b, d, r: f.mse_loss(a, b, reduction=r,
                                                         weight=d["unit_w"]), "x y", (0, 1)),
    "l1_loss": (lambda f, a, b, d, r: f.l1_loss(a, b, reduction=r), "x y", (0, 1)),
    "l1_loss_weight": (lambda f, a, b, d, r: f.l1_loss(a, b, reduction=r, weight=d["unit_w"]),
                       "x y", (0, 1)),
    "smooth_l1_loss": (lambda f, a, b, d, r: f.smooth_l1_loss(a, b, reduction=r, beta=0.5),
                       "x y", (0, 1)),
    "smooth_l1_loss_beta0": (lambda f, a, b, d, r: f.smooth_l1_loss(a, b, reduction=r, beta=0.0),
                             "x y", (0, 1)),
    "huber_loss": (lambda f, a, b, d, r: f.huber_loss(a, b, reduction=r, delta=0.7),
                   "x y", (0, 1)),
    "huber_loss_weight": (lambda f, a, b, d, r: f.huber_loss(a, b, reduction=r, delta=0.7,
                                                             weight=d["unit_w"]), "x y", (0, 1)),
    "binary_cross_entropy": (
        lambda f, a, b, d, r: f.binary_cross_entropy(a, b, d["bce_w"], reduction=r),
        "p unit", (0, 1)),
    "binary_cross_entropy_with_logits": (
        lambda f, a, b, d, r: f.binary_cross_entropy_with_logits(
            a, b, d["bce_w"], reduction=r, pos_weight=d["pos_weight"]), "x unit", (0, 1)),
    "soft_margin_loss": (lambda f, a, b, d, r: f.soft_margin_loss(a, b, reduction=r),
                         "x sign", (0,)),   # torch has no target gradient here
    "kl_div": (lambda f, a, b, d, r: f.kl_div(a, b, reduction=r), "log_p soft", (0, 1)),
    "kl_div_batchmean": (lambda f, a, b, d, r: f.kl_div(
        a, b, reduction="batchmean" if r == "mean" else r), "log_p soft", (0, 1)),
    "kl_div_log_target": (lambda f, a, b, d, r: f.kl_div(a, b, reduction=r, log_target=True),
                          "log_p log_soft", (0, 1)),
}


def _inputs(data, keys, make, grads):
    values = []
    for i, key in enumerate(keys.split()):
        value = data[key]
        values.append(make(value, i in grads and value.dtype.kind == "f"))
    return values


def _arguments(data, wrap):
    extras = {"unit_w": data["unit"], "bce_w": data["weight"][None, :, None],
              "weight": data["weight"], "pos_weight": data["pos_weight"]}
    return {k: wrap(v) for k, v in extras.items()}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_and_gradients_match_torch(name, reduction, rng):
    torch = pytest.importorskip("torch")
    call, keys, grads = CASES[name]
    data = _data(rng)
    data["log_soft"] = np.log(data["soft"])
    ours = _inputs(data, keys, lambda v, g: fastdl.Tensor(v, requires_grad=g), grads)
    theirs = _inputs(data, keys, lambda v, g: torch.tensor(v, requires_grad=g), grads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # kl_div 'mean' warns, in both libraries
        loss = call(F, *ours, _arguments(data, np.asarray), reduction)
        expected = call(torch.nn.functional, *theirs, _arguments(data, torch.tensor), reduction)
    np.testing.assert_allclose(loss.numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    upstream = rng.normal(size=expected.shape)
    loss.backward(upstream)
    expected.backward(torch.tensor(upstream))
    for index in grads:
        np.testing.assert_allclose(ours[index].grad, theirs[index].grad.numpy(), rtol=1e-9,
                                   atol=1e-12, err_msg="gradient of input %d" % index)


@pytest.mark.filterwarnings("ignore:kl_div")
@pytest.mark.parametrize("name", ["cross_entropy_smoothing", "cross_entropy_probabilities",
                                  "nll_loss", "huber_loss", "smooth_l1_loss",
                                  "binary_cross_entropy", "binary_cross_entropy_with_logits",
                                  "soft_margin_loss", "kl_div", "kl_div_log_target"])
def test_gradients_match_finite_differences(name, rng):
    call, keys, grads = CASES[name]
    data = {k: np.ascontiguousarray(v[:2, :, :2] if np.ndim(v) == 3 else
                                    v[:2, :2] if np.ndim(v) == 2 else v)
            for k, v in _data(rng).items()}
    data["log_soft"] = np.log(data["soft"])
    data["pos_weight"] = data["pos_weight"][:2]
    # keep |x - y| away from the kinks of the piecewise losses
    data["y"] = data["x"] + np.where(rng.random(data["x"].shape) < 0.5, -1, 1) * \
        rng.uniform(0.1, 2.0, data["x"].shape)
    inputs = _inputs(data, keys, lambda v, g: fastdl.Tensor(v, requires_grad=g), grads)
    extras = _arguments(data, np.asarray)
    extras["bce_w"] = data["weight"][None, :, None]
    for reduction in REDUCTIONS:
        assert gradcheck(lambda *a: call(F, *a, extras, reduction), inputs)


MODULES = [
    (lambda m, w: m.CrossEntropyLoss(weight=w, ignore_index=2, label_smoothing=0.1),
     "x labels_1"),
    (lambda m, w: m.CrossEntropyLoss(reduction="sum"), "x soft"),
    (lambda m, w: m.NLLLoss(weight=w, reduction="none"), "log_p labels"),
    (lambda m, w: m.BCELoss(), "p unit"),
    (lambda m, w: m.BCEWithLogitsLoss(reduction="sum", pos_weight=w[:3]), "x unit"),
    (lambda m, w: m.MSELoss(), "x y"),
    (lambda m, w: m.L1Loss(reduction="sum"), "x y"),
    (lambda m, w: m.SmoothL1Loss(beta=2.0), "x y"),
    (lambda m, w: m.HuberLoss(delta=0.3), "x y"),
    (lambda m, w: m.KLDivLoss(reduction="batchmean", log_target=True), "log_p log_p"),
    (lambda m, w: m.SoftMarginLoss(), "x sign"),
    (lambda m, w: m.MSELoss(size_average=False), "x y"),        # legacy arguments: 'sum'
    (lambda m, w: m.L1Loss(reduce=False), "x y"),               # legacy arguments: 'none'
]


@pytest.mark.parametrize("index", range(len(MODULES)))
def test_modules_match_torch_modules(index, rng):
    torch = pytest.importorskip("torch")
    make, keys = MODULES[index]
    data = _data(rng)
    ours = _inputs(data, keys, lambda v, g: fastdl.Tensor(v, requires_grad=g), (0,))
    theirs = _inputs(data, keys, lambda v, g: torch.tensor(v, requires_grad=g), (0,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # size_average/reduce are deprecated in both
        loss = make(nn, data["weight"])(*ours)
        expected = make(torch.nn, torch.tensor(data["weight"]))(*theirs)
    np.testing.assert_allclose(loss.numpy(), expected.detach().numpy(), rtol=1e-10)
    loss.sum().backward() if loss.ndim else loss.backward()
    expected.sum().backward()
    np.testing.assert_allclose(ours[0].grad, theirs[0].grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(6, 4), (4,)])
def test_cosine_embedding_loss_matches_torch_and_finite_differences(shape, reduction, rng):
    torch = pytest.importorskip("torch")
    x1, x2 = rng.normal(size=shape), rng.normal(size=shape)
    target = np.where(rng.random(shape[:-1]) < 0.5, 1, -1)
    if len(shape) == 2:
        x1[0] = 0.0                                  # a zero row: cosine 0, not NaN
    ours = [fastdl.Tensor(a, requires_grad=True) for a in (x1, x2)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x1, x2)]
    loss = nn.CosineEmbeddingLoss(margin=-0.2, reduction=reduction)(*ours, target)
    expected = torch.nn.CosineEmbeddingLoss(margin=-0.2, reduction=reduction)(
        *theirs, torch.tensor(target))
    np.testing.assert_allclose(loss.numpy(), expected.detach().numpy(), rtol=1e-12)
    loss.sum().backward() if loss.ndim else loss.backward()
    expected.sum().backward()
    for a, b in zip(ours, theirs):   # the zero row's gradient is ~1e6: ill-conditioned
        np.testing.assert_allclose(a.grad, b.grad.numpy(), rtol=1e-7, atol=1e-12)
    if len(shape) == 2:
        x1[0] = rng.normal(size=shape[-1])
    assert gradcheck(lambda a, b: F.cosine_embedding_loss(a, b, target, 0.1,
                                                          reduction=reduction),
                     [fastdl.Tensor(x1, requires_grad=True), fastdl.Tensor(x2,
                                                                           requires_grad=True)])


def test_weights_are_buffers_in_the_state_dict():
    loss = nn.BCEWithLogitsLoss(weight=np.ones(3), pos_weight=np.full(3, 2.0))
    assert sorted(loss.state_dict()) == ["pos_weight", "weight"]
    assert "weight" not in nn.CrossEntropyLoss().state_dict()
    assert repr(nn.CrossEntropyLoss()) == "CrossEntropyLoss()"


def test_cross_entropy_shapes_unbatched_and_many_spatial_dims(rng):
    torch = pytest.importorskip("torch")
    for shape in [(5,), (2, 5), (2, 5, 3), (2, 5, 2, 2, 2)]:
        x = rng.normal(size=shape)
        target = rng.integers(0, 5, size=shape[:1] + shape[2:] if len(shape) > 1 else ())
        for reduction in REDUCTIONS:
            ours = F.cross_entropy(x, target, reduction=reduction)
            theirs = torch.nn.functional.cross_entropy(torch.tensor(x), torch.tensor(target),
                                                       reduction=reduction)
            assert ours.shape == tuple(theirs.shape)
            np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12)


def test_stable_at_extreme_logits():
    z = fastdl.Tensor(np.array([[-1e4, 100.0, 1e4, -100.0]]), requires_grad=True)
    target = np.array([[1.0, 0.0, 0.0, 1.0]])
    loss = F.binary_cross_entropy_with_logits(z, target, reduction="none")
    np.testing.assert_allclose(loss.numpy(), [[1e4, 100.0, 1e4, 100.0]], rtol=1e-12)
    loss.sum().backward()
    np.testing.assert_allclose(z.grad, [[-1.0, 1.0, 1.0, -1.0]], rtol=1e-12)
    p = np.array([0.0, 1.0, 0.5])
    bce = F.binary_cross_entropy(p, np.array([1.0, 0.0, 1.0]), reduction="none")
    np.testing.assert_allclose(bce.numpy(), [100.0, 100.0, np.log(2)])   # logs clamp at -100
    margin = F.soft_margin_loss(np.array([1e4, -1e4]), np.array([-1.0, -1.0]), reduction="none")
    np.testing.assert_allclose(margin.numpy(), [1e4, 0.0])


def test_l1_gradient_is_zero_at_exact_ties():
    x = fastdl.Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    F.l1_loss(x, np.array([1.0, 1.0, 4.0]), reduction="sum").backward()
    np.testing.assert_array_equal(x.grad, [0.0, 1.0, -1.0])


def test_mean_over_only_ignored_targets_is_nan():
    value = F.cross_entropy(np.zeros((2, 3)), np.array([-100, -100]))
    assert np.isnan(value.numpy())
    assert np.isnan(F.nll_loss(np.zeros((2, 3)), np.array([-100, -100])).numpy())


def test_float32_inputs_stay_float32(rng):
    x = fastdl.Tensor(rng.normal(size=(3, 4)).astype(np.float32), requires_grad=True)
    for loss in (F.cross_entropy(x, np.array([0, 1, 3]), label_smoothing=0.1),
                 F.mse_loss(x, np.zeros((3, 4), np.float32)),
                 F.binary_cross_entropy_with_logits(x, np.ones((3, 4), np.float32))):
        assert loss.dtype == np.float32
        x.grad = None
        loss.backward()
        assert x.grad.dtype == np.float32


@pytest.mark.parametrize("call, error, match", [
    (lambda: F.cross_entropy(np.zeros((2, 3)), np.array([0, 3])), IndexError, "out of bounds"),
    (lambda: F.nll_loss(np.zeros((2, 3)), np.array([-1, 0])), ValueError, "out of bounds"),
    (lambda: F.cross_entropy(np.zeros((3, 4)), np.array([0, 1])), ValueError,
     "Expected input batch_size \\(3\\) to match target batch_size \\(2\\)"),
    (lambda: F.cross_entropy(np.zeros((2, 3, 4)), np.zeros((2, 5), np.int64)), RuntimeError,
     "shape"),
    (lambda: F.nll_loss(np.zeros((2, 3)), np.zeros((2, 1), np.int64)), ValueError, "shape"),
    (lambda: F.cosine_embedding_loss(np.zeros((2, 3)), np.zeros((2, 3)), np.ones(3)),
     ValueError, "target"),
    (lambda: F.cross_entropy(np.zeros((2, 3)), np.zeros((2, 3), np.int64)), TypeError,
     "probabilities"),
    (lambda: F.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), label_smoothing=1.5),
     ValueError, "label_smoothing"),
    (lambda: F.binary_cross_entropy(np.array([0.5, 1.5]), np.ones(2)), RuntimeError,
     "between 0 and 1"),
    (lambda: F.binary_cross_entropy(np.array([0.5, 0.5]), np.ones((2, 1))), ValueError,
     "same as input shape"),
    (lambda: F.binary_cross_entropy_with_logits(np.zeros(3), np.ones(2)), ValueError,
     "same as input shape"),
    (lambda: F.binary_cross_entropy_with_logits(np.zeros((2, 3)), np.ones((2, 3)),
                                                pos_weight=np.ones(2)), ValueError,
     "pos_weight"),
    (lambda: F.mse_loss(np.zeros((2, 3)), np.zeros((2, 3)), weight=np.ones(2)), ValueError,
     "weight"),
    (lambda: F.huber_loss(np.zeros(2), np.zeros(2), delta=0), ValueError, "delta"),
    (lambda: F.smooth_l1_loss(np.zeros(2), np.zeros(2), beta=-1), ValueError, "beta"),
    (lambda: F.kl_div(np.zeros(2), np.zeros(2), reduction="avg"), ValueError, "reduction"),
    (lambda: nn.NLLLoss(reduction="batchmean"), ValueError, "reduction"),
])
def test_bad_inputs_raise_torch_kinds_of_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_out_of_range_target_is_both_index_and_value_error():
    with pytest.raises(TargetIndexError) as info:
        nn.CrossEntropyLoss()(np.zeros((2, 3)), np.array([0, 5]))
    assert isinstance(info.value, IndexError) and isinstance(info.value, ValueError)
    assert "5" in str(info.value)


def test_broadcast_target_warns_as_torch(rng):
    with pytest.warns(UserWarning, match="different to the input size"):
        F.mse_loss(rng.normal(size=(3, 2)), rng.normal(size=(1, 2)))
    with pytest.warns(UserWarning, match="batchmean"):
        F.kl_div(np.zeros(2), np.ones(2))
