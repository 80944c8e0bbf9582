"""Tensor methods and fastdl.<op> functions as in torch (issue 25, item 2).

Every op with a gradient is checked three ways: a float64 finite-difference
``gradcheck``, and forward and backward against torch (skipped without it).
The same lambda runs on both libraries, as a ported program would.
"""
import subprocess
import sys

import numpy as np
import pytest

import fastdl
from fastdl import nn, optim
from fastdl.testing import gradcheck


def lib_of(x):
    """The library a tensor belongs to (fastdl, or torch in the comparisons)."""
    return fastdl if isinstance(x, fastdl.Tensor) else sys.modules["torch"]


S = (3, 4)
# name -> (function of tensors, input shapes)
DIFFERENTIABLE = {
    # shapes and indexing
    "view": (lambda x: x.view(-1), S), "reshape": (lambda x: x.reshape(4, 3), S),
    "view_as": (lambda x, y: x.view_as(y), S, (12,)),
    "flatten": (lambda x: x.flatten(1), (2, 3, 4)),
    "flatten_range": (lambda x: x.flatten(0, 1), (2, 3, 4)),
    "squeeze": (lambda x: x.squeeze(1), (3, 1, 4)),
    "squeeze_all": (lambda x: x.squeeze(), (3, 1, 1)),
    "unsqueeze": (lambda x: x.unsqueeze(-1), S),
    "permute": (lambda x: x.permute(2, 0, 1), (2, 3, 4)),
    "transpose": (lambda x: x.transpose(0, 2), (2, 3, 4)), "t": (lambda x: x.t(), S),
    "T": (lambda x: x.T, S), "expand": (lambda x: x.expand(2, 3, 4), (3, 1)),
    "expand_as": (lambda x, y: x.expand_as(y), (1, 4), S),
    "repeat": (lambda x: x.repeat(2, 1, 3), S),
    "cat": (lambda x, y: lib_of(x).cat([x, y], 1), S, (3, 2)),
    "stack": (lambda x, y: lib_of(x).stack([x, y], 1), S, S),
    "split": (lambda x: x.split(3, 1), (2, 7)), "split_sizes": (lambda x: x.split([1, 2], 0), S),
    "chunk": (lambda x: x.chunk(3, 1), (2, 7)), "unbind": (lambda x: x.unbind(1), S),
    "slice": (lambda x: x[1:, ::2], S), "int_index": (lambda x: x[1], S),
    "list_index": (lambda x: x[[0, 2, 2]], S), "none_ellipsis": (lambda x: x[None, ..., 1], S),
    "mask_index": (lambda x: x[x > 0], S),
    "gather": (lambda x: x.gather(1, lib_of(x).tensor([[0, 0], [1, 3], [2, 2]])), S),
    "index_select": (lambda x: x.index_select(1, lib_of(x).tensor([3, 0, 3])), S),
    "flip": (lambda x: x.flip(0, 1), S), "narrow": (lambda x: x.narrow(1, 1, 2), S),
    # reductions
    "sum": (lambda x: x.sum(), S), "sum_dim": (lambda x: x.sum(1, keepdim=True), S),
    "sum_dims": (lambda x: x.sum((0, 2)), (2, 3, 4)), "mean": (lambda x: x.mean(0), S),
    "mean_keepdim": (lambda x: x.mean(-1, True), S), "max": (lambda x: x.max(), S),
    "max_dim": (lambda x: x.max(1), S), "min_dim": (lambda x: x.min(0, keepdim=True), S),
    "std": (lambda x: x.std(), S), "std_dim": (lambda x: x.std(1, keepdim=True), S),
    "var_biased": (lambda x: x.var(0, unbiased=False), S),
    "var_correction": (lambda x: x.var(1, correction=2), S),
    "var_flag": (lambda x: x.var(False), S),
    "prod": (lambda x: x.prod(), S), "prod_dim": (lambda x: x.prod(1), S),
    "norm": (lambda x: x.norm(), S), "norm_1": (lambda x: x.norm(1), S),
    "norm_dim": (lambda x: x.norm(2, 1), S), "norm_inf": (lambda x: x.norm(float("inf"), 1), S),
    "norm_3": (lambda x: x.norm(3, 0, True), S), "logsumexp": (lambda x: x.logsumexp(1), S),
    "amax": (lambda x: x.amax((0, 1)), (2, 3, 4)), "cumsum": (lambda x: x.cumsum(1), S),
    "topk": (lambda x: x.topk(2, 1), S),
    "topk_smallest": (lambda x: x.topk(2, 0, largest=False), S),
    "sort": (lambda x: x.sort(1, descending=True), S),
    # elementwise
    "abs": (lambda x: x.abs(), S),
    "builtin_abs": (lambda x: abs(x), S),
    "exp": (lambda x: x.exp(), S),
    "log": (lambda x: (x * x + 1).log(), S), "sqrt": (lambda x: (x * x + 1).sqrt(), S),
    "rsqrt": (lambda x: (x * x + 1).rsqrt(), S), "pow": (lambda x: x.pow(3), S),
    "pow_float": (lambda x: (x * x + 1) ** 0.5, S),
    "pow_tensor": (lambda x, y: (x * x + 1) ** y, S, S),
    "rpow": (lambda x: 2 ** x, S), "clamp": (lambda x: x.clamp(-0.5, 0.5), S),
    "clamp_min": (lambda x: x.clamp(min=0.1), S), "clip": (lambda x: x.clip(max=0.2), S),
    "sign": (lambda x: x.sign() * x, S), "neg": (lambda x: x.neg(), S), "minus": (lambda x: -x, S),
    "reciprocal": (lambda x: (x * x + 1).reciprocal(), S), "sigmoid": (lambda x: x.sigmoid(), S),
    "tanh": (lambda x: x.tanh(), S), "relu": (lambda x: x.relu(), S),
    "softmax": (lambda x: x.softmax(1), S), "softmax_3d": (lambda x: x.softmax(dim=0), (2, 3, 4)),
    "log_softmax": (lambda x: x.log_softmax(-1), S), "square": (lambda x: x.square(), S),
    "where": (lambda x, y: lib_of(x).where(x > 0, x, y), S, (4,)),
    "maximum": (lambda x, y: lib_of(x).maximum(x, y), S, S),
    "minimum": (lambda x, y: lib_of(x).minimum(x, y), S, (4,)),
    "masked_fill": (lambda x: x.masked_fill(x > 0, 2.0), S),
    # arithmetic and products
    "add": (lambda x, y: x + y, S, (4,)), "sub": (lambda x, y: x - y, S, (3, 1)),
    "rsub": (lambda x: 1 - x, S), "mul": (lambda x, y: x * y, S, S),
    "div": (lambda x, y: x / (y * y + 1), S, (4,)), "rtruediv": (lambda x: 2 / (x * x + 1), S),
    "add_alpha": (lambda x, y: x.add(y, alpha=2), S, S), "matmul": (lambda x, y: x @ y, S, (4, 2)),
    "mm": (lambda x, y: x.mm(y), S, (4, 5)), "bmm": (lambda x, y: x.bmm(y), (2, 3, 4), (2, 4, 5)),
    "matvec": (lambda x, y: x.matmul(y), S, (4,)), "clone": (lambda x: x.clone() * 2, S),
    "contiguous": (lambda x: x.t().contiguous(), S),
}


