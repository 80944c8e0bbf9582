"""Production inference: conv–BN fusion, compiled inference plans, safe plan files.

    plan = fastdl.deploy.compile(model, example_input)   # eval-mode graph, fused
    plan(x)                                             # ndarray logits, thread-safe
    plan.save("model.plan.safetensors")
    plan = fastdl.deploy.load("model.plan.safetensors", warmup=True)
    plan = fastdl.deploy.from_onnx("model.onnx")       # a model trained elsewhere
    plan = fastdl.deploy.open_model(path)               # either, by the file's suffix

A service that only loads plans imports neither the layers (``fastdl.nn``) nor,
for plans of convolutions, dense layers, 2x2 max pools and global means, Numba:
those come in with ``compile`` and the fusion helpers, which take modules.

Plan files may come from anywhere: ``load`` checks every size one declares before it
allocates anything, and refuses (ValueError) a plan whose call at batch 1 — the one
``warmup`` makes — would hold more than ``MAX_PLAN_BYTES`` (256 MiB: input, every
intermediate and output value, kernel copies, prepared weights); pass ``max_bytes`` to
load a larger trusted plan. A file also may not hold more than ``MAX_OPS`` (4096) ops,
a header beyond ``MAX_PLAN_HEADER_BYTES`` (4 MiB) or an int beyond ``MAX_INT`` (2**24),
and its weights must be in its own bytes.
"""
import os

import numpy as np

from fastdl.deploy.fusion import (fuse_conv_bn, fuse_conv_bn_weights, fuse_linear_bn,
                                  fuse_linear_bn_weights)
from fastdl.deploy.plan import (MAX_INT, MAX_OPS, MAX_PLAN_BYTES, MAX_PLAN_HEADER_BYTES,
                                InferencePlan)


def compile(model, example_input, max_shapes=4):
    """Compile ``model`` (evaluated in eval mode) for inputs shaped like ``example_input``.

    Parameters
    ----------
    model : nn.Module
        One of the classes with a lowering (fastdl.nn's layers, Sequential, BasicBlock,
        the model zoo's ResNet; ``compiler.register_lowering``) is compiled by that
        lowering; any other (a user's Module, a custom forward) by a trace of its
        eval-mode forward (``deploy.graph_lowering``), and so is a model of fastdl's
        containers that holds such a module: the ops it runs must be ones a plan runs,
        in a sequence that does not depend on the input.
    example_input : ndarray or Tensor (N, C, H, W)
        Fixes (C, H, W) and the dtype; the batch size may vary later.

    Returns
    -------
    InferencePlan
        Or, for a ``models.CascadeDetector``, a ``deploy.cascade.CompiledCascade``:
        plans up to its NMS.

    Raises
    ------
    ValueError
        Naming the module that cannot be compiled.
    """
    from fastdl.deploy.compiler import NoLowering, build_graph, lowers
    from fastdl.deploy.graph_lowering import compile_traced
    example = np.asarray(getattr(example_input, "array", example_input))
    if example.ndim != 4:
        raise ValueError("deploy.compile: example_input must be (N, C, H, W), got shape %s"
                         % (example.shape,))
    from fastdl.models.cascade import CascadeDetector
    if isinstance(model, CascadeDetector):
        from fastdl.deploy.cascade import compile_cascade
        return compile_cascade(model, example, max_shapes)
    if not lowers(model):
        # a class without a lowering (a user's Module, a custom forward): by its trace
        return compile_traced(model, example, max_shapes)
    try:
        ops, tensors = build_graph(model, example.shape[1:])
    except NoLowering as error:
        # a user's module inside fastdl's containers: the whole model by its trace, or,
        # where that fails too, the error that names the module without a lowering
        try:
            return compile_traced(model, example, max_shapes)
        except (ValueError, TypeError, RuntimeError):
            raise error from None
    # a plan without weights computes in the example's float dtype, as the model does
    dtype = example.dtype.name if not tensors and example.dtype.name in (
        "float32", "float64") else None
    return InferencePlan(ops, tensors, example.shape[1:], max_shapes, dtype=dtype).warmup()


def load(path, warmup=False, max_bytes=MAX_PLAN_BYTES):
    """Load a plan saved by ``InferencePlan.save`` (validated; no pickle, no user code).

    Any malformed or hostile file raises ValueError, before anything large is
    allocated: see ``InferencePlan.load``. ``max_bytes`` (default ``MAX_PLAN_BYTES``,
    256 MiB; None: no limit) bounds what a call at batch 1, ``warmup``'s, holds.
    """
    return InferencePlan.load(path, warmup, max_bytes)


def open_model(path, warmup=False, max_bytes=MAX_PLAN_BYTES):
    """The plan of a model file a service is handed: an ONNX model (a path ending in
    ``.onnx``, read by ``from_onnx``) or a plan file (``load``), validated either way.

    Parameters
    ----------
    path : str or os.PathLike
    warmup : bool
        Run the plan once at batch 1 before returning it.
    max_bytes : int or None
        As ``load``'s and ``from_onnx``'s.

    Raises
    ------
    ValueError
        A malformed or hostile file, or an ONNX node no plan op runs (named).
    """
    if os.fspath(path).lower().endswith(".onnx"):
        return from_onnx(path, max_bytes, warmup)
    return load(path, warmup, max_bytes)


def export_onnx(model_or_plan, example, path, opset=17):
    """Write ``model_or_plan`` (a module ``compile`` accepts, or an InferencePlan) as an
    ONNX model, atomically; see ``fastdl.deploy.onnx_export``. Needs the ``onnx``
    package."""
    from fastdl.deploy.onnx_export import export_onnx as export
    return export(model_or_plan, example, path, opset)


def from_onnx(source, max_bytes=MAX_PLAN_BYTES, warmup=False):
    """An InferencePlan of an ONNX model (a path or the file's bytes), for the ONNX ops
    the plan's ops run; anything else raises ValueError naming the node. Validated as a
    plan file is; see ``fastdl.deploy.onnx_import``. Needs the ``onnx`` package."""
    from fastdl.deploy.onnx_import import from_onnx as read
    return read(source, max_bytes, warmup)


__all__ = ["InferencePlan", "compile", "fuse_conv_bn", "fuse_linear_bn",
           "fuse_conv_bn_weights", "fuse_linear_bn_weights", "load", "MAX_PLAN_BYTES",
           "MAX_OPS", "MAX_PLAN_HEADER_BYTES", "MAX_INT", "export_onnx",
           "from_onnx", "open_model"]
