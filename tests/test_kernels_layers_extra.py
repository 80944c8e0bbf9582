"""Kernels behind the torch-compatible layers (elementwise activations, window max
pooling, resampling, padding, unfold/fold): NumPy references, and the parallel
bindings equal to the serial ones (the functional tests run below their thresholds)."""
import numpy as np
import pytest
from scipy import special

from fastdl.kernels import elementwise, pad, pool_window, resample, unfold


def test_activation_values_against_numpy(rng):
    x = rng.normal(size=1000) * 4
    cases = {
        "gelu": (0, 0, 0.5 * x * (1 + special.erf(x / np.sqrt(2)))),
        "silu": (0, 0, x * special.expit(x)),
        "mish": (0, 0, x * np.tanh(np.logaddexp(0, x))),
        "elu": (0.5, 2.0, np.where(x > 0, 2 * x, 2 * 0.5 * np.expm1(x))),
        "softplus": (2.0, 3.0, np.where(2 * x > 3, x, np.logaddexp(0, 2 * x) / 2)),
        "hardtanh": (-1.5, 0.5, np.clip(x, -1.5, 0.5)),
        "hardsigmoid": (0, 0, np.clip(x / 6 + 0.5, 0, 1)),
        "hardswish": (0, 0, x * np.clip(x + 3, 0, 6) / 6),
    }
    for name, (a, b, expected) in cases.items():
        np.testing.assert_allclose(elementwise.activation_forward(x, name, a, b), expected,
                                   rtol=1e-12, atol=1e-14, err_msg=name)


def test_activations_do_not_overflow_in_float32():
    x = np.array([-1e4, -100.0, 0.0, 100.0, 1e4], np.float32)
    for name in ("gelu", "gelu_tanh", "silu", "mish", "softplus", "elu"):
        value = elementwise.activation_forward(x, name, 1.0, 20.0)
        grad = elementwise.activation_backward(np.ones_like(x), x, name, 1.0, 20.0)
        assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad)), name
        assert value.dtype == np.float32


def test_parallel_bindings_equal_the_serial_ones(rng):
    x = rng.normal(size=1 << 16) * 3
    for name in elementwise.CODES:
        serial = np.empty_like(x)
        parallel = np.empty_like(x)
        code = elementwise.CODES[name]
        elementwise._FORWARD[0](x, code, 1.0, 2.0, serial)
        elementwise._FORWARD[1](x, code, 1.0, 2.0, parallel)
        np.testing.assert_array_equal(serial, parallel, err_msg=name)
        elementwise._BACKWARD[0](x, x, code, 1.0, 2.0, serial)
        elementwise._BACKWARD[1](x, x, code, 1.0, 2.0, parallel)
        np.testing.assert_array_equal(serial, parallel, err_msg=name)
    planes = rng.normal(size=(48, 40, 40))
    rows, cols = resample.linear_taps(40, 50, False), resample.cubic_taps(40, 60, True)
    outputs = []
    for binding in (0, 1):
        out = np.empty((48, 50, 60))
        resample._FORWARD[binding](planes, rows[0], rows[1], cols[0], cols[1], out)
        grad = np.empty_like(planes)
        resample._BACKWARD[binding](out, rows[0], rows[1], cols[0], cols[1], grad)
        outputs.append((out, grad))
    for serial, parallel in zip(*outputs):
        np.testing.assert_array_equal(serial, parallel)
    taps = pool_window.dilated_taps(40, 19, 3, 2, 1, 2)
    results = []
    for loop in (pool_window._max_taps_serial, pool_window._max_taps_parallel):
        out = np.empty((48, 19, 19))
        indices = np.empty((48, 19, 19), np.int64)
        loop(planes, taps, taps, out, indices)
        results.append((out, indices))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_window_max_pool_against_a_loop(rng):
    x = rng.normal(size=(2, 3, 9, 8))
    out, indices = pool_window.max_pool2d_dilated_forward(x, (3, 2), (2, 1), (1, 1), (2, 3),
                                                          True)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    for oh in range(out.shape[2]):
        for ow in range(out.shape[3]):
            window = padded[:, :, oh * 2:oh * 2 + 5:2, ow:ow + 4:3]
            np.testing.assert_array_equal(out[:, :, oh, ow], window.max(axis=(2, 3)))
    np.testing.assert_array_equal(np.take_along_axis(x.reshape(2, 3, -1),
                                                     indices.reshape(2, 3, -1), 2),
                                  out.reshape(2, 3, -1))


@pytest.mark.parametrize("mode, numpy_mode", [("reflect", "reflect"), ("replicate", "edge"),
                                              ("circular", "wrap")])
def test_pad_against_numpy_and_its_adjoint(rng, mode, numpy_mode):
    x = rng.normal(size=(2, 3, 5, 4))
    widths = ((2, 1), (3, 0))
    out = pad.pad_forward(x, widths, mode)
    np.testing.assert_array_equal(out, np.pad(x, ((0, 0), (0, 0)) + widths, mode=numpy_mode))
    grad = rng.normal(size=out.shape)
    # adjoint: <pad(x), g> == <x, pad_backward(g)>
    assert np.sum(out * grad) == pytest.approx(np.sum(x * pad.pad_backward(
        grad, x.shape, widths, mode)), rel=1e-12)


def test_unfold_and_fold_are_adjoint(rng):
    x = rng.normal(size=(2, 3, 6, 5))
    window = ((2, 3), (2, 1), (1, 2), (2, 1))
    columns = unfold.unfold_forward(x, *window)
    grad = rng.normal(size=columns.shape)
    back = unfold.fold_forward(grad, x.shape[2:], *window)
    assert np.sum(columns * grad) == pytest.approx(np.sum(x * back), rel=1e-12)
    # one column is one window, channels outermost
    first = np.pad(x, ((0, 0), (0, 0), (1, 1), (2, 2)))[:, :, 0:3:2, 0:3]
    np.testing.assert_array_equal(columns[:, :, 0], first.reshape(2, -1))
