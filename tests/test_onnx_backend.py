"""ONNX's backend node tests through deploy.from_onnx.

The onnx package defines a test per operator behaviour: a one-node model (or a small
"expanded" graph of it), inputs and the expected outputs (computed by ONNX's reference
code). Every test whose nodes are all in the operator set ``from_onnx`` maps runs here,
at its own batch size, against those outputs.

What is excluded, and why, is computed, never listed by hand:

* a node outside ``OPERATORS``: not collected (the count is in ``summary()``);
* a first input that is not a float tensor of 4 dims (N, C, H, W), the plan's input,
  or one of the test's other inputs that is not a tensor: skipped, naming it;
* ``from_onnx`` refusing the model (an op, attribute or value the plan cannot run, or a
  constant spanning the batch axis): skipped with from_onnx's own message.

The test's other inputs (a Conv's weight, a BatchNormalization's statistics, a Pad's
pads, ...) are bound as initializers: from_onnx takes constants there. ``python
tests/test_onnx_backend.py`` prints the table of every test and its outcome.
"""
import collections
import os
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import numpy_helper  # noqa: E402

from fastdl import deploy  # noqa: E402

#: The ONNX ops ``from_onnx`` maps (with the shape arithmetic it folds at import).
OPERATORS = frozenset("""
    Conv ConvTranspose BatchNormalization Gemm MatMul Add Mul Sub Div Relu LeakyRelu Clip
    Sigmoid Tanh HardSwish HardSigmoid Softmax LogSoftmax Gelu Erf Elu Selu Softplus Mish
    PRelu MaxPool AveragePool GlobalAveragePool GlobalMaxPool ReduceMean Flatten Reshape
    Transpose Concat Split Slice Squeeze Unsqueeze Pad Resize Identity Dropout Constant
    Shape Size Gather Cast ConstantOfShape Range InstanceNormalization LayerNormalization
    GroupNormalization""".split())
RTOL = ATOL = 1e-4

Case = collections.namedtuple("Case", "name model inputs outputs")


def _from_directory(root):
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name, "test_data_set_0")
        if not os.path.isdir(folder):
            continue
        model = onnx.load(os.path.join(root, name, "model.onnx"))
        arrays = {}
        for prefix in ("input", "output"):
            files = sorted((f for f in os.listdir(folder) if f.startswith(prefix + "_")),
                           key=lambda f: int(f[len(prefix) + 1:-3]))
            tensors = []
            for file in files:
                proto = onnx.TensorProto()
                with open(os.path.join(folder, file), "rb") as handle:
                    proto.ParseFromString(handle.read())
                tensors.append(numpy_helper.to_array(proto))
            arrays[prefix] = tensors
        yield Case(name, model, arrays["input"], arrays["output"])


def _generated():
    """The node tests as the onnx package defines them (its data files are not always
    installed)."""
    from onnx.backend.test.case.node import collect_testcases
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    for case in cases:
        if case.model is not None and case.data_sets:
            inputs, outputs = case.data_sets[0]
            yield Case(case.name, case.model, list(inputs), list(outputs))


def all_cases():
    root = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "node")
    return list(_from_directory(root) if os.path.isdir(root) else _generated())


def _ops(model):
    return {node.op_type for node in model.graph.node}


_CASES = all_cases()
IN_SCOPE = [case for case in _CASES if _ops(case.model) <= OPERATORS]


def _is_tensor(array):
    return isinstance(array, (np.ndarray, np.generic))


def exclusion(case):
    """Why ``case`` is out of scope for a plan's input, or None."""
    if not case.inputs or not _is_tensor(case.inputs[0]):
        return "the first input is not a tensor"
    first = np.asarray(case.inputs[0])
    if first.dtype not in (np.float32, np.float64):
        return "the first input is %s, not float" % first.dtype
    if first.ndim != 4:
        return "the first input has %d dims, not 4 (N, C, H, W)" % first.ndim
    if not all(_is_tensor(array) for array in case.inputs[1:]):
        return "another input is not a tensor"
    return None


def bound(case):
    """The case's model with its inputs after the first bound as initializers."""
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    graph = model.graph
    initializers = {proto.name for proto in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]
    for value, array in zip(inputs[1:], case.inputs[1:]):
        graph.initializer.append(numpy_helper.from_array(np.asarray(array), value.name))
    keep = [value for value in graph.input if value.name not in {
        v.name for v in inputs[1:]}]
    del graph.input[:]
    graph.input.extend(keep)
    return model


def outcome(case):
    """``("excluded" | "refused" | "ran", reason or the plan)``."""
    reason = exclusion(case)
    if reason is not None:
        return "excluded", reason
    try:
        return "ran", deploy.from_onnx(bound(case).SerializeToString())
    except ValueError as error:
        return "refused", str(error)


def _compare(plan, case):
    got = plan(case.inputs[0])
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(case.outputs)
    for mine, want in zip(got, case.outputs):
        assert mine.shape == want.shape
        np.testing.assert_allclose(mine, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", IN_SCOPE, ids=[case.name for case in IN_SCOPE])
def test_node(case):
    kind, result = outcome(case)
    if kind != "ran":
        pytest.skip("%s: %s" % (kind, result))
    _compare(result, case)


def test_the_node_tests_are_found():
    """The collection itself: the onnx package's node tests are there, and those in
    the operator set with a plan's input mostly run (79 of 136 with onnx 1.23: an
    importer that broke would refuse them)."""
    assert len(_CASES) > 500
    ran = [case for case in IN_SCOPE if outcome(case)[0] == "ran"]
    assert len(ran) >= 75, len(ran)


def summary():
    """Lines of (test, outcome, reason) and the totals."""
    lines, counts = [], collections.Counter()
    for case in IN_SCOPE:
        kind, result = outcome(case)
        if kind == "ran":
            try:
                _compare(result, case)
                kind, result = "passed", ""
            except AssertionError as error:
                kind, result = "failed", str(error).strip().splitlines()[0]
        counts[kind] += 1
        lines.append("%-70s %-9s %s" % (case.name, kind, result if kind != "ran" else ""))
    lines.append("")
    lines.append("%d node tests; %d with every node in the operator set: %s"
                 % (len(_CASES), len(IN_SCOPE), ", ".join("%s %d" % item for item in
                                                          sorted(counts.items()))))
    return lines


if __name__ == "__main__":
    print("\n".join(summary()))