def in_place_chain(x, y):
    z = x * 1
    z += y
    z *= 2
    z -= y
    z /= 3
    z.add_(y, alpha=2).mul_(y).sub_(1).div_(2)
    return z.clamp_(-1, 1)


def item_writes(x, y):
    z = x * 1
    z[0] = y[0]
    z[:, 1] = 5.0
    z[z > 1] = 0.0
    return z


def fills(x, y):
    z = x * 1
    z[0].fill_(3.0)               # through a view: the base changes, as in torch
    w = y * 1
    w.zero_()
    return z + w


def copy_into(x, y):
    z = x * 1
    z.copy_(y)
    return z * x


def masked_fill_in_place(x):
    z = x * 1
    z.masked_fill_(x < 0, 0.5)
    return z


DIFFERENTIABLE.update({
    "in_place": (in_place_chain, S, (4,)), "setitem": (item_writes, S, S),
    "fill_zero": (fills, S, S), "copy_": (copy_into, S, (4,)),
    "masked_fill_": (masked_fill_in_place, S),
    "scatter": (lambda x: x.scatter(1, lib_of(x).tensor([[0], [1], [3]]), 7.0), S),
    "scatter_src": (lambda x, y: x.scatter(1, lib_of(x).tensor([[0, 2], [1, 3], [3, 0]]), y),
                    S, (3, 2)),
})


def _inputs(shapes, seed):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape) for shape in shapes]


def _outputs(result):
    return list(result) if isinstance(result, (tuple, list)) else [result]


