"""Hostile plan files: every size is bounded before allocation, and any malformed file is a
ValueError, never another exception, a hang or gigabytes of memory."""
import json
import random
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

import fastdl
from fastdl import deploy
from fastdl.deploy import plan as plan_module
from fastdl.deploy._opgraph import ATTRIBUTES
from fastdl.models import lenet5, resnet20
from fastdl.safetensors_io import save_file

# the memory a hostile file may make a load + warmup take, beyond its limit: the file's
# bytes (read, parsed, copied) and the interpreter's own objects
_SLACK = 16 << 20


def _description(ops, input_shape, dtype="float32"):
    return {"format": "fastdl-plan", "version": 1, "input_shape": input_shape,
            "dtype": dtype, "ops": ops}


def _write(path, description, tensors=None):
    """A plan file as ``InferencePlan.save`` writes one, for any description."""
    save_file(tensors or {}, path, metadata={"fastdl.plan": json.dumps(description)})
    return path


def _write_raw(path, header, data=b""):
    """A safetensors file with any header (bytes or a JSON value)."""
    if not isinstance(header, bytes):
        header = json.dumps(header).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + data)
    return path


def _op(name, inputs, output, **attributes):
    return dict(op=name, inputs=inputs, output=output, **attributes)


def _pool(kind, index, kernel, stride=1, padding=0):
    extra = {"count_include_pad": True} if kind == "avg_pool2d" else {}
    return _op(kind, [index], index + 1, kernel_size=kernel, stride=stride, padding=padding,
               ceil_mode=False, **extra)


def _conv(index, weight="w", transposed=False, **attributes):
    base = dict(stride=[1, 1], padding=[0, 0], dilation=[1, 1], groups=1,
                weights={"weight": weight})
    if transposed:
        base["output_padding"] = [0, 0]
    else:
        base["negative_slope"] = None
    base.update(attributes)
    return _op("conv_transpose2d" if transposed else "conv2d", [index], index + 1, **base)


_ONE = {"w": np.ones((1, 1, 1, 1), np.float32)}

# small files that declare enormous buffers (the bytes a call at batch 1 would need)
HUGE = {
    # a 300-byte file whose global pool "upsamples" to 24000 x 24000: 2.3 GB, twice
    "adaptive_pool_2GB": ({}, _description(
        [_op("adaptive_avg_pool2d", [0], 1, output_size=[24000, 24000])], [1, 1, 1])),
    "adaptive_pool_32TiB": ({}, _description(
        [_op("adaptive_avg_pool2d", [0], 1, output_size=[1 << 22, 1 << 21])], [1, 1, 1])),
    "input_48GiB": ({}, _description(
        [_op("activation", [0], 1, kind="identity", negative_slope=None)],
        [3, 1 << 16, 1 << 16])),
    "input_1GiB_pooled": ({}, _description([_pool("avg_pool2d", 0, 1)], [1, 1 << 14, 1 << 14])),
    # a 4-byte weight, strided 2**20 apart: 4 TiB of output
    "conv_transpose_stride": (_ONE, _description(
        [_conv(0, transposed=True, stride=[1 << 20, 1 << 20])], [1, 2, 2])),
    "conv_padding_160GB": (_ONE, _description(
        [_conv(0, padding=[100000, 100000])], [1, 1, 1])),
    # 1000 pools of 1 MiB each: each op small, together 3 GiB
    "many_small_buffers": ({}, _description(
        [_pool("max_pool2d", i, 1) for i in range(1000)], [1, 512, 512])),
    "just_above_the_limit": ({}, _description(
        [_op("adaptive_avg_pool2d", [0], 1, output_size=[4096, 8192])], [1, 1, 1])),
}


def _plan_bytes(tmp_path):
    fastdl.manual_seed(0)
    plan = deploy.compile(lenet5(), np.zeros((1, 1, 28, 28), np.float32))
    path = tmp_path / "lenet.plan.safetensors"
    plan.save(path)
    return path


