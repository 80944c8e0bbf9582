"""The fused dense-layer forward against NumPy."""
import numpy as np
import pytest

from fastdl.kernels import dense


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("slope", [None, 0.0, 0.2])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("rows", [1, 3, 4, 7, 8, 9, 64])
@pytest.mark.parametrize("features", [5, 24, 49])
def test_linear_forward_matches_numpy(dtype, rtol, slope, with_bias, rows, features, rng):
    """float32 from 4 rows on: the packed register kernel, whose blocks of 4 rows and
    panels of 24 features end part-way (7, 9 rows; 5, 49 features); fewer rows and
    float64: BLAS (GEMV per row up to 8, then GEMM)."""
    x = rng.normal(size=(rows, 13)).astype(dtype)
    weight = rng.normal(size=(features, 13)).astype(dtype)
    bias = rng.normal(size=features).astype(dtype) if with_bias else None
    expected = x.astype(np.float64) @ weight.T.astype(np.float64)
    if with_bias:
        expected = expected + bias
    if slope is not None:
        expected = np.where(expected > 0, expected, slope * expected)
    out = dense.linear_forward(x, weight, bias, negative_slope=slope)
    assert out.dtype == dtype and out.shape == (rows, features)
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


def test_linear_forward_writes_into_out_and_takes_strided_input(rng):
    x = rng.normal(size=(4, 20))[:, ::2]
    weight = rng.normal(size=(3, 10))
    out = np.empty((4, 3))
    assert dense.linear_forward(x, weight, out=out) is out
    np.testing.assert_allclose(out, x @ weight.T, rtol=1e-12)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("rows", [5, 64])     # GEMV rows and GEMMs
def test_threads_share_the_output_features(threads, rows, rng):
    """Large layers are split by output features, one GEMM per thread (GEMV rows too)."""
    x = rng.normal(size=(rows, 400)).astype(np.float32)
    weight = rng.normal(size=(1000, 400)).astype(np.float32)   # 2M multiply-adds at 5 rows
    bias = rng.normal(size=1000).astype(np.float32)
    expected = np.maximum(x.astype(np.float64) @ weight.T.astype(np.float64) + bias, 0)
    out = dense.linear_forward(x, weight, bias, negative_slope=0.0, threads=threads)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_the_compiled_layer_refuses_arrays_that_do_not_fit(rng):
    """Checked before any BLAS call: a wrong dtype, layout, shape or bias length is an
    error naming the array, never a read past the end."""
    from fastdl_ext import dense as ext
    x = rng.normal(size=(4, 10)).astype(np.float32)
    weight = rng.normal(size=(3, 10)).astype(np.float32)
    out = np.empty((4, 3), np.float32)
    with pytest.raises(TypeError, match="float32 or float64"):
        ext.linear_forward_into(x.astype(np.int32), weight, out)
    with pytest.raises(ValueError, match="weight must be a C-contiguous"):
        ext.linear_forward_into(x, weight.astype(np.float64), out)
    with pytest.raises(ValueError, match="x must be a C-contiguous"):
        ext.linear_forward_into(np.asfortranarray(x), weight, out)
    with pytest.raises(ValueError, match="out must be a C-contiguous writable"):
        read_only = out.copy()
        read_only.flags.writeable = False
        ext.linear_forward_into(x, weight, read_only)
    with pytest.raises(ValueError, match=r"do not fit x @ weight.T"):
        ext.linear_forward_into(x, weight[:, :9].copy(), out)
    with pytest.raises(ValueError, match=r"do not fit x @ weight.T"):
        ext.linear_forward_into(x, weight, np.empty((4, 2), np.float32))
    with pytest.raises(ValueError, match="bias has 2 values for 3 features"):
        ext.linear_forward_into(x, weight, out, np.zeros(2, np.float32))


def test_packed_weights_hold_the_transposed_panels_and_zeros(rng):
    weight = rng.normal(size=(30, 7)).astype(np.float32)
    panels = dense.pack_weight(weight)
    assert panels.shape == (2, 7, dense.PANEL)
    np.testing.assert_array_equal(panels[0], weight[:24].T)
    np.testing.assert_array_equal(panels[1, :, :6], weight[24:].T)
    assert not panels[1, :, 6:].any()


def test_a_runner_gives_every_batch_size_the_same_rows(rng):
    """One prepared layer, called with 1 to 9 rows (BLAS below 4, packed from 4): row i
    of every answer is the same up to rounding, NaN stays NaN through the ReLU."""
    weight = rng.normal(size=(40, 33)).astype(np.float32)
    bias = rng.normal(size=40).astype(np.float32)
    layer = dense.LinearRunner(weight, bias, negative_slope=0.0)
    x = rng.normal(size=(9, 33)).astype(np.float32)
    x[2, 5] = np.nan
    expected = np.maximum(x.astype(np.float64) @ weight.T + bias, 0)
    expected[2] = np.nan
    for rows in range(1, 10):
        np.testing.assert_allclose(layer(x[:rows]), expected[:rows], rtol=1e-5, atol=1e-5)


def test_the_packed_kernel_refuses_arrays_that_do_not_fit(rng):
    from fastdl_ext import dense as ext
    x = rng.normal(size=(4, 10)).astype(np.float32)
    panels = dense.pack_weight(rng.normal(size=(30, 10)).astype(np.float32))
    out = np.empty((4, 30), np.float32)
    with pytest.raises(ValueError, match=r"x must be a C-contiguous 2-D float32 array, got float64 \(4, 10\)"):
        ext.linear_packed_into(x.astype(np.float64), panels, out)
    with pytest.raises(ValueError, match="do not fit"):
        ext.linear_packed_into(x[:, :9].copy(), panels, out)
    with pytest.raises(ValueError, match="do not fit"):
        ext.linear_packed_into(x, panels, np.empty((4, 49), np.float32))
    with pytest.raises(ValueError, match="do not fit"):
        ext.linear_packed_into(x, panels[:, :, :8].copy(), out)
    with pytest.raises(ValueError, match="bias has 30 values for 48 features"):
        ext.linear_packed_into(x, panels, out, np.zeros(30, np.float32))
    with pytest.raises(ValueError, match="LinearRunner: bias must have shape"):
        dense.LinearRunner(rng.normal(size=(30, 10)), np.zeros(3))
    with pytest.raises(TypeError, match="LinearRunner: weight must be a float32 or float64"):
        dense.LinearRunner(np.zeros((3, 4), np.int64))
    with pytest.raises(ValueError, match=r"LinearRunner: weight must be 2-D .* got shape \(12,\)"):
        dense.LinearRunner(np.zeros(12, np.float32))
