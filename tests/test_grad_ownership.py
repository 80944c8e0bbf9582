"""What the Function machinery copies and what it hands over.

* A C-contiguous input reaches the norm and pooling kernels as the caller's own memory
  (no copy), and so does the caller's output gradient.
* A gradient returned by a ``Function.new_grads`` backward becomes the leaf's ``.grad``
  uncopied; a second gradient of the same tensor is added into it in place.
* Nothing handed over is ever an array something else still holds: the caller's
  gradient, a saved array, a gradient kept from an earlier step.
"""
import numpy as np
import pytest

from fastdl import functional as F
from fastdl.autograd import Function, Tensor
from fastdl.functional import conv as conv_module, normalization, pooling
from fastdl.kernels import norm as norm_kernels, pool as pool_kernels


def _spy(monkeypatch, module, name, calls):
    real = getattr(module, name)

    def spy(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append((args, result))
        return result
    monkeypatch.setattr(module, name, spy)


def _leaf(rng, *shape, dtype=np.float32):
    return Tensor(rng.standard_normal(shape).astype(dtype), requires_grad=True)


NORMS = {
    "batch_norm": (lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
                   "batch_norm_forward", "batch_norm_backward"),
    "instance_norm": (lambda x, w, b: F.instance_norm(x, weight=w, bias=b),
                      "instance_norm_forward", "instance_norm_backward"),
    "group_norm": (lambda x, w, b: F.group_norm(x, 2, w, b),
                   "group_norm_forward", "group_norm_backward"),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, x.shape[1:], w, b),
                   "layer_norm_forward", "layer_norm_backward"),
}


