"""Data: datasets, batched loading, samplers for imbalance, augmentation, splits."""
from fastdl.data.dataset import Dataset, Subset, TensorDataset
from fastdl.data.datasets import load_digits, load_npz
from fastdl.data.loader import DataLoader
from fastdl.data.samplers import (ClassBalancedSampler, RandomSampler, SequentialSampler,
                                  WeightedRandomSampler, class_weights)
from fastdl.data.shapes import make_shapes
from fastdl.data.split import kfold_split, stratified_split
from fastdl.data.transforms import Compose, Normalize, RandomCrop, RandomHorizontalFlip

__all__ = ["ClassBalancedSampler", "Compose", "DataLoader", "Dataset", "Normalize",
           "RandomCrop", "RandomHorizontalFlip", "RandomSampler", "SequentialSampler",
           "Subset", "TensorDataset", "WeightedRandomSampler", "class_weights", "kfold_split",
           "load_digits", "load_npz", "make_shapes", "stratified_split"]
