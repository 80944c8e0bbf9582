"""deploy.from_onnx, node by node: small hand-written ONNX graphs of every operator and
attribute the importer maps, each run by the plan and by ONNX Runtime at batch 1 and 3;
what it refuses, refused naming the node."""
import numpy as np
import pytest

from fastdl import deploy

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import helper, numpy_helper  # noqa: E402

SHAPE = (4, 7, 6)   # (C, H, W) of the graphs' input unless a case says otherwise


def _array(*shape, seed=0, low=-1.0, high=1.0):
    return np.random.default_rng([seed] + list(shape)).uniform(low, high, shape).astype(
        np.float32)


def _model(nodes, constants=None, shape=SHAPE, outputs=("y",), opset=17, dtype=np.float32):
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    initializers = [numpy_helper.from_array(np.asarray(array), name)
                    for name, array in (constants or {}).items()]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", elem, ["n"] + list(shape))],
        [helper.make_tensor_value_info(name, elem, None) for name in outputs], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset <= 18 else 10
    return model


def _close(got, want, rel=1e-5):
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = max(float(np.max(np.abs(want), initial=0.0)), 1.0)
    error = float(np.max(np.abs(got.astype(np.float64) - want), initial=0.0)) / scale
    assert error <= rel, "differs by %.3g of the output scale %.3g" % (error, scale)


def _check(model, shape=SHAPE, dtype=np.float32, rel=1e-5):
    """The plan of ``model`` equals ONNX Runtime's run of it; returns the plan."""
    data = model.SerializeToString()
    plan = deploy.from_onnx(data)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = _array(batch, *shape, seed=batch).astype(dtype)
        want = session.run(None, {"x": x})
        got = plan(x)
        got = got if isinstance(got, tuple) else (got,)
        assert len(got) == len(want)
        for mine, theirs in zip(got, want):
            _close(mine, theirs, rel)
    return plan


def _kinds(plan):
    return [op["op"] if op["op"] not in ("activation", "binary") else
            "%s:%s" % (op["op"], op["kind"]) for op in plan.ops]


def node(kind, inputs, outputs=("y",), **attributes):
    name = kind.lower() if outputs[0] == "y" else "%s_%s" % (kind.lower(), outputs[0])
    return helper.make_node(kind, list(inputs), list(outputs), name=name, **attributes)


def ints(*values):
    return np.array(values, np.int64)


def floats(*values):
    return np.array(values, np.float32)


# ---------------------------------------------------------------- convolutions

W = _array(6, 4, 3, 3)
B = _array(6)


@pytest.mark.parametrize("attributes, kinds", [
    (dict(pads=[0, 1, 2, 1], strides=[2, 2]), ["pad2d", "conv2d"]),
    (dict(pads=[1, 1, 1, 1], dilations=[2, 1]), ["conv2d"]),
    (dict(auto_pad="SAME_UPPER", strides=[2, 2]), ["pad2d", "conv2d"]),
    (dict(auto_pad="SAME_LOWER", strides=[2, 2]), ["pad2d", "conv2d"]),
    (dict(auto_pad="VALID"), ["conv2d"]),
])
def test_conv(attributes, kinds):
    plan = _check(_model([node("Conv", ["x", "w", "b"], **attributes)], {"w": W, "b": B}))
    assert _kinds(plan) == kinds


def test_grouped_conv_with_batch_norm_folded_and_a_residual():
    nodes = [node("Conv", ["x", "w"], ["c"], group=2, pads=[1, 1, 1, 1]),
             node("BatchNormalization", ["c", "g", "beta", "m", "v"], ["n"], epsilon=1e-3),
             node("Add", ["n", "x"], ["s"]), node("Relu", ["s"])]
    constants = {"w": _array(4, 2, 3, 3), "g": floats(1, 2, 0.5, 1), "beta": floats(0, 1, -1, 2),
                 "m": floats(0.1, -0.2, 0.3, 0), "v": floats(1, 2, 0.5, 1.5)}
    plan = _check(_model(nodes, constants))
    assert _kinds(plan) == ["conv2d"] and plan.ops[0]["negative_slope"] == 0.0
    assert len(plan.ops[0]["inputs"]) == 2