@pytest.mark.parametrize("name", sorted(NORMS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_norm_kernels_get_the_callers_memory_and_grads_are_taken_over(monkeypatch, rng, name,
                                                                       dtype):
    op, forward_name, backward_name = NORMS[name]
    forwards, backwards = [], []
    _spy(monkeypatch, normalization.kernels, forward_name, forwards)
    _spy(monkeypatch, normalization.kernels, backward_name, backwards)
    x = _leaf(rng, 3, 4, 5, 6, dtype=dtype)
    shape = (4, 5, 6) if name == "layer_norm" else (4,)
    w, b = _leaf(rng, *shape, dtype=dtype), _leaf(rng, *shape, dtype=dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    y = op(x, w, b)
    y.backward(Tensor(g))
    (forward_args, forward_out), = forwards
    (backward_args, (grad_x, grad_w, grad_b)), = backwards
    assert forward_args[0] is x.array or np.shares_memory(forward_args[0], x.array)
    assert y.array is forward_out[0]
    assert np.shares_memory(backward_args[0], g)            # the caller's gradient
    assert np.shares_memory(backward_args[1], x.array)      # the input, as saved
    # the gradients the kernel allocated are the leaves' .grad, uncopied
    assert x.grad.array is grad_x and w.grad.array is grad_w and b.grad.array is grad_b
    for grad in (x.grad.array, w.grad.array, b.grad.array):
        assert grad.dtype == dtype
        assert not np.shares_memory(grad, g) and not np.shares_memory(grad, x.array)


@pytest.mark.parametrize("pool", ["max", "avg", "adaptive_avg"])
def test_pool_kernels_get_the_callers_memory_and_grads_are_taken_over(monkeypatch, rng, pool):
    forward_name, backward_name, op = {
        "max": ("max_pool2d_forward", "max_pool2d_backward", lambda x: F.max_pool2d(x, 2)),
        "avg": ("avg_pool2d_forward", "avg_pool2d_backward", lambda x: F.avg_pool2d(x, 2)),
        "adaptive_avg": ("adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward",
                         lambda x: F.adaptive_avg_pool2d(x, 4)),
    }[pool]
    forwards, backwards = [], []
    _spy(monkeypatch, pool_kernels, forward_name, forwards)
    _spy(monkeypatch, pooling.kernels, backward_name, backwards)
    x = _leaf(rng, 2, 3, 8, 8)
    g = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    op(x).backward(Tensor(g))
    assert np.shares_memory(forwards[0][0][0], x.array)
    (backward_args, grad_x), = backwards
    assert np.shares_memory(backward_args[0], g)
    assert x.grad.array is grad_x


def test_conv_grads_are_taken_over(monkeypatch, rng):
    calls = []
    _spy(monkeypatch, conv_module.kernels, "conv2d_grad_input_unchecked", calls)
    x, w, b = _leaf(rng, 2, 3, 8, 8), _leaf(rng, 4, 3, 3, 3), _leaf(rng, 4)
    F.conv2d(x, w, b, padding=1).backward(Tensor(rng.standard_normal((2, 4, 8, 8))
                                                 .astype(np.float32)))
    assert x.grad.array is calls[0][1]


def test_a_second_gradient_is_added_in_place_into_the_taken_one(rng):
    x = _leaf(rng, 2, 4, 6, 6)
    g1 = rng.standard_normal(x.shape).astype(np.float32)
    g2 = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    expect_norm = _grads(lambda x: F.group_norm(x, 2), x.array, g1)
    expect_pool = _grads(lambda x: F.max_pool2d(x, 2), x.array, g2)
    # x feeds two ops: the first gradient is taken over, the second added into it
    (F.group_norm(x, 2) * Tensor(g1)).sum().add(
        (F.max_pool2d(x, 2) * Tensor(g2)).sum()).backward()
    np.testing.assert_allclose(x.grad.array, expect_norm + expect_pool, rtol=1e-5, atol=1e-6)
    # and across calls (no reset) it accumulates in place, as torch's
    first = x.grad
    kept = first.array.copy()
    F.group_norm(x, 2).backward(Tensor(g1))
    assert x.grad is first
    np.testing.assert_array_equal(first.array, kept + expect_norm)


def _grads(op, x, g):
    leaf = Tensor(x.copy(), requires_grad=True)
    op(leaf).backward(Tensor(g))
    return leaf.grad.array.copy()


def test_intermediate_gradients_summed_in_place_give_the_same_bits(monkeypatch, rng):
    """An intermediate that feeds several ops: its gradients summed in place (owned arrays)
    are bit for bit the sums autograd formed before (new arrays, in the same order)."""
    x = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    g = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    g_keep = g.copy()

    def run():
        leaf = Tensor(x.copy(), requires_grad=True)
        h = F.group_norm(leaf, 2)
        a = F.avg_pool2d(h, 1)              # a new gradient first, ...
        c = h * 2.0                         # ... one the op does not own, ...
        d = F.max_pool2d(h, 1)              # ... then another new one
        y = F.batch_norm(a + c + d + h, None, None, training=True)
        y.backward(Tensor(g))
        return leaf.grad.array
    taken = run()
    for cls in (normalization._Normalization, pooling.MaxPool2d, pooling.AvgPool2d):
        monkeypatch.setattr(cls, "new_grads", False)
    copied = run()
    np.testing.assert_array_equal(taken, copied)
    np.testing.assert_array_equal(g, g_keep)   # the caller's gradient is never written


def test_callers_gradient_is_not_written_when_it_is_summed(rng):
    x = _leaf(rng, 2, 4, 4, 4)
    g = rng.standard_normal(x.shape).astype(np.float32)
    keep = g.copy()
    h = F.group_norm(x, 2)
    (h + h).backward(Tensor(g))          # both gradients of h are the caller's array
    np.testing.assert_array_equal(g, keep)
    assert not np.shares_memory(x.grad.array, g)


@pytest.mark.parametrize("op", [lambda x, y: x.reshape(4, 3), lambda x, y: x + y,
                                lambda x, y: x[:], lambda x, y: y - x])
def test_a_gradient_passed_on_unchanged_is_copied_not_taken(rng, op):
    """Ops whose backward may hand on its grad_output (or a view of it) declare no new
    gradients: the caller's array never becomes a leaf's .grad."""
    x, y = _leaf(rng, 3, 4), _leaf(rng, 3, 4)
    out = op(x, y)
    g = rng.standard_normal(out.shape).astype(np.float32)
    out.backward(Tensor(g))
    for leaf in (x, y):
        if leaf.grad is not None:
            assert not np.shares_memory(leaf.grad.array, g)
            leaf.grad.array += 1
    assert not np.shares_memory(x.grad.array, y.grad.array) if y.grad is not None else True


class _Twice(Function):
    """Declares new arrays but returns one array for both inputs: autograd must notice."""
    new_grads = True

    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, grad):
        both = grad.copy()
        return both, both


def test_one_array_returned_for_two_inputs_is_not_handed_to_both(rng):
    a, b = _leaf(rng, 3, 4), _leaf(rng, 3, 4)
    g = rng.standard_normal((3, 4)).astype(np.float32)
    _Twice.apply(a, b).backward(Tensor(g))
    assert not np.shares_memory(a.grad.array, b.grad.array)
    a.grad.array += 1
    np.testing.assert_array_equal(b.grad.array, g)


@pytest.mark.parametrize("seed", range(6))
def test_random_graphs_never_hand_out_a_live_array(seed):
    """Random graphs over norm, pooling, conv and plain ops, stepped repeatedly with grads
    reset or accumulated at random, while every gradient, output and upstream gradient of
    earlier steps is kept alive: nothing handed out aliases a kept array, no kept array
    changes unless it is the accumulating ``.grad`` itself, and the gradients equal those
    of the copying path."""
    rng = np.random.default_rng(seed)
    shape = (2, 4, 8, 8)
    leaves = [Tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)
              for _ in range(3)]
    weight = Tensor(rng.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.2,
                    requires_grad=True)
    unary = [lambda t: F.group_norm(t, 2), lambda t: F.instance_norm(t),
             lambda t: F.batch_norm(t, None, None, training=True),
             lambda t: F.layer_norm(t, t.shape[1:]),
             lambda t: F.conv2d(t, weight, padding=1),
             lambda t: F.max_pool2d(t, 3, stride=1, padding=1),
             lambda t: F.avg_pool2d(t, 3, stride=1, padding=1),
             lambda t: t * 1.5, lambda t: t.reshape(shape)]
    choices = [[rng.integers(len(unary)) for _ in range(6)] for _ in range(5)]
    picks = [[rng.integers(10) for _ in range(6)] for _ in range(5)]

    def graph(tensors, program, pick):
        values = list(tensors)
        for op, which in zip(program, pick):
            values.append(unary[op](values[which % len(values)]))
        total = values[-1]
        for value in values[len(tensors):-1]:
            total = total + value
        return total

    def run(use_new):
        saved = {}
        for cls in (normalization._Normalization, pooling.MaxPool2d, pooling.AvgPool2d,
                    conv_module.Conv2d):
            saved[cls] = cls.__dict__["new_grads"]
            cls.new_grads = use_new
        try:
            for t in leaves + [weight]:
                t.grad = None
            kept, kept_values, results = [], [], []
            for step in range(5):
                if rng_steps[step]:
                    for t in leaves + [weight]:
                        t.grad = None
                g = rng_g[step]
                y = graph(leaves, choices[step], picks[step])
                y.backward(Tensor(g))
                grads = [t.grad.array for t in leaves + [weight] if t.grad is not None]
                for i, grad in enumerate(grads):
                    for other in grads[i + 1:]:
                        assert not np.shares_memory(grad, other)
                    for held in kept:
                        assert grad is held or not np.shares_memory(grad, held)
                    assert not np.shares_memory(grad, g)
                    assert not np.shares_memory(grad, y.array)
                live = {id(grad) for grad in grads}
                for i, held in enumerate(kept):
                    if id(held) in live:        # an accumulating .grad changes, ...
                        kept_values[i] = held.copy()
                    else:                       # ... nothing else does
                        np.testing.assert_array_equal(held, kept_values[i])
                kept += grads + [g, y.array]
                kept_values += [a.copy() for a in grads + [g, y.array]]
                results.append([a.copy() for a in grads])
            return results
        finally:
            for cls, value in saved.items():
                cls.new_grads = value

    rng_steps = [bool(rng.integers(2)) for _ in range(5)]
    rng_g = [rng.standard_normal(shape).astype(np.float32) for _ in range(5)]
    taken, copied = run(True), run(False)
    for step_taken, step_copied in zip(taken, copied):
        for a, b in zip(step_taken, step_copied):
            np.testing.assert_array_equal(a, b)


_STEADY_STATE = """
import resource, numpy as np
from fastdl import functional as F
from fastdl.autograd import Tensor
rng = np.random.default_rng(0)
x = Tensor(rng.standard_normal((8, 64, 32, 32)).astype(np.float32), requires_grad=True)
w = Tensor(np.ones(64, np.float32), requires_grad=True)
b = Tensor(np.zeros(64, np.float32), requires_grad=True)
g = Tensor(rng.standard_normal(x.shape).astype(np.float32))
g2 = Tensor(rng.standard_normal((8, 64, 16, 16)).astype(np.float32))
def step():
    for t in (x, w, b):
        t.grad = None
    F.group_norm(x, 8, w, b).backward(g)
    F.batch_norm(x, None, None, w, b, training=True).backward(g)
    F.layer_norm(x, x.shape[1:]).backward(g)
    F.max_pool2d(x, 2).backward(g2)
    F.avg_pool2d(x, 2).backward(g2)
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def test_steady_state_steps_reuse_memory_instead_of_faulting_it_in():
    """Outputs and gradients of a repeated step come from memory the process already has
    (the runtime keeps freed large blocks in the heap): one 2 MB array mapped afresh per
    step would cost 512 page faults; with glibc's defaults (FASTDL_MALLOPT=0) this step
    takes about 2,000."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "FASTDL_MALLOPT"}   # the default
    result = subprocess.run([sys.executable, "-c", _STEADY_STATE], check=True,
                            capture_output=True, text=True, timeout=300, env=env)
    assert float(result.stdout.split()[-1]) < 256
