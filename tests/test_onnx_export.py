"""deploy.export_onnx: plans written as ONNX run in ONNX Runtime equal to the plan."""
import os

import numpy as np
import pytest

import fastdl
from fastdl import deploy, nn
from fastdl.models import fcn, lenet5, resnet20

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import model_fuzz  # noqa: E402  (after the skips: it builds fastdl models only)

BATCHES = (1, 7)


def _trained_stats(model, shape, rng):
    """Move BN running statistics away from their initial values."""
    model.train()
    for _ in range(2):
        model(fastdl.Tensor(rng.normal(size=shape).astype(np.float32)))
    return model.eval()


def _eager(model, x):
    with fastdl.no_grad():
        return model.eval()(fastdl.Tensor(x)).array


def _session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


def _assert_close(got, want, rel):
    assert got.shape == want.shape and got.dtype == want.dtype
    scale = max(float(np.max(np.abs(want), initial=0.0)), 1.0)
    error = float(np.max(np.abs(got.astype(np.float64) - want), initial=0.0)) / scale
    assert error <= rel, "differs by %.3g of the output scale %.3g" % (error, scale)


def _export_and_compare(model, shape, tmp_path, rng, rel=1e-5, dtype=np.float32):
    example = np.zeros((1,) + shape, dtype)
    plan = deploy.compile(model, example)
    path = tmp_path / "model.onnx"
    proto = deploy.export_onnx(model, example, path)
    onnx.checker.check_model(onnx.load(os.fspath(path)), full_check=True)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = _session(path)
    for batch in BATCHES:
        x = rng.normal(size=(batch,) + shape).astype(dtype)
        got = session.run(None, {"input": x})[0]
        _assert_close(got, plan(x), rel)
        _assert_close(got, _eager(model, x), rel)
    return proto


def test_lenet5(tmp_path, rng):
    fastdl.manual_seed(0)
    proto = _export_and_compare(lenet5().eval(), (1, 28, 28), tmp_path, rng)
    kinds = [node.op_type for node in proto.graph.node]
    assert kinds.count("Conv") == 2 and kinds.count("Gemm") == 3 and "MaxPool" in kinds
    # weights are initializers, not Constant nodes
    assert len(proto.graph.initializer) == 10 and "Constant" not in kinds


def test_resnet20(tmp_path, rng):
    fastdl.manual_seed(0)
    model = _trained_stats(resnet20(width=8), (8, 3, 16, 16), rng)
    proto = _export_and_compare(model, (3, 16, 16), tmp_path, rng)
    kinds = [node.op_type for node in proto.graph.node]
    # BN folded; one residual Add per block
    assert "BatchNormalization" not in kinds and kinds.count("Add") == 9
    assert "GlobalAveragePool" in kinds


def test_fcn_encoder_with_ceil_mode_pools(tmp_path, rng):
    """The FCN's conv-BN-ReLU stages and ceil-mode 2x2 max pools on odd sizes."""
    fastdl.manual_seed(0)
    net = fcn(in_channels=2, num_classes=3, width=4, depth=2)
    model = _trained_stats(nn.Sequential(net.stem, *net.stages, net.classifiers[-1]),
                           (4, 2, 13, 11), rng)
    _export_and_compare(model, (2, 13, 11), tmp_path, rng)


def test_fcn(tmp_path, rng):
    """The whole FCN: its decoder's resizes and concatenated skips as graph ops."""
    fastdl.manual_seed(0)
    model = _trained_stats(fcn(in_channels=2, num_classes=3, width=4, depth=2),
                           (4, 2, 16, 16), rng)
    proto = _export_and_compare(model, (2, 16, 16), tmp_path, rng)
    kinds = {node.op_type for node in proto.graph.node}
    assert "Resize" in kinds and "BatchNormalization" not in kinds


@pytest.mark.parametrize("factory", [
    lambda: nn.Sequential(nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1),
                          nn.BatchNorm2d(4), nn.Sigmoid(), nn.Conv2d(4, 4, 3, groups=2,
                                                                     dilation=2)),
    lambda: nn.Sequential(nn.Conv2d(3, 6, 1), nn.AdaptiveAvgPool2d((3, 2)), nn.Tanh(),
                          nn.BatchNorm2d(6), nn.Flatten(), nn.Linear(36, 5),
                          nn.BatchNorm1d(5), nn.LeakyReLU(0.2), nn.Linear(5, 2)),
    lambda: nn.Sequential(nn.AvgPool2d(3, 2, 1, ceil_mode=True), nn.AdaptiveAvgPool2d(2),
                          nn.Flatten(2)),
])
def test_layers(factory, tmp_path, rng):
    fastdl.manual_seed(0)
    model = _trained_stats(factory(), (4, 3, 9, 10), rng)
    _export_and_compare(model, (3, 9, 10), tmp_path, rng)