@pytest.mark.parametrize("attributes", [
    dict(strides=[2, 2], pads=[1, 0, 0, 2], output_padding=[1, 1]),
    dict(strides=[2, 2], pads=[2, 1, 0, 0]),
    dict(strides=[3, 2], output_shape=[22, 14]),
    dict(strides=[2, 2], auto_pad="SAME_UPPER"),
    dict(strides=[2, 2], auto_pad="SAME_LOWER", group=2),
    dict(dilations=[2, 2], pads=[1, 1, 1, 1]),
])
def test_conv_transpose(attributes):
    groups = attributes.get("group", 1)
    constants = {"w": _array(4, 6 // groups, 3, 3), "b": _array(6)}
    _check(_model([node("ConvTranspose", ["x", "w", "b"], **attributes)], constants))


def test_gemm_and_matmul():
    nodes = [node("GlobalAveragePool", ["x"], ["p"]), node("Flatten", ["p"], ["f"]),
             node("Gemm", ["f", "w", "c"], ["g"], alpha=0.5, beta=2.0, transB=1),
             node("BatchNormalization", ["g", "s", "t", "m", "v"], ["h"]),
             node("MatMul", ["h", "k"], ["y"])]
    constants = {"w": _array(5, 4), "c": _array(1, 5), "s": _array(5) + 2, "t": _array(5),
                 "m": _array(5), "v": _array(5) + 2, "k": _array(5, 3)}
    assert _kinds(_check(_model(nodes, constants))) == ["adaptive_avg_pool2d", "flatten",
                                                         "linear", "linear"]


def test_matmul_of_images():
    """x @ K over W, and R @ x over H (a 1x1 conv between transposes)."""
    nodes = [node("MatMul", ["x", "k"], ["a"]), node("MatMul", ["r", "a"], ["b"]),
             node("Add", ["b", "bias"])]
    constants = {"k": _array(6, 5), "r": _array(3, 7), "bias": _array(5)}
    plan = _check(_model(nodes, constants))
    assert _kinds(plan).count("conv2d") == 2


# ---------------------------------------------------------------- elementwise

@pytest.mark.parametrize("kind", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("other", [floats(1.5), _array(4, 1, 1) + 2, _array(1, 6) + 2,
                                   _array(1, 4, 7, 6) + 2, _array(7, 1) + 2])
@pytest.mark.parametrize("first", [True, False])
def test_binary_with_a_constant(kind, other, first):
    inputs = ["x", "c"] if first else ["c", "x"]
    _check(_model([node(kind, inputs)], {"c": other}))


@pytest.mark.parametrize("kind", ["Add", "Sub", "Mul", "Div"])
def test_binary_of_two_values(kind):
    """A squeeze-excitation gate (N, C, 1, 1) against (N, C, H, W), and x with itself."""
    nodes = [node("GlobalAveragePool", ["x"], ["p"]), node("Sigmoid", ["p"], ["g"]),
             node(kind, ["x", "g"], ["a"]), node(kind, ["a", "a"])]
    _check(_model(nodes))


def test_a_constant_added_after_a_conv_is_its_bias():
    nodes = [node("Conv", ["x", "w"], ["c"]), node("Add", ["c", "b"], ["a"]),
             node("Sub", ["a", "d"], ["y"])]
    plan = _check(_model(nodes, {"w": W, "b": B.reshape(6, 1, 1), "d": floats(0.25)}))
    assert _kinds(plan) == ["conv2d"]


@pytest.mark.parametrize("kind, attributes, plan_kind", [
    ("Relu", {}, "activation:relu"), ("Sigmoid", {}, "activation:sigmoid"),
    ("Tanh", {}, "activation:tanh"), ("LeakyRelu", dict(alpha=0.2), "activation:leaky_relu"),
    ("HardSwish", {}, "activation:hardswish"),
    ("HardSigmoid", dict(alpha=1 / 6, beta=0.5), "activation:hardsigmoid"),
    ("HardSigmoid", {}, "activation:hardtanh"),
    ("Elu", dict(alpha=0.5), "activation:elu"), ("Selu", {}, "activation:elu"),
    ("Softplus", {}, "activation:softplus"),
])
def test_activations(kind, attributes, plan_kind):
    plan = _check(_model([node(kind, ["x"], **attributes)]), rel=2e-5)
    assert _kinds(plan)[-1] == plan_kind


@pytest.mark.parametrize("kind, opset, attributes", [
    ("Mish", 18, {}), ("Gelu", 20, {}), ("Gelu", 20, dict(approximate="tanh")),
])
def test_newer_activations(kind, opset, attributes):
    _check(_model([node(kind, ["x"], **attributes)], opset=opset), rel=2e-5)


@pytest.mark.parametrize("low, high, kind", [
    (0.0, None, "relu"), (0.0, 6.0, "relu6"), (-1.0, 1.0, "hardtanh"),
    (-0.5, None, "hardtanh"), (None, 0.5, "hardtanh"), (0.5, -0.5, "hardtanh"),
    (None, None, None),
])
def test_clip(low, high, kind):
    names = ["x", "" if low is None else "lo", "" if high is None else "hi"]
    while names[-1] == "":
        names.pop()
    constants = {name: floats(value) .reshape(()) for name, value in (("lo", low), ("hi", high))
                 if value is not None}
    plan = _check(_model([node("Clip", names)], constants))
    assert _kinds(plan) == (["activation:%s" % kind] if kind else ["activation:identity"])


def test_exported_activation_patterns():
    """torch's exact GELU (Div, Erf, Add, Mul, Mul), x * Sigmoid(x) and
    x * HardSigmoid(x) are one activation each."""
    nodes = [node("Div", ["x", "sqrt2"], ["d"]), node("Erf", ["d"], ["e"]),
             node("Add", ["e", "one"], ["a"]), node("Mul", ["x", "a"], ["m"]),
             node("Mul", ["m", "half"], ["gelu"]), node("Sigmoid", ["gelu"], ["s"]),
             node("Mul", ["gelu", "s"], ["silu"]),
             node("HardSigmoid", ["silu"], ["h"], alpha=1 / 6), node("Mul", ["h", "silu"])]
    constants = {"sqrt2": floats(np.sqrt(2)).reshape(()), "one": floats(1).reshape(()),
                 "half": floats(0.5).reshape(())}
    plan = _check(_model(nodes, constants))
    assert _kinds(plan) == ["activation:gelu", "activation:silu", "activation:hardswish"]


def test_prelu():
    nodes = [node("PRelu", ["x", "s"], ["a"]), node("PRelu", ["a", "t"])]
    _check(_model(nodes, {"s": _array(4, 1, 1), "t": floats(0.25)}))


@pytest.mark.parametrize("kind, axis, opset", [
    ("Softmax", 1, 17), ("LogSoftmax", -1, 17), ("Softmax", 2, 11), ("LogSoftmax", 3, 11),
])
def test_softmax(kind, axis, opset):
    _check(_model([node(kind, ["x"], axis=axis)], opset=opset))


# ---------------------------------------------------------------- pools

@pytest.mark.parametrize("kind, attributes", [
    ("MaxPool", dict(kernel_shape=[3, 3], pads=[2, 2, 2, 2])),
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)),
    ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1])),
    ("MaxPool", dict(kernel_shape=[3, 2], strides=[2, 1], auto_pad="SAME_UPPER")),
    ("AveragePool", dict(kernel_shape=[3, 3], pads=[2, 1, 2, 1])),
    ("AveragePool", dict(kernel_shape=[3, 3], pads=[2, 1, 2, 1], count_include_pad=1)),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                         ceil_mode=1, count_include_pad=1)),
    ("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1],
                         count_include_pad=1)),
    ("AveragePool", dict(kernel_shape=[2, 3], strides=[2, 2], ceil_mode=1)),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_LOWER")),
])
def test_pools(kind, attributes):
    _check(_model([node(kind, ["x"], **attributes)]))


