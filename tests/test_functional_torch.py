"""The functional ops a CNN program uses, against torch (float64, forward and backward),
against finite differences, in float32 and on non-contiguous inputs, and their errors."""
import warnings

import numpy as np
import pytest

import fastdl
from fastdl import functional as F
from fastdl.testing import gradcheck

# name -> (fastdl call, torch call (same arguments), input shapes, input scale)
# The torch call is looked up by name on torch.nn.functional unless given.
CASES = {
    "gelu": (F.gelu, None, [(2, 3, 4)], 3.0),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"),
                  lambda t, x: t.gelu(x, approximate="tanh"), [(2, 3, 4)], 3.0),
    "silu": (F.silu, None, [(2, 3, 4)], 3.0),
    "mish": (F.mish, None, [(2, 3, 4)], 3.0),
    "elu": (lambda x: F.elu(x, 0.7), lambda t, x: t.elu(x, 0.7), [(2, 3, 4)], 3.0),
    "selu": (F.selu, None, [(2, 3, 4)], 3.0),
    "celu": (lambda x: F.celu(x, 1.5), lambda t, x: t.celu(x, 1.5), [(2, 3, 4)], 3.0),
    "softplus": (lambda x: F.softplus(x, 2.0, 3.0), lambda t, x: t.softplus(x, 2.0, 3.0),
                 [(2, 3, 4)], 3.0),
    "logsigmoid": (F.logsigmoid, None, [(2, 3, 4)], 3.0),
    "hardtanh": (lambda x: F.hardtanh(x, -0.5, 2.0), lambda t, x: t.hardtanh(x, -0.5, 2.0),
                 [(2, 3, 4)], 3.0),
    "relu6": (F.relu6, None, [(2, 3, 4)], 5.0),
    "hardsigmoid": (F.hardsigmoid, None, [(2, 3, 4)], 5.0),
    "hardswish": (F.hardswish, None, [(2, 3, 4)], 5.0),
    "prelu": (F.prelu, None, [(2, 3, 4), (3,)], 2.0),
    "softmin": (lambda x: F.softmin(x, 1), lambda t, x: t.softmin(x, 1), [(2, 3, 4)], 1.0),
    "max_pool2d_dilated": (lambda x: F.max_pool2d(x, 3, 2, 1, dilation=2, ceil_mode=True),
                           lambda t, x: t.max_pool2d(x, 3, 2, 1, dilation=2, ceil_mode=True),
                           [(1, 2, 7, 6)], 1.0),
    "adaptive_max_pool2d": (lambda x: F.adaptive_max_pool2d(x, (3, None)),
                            lambda t, x: t.adaptive_max_pool2d(x, (3, None)),
                            [(1, 2, 7, 5)], 1.0),
    "adaptive_avg_pool2d": (lambda x: F.adaptive_avg_pool2d(x, (4, 3)),
                            lambda t, x: t.adaptive_avg_pool2d(x, (4, 3)), [(1, 2, 7, 5)],
                            1.0),
    "avg_pool2d_divisor": (lambda x: F.avg_pool2d(x, 3, 2, 1, divisor_override=4),
                           lambda t, x: t.avg_pool2d(x, 3, 2, 1, divisor_override=4),
                           [(1, 2, 6, 5)], 1.0),
    "max_pool1d": (lambda x: F.max_pool1d(x, 3, 2, 1), lambda t, x: t.max_pool1d(x, 3, 2, 1),
                   [(2, 3, 9)], 1.0),
    "avg_pool1d": (lambda x: F.avg_pool1d(x, 3, 2, 1), lambda t, x: t.avg_pool1d(x, 3, 2, 1),
                   [(2, 3, 9)], 1.0),
    "adaptive_avg_pool1d": (lambda x: F.adaptive_avg_pool1d(x, 4),
                            lambda t, x: t.adaptive_avg_pool1d(x, 4), [(2, 3, 9)], 1.0),
    "adaptive_max_pool1d": (lambda x: F.adaptive_max_pool1d(x, 4),
                            lambda t, x: t.adaptive_max_pool1d(x, 4), [(2, 3, 9)], 1.0),
    "nearest_size": (lambda x: F.interpolate(x, size=(5, 7)),
                     lambda t, x: t.interpolate(x, size=(5, 7)), [(1, 2, 3, 4)], 1.0),
    "nearest_fraction": (lambda x: F.interpolate(x, scale_factor=1.7),
                         lambda t, x: t.interpolate(x, scale_factor=1.7), [(1, 2, 3, 4)], 1.0),
    "nearest_exact": (lambda x: F.interpolate(x, scale_factor=(0.6, 2.5), mode="nearest-exact"),
                      lambda t, x: t.interpolate(x, scale_factor=(0.6, 2.5),
                                                 mode="nearest-exact"), [(1, 2, 5, 3)], 1.0),
    "bilinear_size": (lambda x: F.interpolate(x, size=(7, 3), mode="bilinear"),
                      lambda t, x: t.interpolate(x, size=(7, 3), mode="bilinear"),
                      [(1, 2, 3, 4)], 1.0),
    "bilinear_corners": (lambda x: F.interpolate(x, scale_factor=1.5, mode="bilinear",
                                                 align_corners=True),
                         lambda t, x: t.interpolate(x, scale_factor=1.5, mode="bilinear",
                                                    align_corners=True), [(1, 2, 3, 4)], 1.0),
    "bilinear_integer": (lambda x: F.interpolate(x, scale_factor=2, mode="bilinear"),
                         lambda t, x: t.interpolate(x, scale_factor=2, mode="bilinear"),
                         [(1, 2, 3, 4)], 1.0),
    "bicubic": (lambda x: F.interpolate(x, size=(6, 5), mode="bicubic"),
                lambda t, x: t.interpolate(x, size=(6, 5), mode="bicubic"), [(1, 2, 3, 4)],
                1.0),
    "bicubic_corners": (lambda x: F.interpolate(x, size=(2, 7), mode="bicubic",
                                                align_corners=True),
                        lambda t, x: t.interpolate(x, size=(2, 7), mode="bicubic",
                                                   align_corners=True), [(1, 2, 3, 4)], 1.0),
    "linear": (lambda x: F.interpolate(x, size=7, mode="linear"),
               lambda t, x: t.interpolate(x, size=7, mode="linear"), [(2, 2, 4)], 1.0),
    "area": (lambda x: F.interpolate(x, size=(2, 3), mode="area"),
             lambda t, x: t.interpolate(x, size=(2, 3), mode="area"), [(1, 2, 5, 7)], 1.0),
    "pad_constant": (lambda x: F.pad(x, (1, 2, -1, 1), value=0.5),
                     lambda t, x: t.pad(x, (1, 2, -1, 1), value=0.5), [(1, 2, 3, 4)], 1.0),
    "pad_reflect": (lambda x: F.pad(x, (2, 1, 1, 2), mode="reflect"),
                    lambda t, x: t.pad(x, (2, 1, 1, 2), mode="reflect"), [(1, 2, 3, 4)], 1.0),
    "pad_replicate": (lambda x: F.pad(x, (2, 1, 0, 3), mode="replicate"),
                      lambda t, x: t.pad(x, (2, 1, 0, 3), mode="replicate"), [(1, 2, 3, 4)],
                      1.0),
    "pad_circular": (lambda x: F.pad(x, (3, 1, 2, 0), mode="circular"),
                     lambda t, x: t.pad(x, (3, 1, 2, 0), mode="circular"), [(1, 2, 3, 4)],
                     1.0),
    "pad_reflect_1d": (lambda x: F.pad(x, (2, 3), mode="reflect"),
                       lambda t, x: t.pad(x, (2, 3), mode="reflect"), [(2, 5)], 1.0),
    "pixel_shuffle": (lambda x: F.pixel_shuffle(x, 2), lambda t, x: t.pixel_shuffle(x, 2),
                      [(1, 8, 2, 3)], 1.0),
    "pixel_unshuffle": (lambda x: F.pixel_unshuffle(x, 2), lambda t, x: t.pixel_unshuffle(x, 2),
                        [(1, 2, 4, 6)], 1.0),
    "channel_shuffle": (lambda x: F.channel_shuffle(x, 3),
                        lambda t, x: t.channel_shuffle(x, 3) if hasattr(t, "channel_shuffle")
                        else x.reshape(2, 3, 2, 2, 3).transpose(1, 2).reshape(2, 6, 2, 3),
                        [(2, 6, 2, 3)], 1.0),
    "unfold": (lambda x: F.unfold(x, (2, 3), dilation=(1, 2), padding=1, stride=(2, 1)),
               lambda t, x: t.unfold(x, (2, 3), dilation=(1, 2), padding=1, stride=(2, 1)),
               [(2, 2, 4, 5)], 1.0),
    "fold": (lambda x: F.fold(x, (5, 4), 2, padding=1, stride=2),
             lambda t, x: t.fold(x, (5, 4), 2, padding=1, stride=2), [(1, 8, 9)], 1.0),
    "local_response_norm": (lambda x: F.local_response_norm(x, 3, 0.1, 0.7, 2.0),
                            lambda t, x: t.local_response_norm(x, 3, 0.1, 0.7, 2.0),
                            [(2, 5, 2, 3)], 1.0),
    "normalize": (F.normalize, None, [(3, 4, 2)], 1.0),
    "normalize_p1": (lambda x: F.normalize(x, 1.0, 0), lambda t, x: t.normalize(x, 1.0, 0),
                     [(3, 4)], 1.0),
    "conv1d": (lambda x, w, b: F.conv1d(x, w, b, 2, 1, 2, 2),
               lambda t, x, w, b: t.conv1d(x, w, b, 2, 1, 2, 2), [(2, 4, 9), (6, 2, 3), (6,)],
               1.0),
    "conv1d_same": (lambda x, w: F.conv1d(x, w, padding="same"),
                    lambda t, x, w: t.conv1d(x, w, padding="same"), [(1, 2, 7), (3, 2, 4)],
                    1.0),
    "conv2d_same": (lambda x, w: F.conv2d(x, w, padding="same", dilation=(1, 2)),
                    lambda t, x, w: t.conv2d(x, w, padding="same", dilation=(1, 2)),
                    [(1, 2, 5, 6), (3, 2, 2, 3)], 1.0),
    "conv2d_unbatched": (lambda x, w: F.conv2d(x, w, stride=2, padding=1),
                         lambda t, x, w: t.conv2d(x, w, stride=2, padding=1),
                         [(2, 5, 5), (3, 2, 3, 3)], 1.0),
    "conv_transpose1d": (lambda x, w: F.conv_transpose1d(x, w, None, 2, 1, 1),
                         lambda t, x, w: t.conv_transpose1d(x, w, None, 2, 1, 1),
                         [(2, 3, 5), (3, 2, 3)], 1.0),
}