def _run_guarded(script, *args):
    """Run ``script`` in a child whose address space is capped at 512 MiB more than it
    takes once it has imported fastdl and run a LeNet plan (``args[0]``)."""
    prelude = textwrap.dedent("""\
        import json, resource, sys, tracemalloc
        import numpy as np
        from fastdl import deploy
        deploy.load(sys.argv[1], warmup=True)(np.zeros((2, 1, 28, 28), np.float32))
        size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) << 10
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        cap = size + (512 << 20) if hard == resource.RLIM_INFINITY else min(size + (512 << 20),
                                                                             hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
        """)
    child = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(script)]
                           + [str(arg) for arg in args], capture_output=True, text=True,
                           timeout=120)
    assert child.returncode == 0, child.stderr[-3000:]
    return json.loads(child.stdout.strip().splitlines()[-1])


def test_small_files_declaring_huge_buffers_are_refused_before_allocating(tmp_path):
    """Each file is refused with ValueError by the default limit, in a process whose
    address space could not hold what it asks for, and the load takes little memory."""
    paths = {}
    for name, (tensors, description) in HUGE.items():
        paths[name] = str(_write(tmp_path / (name + ".plan"), description, tensors))
    assert (tmp_path / "adaptive_pool_2GB.plan").stat().st_size < 400
    script = """
        results = {}
        for name, path in json.loads(sys.argv[2]).items():
            tracemalloc.start()
            try:
                deploy.load(path, warmup=True)
                outcome = "loaded"
            except ValueError as error:
                outcome = "ValueError: " + str(error)
            except BaseException as error:
                outcome = "%s: %s" % (type(error).__name__, error)
            results[name] = (outcome, tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        print(json.dumps(results))
        """
    results = _run_guarded(script, _plan_bytes(tmp_path), json.dumps(paths))
    for name, (outcome, peak) in results.items():
        assert outcome.startswith("ValueError: invalid inference plan"), (name, outcome)
        assert peak < 8 << 20, (name, peak)
    assert "max_bytes" in results["just_above_the_limit"][0]


def test_the_limit_is_a_keyword(tmp_path):
    tensors, description = HUGE["just_above_the_limit"]
    path = _write(tmp_path / "big.plan", description, tensors)
    with pytest.raises(ValueError, match="max_bytes=%d" % deploy.MAX_PLAN_BYTES):
        deploy.load(path)
    # trusted: a larger limit (or none) loads it; nothing is allocated without warmup
    for limit in (1 << 30, None):
        plan = deploy.load(path, max_bytes=limit)
        assert deploy.MAX_PLAN_BYTES < plan.call_bytes < 1 << 30
    with pytest.raises(TypeError, match="max_bytes"):
        deploy.load(path, max_bytes="1GB")


@pytest.mark.parametrize("model", ["lenet", "resnet20", "every_op"])
def test_call_bytes_bounds_what_a_warmup_takes(tmp_path, model):
    """The estimate the limit is checked against is an upper bound of the memory a
    warmup takes (prepared weights included), and not a loose one."""
    if model == "every_op":
        path = _every_op_plan(tmp_path / "every_op.plan")
        deploy.load(path, warmup=True)   # Numba's kernels compiled before measuring
    elif model == "lenet":
        path = _plan_bytes(tmp_path)
    else:
        fastdl.manual_seed(0)
        path = tmp_path / "resnet20.plan"
        deploy.compile(resnet20(), np.zeros((1, 3, 32, 32), np.float32)).save(path)
    plan = deploy.load(path)
    tracemalloc.start()
    plan.warmup()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak <= plan.call_bytes < 8 * peak
    with pytest.raises(ValueError, match="max_bytes"):
        deploy.load(path, max_bytes=plan.call_bytes - 1)
    deploy.load(path, max_bytes=plan.call_bytes, warmup=True)


