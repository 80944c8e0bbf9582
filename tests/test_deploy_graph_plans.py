"""Inference plans of several outputs and of random graphs of the graph ops.

A returned value is never computed away by the scheduler's fusions (a conv's max pool
in its epilogue, a classifier head, the dense layers after a chain) nor stored inside a
zero border; the outputs survive a plan file, a hostile ``outputs`` in a file is a
ValueError, and concurrent calls agree. Random small graphs of the graph ops, convs and
activations equal a NumPy interpreter of the same op list (``graph_reference``).
"""
import json
import threading

import numpy as np
import pytest

from fastdl import deploy
from fastdl.deploy.plan import InferencePlan
from fastdl.safetensors_io import load_file, save_file
from graph_reference import apply_op, run_reference


def _op(name, inputs, output, **attributes):
    return dict(op=name, inputs=inputs, output=output, **attributes)


def _conv(index, weight, padding=1, inputs=None):
    return _op("conv2d", inputs or [index], index + 1, stride=[1, 1], padding=[padding] * 2,
               dilation=[1, 1], groups=1, negative_slope=None, weights={"weight": weight})


def _assert_outputs(plan, x, tensors, outputs, rtol=1e-5, atol=1e-5):
    got = plan(x)
    assert isinstance(got, tuple) and len(got) == len(outputs)
    for array, expected in zip(got, run_reference(plan.ops, tensors, x, outputs)):
        np.testing.assert_allclose(array, expected, rtol=rtol, atol=atol)


@pytest.fixture
def weights(rng):
    """float32 weights of small 3x3 convs (the direct kernel's, chained and pooled) and of
    a linear layer."""
    return {"w": (rng.standard_normal((4, 4, 3, 3)) / 6).astype(np.float32),
            "fc": (rng.standard_normal((5, 4)) / 2).astype(np.float32),
            "fc2": (rng.standard_normal((3, 5)) / 2).astype(np.float32),
            "fc_wide": (rng.standard_normal((5, 64)) / 8).astype(np.float32)}


# --------------------------------------------------------------- several outputs

def test_outputs_come_back_as_a_tuple_of_fresh_copies(rng):
    """A 1-element list is a tuple too; a repeated id gives two arrays; changing a returned
    array changes neither the other nor the next call."""
    ops = [_op("activation", [0], 1, kind="relu", negative_slope=None),
           _op("activation", [1], 2, kind="tanh", negative_slope=None)]
    x = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    single = InferencePlan(ops, {}, (2, 4, 4), outputs=[1])
    (relu,) = single(x)
    np.testing.assert_array_equal(relu, np.maximum(x, 0))
    assert single.outputs == [1]
    assert isinstance(InferencePlan(ops, {}, (2, 4, 4))(x), np.ndarray)
    plan = InferencePlan(ops, {}, (2, 4, 4), outputs=[2, 1, 2])
    first, middle, again = plan(x)
    assert first is not again and not np.shares_memory(first, again)
    first[...] = 7
    np.testing.assert_array_equal(again, np.tanh(np.maximum(x, 0)))
    np.testing.assert_array_equal(plan(x)[0], again)
    np.testing.assert_array_equal(middle, relu)


def test_a_conv_output_returned_and_max_pooled_is_not_pooled_in_its_epilogue(weights, rng):
    """conv -> 2x2 max pool is one step (the pool in the conv's epilogue) unless the conv's
    output is returned too: then both are computed and both come back."""
    ops = [_conv(0, "w"), _op("max_pool2d", [1], 2, kernel_size=[2, 2], stride=[2, 2],
                              padding=[0, 0], ceil_mode=False)]
    fused = InferencePlan(ops, weights, (4, 8, 8))
    assert len(fused._program(1)[0]) == 1          # the pool runs in the conv's epilogue
    assert len(InferencePlan(ops, weights, (4, 8, 8), outputs=[2])._program(1)[0]) == 1
    plan = InferencePlan(ops, weights, (4, 8, 8), outputs=[1, 2])
    assert len(plan._program(1)[0]) == 2
    for batch in (1, 3, 7):
        x = rng.standard_normal((batch, 4, 8, 8)).astype(np.float32)
        _assert_outputs(plan, x, weights, [1, 2])
        np.testing.assert_array_equal(plan(x)[1], fused(x))


