"""Every lr scheduler's sequence (and cycled momentum) against torch's over many steps;
step-order warnings, resuming, state_dict."""
import json
import warnings

import numpy as np
import pytest

from fastdl import optim
from fastdl.nn import Parameter
from fastdl.optim import lr_scheduler

STEPS = 60

# name: (optimizer name, its kwargs, scheduler factory(module, optimizer))
SCHEDULES = {
    "StepLR": ("SGD", {}, lambda m, o: m.StepLR(o, step_size=7, gamma=0.5)),
    "MultiStepLR": ("SGD", {}, lambda m, o: m.MultiStepLR(o, [5, 20, 20, 41], gamma=0.3)),
    "ExponentialLR": ("SGD", {}, lambda m, o: m.ExponentialLR(o, gamma=0.95)),
    "LambdaLR": ("SGD", {}, lambda m, o: m.LambdaLR(o, [lambda e: 1 / (1 + e),
                                                         lambda e: 0.9 ** e])),
    "MultiplicativeLR": ("SGD", {}, lambda m, o: m.MultiplicativeLR(o, lambda e: 0.97)),
    "ConstantLR": ("SGD", {}, lambda m, o: m.ConstantLR(o, factor=0.25, total_iters=9)),
    "LinearLR": ("SGD", {}, lambda m, o: m.LinearLR(o, start_factor=0.1, end_factor=0.8,
                                                     total_iters=17)),
    "PolynomialLR": ("SGD", {}, lambda m, o: m.PolynomialLR(o, total_iters=40, power=2.0)),
    "CosineAnnealingLR": ("SGD", {}, lambda m, o: m.CosineAnnealingLR(o, T_max=13,
                                                                       eta_min=0.01)),
    "CosineAnnealingWarmRestarts": ("SGD", {}, lambda m, o: m.CosineAnnealingWarmRestarts(
        o, T_0=5, T_mult=2, eta_min=0.001)),
    "SequentialLR": ("SGD", {}, lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.01, total_iters=10),
            m.CosineAnnealingLR(o, T_max=30), m.ExponentialLR(o, gamma=0.9)], [10, 40])),
    "ChainedScheduler": ("SGD", {}, lambda m, o: m.ChainedScheduler(
        [m.ConstantLR(o, factor=0.5, total_iters=4), m.ExponentialLR(o, gamma=0.97)])),
    "CyclicLR_triangular": ("SGD", dict(momentum=0.9), lambda m, o: m.CyclicLR(
        o, base_lr=0.01, max_lr=[0.1, 0.2], step_size_up=7, step_size_down=4)),
    "CyclicLR_triangular2": ("SGD", dict(momentum=0.9), lambda m, o: m.CyclicLR(
        o, 0.01, 0.1, step_size_up=6, mode="triangular2", base_momentum=0.7)),
    "CyclicLR_exp_range": ("Adam", {}, lambda m, o: m.CyclicLR(
        o, 0.001, 0.01, step_size_up=5, mode="exp_range", gamma=0.97)),
    "OneCycleLR_cos": ("SGD", dict(momentum=0.9), lambda m, o: m.OneCycleLR(
        o, max_lr=[0.5, 1.0], total_steps=STEPS + 1)),
    "OneCycleLR_linear_adam": ("Adam", {}, lambda m, o: m.OneCycleLR(
        o, max_lr=0.01, epochs=6, steps_per_epoch=11, anneal_strategy="linear",
        pct_start=0.25, div_factor=10.0)),
    "OneCycleLR_three_phase": ("SGD", dict(momentum=0.9), lambda m, o: m.OneCycleLR(
        o, max_lr=0.3, total_steps=STEPS, three_phase=True, cycle_momentum=False)),
}


