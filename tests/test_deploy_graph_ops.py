"""The graph ops of inference plans (binary, concat, slice, reshape, transpose, resize,
softmax, group_norm, layer_norm) and plans of several outputs: each op against an
independent NumPy reference (``graph_reference``) and torch where installed, at batch
1, 3 and 7, in float32 and float64, through a plan file and from many threads; the
fusions never computing away or bordering a returned value; every malformed field
refused with a ValueError."""
import json

import numpy as np
import pytest

from fastdl import deploy
from fastdl.deploy.plan import InferencePlan
from fastdl.functional import interpolate
from fastdl.safetensors_io import save_file
from graph_reference import run_reference

DTYPES = [np.float32, np.float64]
BATCHES = [1, 3, 7]


def _op(name, inputs, output, **attributes):
    return dict(op=name, inputs=inputs, output=output, **attributes)


def _tolerance(dtype):
    return dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-12,
                                                                         atol=1e-12)


def _check(ops, shape, dtype, rng, tensors=None, outputs=None, batches=BATCHES):
    """Run a plan of ``ops`` on an input of ``shape`` (C, H, W) at each batch size and
    compare every output with the NumPy interpreter; returns the plan."""
    tensors = {name: array.astype(dtype) for name, array in (tensors or {}).items()}
    plan = InferencePlan(ops, tensors, shape, dtype=np.dtype(dtype).name, outputs=outputs)
    for batch in batches:
        x = rng.standard_normal((batch,) + shape).astype(dtype)
        got, expected = plan(x), run_reference(ops, tensors, x, outputs)
        if outputs is None:
            got, expected = (got,), (expected,)
        assert len(got) == len(expected)
        for array, reference in zip(got, expected):
            assert array.dtype == dtype and array.flags.c_contiguous
            np.testing.assert_allclose(array, reference, **_tolerance(dtype))
    return plan


# ----------------------------------------------------------------------- each op

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["add", "sub", "mul", "div"])
def test_binary_of_two_values_broadcasts_their_sample_axes(kind, dtype, rng):
    """An SE gate: (N, C, 1, 1) times (N, C, H, W), either way round, and a value with
    itself."""
    ops = [_op("adaptive_avg_pool2d", [0], 1, output_size=[1, 1]),
           _op("activation", [1], 2, kind="sigmoid", negative_slope=None),
           _op("binary", [0, 2], 3, kind=kind, reverse=False),
           _op("binary", [2, 3], 4, kind=kind, reverse=False),
           _op("binary", [4, 4], 5, kind=kind, reverse=False)]
    _check(ops, (3, 5, 4), dtype, rng, outputs=[3, 4, 5])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", ["add", "sub", "mul", "div"])
@pytest.mark.parametrize("other_shape", [(), (1,), (4,), (3, 1, 1), (1, 3, 5, 1), (5, 4)])
def test_binary_with_a_constant_broadcasts_it(other_shape, kind, reverse, dtype, rng):
    """The constant broadcasts against the value's full shape, never over the batch; a
    0-d or (1,) tensor is a scalar; ``reverse`` puts it first."""
    other = rng.uniform(0.5, 2, other_shape)   # away from 0: a divisor
    ops = [_op("binary", [0], 1, kind=kind, reverse=reverse, weights={"other": "c"})]
    _check(ops, (3, 5, 4), dtype, rng, {"c": np.asarray(other)})


def test_binary_with_a_constant_may_widen_the_value(rng):
    """(N, 1, H, W) + a (C, 1, 1) constant is (N, C, H, W)."""
    ops = [_op("slice", [0], 1, axis=1, start=1, stop=2, step=1),
           _op("binary", [1], 2, kind="add", reverse=False, weights={"other": "c"})]
    plan = _check(ops, (3, 5, 4), np.float64, rng, {"c": rng.standard_normal((6, 1, 1))})
    assert plan.shapes[2] == (1, 6, 5, 4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [1, 2, 3])
