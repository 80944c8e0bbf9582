"""Optimizers step for step against torch.optim: every algorithm and option, edited
param_groups, state_dict layout both ways, and optimizers written through the documented
hooks."""
import contextlib

import numpy as np
import pytest

from fastdl import optim
from fastdl.kernels._jit import jit, prange
from fastdl.nn import Parameter

CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.2, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, maximize=True)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.3, weight_decay=0.1)),
    ("Adagrad", dict(lr=0.1, maximize=True)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01, maximize=True)),
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.1, maximize=True)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, amsgrad=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("AdamW", dict(lr=0.01, amsgrad=True, maximize=True)),
    ("Adamax", dict()),
    ("Adamax", dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.1, maximize=True)),
    ("NAdam", dict()),
    ("NAdam", dict(lr=0.01, momentum_decay=0.01, weight_decay=0.1)),
    ("NAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("RAdam", dict()),        # rho_t passes 5 at step 6: both branches within 12 steps
    ("RAdam", dict(lr=0.01, betas=(0.5, 0.9), weight_decay=0.1)),
    ("RAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
]
SHAPES = [(3, 4), (5,), (2, 1, 3)]
STEPS = 12


@contextlib.contextmanager
def torch_float64(torch):
    """torch keeps scalar state (steps, NAdam's mu_product) in the default dtype."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def _problem(rng, dtype=np.float64):
    initial = [rng.normal(size=s).astype(dtype) for s in SHAPES]
    grads = [[rng.normal(size=s).astype(dtype) for s in SHAPES] for _ in range(STEPS)]
    return initial, grads


def _step(optimizer, params, grads, to_grad=np.asarray):
    for p, g in zip(params, grads):
        p.grad = to_grad(g.copy())
    optimizer.step()


def _pair(torch, name, initial, **hyper):
    ours = [Parameter(a.copy()) for a in initial]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in initial]
    return (ours, getattr(optim, name)(ours, **hyper), theirs,
            getattr(torch.optim, name)(theirs, **hyper))


def _assert_same(ours, theirs, rtol):
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=rtol, atol=rtol * 1e-2)


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-11), (np.float32, 2e-5)])
@pytest.mark.parametrize("name, hyper", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in
                                                      enumerate(CONFIGS)])
def test_trajectories_match_torch(name, hyper, dtype, rtol, rng):
    torch = pytest.importorskip("torch")
    initial, grads = _problem(rng, dtype)
    with torch_float64(torch):
        ours, optimizer, theirs, reference = _pair(torch, name, initial, **hyper)
        for step_grads in grads:
            _step(optimizer, ours, step_grads)
            _step(reference, theirs, step_grads, torch.tensor)
    _assert_same(ours, theirs, rtol)


@pytest.mark.parametrize("name, hyper", [("Adam", dict(lr=0.01)), ("NAdam", dict(lr=0.01)),
                                         ("SGD", dict(lr=0.1, momentum=0.9)),
                                         ("RAdam", dict(lr=0.01))])
def test_editing_param_groups_takes_effect_at_the_next_step(name, hyper, rng):
    torch = pytest.importorskip("torch")
    initial, grads = _problem(rng)
    extra = rng.normal(size=(4,))
    with torch_float64(torch):
        ours, optimizer, theirs, reference = _pair(torch, name, initial[:2], **hyper)
        for index, step_grads in enumerate(grads):
            if index == 4:
                for opt in (optimizer, reference):
                    opt.param_groups[0]["lr"] *= 0.5
                    if "betas" in opt.param_groups[0]:
                        opt.param_groups[0]["betas"] = (0.7, 0.95)
                    else:
                        opt.param_groups[0]["momentum"] = 0.5
            if index == 6:   # a new group with its own lr, after steps were taken
                ours.append(Parameter(extra.copy()))
                theirs.append(torch.tensor(extra.copy(), requires_grad=True))
                optimizer.add_param_group({"params": [ours[-1]], "lr": 0.02})
                reference.add_param_group({"params": [theirs[-1]], "lr": 0.02})
            step_grads = step_grads[:2] + ([grads[0][2][0, 0, :].repeat(2)[:4]]
                                           if index >= 6 else [])
            _step(optimizer, ours, step_grads)
            _step(reference, theirs, step_grads, torch.tensor)
    _assert_same(ours, theirs, 1e-11)
    assert optimizer.param_groups[1]["lr"] == 0.02


def _torch_state_dict_as_arrays(state_dict):
    state = {index: {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in entry.items()}
             for index, entry in state_dict["state"].items()}
    return {"state": state, "param_groups": state_dict["param_groups"]}


@pytest.mark.parametrize("name, hyper", [("SGD", dict(lr=0.1, momentum=0.9)),
                                         ("Adam", dict(lr=0.01, amsgrad=True)),
                                         ("Adagrad", dict(lr=0.1)), ("NAdam", dict(lr=0.01)),
                                         ("RAdam", dict(lr=0.01)), ("Adadelta", dict()),
                                         ("Adamax", dict()), ("RMSprop", dict(centered=True))])
def test_state_dict_layout_is_torchs_and_loads_both_ways(name, hyper, rng):
    torch = pytest.importorskip("torch")
    initial, grads = _problem(rng)
    with torch_float64(torch):
        ours, optimizer, theirs, reference = _pair(torch, name, initial, **hyper)
        for step_grads in grads[:5]:
            _step(optimizer, ours, step_grads)
            _step(reference, theirs, step_grads, torch.tensor)
        mine, torchs = optimizer.state_dict(), reference.state_dict()
        assert sorted(mine["state"]) == sorted(torchs["state"]) == [0, 1, 2]
        assert [g["params"] for g in mine["param_groups"]] == [[0, 1, 2]]
        for index, entry in torchs["state"].items():
            for key, value in entry.items():
                if value is not None and key != "step":
                    np.testing.assert_allclose(np.asarray(mine["state"][index][key]),
                                               value.numpy(), rtol=1e-11, atol=1e-14)
        # torch's state continues in fastdl, and fastdl's in torch
        resumed = [Parameter(t.detach().numpy().copy()) for t in theirs]
        continued = getattr(optim, name)(resumed, **hyper)
        continued.load_state_dict(_torch_state_dict_as_arrays(torchs))
        crossed = [torch.tensor(p.array.copy(), requires_grad=True) for p in ours]
        crossed_reference = getattr(torch.optim, name)(crossed, **hyper)
        crossed_reference.load_state_dict({
            "state": {i: {k: torch.tensor(np.asarray(v)) for k, v in e.items()
                          if k != "max_exp_avg_sq" or hyper.get("amsgrad")}
                      for i, e in mine["state"].items()},
            "param_groups": mine["param_groups"]})
        for step_grads in grads[5:]:
            _step(continued, resumed, step_grads)
            _step(reference, theirs, step_grads, torch.tensor)
            _step(crossed_reference, crossed, step_grads, torch.tensor)
    _assert_same(resumed, theirs, 1e-11)
    _assert_same(crossed, theirs, 1e-11)


def test_state_maps_parameters_to_views_of_the_flat_buffers(rng):
    params = [Parameter(rng.normal(size=s)) for s in SHAPES]
    optimizer = optim.Adam(params, lr=0.1)
    assert optimizer.state[params[0]] == {}
    _step(optimizer, params, [np.ones(s) for s in SHAPES])
    entry = optimizer.state[params[1]]
    assert entry["step"] == 1 and entry["exp_avg"].shape == SHAPES[1]
    assert np.shares_memory(entry["exp_avg"], optimizer.state_buffers["exp_avg"])
    entry["exp_avg"][...] = 0.0       # edits in place reach the optimizer
    assert not optimizer.state_dict()["state"][1]["exp_avg"].any()


def test_nadam_mu_product_is_saved_and_rebuilt_when_missing(rng):
    initial, grads = _problem(rng)
    params = [Parameter(a.copy()) for a in initial]
    optimizer = optim.NAdam(params, lr=0.01)
    for step_grads in grads[:4]:
        _step(optimizer, params, step_grads)
    saved = optimizer.state_dict()
    product = saved["state"][0]["mu_product"]
    steps = np.arange(1, 5)
    assert product == pytest.approx(np.prod(0.9 * (1 - 0.5 * 0.96 ** (steps * 4e-3))),
                                    rel=1e-14)
    for entry in saved["state"].values():
        del entry["mu_product"]      # as a checkpoint that keeps only arrays and steps
    fresh = optim.NAdam([Parameter(a.copy()) for a in initial], lr=0.01)
    fresh.load_state_dict(saved)
    assert fresh.state_dict()["state"][2]["mu_product"] == pytest.approx(product, rel=1e-14)


def _sign_sgd(params, grads, chunk_start, chunk_end, chunk_segment, active, hyper):
    for chunk in prange(chunk_start.shape[0]):
        segment = chunk_segment[chunk]
        if active[segment]:
            lr = hyper[segment, 0]
            for i in range(chunk_start[chunk], chunk_end[chunk]):
                params[i] -= lr * np.sign(grads[i])


sign_sgd = jit(_sign_sgd, parallel=True)


class SignSGD(optim.Optimizer):
    """The example of the ``fastdl.optim`` docstring, with a state slot added."""

    state_slots = ("last_sign",)
    hyper_names = ("lr",)

    def __init__(self, params, lr=1e-2):
        super().__init__(params, dict(lr=lr))

    def _validate(self, group):
        optim.check_non_negative("lr", group["lr"], "learning rate")

    def _update(self, active, hyper):
        sign_sgd(self.flat_params, self.flat_grads, *self.chunks, active, hyper)
        np.sign(self.flat_grads, out=self.state_buffers["last_sign"])


class TorchStyleMomentum(optim.Optimizer):
    """Written as for torch: overrides step() and keeps its own state per parameter."""

    def __init__(self, params, lr=0.1, momentum=0.9):
        super().__init__(params, dict(lr=lr, momentum=momentum))

    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                grad = np.asarray(p.grad)
                buffer = state.get("buffer")
                buffer = grad.copy() if buffer is None else group["momentum"] * buffer + grad
                state["buffer"] = buffer
                p.data -= group["lr"] * buffer


def test_a_fused_optimizer_written_through_the_documented_hook(rng):
    params = [Parameter(rng.normal(size=s)) for s in SHAPES]
    before = [p.array.copy() for p in params]
    optimizer = SignSGD(params, lr=0.1)
    grads = [rng.normal(size=s) for s in SHAPES]
    grads[1][0] = 0.0
    params[2].requires_grad_(False)
    _step(optimizer, params, grads)
    for p, b, g in zip(params[:2], before, grads):
        np.testing.assert_allclose(p.array, b - 0.1 * np.sign(g))
    np.testing.assert_array_equal(params[2].array, before[2])   # frozen
    saved = optimizer.state_dict()
    assert saved["state"][0]["step"] == 1 and 2 not in saved["state"]
    np.testing.assert_array_equal(saved["state"][1]["last_sign"], np.sign(grads[1]))
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        SignSGD(params, lr=-1)
    again = SignSGD([Parameter(p.array.copy()) for p in params], lr=0.1)
    again.load_state_dict(saved)
    assert again.state_dict()["state"][0]["step"] == 1


def test_a_torch_style_optimizer_runs_and_saves_its_state(rng):
    torch = pytest.importorskip("torch")
    initial, grads = _problem(rng)
    params = [Parameter(a.copy()) for a in initial]
    optimizer = TorchStyleMomentum(params)
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in initial]
    reference = torch.optim.SGD(theirs, lr=0.1, momentum=0.9)
    for step_grads in grads:
        _step(optimizer, params, step_grads)
        _step(reference, theirs, step_grads, torch.tensor)
    _assert_same(params, theirs, 1e-12)
    saved = optimizer.state_dict()
    np.testing.assert_allclose(saved["state"][0]["buffer"],
                               reference.state[theirs[0]]["momentum_buffer"].numpy())
    resumed = TorchStyleMomentum([Parameter(p.array.copy()) for p in params])
    resumed.load_state_dict(saved)
    np.testing.assert_array_equal(resumed.state[resumed.params[1]]["buffer"],
                                  saved["state"][1]["buffer"])


@pytest.mark.parametrize("factory, match", [
    (lambda p: optim.Adam(p, lr=-1), "Invalid learning rate: -1"),
    (lambda p: optim.Adam(p, betas=(1.0, 0.9)), "Invalid beta parameter at index 0: 1.0"),
    (lambda p: optim.NAdam(p, betas=(0.9, 1.5)), "Invalid beta parameter at index 1: 1.5"),
    (lambda p: optim.NAdam(p, momentum_decay=-1), "Invalid momentum_decay value: -1"),
    (lambda p: optim.Adadelta(p, rho=1.5), "Invalid rho value: 1.5"),
    (lambda p: optim.Adadelta(p, eps=-1), "Invalid epsilon value: -1"),
    (lambda p: optim.RAdam(p, weight_decay=-1), "Invalid weight_decay value: -1"),
    (lambda p: optim.Adamax(p, lr=-0.5), "Invalid learning rate: -0.5"),
    (lambda p: optim.Adagrad(p, initial_accumulator_value=-1),
     "Invalid initial_accumulator_value value: -1"),
    (lambda p: optim.SGD(p, lr=0.1, differentiable=True), "differentiable"),
])
def test_bad_hyper_parameters_raise_torchs_messages(factory, match):
    with pytest.raises(ValueError, match=match):
        factory([Parameter(np.ones(2))])


def test_torch_flags_are_accepted_and_sgd_takes_torchs_positional_order():
    p = Parameter(np.ones(2))
    optim.Adam([p], foreach=False, fused=None, capturable=False)
    sgd = optim.SGD([p], 0.1, 0.9, 0.0, 0.01, True)   # lr, momentum, dampening, decay, nesterov
    group = sgd.param_groups[0]
    assert (group["weight_decay"], group["nesterov"]) == (0.01, True)


def test_named_parameters_make_a_group_with_param_names():
    from fastdl import nn
    model = nn.Linear(3, 2)
    optimizer = optim.Adam(model.named_parameters(), lr=0.1)
    assert optimizer.param_groups[0]["param_names"] == ["weight", "bias"]
    assert optimizer.params[0] is model.weight