def _optimizers(torch, name, options):
    ours = getattr(optim, name)([{"params": [Parameter(np.ones(2))], "lr": 0.1},
                                 {"params": [Parameter(np.ones(3))], "lr": 0.05}], **options)
    theirs = getattr(torch.optim, name)(
        [{"params": [torch.ones(2, requires_grad=True)], "lr": 0.1},
         {"params": [torch.ones(3, requires_grad=True)], "lr": 0.05}], **options)
    return ours, theirs


def _record(optimizer, scheduler):
    groups = optimizer.param_groups
    return ([group["lr"] for group in groups] + list(scheduler.get_last_lr())
            + [group.get("momentum", group.get("betas", (0.0,))[0]) for group in groups])


def _run(optimizer, scheduler, steps):
    trace = [_record(optimizer, scheduler)]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        trace.append(_record(optimizer, scheduler))
    return np.array(trace, dtype=np.float64)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_lr_sequence_matches_torch(name):
    torch = pytest.importorskip("torch")
    optimizer_name, options, factory = SCHEDULES[name]
    ours, theirs = _optimizers(torch, optimizer_name, options)
    expected = _run(theirs, factory(torch.optim.lr_scheduler, theirs), STEPS)
    got = _run(ours, factory(lr_scheduler, ours), STEPS)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


def test_reduce_lr_on_plateau_matches_torch(rng):
    torch = pytest.importorskip("torch")
    metrics = np.concatenate([np.linspace(1, 0.5, 10), np.full(15, 0.5),
                              rng.uniform(0.4, 0.6, 20)])
    for kwargs in [dict(patience=2, factor=0.5), dict(mode="max", patience=1, cooldown=2),
                   dict(threshold_mode="abs", threshold=0.01, min_lr=[0.02, 0.001]),
                   dict(patience=0, factor=0.1, eps=1e-3)]:
        ours, theirs = _optimizers(torch, "SGD", {})
        mine = lr_scheduler.ReduceLROnPlateau(ours, **kwargs)
        reference = torch.optim.lr_scheduler.ReduceLROnPlateau(theirs, **kwargs)
        for metric in metrics:
            mine.step(metric)
            reference.step(metric)
            assert mine.get_last_lr() == pytest.approx(reference.get_last_lr(), rel=1e-15)
            assert mine.num_bad_epochs == reference.num_bad_epochs


