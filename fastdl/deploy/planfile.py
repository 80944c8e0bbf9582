"""The plan file: one safetensors file, the weights as its tensors, the op graph as JSON.

The header's ``"fastdl.plan"`` metadata is ``{"format": "fastdl-plan", "version": 1,
"input_shape": [C, H, W], "dtype": "float32", "ops": [...]}`` (ops as in ``_opgraph``),
and ``"outputs": [value ids]`` where the plan has several outputs.
A file may come from anywhere: nothing in it is executed or unpickled, and every size it
declares is checked before anything is allocated for it (the limits below).
"""
import json

from fastdl.deploy._opgraph import MAX_OPS, bounded_int, bounded_ints, check_outputs, fail
from fastdl.safetensors_io import load_file, save_file
from fastdl.shapes import is_int

FORMAT_VERSION = 1
#: The most memory, in bytes, ``load`` lets a plan file ask for: what one call at batch
#: 1 (``warmup``'s) holds by ``InferencePlan.call_bytes``' estimate — the input, every
#: intermediate and output value (the plan keeps a buffer per op), the copies its
#: kernels make and its prepared (packed) weights. ``load(path, max_bytes=...)`` raises
#: it; a call at batch N holds about N times the values.
MAX_PLAN_BYTES = 256 << 20
#: The largest JSON header a plan file may have: a plan of ``MAX_OPS`` ops takes about
#: 1 MiB, and the objects Python builds for hostile JSON take up to ~25 times its size.
MAX_PLAN_HEADER_BYTES = 4 << 20

__all__ = ["FORMAT_VERSION", "MAX_OPS", "MAX_PLAN_BYTES", "MAX_PLAN_HEADER_BYTES", "read_plan",
           "write_plan"]


def write_plan(path, ops, tensors, input_shape, dtype, outputs=None):
    """Write a plan's weights and JSON op list (and its ``outputs`` where not None) to one
    safetensors file, atomically."""
    description = {"format": "fastdl-plan", "version": FORMAT_VERSION,
                   "input_shape": list(input_shape), "dtype": str(dtype), "ops": ops}
    if outputs is not None:
        description["outputs"] = list(outputs)
    save_file(tensors, path, metadata={"fastdl.plan": json.dumps(description)})


def _description(path, metadata):
    """The plan description in a file's metadata, checked to be one of this format."""
    try:
        description = json.loads(metadata["fastdl.plan"])
    except KeyError:
        raise ValueError("%s is not a fastdl inference plan (no plan metadata)" % path) \
            from None
    except ValueError as error:   # JSONDecodeError, or an int of too many digits
        raise ValueError("%s: plan metadata is not JSON (%s)" % (path, error)) from None
    except RecursionError:
        raise ValueError("%s: plan metadata nests too deeply" % path) from None
    if not isinstance(description, dict) or description.get("format") != "fastdl-plan" \
            or not is_int(description.get("version")) \
            or description["version"] != FORMAT_VERSION:
        raise ValueError("%s: not a fastdl plan of format version %d" % (path,
                                                                         FORMAT_VERSION))
    return description


def read_plan(path, make_plan, max_bytes=MAX_PLAN_BYTES):
    """Read and validate a plan file: ``make_plan(ops, tensors, input_shape,
    max_bytes=max_bytes, dtype=..., outputs=...)`` (``InferencePlan``), checked to have
    the dtype the header names.

    Raises
    ------
    TypeError
        ``max_bytes`` is neither a positive int nor None.
    ValueError
        A truncated, corrupted or hostile file, or a plan ``make_plan`` refuses.
    """
    if max_bytes is not None and not bounded_int(max_bytes, 1, float("inf")):
        raise TypeError("InferencePlan.load: max_bytes must be a positive int or None, "
                        "got %r" % (max_bytes,))
    tensors, metadata = load_file(path, max_header_bytes=MAX_PLAN_HEADER_BYTES)
    description = _description(path, metadata)
    input_shape = bounded_ints(description.get("input_shape"), 3, "input_shape", 1)
    ops = description.get("ops")
    if isinstance(ops, list) and len(ops) > MAX_OPS:
        fail("%d ops, more than MAX_OPS=%d" % (len(ops), MAX_OPS))
    outputs = description.get("outputs")
    if outputs is not None:   # the ids are checked against the ops by make_plan
        check_outputs(outputs, MAX_OPS)
    try:
        dtype = description.get("dtype")
        plan = make_plan(ops, tensors, input_shape, max_bytes=max_bytes,
                         dtype=dtype if dtype in ("float32", "float64") else None,
                         outputs=outputs)
    except (TypeError, KeyError, IndexError, AttributeError, OverflowError,
            ZeroDivisionError, RecursionError) as error:
        # the checks above should leave nothing to get here: a last line
        fail("%s (%s)" % (error, type(error).__name__))
    if str(plan.dtype) != description.get("dtype"):
        fail("dtype %r in the header, %s in the tensors" % (description.get("dtype"),
                                                             plan.dtype))
    return plan