def _deep(depth):
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("case", [
    "header_deep", "plan_deep", "plan_huge_int", "plan_too_many_digits", "plan_not_a_dict", "ops_not_a_list",
    "too_many_ops", "header_too_large", "tensor_dims_wrap", "tensor_dims_overflow",
    "tensor_dtype_list", "tensor_empty_huge_dims", "weights_not_a_dict", "unknown_role",
    "dangling_tensor", "stride_huge", "stride_string", "stride_bool", "groups_bool",
    "ceil_mode_string", "input_bool", "output_float", "start_dim_bool", "slope_bool",
    "slope_nan", "leaky_relu_without_slope", "empty_weight", "output_padding",
    "input_shape_nested", "input_shape_zero", "input_shape_huge", "dtype_mismatch",
    "kernel_size_nested", "truncated_data", "header_beyond_file", "version_bool",
    "parameters_missing", "parameters_extra", "parameters_nan", "parameters_short",
    "parameters_string", "hardtanh_reversed", "softplus_beta_zero", "activation_kind_list",
    "pad_mode_unknown", "pad_mode_list", "pad_reflect_too_wide", "pad_circular_too_wide",
    "pad_negative", "pad_huge", "pad_three", "prelu_weight_size", "prelu_weight_2d",
    "prelu_without_weight",
])
def test_malformed_files_raise_value_error_only(tmp_path, case):
    """One ValueError for each, at load, and with ``warmup`` no other exception."""
    weight = np.ones((2, 1, 3, 3), np.float32)
    tensors = {"w": weight, "b": np.zeros(2, np.float32)}
    conv = _conv(0, weights={"weight": "w", "bias": "b"})
    ops = [conv, _op("activation", [1], 2, kind="relu", negative_slope=None)]
    description = _description(ops, [1, 8, 8])
    path = tmp_path / "plan.safetensors"
    edits = {
        "plan_huge_int": lambda d: d.__setitem__("input_shape", [10 ** 300, 8, 8]),
        "plan_not_a_dict": lambda d: d.clear(),
        "ops_not_a_list": lambda d: d.__setitem__("ops", {"0": conv}),
        "too_many_ops": lambda d: d.__setitem__("ops", [conv] + [
            _op("activation", [i], i + 1, kind="identity", negative_slope=None)
            for i in range(1, deploy.MAX_OPS + 1)]),
        "weights_not_a_dict": lambda d: conv.__setitem__("weights", ["w", "b"]),
        "unknown_role": lambda d: conv["weights"].__setitem__("extra", "missing"),
        "dangling_tensor": lambda d: conv["weights"].__setitem__("bias", "missing"),
        "stride_huge": lambda d: conv.__setitem__("stride", [2 ** 70, 1]),
        "stride_string": lambda d: conv.__setitem__("stride", ["1", "1"]),
        "stride_bool": lambda d: conv.__setitem__("stride", [True, True]),
        "groups_bool": lambda d: conv.__setitem__("groups", True),
        "ceil_mode_string": lambda d: ops.__setitem__(1, dict(_pool("max_pool2d", 1, 2),
                                                              ceil_mode="no")),
        "kernel_size_nested": lambda d: ops.__setitem__(1, _pool("max_pool2d", 1, [[2], 2])),
        "input_bool": lambda d: ops[1].__setitem__("inputs", [True]),
        "output_float": lambda d: ops[1].__setitem__("output", 2.0),
        "start_dim_bool": lambda d: ops.__setitem__(1, _op("flatten", [1], 2,
                                                           start_dim=True)),
        "slope_bool": lambda d: conv.__setitem__("negative_slope", True),
        "slope_nan": lambda d: conv.__setitem__("negative_slope", float("nan")),
        "leaky_relu_without_slope": lambda d: ops[1].__setitem__("kind", "leaky_relu"),
        "output_padding": lambda d: ops.__setitem__(0, _conv(
            0, transposed=True, output_padding=[3, 0],
            weights={"weight": "w", "bias": "b"})) or tensors.__setitem__(
                "w", np.ones((1, 2, 3, 3), np.float32)),
        "input_shape_nested": lambda d: d.__setitem__("input_shape", [[1], 8, 8]),
        "input_shape_zero": lambda d: d.__setitem__("input_shape", [1, 0, 8]),
        "input_shape_huge": lambda d: d.__setitem__("input_shape", [1, 8, 2 ** 40]),
        "dtype_mismatch": lambda d: d.__setitem__("dtype", "float64"),
        "version_bool": lambda d: d.__setitem__("version", True),
        "empty_weight": lambda d: tensors.__setitem__("b", np.zeros(0, np.float32)),
        "parameters_missing": lambda d: ops[1].__setitem__("kind", "hardtanh"),
        "parameters_extra": lambda d: ops[1].__setitem__("parameters", [1.0]),
        "parameters_nan": lambda d: ops[1].update(kind="elu", parameters=[float("nan"), 1]),
        "parameters_short": lambda d: ops[1].update(kind="softplus", parameters=[1.0]),
        "parameters_string": lambda d: ops[1].update(kind="elu", parameters="1, 1"),
        "hardtanh_reversed": lambda d: ops[1].update(kind="hardtanh", parameters=[1, -1]),
        "softplus_beta_zero": lambda d: ops[1].update(kind="softplus", parameters=[0, 20]),
        "activation_kind_list": lambda d: ops[1].__setitem__("kind", ["relu"]),
        "pad_mode_unknown": lambda d: ops.__setitem__(1, _op("pad2d", [1], 2, mode="edge",
                                                             padding=[1, 1, 1, 1])),
        "pad_mode_list": lambda d: ops.__setitem__(1, _op("pad2d", [1], 2, mode=["reflect"],
                                                          padding=[1, 1, 1, 1])),
        "pad_reflect_too_wide": lambda d: ops.__setitem__(1, _op(
            "pad2d", [1], 2, mode="reflect", padding=[0, 0, 6, 0])),
        "pad_circular_too_wide": lambda d: ops.__setitem__(1, _op(
            "pad2d", [1], 2, mode="circular", padding=[7, 0, 0, 0])),
        "pad_negative": lambda d: ops.__setitem__(1, _op("pad2d", [1], 2, mode="constant",
                                                         padding=[-1, 0, 0, 0])),
        "pad_huge": lambda d: ops.__setitem__(1, _op("pad2d", [1], 2, mode="replicate",
                                                     padding=[1 << 24, 1 << 24, 0, 0])),
        "pad_three": lambda d: ops.__setitem__(1, _op("pad2d", [1], 2, mode="constant",
                                                      padding=[1, 1, 1])),
        "prelu_weight_size": lambda d: ops.__setitem__(1, _op("prelu", [1], 2, weights={
            "weight": "b3"})) or tensors.__setitem__("b3", np.ones(3, np.float32)),
        "prelu_weight_2d": lambda d: ops.__setitem__(1, _op("prelu", [1], 2, weights={
            "weight": "w"})),
        "prelu_without_weight": lambda d: ops.__setitem__(1, _op("prelu", [1], 2)),
    }
    if case in edits:
        edits[case](description)
        _write(path, description, tensors)
    elif case == "header_deep":
        _write_raw(path, ("{\"a\": %s}" % _deep(100000)).encode())
    elif case == "plan_too_many_digits":   # more than Python parses
        _write_raw(path, {"__metadata__": {"fastdl.plan": json.dumps(description).replace(
            '"input_shape": [1', '"input_shape": [' + "9" * 5000)}})
    elif case == "plan_deep":
        _write_raw(path, {"__metadata__": {"fastdl.plan": _deep(100000)}})
    elif case == "header_too_large":   # a valid plan, but a header past the limit
        save_file(tensors, path, metadata={"fastdl.plan": json.dumps(description),
                                           "pad": " " * deploy.MAX_PLAN_HEADER_BYTES})
    elif case == "truncated_data":
        _write(path, description, tensors)
        path.write_bytes(path.read_bytes()[:-8])
    elif case == "header_beyond_file":
        _write(path, description, tensors)
        raw = path.read_bytes()
        path.write_bytes((len(raw)).to_bytes(8, "little") + raw[8:])
    else:   # a tensor entry's shape or dtype
        entry = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
        if case == "tensor_dims_wrap":          # 2**32 * 2**32 wraps to 0 in int64
            entry.update(shape=[2 ** 32, 2 ** 32], data_offsets=[0, 0])
        elif case == "tensor_dims_overflow":
            entry.update(shape=[2 ** 64])
        elif case == "tensor_empty_huge_dims":
            entry.update(shape=[0, 2 ** 62], data_offsets=[0, 0])
        else:
            entry.update(dtype=["F32"])
        _write_raw(path, {"__metadata__": {"fastdl.plan": json.dumps(description)},
                          "w": entry}, bytes(16))
    with pytest.raises(ValueError):
        deploy.load(path, warmup=True)