def test_a_returned_value_read_by_a_conv_chain_has_no_border(weights, rng):
    """Between chained convs an output lives inside the next conv's zero border; a
    returned one is stored plain (else the caller would get the border)."""
    ops = [_conv(0, "w"), _conv(1, "w"), _conv(2, "w"),
           _op("activation", [3], 4, kind="relu", negative_slope=None)]
    plain = InferencePlan(ops, weights, (4, 8, 8))
    assert {0, 1} <= set(plain._program(1)[1])       # bordered when nobody else reads them
    plan = InferencePlan(ops, weights, (4, 8, 8), outputs=[1, 2, 4])
    program, borders = plan._program(1)
    assert 0 not in borders and 1 not in borders
    for batch in (1, 3, 7):
        x = rng.standard_normal((batch, 4, 8, 8)).astype(np.float32)
        _assert_outputs(plan, x, weights, [1, 2, 4])
        np.testing.assert_allclose(plan(x)[2], plain(x), rtol=1e-6, atol=1e-6)


def test_a_classifier_head_is_not_fused_where_its_values_are_returned(weights, rng):
    """At batch 1 the pool, flatten and linear after a conv chain run in the chain
    (``_head``); where the last conv's or the pool's output is returned they run apart."""
    ops = [_conv(0, "w"), _conv(1, "w"), _op("adaptive_avg_pool2d", [2], 3, output_size=[1, 1]),
           _op("flatten", [3], 4, start_dim=1),
           _op("linear", [4], 5, negative_slope=None, weights={"weight": "fc"})]
    assert len(InferencePlan(ops, weights, (4, 6, 6))._program(1)[0]) == 1
    for outputs in ([2, 5], [3], [4, 5, 1]):
        plan = InferencePlan(ops, weights, (4, 6, 6), outputs=outputs)
        assert len(plan._program(1)[0]) > 1
        for batch in (1, 3):
            _assert_outputs(plan, rng.standard_normal((batch, 4, 6, 6)).astype(np.float32),
                            weights, outputs)


@pytest.mark.parametrize("batch", [4, 7])
def test_returned_values_of_a_dense_tail(weights, batch, rng):
    """From 4 rows the flatten and linear layers after a chain run in the chain; their
    values are still all there to return."""
    ops = [_conv(0, "w"), _conv(1, "w"), _op("flatten", [2], 3, start_dim=1),
           _op("linear", [3], 4, negative_slope=0.1, weights={"weight": "fc_wide"}),
           _op("linear", [4], 5, negative_slope=None, weights={"weight": "fc2"})]
    for outputs in ([3, 4, 5], [4], [2, 5]):
        plan = InferencePlan(ops, weights, (4, 4, 4), outputs=outputs)
        _assert_outputs(plan, rng.standard_normal((batch, 4, 4, 4)).astype(np.float32),
                        weights, outputs)


# ---------------------------------------------------------------------- files

def _mixed_plan(rng, dtype=np.float32, outputs=(1, 4, 7, 9)):
    """A plan with a conv and most graph ops, of several outputs."""
    tensors = {"w": (rng.standard_normal((4, 3, 3, 3)) / 4).astype(dtype),
               "c": rng.uniform(0.5, 2, (4, 1, 1)).astype(dtype),
               "g": rng.standard_normal(4).astype(dtype)}
    ops = [_conv(0, "w"), _op("binary", [1], 2, kind="div", reverse=True,
                              weights={"other": "c"}),
           _op("concat", [1, 2], 3, axis=1),
           _op("resize", [3], 4, mode="bicubic", size=[11, 7], align_corners=True, scale=None),
           _op("slice", [4], 5, axis=2, start=1, stop=11, step=2),
           _op("softmax", [5], 6, axis=1, log=False),
           _op("group_norm", [1], 7, groups=2, eps=1e-5, weights={"weight": "g"}),
           _op("transpose", [7], 8, perm=[0, 3, 1, 2]),
           _op("layer_norm", [8], 9, normalized_ndim=2, eps=1e-3)]
    return InferencePlan(ops, tensors, (3, 6, 6), outputs=None if outputs is None
                         else list(outputs)), tensors