@pytest.mark.parametrize("keepdims, opset", [(1, 17), (0, 17), (0, 18)])
def test_global_pools_and_means(keepdims, opset):
    axes = {"axes": [2, 3]} if opset < 18 else {}
    inputs = ["m"] + (["axes"] if opset >= 18 else [])
    nodes = [node("GlobalMaxPool", ["x"], ["g"]), node("Add", ["x", "g"], ["m"]),
             node("ReduceMean", inputs, keepdims=keepdims, **axes)]
    _check(_model(nodes, {"axes": ints(-1, -2)} if opset >= 18 else {}, opset=opset))


# ---------------------------------------------------------------- layout

def test_shape_arithmetic_is_folded():
    """x.view(x.size(0), -1) as torch writes it, and a reshape of 0s and -1s."""
    nodes = [node("Shape", ["x"], ["s"]), node("Gather", ["s", "zero"], ["n"], axis=0),
             node("Unsqueeze", ["n", "axes"], ["u"]), node("Concat", ["u", "minus"], ["t"],
                                                          axis=0),
             node("Reshape", ["x", "t"], ["f"]), node("Reshape", ["f", "back"])]
    constants = {"zero": ints(0).reshape(()), "axes": ints(0), "minus": ints(-1),
                 "back": ints(0, 2, -1, 3)}
    plan = _check(_model(nodes, constants))
    assert _kinds(plan) == ["flatten", "reshape"]


