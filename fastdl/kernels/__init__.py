"""Compute kernels: NumPy arrays in, NumPy arrays out; forward and backward side by side.

Nothing here knows about Tensors or autograd. One module per kernel family.
"""
import scipy.linalg.cython_blas  # noqa: F401  (the BLAS fastdl_ext calls, loaded to pin it)

from fastdl import runtime

runtime.pin_blas_to_one_thread()