@pytest.mark.parametrize("outputs", [None, (9,), (1, 4, 7, 9, 4)])
def test_a_plan_of_graph_ops_and_outputs_survives_its_file(outputs, tmp_path, rng):
    plan, tensors = _mixed_plan(rng, outputs=outputs)
    path = tmp_path / "plan.safetensors"
    plan.save(path)
    header = json.loads(load_file(path)[1]["fastdl.plan"])
    assert header.get("outputs", "absent") == ("absent" if outputs is None else list(outputs))
    loaded = deploy.load(path, warmup=True)
    assert loaded.outputs == plan.outputs and loaded.ops == plan.ops
    for batch in (1, 3):
        x = rng.standard_normal((batch, 3, 6, 6)).astype(np.float32)
        got, expected = loaded(x), plan(x)
        if outputs is None:
            got, expected = (got,), (expected,)
        reference = run_reference(plan.ops, tensors, x, outputs or [9])
        for array, same, want in zip(got, expected, reference):
            np.testing.assert_array_equal(array, same)
            np.testing.assert_allclose(array, want, rtol=1e-4, atol=1e-5)


HOSTILE_OUTPUTS = {"a_string": "1", "a_dict": {"0": 1}, "an_int": 1, "empty": [],
                   "the_input": [0], "past_the_ops": [3], "negative": [-1], "a_bool": [True],
                   "a_float": [1.0], "nested": [[1]], "huge_int": [2 ** 70],
                   "too_long": [1] * (deploy.MAX_OPS + 1), "a_null_entry": [1, None]}


@pytest.mark.parametrize("case", sorted(HOSTILE_OUTPUTS))
def test_hostile_outputs_are_refused(case, tmp_path):
    ops = [_op("activation", [0], 1, kind="relu", negative_slope=None),
           _op("softmax", [1], 2, axis=1, log=True)]
    description = {"format": "fastdl-plan", "version": 1, "input_shape": [2, 3, 3],
                   "dtype": "float32", "ops": ops, "outputs": HOSTILE_OUTPUTS[case]}
    path = tmp_path / "plan.safetensors"
    save_file({}, path, metadata={"fastdl.plan": json.dumps(description)})
    with pytest.raises(ValueError, match="invalid inference plan: outputs"):
        deploy.load(path)
    with pytest.raises(ValueError, match="invalid inference plan: outputs"):
        InferencePlan(ops, {}, (2, 3, 3), outputs=HOSTILE_OUTPUTS[case])
    description["outputs"] = [2, 1, 2]
    save_file({}, path, metadata={"fastdl.plan": json.dumps(description)})
    assert len(deploy.load(path)(np.ones((1, 2, 3, 3), np.float32))) == 3


def test_returned_copies_count_against_max_bytes():
    """Each returned copy is memory a call holds: a plan under a limit with one output
    passes it with the same value returned many times."""
    ops = [_op("activation", [0], 1, kind="relu", negative_slope=None)]
    single = InferencePlan(ops, {}, (4, 32, 32))
    InferencePlan(ops, {}, (4, 32, 32), max_bytes=single.call_bytes)
    with pytest.raises(ValueError, match="max_bytes"):
        InferencePlan(ops, {}, (4, 32, 32), max_bytes=single.call_bytes, outputs=[1] * 3)


# -------------------------------------------------------------------- threads

def test_concurrent_calls_of_a_plan_of_several_outputs_agree(rng):
    plan, _ = _mixed_plan(rng)
    inputs = [rng.standard_normal((batch, 3, 6, 6)).astype(np.float32)
              for batch in (1, 3, 7, 1, 3, 7, 2, 5)]
    expected = [plan(x) for x in inputs]
    failures = []

    def worker(offset):
        try:
            for step in range(6):
                index = (offset + step) % len(inputs)
                for got, want in zip(plan(inputs[index]), expected[index]):
                    np.testing.assert_array_equal(got, want)
        except Exception as error:   # collected: an assertion in a thread is lost
            failures.append(error)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]