def test_transpose_squeeze_unsqueeze_flatten():
    nodes = [node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
             node("Unsqueeze", ["t", "a"], ["u"]), node("Squeeze", ["u", "a"], ["s"]),
             node("Flatten", ["s"])]
    _check(_model(nodes, {"a": ints(2)}))


@pytest.mark.parametrize("opset", [13, 18])
def test_split_concat_and_several_outputs(opset):
    split = (node("Split", ["x", "sizes"], ["a", "b"], axis=1) if opset == 13 else
             node("Split", ["x"], ["a", "b"], axis=1, num_outputs=2))
    nodes = [split, node("Concat", ["b", "a", "b"], ["y"], axis=3),
             node("Relu", ["a"], ["r"])]
    plan = _check(_model(nodes, {"sizes": ints(2, 2)}, outputs=("y", "r", "x"),
                         opset=opset))
    assert len(plan.outputs) == 3


@pytest.mark.parametrize("starts, ends, axes, steps", [
    (ints(1, -5), ints(3, 100), ints(1, 3), None),
    (ints(0, 1), ints(7, 6), ints(2, 3), ints(2, 3)),
    (ints(0, 2), ints(10 ** 10, -1), ints(0, -2), None),
])
def test_slice(starts, ends, axes, steps):
    constants = {"s": starts, "e": ends, "a": axes}
    names = ["x", "s", "e", "a"]
    if steps is not None:
        constants["t"], names = steps, names + ["t"]
    _check(_model([node("Slice", names)], constants))


@pytest.mark.parametrize("indices, axis", [(ints(2, 0, 1, 3), 1), (ints(4).reshape(()), 3),
                                           (ints(0, 2, 4, 6, 1).reshape(5, 1), 2)])
def test_gather_of_a_value(indices, axis):
    _check(_model([node("Gather", ["x", "i"], axis=axis)], {"i": indices}))


@pytest.mark.parametrize("mode, pads, value, opset", [
    ("constant", ints(0, 0, 1, 2, 0, 0, 2, 0), 0.0, 17),
    ("constant", ints(0, 0, 1, 2, 0, 0, 2, 0), 1.5, 17),
    ("constant", ints(0, 0, -1, 2, 0, 0, 2, -2), 0.0, 17),
    ("reflect", ints(0, 0, 2, 1, 0, 0, 1, 3), None, 17),
    ("edge", ints(0, 0, 3, 0, 0, 0, 0, 4), None, 17),
    ("wrap", ints(0, 0, 2, 1, 0, 0, 1, 2), None, 19),
])
def test_pad(mode, pads, value, opset):
    names, constants = ["x", "p"], {"p": pads}
    if value is not None:
        names, constants["v"] = names + ["v"], floats(value).reshape(())
    _check(_model([node("Pad", names, mode=mode)], constants, opset=opset))


@pytest.mark.parametrize("attributes, scales, sizes", [
    (dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
     floats(1, 1, 2, 3), None),
    (dict(mode="nearest", coordinate_transformation_mode="half_pixel",
          nearest_mode="round_prefer_ceil"), None, ints(5, 4)),
    (dict(mode="nearest"), floats(1, 1, 2, 2), None),
    (dict(mode="linear"), None, ints(11, 13)),
    (dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
     floats(1, 1, 1.5, 0.5), None),
    (dict(mode="linear", coordinate_transformation_mode="align_corners"), None, ints(3, 9)),
    (dict(mode="cubic", cubic_coeff_a=-0.75), floats(1, 1, 2, 2), None),
    (dict(mode="cubic", cubic_coeff_a=-0.75, coordinate_transformation_mode="align_corners"),
     None, ints(10, 5)),
])
def test_resize(attributes, scales, sizes):
    constants = {"s": scales} if scales is not None else {"z": sizes}
    names = ["x", "", "s"] if scales is not None else ["x", "", "", "z"]
    if sizes is not None:   # of H and W alone (the batch is not fixed)
        attributes = dict(attributes, axes=[2, 3])
    plan = _check(_model([node("Resize", names, **attributes)], constants, opset=18),
                  rel=2e-5)
    assert _kinds(plan) == ["resize"]


# ---------------------------------------------------------------- norms

