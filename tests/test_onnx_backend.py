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

The package's "light" model graphs (whole ImageNet networks) run too, with random
weights, against ONNX Runtime (``test_light_model``).

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
    Conv ConvTranspose BatchNormalization Gemm MatMul Add Mul Sub Div Sum Relu LeakyRelu
    Clip Sigmoid Tanh HardSwish HardSigmoid Softmax LogSoftmax Gelu Erf Elu Selu Softplus Mish
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


# ---------------------------------------------------------------- the light models

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
LIGHT_MODELS = sorted(name for name in (os.listdir(LIGHT) if os.path.isdir(LIGHT) else [])
                      if name.endswith(".onnx"))
#: The most weights a light model may have here (VGG-19's 144 million take seconds).
LIGHT_WEIGHTS = 30_000_000


def _weights_for(model, seed):
    """``model`` (its weights made by ConstantOfShape nodes of constant shape) with
    random weights as initializers: He-scaled for kernels, in [0.5, 1.5) for vectors
    (BatchNormalization's variances among them); its last Softmax left out, so that the
    logits are compared."""
    graph = model.graph
    shapes = {proto.name: numpy_helper.to_array(proto) for proto in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            shapes[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    rng, kept = np.random.default_rng(seed), []
    for node in graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in shapes:
            shape = [int(n) for n in shapes[node.input[0]]]
            array = (rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
                     if len(shape) > 1 else rng.uniform(0.5, 1.5, shape))
            graph.initializer.append(numpy_helper.from_array(array.astype(np.float32),
                                                             node.output[0]))
        else:
            kept.append(node)
    if kept[-1].op_type == "Softmax" and kept[-1].output[0] == graph.output[0].name:
        graph.output[0].name = kept.pop().input[0]
    del graph.node[:]
    graph.node.extend(kept)
    return model


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model(name):
    """ONNX's "light" zoo graphs (ResNet-50, DenseNet-121, Inception v2, ShuffleNet,
    SqueezeNet, ...: 224x224 ImageNet networks of opset 9, batch fixed at 1) with random
    weights: the plan's logits at batch 2 equal ONNX Runtime's of each sample."""
    ort = pytest.importorskip("onnxruntime")
    model = onnx.load(os.path.join(LIGHT, name))
    count = sum(int(np.prod(numpy_helper.to_array(proto))) for node in model.graph.node
                if node.op_type == "ConstantOfShape" for proto in model.graph.initializer
                if proto.name == node.input[0])
    if count > LIGHT_WEIGHTS:
        pytest.skip("excluded: %d weights, more than this test's %d" % (count,
                                                                       LIGHT_WEIGHTS))
    data = _weights_for(model, 0).SerializeToString()
    try:
        plan = deploy.from_onnx(data, max_bytes=None)
    except ValueError as error:
        pytest.skip("refused: %s" % error)
    initializers = {proto.name for proto in model.graph.initializer}
    feed = [value.name for value in model.graph.input if value.name not in initializers][0]
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((2,) + plan.input_shape).astype(np.float32)
    want = np.concatenate([session.run(None, {feed: x[i:i + 1]})[0] for i in range(2)])
    got = plan(x)
    assert got.shape == want.shape
    scale = float(np.abs(want).max())
    assert float(np.abs(got - want).max()) <= 1e-4 * scale


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