# --------------------------------------------------------------- random graphs
_MOST_ELEMENTS = 2048   # per sample, of any value of a random graph


def _random_conv(rng, source, shape, values, tensors, index):
    channels = int(rng.integers(1, 5))
    kernel, padding = int(rng.choice([1, 3])), int(rng.integers(0, 2))
    if min(shape[2:]) + 2 * padding < kernel:
        return None
    name = "w%d" % index
    tensors[name] = rng.standard_normal((channels, shape[1], kernel, kernel)) / kernel
    op = _op("conv2d", [source], index + 1, stride=[int(rng.integers(1, 3))] * 2,
             padding=[padding] * 2, dilation=[1, 1], groups=1,
             negative_slope=None if rng.random() < 0.5 else 0.1, weights={"weight": name})
    if rng.random() < 0.5:
        tensors["b%d" % index] = rng.standard_normal(channels)
        op["weights"]["bias"] = "b%d" % index
    out = apply_op(op, [values[source]], tensors).shape
    residuals = [i for i, value in enumerate(values) if value.shape == out]
    if residuals and rng.random() < 0.5:
        op["inputs"].append(int(rng.choice(residuals)))
    return op


def _random_binary(rng, source, shape, values, tensors, index):
    kind = str(rng.choice(["add", "sub", "mul", "div"]))
    partners = [i for i, value in enumerate(values) if value.ndim == len(shape) and all(
        a == b or 1 in (a, b) for a, b in zip(value.shape[1:], shape[1:]))]
    if kind != "div" and rng.random() < 0.5:   # two values (no division by a value near 0)
        pair = [source, int(rng.choice(partners))]
        return _op("binary", pair[::-1] if rng.random() < 0.5 else pair, index + 1, kind=kind,
                   reverse=False)
    other = [n if rng.random() < 0.6 else 1 for n in shape[1:]]
    other = other[int(rng.integers(0, len(other) + 1)):]
    if rng.random() < 0.3:
        other = [1] + list(shape[1:])
    name = "c%d" % index
    tensors[name] = rng.uniform(0.5, 2, other) * rng.choice([-1, 1])
    return _op("binary", [source], index + 1, kind=kind,
               reverse=bool(kind != "div" and rng.random() < 0.5), weights={"other": name})


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def _random_reshape(rng, shape):
    size, sizes = int(np.prod(shape[1:])), []
    for _ in range(int(rng.integers(0, 3))):
        sizes.append(int(rng.choice(_divisors(size))))
        size //= sizes[-1]
    return sizes + [size]


