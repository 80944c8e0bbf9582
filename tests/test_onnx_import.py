"""deploy.from_onnx: ONNX models as inference plans, equal to ONNX Runtime; hostile
files refused."""
import io
import os
import warnings

import numpy as np
import pytest

import fastdl
from fastdl import deploy, nn
from fastdl.models import lenet5, resnet20

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import model_fuzz  # noqa: E402

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from fastdl.deploy.onnx_export import to_onnx  # noqa: E402


def _trained_stats(model, shape, rng):
    model.train()
    for _ in range(2):
        model(fastdl.Tensor(rng.normal(size=shape).astype(np.float32)))
    return model.eval()


def _close(got, want, rel):
    assert got.shape == want.shape
    scale = max(float(np.max(np.abs(want), initial=0.0)), 1.0)
    error = float(np.max(np.abs(got.astype(np.float64) - want), initial=0.0)) / scale
    assert error <= rel, "differs by %.3g of the output scale %.3g" % (error, scale)


def _pair(value):
    return list(value) if isinstance(value, (list, tuple)) and len(value) == 2 else [value] * 2


def _normal(plan):
    """The plan's ops with pool windows as pairs, slopes in float32 (ONNX's alpha) and
    ceil_mode only where it changes the output size; and its weights in op order."""
    ops, weights = [], []
    for index, op in enumerate(plan.ops):
        op = dict(op)
        weights.append({role: plan.tensors[name] for role, name in op.pop("weights",
                                                                         {}).items()})
        if op["op"] in ("max_pool2d", "avg_pool2d"):
            op["kernel_size"], op["padding"] = _pair(op["kernel_size"]), _pair(op["padding"])
            op["stride"] = op["kernel_size"] if op["stride"] in (None, []) else _pair(
                op["stride"])
        if op.get("negative_slope") is not None:
            op["negative_slope"] = float(np.float32(op["negative_slope"]))
        ops.append(op)
    return ops, weights


@pytest.mark.parametrize("factory, shape", [(lenet5, (1, 28, 28)),
                                            (lambda: resnet20(width=8), (3, 16, 16)),
                                            (lambda: nn.Sequential(
                                                nn.Conv2d(3, 4, 3, groups=1, dilation=2),
                                                nn.LeakyReLU(0.3), nn.BatchNorm2d(4),
                                                nn.Sigmoid(), nn.AvgPool2d(2),
                                                nn.ConvTranspose2d(4, 2, 3, 2, 1, 1),
                                                nn.Tanh(), nn.Flatten(),
                                                nn.Linear(2 * 4 * 4, 3)), (3, 9, 8))])
def test_round_trip_gives_the_same_plan(factory, shape, tmp_path, rng):
    fastdl.manual_seed(0)
    model = _trained_stats(factory(), (4,) + shape, rng)
    example = np.zeros((1,) + shape, np.float32)
    plan = deploy.compile(model, example)
    deploy.export_onnx(plan, example, tmp_path / "m.onnx")
    back = deploy.from_onnx(tmp_path / "m.onnx")
    (ops, weights), (back_ops, back_weights) = _normal(plan), _normal(back)
    assert back_ops == ops
    for mine, theirs in zip(weights, back_weights):
        assert mine.keys() == theirs.keys()
        for role in mine:
            np.testing.assert_array_equal(mine[role], theirs[role])
    x = rng.normal(size=(5,) + shape).astype(np.float32)
    np.testing.assert_array_equal(back(x), plan(x))


def test_round_trip_of_random_models():
    """The fuzzer's models: a plan read back computes what the plan does (standalone
    ReLUs may fuse into the conv before them; adaptive pools of uneven bins, exported
    as MatMuls, come back as 1x1 convolutions between transposes)."""
    read = 0
    for seed in range(40):
        case = model_fuzz.random_case(seed, extended=False)   # the ONNX ops both sides know
        case.model.float()
        example = np.zeros((1,) + case.shape, np.float32)
        try:
            plan = deploy.compile(case.model, example)
        except ValueError:
            continue
        back = deploy.from_onnx(to_onnx(plan).SerializeToString())
        x = np.random.default_rng(seed).standard_normal((3,) + case.shape).astype(np.float32)
        _close(back(x), plan(x), 1e-5)
        read += 1
    assert read >= 25


# ------------------------------------------------------------------ from torch