# ------------------------------------------------------------------ property test
_JUNK = [None, True, False, 0, -1, 1, 2, 3, 5, 16, 28, 400, 4096, 2 ** 24 + 1, 2 ** 31,
         2 ** 63, 10 ** 30, -2 ** 63, 0.5, -1.5, float("nan"), float("inf"), "", "1", "relu",
         "leaky_relu", "conv2d", "linear", "flatten", "0.weight", "7.bias", [], [1], [0],
         [2, 2], [0, 0], [1, 1], [5, 5], [-1, 1], [1, 2 ** 40], [[2, 2]], ["2", "2"],
         [1, 28, 28], [1, 28, 1000], [3, 100, 100], {}, {"weight": "0.weight"},
         {"weight": "7.weight", "bias": "7.bias"}, {"scale": "0.bias", "shift": "0.bias"},
         [[[[[[]]]]]]]


_NAMES = ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias", "9.weight",
          "11.bias", "missing"] + list(plan_module.OPS) + list(plan_module.ACTIVATIONS)


def _plausible(value, rng):
    """A value of the same JSON type as ``value``, often one that validates."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        if rng.random() < 0.5:
            return max(0, value + rng.choice([-2, -1, 1, 2]))
        return rng.choice([0, 1, 1, 2, 2, 3, 4, 5, 8, 16, 28, 64, 120, 400, 1000])
    if isinstance(value, float):
        return rng.choice([0.0, 0.1, -2.0, 1e30])
    if isinstance(value, list):   # one element changed, or all
        if value and rng.random() < 0.5:
            i = rng.randrange(len(value))
            return value[:i] + [_plausible(value[i], rng)] + value[i + 1:]
        return [_plausible(v, rng) for v in value]
    if isinstance(value, str):
        return rng.choice(_NAMES)
    return rng.choice(_JUNK)


def _paths(node, prefix=()):
    """Every (container, key) pair in a JSON tree."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(
        node, list) else ()
    for key, value in items:
        yield node, key
        yield from _paths(value, prefix + (key,))