@pytest.mark.parametrize("name", sorted(DIFFERENTIABLE))
def test_gradcheck(name):
    function, *shapes = DIFFERENTIABLE[name]
    arrays = _inputs(shapes, seed=len(name))
    assert gradcheck(function, [fastdl.tensor(a, requires_grad=True) for a in arrays])


@pytest.mark.parametrize("name", sorted(DIFFERENTIABLE))
def test_forward_and_backward_match_torch(name):
    torch = pytest.importorskip("torch")
    function, *shapes = DIFFERENTIABLE[name]
    arrays = _inputs(shapes, seed=len(name))
    ours = [fastdl.tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    our_outputs, their_outputs = _outputs(function(*ours)), _outputs(function(*theirs))
    weights = _inputs([tuple(o.shape) for o in their_outputs], seed=1)
    for mine, reference in zip(our_outputs, their_outputs):
        assert mine.shape == tuple(reference.shape)
        assert str(mine.dtype) == str(reference.dtype).replace("torch.", "")
        np.testing.assert_allclose(mine.numpy(), reference.detach().numpy(), rtol=1e-10,
                                   atol=1e-12)
    sum((o * fastdl.tensor(w)).sum() for o, w in zip(our_outputs, weights)
        if o.requires_grad).backward()
    sum((o * torch.tensor(w)).sum() for o, w in zip(their_outputs, weights)
        if o.requires_grad).backward()
    for mine, reference in zip(ours, theirs):
        assert (mine.grad is None) == (reference.grad is None)
        if mine.grad is not None:
            np.testing.assert_allclose(mine.grad.numpy(), reference.grad.numpy(), rtol=1e-10,
                                       atol=1e-12)


# ------------------------------------------------------------- dtypes of results
PROMOTIONS = [
    lambda L: L.ones(3) * L.ones(3, dtype=L.int64), lambda L: L.ones(3, dtype=L.int64) / 2,
    lambda L: L.ones(3, dtype=L.int64) * 0.5, lambda L: L.ones(3, dtype=L.bool) * 2,
    lambda L: L.ones(3) + L.tensor(1.0, dtype=L.float64), lambda L: L.ones(3) * np.float64(2),
    lambda L: L.ones(3, dtype=L.int64) + L.tensor(1.5),
    lambda L: L.ones(3) + L.ones(3, dtype=L.float64),
    lambda L: L.ones(3, dtype=L.int64) // 2, lambda L: L.arange(5) % 3, lambda L: 2 ** L.arange(3),
    lambda L: L.arange(3) ** 2, lambda L: L.ones(3) ** L.arange(3),
    lambda L: L.ones(2, dtype=L.uint8) / 255,
    lambda L: L.ones(2, dtype=L.uint8) + L.ones(2, dtype=L.int64),
    lambda L: L.arange(6).reshape(2, 3).sum(0),
    lambda L: (L.arange(5) == 2).sum(), lambda L: L.arange(5).exp(), lambda L: L.arange(5).sqrt(),
    lambda L: L.arange(5).clamp(1, 3),
    lambda L: L.arange(6).prod(),
    lambda L: L.tensor([1, 2]).cumsum(0),
    lambda L: L.ones(2, 2).sum(dtype=L.float64), lambda L: L.tensor([True, False]).sum(),
    lambda L: L.where(L.tensor([True, False]), 1.0, 0.0),
    lambda L: L.tensor([-7, 7]).div(2, rounding_mode="trunc"),
    lambda L: L.tensor([-7, 7]).div(2, rounding_mode="floor"),
    lambda L: L.tensor([1.5, -2.5]).long(),
    lambda L: L.tensor([0.5, 1.5, 2.5]).round(), lambda L: L.tensor([[1, 5, 3]]).topk(2).indices,
    lambda L: L.tensor([3.0, 1.0, float("nan"), 2.0]).sort(descending=True).indices,
    lambda L: L.tensor([3.0, 1.0, float("nan"), 2.0]).argsort(),
    lambda L: L.tensor([[1.0, 2.0], [3.0, 4.0]]).norm(dim=1),
    lambda L: L.tensor([[1, 2], [3, 4]]).t(),
    lambda L: L.tensor([1, 2, 3])[L.tensor([True, False, True])],
]


@pytest.mark.parametrize("index", range(len(PROMOTIONS)))
def test_values_and_result_dtypes_match_torch(index):
    torch = pytest.importorskip("torch")
    ours, theirs = PROMOTIONS[index](fastdl), PROMOTIONS[index](torch)
    assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "")
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6, equal_nan=True)


