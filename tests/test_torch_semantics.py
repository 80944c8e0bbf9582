"""Semantics that code ported from PyTorch relies on, checked against NumPy (and
torch where it is installed): max/min with dim, elementwise comparisons,
in-place operators, ``p.data`` assignment under an optimizer, seeded shuffles."""
import operator

import numpy as np
import pytest

import fastdl
from fastdl import Tensor, nn
from fastdl.data import DataLoader, TensorDataset
from fastdl.optim import SGD, Adam
from fastdl.testing import assert_close, gradcheck

LEAF_MESSAGE = "a leaf Variable that requires grad is being used in an in-place operation."


# ------------------------------------------------------------------ max / min

def test_max_with_dim_returns_values_and_indices_at_batch_size_two(rng):
    logits = rng.normal(size=(2, 5)).astype(np.float32)
    out = Tensor(logits, requires_grad=True)
    _, pred = out.max(1)
    np.testing.assert_array_equal(pred.numpy(), logits.argmax(1))
    assert pred.dtype == np.int64 and not pred.requires_grad
    result = out.max(dim=1)
    values, indices = result
    assert result.values is values and result.indices is indices and result[0] is values
    assert_close(values, logits.max(1))
    assert values.requires_grad and values.shape == (2,)
    kept = out.max(1, keepdim=True)
    assert kept.values.shape == (2, 1) and kept.indices.shape == (2, 1)
    np.testing.assert_array_equal(kept.indices.numpy(), logits.argmax(1)[:, None])
    low = out.min(dim=0)
    assert_close(low.values, logits.min(0))
    np.testing.assert_array_equal(low.indices.numpy(), logits.argmin(0))
    whole = out.max()
    assert isinstance(whole, Tensor) and whole.shape == () and whole.item() == logits.max()
    assert out.min().item() == logits.min()
    # 0-d: dim 0 is the tensor itself and index 0, as torch
    scalar = Tensor(np.float32(3.0)).max(0)
    assert scalar.values.item() == 3.0 and scalar.indices.item() == 0


@pytest.mark.parametrize("dim", [None, 0, 1, -1])
@pytest.mark.parametrize("keepdim", [False, True])
def test_argmax_argmin_match_numpy(rng, dim, keepdim):
    a = rng.integers(0, 3, size=(4, 6)).astype(np.float64)   # with ties
    for method, reference in (("argmax", np.argmax), ("argmin", np.argmin)):
        got = getattr(Tensor(a), method)(dim, keepdim=keepdim)
        expected = reference(a, axis=dim, keepdims=keepdim)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got.numpy(), expected)


def test_max_dim_gradient_goes_to_the_first_maximum_of_each_slice():
    x = Tensor(np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]]), requires_grad=True)
    values, indices = x.max(dim=1)
    np.testing.assert_array_equal(indices.numpy(), [1, 0])
    (values * Tensor(np.array([1.0, 10.0]))).sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 1, 0], [10, 0, 0]])
    x.grad = None
    x.min(dim=0, keepdim=True).values.sum().backward()
    np.testing.assert_array_equal(x.grad, [[1, 0, 0], [0, 1, 1]])


def test_max_without_dim_shares_the_gradient_among_ties_as_torch():
    x = Tensor(np.array([[1.0, 3.0], [3.0, 0.0]]), requires_grad=True)
    x.max().backward()
    np.testing.assert_array_equal(x.grad, [[0, 0.5], [0.5, 0]])
    x.grad = None
    x.min().backward()
    np.testing.assert_array_equal(x.grad, [[0, 0], [0, 1]])


def test_max_min_values_gradcheck(rng):
    for op in (lambda a: a.max(1).values, lambda a: a.min(0, keepdim=True).values * 2,
               lambda a: a.max() + a.min()):
        assert gradcheck(op, [Tensor(rng.normal(size=(3, 4)), requires_grad=True)])


def test_max_rejects_a_tensor_or_bad_dim():
    x = Tensor(np.ones((2, 3)))
    np.testing.assert_array_equal(x.max(Tensor(np.array(2.0))), 2.0)   # elementwise, as torch
    with pytest.raises(TypeError, match="dim must be an int"):
        x.max(1.5)
    with pytest.raises(IndexError, match="out of range"):
        x.max(2)


def test_max_matches_torch(rng):
    torch = pytest.importorskip("torch")
    a = rng.integers(0, 3, size=(3, 5)).astype(np.float64)
    for dim in (0, 1):
        expected = torch.tensor(a).max(dim)
        got = Tensor(a).max(dim)
        np.testing.assert_array_equal(got.values.numpy(), expected.values.numpy())
        np.testing.assert_array_equal(got.indices.numpy(), expected.indices.numpy())
    reference = torch.tensor(a, requires_grad=True)
    reference.max().backward()
    x = Tensor(a, requires_grad=True)
    x.max().backward()
    assert_close(x.grad, reference.grad.numpy())