def test_instance_and_layer_norm():
    nodes = [node("InstanceNormalization", ["x", "s", "b"], ["i"], epsilon=1e-3),
             node("LayerNormalization", ["i", "g", "h"], ["l"], axis=-1),
             node("LayerNormalization", ["l", "g2"], ["y"], axis=1)]
    constants = {"s": _array(4) + 1, "b": _array(4), "g": _array(6) + 1, "h": _array(6),
                 "g2": _array(4, 7, 6) + 1}
    assert _kinds(_check(_model(nodes, constants), rel=2e-5)) == [
        "group_norm", "layer_norm", "layer_norm"]


@pytest.mark.parametrize("square", ["Pow", "Mul"])
def test_layer_norm_as_torch_writes_it_before_opset_17(square):
    nodes = [node("ReduceMean", ["x"], ["m"], axes=[-2, -1]), node("Sub", ["x", "m"], ["d"]),
             node(square, ["d", "two"] if square == "Pow" else ["d", "d"], ["q"]),
             node("ReduceMean", ["q"], ["v"], axes=[-2, -1]), node("Add", ["v", "eps"], ["e"]),
             node("Sqrt", ["e"], ["s"]), node("Div", ["d", "s"], ["n"]),
             node("Mul", ["n", "w"], ["a"]), node("Add", ["a", "b"])]
    constants = {"two": floats(2).reshape(()), "eps": floats(1e-5).reshape(()),
                 "w": _array(7, 6) + 1, "b": _array(7, 6)}
    plan = _check(_model(nodes, constants, opset=13), rel=2e-5)
    assert _kinds(plan) == ["layer_norm"]   # the affine folded into its weights


def test_group_norm_as_torch_writes_it():
    """Reshape to (N, G, -1), InstanceNormalization, Reshape to the input's Shape, then
    the affine: one group_norm."""
    nodes = [node("Reshape", ["x", "grouped"], ["r"]),
             node("InstanceNormalization", ["r", "ones", "zeros"], ["i"], epsilon=1e-5),
             node("Shape", ["x"], ["s"]), node("Reshape", ["i", "s"], ["b"]),
             node("Mul", ["b", "w"], ["m"]), node("Add", ["m", "bias"])]
    constants = {"grouped": ints(0, 2, -1), "ones": floats(1, 1), "zeros": floats(0, 0),
                 "w": _array(4, 1, 1) + 1, "bias": _array(4, 1, 1)}
    plan = _check(_model(nodes, constants), rel=2e-5)
    assert _kinds(plan) == ["group_norm"] and plan.ops[0]["groups"] == 2


@pytest.mark.parametrize("opset", [18, 21])
def test_group_norm(opset):
    size = 2 if opset < 21 else 4   # per group before opset 21, per channel after
    constants = {"s": _array(size) + 1, "b": _array(size)}
    _check(_model([node("GroupNormalization", ["x", "s", "b"], num_groups=2)], constants,
                  opset=opset), rel=2e-5)


def test_a_double_input_gives_a_double_plan():
    nodes = [node("Mul", ["x", "w"], ["c"]), node("Softmax", ["c"])]
    plan = _check(_model(nodes, {"w": _array(7, 6).astype(np.float64)}, dtype=np.float64),
                  dtype=np.float64, rel=1e-12)
    assert plan.dtype == np.float64


# ---------------------------------------------------------------- refusals