def test_float_tensors_stay_float32_against_integers_and_numpy_scalars():
    x = fastdl.ones(3)
    labels = fastdl.tensor([0, 1, 1])
    assert (x * labels).dtype == (x + np.float64(1)).dtype == (x / 3).dtype == np.float32
    assert (fastdl.ones(2, dtype=fastdl.uint8) / 255).dtype == np.float32
    assert (x + fastdl.tensor(2.0, dtype=fastdl.float64)).dtype == np.float32


# ---------------------------------------------------------- int labels (no grad)
def test_classification_idioms_on_int64_labels():
    logits = fastdl.tensor([[0.1, 2.0, -1.0], [3.0, 0.5, 0.2], [0.0, 0.1, 0.3]])
    labels = fastdl.tensor([1, 0, 0])
    assert labels.dtype == fastdl.int64 and not labels.requires_grad
    predicted = logits.argmax(dim=1)
    assert predicted.eq(labels).sum().item() == 2
    assert (predicted == labels).sum().item() == 2
    _, best = fastdl.max(logits, 1)
    assert best.tolist() == [1, 0, 2]
    assert (predicted == labels).float().mean().item() == pytest.approx(2 / 3)
    correct = 0
    correct += (logits.max(1)[1] == labels).sum().item()
    assert correct == 2 and isinstance(correct, int)
    one_hot = fastdl.zeros(3, 3).scatter_(1, labels.unsqueeze(1), 1.0)
    assert one_hot.argmax(1).tolist() == labels.tolist()
    assert labels.view(-1, 1).shape == (3, 1) and labels.float().dtype == np.float32
    assert fastdl.cat([labels, labels]).tolist() == [1, 0, 0, 1, 0, 0]
    assert labels.max().item() == 1 and labels.sort().values.tolist() == [0, 0, 1]


# --------------------------------------------------------------- grad a Tensor
def test_grad_is_a_tensor_over_the_optimizers_flat_buffer():
    model = nn.Linear(3, 2)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    model(fastdl.randn(4, 3)).sum().backward()
    weight = model.weight
    assert isinstance(weight.grad, fastdl.Tensor) and not weight.grad.requires_grad
    assert isinstance(weight.grad.array, np.ndarray)
    assert np.shares_memory(weight.grad.array, optimizer.flat_grads)
    total = sum(p.grad.norm() ** 2 for p in model.parameters()).sqrt()
    assert total.item() > 0
    weight.grad.zero_()                          # writes the optimizer's buffer
    assert not np.any(optimizer.flat_grads[:weight.numel()])
    model.zero_grad(set_to_none=False)
    assert model.bias.grad is not None and model.bias.grad.abs().sum().item() == 0
    model.zero_grad()
    assert model.weight.grad is None


def test_grad_assignment_and_manual_sgd_step():
    w = fastdl.tensor([1.0, 2.0], requires_grad=True)
    (w * w).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [2.0, 4.0])
    with fastdl.no_grad():
        w -= 0.5 * w.grad
        w.grad.zero_()
    np.testing.assert_array_equal(w.numpy(), [0.0, 0.0])
    w.grad = np.ones(2, dtype=np.float32)        # an ndarray is wrapped without copying
    assert isinstance(w.grad, fastdl.Tensor)
    with pytest.raises(RuntimeError, match="different size"):
        w.grad = fastdl.ones(3)


# ------------------------------------------------------------ Python protocols
def test_python_protocols():
    x = fastdl.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert [row.tolist() for row in x] == [[1.0, 2.0], [3.0, 4.0]]
    assert f"{x.sum():.1f}" == "10.0" and float(x[0, 0]) == 1.0 and int(x[1, 1]) == 4
    assert x.size() == (2, 2) and x.size(1) == 2 and x.size(-1) == 2
    assert x.dim() == x.ndim == 2 and x.numel() == 4 and len(x) == 2
    assert np.asarray(x).dtype == np.float32 and np.shares_memory(np.asarray(x), x.numpy())
    with pytest.raises(RuntimeError, match="4 elements"):
        x.item()
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(x > 0)
    with pytest.raises(TypeError):
        iter(fastdl.tensor(1.0))
    with pytest.raises(IndexError):
        x.size(2)


