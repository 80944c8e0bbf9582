"""asv benchmarks: ``fastdl.kernels.pool`` forward+backward at the BENCHMARKS.md shapes.

As in ``norm.py``: one case per library, each timed by asv in its own process
with fastdl's thread count, JIT warm-up in ``setup``.
"""
import numpy as np

from ._common import aligned_step, step_benchmark

# name -> (input shape, pooling op, op arguments)
CASES = {
    "max_pool2d 2x2 N32 C64 32x32": ((32, 64, 32, 32), "max", (2, 2, 0)),
    "max_pool2d 3x3 s2 p1 N32 C64 32x32": ((32, 64, 32, 32), "max", (3, 2, 1)),
    "avg_pool2d 2x2 N32 C64 32x32": ((32, 64, 32, 32), "avg", (2, 2, 0)),
    "adaptive_avg_pool2d 1 N32 C64 8x8": ((32, 64, 8, 8), "adaptive", (1,)),
}


def _arrays(shape):
    rng = np.random.default_rng(0)
    return rng.standard_normal(shape, dtype=np.float32)


def fastdl_step(shape, op, args):
    """A closure running one fastdl forward+backward of the case."""
    from fastdl.kernels import pool
    x = _arrays(shape)
    if op == "max":
        out, _ = pool.max_pool2d_forward(x, *args)
        grad_out = np.ones_like(out)

        def step():
            _, indices = pool.max_pool2d_forward(x, *args)
            pool.max_pool2d_backward(grad_out, indices, x.shape)
    elif op == "avg":
        grad_out = np.ones_like(pool.avg_pool2d_forward(x, *args))

        def step():
            pool.avg_pool2d_forward(x, *args)
            pool.avg_pool2d_backward(grad_out, x.shape, *args)
    else:
        grad_out = np.ones_like(pool.adaptive_avg_pool2d_forward(x, *args))

        def step():
            pool.adaptive_avg_pool2d_forward(x, *args)
            pool.adaptive_avg_pool2d_backward(grad_out, x.shape)
    return step


def torch_step(shape, op, args):
    """The same forward+backward in torch (raises NotImplementedError without torch)."""
    try:
        import torch
    except ImportError:
        raise NotImplementedError("torch is not installed") from None
    functional = torch.nn.functional
    x = torch.from_numpy(_arrays(shape)).requires_grad_(True)
    forward = {"max": functional.max_pool2d, "avg": functional.avg_pool2d,
               "adaptive": functional.adaptive_avg_pool2d}[op]
    grad_out = torch.ones_like(forward(x, *args))

    def step():
        x.grad = None
        forward(x, *args).backward(grad_out)
    return step


def make_step(case, library):
    """Build the step of ``case`` for ``library``, with both libraries' threads aligned."""
    return aligned_step(fastdl_step, torch_step, CASES[case], library)


PoolForwardBackward = step_benchmark("PoolForwardBackward", "Forward + backward (dx), float32.",
                                      CASES, make_step)