@pytest.mark.parametrize("nodes, constants, opset, match", [
    ([node("Erf", ["x"])], {}, 17, r"node 'erf' \(Erf\): op Erf is not supported"),
    ([node("Flatten", ["x"], axis=2)], {}, 17, r"\(Flatten\): only Flatten\(axis=1\)"),
    ([node("Softmax", ["x"], axis=0)], {}, 17, r"\(Softmax\): axis 0 is the batch axis"),
    ([node("Transpose", ["x"], perm=[1, 0, 2, 3])], {}, 17, r"\(Transpose\): perm"),
    ([node("Reshape", ["x", "t"])], {"t": ints(-1, 42)}, 17,
     r"\(Reshape\): the reshape to \[-1, 42\] does not keep the batch axis"),
    ([node("Slice", ["x", "s", "e", "a"])], {"s": ints(1), "e": ints(2), "a": ints(0)}, 17,
     r"\(Slice\): slices the batch axis"),
    ([node("Gather", ["x", "i"], axis=0)], {"i": ints(0)}, 17, r"\(Gather\): axis 0"),
    ([node("Pad", ["x", "p"])], {"p": ints(0, 1, 0, 0, 0, 1, 0, 0)}, 17,
     r"\(Pad\): only the last two axes"),
    ([node("Pad", ["x", "p"], mode="wrap")], {"p": ints(0, 0, 1, 1, 0, 0, 1, 1)}, 17,
     r"\(Pad\): mode 'wrap' is not supported"),
    ([node("Resize", ["x", "", "s"], mode="cubic", cubic_coeff_a=-0.5)],
     {"s": floats(1, 1, 2, 2)}, 18, r"\(Resize\): cubic_coeff_a -0.5"),
    ([node("Resize", ["x", "", "s"], mode="linear",
           coordinate_transformation_mode="asymmetric")], {"s": floats(1, 1, 2, 2)}, 18,
     r"\(Resize\): coordinate_transformation_mode 'asymmetric'"),
    ([node("Resize", ["x", "", "s"], mode="linear", antialias=1)], {"s": floats(1, 1, .5, .5)},
     18, r"\(Resize\): antialias=1"),
    ([node("MaxPool", ["x"], kernel_shape=[2, 2], dilations=[2, 2])], {}, 17,
     r"\(MaxPool\): dilations are not supported"),
    ([node("Conv", ["x", "x"])], {}, 17, r"\(Conv\): input 'x' must be a constant"),
    ([node("MatMul", ["x", "x"])], {}, 17, r"\(MatMul\): only a value times a constant"),
    ([node("BatchNormalization", ["x", "s", "s", "s", "s"], training_mode=1)],
     {"s": floats(1, 1, 1, 1)}, 17, r"\(BatchNormalization\): only inference mode"),
    ([node("Add", ["x", "c"])], {"c": _array(2, 4, 7, 6)}, 17,
     r"\(Add\): a constant of shape \(2, 4, 7, 6\) spans the batch axis"),
    ([node("Relu", ["x"], foo=1)], {}, 17, r"\(Relu\): attribute 'foo' is not supported"),
    ([helper.make_node("Relu", ["x"], ["y"], name="r", domain="fastdl")], {}, 17,
     r"domain 'fastdl'"),
    ([node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2])], {}, 17,
     r"\(MaxPool\): its output 'i' is not supported"),
])
def test_refusals_name_the_node(nodes, constants, opset, match):
    outputs = [name for name in nodes[-1].output]
    with pytest.raises(ValueError, match=match):
        deploy.from_onnx(_model(nodes, constants, opset=opset, outputs=outputs)
                         .SerializeToString())


@pytest.mark.parametrize("nodes, constants, match", [
    ([node("ConstantOfShape", ["s"], ["c"]), node("Add", ["x", "c"])],
     {"s": ints(1 << 20, 1 << 20)}, r"\(ConstantOfShape\): a constant of \d+ elements"),
    ([node("Range", ["a", "b", "c"], ["r"]), node("Add", ["x", "r"])],
     {"a": ints(0).reshape(()), "b": ints(1 << 40).reshape(()), "c": ints(1).reshape(())},
     r"\(Range\): a constant of \d+ elements"),
    ([node("Expand", ["e", "s"], ["c"]), node("Add", ["x", "c"])],
     {"e": floats(1), "s": ints(1 << 12, 1 << 12, 1 << 12)}, r"\(Expand\): a constant of"),
    ([node("Reshape", ["x", "t"])], {"t": ints(0, 1 << 30, -1)}, r"\(Reshape\): cannot"),
    ([node("Relu", ["z"], ["y"]), node("Relu", ["y"], ["z"])], {},
     r"\(Relu\): input 'z' is not a value"),
    ([node("Relu", ["missing"])], {}, r"input 'missing' is not a value"),
    ([node("AveragePool", ["x"], kernel_shape=[3, 3], pads=[1 << 40, 0, 0, 0])], {},
     r"\(AveragePool\): pads .* must be 4 ints in \[0, 16777216\]"),
    ([node("Resize", ["x", "", "s"])], {"s": floats(1, 1, 1e30, 1)},
     r"\(Resize\): output size .* larger than a plan's value may be"),
    ([node("Pad", ["x", "p", "v"])], {"p": ints(0, 0, 6000, 6000, 0, 0, 6000, 6000),
                                      "v": floats(1).reshape(())},
     r"\(Pad\): constant 'border' takes the model's tensors past max_bytes"),
])
def test_hostile_graphs_are_refused_before_allocating(nodes, constants, match):
    with pytest.raises(ValueError, match=match):
        deploy.from_onnx(_model(nodes, constants).SerializeToString())