def test_copies_views_and_detach():
    x = fastdl.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    detached = y.detach()
    assert not detached.requires_grad and np.shares_memory(detached.numpy(), y.numpy())
    clone = y.clone()
    assert clone.requires_grad and not np.shares_memory(clone.numpy(), y.numpy())
    y.detach_()
    assert y.is_leaf and not y.requires_grad
    base = fastdl.zeros(2, 3)
    base[0].fill_(1.0)                           # a view of a tensor outside the graph
    base[:, 2].zero_()
    assert base.sum().item() == 2
    assert x.requires_grad_(False) is x and not x.requires_grad
    with pytest.raises(RuntimeError, match="leaf"):
        (fastdl.ones(2, requires_grad=True) * 1).requires_grad_(False)
    with pytest.raises(RuntimeError, match="leaf"):
        fastdl.ones(2, requires_grad=True).add_(1)


def test_namespace_functions_take_tensors_and_arrays():
    x = fastdl.tensor([[1.0, -2.0], [3.0, 0.5]])
    assert fastdl.sum(x).item() == 2.5 and fastdl.sum(x, dim=0).tolist() == [4.0, -1.5]
    assert fastdl.max(x).item() == 3.0 and fastdl.argmax(x, 1).tolist() == [0, 0]
    assert fastdl.max(x, 1).values.tolist() == [1.0, 3.0]
    assert fastdl.max(x, fastdl.zeros(2, 2)).tolist() == [[1.0, 0.0], [3.0, 0.5]]
    assert fastdl.flatten(x).shape == (4,) and fastdl.numel(x) == 4
    assert fastdl.exp(np.zeros(2)).tolist() == [1.0, 1.0]
    assert fastdl.allclose(x, x.clone()) and fastdl.equal(x, x) and not fastdl.equal(x, x[0])
    assert fastdl.is_tensor(x) and not fastdl.is_tensor(x.numpy())
    assert fastdl.topk(x.flatten(), 2).values.tolist() == [3.0, 1.0]
    assert fastdl.mm(x, fastdl.eye(2)).tolist() == x.tolist()
    assert fastdl.softmax(x, dim=1).sum(1).tolist() == pytest.approx([1.0, 1.0])
    with pytest.raises(TypeError, match="input"):
        fastdl.sum("text")


def test_grad_mode_switches():
    x = fastdl.ones(2, requires_grad=True)
    with fastdl.no_grad():
        assert not (x * 2).requires_grad
        with fastdl.enable_grad():
            assert (x * 2).requires_grad
    with fastdl.inference_mode():
        assert not (x * 2).requires_grad
    with fastdl.set_grad_enabled(False):
        assert not fastdl.is_grad_enabled()
    assert fastdl.is_grad_enabled()
    fastdl.set_grad_enabled(False)
    assert not (x * 2).requires_grad
    fastdl.set_grad_enabled(True)

    @fastdl.no_grad
    def without_parentheses():
        return (x * 2).requires_grad

    @fastdl.inference_mode()
    def with_parentheses():
        return (x * 2).requires_grad
    assert without_parentheses() is False and with_parentheses() is False
    assert fastdl.is_grad_enabled()


