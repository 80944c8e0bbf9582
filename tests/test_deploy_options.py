"""torch's layer options under ``deploy.compile``: each is compiled to a plan equal to the
eager model, or refused with a ValueError naming the module's path, its class and the
option — never another exception, never a silently different plan."""
import numpy as np
import pytest

import fastdl
from fastdl import deploy, nn


def _eager(model, x):
    with fastdl.no_grad():
        return model(fastdl.Tensor(x)).numpy()


def _randomised(model, seed=0):
    rng = np.random.default_rng(seed)
    for module in model.modules():
        for name, parameter in module._parameters.items():
            if parameter is not None:
                parameter.array[...] = rng.normal(0, 0.5, parameter.array.shape)
    return model.eval()


def _same_as_eager(model, shape=(3, 9, 8), dtype=np.float32, tolerance=None):
    model = _randomised(model)
    if dtype == np.float64:
        model.double()
    rng = np.random.default_rng(1)
    plan = deploy.compile(model, np.zeros((1,) + shape, dtype))
    for batch in (1, 3):
        x = (2 * rng.standard_normal((batch,) + shape)).astype(dtype)
        got = plan(x)
        want = _eager(model, x.copy())   # an in-place activation writes into its input
        assert got.shape == want.shape and got.dtype == want.dtype
        scale = max(1.0, float(np.max(np.abs(want))))   # as the plan fuzzer compares
        np.testing.assert_allclose(got, want, rtol=0, atol=scale * (tolerance or (
            1e-5 if dtype == np.float32 else 1e-12)))
    return plan


COMPILED = {
    "same_odd": lambda: nn.Conv2d(3, 4, 3, padding="same"),
    "same_even": lambda: nn.Conv2d(3, 4, 4, padding="same"),
    "same_even_dilated": lambda: nn.Conv2d(3, 4, (2, 3), padding="same", dilation=(3, 2)),
    "valid": lambda: nn.Conv2d(3, 4, 3, padding="valid"),
    "reflect": lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"),
    "replicate": lambda: nn.Conv2d(3, 4, 3, stride=2, padding=(2, 1),
                                   padding_mode="replicate"),
    "circular": lambda: nn.Conv2d(3, 6, 3, padding=2, groups=3, padding_mode="circular"),
    "reflect_same_even": lambda: nn.Conv2d(3, 4, 2, padding="same", padding_mode="reflect"),
    "zeros_same_then_bn_relu": lambda: nn.Sequential(
        nn.Conv2d(3, 4, 4, padding="same"), nn.BatchNorm2d(4), nn.ReLU()),
    "relu6": lambda: nn.ReLU6(),
    "hardtanh": lambda: nn.Hardtanh(-0.5, 1.5),
    "hardsigmoid": lambda: nn.Hardsigmoid(),
    "hardswish": lambda: nn.Hardswish(inplace=True),
    "silu": lambda: nn.SiLU(),
    "mish": lambda: nn.Mish(),
    "gelu": lambda: nn.GELU(),
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "elu": lambda: nn.ELU(0.7),
    "selu": lambda: nn.SELU(),
    "softplus": lambda: nn.Softplus(beta=2.0, threshold=3.0),
    "prelu_shared": lambda: nn.PReLU(),
    "prelu_per_channel": lambda: nn.PReLU(3),
    "prelu_after_flatten": lambda: nn.Sequential(nn.Flatten(), nn.Linear(216, 5),
                                                 nn.PReLU(5)),
    "dropouts": lambda: nn.Sequential(nn.Dropout(0.3), nn.Dropout2d(0.9), nn.Flatten(),
                                      nn.Dropout1d()),
    "identity_with_arguments": lambda: nn.Identity(3, unused="x"),
    "adaptive_avg_none_1": lambda: nn.AdaptiveAvgPool2d((None, 1)),
    "adaptive_avg_3_none": lambda: nn.AdaptiveAvgPool2d((3, None)),
    "adaptive_avg_none": lambda: nn.AdaptiveAvgPool2d((None, None)),
    "adaptive_avg_1": lambda: nn.AdaptiveAvgPool2d(1),
    "adaptive_max_1": lambda: nn.AdaptiveMaxPool2d(1),
    "adaptive_max_3_4": lambda: nn.AdaptiveMaxPool2d((3, 4)),
    "adaptive_max_none_2": lambda: nn.AdaptiveMaxPool2d((None, 2)),
    "flatten_negative": lambda: nn.Flatten(-3),
    "flatten_2": lambda: nn.Flatten(2),
    "flatten_same_dim": lambda: nn.Flatten(2, 2),
    "flatten_dims_to_last": lambda: nn.Flatten(1, 3),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(COMPILED))