def _torch_call(name):
    function, reference, _, _ = CASES[name]
    if reference is not None:
        return reference
    return lambda t, *args: getattr(t, name)(*args)


def _inputs(rng, name, dtype=np.float64):
    _, _, shapes, scale = CASES[name]
    return [(rng.normal(size=shape) * scale).astype(dtype) for shape in shapes]


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_and_backward_match_torch(name, rng):
    torch = pytest.importorskip("torch")
    arrays = _inputs(rng, name)
    ours = [fastdl.Tensor(a.copy(), requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = CASES[name][0](*ours)
    expected = _torch_call(name)(torch.nn.functional, *theirs)
    assert out.shape == tuple(expected.shape)
    np.testing.assert_allclose(out.array, expected.detach().numpy(), rtol=1e-7, atol=1e-10)
    grad = rng.normal(size=out.shape)
    out.backward(grad)
    expected.backward(torch.tensor(grad))
    for mine, reference in zip(ours, theirs):
        np.testing.assert_allclose(mine.grad, reference.grad.numpy(), rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradcheck(name, rng):
    arrays = _inputs(rng, name)
    if name in ("relu6", "hardtanh", "hardsigmoid", "hardswish"):
        # keep finite differences off the kinks
        arrays = [np.where(np.abs(np.abs(a) - np.round(np.abs(a))) < 1e-3, a + 0.1, a)
                  for a in arrays]
    assert gradcheck(CASES[name][0], [fastdl.Tensor(a, requires_grad=True) for a in arrays])


@pytest.mark.parametrize("name", ["gelu", "mish", "hardswish", "max_pool2d_dilated",
                                  "adaptive_max_pool2d", "bicubic", "pad_reflect",
                                  "conv1d", "normalize"])
def test_float32_and_non_contiguous_inputs_give_the_float64_result(name, rng):
    arrays = _inputs(rng, name)
    expected = CASES[name][0](*[fastdl.Tensor(a) for a in arrays]).array
    single = CASES[name][0](*[fastdl.Tensor(a.astype(np.float32)) for a in arrays])
    assert single.dtype == np.float32
    np.testing.assert_allclose(single.array, expected, rtol=2e-5, atol=2e-5)
    # the same values laid out transposed in memory
    strided = [np.asfortranarray(a) for a in arrays]
    np.testing.assert_allclose(CASES[name][0](*[fastdl.Tensor(a) for a in strided]).array,
                               expected, rtol=1e-12, atol=1e-12)


def test_max_pool_indices_and_ties_follow_torch(rng):
    torch = pytest.importorskip("torch")
    x = np.round(rng.normal(size=(2, 3, 8, 7)))   # many ties
    x[0, 0, 2, 3] = np.nan
    for call in (lambda f, t: f.max_pool2d(t, 3, 2, 1, dilation=2, return_indices=True),
                 lambda f, t: f.adaptive_max_pool2d(t, (3, 5), return_indices=True),
                 lambda f, t: f.max_pool2d(t, 2, return_indices=True)):
        out, indices = call(F, fastdl.Tensor(x))
        expected, expected_indices = call(torch.nn.functional, torch.tensor(x))
        np.testing.assert_array_equal(out.array, expected.numpy())
        np.testing.assert_array_equal(indices.array, expected_indices.numpy())
        assert indices.dtype == np.int64 and not indices.requires_grad


def test_embedding_and_one_hot_match_torch(rng):
    torch = pytest.importorskip("torch")
    index = rng.integers(0, 6, size=(3, 4))
    table = rng.normal(size=(6, 5))
    ours = fastdl.Tensor(table.copy(), requires_grad=True)
    theirs = torch.tensor(table, requires_grad=True)
    out = F.embedding(fastdl.Tensor(index), ours, padding_idx=2, scale_grad_by_freq=True)
    expected = torch.nn.functional.embedding(torch.tensor(index), theirs, padding_idx=2,
                                             scale_grad_by_freq=True)
    np.testing.assert_array_equal(out.array, expected.detach().numpy())
    grad = rng.normal(size=out.shape)
    out.backward(grad)
    expected.backward(torch.tensor(grad))
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-12)
    renormed = table.copy()
    F.embedding(fastdl.Tensor(index), fastdl.Tensor(renormed), max_norm=1.0)
    reference = torch.tensor(table)
    torch.nn.functional.embedding(torch.tensor(index), reference, max_norm=1.0)
    np.testing.assert_allclose(renormed, reference.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(F.one_hot(fastdl.Tensor(index)).array,
                                  torch.nn.functional.one_hot(torch.tensor(index)).numpy())
    assert F.one_hot(fastdl.Tensor(np.array([1, 0])), 4).dtype == np.int64


def test_dropout_scaling_channels_and_eval(rng):
    x = fastdl.Tensor(np.ones((64, 32, 3, 3)), requires_grad=True)
    fastdl.manual_seed(0)
    y = F.dropout2d(x, 0.25)
    per_channel = y.array.reshape(64, 32, -1)
    assert np.all(per_channel.min(axis=2) == per_channel.max(axis=2))   # whole channels
    assert set(np.unique(y.array)) <= {0.0, 1 / 0.75}
    assert abs((y.array == 0).mean() - 0.25) < 0.03
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, y.array)
    assert F.dropout2d(x, 0.5, training=False) is x
    assert F.dropout(x, 0.5, training=False) is x
    with pytest.warns(UserWarning, match="3D input"):
        assert F.dropout2d(fastdl.Tensor(np.ones((2, 3, 4))), 0.5).shape == (2, 3, 4)
    assert np.all(F.dropout1d(fastdl.Tensor(np.ones((3, 4))), 0.0).array == 1)


def test_inplace_writes_into_the_input_when_nothing_records(rng):
    x = fastdl.Tensor(rng.normal(size=(3, 4)))
    with fastdl.no_grad():
        out = F.relu(x, inplace=True)
    assert out is x and np.all(x.array >= 0)
    y = fastdl.Tensor(rng.normal(size=(3, 4)), requires_grad=True)
    hidden = y * 2
    before = hidden.array.copy()
    out = F.hardtanh(hidden, inplace=True)   # recorded: a new Tensor, same gradients
    out.sum().backward()
    np.testing.assert_array_equal(hidden.array, before)
    np.testing.assert_array_equal(y.grad, 2.0 * (np.abs(before) < 1))


def test_softmax_implicit_dim_warns_as_torch(rng):
    x = fastdl.Tensor(rng.normal(size=(2, 3)))
    with pytest.warns(UserWarning, match="Implicit dimension"):
        out = F.softmax(x)
    np.testing.assert_allclose(out.array.sum(axis=1), 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        F.log_softmax(x, dim=0, dtype=np.float64)


@pytest.mark.parametrize("call, error, match", [
    (lambda: F.gelu(np.zeros(3), approximate="fast"), ValueError, "approximate"),
    (lambda: F.hardtanh(np.zeros(3), 2.0, 1.0), ValueError, "min_val"),
    (lambda: F.prelu(np.zeros((2, 3)), np.ones(2)), ValueError, "channel size"),
    (lambda: F.elu(np.zeros(3), alpha="1"), TypeError, "alpha"),
    (lambda: F.dropout2d(np.zeros((2, 3, 4, 4)), p=-0.1), ValueError, "probability"),
    (lambda: F.max_pool2d(np.zeros((1, 1, 5, 5)), 3, dilation=0), ValueError, "dilation"),
    (lambda: F.max_pool2d(np.zeros((1, 1, 5, 5)), 2, padding=2, dilation=2), ValueError,
     "pad should be at most half"),
    (lambda: F.adaptive_max_pool2d(np.zeros((1, 1, 5, 5)), (0, 2)), ValueError, "output_size"),
    (lambda: F.avg_pool2d(np.zeros((1, 1, 5, 5)), 2, divisor_override=0), ValueError,
     "divisor"),
    (lambda: F.interpolate(np.zeros((1, 1, 2, 2)), size=3, scale_factor=2), ValueError,
     "only one of size or scale_factor"),
    (lambda: F.interpolate(np.zeros((1, 1, 2, 2))), ValueError, "either size or scale_factor"),
    (lambda: F.interpolate(np.zeros((1, 1, 2, 2)), size=3, mode="linear"), ValueError,
     "linear mode needs 3D"),
    (lambda: F.interpolate(np.zeros((1, 1, 2, 2)), size=3, align_corners=True), ValueError,
     "align_corners"),
    (lambda: F.interpolate(np.zeros((1, 1, 2, 2)), size=3, mode="cubic"), ValueError, "mode"),
    (lambda: F.pad(np.zeros((1, 1, 2, 2)), (1, 2, 3)), ValueError, "even length"),
    (lambda: F.pad(np.zeros((1, 1, 2, 2)), (2, 2, 0, 0), mode="reflect"), ValueError,
     "less than the corresponding input dimension"),
    (lambda: F.pad(np.zeros((1, 1, 2, 2)), (1, 1), mode="wrap"), NotImplementedError, "mode"),
    (lambda: F.pad(np.zeros((1, 1, 2, 2)), (1, 1, 1, 1), mode="reflect", value=1.0), ValueError,
     "value"),
    (lambda: F.pixel_shuffle(np.zeros((1, 3, 2, 2)), 2), ValueError, "divisible"),
    (lambda: F.pixel_unshuffle(np.zeros((1, 3, 3, 2)), 2), ValueError, "divisible"),
    (lambda: F.embedding(np.array([0, 7]), np.zeros((5, 2))), IndexError, "out of range"),
    (lambda: F.embedding(np.array([0.5]), np.zeros((5, 2))), TypeError, "indices"),
    (lambda: F.one_hot(np.array([0, 3]), 3), RuntimeError, "smaller than num_classes"),
    (lambda: F.one_hot(np.array([-1])), RuntimeError, "non-negative"),
    (lambda: F.normalize(np.zeros((2, 3)), dim=2), IndexError, "Dimension out of range"),
    (lambda: F.conv2d(np.zeros((1, 2, 5, 5)), np.zeros((3, 2, 3, 3)), padding="same",
                      stride=2), ValueError, "strided"),
    (lambda: F.conv2d(np.zeros((1, 2, 5, 5)), np.zeros((3, 2, 3, 3)), padding="full"),
     ValueError, "Invalid padding string"),
    (lambda: F.conv1d(np.zeros((1, 2, 5, 5)), np.zeros((3, 2, 3))), ValueError, "3-D"),
    (lambda: F.unfold(np.zeros((1, 2, 3)), 2), ValueError, "4D"),
    (lambda: F.fold(np.zeros((1, 8, 5)), (5, 4), 2, padding=1, stride=2), ValueError,
     "expected input of shape"),
    (lambda: F.channel_shuffle(np.zeros((1, 5, 2, 2)), 2), ValueError, "divisible"),
    (lambda: F.local_response_norm(np.zeros((2, 3)), 2), ValueError, "3D or higher"),
])
def test_bad_arguments_raise_torch_kinds_of_error(call, error, match):
    with pytest.raises(error, match=match):
        call()
