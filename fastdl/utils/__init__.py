"""Aliases at PyTorch's module paths (``torch.utils.data`` -> :mod:`fastdl.data`).

The real code lives in the fastdl modules; these names only let a program
written for PyTorch import from the paths it knows.
"""
from fastdl.utils import data

__all__ = ["data"]