def test_options_a_plan_runs_give_the_eager_result(name, dtype):
    _same_as_eager(COMPILED[name](), dtype=dtype)


def test_asymmetric_and_non_zero_padding_is_a_pad_op_before_the_conv(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 4, padding="same"), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"),
                          nn.Conv2d(4, 2, 3, padding="same"))
    plan = _same_as_eager(model)
    assert [op["op"] for op in plan.ops] == ["pad2d", "conv2d", "pad2d", "conv2d", "conv2d"]
    assert plan.ops[0]["padding"] == [1, 2, 1, 2] and plan.ops[0]["mode"] == "constant"
    assert plan.ops[1]["padding"] == [0, 0] and plan.ops[1]["negative_slope"] == 0.0
    assert plan.ops[2]["mode"] == "reflect" and plan.ops[4]["padding"] == [1, 1]
    path = tmp_path / "padded.plan"
    plan.save(path)
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 8)).astype(np.float32)
    np.testing.assert_array_equal(deploy.load(path, warmup=True)(x), plan(x))


def test_activation_plans_round_trip_through_a_file(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Hardtanh(-2, 0.5), nn.ELU(0.3),
                          nn.Softplus(0.5, 10), nn.PReLU(4), nn.GELU("tanh"), nn.SELU(),
                          nn.AdaptiveMaxPool2d((None, 3)))
    plan = _same_as_eager(model)
    path = tmp_path / "activations.plan"
    plan.save(path)
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 8)).astype(np.float32)
    np.testing.assert_array_equal(deploy.load(path, warmup=True)(x), plan(x))


def _refused(model, *patterns, shape=(3, 8, 8)):
    """Compile raises a ValueError whose message matches every pattern."""
    with pytest.raises(ValueError) as raised:
        deploy.compile(model, np.zeros((1,) + shape, np.float32))
    message = str(raised.value)
    assert message.startswith("deploy.compile"), message
    for pattern in patterns:
        assert pattern in message, (pattern, message)
    return message


