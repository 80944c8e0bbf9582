"""What a forked child does in test_fork.py: a training step and a deploy plan.

Both kinds of parallel code run with 2 threads (``NUMBA_NUM_THREADS=2`` in the
environment test_fork.py sets): Numba's ``prange`` kernels (batch norm, the
optimizer) on its OpenMP layer, and the compiled extension's OpenMP regions (the
convolutions, the plan's chains). A process started with ``FORK_WORKLOAD_WARM_UP=1``
runs it once at import, the way a preloaded module warms its kernels up, so that a
forkserver that preloads this module has used OpenMP before it forks.
"""
import os

import numpy as np

import fastdl
import fastdl.functional as F
from fastdl import deploy, optim
from fastdl.models import resnet8


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3, 16, 16)).astype(np.float32)
    y = rng.integers(0, 10, size=32)
    image = rng.normal(size=(32, 16, 32, 32)).astype(np.float32)
    kernel = rng.normal(size=(32, 16, 3, 3)).astype(np.float32)
    return x, y, image, kernel


def results(_=None):
    """A trained step's loss and weights, a plan's output and a conv's output."""
    x, y, image, kernel = _data()
    fastdl.manual_seed(0)
    model = resnet8(width=8)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(2):
        model.train()
        opt.zero_grad()
        loss = F.cross_entropy(model(fastdl.Tensor(x)), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.array))
    model.eval()
    plan = deploy.compile(model, x)
    out = {"loss": np.array(losses), "plan": plan(x),
           "conv": F.conv2d(image, kernel, padding=1).array}
    out.update(("param%d" % i, p.array.copy()) for i, p in enumerate(model.parameters()))
    return out


def threads_alive():
    """Threads of this process (OpenMP workers included)."""
    return len(os.listdir("/proc/self/task"))


if os.environ.get("FORK_WORKLOAD_WARM_UP") == "1":
    results()
