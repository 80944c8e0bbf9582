"""Run under ``mpiexec -n 2``: 2 ranks x batch 32 must equal 1 process x batch 64.

Rank 0 also trains the single-process reference on the same samples and
compares the parameters after 20 steps (with plain BN the reference, with
SyncBatchNorm the two ranks).
"""
import sys

import numpy as np

import fastdl
from fastdl import distributed, nn, optim
from fastdl import functional as F


def make_model(batch_norm):
    fastdl.manual_seed(0)
    layers = [nn.Conv2d(1, 4, 3, padding=1)]
    if batch_norm is not None:
        layers.append(batch_norm(4))
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)]
    return nn.Sequential(*layers).double()


def train(model, batches):
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    group = distributed.get_group()
    for x, y in batches:
        optimizer.zero_grad()
        F.cross_entropy(model(fastdl.Tensor(x)), y).backward()
        distributed.average_gradients(optimizer, group)
        optimizer.step()
    return model


def main():
    group = distributed.init()
    assert group.size == 2, "run with mpiexec -n 2"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20 * 64, 1, 8, 8))
    y = rng.integers(0, 3, size=20 * 64)
    steps = [(x[64 * s:64 * s + 64], y[64 * s:64 * s + 64]) for s in range(20)]
    shard = [(bx[32 * group.rank:32 * group.rank + 32], by[32 * group.rank:32 * group.rank + 32])
             for bx, by in steps]
    failures = []
    for label, sync_class, plain_class in (("no BN", None, None),
                                           ("SyncBatchNorm", distributed.SyncBatchNorm,
                                            nn.BatchNorm2d)):
        model = make_model(sync_class)
        distributed.broadcast_parameters(model)
        train(model, shard)
        if group.rank == 0:
            # the reference sees the whole batch in one process (a world of size 1)
            reference = make_model(plain_class)
            optimizer = optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
            for bx, by in steps:
                optimizer.zero_grad()
                F.cross_entropy(reference(fastdl.Tensor(bx)), by).backward()
                optimizer.step()
            for (name, ours), theirs in zip(model.state_dict().items(),
                                            reference.state_dict().values()):
                if not np.allclose(ours, theirs, rtol=1e-5, atol=1e-8):
                    failures.append("%s: %s differs by %.3g" % (
                        label, name, np.abs(ours - theirs).max()))
        # every rank ends with the same parameters
        first = model.state_dict()["0.weight"].numpy().copy()
        distributed.get_group().broadcast_(first)
        if not np.array_equal(first, model.state_dict()["0.weight"]):
            failures.append("%s: ranks disagree" % label)
    verdict = np.array([len(failures)], dtype=np.float64)
    group.allreduce_(verdict)
    if group.rank == 0:
        print("\n".join(failures) or "data-parallel OK")
    return 1 if verdict[0] else 0


if __name__ == "__main__":
    sys.exit(main())
