"""deploy.export_onnx of the plan's graph ops and several outputs: plans built op by op
(and the CIFAR zoo's MobileNetV2, compiled by its trace) run in ONNX Runtime equal to
the plan (rel 1e-5), at every opset where the ONNX form changes; what from_onnx reads
back equals the plan too."""

import numpy as np
import pytest

import fastdl
from fastdl import deploy
from fastdl.deploy.plan import InferencePlan

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from fastdl.deploy.onnx_export import to_onnx  # noqa: E402

SHAPE = (4, 6, 5)


def _array(*shape, seed=0):
    return np.random.default_rng([seed] + list(shape)).uniform(-1, 1, shape).astype(
        np.float32)


def _assert_close(got, want, rel):
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = max(float(np.max(np.abs(want), initial=0.0)), 1.0)
    error = float(np.max(np.abs(got.astype(np.float64) - want), initial=0.0)) / scale
    assert error <= rel, "differs by %.3g of the output scale %.3g" % (error, scale)


def _outputs(result):
    return result if isinstance(result, tuple) else (result,)


def _run_everywhere(plan, opset, rel=1e-5, batches=(1, 7), read_back=True):
    """ONNX Runtime on the exported plan, and the plan from_onnx reads back (unless
    ``read_back`` is false), equal the plan."""
    model = to_onnx(plan, opset)
    data = model.SerializeToString()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    back = deploy.from_onnx(data, max_bytes=None) if read_back else plan
    for batch in batches:
        x = _array(batch, *plan.input_shape, seed=batch)
        want = _outputs(plan(x))
        theirs = session.run(None, {"input": x})
        assert len(theirs) == len(want)
        for got, expected in zip(theirs, want):
            _assert_close(got, expected, rel)
        for got, expected in zip(_outputs(back(x)), want):
            _assert_close(got, expected, rel)
    return model


def _op(name, inputs, output, **fields):
    return dict(op=name, inputs=list(inputs), output=output, **fields)


def _plan(ops, tensors=None, outputs=None, shape=SHAPE):
    return InferencePlan(ops, tensors or {}, shape, dtype="float32", outputs=outputs)


OPSETS = (11, 13, 17, 18, 21)


@pytest.mark.parametrize("opset", OPSETS)
def test_arithmetic_and_layout(opset):
    tensors = {"c": _array(1, 6, 1), "s": np.array([2.5], np.float32)}
    ops = [
        _op("binary", [0], 1, kind="sub", reverse=True, weights={"other": "s"}),
        _op("binary", [1, 0], 2, kind="mul", reverse=False),
        _op("binary", [2], 3, kind="div", reverse=False, weights={"other": "c"}),
        _op("slice", [3], 4, axis=1, start=1, stop=4, step=2),
        _op("concat", [4, 0, 3], 5, axis=1),
        _op("transpose", [5], 6, perm=[0, 2, 3, 1]),
        _op("reshape", [6], 7, shape=[30, 10]),
        _op("softmax", [7], 8, axis=1, log=False),
        _op("softmax", [7], 9, axis=2, log=True),
        _op("binary", [8, 9], 10, kind="add", reverse=False),
    ]
    _run_everywhere(_plan(ops, tensors), opset)


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("mode, size, align, scale", [
    ("nearest", [12, 15], False, [2.0, 3.0]),
    ("nearest", [4, 3], False, None),
    ("nearest_exact", [9, 7], False, None),
    ("nearest_exact", [3, 2], False, [0.5, 0.5]),
    ("bilinear", [11, 8], False, None),
    ("bilinear", [9, 7], False, [1.5, 1.5]),
    ("bilinear", [11, 8], True, None),
    ("bilinear", [9, 7], True, [1.5, 1.5]),
    ("bicubic", [12, 10], False, [2.0, 2.0]),
    ("bicubic", [5, 9], True, None),
])
def test_resize(opset, mode, size, align, scale):
    ops = [_op("resize", [0], 1, mode=mode, size=size, align_corners=align, scale=scale)]
    _run_everywhere(_plan(ops), opset)


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("weights", [True, False])
def test_norms(opset, weights):
    tensors, gn, ln = {}, {}, {}
    if weights:
        tensors = {"gw": _array(4) + 1, "gb": _array(4), "lw": _array(6, 5) + 1,
                   "lb": _array(6, 5)}
        gn, ln = {"weight": "gw", "bias": "gb"}, {"weight": "lw", "bias": "lb"}
    ops = [_op("group_norm", [0], 1, groups=2, eps=1e-3, **({"weights": gn} if gn else {})),
           _op("layer_norm", [1], 2, normalized_ndim=2, eps=1e-5,
               **({"weights": ln} if ln else {})),
           _op("reshape", [2], 3, shape=[4, 30]),
           _op("group_norm", [3], 4, groups=4, eps=1e-5)]
    model = _run_everywhere(_plan(ops, tensors), opset, rel=2e-5)
    kinds = [node.op_type for node in model.graph.node]
    assert ("LayerNormalization" in kinds) == (opset >= 17)
    assert ("GroupNormalization" in kinds) == (opset >= 21)


