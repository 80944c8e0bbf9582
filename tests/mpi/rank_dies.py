"""Run under ``mpiexec -n 2``: rank 1 dies mid-training; rank 0 must not hang."""
import os
import sys

import numpy as np

import fastdl
from fastdl import distributed, nn, optim
from fastdl import functional as F
from fastdl.train import save_checkpoint


def main(checkpoint):
    group = distributed.init()
    fastdl.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    rng = np.random.default_rng(group.rank)
    for step in range(10):
        if step == 3 and group.rank == 1:
            os._exit(3)           # a crash: no MPI_Finalize, no goodbye
        optimizer.zero_grad()
        x = rng.normal(size=(8, 1, 4, 4)).astype(np.float32)
        F.cross_entropy(model(fastdl.Tensor(x)), rng.integers(0, 3, 8)).backward()
        distributed.average_gradients(optimizer, group)
        optimizer.step()
        if group.rank == 0:
            save_checkpoint(checkpoint, model, optimizer, extra={"epoch": step})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