def _mutate(description, header, rng):
    """Apply one random edit to the plan description or the safetensors header."""
    choice = rng.random()
    ops = description.get("ops")
    if choice < 0.15 and isinstance(ops, list) and ops:
        action = rng.choice(["dup", "drop", "swap", "new"])
        i, j = rng.randrange(len(ops)), rng.randrange(len(ops))
        if action == "dup":
            ops.insert(j, json.loads(json.dumps(ops[i])))
        elif action == "drop":
            ops.pop(i)
        elif action == "swap":
            ops[i], ops[j] = ops[j], ops[i]
        else:
            kind = rng.choice(plan_module.OPS)
            attributes = {key: rng.choice(_JUNK) for key in ATTRIBUTES[kind]}
            ops.insert(j, _op(kind, [rng.randrange(j + 1)], j + 1, **attributes))
        return
    if choice < 0.25:
        entries = [value for key, value in header.items() if key != "__metadata__"]
        entry = rng.choice(entries)
        key = rng.choice(["shape", "dtype", "data_offsets"])
        entry[key] = rng.choice(_JUNK + ["F64", "F16", "I64", [4, 100]])
        return
    container, key = rng.choice(list(_paths(description)))
    if isinstance(container, dict) and rng.random() < 0.1:
        del container[key]
    elif rng.random() < 0.6:
        container[key] = _plausible(container[key], rng)
    else:
        container[key] = json.loads(json.dumps(rng.choice(_JUNK)))


