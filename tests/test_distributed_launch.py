"""Without ``distributed.init()``: single process without a launcher, MPI (or a clear
error) under one that started several ranks."""
import sys
import types

import numpy as np
import pytest

import fastdl
from fastdl import distributed, nn, optim
from fastdl.distributed import comm
from fastdl.train import Trainer

LAUNCHER_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "PMI_SIZE", "PMI_RANK",
                      "PMIX_RANK", "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK",
                      "MPI_LOCALNRANKS")


@pytest.fixture
def launcher(monkeypatch):
    """Set launcher variables (none to start with); restore the process group after."""
    for variable in LAUNCHER_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(comm, "_group", None)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    return monkeypatch


def _model():
    fastdl.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 2 * 2, 3))


def _every_helper():
    """Each entry point that consults the process group."""
    model = _model()
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    sync = distributed.SyncBatchNorm(2)
    return {"get_group": distributed.get_group,
            "get_rank": distributed.get_rank,
            "get_world_size": distributed.get_world_size,
            "is_main_process": distributed.is_main_process,
            "broadcast_parameters": lambda: distributed.broadcast_parameters(model),
            "average_gradients": lambda: distributed.average_gradients(optimizer),
            "DistributedSampler": lambda: distributed.DistributedSampler(10),
            "SyncBatchNorm": lambda: sync(fastdl.Tensor(np.ones((2, 2, 3, 3), np.float32))),
            "Trainer": lambda: Trainer(model, optimizer, nn.CrossEntropyLoss(),
                                       progress=False)}


def test_no_launcher_is_a_single_process_no_op(launcher):
    model = _model()
    before = [p.array.copy() for p in model.parameters()]
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    for p in model.parameters():
        p.grad = np.ones_like(p.array)
    distributed.broadcast_parameters(model)
    distributed.average_gradients(optimizer)
    for p, original in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.array, original)
        np.testing.assert_array_equal(p.grad, 1)
    sampler = distributed.DistributedSampler(10)
    assert (sampler.num_replicas, sampler.rank) == (1, 0)
    assert distributed.get_world_size() == 1 and distributed.is_main_process()
    assert Trainer(model, optimizer, nn.CrossEntropyLoss()).group is None
    assert comm._group is None   # nothing cached: a later init() still decides


@pytest.mark.parametrize("variable", ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE",
                                      "MV2_COMM_WORLD_SIZE"])
def test_a_launcher_with_one_rank_is_a_single_process(launcher, variable):
    launcher.setenv(variable, "1")
    launcher.setitem(sys.modules, "mpi4py", None)   # not even needed
    for name, use in _every_helper().items():
        use()
    assert distributed.get_world_size() == 1


@pytest.mark.parametrize("variable, value", [("OMPI_COMM_WORLD_SIZE", "2"), ("PMI_SIZE", "4"),
                                             ("MV2_COMM_WORLD_SIZE", "2"), ("PMIX_RANK", "0")])
def test_several_ranks_without_mpi4py_is_a_clear_error(launcher, variable, value):
    launcher.setenv(variable, value)
    launcher.setitem(sys.modules, "mpi4py", None)   # import mpi4py raises ImportError
    for name, use in _every_helper().items():
        with pytest.raises(ImportError, match=r"MPI launcher .*%s=%s.*mpi4py is not installed"
                           % (variable, value)):
            use()
        assert comm._group is None, name


class _FakeComm:
    def __init__(self, rank, size):
        self.rank, self.size = rank, size

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size


def _fake_mpi4py(monkeypatch, rank, size):
    mpi = types.SimpleNamespace(COMM_WORLD=_FakeComm(rank, size), SUM="sum", MAX="max",
                                MIN="min", IN_PLACE=None)
    package = types.ModuleType("mpi4py")
    package.MPI = mpi
    monkeypatch.setitem(sys.modules, "mpi4py", package)
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", mpi)


def test_several_ranks_join_mpi_on_first_use(launcher):
    launcher.setenv("OMPI_COMM_WORLD_SIZE", "2")
    _fake_mpi4py(launcher, rank=1, size=2)
    sampler = distributed.DistributedSampler(10)   # the first use, without init()
    assert (sampler.num_replicas, sampler.rank) == (2, 1)
    assert distributed.get_group() is distributed.init() is comm._group
    assert distributed.get_group().backend == "mpi" and not distributed.is_main_process()


def test_mpi_seeing_fewer_ranks_than_the_launcher_started_is_an_error(launcher):
    """mpi4py built against another MPI than the launcher: every rank a world of one."""
    launcher.setenv("PMI_SIZE", "2")
    _fake_mpi4py(launcher, rank=0, size=1)
    with pytest.raises(distributed.DistributedError, match="started 2 ranks .* MPI sees 1"):
        distributed.get_world_size()
    assert comm._group is None


def test_trainer_distributed_false_under_a_launcher_warns(launcher):
    launcher.setenv("OMPI_COMM_WORLD_SIZE", "2")
    launcher.setitem(sys.modules, "mpi4py", None)
    model = _model()
    with pytest.warns(RuntimeWarning, match="each rank trains alone"):
        trainer = Trainer(model, optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(),
                          distributed=False)
    assert trainer.group is None