def test_concat_joins_values_along_an_axis(axis, dtype, rng):
    """Three values of one shape but the concatenated axis (slices of the input)."""
    slices = [_op("slice", [0], i + 1, axis=axis, start=start, stop=stop, step=step)
              for i, (start, stop, step) in enumerate([(0, 2, 1), (1, 4, 2), (0, 4, 1)])]
    ops = slices + [_op("concat", [1, 2, 3, 1], 4, axis=axis)]
    plan = _check(ops, (4, 5, 4), dtype, rng)
    assert plan.shapes[4][axis] == 2 + 2 + 4 + 2


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis, start, stop, step", [
    (1, 0, 6, 1), (1, 1, 5, 2), (1, 5, 6, 1), (2, 0, 7, 3), (2, 2, 7, 5), (3, 1, 4, 10)])
def test_slice_takes_every_step_th_index_of_a_range(axis, start, stop, step, dtype, rng):
    ops = [_op("slice", [0], 1, axis=axis, start=start, stop=stop, step=step)]
    plan = _check(ops, (6, 7, 4), dtype, rng)
    assert plan.shapes[1][axis] == len(range(start, stop, step))


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_channel_shuffle_as_reshape_transpose_reshape(dtype, rng):
    """ShuffleNet's shuffle of 6 channels in 2 groups, and a reshape to 2-D and back."""
    ops = [_op("reshape", [0], 1, shape=[2, 3, 5, 4]),
           _op("transpose", [1], 2, perm=[0, 2, 1, 3, 4]),
           _op("reshape", [2], 3, shape=[6, 5, 4]),
           _op("reshape", [3], 4, shape=[120]),
           _op("reshape", [4], 5, shape=[6, 20]),
           _op("transpose", [5], 6, perm=[0, 2, 1])]
    plan = _check(ops, (6, 5, 4), dtype, rng, outputs=[3, 4, 6])
    x = rng.standard_normal((3, 6, 5, 4)).astype(dtype)
    shuffled = x.reshape(3, 2, 3, 5, 4).swapaxes(1, 2).reshape(3, 6, 5, 4)
    np.testing.assert_array_equal(plan(x)[0], shuffled)


# the (mode, input size, output size or None, scale or None) of the resize tests
RESIZES = [(mode, size_in, size, scale) for mode in ("nearest", "nearest_exact", "bilinear",
                                                     "bicubic")
           for size_in, size, scale in [((5, 7), (9, 4), None), ((5, 7), (10, 21), None),
                                        ((3, 3), (7, 5), None), ((4, 6), (1, 1), None),
                                        ((5, 7), None, (1.5, 0.75)), ((5, 7), None, (2, 3)),
                                        ((6, 5), None, (0.5, 1.3))]]


def _resize_op(mode, size_in, size, scale, align_corners):
    if size is None:
        size = [int(np.floor(n * s)) for n, s in zip(size_in, scale)]
    return _op("resize", [0], 1, mode=mode, size=list(size), align_corners=align_corners,
               scale=None if scale is None else list(scale))


def _aligning(mode):
    return [False] if mode.startswith("nearest") else [False, True]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode, size_in, size, scale", RESIZES)
def test_resize_equals_interpolate_and_the_reference(mode, size_in, size, scale, dtype, rng):
    """The plan computes exactly ``fastdl.functional.interpolate`` (with ``size``, or
    with ``scale_factor`` whose coordinates use the factor), and matches the separable
    reference of torch's rules."""
    for align in _aligning(mode):
        op = _resize_op(mode, size_in, size, scale, align)
        plan = _check([op], (2,) + size_in, dtype, rng)
        x = rng.standard_normal((3, 2) + size_in).astype(dtype)
        keywords = dict(mode=mode.replace("_", "-"), align_corners=align if align else None)
        if scale is None:
            eager = interpolate(x, size=tuple(size), **keywords)
        else:
            eager = interpolate(x, scale_factor=tuple(scale), **keywords)
        np.testing.assert_array_equal(plan(x), eager.array)


