"""Optimizers against an independent NumPy implementation of the published update rules."""
import itertools

import numpy as np
import pytest
from scipy import optimize

import numba
from fastdl import optim
from fastdl.nn import Parameter


class NumpyOptimizer:
    """The update rules as written in torch.optim's documentation, one array at a time."""

    def __init__(self, kind, **h):
        self.kind, self.h, self.state, self.t = kind, h, {}, 0

    def step(self, params, grads):
        self.t += 1
        h = self.h
        for i, (p, g) in enumerate(zip(params, grads)):
            s = self.state.setdefault(i, {})
            g = g + h.get("weight_decay", 0) * p if self.kind != "adamw" else g
            if self.kind == "sgd":
                if h.get("momentum", 0):
                    b = g if "b" not in s else h["momentum"] * s["b"] + (
                        1 - h.get("dampening", 0)) * g
                    s["b"] = b
                    g = g + h["momentum"] * b if h.get("nesterov") else b
                p -= h["lr"] * g
            elif self.kind == "adagrad":
                s["sum"] = s.get("sum", h.get("initial_accumulator_value", 0) *
                                 np.ones_like(p)) + g * g
                clr = h["lr"] / (1 + (self.t - 1) * h.get("lr_decay", 0))
                p -= clr * g / (np.sqrt(s["sum"]) + h.get("eps", 1e-10))
            elif self.kind == "rmsprop":
                a = h.get("alpha", 0.99)
                s["v"] = a * s.get("v", 0) + (1 - a) * g * g
                v = s["v"]
                if h.get("centered"):
                    s["m"] = a * s.get("m", 0) + (1 - a) * g
                    v = v - s["m"] ** 2
                denominator = np.sqrt(v) + h.get("eps", 1e-8)
                if h.get("momentum", 0):
                    s["b"] = h["momentum"] * s.get("b", 0) + g / denominator
                    p -= h["lr"] * s["b"]
                else:
                    p -= h["lr"] * g / denominator
            else:  # adam / adamw
                b1, b2 = h.get("betas", (0.9, 0.999))
                if self.kind == "adamw":
                    p *= 1 - h["lr"] * h.get("weight_decay", 0.01)
                s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
                s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
                v = s["v"]
                if h.get("amsgrad"):
                    s["vmax"] = np.maximum(s.get("vmax", 0), v)
                    v = s["vmax"]
                m_hat = s["m"] / (1 - b1 ** self.t)
                v_hat = v / (1 - b2 ** self.t)
                p -= h["lr"] * m_hat / (np.sqrt(v_hat) + h.get("eps", 1e-8))


CLASSES = {"sgd": optim.SGD, "adagrad": optim.Adagrad, "rmsprop": optim.RMSprop,
           "adam": optim.Adam, "adamw": optim.AdamW}
CONFIGS = (
    [("sgd", dict(lr=0.1, momentum=m, dampening=d, nesterov=n, weight_decay=w))
     for m, d, n, w in itertools.product([0, 0.9], [0, 0.3], [False, True], [0, 0.01])
     if not (n and (m == 0 or d != 0))]
    + [("adagrad", dict(lr=0.1, lr_decay=ld, weight_decay=w, initial_accumulator_value=a))
       for ld, w, a in itertools.product([0, 0.01], [0, 0.1], [0, 0.5])]
    + [("rmsprop", dict(lr=0.01, alpha=0.9, momentum=m, centered=c, weight_decay=w))
       for m, c, w in itertools.product([0, 0.5], [False, True], [0, 0.1])]
    + [("adam", dict(lr=0.01, weight_decay=w, amsgrad=a, betas=(0.8, 0.99)))
       for w, a in itertools.product([0, 0.1], [False, True])]
    + [("adamw", dict(lr=0.01, weight_decay=w, amsgrad=a))
       for w, a in itertools.product([0.01, 0.2], [False, True])])


def _problem(rng):
    shapes = [(3, 4), (5,), (2, 1, 3)]
    initial = [rng.normal(size=s) for s in shapes]
    gradients = [[rng.normal(size=s) for s in shapes] for _ in range(50)]
    return initial, gradients


def _run(optimizer, params, gradients):
    for step_grads in gradients:
        for p, g in zip(params, step_grads):
            p.grad = None
            p._accumulate_grad(g)
        optimizer.step()


@pytest.mark.parametrize("kind, hyper", CONFIGS,
                         ids=["%s-%d" % (k, i) for i, (k, _) in enumerate(CONFIGS)])
