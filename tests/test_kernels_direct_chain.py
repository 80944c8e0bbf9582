"""Chains of direct convs in one parallel region: later convs reading earlier outputs,
prepared chains run again, arrays kept inside zero borders or as phase planes and read
in place (``direct.reads_in_place``), and the checks of what a chain is given."""
import numpy as np
import pytest

from fastdl.kernels import direct
from reference import conv2d_reference, from_stored_layout, stored_layout


@pytest.mark.parametrize("n, threads", [(1, 1), (1, 2), (3, 2), (2, 3)])
def test_a_chain_equals_its_convs_one_by_one(n, threads, rng):
    """Convs chained in one parallel region (later ones reading earlier outputs as
    input and residual, a strided one among them) give bitwise the separate calls."""
    x = rng.normal(size=(n, 3, 12, 10)).astype(np.float32)
    first = direct.forward_runner(x.shape, rng.normal(size=(8, 3, 3, 3)).astype(np.float32),
                                  rng.normal(size=8).astype(np.float32), (1, 1), threads, 0.0)
    second = direct.forward_runner(first.out_shape,
                                   rng.normal(size=(8, 8, 3, 3)).astype(np.float32), None,
                                   (1, 1), threads, 0.1)
    third = direct.forward_runner(second.out_shape,
                                  rng.normal(size=(6, 8, 3, 3)).astype(np.float32),
                                  rng.normal(size=6).astype(np.float32), (1, 1), threads, None,
                                  (2, 2))
    a = first(x)
    b = second(a, None, a)
    c = third(b)
    outs = [np.full(r.out_shape, np.nan, np.float32) for r in (first, second, third)]
    direct.run_chain([(first, x, outs[0], None), (second, outs[0], outs[1], outs[0]),
                      (third, outs[1], outs[2], None)], threads)
    for got, want in zip(outs, (a, b, c)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_prepared_chain_runs_again_with_new_first_inputs(threads, rng):
    """A chain laid out once runs with a new first input each time, also where a later
    conv adds that input as its residual, bitwise as a chain made for it."""
    shape = (2, 3, 10, 12)
    first_weight = rng.normal(size=(8, 3, 3, 3)).astype(np.float32)
    second_weight = rng.normal(size=(3, 8, 3, 3)).astype(np.float32)
    bias = rng.normal(size=3).astype(np.float32)
    first = direct.forward_runner(shape, first_weight, None, (1, 1), threads, 0.0)
    second = direct.forward_runner(first.out_shape, second_weight, bias, (1, 1), threads, 0.1)
    outs = [np.empty(first.out_shape, np.float32), np.empty(shape, np.float32)]
    expected = [np.empty_like(out) for out in outs]
    x = rng.normal(size=shape).astype(np.float32)
    chain = direct.prepare_chain([(first, x, outs[0], None), (second, outs[0], outs[1], x)],
                                 threads)
    for _ in range(3):
        x = rng.normal(size=shape).astype(np.float32)
        chain.run(x)
        direct.run_chain([(first, x, expected[0], None),
                          (second, expected[0], expected[1], x)], threads)
        for got, want in zip(outs, expected):
            np.testing.assert_array_equal(got, want)
    # and against SciPy: second(relu(first(x))) + bias + x, then leaky ReLU 0.1
    hidden = np.maximum(conv2d_reference(x.astype(np.float64), first_weight.astype(np.float64),
                                         padding=(1, 1)), 0)
    want = conv2d_reference(hidden, second_weight.astype(np.float64), bias.astype(np.float64),
                            padding=(1, 1)) + x
    want = np.where(want > 0, want, 0.1 * want)
    np.testing.assert_allclose(outs[1], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    with pytest.raises(ValueError, match="shape it was prepared for"):
        chain.run(np.zeros((1,) + shape[1:], np.float32))
    with pytest.raises(ValueError, match="float32"):
        chain.run(x.astype(np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        chain.run(np.asfortranarray(x))


def test_a_long_chain_is_the_same_when_threads_join_late_or_sleep(rng):
    """More threads than cores, so that some start late or sleep between layers and
    join wherever the others are: every run of a twelve-conv chain (each reading the
    one before as input and the one before that as residual) equals the one-thread run
    bitwise."""
    x = rng.normal(size=(1, 8, 16, 16)).astype(np.float32)
    weights = [rng.normal(size=(8, 8, 3, 3)).astype(np.float32) / 8 for _ in range(12)]

    def chain(threads):
        runners = [direct.forward_runner(x.shape, w, None, (1, 1), threads, 0.0)
                   for w in weights]
        outs = [np.full(x.shape, np.nan, np.float32) for _ in weights]
        specs = [(runners[0], x, outs[0], None)] + [
            (runners[k], outs[k - 1], outs[k], outs[k - 2] if k > 1 else None)
            for k in range(1, len(weights))]
        return specs, outs

    serial_specs, serial = chain(1)
    direct.run_chain(serial_specs, 1)
    specs, outs = chain(4)
    for _ in range(50):
        for out in outs:
            out.fill(np.nan)
        direct.run_chain(specs, 4)
        for got, want in zip(outs, serial):
            np.testing.assert_array_equal(got, want)


def test_the_in_place_read_rule():
    """A dense grid, x stored with the conv's stride and at least its padding as border."""
    rule = direct.reads_in_place
    assert rule(16, (1, 1), (1, 1), (1, 1)) and rule(16, (1, 1), (1, 1), (2, 1, 1, 1))
    assert rule(8, (0, 0), (1, 1), (0, 0))              # plain x, no padding
    assert rule(8, (1, 1), (2, 2), (1, 1, 2, 2)) and rule(8, (0, 0), (2, 2), (1, 1, 2, 2))
    assert not rule(14, (1, 1), (1, 1), (1, 1))          # the wide grid reads past
    assert not rule(0, (0, 0), (1, 1), (0, 0))
    assert not rule(16, (1, 1), (1, 1), (0, 1))          # border below the padding
    assert not rule(8, (1, 1), (2, 2), (1, 1))           # planes of another stride
    assert not rule(8, (1, 1), (1, 1), (1, 1, 2, 2))


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 3])
# (kernel, padding, stride, width): read in place (stride 1, a dense grid, the
# padding as border) or copied from the interior (a wide grid, a stride, a border
# other than the padding)
@pytest.mark.parametrize("kernel, padding, stride, width", [
    (3, 1, 1, 16), (5, 2, 1, 8), (3, 1, 1, 10), (3, 1, 2, 16), (1, 0, 2, 16), (3, 0, 1, 10)])
def test_bordered_inputs_outputs_and_residuals_give_the_unbordered_results(
        kernel, padding, stride, width, n, threads, rng):
    """x, residual and out stored inside zero borders (what a plan keeps between chained
    convs, so that the next conv reads its input in place) give bitwise the results
    of plain arrays; the conv writes out's interior only, leaving the border as it
    was."""
    x = rng.normal(size=(n, 8, 12, width)).astype(np.float32)
    weight = rng.normal(size=(8, 8, kernel, kernel)).astype(np.float32)
    bias = rng.normal(size=8).astype(np.float32)
    run = direct.forward_runner(x.shape, weight, bias, (padding, padding), threads, 0.0,
                                (stride, stride))
    residual = rng.normal(size=run.out_shape).astype(np.float32)
    want = run(x, None, residual)
    reference = conv2d_reference(x.astype(np.float64), weight.astype(np.float64),
                                 bias.astype(np.float64), (stride, stride),
                                 (padding, padding)) + residual
    np.testing.assert_allclose(want, np.maximum(reference, 0), rtol=1e-4,
                               atol=1e-4 * np.abs(reference).max())
    for x_border, out_border, residual_border in [((padding, padding), (1, 1), (2, 1)),
                                                  ((1, 2), (0, 0), (0, 0)),
                                                  ((0, 0), (2, 3), (1, 1))]:
        out = stored_layout(np.full(run.out_shape, np.nan, np.float32), out_border)
        direct.run_chain([(run, stored_layout(x, x_border), out,
                           stored_layout(residual, residual_border),
                           (x_border, residual_border, out_border))], threads)
        rows, cols = out_border
        np.testing.assert_array_equal(out[:, :, rows:rows + want.shape[2],
                                          cols:cols + want.shape[3]], want)
        out[:, :, rows:rows + want.shape[2], cols:cols + want.shape[3]] = 0
        assert not out.any()


@pytest.mark.parametrize("threads", [1, 2])
def test_a_chain_on_bordered_buffers_equals_plain_convs(threads, rng):
    """ResNet's pattern on bordered intermediates: each conv reads the one before in
    place and adds the one before that, run after run (the borders stay zero)."""
    x = rng.normal(size=(1, 8, 16, 16)).astype(np.float32)
    runners = [direct.forward_runner(x.shape, rng.normal(size=(8, 8, 3, 3)).astype(np.float32)
                                     / 8, None, (1, 1), threads, 0.0) for _ in range(5)]
    plain = [np.empty(x.shape, np.float32) for _ in runners]
    bordered = [stored_layout(np.zeros(x.shape, np.float32), (1, 1)) for _ in runners[:-1]]
    bordered.append(np.empty(x.shape, np.float32))
    no_border, border = (0, 0), (1, 1)

    def steps(outs, framed):
        return [(runners[0], x, outs[0], None, (no_border, no_border, framed(0)))] + [
            (runners[k], outs[k - 1], outs[k], outs[k - 2] if k > 1 else None,
             (framed(k - 1), framed(k - 2) if k > 1 else no_border, framed(k)))
            for k in range(1, len(runners))]
    direct.run_chain(steps(plain, lambda k: no_border), threads)
    chain = direct.prepare_chain(steps(bordered, lambda k: border if k < len(runners) - 1
                                       else no_border), threads)
    for _ in range(3):
        chain.run(x)
        np.testing.assert_array_equal(bordered[-1], plain[-1])
        for inner, want in zip(bordered[:-1], plain[:-1]):
            np.testing.assert_array_equal(inner[:, :, 1:-1, 1:-1], want)
            inner[:, :, 1:-1, 1:-1] = 0
            assert not inner.any()
            inner[:, :, 1:-1, 1:-1] = want


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [1, 2])
def test_a_conv_after_one_that_read_in_place_pads_into_a_zeroed_border(n, threads, rng):
    """A conv that reads in place keeps its grid where the convs before it padded their
    images: a later conv padding the same layout must zero the border again. (A plan
    of two BasicBlocks, 3 -> 3 then 3 -> 8, was 3.5e-2 off its model: the third conv
    read the second's grid as its border.)"""
    x = rng.normal(size=(n, 3, 8, 8)).astype(np.float32)
    runners = [direct.forward_runner(x.shape, rng.normal(size=(c_out, 3, 3, 3)).astype(
        np.float32), None, (1, 1), threads, 0.0) for c_out in (3, 3, 8)]
    first = runners[0](x)
    second = runners[1](first, None, x)
    want = runners[2](second)
    outs = [stored_layout(np.zeros(first.shape, np.float32), (1, 1)),
            np.empty(second.shape, np.float32), np.empty(want.shape, np.float32)]
    plain = ((0, 0), (0, 0), (0, 0))
    chain = direct.prepare_chain([(runners[0], x, outs[0], None, ((0, 0), (0, 0), (1, 1))),
                                  (runners[1], outs[0], outs[1], x, ((1, 1), (0, 0), (0, 0))),
                                  (runners[2], outs[1], outs[2], None, plain)], threads)
    for _ in range(2):
        chain.run(x)
        np.testing.assert_array_equal(outs[0][:, :, 1:-1, 1:-1], first)
        np.testing.assert_array_equal(outs[1], second)
        np.testing.assert_array_equal(outs[2], want)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("width", [16, 22])
@pytest.mark.parametrize("layout", [(1, 1, 2, 2), (0, 0, 2, 2), (1, 0, 2, 1), (0, 2, 3, 2),
                                    (0, 1, 1, 3)])
def test_outputs_written_into_phase_planes_are_the_plain_outputs(layout, width, threads,
                                                                  rng):
    """A conv writes its output (with bias, residual and activation) straight into the
    phase planes a strided conv reads, bitwise the plain output, the border untouched
    (rows of whole vectors and with a scalar tail)."""
    x = rng.normal(size=(2, 8, 12, width)).astype(np.float32)
    weight = rng.normal(size=(8, 8, 3, 3)).astype(np.float32)
    bias = rng.normal(size=8).astype(np.float32)
    run = direct.forward_runner(x.shape, weight, bias, (1, 1), threads, 0.1)
    residual = rng.normal(size=run.out_shape).astype(np.float32)
    want = run(x, None, residual)
    reference = conv2d_reference(x.astype(np.float64), weight.astype(np.float64),
                                 bias.astype(np.float64), (1, 1), (1, 1)) + residual
    reference = np.where(reference > 0, reference, 0.1 * reference)
    np.testing.assert_allclose(want, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())
    rows, cols = layout[:2]
    out = stored_layout(np.full(run.out_shape, np.nan, np.float32), layout)
    direct.run_chain([(run, x, out, stored_layout(residual, (1, 1)),
                       ((0, 0), (1, 1), layout))], threads)
    np.testing.assert_array_equal(out, stored_layout(want, layout))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [1, 3])
