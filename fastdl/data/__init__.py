"""Data: datasets, loaders, samplers, transforms and splits, as ``torch.utils.data``.

``fastdl.utils.data`` is the same module under PyTorch's path.
"""
from fastdl.data import transforms
from fastdl.data.collate import default_collate, default_convert
from fastdl.data.dataset import (ChainDataset, ConcatDataset, Dataset, IterableDataset, Subset,
                                 TensorDataset, random_split)
from fastdl.data.datasets import load_digits, load_npz
from fastdl.data.loader import DataLoader
from fastdl.data.samplers import (BatchSampler, ClassBalancedSampler, RandomSampler, Sampler,
                                  SequentialSampler, SubsetRandomSampler, WeightedRandomSampler,
                                  class_weights)
from fastdl.data.synthetic import make_shapes
from fastdl.data.split import kfold_split, stratified_split
from fastdl.data.transforms import Compose, Normalize, RandomCrop, RandomHorizontalFlip
from fastdl.data.workers import WorkerInfo, get_worker_info

__all__ = ["BatchSampler", "ChainDataset", "ClassBalancedSampler", "Compose", "ConcatDataset",
           "DataLoader", "Dataset", "IterableDataset", "Normalize", "RandomCrop",
           "RandomHorizontalFlip", "RandomSampler", "Sampler", "SequentialSampler", "Subset",
           "SubsetRandomSampler", "TensorDataset", "WeightedRandomSampler", "WorkerInfo",
           "class_weights", "default_collate", "default_convert", "get_worker_info",
           "kfold_split", "load_digits", "load_npz", "make_shapes", "random_split",
           "stratified_split", "transforms"]