# ------------------------------------------------------------------- errors
ERRORS = [
    (RuntimeError, lambda: fastdl.ones(2, 3).view(4)),
    (RuntimeError, lambda: fastdl.ones(2, 3).reshape(-1, -1)),
    (IndexError, lambda: fastdl.ones(2, 3).flatten(2)),
    (RuntimeError, lambda: fastdl.ones(2, 3).flatten(1, 0)),
    (IndexError, lambda: fastdl.ones(2, 3).unsqueeze(3)),
    (RuntimeError, lambda: fastdl.ones(2, 3).permute(0)),
    (RuntimeError, lambda: fastdl.ones(2, 3).permute(0, 0)),
    (RuntimeError, lambda: fastdl.ones(2, 3, 4).t()),
    (RuntimeError, lambda: fastdl.ones(2, 3).expand(2, 4)),
    (RuntimeError, lambda: fastdl.ones(2, 3).repeat(2)),
    (ValueError, lambda: fastdl.cat([])),
    (RuntimeError, lambda: fastdl.cat([fastdl.ones(2, 3), fastdl.ones(3, 3)], 1)),
    (RuntimeError, lambda: fastdl.stack([fastdl.ones(2), fastdl.ones(3)])),
    (RuntimeError, lambda: fastdl.ones(2, 3).split([1, 1], 1)),
    (RuntimeError, lambda: fastdl.ones(2, 3).chunk(0)),
    (IndexError, lambda: fastdl.ones(2, 3)[5]),
    (IndexError, lambda: fastdl.ones(2, 3).sum(2)),
    (RuntimeError, lambda: fastdl.ones(2, 3).sum((0, 0))),
    (RuntimeError, lambda: fastdl.ones(0).max()),
    (IndexError, lambda: fastdl.ones(2, 0).max(1)),
    (RuntimeError, lambda: fastdl.ones(2, 3).topk(4)),
    (IndexError, lambda: fastdl.ones(2, 3).softmax(3)),
    (RuntimeError, lambda: fastdl.ones(2, 3) @ fastdl.ones(2, 3)),
    (RuntimeError, lambda: fastdl.ones(2, 3).mm(fastdl.ones(3))),
    (RuntimeError, lambda: fastdl.ones(2, 3, 4).bmm(fastdl.ones(3, 4, 5))),
    (RuntimeError, lambda: fastdl.ones(3).item()),
    (RuntimeError, lambda: fastdl.ones(3, requires_grad=True).add_(1)),
    (RuntimeError, lambda: fastdl.ones(3, dtype=fastdl.int64).div_(2)),
    (RuntimeError, lambda: fastdl.ones(3).gather(0, fastdl.tensor([[0]]))),
    (RuntimeError, lambda: fastdl.ones(3).gather(0, fastdl.tensor([5]))),
    (RuntimeError, lambda: fastdl.ones(2, 3).index_select(1, fastdl.tensor([0.5]))),
    (RuntimeError, lambda: fastdl.ones(3).backward()),
    (RuntimeError, lambda: (fastdl.ones(3, requires_grad=True) * 2).backward()),
    (RuntimeError, lambda: fastdl.ones(3, dtype=fastdl.int64) ** -1),
    (RuntimeError, lambda: -fastdl.ones(2, dtype=fastdl.bool)),
    (RuntimeError, lambda: fastdl.ones(2).clamp()),
    (RuntimeError, lambda: fastdl.ones(2).where(fastdl.ones(2), 0.0)),
    (RuntimeError, lambda: fastdl.ones(2).masked_fill(fastdl.ones(2), 0.0)),
    (RuntimeError, lambda: fastdl.ones(2).copy_(fastdl.ones(3))),
    (RuntimeError, lambda: fastdl.ones(3).normal_(0, -1)),
    (RuntimeError, lambda: fastdl.ones(3).narrow(0, 2, 5)),
    (RuntimeError, lambda: fastdl.ones(3).unflatten(0, (2, 2))),
    (RuntimeError, lambda: fastdl.ones(2, 2).var(dim=(0, 0))),
    (TypeError, lambda: fastdl.ones(3).view(fastdl.ones(2))),
    (TypeError, lambda: fastdl.ones(3).var(correction="1")),
    (TypeError, lambda: fastdl.ones(2).max(1.5)),
    (TypeError, lambda: len(fastdl.tensor(1.0))),
    (NotImplementedError,
     lambda: (fastdl.ones(2, requires_grad=True) * 2).sum().backward(create_graph=True)),
]


@pytest.mark.parametrize("index", range(len(ERRORS)))
def test_bad_arguments_raise_torchs_kind_of_error(index):
    kind, call = ERRORS[index]
    with pytest.raises(kind):
        call()


def test_tensor_method_modules_import_in_any_order():
    modules = ["tensor_ops", "tensor_compare", "tensor_convert", "tensor_shape",
               "tensor_reduce", "tensor_math", "tensor_inplace", "tensor_functions", "creation"]
    script = "; ".join(["import importlib, sys",
                        "importlib.import_module('fastdl.' + sys.argv[1])",
                        "import fastdl",
                        "assert fastdl.ones(2).view(-1).sum().item() == 2"])
    for module in modules:
        done = subprocess.run([sys.executable, "-c", script, module], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, (module, done.stderr[-2000:])


def test_prod_gradient_with_zeros_matches_torch():
    torch = pytest.importorskip("torch")
    values = np.array([[2.0, 0.0, 3.0], [0.0, 0.0, 1.5], [1.0, -2.0, 4.0]])
    for dim in (None, 0, 1):
        ours = fastdl.tensor(values, requires_grad=True)
        theirs = torch.tensor(values, requires_grad=True)
        (ours.prod() if dim is None else ours.prod(dim)).sum().backward()
        (theirs.prod() if dim is None else theirs.prod(dim)).sum().backward()
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy())


def test_every_namespace_function_is_exported_by_fastdl():
    from fastdl import tensor_functions
    for name in tensor_functions.__all__:
        assert getattr(fastdl, name) is getattr(tensor_functions, name), name
    assert "sum" in dir(fastdl) and "float32" in dir(fastdl)
