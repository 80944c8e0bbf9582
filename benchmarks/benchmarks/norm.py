"""asv benchmarks: ``fastdl.kernels.norm`` forward+backward at the BENCHMARKS.md shapes.

Every case runs once per library (``fastdl`` or the ``torch`` peer). asv times
each benchmark in its own process and ``setup`` imports only the library
being timed, so the two never share a process (nor an OpenMP runtime). Both
run with fastdl's thread count. ``setup`` calls the step once, so JIT
compilation is never timed.

``CASES`` and ``make_step(case, library)`` are also what a side-by-side
runner needs: build the step in a fresh process per library, call it once,
then time repeated calls (BENCHMARKS.md method).
"""
import numpy as np

from ._common import aligned_step, step_benchmark

# name -> (input shape, how the norm reduces: "batch", "group8", "layer", "instance")
CASES = {
    "batch_norm2d N32 C64 32x32": ((32, 64, 32, 32), "batch"),
    "group_norm G8 N32 C64 32x32": ((32, 64, 32, 32), "group8"),
    "layer_norm 4096x768": ((4096, 768), "layer"),
    "instance_norm2d N32 C64 32x32": ((32, 64, 32, 32), "instance"),
}


def _arrays(shape, kind):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32)
    grad_out = rng.standard_normal(shape, dtype=np.float32)
    param_shape = shape[-1:] if kind == "layer" else shape[1:2]
    return x, grad_out, np.ones(param_shape, np.float32), np.zeros(param_shape, np.float32)


def fastdl_step(shape, kind):
    """A closure running one fastdl forward+backward of the case."""
    from fastdl.kernels import norm
    x, grad_out, weight, bias = _arrays(shape, kind)
    running_mean, running_var = np.zeros(shape[1], np.float32), np.ones(shape[1], np.float32)
    forward_backward = {
        "batch": (lambda: norm.batch_norm_forward(x, weight, bias, running_mean, running_var,
                                                  True, 0.1, 1e-5),
                  lambda f: norm.batch_norm_backward(grad_out, x, f[1], f[2], weight, True)),
        "group8": (lambda: norm.group_norm_forward(x, 8, weight, bias),
                   lambda f: norm.group_norm_backward(grad_out, x, f[1], f[2], weight, 8)),
        "layer": (lambda: norm.layer_norm_forward(x, shape[-1:], weight, bias),
                  lambda f: norm.layer_norm_backward(grad_out, x, f[1], f[2], weight,
                                                     shape[-1:])),
        "instance": (lambda: norm.instance_norm_forward(x, None, None, weight, bias),
                     lambda f: norm.instance_norm_backward(grad_out, x, f[1], f[2], weight)),
    }
    forward, backward = forward_backward[kind]
    return lambda: backward(forward())


def torch_step(shape, kind):
    """The same forward+backward in torch (raises NotImplementedError without torch)."""
    try:
        import torch
    except ImportError:
        raise NotImplementedError("torch is not installed") from None
    functional = torch.nn.functional
    x, grad_out, weight, bias = (torch.from_numpy(a) for a in _arrays(shape, kind))
    x.requires_grad_(True)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    running_mean, running_var = torch.zeros(shape[1]), torch.ones(shape[1])
    forward = {
        "batch": lambda: functional.batch_norm(x, running_mean, running_var, weight, bias, True),
        "group8": lambda: functional.group_norm(x, 8, weight, bias),
        "layer": lambda: functional.layer_norm(x, shape[-1:], weight, bias),
        "instance": lambda: functional.instance_norm(x, weight=weight, bias=bias),
    }[kind]

    def step():
        x.grad = weight.grad = bias.grad = None
        forward().backward(grad_out)
    return step


def make_step(case, library):
    """Build the step of ``case`` for ``library``, with both libraries' threads aligned."""
    return aligned_step(fastdl_step, torch_step, CASES[case], library)


NormForwardBackward = step_benchmark(
    "NormForwardBackward", "Training-mode forward + backward (dx, dγ, dβ), float32.", CASES,
    make_step)