# (kernel, padding, stride, width, layout): a strided conv reads its input's phase
# planes in place, also planes padded more than the conv (the 1x1 shortcut of a ResNet
# reads the planes its 3x3 neighbour's padding laid out); at stride 1 a border wider
# than the padding is read in place too
@pytest.mark.parametrize("kernel, padding, stride, width, layout", [
    (3, 1, 2, 32, (1, 1, 2, 2)), (1, 0, 2, 32, (1, 1, 2, 2)), (3, 1, 2, 16, (2, 2, 2, 2)),
    (3, 0, 3, 24, (0, 0, 3, 3)), (3, 1, 1, 16, (2, 1)), (1, 0, 1, 8, (1, 1))])
def test_phase_planes_are_read_in_place(kernel, padding, stride, width, layout, n, threads,
                                        rng):
    x = rng.normal(size=(n, 8, 12, width)).astype(np.float32)
    weight = rng.normal(size=(8, 8, kernel, kernel)).astype(np.float32)
    run = direct.forward_runner(x.shape, weight, None, (padding, padding), threads, None,
                                (stride, stride))
    want = run(x)
    np.testing.assert_allclose(want, conv2d_reference(
        x.astype(np.float64), weight.astype(np.float64), None, (stride, stride),
        (padding, padding)), rtol=1e-4, atol=1e-3)
    stored = stored_layout(x, layout)
    out = np.full(run.out_shape, np.nan, np.float32)
    direct.run_chain([(run, stored, out, None, (layout, (0, 0), (0, 0)))], threads)
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_chain_through_phase_planes_equals_plain_convs(threads, rng):
    """A ResNet transition: a block's last conv writes the phase planes that the next
    block's 3x3 stride-2 conv and its 1x1 stride-2 shortcut both read in place; the
    3x3 conv's output is kept bordered for the conv after it, which adds the shortcut.
    Run after run, bitwise the plain chain, the borders staying zero."""
    x = rng.normal(size=(1, 8, 16, 32)).astype(np.float32)
    # the conv after takes fewer channels than Winograd's layers (a test of their own)
    weights = [rng.normal(size=shape).astype(np.float32) / 8 for shape in
               [(8, 8, 3, 3), (12, 8, 3, 3), (12, 8, 1, 1), (12, 12, 3, 3)]]
    last = direct.forward_runner(x.shape, weights[0], None, (1, 1), threads, 0.0)
    down = direct.forward_runner(x.shape, weights[1], None, (1, 1), threads, 0.0, (2, 2))
    shortcut = direct.forward_runner(x.shape, weights[2], None, (0, 0), threads, None, (2, 2))
    after = direct.forward_runner(down.out_shape, weights[3], None, (1, 1), threads, 0.0)
    plain = [np.empty(last.out_shape, np.float32)] + [
        np.empty(down.out_shape, np.float32) for _ in range(3)]
    direct.run_chain([(last, x, plain[0], x), (down, plain[0], plain[1]),
                      (shortcut, plain[0], plain[2]), (after, plain[1], plain[3], plain[2])],
                     threads)
    wide = [weight.astype(np.float64) for weight in weights]
    block = np.maximum(conv2d_reference(x.astype(np.float64), wide[0], None, (1, 1), (1, 1))
                       + x, 0)
    reference = np.maximum(conv2d_reference(
        np.maximum(conv2d_reference(block, wide[1], None, (2, 2), (1, 1)), 0), wide[3], None,
        (1, 1), (1, 1)) + conv2d_reference(block, wide[2], None, (2, 2), (0, 0)), 0)
    np.testing.assert_allclose(plain[3], reference, rtol=1e-4,
                               atol=1e-4 * np.abs(reference).max())
    phased, framed = (1, 1, 2, 2), (1, 1)
    stored = [stored_layout(np.zeros(last.out_shape, np.float32), phased),
              stored_layout(np.zeros(down.out_shape, np.float32), framed),
              np.empty(down.out_shape, np.float32), np.empty(down.out_shape, np.float32)]
    plain_layout = (0, 0)
    chain = direct.prepare_chain([
        (last, x, stored[0], x, (plain_layout, plain_layout, phased)),
        (down, stored[0], stored[1], None, (phased, plain_layout, framed)),
        (shortcut, stored[0], stored[2], None, (phased, plain_layout, plain_layout)),
        (after, stored[1], stored[3], stored[2], (framed, plain_layout, plain_layout))],
        threads)
    for _ in range(3):
        chain.run(x)
        np.testing.assert_array_equal(stored[3], plain[3])
        np.testing.assert_array_equal(stored[2], plain[2])
        for array, layout, want in [(stored[0], phased, plain[0]),
                                    (stored[1], framed, plain[1])]:
            padded = from_stored_layout(array, layout)
            np.testing.assert_array_equal(padded[:, :, 1:-1, 1:-1], want)
            padded[:, :, 1:-1, 1:-1] = 0
            assert not padded.any()


