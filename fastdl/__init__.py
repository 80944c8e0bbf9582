"""fastdl: fast CPU deep learning for convolutional networks.

Compiled kernels (Cython + BLAS for convolution, Numba for the rest) under a
small autograd and a PyTorch-shaped API.
"""
from fastdl import runtime  # first: configures Numba before it is imported
from fastdl.runtime import get_num_threads, set_num_threads
from fastdl.autograd import (Tensor, cat, enable_grad, is_grad_enabled, no_grad, stack,
                             tensor)
from fastdl.random import manual_seed
from fastdl import functional, nn, optim
from fastdl.serialization import load, save

__version__ = "0.1.0"

runtime.pin_blas_to_one_thread()  # after the kernels loaded SciPy's BLAS too