def test_trajectory_equals_numpy_reference(kind, hyper, rng):
    initial, gradients = _problem(rng)
    params = [Parameter(a.copy()) for a in initial]
    _run(CLASSES[kind](params, **hyper), params, gradients)
    reference = [a.copy() for a in initial]
    numpy_optimizer = NumpyOptimizer(kind, **hyper)
    for step_grads in gradients:
        numpy_optimizer.step(reference, step_grads)
    for p, expected in zip(params, reference):
        np.testing.assert_allclose(p.array, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind, hyper", [c for c in CONFIGS if c[0] in ("sgd", "adam")][:6])
def test_trajectory_equals_torch(kind, hyper, rng):
    torch = pytest.importorskip("torch")
    initial, gradients = _problem(rng)
    params = [Parameter(a.copy()) for a in initial]
    _run(CLASSES[kind](params, **hyper), params, gradients)
    tensors = [torch.tensor(a.copy(), requires_grad=True) for a in initial]
    torch_class = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[kind]
    reference = torch_class(tensors, **hyper)
    for step_grads in gradients:
        for tensor, g in zip(tensors, step_grads):
            tensor.grad = torch.tensor(g)
        reference.step()
    for p, tensor in zip(params, tensors):
        np.testing.assert_allclose(p.array, tensor.detach().numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind, hyper, steps, gamma", [
    ("sgd", dict(lr=1e-3, momentum=0.9), 8000, 0.3), ("adagrad", dict(lr=1.0), 20000, 1.0),
    ("rmsprop", dict(lr=3e-3), 8000, 0.3), ("adam", dict(lr=2e-2), 8000, 0.3),
    ("adamw", dict(lr=2e-2, weight_decay=0.0), 8000, 0.3)])
def test_minimises_rosenbrock(kind, hyper, steps, gamma):
    answer = optimize.minimize(optimize.rosen, [-1.5, 2.0], jac=optimize.rosen_der,
                               method="BFGS").x
    point = Parameter(np.array([-1.5, 2.0]))
    optimizer = CLASSES[kind]([point], **hyper)
    schedule = optim.lr_scheduler.StepLR(optimizer, step_size=steps // 3, gamma=gamma)
    for _ in range(steps):
        point.grad = None
        point._accumulate_grad(optimize.rosen_der(point.array))
        optimizer.step()
        schedule.step()
    np.testing.assert_allclose(point.array, answer, atol=1e-3)


@pytest.mark.parametrize("kind, hyper", [CONFIGS[3], CONFIGS[-1], CONFIGS[-5],
                                         ("rmsprop", dict(lr=0.01, momentum=0.5,
                                                          centered=True))])
def test_state_dict_round_trip_continues_bit_for_bit(kind, hyper, rng):
    initial, gradients = _problem(rng)
    straight = [Parameter(a.copy()) for a in initial]
    _run(CLASSES[kind](straight, **hyper), straight, gradients)
    first = [Parameter(a.copy()) for a in initial]
    optimizer = CLASSES[kind](first, **hyper)
    _run(optimizer, first, gradients[:20])
    saved = optimizer.state_dict()
    resumed = [Parameter(p.array.copy()) for p in first]
    optimizer = CLASSES[kind](resumed, **hyper)
    optimizer.load_state_dict(saved)
    _run(optimizer, resumed, gradients[20:])
    for a, b in zip(straight, resumed):
        assert a.array.tobytes() == b.array.tobytes()


def test_frozen_and_gradless_parameters_are_untouched_and_not_advanced(rng):
    a, b, c = (Parameter(rng.normal(size=3)) for _ in range(3))
    b.requires_grad_(False)
    saved_b, saved_c = b.array.copy(), c.array.copy()
    optimizer = optim.Adam([a, b, c], lr=0.1)
    for _ in range(3):
        a.grad = None
        a._accumulate_grad(np.ones(3))
        b.grad = np.ones(3)          # even with a gradient, a frozen parameter stays
        optimizer.step()
    np.testing.assert_array_equal(b.array, saved_b)
    np.testing.assert_array_equal(c.array, saved_c)
    state = optimizer.state_dict()["state"]
    assert set(state) == {0} and state[0]["step"] == 3


def test_parameter_groups_with_their_own_lr_and_decay(rng):
    a, b = Parameter(np.ones(2)), Parameter(np.ones(2))
    optimizer = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5, "weight_decay": 0.1}],
                          lr=0.1)
    for p in (a, b):
        p._accumulate_grad(np.ones(2))
    optimizer.step()
    np.testing.assert_allclose(a.array, 0.9)
    np.testing.assert_allclose(b.array, 1 - 0.5 * 1.1)


