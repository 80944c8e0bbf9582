"""``fastdl.save`` / ``fastdl.load``: state dicts as safetensors files, never pickle."""
import numpy as np

from fastdl.autograd import Tensor
from fastdl.safetensors_io import load_file, save_file


def save(state_dict, path):
    """Write a state dict (name → ndarray or Tensor) to ``path`` atomically, as safetensors.

    Raises
    ------
    TypeError
        For values that are not arrays of a supported dtype.
    """
    arrays = {}
    for name, value in state_dict.items():
        array = value.data if isinstance(value, Tensor) else value
        if not isinstance(array, np.ndarray):
            raise TypeError("save: %r is a %s, expected an ndarray or Tensor"
                            % (name, type(value).__name__))
        arrays[name] = array
    save_file(arrays, path, metadata={"format": "fastdl-state-dict"})


def load(path):
    """Read a state dict written by :func:`save` (any safetensors file).

    Returns
    -------
    dict of str to ndarray

    Raises
    ------
    ValueError
        If the file is not a valid safetensors file (truncated, corrupted,
        a pickle); nothing in it is executed.
    """
    return load_file(path)[0]
