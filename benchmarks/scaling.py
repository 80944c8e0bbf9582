"""Data-parallel scaling of a ResNet-8 training step (batch 32 per rank).

    python benchmarks/scaling.py                 # 1 process
    mpiexec -n 2 python benchmarks/scaling.py    # 2 ranks

Prints step time, samples/s and the bytes each Allreduce moves, on rank 0.
"""
import sys
import time

import numpy as np

import fastdl
from fastdl import distributed, optim
from fastdl import functional as F
from fastdl.models import resnet8


def main(steps=30, batch=32):
    group = distributed.init()
    fastdl.manual_seed(0)
    model = resnet8()
    optimizer = optim.Adam(model.parameters())
    distributed.broadcast_parameters(model)
    rng = np.random.default_rng(group.rank)
    x = rng.standard_normal((batch, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    times, reduce_times = [], []
    for step in range(steps + 3):
        began = time.perf_counter()
        optimizer.zero_grad()
        F.cross_entropy(model(fastdl.Tensor(x)), y).backward()
        before_reduce = time.perf_counter()
        distributed.average_gradients(optimizer, group)
        reduce_times.append(time.perf_counter() - before_reduce)
        optimizer.step()
        times.append(time.perf_counter() - began)
    step_time = float(np.median(times[3:]))
    if group.rank == 0:
        print("ranks %d, threads/rank %d: step %.1f ms (allreduce %.2f ms, %.2f MB), "
              "%.0f samples/s" % (group.size, fastdl.get_num_threads(), step_time * 1e3,
                                  np.median(reduce_times[3:]) * 1e3,
                                  optimizer.flat_grads.nbytes / 1e6,
                                  group.size * batch / step_time))
    return 0


if __name__ == "__main__":
    sys.exit(main())