def _random_op(rng, values, tensors, index):
    """One random op on the values so far (a later one more often), or None where the
    one drawn does not fit."""
    source = int(rng.choice(len(values), p=np.arange(1, len(values) + 1) / sum(
        range(1, len(values) + 1))))
    shape, ndim = values[source].shape, values[source].ndim
    kind = str(rng.choice(["conv2d", "activation", "binary", "concat", "slice", "reshape",
                           "transpose", "resize", "softmax", "group_norm", "layer_norm"]))
    axis = int(rng.integers(1, ndim))
    if kind == "conv2d" and ndim == 4:
        return _random_conv(rng, source, shape, values, tensors, index)
    if kind == "activation":
        return _op("activation", [source], index + 1, negative_slope=None,
                   kind=str(rng.choice(["relu", "tanh", "sigmoid"])))
    if kind == "binary":
        return _random_binary(rng, source, shape, values, tensors, index)
    if kind == "concat":
        partners = [i for i, value in enumerate(values) if value.ndim == ndim and all(
            value.shape[a] == shape[a] for a in range(1, ndim) if a != axis)]
        return _op("concat", [source] + [int(i) for i in rng.choice(
            partners, int(rng.integers(1, 3)))], index + 1, axis=axis)
    if kind == "slice":
        start = int(rng.integers(0, shape[axis]))
        return _op("slice", [source], index + 1, axis=axis, start=start,
                   stop=int(rng.integers(start + 1, shape[axis] + 1)),
                   step=int(rng.integers(1, 3)))
    if kind == "reshape":
        return _op("reshape", [source], index + 1, shape=_random_reshape(rng, shape))
    if kind == "transpose":
        return _op("transpose", [source], index + 1,
                   perm=[0] + [int(a) + 1 for a in rng.permutation(ndim - 1)])
    if kind == "resize" and ndim == 4:
        mode = str(rng.choice(["nearest", "nearest_exact", "bilinear", "bicubic"]))
        scale = None if rng.random() < 0.5 else [float(rng.choice([0.5, 0.75, 1.5, 2]))
                                                 for _ in range(2)]
        size = ([int(rng.integers(1, 9)) for _ in range(2)] if scale is None else
                [int(np.floor(n * s)) for n, s in zip(shape[2:], scale)])
        if min(size) < 1:
            return None
        return _op("resize", [source], index + 1, mode=mode, size=size, scale=scale,
                   align_corners=bool(not mode.startswith("nearest") and rng.random() < 0.5))
    if kind == "softmax":
        return _op("softmax", [source], index + 1, axis=axis, log=bool(rng.random() < 0.5))
    if kind in ("group_norm", "layer_norm") and ndim >= 3:
        eps = float(rng.choice([1e-5, 0.1]))
        affine = shape[1:2] if kind == "group_norm" else shape[ndim - axis:]
        weights = {}
        for role in ("weight", "bias"):
            if rng.random() < 0.5:
                tensors["%s%d" % (role, index)] = rng.standard_normal(affine)
                weights[role] = "%s%d" % (role, index)
        fields = ({"groups": int(rng.choice(_divisors(shape[1])))} if kind == "group_norm"
                  else {"normalized_ndim": axis})
        return _op(kind, [source], index + 1, eps=eps, weights=weights, **fields)
    return None


def _random_graph(seed):
    """(ops, float64 tensors, input shape, outputs) of a random graph of up to 12 ops."""
    rng = np.random.default_rng(seed)
    input_shape = (int(rng.integers(1, 5)), int(rng.integers(2, 9)), int(rng.integers(2, 9)))
    values, ops, tensors = [rng.standard_normal((2,) + input_shape)], [], {}
    while len(ops) < int(rng.integers(3, 13)) or not ops:
        op = _random_op(rng, values, tensors, len(ops))
        if op is None:
            continue
        value = apply_op(op, [values[i] for i in op["inputs"]], tensors)
        if value[0].size > _MOST_ELEMENTS:
            continue
        ops.append(op)
        values.append(value)
    outputs = None if rng.random() < 0.3 else [int(i) for i in rng.integers(
        1, len(ops) + 1, int(rng.integers(1, 4)))]
    return ops, tensors, input_shape, outputs


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-9), (np.float32, 2e-3)])
@pytest.mark.parametrize("seed", range(40))
def test_random_graphs_equal_the_numpy_interpreter(seed, dtype, tolerance):
    """Each output within ``tolerance`` of the float64 interpreter, relative to the
    output's largest magnitude (or 1), at batch 1 and 3."""
    ops, tensors, input_shape, outputs = _random_graph(seed)
    tensors = {name: array.astype(dtype) for name, array in tensors.items()}
    plan = InferencePlan(ops, tensors, input_shape, dtype=np.dtype(dtype).name, outputs=outputs)
    rng = np.random.default_rng(seed + 1000)
    for batch in (1, 3):
        x = rng.standard_normal((batch,) + input_shape).astype(dtype)
        got, expected = plan(x), run_reference(ops, tensors, x, outputs)
        if outputs is None:
            got, expected = (got,), (expected,)
        for value, array, reference in zip(outputs or [len(ops)], got, expected):
            scale = max(1.0, float(np.abs(reference).max()))
            error = float(np.abs(array - reference).max()) if array.size else 0.0
            assert array.shape == reference.shape and error <= tolerance * scale, (
                "seed %d, value %d of %s: %g off" % (seed, value, ops, error))
