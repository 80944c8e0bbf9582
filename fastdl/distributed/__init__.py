"""Data-parallel training over MPI (mpi4py): one process per rank, gradients averaged.

Without an MPI launcher everything runs as a world of size 1, so code written
for several ranks runs unchanged in one process.
"""
from fastdl.distributed.comm import (DistributedError, get_group, get_rank, get_world_size,
                                     init, is_main_process, launched_by_mpi)
from fastdl.distributed.parallel import average_gradients, broadcast_parameters
from fastdl.distributed.sampler import DistributedSampler
from fastdl.distributed.sync_batchnorm import SyncBatchNorm

__all__ = ["DistributedError", "DistributedSampler", "SyncBatchNorm", "average_gradients",
           "broadcast_parameters", "get_group", "get_rank", "get_world_size", "init",
           "is_main_process", "launched_by_mpi"]
