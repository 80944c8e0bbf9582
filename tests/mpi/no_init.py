"""Run under ``mpiexec -n 2`` without ever calling ``distributed.init()``.

The helpers (broadcast_parameters, average_gradients, DistributedSampler,
SyncBatchNorm) and a default Trainer must join the MPI group on first use:
both ranks then hold the parameters of one process training on the global
batch. Each rank starts from different weights (seeded by its rank), so a
helper that stays single-process leaves rank 1 apart.
"""
import os
import sys

import numpy as np

import fastdl
from fastdl import distributed, nn, optim
from fastdl import functional as F
from fastdl.data import DataLoader, TensorDataset
from fastdl.train import Trainer

GLOBAL_BATCH, STEPS = 16, 3


def make_model(seed, batch_norm, double=True):
    fastdl.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), batch_norm(4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    return model.double() if double else model


def reference(x, y, double=True):
    """One process, plain BatchNorm, the global batches in order."""
    model = make_model(0, nn.BatchNorm2d, double)
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step in range(STEPS):
        batch = slice(GLOBAL_BATCH * step, GLOBAL_BATCH * (step + 1))
        optimizer.zero_grad()
        F.cross_entropy(model(fastdl.Tensor(x[batch])), y[batch]).backward()
        optimizer.step()
    return model.state_dict()


def with_helpers(x, y, rank):
    model = make_model(rank, distributed.SyncBatchNorm)
    distributed.broadcast_parameters(model)
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    # unshuffled: rank r holds samples r, r + 2, ...; its step-s chunk and the other
    # rank's make up the global batch s of the reference
    shard = distributed.DistributedSampler(len(x), shuffle=False).indices()
    local = GLOBAL_BATCH // distributed.get_world_size()
    for step in range(STEPS):
        batch = shard[local * step:local * (step + 1)]
        optimizer.zero_grad()
        F.cross_entropy(model(fastdl.Tensor(x[batch])), y[batch]).backward()
        distributed.average_gradients(optimizer)
        optimizer.step()
    return model.state_dict()


def with_trainer(x, y, rank):
    model = make_model(rank, distributed.SyncBatchNorm, double=False)  # x is float32 here
    trainer = Trainer(model, optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                      nn.CrossEntropyLoss(), progress=False)
    sampler = distributed.DistributedSampler(len(x), shuffle=False)
    local = GLOBAL_BATCH // distributed.get_world_size()
    trainer.fit(DataLoader(TensorDataset(x, y), local, sampler=sampler), epochs=1)
    return model.state_dict()


def main():
    size = int(os.environ.get("OMPI_COMM_WORLD_SIZE", os.environ.get("PMI_SIZE", "1")))
    assert size == 2, "run with mpiexec -n 2"
    rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK", "0")))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(GLOBAL_BATCH * STEPS, 1, 6, 6))
    y = rng.integers(0, 3, size=GLOBAL_BATCH * STEPS)
    failures = []
    for label, train, double, tolerance in (("helpers", with_helpers, True, 1e-7),
                                            ("Trainer", with_trainer, False, 1e-4)):
        data = x.astype(np.float64 if double else np.float32)   # loaders keep the dtype
        expected = reference(data, y, double)
        for (name, ours), theirs in zip(train(data, y, rank).items(), expected.values()):
            if not np.allclose(ours, theirs, rtol=tolerance, atol=tolerance * 1e-2):
                failures.append("rank %d, %s: %s differs from the global-batch run by %.3g"
                                % (rank, label, name, np.abs(ours - theirs).max()))
    from mpi4py import MPI   # only to gather the verdict, after every fastdl call
    every = MPI.COMM_WORLD.allgather(failures)
    if rank == 0:
        print("\n".join(sum(every, [])) or "no-init OK")
    return 1 if any(every) else 0


if __name__ == "__main__":
    sys.exit(main())