def test_several_outputs_a_value_twice_and_the_input():
    ops = [_op("activation", [0], 1, kind="relu", negative_slope=0.0),
           _op("softmax", [1], 2, axis=1, log=False),
           _op("activation", [0], 3, kind="identity", negative_slope=0.0)]
    plan = _plan(ops, outputs=[2, 1, 2, 3])
    model = _run_everywhere(plan, 17)
    assert [value.name for value in model.graph.output] == [
        "output_0", "output_1", "output_2", "output_3"]


def test_a_scale_float32_cannot_hold_is_refused(tmp_path):
    ops = [_op("resize", [0], 1, mode="nearest", size=[6, 5], align_corners=False,
               scale=[1.0 + 2 ** -40, 1.0])]
    with pytest.raises(ValueError, match=r"op 0 \(resize\).*not a float32"):
        deploy.export_onnx(_plan(ops), None, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


# ------------------------------------------------------------------ whole models

@pytest.fixture(scope="module")
def zoo(cifar_zoo):
    return cifar_zoo("fastdl")


def _with_statistics(model, rng):
    model.train()
    for _ in range(2):
        model(fastdl.Tensor(rng.normal(size=(4, 3, 32, 32)).astype(np.float32)))
    return model.eval()


def test_mobilenet_v2(zoo, tmp_path, rng):
    fastdl.manual_seed(0)
    model = _with_statistics(zoo.MobileNetV2(), rng)
    example = np.zeros((1, 3, 32, 32), np.float32)
    plan = deploy.compile(model, example)
    deploy.export_onnx(plan, example, tmp_path / "m.onnx")
    model_proto = _run_everywhere(plan, 17)
    kinds = [node.op_type for node in model_proto.graph.node]
    assert "BatchNormalization" not in kinds and kinds.count("Conv") == sum(
        op["op"] == "conv2d" for op in plan.ops)
    x = rng.normal(size=(2, 3, 32, 32)).astype(np.float32)
    with fastdl.no_grad():
        _assert_close(plan(x), model(fastdl.Tensor(x)).array, 1e-4)


def test_unet_style_fcn_of_graph_ops(tmp_path, rng):
    """A plan of the ops an FCN lowers to (convs, pools, resizes, concatenated skips,
    a softmax) and two outputs, exported at the default opset."""
    fastdl.manual_seed(0)
    from fastdl import nn
    import fastdl.nn.functional as F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8),
                                      nn.ReLU())
            self.bottom = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
            self.up = nn.Conv2d(24, 8, 3, padding=1)
            self.head = nn.Conv2d(8, 3, 1)

        def forward(self, x):
            skip = self.down(x)
            bottom = self.bottom(F.max_pool2d(skip, 2, ceil_mode=True))
            up = F.interpolate(bottom, size=skip.shape[2:], mode="bilinear",
                               align_corners=False)
            out = self.head(F.relu(self.up(fastdl.cat([up, skip], 1))))
            return F.softmax(out, 1), F.interpolate(bottom, scale_factor=2.0)

    model = Net()
    model.train()
    model(fastdl.Tensor(rng.normal(size=(4, 3, 13, 10)).astype(np.float32)))
    model.eval()
    plan = deploy.compile(model, np.zeros((1, 3, 13, 10), np.float32))
    kinds = [op["op"] for op in plan.ops]
    assert {"concat", "resize", "softmax"} <= set(kinds) and len(plan.outputs) == 2
    _run_everywhere(plan, 17)