def test_parameters_live_in_one_flat_buffer_and_gradients_accumulate_into_it(rng):
    from fastdl import Tensor
    w = Parameter(rng.normal(size=(2, 3)))
    bias = Parameter(rng.normal(size=3))
    optimizer = optim.SGD([w, bias], lr=0.1)
    assert w.array.base is optimizer.flat_params and bias.array.base is optimizer.flat_params
    ((Tensor(np.ones((4, 2))) @ w + bias).sum()).backward()
    assert np.shares_memory(w.grad, optimizer.flat_grads)
    np.testing.assert_array_equal(optimizer.flat_grads[6:], 4.0)


@pytest.mark.parametrize("factory, match", [
    (lambda p: optim.SGD(p, lr=-1), "Invalid learning rate: -1"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=-0.5), "momentum"),
    (lambda p: optim.SGD(p, lr=0.1, nesterov=True), "Nesterov"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "Nesterov"),
    (lambda p: optim.Adam(p, eps=-1), "epsilon"),
    (lambda p: optim.Adam(p, betas=(1.0, 0.9)), "beta"),
    (lambda p: optim.Adam(p, betas=(0.9, -0.1)), "beta"),
    (lambda p: optim.Adagrad(p, lr_decay=-1), "lr_decay"),
    (lambda p: optim.RMSprop(p, alpha=-1), "alpha"),
    (lambda p: optim.SGD([], lr=0.1), "empty parameter list"),
])
def test_bad_hyper_parameters_raise(factory, match):
    with pytest.raises(ValueError, match=match):
        factory([Parameter(np.ones(2))])


def test_clip_grad_norm_float64_and_one_pass_over_the_flat_buffer(rng):
    params = [Parameter(rng.normal(size=s).astype(np.float32)) for s in [(100, 10), (7,)]]
    optimizer = optim.SGD(params, lr=0.1)
    for p in params:
        p._accumulate_grad(np.full(p.shape, 1e19, dtype=np.float32))  # squares overflow f32
    total = optim.clip_grad_norm_(params, 1.0)
    expected = np.sqrt(1007) * 1e19
    assert np.isclose(total, expected, rtol=1e-6)
    assert np.isclose(np.sqrt(np.sum(optimizer.flat_grads.astype(np.float64) ** 2)), 1.0,
                      rtol=1e-5)


def test_clip_grad_norm_nonfinite_leaves_gradients_or_raises(rng):
    p = Parameter(np.ones(3))
    p._accumulate_grad(np.array([1.0, np.nan, 2.0]))
    total = optim.clip_grad_norm_([p], 1.0)
    assert np.isnan(total)
    np.testing.assert_array_equal(p.grad[[0, 2]], [1.0, 2.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        optim.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)


def test_clip_inf_norm_and_value(rng):
    p = Parameter(np.zeros(4))
    p._accumulate_grad(np.array([3.0, -4.0, 1.0, 0.0]))
    assert optim.clip_grad_norm_([p], 2.0, norm_type=float("inf")) == 4.0
    np.testing.assert_allclose(p.grad, np.array([3, -4, 1, 0]) * 2 / (4 + 1e-6))
    optim.clip_grad_value_([p], 1.0)
    assert np.abs(p.grad).max() <= 1.0


def test_grad_norm_bitwise_identical_at_one_and_two_threads(rng):
    values = rng.normal(size=1_000_003).astype(np.float32)
    from fastdl.kernels.optim import sum_of_squares
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = sum_of_squares(values)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = sum_of_squares(values)
    finally:
        numba.set_num_threads(before)
    assert one == two


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step()`")
def test_lr_schedulers_follow_torch_formulas():
    p = Parameter(np.ones(1))
    optimizer = optim.SGD([p], lr=1.0)
    step = optim.lr_scheduler.StepLR(optimizer, 2, gamma=0.5)
    lrs = []
    for _ in range(5):
        lrs.append(optimizer.param_groups[0]["lr"])
        step.step()
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.25]
    optimizer = optim.SGD([p], lr=1.0)
    cosine = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4, eta_min=0.1)
    values = []
    for _ in range(5):
        values.append(optimizer.param_groups[0]["lr"])
        cosine.step()
    np.testing.assert_allclose(values, [0.1 + 0.9 * (1 + np.cos(np.pi * t / 4)) / 2
                                        for t in range(5)])
    optimizer = optim.SGD([p], lr=1.0)
    multi = optim.lr_scheduler.MultiStepLR(optimizer, [1, 3], gamma=0.1)
    got = []
    for _ in range(4):
        got.append(optimizer.param_groups[0]["lr"])
        multi.step()
    np.testing.assert_allclose(got, [1.0, 0.1, 0.1, 0.01])
    optimizer = optim.SGD([p], lr=1.0)
    plateau = optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=1, factor=0.5)
    for metric in [1.0, 0.9, 0.95, 0.95, 0.95]:
        plateau.step(metric)
    assert optimizer.param_groups[0]["lr"] == 0.5