FUZZ_SEEDS = range(int(os.environ.get("FASTDL_ONNX_FUZZ_SEEDS", "50")))


def test_random_models(tmp_path):
    """The plan fuzzer's models: what compiles exports, and runs equal to the plan."""
    checked = 0
    for seed in FUZZ_SEEDS:
        case = model_fuzz.random_case(seed, extended=False)   # the ONNX ops both sides know
        if case.dtype != np.float32:   # ONNX Runtime's CPU kernels are float32 ones
            case.model.float()
        example = np.zeros((1,) + case.shape, np.float32)
        try:
            plan = deploy.compile(case.model, example)
        except ValueError:
            continue
        path = tmp_path / ("%d.onnx" % seed)
        deploy.export_onnx(plan, example, path)
        session = _session(path)
        rng = np.random.default_rng([seed, 2])
        for batch in BATCHES:
            x = rng.standard_normal((batch,) + case.shape).astype(np.float32)
            try:
                _assert_close(session.run(None, {"input": x})[0], plan(x), 1e-5)
            except AssertionError as error:
                raise AssertionError("seed %d at batch %d: %s\n%s" % (
                    seed, batch, error, case.describe())) from None
        checked += 1
    assert checked >= 0.8 * len(FUZZ_SEEDS)


def test_the_file_is_the_model_returned(tmp_path, rng):
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU()).eval()
    example = np.zeros((1, 2, 5, 5), np.float32)
    proto = deploy.export_onnx(deploy.compile(model, example), None, tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").read_bytes() == proto.SerializeToString()
    assert [name for name in os.listdir(tmp_path)] == ["m.onnx"]   # no temp file left


def test_an_opset_out_of_range_is_refused(tmp_path):
    model = nn.Sequential(nn.Conv2d(2, 3, 3)).eval()
    example = np.zeros((1, 2, 5, 5), np.float32)
    for opset in (7, 10, 10_000, "17", True):
        with pytest.raises(ValueError, match="opset must be an int"):
            deploy.export_onnx(model, example, tmp_path / "m.onnx", opset=opset)
    assert not (tmp_path / "m.onnx").exists()
    deploy.export_onnx(model, example, tmp_path / "m.onnx", opset=11)


def test_an_example_of_another_shape_is_refused(tmp_path):
    plan = deploy.compile(nn.Sequential(nn.Conv2d(2, 3, 3)), np.zeros((1, 2, 5, 5), np.float32))
    with pytest.raises(ValueError, match="example has shape"):
        deploy.export_onnx(plan, np.zeros((1, 2, 6, 5), np.float32), tmp_path / "m.onnx")


def _plan_with(op_changes):
    plan = deploy.compile(nn.Sequential(nn.Conv2d(2, 3, 3), nn.Sigmoid()),
                          np.zeros((1, 2, 5, 5), np.float32))
    plan.ops[-1].update(op_changes)   # as a plan with op kinds newer than the exporter
    return plan


def test_an_op_without_an_onnx_form_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match=r"op 1 \(activation 'softshrink'\).*no ONNX form"):
        deploy.export_onnx(_plan_with({"kind": "softshrink"}), None, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match=r"op 1 \(grid_sample\).*no ONNX form"):
        deploy.export_onnx(_plan_with({"op": "grid_sample"}), None, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_an_op_newer_than_the_opset_is_refused(tmp_path):
    plan = _plan_with({"kind": "hardswish"})
    with pytest.raises(ValueError, match=r"activation 'hardswish'.*needs opset 14 or later, "
                                         r"the export asks for opset 13"):
        deploy.export_onnx(plan, None, tmp_path / "m.onnx", opset=13)
    proto = deploy.export_onnx(plan, None, tmp_path / "m.onnx", opset=14)
    assert "HardSwish" in [node.op_type for node in proto.graph.node]
