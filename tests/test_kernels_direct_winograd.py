"""Winograd's F(2x2, 3x3) as a layer of a direct conv chain, against the SciPy reference.

A chained 3x3 stride-1 conv that reads its input in place from a bordered buffer may
run on transformed weights: per transformed position a 1x1 conv over the tiles on the
direct loop's register blocks, between the input and output transforms.
"""
import numpy as np
import pytest

from fastdl.kernels import direct
from fastdl_ext import direct as direct_ext
from reference import conv2d_reference, from_stored_layout, stored_layout


def _step(x, weight, out, items, layouts, bias=None, residual=None, slope=None,
          co_block=4, packed=None, **changes):
    """A chain step running ``weight`` by Winograd with work items ``(bands, group)``;
    ``changes``: other ``ConvStep`` arguments."""
    arguments = dict(kernel_size=(3, 3), padding=(1, 1), stride=(1, 1), bias=bias,
                     residual=residual, activate=slope is not None,
                     slope=0.0 if slope is None else slope, layouts=layouts,
                     winograd_items=items)
    arguments.update(changes)
    if packed is None:
        packed = direct.pack_transformed(weight, co_block)
    return direct_ext.ConvStep(x, packed, out, **arguments)


def _reference(x, weight, bias, residual, slope):
    want = conv2d_reference(x.astype(np.float64), weight.astype(np.float64),
                            None if bias is None else bias.astype(np.float64), (1, 1), (1, 1))
    if residual is not None:
        want = want + residual
    if slope is not None:
        want = np.where(want > 0, want, slope * want)
    return want


def test_transformed_weights_are_packed_per_position():
    """Row ``ξ * co_blocks + block`` of the packing holds ``U[ξ] = (G g Gᵀ)[ξ]`` of the
    block's channels, input channels down, zero past C_out."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(6, 5, 3, 3)).astype(np.float32)
    packed = direct.pack_transformed(weight, 4)
    assert packed.shape == (16 * 2, 5, 4)
    # Lavin and Gray's G for F(2x2, 3x3); ξ = 4 * row + column of the 4x4 transform
    g = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    u = np.einsum("ia,ocab,jb->ijoc", g, weight.astype(np.float64), g).reshape(16, 6, 5)
    for xi in range(16):
        for block in range(2):
            channels = u[xi, 4 * block:4 * block + 4].T
            np.testing.assert_allclose(packed[2 * xi + block, :, :channels.shape[1]],
                                       channels, rtol=1e-6, atol=1e-6)
    assert not packed[1::2, :, 2:].any()


# (N, C_in, C_out, H, W): four tiles a row (an 8 x 8 map: the paired column pass), 8
# and 16 (whole eights, in the lanes' order), 12 (a vector of tiles and a scalar
# tail), tile rows of a band that leave a partial vector of tiles (10 x 8: 20
# tiles), C_out not a multiple of the channel block
SHAPES = [(1, 16, 16, 8, 8), (1, 8, 20, 16, 16), (2, 5, 8, 10, 8), (1, 12, 7, 6, 24),
          (3, 16, 12, 12, 8), (1, 6, 9, 6, 32)]


def _interior(stored, layout):
    """The image of an array stored as ``layout``, checking that its border is zero."""
    rows, cols = layout[:2]
    padded = from_stored_layout(stored, layout)
    height, width = padded.shape[2] - 2 * rows, padded.shape[3] - 2 * cols
    image = padded[:, :, rows:rows + height, cols:cols + width].copy()
    padded[:, :, rows:rows + height, cols:cols + width] = 0
    assert not padded.any()
    return image


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("co_block", [4, 6, 3])
@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-4), (np.float64, 1e-10)])
def test_a_winograd_layer_matches_scipy(shape, co_block, dtype, rtol):
    """Bias, residual and a leaky ReLU in the epilogue, x read in place from a border of
    1 and of 2, the output plain, bordered or in phase planes (borders left zero)."""
    rng = np.random.default_rng(sum(shape) + co_block)
    n, c_in, c_out, height, width = shape
    x = rng.normal(size=(n, c_in, height, width)).astype(dtype)
    weight = rng.normal(size=(c_out, c_in, 3, 3)).astype(dtype)
    bias = rng.normal(size=c_out).astype(dtype)
    residual = rng.normal(size=(n, c_out, height, width)).astype(dtype)
    want = _reference(x, weight, bias, residual, 0.1)
    for x_layout, out_layout in [((1, 1), (0, 0)), ((2, 1), (1, 1)), ((1, 2), (1, 1, 2, 2))]:
        out = stored_layout(np.full(want.shape, np.nan, dtype), out_layout)
        direct_ext.direct_chain_into([_step(
            stored_layout(x, x_layout), weight, out, (1, 1), (x_layout, (1, 1), out_layout),
            bias, stored_layout(residual, (1, 1)), 0.1, co_block)], 2)
        np.testing.assert_allclose(_interior(out, out_layout), want, rtol=rtol,
                                   atol=rtol * np.abs(want).max())


@pytest.mark.parametrize("shape", SHAPES)
def test_work_items_and_threads_do_not_change_the_result(shape):
    """Bands of tile rows and groups of channel blocks only share the work out: every
    split, at any thread count, gives bitwise the one-item result."""
    rng = np.random.default_rng(1)
    n, c_in, c_out, height, width = shape
    x = stored_layout(rng.normal(size=(n, c_in, height, width)).astype(np.float32), (1, 1))
    weight = rng.normal(size=(c_out, c_in, 3, 3)).astype(np.float32)
    layouts = ((1, 1), (0, 0), (0, 0))
    want = np.empty((n, c_out, height, width), np.float32)
    direct_ext.direct_chain_into([_step(x, weight, want, (1, 2), layouts)], 1)
    reference = _reference(x[:, :, 1:-1, 1:-1], weight, None, None, None)
    np.testing.assert_allclose(want, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())
    co_blocks = -(-c_out // 4)
    for bands in sorted({1, 2, height // 2}):
        for group in sorted({1, 2, co_blocks}):
            for threads in (1, 2, 3):
                out = np.full_like(want, np.nan)
                direct_ext.direct_chain_into([_step(x, weight, out, (bands, group), layouts)],
                                             threads)
                np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_chain_of_winograd_and_direct_layers_runs_again_and_again(threads):
    """ResNet's pattern, bordered intermediates read in place by Winograd layers and
    added as residuals, the last output in phase planes for a strided conv: equal to
    the plain direct convs, run after run, borders staying zero."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 16, 16, 16)).astype(np.float32)
    weights = [rng.normal(size=(16, 16, 3, 3)).astype(np.float32) / 12 for _ in range(4)]
    runners = [direct.forward_runner(x.shape, weight, None, (1, 1), threads, 0.0)
               for weight in weights]
    plain = [np.empty(x.shape, np.float32) for _ in runners]
    direct.run_chain([(runners[0], x, plain[0], None)] + [
        (runners[k], plain[k - 1], plain[k], plain[k - 2] if k > 1 else None)
        for k in range(1, 4)], threads)
    references = [x.astype(np.float64)]
    for k, weight in enumerate(weights):
        references.append(np.maximum(_reference(references[-1], weight, None, None, None)
                                     + (references[-2] if k > 1 else 0), 0))
        np.testing.assert_allclose(plain[k], references[-1], rtol=1e-4, atol=1e-4)
    layouts = [(1, 1), (1, 1), (1, 1), (1, 1, 2, 2)]
    stored = [stored_layout(np.zeros(x.shape, np.float32), layout) for layout in layouts]
    steps = [runners[0].step(x, stored[0], None, ((0, 0), (0, 0), layouts[0]))] + [
        runners[k].step(stored[k - 1], stored[k], stored[k - 2] if k > 1 else None,
                        (layouts[k - 1], layouts[k - 2] if k > 1 else (0, 0), layouts[k]))
        for k in range(1, 4)]
    # the first reads x plainly
    assert [step.winograd_items is not None for step in steps] == [False, True, True, True]
    chain = direct_ext.Chain(steps, threads)
    for _ in range(3):
        chain.run(x)
        for out, layout, want in zip(stored, layouts, plain):
            np.testing.assert_allclose(_interior(out, layout), want, rtol=1e-5,
                                       atol=1e-5 * np.abs(want).max())