REFUSED = {
    "max_pool_dilation": (lambda: nn.MaxPool2d(3, dilation=2), "MaxPool2d", "dilation=2"),
    "max_pool_dilation_pair": (lambda: nn.MaxPool2d(2, dilation=(1, 2)), "MaxPool2d",
                               "dilation=(1, 2)"),
    "max_pool_indices": (lambda: nn.MaxPool2d(2, return_indices=True), "MaxPool2d",
                         "return_indices=True"),
    "avg_pool_divisor": (lambda: nn.AvgPool2d(2, divisor_override=3), "AvgPool2d",
                         "divisor_override=3"),
    "adaptive_max_indices": (lambda: nn.AdaptiveMaxPool2d(1, return_indices=True),
                             "AdaptiveMaxPool2d", "return_indices=True"),
    "adaptive_max_uneven": (lambda: nn.AdaptiveMaxPool2d(3), "AdaptiveMaxPool2d",
                            "output_size=3"),
    "adaptive_avg_zero": (lambda: nn.AdaptiveAvgPool2d((0, 1)), "AdaptiveAvgPool2d",
                          "output_size=(0, 1)"),
    "flatten_not_to_last": (lambda: nn.Flatten(1, 2), "Flatten",
                            "Flatten(start_dim=1, end_dim=2)"),
    "flatten_batch": (lambda: nn.Flatten(0), "Flatten", "start_dim=0"),
    "flatten_out_of_range": (lambda: nn.Flatten(1, 7), "Flatten", "end_dim=7"),
    "celu": (lambda: nn.CELU(0.5), "CELU", "_function"),
    "dropout1d_on_images": (lambda: nn.Dropout1d(), "Dropout1d", "on a 4-D input"),
    "softplus_infinite": (lambda: nn.Softplus(threshold=float("inf")), "Softplus", "inf"),
    "log_sigmoid": (lambda: nn.LogSigmoid(), "LogSigmoid", "no lowering"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_options_a_plan_cannot_run_are_refused_naming_path_class_and_option(name):
    make, cls, option = REFUSED[name]
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Sequential(nn.Identity(), make()))
    _refused(model, "'1.1'", cls, option)


def test_padding_a_plan_cannot_take_is_refused_as_the_model_fails():
    """Reflect padding as large as the input fails in the model and in compile."""
    conv = nn.Conv2d(3, 3, 5, padding=4, padding_mode="reflect")
    with pytest.raises(ValueError):
        _eager(conv.eval(), np.zeros((1, 3, 4, 4), np.float32))
    _refused(nn.Sequential(conv), "'0'", "Conv2d", "reflect padding of 4 on a size of 4",
             shape=(3, 4, 4))


@pytest.mark.parametrize("kind", ["forward", "pre", "forward_with_kwargs", "on_root"])
def test_a_forward_hook_anywhere_is_refused_until_removed(kind):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.BatchNorm2d(4), nn.ReLU()))
    target = model if kind == "on_root" else model[1][0]
    if kind == "pre":
        handle = target.register_forward_pre_hook(lambda module, args: None)
    elif kind == "forward_with_kwargs":
        handle = target.register_forward_hook(lambda module, args, kwargs, out: out * 2,
                                              with_kwargs=True)
    else:
        handle = target.register_forward_hook(lambda module, args, out: out * 2)
    assert target.has_forward_hooks()
    _refused(model, "model" if kind == "on_root" else "'1.0'",
             "Sequential" if kind == "on_root" else "BatchNorm2d", "hook")
    handle.remove()
    assert not target.has_forward_hooks()
    _same_as_eager(model)


def test_a_refused_model_keeps_its_training_mode():
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.MaxPool2d(2, dilation=2)).train()
    _refused(model, "dilation=2")
    assert model.training and model[0].training


def _onnx_runtime():
    pytest.importorskip("onnx")
    return pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("opset", [17, 20])
def test_the_new_ops_export_to_onnx_as_the_plan_computes(tmp_path, opset):
    ort = _onnx_runtime()
    layers = [nn.Conv2d(3, 4, 4, padding="same"), nn.ReLU6(), nn.Hardtanh(-0.5, 2.0),
              nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), nn.ELU(0.5), nn.SELU(),
              nn.Conv2d(4, 4, 3, padding=(1, 2), padding_mode="replicate"), nn.PReLU(4),
              nn.Softplus(2.0), nn.Hardswish(), nn.Hardsigmoid(), nn.SiLU(), nn.Mish(),
              nn.GELU(), nn.AdaptiveMaxPool2d((None, 2)), nn.Flatten(), nn.PReLU()]
    if opset >= 20:
        layers[1:1] = [nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular"),
                       nn.GELU(approximate="tanh")]
    model = _randomised(nn.Sequential(*layers))
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 8)).astype(np.float32)
    path = tmp_path / "model.onnx"
    deploy.export_onnx(model, x, path, opset=opset)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = _eager(model, x)
    np.testing.assert_allclose(session.run(None, {"input": x})[0], want, rtol=1e-4,
                               atol=1e-4 * max(1.0, float(np.max(np.abs(want)))))


@pytest.mark.parametrize("layer, match", [
    (lambda: nn.Conv2d(3, 3, 3, padding=1, padding_mode="circular"), "opset 19"),
    (lambda: nn.GELU(approximate="tanh"), "opset 20"),
    (lambda: nn.Softplus(threshold=5.0), "threshold 5"),
])
def test_ops_without_an_onnx_form_at_the_opset_are_refused_by_the_export(tmp_path, layer,
                                                                          match):
    pytest.importorskip("onnx")
    with pytest.raises(ValueError, match=match):
        deploy.export_onnx(nn.Sequential(layer()).eval(), np.zeros((1, 3, 8, 8), np.float32),
                           tmp_path / "model.onnx", opset=17)