def _torch_model():
    torch = pytest.importorskip("torch")
    tn = torch.nn

    class Block(tn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = tn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = tn.BatchNorm2d(cout)
            self.conv2 = tn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = tn.BatchNorm2d(cout)
            self.shortcut = None if stride == 1 and cin == cout else tn.Sequential(
                tn.Conv2d(cin, cout, 1, stride, bias=False), tn.BatchNorm2d(cout))

        def forward(self, x):
            h = torch.relu(self.bn1(self.conv1(x)))
            h = self.bn2(self.conv2(h))
            return torch.relu(h + (x if self.shortcut is None else self.shortcut(x)))

    class Net(tn.Module):
        def __init__(self):
            super().__init__()
            self.stem = tn.Sequential(tn.Conv2d(3, 8, 3, padding=1), tn.BatchNorm2d(8),
                                      tn.ReLU6(), tn.MaxPool2d(3, 2, 1))
            self.stage1 = Block(8, 8, 1)
            self.stage2 = Block(8, 16, 2)
            self.depthwise = tn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=16)
            self.head = tn.Sequential(tn.Dropout(0.2), tn.Linear(16, 12), tn.LeakyReLU(0.1),
                                      tn.Linear(12, 10))

        def forward(self, x):
            x = self.stage2(self.stage1(self.stem(x)))
            x = torch.relu(self.depthwise(x))
            return self.head(torch.flatten(tn.functional.adaptive_avg_pool2d(x, 1), 1))

    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, tn.BatchNorm2d):
                module.running_mean.normal_(0, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
    return torch, model.eval()


@pytest.mark.parametrize("fold", [True, False])
def test_a_model_exported_by_torch_equals_onnx_runtime(fold, rng):
    torch, model = _torch_model()
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, torch.zeros(1, 3, 17, 16), buffer, dynamo=False,
                              opset_version=17, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
                              do_constant_folding=fold,
                              training=torch.onnx.TrainingMode.EVAL)
    except (ImportError, ModuleNotFoundError) as error:   # an exporter needing onnxscript
        pytest.skip("torch.onnx.export is unavailable here: %s" % error)
    data = buffer.getvalue()
    kinds = [node.op_type for node in onnx.load_from_string(data).graph.node]
    if "ReLU6" not in deploy.plan.ACTIVATIONS and "relu6" not in deploy.plan.ACTIVATIONS:
        with pytest.raises(ValueError, match=r"\(Clip\): the plan has no relu6 activation"):
            deploy.from_onnx(data)
        return
    plan = deploy.from_onnx(data)
    assert "BatchNormalization" in kinds or fold
    assert [op["op"] for op in plan.ops].count("conv2d") == 7
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        x = rng.normal(size=(batch, 3, 17, 16)).astype(np.float32)
        _close(plan(x), session.run(None, {"x": x})[0], 1e-4)


def test_a_torch_model_without_relu6(rng):
    """As above, with ReLU6 swapped for ReLU (the plan's activations)."""
    torch, model = _torch_model()
    model.stem[2] = torch.nn.ReLU()
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, torch.zeros(1, 3, 17, 16), buffer, dynamo=False,
                              opset_version=17, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
                              do_constant_folding=False,
                              training=torch.onnx.TrainingMode.EVAL)
    except (ImportError, ModuleNotFoundError) as error:
        pytest.skip("torch.onnx.export is unavailable here: %s" % error)
    data = buffer.getvalue()
    plan = deploy.from_onnx(data)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        x = rng.normal(size=(batch, 3, 17, 16)).astype(np.float32)
        _close(plan(x), session.run(None, {"x": x})[0], 1e-4)


# ------------------------------------------------------------------ hostile files

def _model(nodes, initializers, input_shape=(1, 2, 5, 5), output="y", opset=17):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                   ["n"] + list(input_shape[1:]))],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _conv_model(**attributes):
    weight = numpy_helper.from_array(np.ones((3, 2, 3, 3), np.float32), "w")
    return _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv", **attributes)],
                  [weight])


def test_a_small_hand_made_model_reads():
    plan = deploy.from_onnx(_conv_model(pads=[1, 1, 1, 1]).SerializeToString())
    assert plan(np.ones((2, 2, 5, 5), np.float32))[0, 0, 2, 2] == 18