# ---------------------------------------------------------------- comparisons

COMPARISONS = [(operator.eq, np.equal), (operator.ne, np.not_equal), (operator.lt, np.less),
               (operator.le, np.less_equal), (operator.gt, np.greater),
               (operator.ge, np.greater_equal)]


@pytest.mark.parametrize("op, reference", COMPARISONS)
def test_comparisons_are_elementwise_and_broadcast(rng, op, reference):
    a = rng.integers(0, 3, size=(2, 3)).astype(np.float32)
    b = rng.integers(0, 3, size=(3,)).astype(np.float32)
    ta = Tensor(a, requires_grad=True)
    for left, right, expected in [(ta, Tensor(b), reference(a, b)), (ta, b, reference(a, b)),
                                  (b, ta, reference(b, a)), (ta, 1.0, reference(a, 1.0)),
                                  (1, ta, reference(1, a)),
                                  (np.float32(1), ta, reference(np.float32(1), a))]:
        got = op(left, right)
        assert isinstance(got, Tensor), (left, right)
        assert got.dtype == np.bool_ and not got.requires_grad
        np.testing.assert_array_equal(got.numpy(), expected)


def test_comparison_methods_and_counting_correct_predictions(rng):
    logits = Tensor(rng.normal(size=(6, 4)))
    y = np.array([0, 1, 2, 3, 0, 1])
    pred = logits.argmax(1)
    expected = int(np.sum(logits.numpy().argmax(1) == y))
    assert (pred == y).sum().item() == expected
    assert pred.eq(y).sum().item() == expected
    assert pred.eq(Tensor(y)).sum().item() == expected
    assert pred.ne(y).sum().item() == 6 - expected
    accuracy = (pred == y).float().mean()
    assert accuracy.dtype == np.float32 and accuracy.item() == pytest.approx(expected / 6)
    assert (pred == y).mean().dtype == np.float32
    assert pred.long().dtype == np.int64 and (pred == y).int().sum().item() == expected
    x = Tensor(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(x.lt(2).numpy(), [True, False, False])
    np.testing.assert_array_equal(x.le(2).numpy(), [True, True, False])
    np.testing.assert_array_equal(x.gt(2).numpy(), [False, False, True])
    np.testing.assert_array_equal(x.ge(2).numpy(), [False, True, True])
    np.testing.assert_array_equal(((x > 1) & (x < 3)).numpy(), [False, True, False])
    np.testing.assert_array_equal((~(x > 1) | (x == 3)).numpy(), [True, False, True])
    # a float cast of a graph tensor stays differentiable; an integer one leaves the graph
    w = Tensor(np.ones(2), requires_grad=True)
    assert w.float().requires_grad and not w.long().requires_grad


def test_tensors_hash_by_identity_and_compare_with_none():
    a, b = Tensor(np.ones(3)), Tensor(np.ones(3))
    table = {a: "a", b: "b"}
    assert table[a] == "a" and table[b] == "b" and len({a, b, a}) == 2
    assert hash(a) != hash(b) or a is b
    assert a in {a} and b not in {a}
    assert (a == None) is False and (a != None) is True  # noqa: E711
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(a == b)


def test_package_call_sites_do_not_rely_on_tensor_equality():
    """Parameters equal in value (one element, or all zeros) stay distinct everywhere."""
    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(np.zeros(1, dtype=np.float32))
            self.b = nn.Parameter(np.zeros(1, dtype=np.float32))
            self.c = self.a                          # shared: listed once
    model = Twin()
    params = list(model.parameters())
    assert len(params) == 2 and params[0] is model.a and params[1] is model.b
    optimizer = SGD([{"params": [model.a]}, {"params": [model.b], "lr": 1.0}], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        SGD([{"params": [model.a]}, {"params": [model.a]}], lr=0.1)
    model.a.grad = np.ones(1, np.float32)
    model.b.grad = np.ones(1, np.float32)
    optimizer.step()
    assert model.a.item() == pytest.approx(-0.1) and model.b.item() == pytest.approx(-1.0)
    assert len(optimizer.state_dict()["state"]) == 2


# -------------------------------------------------------------- in-place ops

@pytest.mark.parametrize("op", [operator.iadd, operator.isub, operator.imul,
                                operator.itruediv])
def test_in_place_on_a_leaf_that_requires_grad_raises(op):
    a = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="^" + LEAF_MESSAGE.replace(".", r"\.") + "$"):
        op(a, 2.0)
    with pytest.raises(RuntimeError, match="in-place operation"):
        op(a, Tensor(np.ones(3), requires_grad=True))
    np.testing.assert_array_equal(a.numpy(), np.ones(3))


def test_manual_sgd_under_no_grad_updates_in_place(rng):
    x = rng.normal(size=(64, 3))
    true_w = np.array([1.0, -2.0, 0.5])
    y = x @ true_w
    w = Tensor(np.zeros(3), requires_grad=True)
    storage = w.numpy()
    for _ in range(300):
        loss = ((Tensor(x) @ w - Tensor(y)) ** 2).mean()
        loss.backward()
        with fastdl.no_grad():
            w -= 0.1 * w.grad
            w *= 1.0
            w /= 1.0
            w += 0.0
        w.grad = None
    assert w.numpy() is storage and w.is_leaf and w.requires_grad
    assert_close(w, true_w, atol=1e-6)


@pytest.mark.parametrize("op, plain", [(operator.iadd, operator.add),
                                       (operator.isub, operator.sub),
                                       (operator.imul, operator.mul),
                                       (operator.itruediv, operator.truediv)])
def test_in_place_on_a_non_leaf_keeps_gradients_correct(rng, op, plain):
    x0, b0 = rng.normal(size=(2, 3)), rng.normal(size=(3,)) + 3.0

    def run(in_place):
        x = Tensor(x0, requires_grad=True)
        b = Tensor(b0, requires_grad=True)
        h = x * 2.0
        early = h * h                 # reads h before the in-place op
        h2 = op(h, b) if in_place else plain(h, b)
        if in_place:
            assert h2 is h and not h.is_leaf
        loss = (early + h2 * h2 * 3.0).sum()
        loss.backward()
        return loss.item(), x.grad, b.grad, h2.numpy()
    got, expected = run(True), run(False)
    assert got[0] == pytest.approx(expected[0], rel=1e-12)
    for g, e in zip(got[1:], expected[1:]):
        assert_close(g, e, rtol=1e-12)


def test_in_place_on_a_tensor_without_grad(rng):
    base = np.zeros(3)
    t = Tensor(base)
    t += 1.0
    t *= Tensor(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(base, [1, 2, 3])    # written in place, as torch
    assert t.is_leaf and not t.requires_grad
    w = Tensor(np.array([0.5, 0.5, 0.5]), requires_grad=True)
    t += w                                            # now part of the graph
    assert t.requires_grad and not t.is_leaf
    (t * t).sum().backward()
    assert_close(w.grad, 2 * (np.array([1, 2, 3]) + 0.5), rtol=1e-12)
    a = Tensor(np.ones((2, 3)), requires_grad=True) * 1.0
    a += a                                            # the tensor itself as the operand
    a.sum().backward()
    with pytest.raises(RuntimeError, match="doesn't match the broadcast shape"):
        b = Tensor(np.ones(3), requires_grad=True) * 1.0
        b += Tensor(np.ones((2, 3)))
    with pytest.raises(RuntimeError):
        c = Tensor(np.ones(3))
        c += np.ones((2, 3))
    d = Tensor(np.ones(2), requires_grad=True) * 1.0
    d.sum()                                           # a 0-d result can be updated too
    total = Tensor(np.ones(2)).sum()
    total += 1
    assert total.item() == 3.0


def test_in_place_under_no_grad_keeps_an_optimizer_view(rng):
    model = nn.Linear(3, 2)
    optimizer = SGD(model.parameters(), lr=0.5)
    with fastdl.no_grad():
        model.weight *= 0.0
    assert model.weight.numpy().base is optimizer.flat_params
    model.weight.grad = np.ones((2, 3), np.float32)
    optimizer.step()
    np.testing.assert_array_equal(model.weight.numpy(), np.full((2, 3), -0.5))


# ---------------------------------------------------------- p.data assignment

def test_assigning_data_after_building_the_optimizer_is_stepped(rng):
    model = nn.Linear(3, 2)
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
    new_weight = rng.normal(size=(2, 3)).astype(np.float32)
    model.weight.data = new_weight
    model.bias.data = Tensor(np.array([1.0, 2.0], dtype=np.float32))
    np.testing.assert_array_equal(model.weight.numpy(), new_weight)
    loss = model(Tensor(np.ones((1, 3), np.float32))).sum()
    loss.backward()
    optimizer.step()
    # d(sum)/dW = 1 for every entry (one sample of ones), d/db = 1
    assert_close(model.weight, new_weight - 0.1, rtol=1e-6)
    assert_close(model.bias, np.array([0.9, 1.9]), rtol=1e-6)
    assert model.weight.numpy().base is optimizer.flat_params


def test_assigning_data_of_a_new_shape_repacks_and_keeps_other_state(rng):
    weight = Tensor(rng.normal(size=(3, 4)), requires_grad=True)
    bias = Tensor(np.zeros(2), requires_grad=True)
    optimizer = Adam([weight, bias], lr=0.01)

    def loss():
        return (weight * 2.0).sum() + (bias * 3.0).sum()
    loss().backward()
    optimizer.step()
    optimizer.zero_grad()
    bias.data = np.array([1.0, 2.0, 3.0])          # (2,) -> (3,): the optimizer re-packs
    assert bias.shape == (3,)
    before = weight.numpy().copy()
    loss().backward()
    optimizer.step()
    # Adam's first step moves by lr against the gradient's sign; the weight is on its
    # second step (its state kept), the re-shaped bias starts afresh
    assert_close(bias, np.array([0.99, 1.99, 2.99]), rtol=1e-8)
    assert_close(weight, before - 0.01, rtol=1e-8)
    state = optimizer.state_dict()["state"]
    assert state[0]["step"] == 2 and state[1]["step"] == 1
    assert state[1]["exp_avg"].shape == (3,)
    assert weight.numpy().base is optimizer.flat_params
    assert bias.numpy().base is optimizer.flat_params
    optimizer.zero_grad()
    bias.data = np.zeros((2, 2))
    loss().backward()                               # a gradient of the new shape
    bias.data = np.zeros(5)                         # ... then another shape again
    with pytest.raises(RuntimeError, match="gradient has shape"):
        optimizer.step()


def test_a_repacked_parameter_starts_from_its_groups_initial_state():
    from fastdl.optim import Adagrad
    a = Tensor(np.zeros(2), requires_grad=True)
    b = Tensor(np.zeros(3), requires_grad=True)
    optimizer = Adagrad([{"params": [a]}, {"params": [b], "initial_accumulator_value": 1.0}],
                        lr=1.0, initial_accumulator_value=0.5, eps=0.0)

    def step():
        optimizer.zero_grad()
        (a.sum() + b.sum()).backward()              # gradient 1 everywhere
        optimizer.step()
    step()                                           # sum: a 0.5 + 1, b 1 + 1
    assert_close(a, -np.full(2, 1 / np.sqrt(1.5)), rtol=1e-12)
    assert_close(b, -np.full(3, 1 / np.sqrt(2.0)), rtol=1e-12)
    a_before = a.numpy().copy()
    b.data = np.zeros(4)                             # a new size: b's state starts afresh
    step()
    assert_close(a, a_before - 1 / np.sqrt(2.5), rtol=1e-12)
    assert_close(b, -np.full(4, 1 / np.sqrt(2.0)), rtol=1e-12)


def test_changing_the_dtype_after_building_the_optimizer(rng):
    model = nn.Linear(3, 2)
    optimizer = SGD(model.parameters(), lr=0.1)
    model.double()
    model(Tensor(np.ones((1, 3)))).sum().backward()
    optimizer.step()
    assert optimizer.flat_params.dtype == np.float64
    assert model.weight.dtype == np.float64 and model.weight.numpy().base is optimizer.flat_params
    model.weight.data = model.weight.numpy().astype(np.float32)      # mixed: a clear error
    with pytest.raises(TypeError, match="share one dtype"):
        optimizer.step()


def test_data_assignment_outside_an_optimizer_rebinds(rng):
    t = Tensor(np.zeros(3))
    replacement = np.arange(4.0)
    t.data = replacement
    assert t.numpy() is replacement
    t.data = [1.0, 2.0]
    assert t.dtype == np.float32 and t.shape == (2,)


# ------------------------------------------------------------ seeded shuffles

def test_shuffle_without_a_seed_follows_manual_seed():
    data = TensorDataset(np.arange(50, dtype=np.float32).reshape(50, 1, 1, 1), np.arange(50))

    def orders():
        loader = DataLoader(data, 50, shuffle=True)
        return [np.concatenate([y for _, y in loader]).tolist() for _ in range(2)]
    fastdl.manual_seed(0)
    first = orders()
    fastdl.manual_seed(0)
    assert orders() == first
    assert first[0] != first[1]                  # each epoch its own order
    fastdl.manual_seed(1)
    assert orders()[0] != first[0]
    assert sorted(first[0]) == list(range(50))


def test_a_sampler_with_its_own_seed_keeps_it_when_the_loader_has_none():
    from fastdl.distributed import DistributedSampler
    data = TensorDataset(np.zeros((40, 1, 1, 1), np.float32), np.arange(40))
    sampler = DistributedSampler(40, num_replicas=2, rank=1, seed=5)
    fastdl.manual_seed(123)      # the shared seed, not this process's generator, decides
    loader = DataLoader(data, 40, sampler=sampler)
    np.testing.assert_array_equal(np.concatenate([y for _, y in loader]),
                                  sampler.indices(0, 5))