def test_winograd_layers_are_checked():
    """Transformed weights run only a 3x3 stride-1 conv with padding 1 that reads x in
    place, on an even output of whole vectors a row, with items that fit."""
    rng = np.random.default_rng(3)
    x = stored_layout(rng.normal(size=(1, 8, 8, 8)).astype(np.float32), (1, 1))
    weight = rng.normal(size=(8, 8, 3, 3)).astype(np.float32)
    out = np.empty((1, 8, 8, 8), np.float32)
    layouts = ((1, 1), (0, 0), (0, 0))
    direct_ext.direct_chain_into([_step(x, weight, out, (1, 1), layouts)], 1)
    cases = {
        "x plain": dict(layouts=((0, 0), (0, 0), (0, 0))),
        "stride 2": dict(stride=(2, 2)),
        "padding 0": dict(padding=(0, 0)),
        "no bands": dict(items=(0, 1)),
        "too many bands": dict(items=(5, 1)),
        "too large a group": dict(items=(1, 3)),
        "untransformed weights": dict(packed=direct.pack_weight(weight)),
        "a pool": dict(pool=True),
    }
    for what, changes in cases.items():
        arguments = {"items": (1, 1), "layouts": layouts, **changes}
        with pytest.raises(ValueError, match="direct_forward_into|ConvStep"):
            direct_ext.direct_chain_into([_step(x, weight, out, **arguments)], 1)
            pytest.fail(what)


def test_runners_choose_winograd_only_where_it_applies():
    """A runner hands out transformed weights for a float32 3x3 stride-1 conv with
    padding 1 and enough input channels, read in place; the plain packing otherwise."""
    rng = np.random.default_rng(4)
    c = direct.MIN_WINOGRAD_CHANNELS
    x = np.zeros((1, c, 8, 8), np.float32)
    bordered = stored_layout(x, (1, 1))
    out = np.empty((1, 8, 8, 8), np.float32)
    layouts = ((1, 1), (0, 0), (0, 0))

    def winograd(weight, padding=(1, 1), stride=(1, 1), layouts=layouts, shape=x.shape):
        run = direct.forward_runner(shape, weight, None, padding, 2, None, stride)
        return run.step(bordered, out, None, layouts).winograd_items is not None
    weight = rng.normal(size=(8, c, 3, 3)).astype(np.float32)
    assert winograd(weight)
    assert not winograd(weight, layouts=((0, 0), (0, 0), (0, 0)))
    assert not winograd(weight, layouts=((1, 1, 2, 2), (0, 0), (0, 0)))
    assert not winograd(weight[:, :c - 1], shape=(1, c - 1, 8, 8))
    assert not winograd(weight.astype(np.float64))
    assert not winograd(weight, padding=(0, 0))
    assert not winograd(weight, stride=(2, 2))
    assert not winograd(weight, shape=(1, c, 7, 8))