@pytest.mark.parametrize("mode, size_in, size, scale", RESIZES)
def test_resize_equals_torch(mode, size_in, size, scale, rng):
    torch = pytest.importorskip("torch")
    for dtype in DTYPES:
        for align in _aligning(mode):
            op = _resize_op(mode, size_in, size, scale, align)
            plan = InferencePlan([op], {}, (3,) + size_in, dtype=np.dtype(dtype).name)
            x = rng.standard_normal((2, 3) + size_in).astype(dtype)
            keywords = dict(mode=mode.replace("_", "-"),
                            align_corners=align if not mode.startswith("nearest") else None)
            if scale is None:
                expected = torch.nn.functional.interpolate(torch.from_numpy(x),
                                                           size=tuple(size), **keywords)
            else:
                expected = torch.nn.functional.interpolate(
                    torch.from_numpy(x), scale_factor=tuple(float(s) for s in scale),
                    recompute_scale_factor=False, **keywords)
            np.testing.assert_allclose(plan(x), expected.numpy(), **_tolerance(dtype))


def test_the_resize_reference_is_not_interpolate():
    """The reference's rows sum to 1 and reproduce hand-computed taps (2 -> 3 bilinear,
    aligned: 0, 0.5, 1; not aligned: 0, 0.5, 1 after clamping at both ends)."""
    from graph_reference import resize_matrix
    np.testing.assert_allclose(resize_matrix("bilinear", 2, 3, True),
                               [[1, 0], [0.5, 0.5], [0, 1]])
    np.testing.assert_allclose(resize_matrix("bilinear", 2, 4, False),
                               [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    np.testing.assert_allclose(resize_matrix("nearest", 3, 2, False), [[1, 0, 0], [0, 1, 0]])
    np.testing.assert_allclose(resize_matrix("bicubic", 5, 9, False).sum(axis=1), 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("log", [False, True])
def test_softmax_along_each_axis(log, dtype, rng):
    ops = [_op("softmax", [0], 1, axis=1, log=log), _op("softmax", [0], 2, axis=2, log=log),
           _op("softmax", [0], 3, axis=3, log=log), _op("flatten", [0], 4, start_dim=1),
           _op("softmax", [4], 5, axis=1, log=log)]
    _check(ops, (3, 4, 5), dtype, rng, outputs=[1, 2, 3, 5])


def test_softmax_of_large_logits_does_not_overflow():
    plan = InferencePlan([_op("softmax", [0], 1, axis=1, log=False)], {}, (3, 1, 1))
    x = np.array([1000, 0, -1000], np.float32).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(plan(x).ravel(), [1, 0, 0], atol=1e-30)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("groups, affine", [(1, True), (2, False), (6, True), (3, True)])
def test_group_norm(groups, affine, dtype, rng):
    tensors = {"w": rng.standard_normal(6), "b": rng.standard_normal(6)} if affine else {}
    weights = {"weight": "w", "bias": "b"} if affine else {}
    ops = [_op("group_norm", [0], 1, groups=groups, eps=1e-5, weights=weights),
           _op("reshape", [0], 2, shape=[6, 5, 2, 2]),     # 5-D
           _op("group_norm", [2], 3, groups=groups, eps=0.5, weights=weights)]
    _check(ops, (6, 5, 4), dtype, rng, tensors, outputs=[1, 3])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("normalized_ndim", [1, 2, 3])
def test_layer_norm(normalized_ndim, dtype, rng):
    shape = (4, 5, 3)[3 - normalized_ndim:]
    tensors = {"w": rng.standard_normal(shape), "b": rng.standard_normal(shape)}
    ops = [_op("layer_norm", [0], 1, normalized_ndim=normalized_ndim, eps=1e-5,
               weights={"weight": "w", "bias": "b"}),
           _op("layer_norm", [0], 2, normalized_ndim=normalized_ndim, eps=0,
               weights={"bias": "b"})]
    _check(ops, (4, 5, 3), dtype, rng, tensors, outputs=[1, 2])


def test_norms_and_softmax_equal_torch(rng):
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    weight, bias = rng.standard_normal(6), rng.standard_normal(6)
    tensors = {"w": weight, "b": bias, "lw": rng.standard_normal((5, 4)),
               "lb": rng.standard_normal((5, 4))}
    ops = [_op("group_norm", [0], 1, groups=3, eps=1e-5, weights={"weight": "w", "bias": "b"}),
           _op("group_norm", [0], 2, groups=6, eps=1e-5),      # InstanceNorm2d
           _op("layer_norm", [0], 3, normalized_ndim=2, eps=1e-5,
               weights={"weight": "lw", "bias": "lb"}),
           _op("softmax", [0], 4, axis=1, log=False), _op("softmax", [0], 5, axis=3, log=True)]
    for dtype in DTYPES:
        plan = InferencePlan(ops, {k: v.astype(dtype) for k, v in tensors.items()}, (6, 5, 4),
                             outputs=[1, 2, 3, 4, 5])
        x = rng.standard_normal((3, 6, 5, 4)).astype(dtype)
        t = {k: torch.from_numpy(v.astype(dtype)) for k, v in tensors.items()}
        tx = torch.from_numpy(x)
        expected = [functional.group_norm(tx, 3, t["w"], t["b"], 1e-5),
                    functional.instance_norm(tx, eps=1e-5),
                    functional.layer_norm(tx, (5, 4), t["lw"], t["lb"], 1e-5),
                    functional.softmax(tx, 1), functional.log_softmax(tx, 3)]
        for got, want in zip(plan(x), expected):
            np.testing.assert_allclose(got, want.numpy(), **_tolerance(dtype))


# ------------------------------------------------------------------------ refusals
# input (4, 6, 6); value 1 a flatten (N, 144), value 2 a slice (N, 4, 3, 6)
_BASE = [_op("flatten", [0], 1, start_dim=1),
         _op("slice", [0], 2, axis=2, start=0, stop=3, step=1)]
_TENSORS = {"c3": np.ones((3, 1, 1)), "c4": np.ones((4, 1, 1)), "batch2": np.ones((2, 4, 1, 1)),
            "five": np.ones((1, 1, 1, 1, 1)), "w4": np.ones(4), "w3": np.ones(3),
            "w66": np.ones((6, 6)), "w6": np.ones(6), "empty": np.ones((0,))}


def _binary(inputs, **fields):
    return _op("binary", inputs, 3, **{"kind": "add", "reverse": False, **fields})


def _resize(**fields):
    return _op("resize", [0], 3, **{"mode": "bilinear", "size": [12, 12],
                                    "align_corners": False, "scale": None, **fields})


def _slice(**fields):
    return _op("slice", [0], 3, **{"axis": 1, "start": 0, "stop": 2, "step": 1, **fields})


MALFORMED = {
    "binary_unknown_kind": (_binary([0, 0], kind="pow"), "kind"),
    "binary_kind_list": (_binary([0, 0], kind=["add"]), "kind"),
    "binary_reverse_with_two_inputs": (_binary([0, 0], reverse=True), "reverse"),
    "binary_reverse_not_bool": (_binary([0], reverse=1, weights={"other": "c4"}), "reverse"),
    "binary_two_values_and_a_tensor": (_binary([0, 0], weights={"other": "c4"}), "tensor"),
    "binary_one_value_no_tensor": (_binary([0]), "tensor"),
    "binary_three_inputs": (_binary([0, 0, 0]), "inputs"),
    "binary_ranks_differ": (_binary([0, 1]), "rank"),
    "binary_values_do_not_broadcast": (_binary([0, 2]), "broadcast"),
    "binary_constant_does_not_broadcast": (_binary([0], weights={"other": "c3"}), "broadcast"),
    "binary_constant_over_the_batch": (_binary([0], weights={"other": "batch2"}), "first axis"),
    "binary_constant_of_more_axes": (_binary([0], weights={"other": "five"}), "axes"),
    "binary_constant_empty": (_binary([0], weights={"other": "empty"}), "empty"),
    "binary_unknown_role": (_binary([0], weights={"weight": "c4"}), "weights"),
    "concat_one_input": (_op("concat", [0], 3, axis=1), "inputs"),
    "concat_too_many_inputs": (_op("concat", [0] * 1025, 3, axis=1), "inputs"),
    "concat_axis_0": (_op("concat", [0, 0], 3, axis=0), "axis"),
    "concat_axis_ndim": (_op("concat", [0, 0], 3, axis=4), "axis"),
    "concat_axis_bool": (_op("concat", [0, 0], 3, axis=True), "axis"),
    "concat_shapes_differ": (_op("concat", [0, 2], 3, axis=1), "differ"),
    "concat_ranks_differ": (_op("concat", [0, 1], 3, axis=1), "differ"),
    "concat_later_value": (_op("concat", [0, 3], 3, axis=1), "earlier"),
    "slice_stop_past_the_end": (_slice(stop=5), "stop"),
    "slice_empty": (_slice(start=2, stop=2), "start"),
    "slice_negative_start": (_slice(start=-1), "start"),
    "slice_step_zero": (_slice(step=0), "step"),
    "slice_step_float": (_slice(step=1.0), "step"),
    "slice_axis_0": (_slice(axis=0), "axis"),
    "slice_axis_ndim": (_slice(axis=4), "axis"),
    "slice_extra_field": (_slice(clamp=True), "unexpected"),
    "reshape_product": (_op("reshape", [0], 3, shape=[4, 35]), "product"),
    "reshape_minus_one": (_op("reshape", [0], 3, shape=[-1, 36]), "shape"),
    "reshape_zero": (_op("reshape", [0], 3, shape=[0, 144]), "shape"),
    "reshape_too_many_axes": (_op("reshape", [0], 3, shape=[1] * 7 + [144]), "shape"),
    "reshape_not_a_list": (_op("reshape", [0], 3, shape="4, 36"), "shape"),
    "reshape_empty": (_op("reshape", [0], 3, shape=[]), "shape"),
    "transpose_not_a_permutation": (_op("transpose", [0], 3, perm=[0, 1, 1, 2]), "perm"),
    "transpose_moves_the_batch": (_op("transpose", [0], 3, perm=[1, 0, 2, 3]), "perm"),
    "transpose_too_short": (_op("transpose", [0], 3, perm=[0, 2, 1]), "perm"),
    "transpose_bools": (_op("transpose", [0], 3, perm=[0, True, 3, 2]), "perm"),
    "transpose_out_of_range": (_op("transpose", [0], 3, perm=[0, 1, 2, 4]), "perm"),
    "resize_unknown_mode": (_resize(mode="area"), "mode"),
    "resize_torch_mode_name": (_resize(mode="nearest-exact"), "mode"),
    "resize_align_corners_nearest": (_resize(mode="nearest", align_corners=True),
                                     "align_corners"),
    "resize_align_corners_not_bool": (_resize(align_corners=None), "align_corners"),
    "resize_size_not_floor_of_scale": (_resize(scale=[2.5, 2]), "floor"),
    "resize_scale_rounds_up": (_resize(size=[13, 12], scale=[2.1, 2]), "floor"),
    "resize_scale_nan": (_resize(scale=[float("nan"), 2]), "scale"),
    "resize_scale_zero": (_resize(scale=[0, 2]), "scale"),
    "resize_scale_negative": (_resize(scale=[-2, 2]), "scale"),
    "resize_scale_overflows": (_resize(scale=[1e308, 2]), "floor"),
    "resize_scale_one_entry": (_resize(scale=[2]), "scale"),
    "resize_scale_missing": (_op("resize", [0], 3, mode="nearest", size=[12, 12],
                                 align_corners=False), "missing"),
    "resize_size_zero": (_resize(size=[0, 12]), "size"),
    "resize_size_huge": (_resize(size=[1 << 25, 1]), "size"),
    "resize_not_4d": (_op("resize", [1], 3, mode="nearest", size=[2, 2], align_corners=False,
                          scale=None), "4-D"),
    "softmax_axis_0": (_op("softmax", [0], 3, axis=0, log=False), "axis"),
    "softmax_axis_ndim": (_op("softmax", [1], 3, axis=2, log=False), "axis"),
    "softmax_log_not_bool": (_op("softmax", [0], 3, axis=1, log="no"), "log"),
    "group_norm_groups_not_dividing": (_op("group_norm", [0], 3, groups=3, eps=1e-5), "groups"),
    "group_norm_groups_zero": (_op("group_norm", [0], 3, groups=0, eps=1e-5), "groups"),
    "group_norm_2d_input": (_op("group_norm", [1], 3, groups=1, eps=1e-5), "3 axes"),
    "group_norm_eps_negative": (_op("group_norm", [0], 3, groups=2, eps=-1e-5), "eps"),
    "group_norm_eps_nan": (_op("group_norm", [0], 3, groups=2, eps=float("nan")), "eps"),
    "group_norm_eps_inf": (_op("group_norm", [0], 3, groups=2, eps=float("inf")), "eps"),
    "group_norm_eps_string": (_op("group_norm", [0], 3, groups=2, eps="1e-5"), "eps"),
    "group_norm_weight_shape": (_op("group_norm", [0], 3, groups=2, eps=1e-5,
                                    weights={"weight": "w3"}), "weight"),
    "layer_norm_ndim_0": (_op("layer_norm", [0], 3, normalized_ndim=0, eps=1e-5),
                          "normalized_ndim"),
    "layer_norm_ndim_all": (_op("layer_norm", [0], 3, normalized_ndim=4, eps=1e-5),
                            "normalized_ndim"),
    "layer_norm_weight_shape": (_op("layer_norm", [0], 3, normalized_ndim=2, eps=1e-5,
                                    weights={"bias": "w6"}), "bias"),
    "layer_norm_eps_nan": (_op("layer_norm", [0], 3, normalized_ndim=2, eps=float("nan")),
                           "eps"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_graph_ops_are_refused(case, tmp_path):
    """Each as a ValueError naming the op and the field, built directly and loaded from a
    file."""
    op, fragment = MALFORMED[case]
    tensors = {name: array.astype(np.float32) for name, array in _TENSORS.items()}
    with pytest.raises(ValueError, match=r"invalid inference plan: .*op 2\b.*" + fragment):
        InferencePlan(_BASE + [op], tensors, (4, 6, 6))
    description = {"format": "fastdl-plan", "version": 1, "input_shape": [4, 6, 6],
                   "dtype": "float32", "ops": _BASE + [op]}
    path = tmp_path / "plan.safetensors"
    save_file(tensors, path, metadata={"fastdl.plan": json.dumps(description)})
    with pytest.raises(ValueError, match="invalid inference plan"):
        deploy.load(path, warmup=True)


def test_the_base_of_the_refusals_is_a_valid_plan():
    """Each refusal above changes one field of a plan that loads."""
    tensors = {name: array.astype(np.float32) for name, array in _TENSORS.items()}
    for op in (_binary([0], weights={"other": "c4"}), _op("concat", [0, 0], 3, axis=1),
               _slice(), _resize(), _resize(size=[12, 12], scale=[2, 2.0]),
               _op("group_norm", [0], 3, groups=2, eps=1e-5, weights={"weight": "w4"}),
               _op("layer_norm", [0], 3, normalized_ndim=2, eps=1e-5,
                   weights={"bias": "w66"})):
        plan = InferencePlan(_BASE + [op], tensors, (4, 6, 6))
        assert plan(np.ones((2, 4, 6, 6), np.float32)).shape[0] == 2