@pytest.mark.parametrize("make, match", [
    (lambda: _model([helper.make_node("Erf", ["x"], ["y"], name="erf")], []),
     r"node 'erf' \(Erf\): op Erf is not supported"),
    (lambda: _conv_model(auto_pad="SAME_SIDEWAYS"), r"node 'conv' \(Conv\): auto_pad"),
    (lambda: _conv_model(pads=[1, 1, 0]), r"node 'conv' \(Conv\): pads \[1, 1, 0\] must"),
    (lambda: _conv_model(foo=1), r"node 'conv' \(Conv\): attribute 'foo' is not supported"),
    (lambda: _model([helper.make_node("Mul", ["x", "s"], ["y"], name="mul")],
                    [numpy_helper.from_array(np.ones((2, 1, 1, 5), np.float32), "s")]),
     r"node 'mul' \(Mul\): a constant of shape \(2, 1, 1, 5\) spans the batch axis"),
    (lambda: _model([helper.make_node("Relu", ["x"], ["y"], name="r", domain="com.x")], []),
     r"domain 'com.x'"),
])
def test_unsupported_ops_and_attributes_are_refused_by_node(make, match):
    with pytest.raises(ValueError, match=match):
        deploy.from_onnx(make().SerializeToString())


def _huge_tensor(dims, raw):
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=dims)
    tensor.raw_data = raw
    return tensor


@pytest.mark.parametrize("tensor, match", [
    (_huge_tensor([1 << 40, 1 << 40], b"\0" * 16), r"declares shape"),
    (_huge_tensor([1 << 14, 1 << 14, 3, 3], b"\0" * 16), r"past max_bytes"),
    (_huge_tensor([3, 2, 3, 3], b"\0" * 16), r"declares shape \[3, 2, 3, 3\] \(216 bytes\) "
                                             r"but holds 16 bytes"),
])
def test_huge_or_short_tensors_are_refused_before_allocation(tensor, match):
    model = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], [tensor])
    with pytest.raises(ValueError, match=match):
        deploy.from_onnx(model.SerializeToString())


def test_a_huge_declared_input_is_refused():
    weight = numpy_helper.from_array(np.ones((3, 2, 1, 1), np.float32), "w")
    model = _model([helper.make_node("Conv", ["x", "w"], ["y"])], [weight],
                   input_shape=(1, 2, 1 << 24, 1 << 24))
    with pytest.raises(ValueError, match="more than 2147483647 elements a sample"):
        deploy.from_onnx(model.SerializeToString())
    model = _model([helper.make_node("Conv", ["x", "w"], ["y"])], [weight],
                   input_shape=(1, 2, 1 << 30, 5))
    with pytest.raises(ValueError, match="fixed C, H and W"):
        deploy.from_onnx(model.SerializeToString())


def test_too_many_nodes_or_bytes_are_refused(tmp_path):
    nodes = [helper.make_node("Identity", ["x" if i == 0 else "v%d" % i],
                              ["v%d" % (i + 1)]) for i in range(deploy.MAX_OPS + 1)]
    with pytest.raises(ValueError, match="MAX_OPS"):
        deploy.from_onnx(_model(nodes, [], output="v%d" % len(nodes)).SerializeToString())
    path = tmp_path / "m.onnx"
    path.write_bytes(_conv_model().SerializeToString())
    with pytest.raises(ValueError, match="more than max_bytes=100"):
        deploy.from_onnx(path, max_bytes=100)
    with pytest.raises(ValueError, match="not an ONNX model"):
        deploy.from_onnx(b"\xff" * 64)


def _external(location, length=216):
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[3, 2, 3, 3],
                         data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], [tensor])


def test_external_data_stays_in_the_model_directory(tmp_path):
    inside = tmp_path / "model"
    inside.mkdir()
    (inside / "w.bin").write_bytes(np.ones(54, np.float32).tobytes())
    (tmp_path / "secret.bin").write_bytes(np.ones(54, np.float32).tobytes())
    os.symlink(tmp_path / "secret.bin", inside / "link.bin")
    path = inside / "m.onnx"
    path.write_bytes(_external("w.bin").SerializeToString())
    assert deploy.from_onnx(path)(np.ones((1, 2, 5, 5), np.float32))[0, 0, 0, 0] == 18
    for location in ("../secret.bin", str(tmp_path / "secret.bin"), "link.bin"):
        path.write_bytes(_external(location).SerializeToString())
        with pytest.raises(ValueError, match="not a file in the model's directory"):
            deploy.from_onnx(path)
    path.write_bytes(_external("w.bin", length=1 << 30).SerializeToString())
    with pytest.raises(ValueError, match="external data of"):
        deploy.from_onnx(path)
    with pytest.raises(ValueError, match="give a path, not bytes"):
        deploy.from_onnx(_external("w.bin").SerializeToString())