def _every_op_plan(path):
    """A small plan with every kind of op (and a residual), saved to ``path``."""
    rng = np.random.default_rng(0)

    def normal(*shape):
        return rng.normal(size=shape).astype(np.float32)
    tensors = {"w1": normal(4, 2, 3, 3), "b1": normal(4), "scale": normal(4),
               "shift": normal(4), "w2": normal(4, 4, 3, 3), "wt": normal(4, 2, 2, 2),
               "w3": normal(5, 8), "b3": normal(5)}
    ops = [_conv(0, weights={"weight": "w1", "bias": "b1"}, padding=[1, 1],
                 negative_slope=0.0),
           _op("affine_channels", [1], 2, weights={"scale": "scale", "shift": "shift"}),
           _op("activation", [2], 3, kind="leaky_relu", negative_slope=0.1),
           dict(_conv(3, weights={"weight": "w2"}, padding=[1, 1]), inputs=[3, 1]),
           _op("max_pool2d", [4], 5, kernel_size=2, stride=None, padding=0, ceil_mode=False),
           _conv(5, weights={"weight": "wt"}, transposed=True, stride=[2, 2]),
           _op("avg_pool2d", [6], 7, kernel_size=[3, 3], stride=1, padding=1, ceil_mode=True,
               count_include_pad=False),
           _op("activation", [7], 8, kind="sigmoid", negative_slope=None),
           _op("pad2d", [8], 9, mode="reflect", padding=[1, 0, 2, 1]),
           _op("activation", [9], 10, kind="hardtanh", negative_slope=None,
               parameters=[-0.5, 0.75]),
           _op("prelu", [10], 11, weights={"weight": "slopes"}),
           _op("activation", [11], 12, kind="elu", negative_slope=None,
               parameters=[0.5, 1.25]),
           _op("activation", [12], 13, kind="softplus", negative_slope=None,
               parameters=[2.0, 1.0]),
           _op("activation", [13], 14, kind="gelu", negative_slope=None),
           _op("pad2d", [14], 15, mode="constant", padding=[0, 1, 0, 0])]
    index = len(ops)
    ops += [_op("adaptive_avg_pool2d", [index], index + 1, output_size=[2, 2]),
            _op("flatten", [index + 1], index + 2, start_dim=1),
            _op("linear", [index + 2], index + 3, negative_slope=None,
                weights={"weight": "w3", "bias": "b3"}),
            _op("activation", [index + 3], index + 4, kind="tanh", negative_slope=None)]
    tensors["slopes"] = normal(2)
    deploy.InferencePlan(ops, tensors, (2, 8, 8)).save(path)
    return path


@pytest.mark.parametrize("source", ["lenet", "every_op"])
def test_randomly_mutated_plans_load_and_run_or_raise_value_error(tmp_path, source):
    """Junk in any field of a saved plan, or in its tensors' entries: ``load`` with
    ``warmup`` either gives a plan that runs or raises ValueError, and never takes more
    memory than its ``max_bytes`` (here 32 MiB) and the file's own bytes."""
    limit = 32 << 20
    path = _plan_bytes(tmp_path) if source == "lenet" else _every_op_plan(
        tmp_path / "every_op.plan")
    deploy.load(path, warmup=True)   # kernels compiled (Numba's too) before measuring
    source = path.read_bytes()
    length = int.from_bytes(source[:8], "little")
    rng = random.Random(0)
    path = tmp_path / "mutant.plan"
    loaded = 0
    for trial in range(800):
        header = json.loads(source[8:8 + length])
        description = json.loads(header["__metadata__"]["fastdl.plan"])
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            _mutate(description, header, rng)
        header["__metadata__"]["fastdl.plan"] = json.dumps(description)
        _write_raw(path, header, source[8 + length:])
        # A mutant may need a kernel specialisation not compiled yet (another dtype or
        # layout): compile it unmeasured first, so the peak is the plan's, not Numba's.
        try:
            deploy.load(path, warmup=True, max_bytes=limit)
        except ValueError:
            pass
        tracemalloc.start()
        try:
            plan = deploy.load(path, warmup=True, max_bytes=limit)
        except ValueError:
            plan = None
        except Exception as error:
            raise AssertionError("trial %d: %s from %s" % (trial, type(error).__name__,
                                                          json.dumps(description))) from error
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert peak < limit + _SLACK, (trial, peak, description)
        if plan is not None:
            # the estimate held, with the file's bytes (read, parsed, copied) beside it
            assert peak <= plan.call_bytes + 4 * len(source) + (1 << 20), (trial, peak,
                                                                           description)
            loaded += 1
            out = plan(np.ones((2,) + plan.input_shape, plan.dtype))
            assert out.shape[0] == 2
    assert 25 < loaded < 775    # both outcomes were exercised
