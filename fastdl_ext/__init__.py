"""Compiled (Cython, OpenMP) kernels of fastdl. Imported only by ``fastdl.kernels`` modules."""
