"""Compute kernels: NumPy arrays in, NumPy arrays out; forward and backward side by side.

Nothing here knows about Tensors or autograd. One module per kernel family.
"""
from fastdl import runtime

runtime.configure_compute_process()   # before OpenMP loads with the compiled kernels

import scipy.linalg.cython_blas  # noqa: E402,F401  (the BLAS fastdl_ext calls, pinned next)

runtime.pin_blas_to_one_thread()
