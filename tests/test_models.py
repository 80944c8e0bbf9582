"""LeNet-5 and ResNet-8 against the NumPy reference networks (float64, rtol 1e-8)."""
import numpy as np
import pytest

import fastdl
from fastdl import functional as F
from fastdl.models import lenet5, resnet8, resnet20
import reference_nets


def _run_fastdl(model, x, target):
    model.double().train()
    model.zero_grad()
    logits = model(fastdl.Tensor(x))
    loss = F.cross_entropy(logits, target)
    loss.backward()
    return logits.array, loss.item(), {n: p.grad for n, p in model.named_parameters()}


def _params(model):
    return {name: value.numpy().copy() for name, value in model.state_dict().items()}


def test_lenet5_matches_numpy_reference(rng):
    fastdl.manual_seed(1)
    model = lenet5()
    x = rng.normal(size=(3, 1, 28, 28))
    target = np.array([1, 7, 3])
    logits, loss, grads = _run_fastdl(model, x, target)
    ref_logits, ref_loss, ref_grads = reference_nets.lenet5(_params(model), x, target)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-8, atol=1e-12)
    assert np.isclose(loss, ref_loss, rtol=1e-8)
    assert set(grads) == set(ref_grads)
    for name in grads:
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=1e-8, atol=1e-12,
                                   err_msg=name)


def test_resnet8_matches_numpy_reference_including_running_stats(rng):
    fastdl.manual_seed(2)
    model = resnet8(num_classes=5, width=4)
    x = rng.normal(size=(3, 3, 12, 12))
    target = np.array([0, 4, 2])
    params = _params(model)
    logits, loss, grads = _run_fastdl(model, x, target)
    ref_logits, ref_loss, ref_grads, stats = reference_nets.resnet8(params, x, target)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-8, atol=1e-12)
    assert np.isclose(loss, ref_loss, rtol=1e-8)
    assert set(grads) == set(ref_grads)
    for name in grads:
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=1e-8, atol=1e-10,
                                   err_msg=name)
    buffers = dict(model.named_buffers())
    for bn, (mean, var, count) in stats.items():
        np.testing.assert_allclose(buffers[bn + ".running_mean"], 0.1 * mean, rtol=1e-10)
        np.testing.assert_allclose(buffers[bn + ".running_var"],
                                   0.9 + 0.1 * var * count / (count - 1), rtol=1e-10)
        assert buffers[bn + ".num_batches_tracked"] == 1


@pytest.mark.parametrize("factory, shape", [(lambda: lenet5(input_size=8), (2, 1, 8, 8)),
                                            (lambda: lenet5(3, 3, 32), (2, 3, 32, 32)),
                                            (resnet20, (2, 3, 16, 16))])
def test_model_output_shapes_and_eval_determinism(factory, shape, rng):
    model = factory()
    x = fastdl.Tensor(rng.normal(size=shape).astype(np.float32))
    model.eval()
    with fastdl.no_grad():
        first, second = model(x).array, model(x).array
    assert first.shape == (2, model(x).shape[1]) and first.dtype == np.float32
    np.testing.assert_array_equal(first, second)


def test_models_match_torch_when_available(rng):
    torch = pytest.importorskip("torch")
    fastdl.manual_seed(0)
    model = lenet5().double()
    reference = torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(6, 16, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(400, 120), torch.nn.ReLU(), torch.nn.Linear(120, 84), torch.nn.ReLU(),
        torch.nn.Linear(84, 10)).double()
    reference.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in model.state_dict().items()})
    x = rng.normal(size=(4, 1, 28, 28))
    with fastdl.no_grad():
        ours = model(fastdl.Tensor(x)).array
    np.testing.assert_allclose(ours, reference(torch.tensor(x)).detach().numpy(), rtol=1e-10,
                               atol=1e-12)


def test_receptive_field_of_lenet():
    from fastdl.models import receptive_field
    # conv5 (+4), pool2 (+1), conv5 (+4*2), pool2 (+1*2): 1 + 4 + 1 + 8 + 2 = 16
    assert receptive_field(lenet5(), 28)[-1] == 16