def test_phase_planes_are_checked(rng):
    x = rng.normal(size=(1, 4, 8, 16)).astype(np.float32)
    weight = rng.normal(size=(4, 4, 3, 3)).astype(np.float32)
    strided = direct.forward_runner(x.shape, weight, None, (1, 1), 2, None, (2, 2))
    plain = direct.forward_runner(x.shape, weight, None, (1, 1), 2)
    phased = (1, 1, 2, 2)
    stored = stored_layout(x, phased)
    # read in place only: by a conv of the planes' stride, padded at most as much, on a
    # dense grid
    with pytest.raises(ValueError, match="read in place only"):
        direct.run_chain([(plain, stored, np.zeros(plain.out_shape, np.float32), None,
                           (phased, (0, 0), (0, 0)))], 2)
    wide = direct.forward_runner((1, 4, 8, 12), weight, None, (1, 1), 2, None, (2, 2))
    with pytest.raises(ValueError, match="read in place only"):
        direct.run_chain([(wide, stored_layout(x[..., :12], phased),
                           np.zeros(wide.out_shape, np.float32), None,
                           (phased, (0, 0), (0, 0)))], 2)
    padded = direct.forward_runner(x.shape, weight, None, (2, 2), 2, None, (2, 2))
    with pytest.raises(ValueError, match="read in place only"):
        direct.run_chain([(padded, stored, np.zeros(padded.out_shape, np.float32), None,
                           (phased, (0, 0), (0, 0)))], 2)
    # planes that do not split the channels, a phased residual, a layout of 3 values
    with pytest.raises(ValueError, match="cannot be stored"):
        direct.run_chain([(strided, stored[:, :6], np.zeros(strided.out_shape, np.float32),
                           None, (phased, (0, 0), (0, 0)))], 2)
    out = np.zeros(plain.out_shape, np.float32)
    with pytest.raises(ValueError, match="residual cannot be stored in phase planes"):
        direct.run_chain([(plain, x, out, stored, ((0, 0), phased, (0, 0)))], 2)
    with pytest.raises(ValueError, match="3 layouts"):
        direct.run_chain([(plain, x, out, None, ((0, 0), (0, 0), (1, 1, 2)))], 2)
    # nor does a classifier head read phase planes
    chain = direct.prepare_chain([(plain, x, stored_layout(out, phased), None,
                                   ((0, 0), (0, 0), phased))], 2)
    with pytest.raises(ValueError, match="unbordered"):
        chain.set_head(np.zeros((1, 4), np.float32), np.zeros((3, 4), np.float32), None,
                       np.zeros((1, 3), np.float32))