def test_closed_form_with_an_epoch_argument_matches_torch():
    torch = pytest.importorskip("torch")
    ours, theirs = _optimizers(torch, "SGD", {})
    mine = lr_scheduler.StepLR(ours, step_size=3, gamma=0.5)
    reference = torch.optim.lr_scheduler.StepLR(theirs, step_size=3, gamma=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in [4, 9, 2, 15]:
            mine.step(epoch)
            reference.step(epoch)
            assert mine.get_last_lr() == pytest.approx(reference.get_last_lr(), rel=1e-15)


def test_an_lr_edited_by_hand_is_carried_on_as_torch():
    torch = pytest.importorskip("torch")
    ours, theirs = _optimizers(torch, "SGD", {})
    pairs = [(lr_scheduler.CosineAnnealingLR(ours, T_max=10), ours),
             (torch.optim.lr_scheduler.CosineAnnealingLR(theirs, T_max=10), theirs)]
    traces = []
    for scheduler, optimizer in pairs:
        trace = []
        for step in range(15):
            optimizer.step()
            scheduler.step()
            if step == 5:
                optimizer.param_groups[0]["lr"] = 0.5
            trace.append(scheduler.get_last_lr())
        traces.append(trace)
    np.testing.assert_allclose(traces[0], traces[1], rtol=1e-12)


def test_stepping_the_scheduler_first_warns_as_torch():
    optimizer = optim.SGD([Parameter(np.ones(2))], lr=0.1)
    scheduler = lr_scheduler.StepLR(optimizer, 2)
    with pytest.warns(UserWarning, match="before `optimizer.step\\(\\)`"):
        scheduler.step()
    optimizer = optim.SGD([Parameter(np.ones(2))], lr=0.1)
    scheduler = lr_scheduler.StepLR(optimizer, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optimizer.step()
        scheduler.step()
        scheduler.step()


def test_state_dict_resumes_the_same_sequence_through_json():
    def make(optimizer):
        return lr_scheduler.SequentialLR(
            optimizer, [lr_scheduler.LinearLR(optimizer, 0.1, total_iters=5),
                        lr_scheduler.MultiStepLR(optimizer, [3, 8], gamma=0.5)], [5])

    optimizer = optim.SGD([Parameter(np.ones(2))], lr=1.0)
    scheduler = make(optimizer)
    straight = _run(optimizer, scheduler, 20)
    optimizer = optim.SGD([Parameter(np.ones(2))], lr=1.0)
    scheduler = make(optimizer)
    first = _run(optimizer, scheduler, 7)
    saved = json.loads(json.dumps({"optimizer": optimizer.state_dict(),
                                   "scheduler": scheduler.state_dict()}))
    resumed_optimizer = optim.SGD([Parameter(np.ones(2))], lr=1.0)
    resumed = make(resumed_optimizer)          # before loading the optimizer, as in torch
    resumed_optimizer.load_state_dict(saved["optimizer"])
    resumed.load_state_dict(saved["scheduler"])
    rest = _run(resumed_optimizer, resumed, 13)
    np.testing.assert_allclose(np.concatenate([first, rest[1:]]), straight, rtol=1e-15)


def test_lambda_state_dict_keeps_callable_objects_attributes_only():
    class Decay:
        def __init__(self, rate):
            self.rate = rate

        def __call__(self, epoch):
            return self.rate ** epoch

    optimizer = optim.SGD([{"params": [Parameter(np.ones(1))]},
                           {"params": [Parameter(np.ones(1))]}], lr=1.0)
    scheduler = lr_scheduler.LambdaLR(optimizer, [lambda e: 1.0, Decay(0.5)])
    state = scheduler.state_dict()
    assert state["lr_lambdas"] == [None, {"rate": 0.5}]
    other = lr_scheduler.LambdaLR(optimizer, [lambda e: 1.0, Decay(0.9)])
    other.load_state_dict(state)
    assert other.lr_lambdas[1].rate == 0.5


def test_errors_as_torch():
    optimizer = optim.SGD([Parameter(np.ones(1))], lr=1.0)
    with pytest.raises(KeyError, match="initial_lr"):
        lr_scheduler.StepLR(optimizer, 2, last_epoch=3)
    with pytest.raises(TypeError, match="not an Optimizer"):
        lr_scheduler.ExponentialLR(object(), 0.9)
    with pytest.raises(ValueError, match="momentum or beta1"):
        lr_scheduler.OneCycleLR(optim.Adagrad([Parameter(np.ones(1))]), 0.1, total_steps=5)
    scheduler = lr_scheduler.OneCycleLR(optimizer, 0.1, total_steps=3, cycle_momentum=False)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="Tried to step 4 times"):
        for _ in range(4):
            scheduler.step()
    with pytest.raises(ValueError, match="Factor should be < 1.0"):
        lr_scheduler.ReduceLROnPlateau(optimizer, factor=1.5)
    with pytest.raises(ValueError, match="T_0"):
        lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=0)


def test_a_scheduler_subclass_written_for_torch_runs_unchanged():
    torch = pytest.importorskip("torch")

    def make(base):
        class Halving(base):
            def get_lr(self):
                return [lr * 0.5 ** self.last_epoch for lr in self.base_lrs]
        return Halving

    ours, theirs = _optimizers(torch, "SGD", {})
    got = _run(ours, make(lr_scheduler._LRScheduler)(ours), 8)
    expected = _run(theirs, make(torch.optim.lr_scheduler._LRScheduler)(theirs), 8)
    np.testing.assert_allclose(got, expected, rtol=1e-15)
