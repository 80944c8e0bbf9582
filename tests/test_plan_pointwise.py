"""The pointwise/depthwise chain (kernels.pointwise) against the im2col and depthwise
kernels, and plans that run it against the same plans without it: random channel
counts, map sizes (positions that fill whole vectors and ones that do not), batch
sizes, float32 and float64; bitwise the same at 1 and 2 threads."""
import numpy as np
import pytest

import fastdl
from fastdl.deploy import _schedule
from fastdl.deploy.plan import InferencePlan
from fastdl.kernels import conv as conv_kernels
from fastdl.kernels import pointwise
from reference import conv2d_reference

TOLERANCE = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}


def _close(got, expected):
    scale = max(1.0, float(np.abs(expected).max()))
    assert np.abs(got - expected).max() <= TOLERANCE[got.dtype] * scale


def _random_layers(rng, channels, count, dtype):
    """``count`` random convs (pointwise or depthwise 3x3/5x5, stride 1 or 2), each
    ``(weight, bias, stride, padding, slope, residual_of)`` where ``residual_of`` is the
    index of an earlier layer output (-1: the input) added in the epilogue, or None."""
    layers, shapes = [], [channels]
    for index in range(count):
        c_in = shapes[-1]
        if rng.random() < 0.5:
            c_out = int(rng.integers(1, 40))
            weight = rng.standard_normal((c_out, c_in, 1, 1)).astype(dtype)
            stride, padding = (1, 1), (0, 0)
        else:
            kernel = int(rng.choice([3, 5]))
            multiplier = int(rng.choice([1, 1, 2]))
            c_out = c_in * multiplier
            weight = rng.standard_normal((c_out, 1, kernel, kernel)).astype(dtype)
            stride = (1, 1) if rng.random() < 0.7 else (2, 2)
            padding = (kernel // 2, kernel // 2)
        bias = rng.standard_normal(c_out).astype(dtype) if rng.random() < 0.7 else None
        slope = [None, 0.0, 0.1][int(rng.integers(3))]
        layers.append([weight, bias, stride, padding, slope, None])
        shapes.append(c_out)
    return layers


def _plain(x, layers):
    """The layers through conv_kernels.conv2d_forward, one after another."""
    values = [x]
    for weight, bias, stride, padding, slope, residual in layers:
        groups = 1 if weight.shape[1] == values[-1].shape[1] and weight.shape[2] == 1 else \
            values[-1].shape[1]
        values.append(conv_kernels.conv2d_forward(
            values[-1], weight, bias, stride, padding, 1, groups,
            residual=None if residual is None else values[residual + 1],
            negative_slope=slope))
    return values


def _chained(x, layers, threads):
    values = [x]
    steps = []
    for weight, bias, stride, padding, slope, residual in layers:
        groups = 1 if weight.shape[1] == values[-1].shape[1] and weight.shape[2] == 1 else \
            values[-1].shape[1]
        layer = pointwise.layer(values[-1].shape, weight, bias, stride, padding, (1, 1),
                                groups, slope, threads)
        assert layer is not None
        out = np.full(layer.out_shape, np.nan, x.dtype)
        steps.append(layer.step(values[-1], out,
                                None if residual is None else values[residual + 1]))
        values.append(out)
    chain = pointwise.prepare_chain(steps, threads)
    fresh = np.array(x)   # run reads its argument in place of the first input
    chain.run(fresh)
    first = [v.copy() for v in values[1:]]
    chain.run(fresh)      # a second run: the scratch kept its zero borders
    for a, b in zip(first, values[1:]):
        np.testing.assert_array_equal(a, b)
    return values


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chain_equals_plain_kernels_and_is_thread_independent(seed, dtype):
    rng = np.random.default_rng(seed)
    batch = int(rng.choice([1, 2, 7, 32] if seed % 4 else [32]))
    channels = int(rng.integers(1, 24))
    height, width = int(rng.integers(5, 19)), int(rng.integers(5, 19))
    if batch == 32:
        height, width = min(height, 9), min(width, 9)
    layers = _random_layers(rng, channels, int(rng.integers(1, 7)), dtype)
    x = rng.standard_normal((batch, channels, height, width)).astype(dtype)
    # a residual where an earlier output has the shape of this one's
    plain = _plain(x, layers)
    for index in range(len(layers)):
        same = [j for j in range(-1, index) if plain[j + 1].shape == plain[index + 1].shape]
        if same and rng.random() < 0.6:
            layers[index][5] = int(rng.choice(same))
    plain = _plain(x, layers)
    one, two = _chained(x, layers, 1), _chained(x, layers, 2)
    for expected, a, b in zip(plain[1:], one[1:], two[1:]):
        np.testing.assert_array_equal(a, b)
        _close(a, expected)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_narrow_tiles_as_on_hosts_without_avx512(seed, dtype, monkeypatch):
    """A chain made with ``WIDE`` 1 runs as it does where the CPU has no AVX-512: tiles of
    one vector and none of the AVX-512 depthwise loops (row loops, planes in registers,
    tap tables, flat loops). Here the same chains run both ways: equal to the plain
    kernels and to each other bit for bit, at 1 and 2 threads; MobileNet's map sizes
    (32, 16, 8, 4) and odd ones."""
    from fastdl_ext import pointwise as ext
    rng = np.random.default_rng(100 + seed)
    size = int(rng.choice([4, 8, 16, 32, 7, 13]))
    batch = int(rng.choice([1, 3] if size > 16 else [1, 3, 9]))
    channels = int(rng.integers(1, 24))
    x = rng.standard_normal((batch, channels, size, size)).astype(dtype)
    while True:   # layers the chain takes (a 5x5 window may not fit a 2x2 map)
        layers = _random_layers(rng, channels, int(rng.integers(2, 6)), dtype)
        plain = _plain(x, layers)
        if all(pointwise.layer(value.shape, weight, bias, stride, padding, (1, 1),
                               1 if weight.shape[2] == 1 else value.shape[1], slope, 1)
               is not None for value, (weight, bias, stride, padding, slope, _)
               in zip(plain, layers)):
            break
    # the independent reference: float64 NumPy convs, then bias, residual, activation
    values = [x.astype(np.float64)]
    for weight, bias, stride, padding, slope, residual in layers:
        groups = 1 if weight.shape[2] == 1 else values[-1].shape[1]
        value = conv2d_reference(values[-1], weight.astype(np.float64),
                                 None if bias is None else bias.astype(np.float64), stride,
                                 padding, (1, 1), groups)
        if residual is not None:
            value = value + values[residual + 1]
        if slope is not None:
            value = np.where(value > 0, value, slope * value)
        values.append(value)
    for got, expected in zip(plain[1:], values[1:]):
        scale = max(1.0, float(np.abs(expected).max()))
        assert np.abs(got - expected).max() <= 50 * TOLERANCE[got.dtype] * scale
    wide = {threads: _chained(x, layers, threads) for threads in (1, 2)}
    monkeypatch.setattr(ext, "WIDE", 1)
    for threads in (1, 2):
        narrow = _chained(x, layers, threads)
        for expected, got, first in zip(plain[1:], narrow[1:], wide[threads][1:]):
            _close(got, expected)
            np.testing.assert_array_equal(got, first)


def test_spill_after_depthwise_keeps_its_borders():
    """A pointwise conv on a map whose positions are not whole vectors (2x3) copies its
    last columns to the thread's scratch; that must not be a depthwise step's, whose
    zero border the next plane reads."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 8, 2, 3)).astype(np.float32)
    layers = [[rng.standard_normal((8, 1, 3, 3)).astype(np.float32), None, (1, 1), (1, 1),
               None, None],
              [rng.standard_normal((16, 8, 1, 1)).astype(np.float32), None, (1, 1), (0, 0),
               0.0, None],
              [rng.standard_normal((16, 1, 3, 3)).astype(np.float32), None, (1, 1), (1, 1),
               None, None]]
    plain = _plain(x, layers)
    for threads in (1, 2):
        for expected, got in zip(plain[1:], _chained(x, layers, threads)[1:]):
            _close(got, expected)


def test_depthwise_after_pointwise_runs_in_its_items():
    """A depthwise conv reading a pointwise conv's output alone runs in that conv's
    items (rows of whole maps); not where it adds that output as its residual too, has
    a channel multiplier, or the pointwise items split the positions."""
    rng = np.random.default_rng(1)
    cases = ((8, 1, False, 1), (8, 2, False, 0), (8, 1, True, 0), (20, 1, False, 0))
    for size, multiplier, add_input, fused in cases:
        x = rng.standard_normal((2, 6, size, size)).astype(np.float32)
        expand = pointwise.layer(x.shape, rng.standard_normal((12, 6, 1, 1)).astype(
            np.float32), None, (1, 1), (0, 0), (1, 1), 1, 0.0, 2)
        middle = np.empty(expand.out_shape, np.float32)
        depth = pointwise.layer(middle.shape, rng.standard_normal(
            (12 * multiplier, 1, 3, 3)).astype(np.float32), None, (1, 1), (1, 1), (1, 1),
            12, None, 2)
        out = np.empty(depth.out_shape, np.float32)
        chain = pointwise.prepare_chain(
            [expand.step(x, middle), depth.step(middle, out,
                                                middle if add_input else None)], 2)
        assert chain.fused == fused, (size, multiplier, add_input)
        chain.by_images = False
        chain.run(x)
        expected = conv_kernels.conv2d_forward(
            middle, depth.weight, None, (1, 1), (1, 1), 1, 12,
            residual=middle if add_input else None)
        _close(out, expected)


def test_layer_applies_to_pointwise_and_depthwise_only():
    w = np.ones((4, 4, 1, 1), np.float32)
    assert isinstance(pointwise.layer((1, 4, 5, 5), w, None, (1, 1), (0, 0), (1, 1), 1, None),
                      pointwise.PointwiseLayer)
    assert pointwise.layer((1, 4, 5, 5), w, None, (2, 2), (0, 0), (1, 1), 1, None) is None
    assert pointwise.layer((1, 4, 5, 5), w, None, (1, 1), (1, 1), (1, 1), 1, None) is None
    dw = np.ones((4, 1, 3, 3), np.float32)
    assert isinstance(pointwise.layer((1, 4, 5, 5), dw, None, (1, 1), (1, 1), (1, 1), 4,
                                      None), pointwise.DepthwiseLayer)
    assert pointwise.layer((1, 4, 5, 5), np.ones((4, 4, 3, 3), np.float32), None, (1, 1),
                           (1, 1), (1, 1), 1, None) is None


def test_chain_refuses_mismatched_arrays():
    x = np.zeros((1, 4, 5, 5), np.float32)
    layer = pointwise.layer(x.shape, np.ones((6, 4, 1, 1), np.float32), None, (1, 1),
                            (0, 0), (1, 1), 1, None)
    with pytest.raises(ValueError):
        pointwise.prepare_chain([layer.step(x, np.zeros((1, 5, 5, 5), np.float32))], 2)
    with pytest.raises(ValueError):
        pointwise.prepare_chain([layer.step(x, np.zeros((1, 6, 5, 5), np.float64))], 2)
    chain = pointwise.prepare_chain([layer.step(x, np.zeros((1, 6, 5, 5), np.float32))], 2)
    with pytest.raises(ValueError):
        chain.run(np.zeros((2, 4, 5, 5), np.float32))


# ------------------------------------------------------------------------ plans

def _conv(inputs, weight_name, bias_name, stride, padding, groups, slope):
    op = {"op": "conv2d", "inputs": inputs, "stride": list(stride), "padding": list(padding),
          "dilation": [1, 1], "groups": groups, "negative_slope": slope,
          "weights": {"weight": weight_name}}
    if bias_name is not None:
        op["weights"]["bias"] = bias_name
    return op


def _inverted_residual_plan(rng, dtype, channels, size, blocks):
    """A 3x3 stem, then MobileNetV2-like blocks (expand 1x1 + ReLU, depthwise 3x3 +
    ReLU, project 1x1 + residual where the shapes allow), a global average pool as an
    AveragePool over the whole map, flatten and linear."""
    tensors, ops = {}, []

    def add(name, shape):
        tensors[name] = (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(
            dtype)
        return name
    ops.append(_conv([0], add("stem.w", (channels, 3, 3, 3)), add("stem.b", (channels,)),
                     (1, 1), (1, 1), 1, 0.0))
    c, value, spatial = channels, 1, size
    for block in range(blocks):
        expand = c * int(rng.choice([2, 3, 6]))
        out = int(rng.integers(4, 20)) if rng.random() < 0.5 else c
        stride = 2 if rng.random() < 0.3 and spatial >= 4 else 1
        ops.append(_conv([value], add("e%d.w" % block, (expand, c, 1, 1)),
                         add("e%d.b" % block, (expand,)), (1, 1), (0, 0), 1, 0.0))
        ops.append(_conv([len(ops)], add("d%d.w" % block, (expand, 1, 3, 3)),
                         add("d%d.b" % block, (expand,)), (stride, stride), (1, 1), expand,
                         0.0))
        residual = [value] if stride == 1 and out == c else []
        ops.append(_conv([len(ops)] + residual, add("p%d.w" % block, (out, expand, 1, 1)),
                         add("p%d.b" % block, (out,)), (1, 1), (0, 0), 1, None))
        c, value, spatial = out, len(ops), (spatial - 1) // stride + 1
    if rng.random() < 0.5:
        ops.append({"op": "avg_pool2d", "inputs": [value], "kernel_size": [spatial, spatial],
                    "stride": [spatial, spatial], "padding": [0, 0], "ceil_mode": False,
                    "count_include_pad": True})
    else:
        ops.append({"op": "adaptive_avg_pool2d", "inputs": [value], "output_size": [1, 1]})
    ops.append({"op": "flatten", "inputs": [len(ops)], "start_dim": 1})
    ops.append({"op": "linear", "inputs": [len(ops)], "negative_slope": None,
                "weights": {"weight": add("fc.w", (10, c)), "bias": add("fc.b", (10,))}})
    for index, op in enumerate(ops):
        op["output"] = index + 1
    return ops, tensors


def _without_chain(monkeypatch):
    monkeypatch.setattr(_schedule.Scheduler, "_separable_layer", lambda self, i, b: None)
    monkeypatch.setattr(_schedule, "_global", lambda op, shape: False)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plan_with_chain_equals_plan_without(seed, dtype, monkeypatch):
    """The blocks and the classifier head (pool, flatten, linear) run as one chain after
    the stem; where the plan also returns the pool's output, the head stays apart."""
    rng = np.random.default_rng(100 + seed)
    size = int(rng.choice([4, 6, 8, 11]))
    ops, tensors = _inverted_residual_plan(rng, dtype, int(rng.integers(3, 17)), size,
                                           int(rng.integers(1, 5)))
    returned = [len(ops) - 2, len(ops)] if seed % 4 == 3 else None
    plan = InferencePlan(ops, tensors, (3, size, size), outputs=returned)
    program, _ = plan._program(1)
    assert len(program) == (2 if returned is None else 5)
    previous = fastdl.get_num_threads()
    outputs = {}
    try:
        for batch in (1, 2, 7, 32):
            x = rng.standard_normal((batch, 3, size, size)).astype(dtype)
            for threads in (1, 2):
                fastdl.set_num_threads(threads)
                fresh = InferencePlan(ops, tensors, (3, size, size), outputs=returned)
                outputs[batch, threads] = (x, fresh(x), fresh(x))
    finally:
        fastdl.set_num_threads(previous)
    with monkeypatch.context() as patch:
        _without_chain(patch)
        plain = InferencePlan(ops, tensors, (3, size, size), outputs=returned)
        assert len(plain._program(1)[0]) > 5
        for (batch, threads), (x, first, second) in outputs.items():
            expected = plain(x)
            for got, again, alone, want in zip(*((first, second, outputs[batch, 1][1],
                                                  expected) if returned else
                                                 ((first,), (second,),
                                                  (outputs[batch, 1][1],), (expected,)))):
                np.testing.assert_array_equal(got, again)
                np.testing.assert_array_equal(got, alone)
                _close(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depthwise_loops_by_map(dtype):
    """Where the CPU has AVX-512, 3x3 stride-1 same-size maps whose rows are one to four
    whole vectors, and 3x3 stride-2 maps whose output rows are one, run the row loops, 3x3 stride-1 4x4 and 8x8 maps the flat loops (their
    planes in registers), other planes whose output is at most two vectors (8x8 at
    stride 2) the tap tables, other stride-1 same-size maps of up to 256 values the
    flat loops, the rest the depthwise kernels' loops; all equal those."""
    rng = np.random.default_rng(3)
    lanes = 64 // np.dtype(dtype).itemsize
    for size, stride, kernel, multiplier in ((4, 1, 3, 1), (8, 2, 3, 2), (3, 1, 3, 1),
                                             (8, 1, 5, 1), (16, 1, 3, 2), (11, 1, 5, 1),
                                             (32, 1, 3, 1), (40, 1, 3, 1), (16, 2, 3, 1),
                                             (7, 2, 5, 1), (8, 1, 3, 1), (48, 1, 3, 2),
                                             (64, 1, 3, 1), (4, 1, 3, 2), (32, 2, 3, 2)):
        channels = 5
        x = rng.standard_normal((3, channels, size, size)).astype(dtype)
        weight = rng.standard_normal((channels * multiplier, 1, kernel, kernel)).astype(dtype)
        bias = rng.standard_normal(channels * multiplier).astype(dtype)
        residual = rng.standard_normal((3, channels * multiplier, size, size)).astype(
            dtype) if stride == 1 else None
        padding = (kernel // 2, kernel // 2)
        layer = pointwise.layer(x.shape, weight, bias, (stride, stride), padding, (1, 1),
                                channels, 0.0, 2)
        out_positions = layer.out_shape[2] * layer.out_shape[3]
        rows = pointwise.WIDE > 1 and kernel == 3 and (
            stride == 1 and size % lanes == 0 and size // lanes <= 4
            or stride == 2 and size == 2 * lanes)
        in_registers = not rows and stride == 1 and kernel == 3 and size in (4, 8)
        tables = (pointwise.WIDE > 1 and out_positions <= 2 * lanes and not rows
                  and not in_registers)
        flat = (pointwise.WIDE > 1 and not tables and not rows and stride == 1
                and size * size <= 256)
        outputs = []
        for threads in (1, 2):
            out = np.full(layer.out_shape, np.nan, dtype)
            chain = pointwise.prepare_chain([layer.step(x, out, residual)], threads)
            assert (chain.rows, chain.flat, chain.tables) == (
                int(rows), int(flat), int(tables)), (size, stride)
            chain.run(x)
            outputs.append(out)
        np.testing.assert_array_equal(outputs[0], outputs[1])
        _close(outputs[0], conv_kernels.conv2d_forward(
            x, weight, bias, (stride, stride), padding, 1, channels, residual=residual,
            negative_slope=0.0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_packed_columns_and_whole_images_change_nothing(dtype, monkeypatch):
    """A wide pointwise conv on a large map copies its tiles' columns (``PACK``), and a
    chain of many images runs image by image up to a conv with more channels than
    positions (``by_images``): the same bits as the plain tiles and the step-by-step
    run, at 1 and 2 threads."""
    from fastdl_ext import pointwise as ext
    rng = np.random.default_rng(7)
    x = rng.standard_normal((9, 24, 16, 17)).astype(dtype)
    layers = [[rng.standard_normal((144, 24, 1, 1)).astype(dtype),
               rng.standard_normal(144).astype(dtype), (1, 1), (0, 0), 0.0, None],
              [rng.standard_normal((144, 1, 3, 3)).astype(dtype), None, (1, 1), (1, 1),
               0.0, None],
              [rng.standard_normal((24, 144, 1, 1)).astype(dtype), None, (1, 1), (0, 0),
               None, -1],
              # more channels than positions: shared step by step from here on
              [rng.standard_normal((300, 24, 1, 1)).astype(dtype), None, (1, 1), (0, 0),
               0.0, None],
              [rng.standard_normal((300, 1, 3, 3)).astype(dtype), None, (1, 1), (1, 1),
               None, None]]
    plain = _plain(x, layers)
    results = []
    for pack in (True, False):
        monkeypatch.setattr(ext, "PACK", pack)
        for threads in (1, 2):
            for by_images in (True, False):
                values, steps = [x], []
                for weight, bias, stride, padding, slope, residual in layers:
                    groups = 1 if weight.shape[2] == 1 else values[-1].shape[1]
                    layer = pointwise.layer(values[-1].shape, weight, bias, stride, padding,
                                            (1, 1), groups, slope, threads)
                    values.append(np.full(layer.out_shape, np.nan, dtype))
                    steps.append(layer.step(values[-2], values[-1],
                                            None if residual is None else values[residual + 1]))
                chain = pointwise.prepare_chain(steps, threads)
                chain.by_images = by_images
                chain.run(x)
                results.append(values[1:])
    for result in results:
        for got, first, expected in zip(result, results[0], plain[1:]):
            np.testing.assert_array_equal(got, first)
            _close(got, expected)


def test_whole_map_average_pool_is_a_classifier_head(monkeypatch):
    """An average pool over the whole map after a chain of direct convs, then flatten
    and linear, runs in the chain as the global average pool's head does."""
    rng = np.random.default_rng(11)
    tensors = {name: (rng.standard_normal(shape) / 8).astype(np.float32) for name, shape in (
        ("a.w", (16, 3, 3, 3)), ("b.w", (16, 16, 3, 3)), ("fc.w", (10, 16)),
        ("fc.b", (10,)))}
    ops = [_conv([0], "a.w", None, (1, 1), (1, 1), 1, 0.0),
           _conv([1], "b.w", None, (1, 1), (1, 1), 1, 0.0),
           {"op": "avg_pool2d", "inputs": [2], "kernel_size": [8, 8], "stride": [8, 8],
            "padding": [0, 0], "ceil_mode": False, "count_include_pad": True},
           {"op": "flatten", "inputs": [3], "start_dim": 1},
           {"op": "linear", "inputs": [4], "negative_slope": None,
            "weights": {"weight": "fc.w", "bias": "fc.b"}}]
    for index, op in enumerate(ops):
        op["output"] = index + 1
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    plan = InferencePlan(ops, tensors, (3, 8, 8))
    assert len(plan._program(1)[0]) == 1
    got = plan(x)
    with monkeypatch.context() as patch:
        patch.setattr(_schedule, "_global", lambda op, shape: False)
        plain = InferencePlan(ops, tensors, (3, 8, 8))
        assert len(plain._program(1)[0]) == 4
        _close(got, plain(x))