def test_borders_are_checked(rng):
    x = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    run = direct.forward_runner(x.shape, rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
                                None, (1, 1), 2)
    out = np.zeros((2, 4, 8, 8), np.float32)
    with pytest.raises(ValueError, match="3 layouts"):
        direct.run_chain([(run, x, out, None, ((1, 1), (0, 0)))], 2)
    with pytest.raises(ValueError, match="cannot be stored with a border"):
        direct.run_chain([(run, x, out, None, ((5, 0), (0, 0), (0, 0)))], 2)
    with pytest.raises(ValueError, match="cannot be stored with a border"):
        direct.run_chain([(run, x, out, None, ((0, 0), (0, 0), (-1, 0)))], 2)
    # the interior, not the stored array, must be the conv's output
    with pytest.raises(ValueError, match="not the conv's output"):
        direct.run_chain([(run, x, out, None, ((0, 0), (0, 0), (1, 1)))], 2)
    pooled = run.pooled()
    with pytest.raises(ValueError, match="no borders"):
        direct.run_chain([(pooled, stored_layout(x, (1, 1)), np.zeros((2, 4, 4, 4), np.float32),
                           None, ((1, 1), (0, 0), (0, 0)))], 2)


def test_a_chain_refuses_outputs_and_residuals_of_the_wrong_shape(rng):
    x = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    run = direct.forward_runner(x.shape, rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
                                rng.normal(size=4).astype(np.float32), (1, 1), 2)
    with pytest.raises(ValueError, match="not the conv's output"):
        direct.run_chain([(run, x, np.zeros((2, 4, 7, 8), np.float32), None)], 2)
    with pytest.raises(ValueError, match="must match the conv's output"):
        direct.run_chain([(run, x, np.zeros((1, 4, 8, 8), np.float32), None)], 2)
    with pytest.raises(ValueError, match="must match the conv's output"):
        direct.run_chain([(run, x, np.zeros((2, 4, 8, 8), np.float32),
                           np.zeros((2, 4, 8, 7), np.float32))], 2)
    read_only = np.zeros((2, 4, 8, 8), np.float32)
    read_only.flags.writeable = False
    for bad_x, out in [(x.astype(np.float64), np.zeros((2, 4, 8, 8))),   # packed is float32
                       (x[:, :, :, ::-1], np.zeros((2, 4, 8, 8), np.float32)),
                       (x, np.zeros((2, 4, 8, 8), np.float32).transpose(0, 1, 3, 2)),
                       (x, read_only)]:
        with pytest.raises(ValueError, match="must be a C-contiguous"):
            direct.run_chain([(run, bad_x, out, None)], 2)
    with pytest.raises(TypeError, match="float32 or float64"):
        direct.run_chain([(run, x.astype(np.int32), read_only, None)], 2)
