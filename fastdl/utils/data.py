"""``torch.utils.data``'s path for :mod:`fastdl.data` (the same objects, re-exported).

``from fastdl.utils.data import DataLoader, Dataset, TensorDataset, random_split``
gives fastdl's classes; ``DistributedSampler`` comes from
:mod:`fastdl.distributed`, loaded on first use.
"""
import importlib

from fastdl.data import *  # noqa: F401,F403 -- the alias is the point
from fastdl.data import __all__ as _data_names

__all__ = list(_data_names) + ["DistributedSampler"]


def __getattr__(name):
    if name == "DistributedSampler":
        return importlib.import_module("fastdl.distributed").DistributedSampler
    return getattr(importlib.import_module("fastdl.data"), name)
