# cython: language_level=3
"""Pooling for inference plans: 2x2 max pooling (values only) and the global mean.

The two pools CNN heads and LeNet-style stems use, as compiled C loops: a plan
made only of convolutions, these pools and dense layers runs without Numba, so a
service neither imports it nor waits for its first dispatch at start-up (about a
second together). Training keeps the Numba kernels of ``fastdl.kernels.pool``,
which also return the argmax.
"""
from cython.parallel cimport prange
from libc.stdlib cimport free, malloc

cimport numpy as cnp

cnp.import_array()

from fastdl_ext._epilogue cimport mean
from fastdl_ext._arrays cimport _data, _dims, _float_type
from fastdl_ext._blas cimport floating

cdef extern from "fastdl_pool.h":
    enum:
        POOL_SCRATCH "FASTDL_POOL_SCRATCH"
    void _max_pool_rows_float "fastdl_max_pool_rows_float"(
        const float* x, float* out, float* scratch, Py_ssize_t first, Py_ssize_t end,
        int height, int out_h, int width, int out_w) noexcept nogil
    void _max_pool_rows_double "fastdl_max_pool_rows_double"(
        const double* x, double* out, double* scratch, Py_ssize_t first, Py_ssize_t end,
        int height, int out_h, int width, int out_w) noexcept nogil

cdef enum:
    # Input elements below which one thread pools alone: waking the team costs more
    # than pooling a LeNet-sized map (and as much as 64k values: 10-20 µs here).
    SERIAL_BELOW = 1 << 16


cdef inline void _max_pool_share(const floating* x, floating* out, floating* scratch,
                                 Py_ssize_t first, Py_ssize_t end, int height, int out_h,
                                 int width, int out_w) noexcept nogil:
    """Output rows [first, end) (row ``r`` is row ``r % out_h`` of plane ``r // out_h``)."""
    if floating is float:
        _max_pool_rows_float(x, out, scratch, first, end, height, out_h, width, out_w)
    else:
        _max_pool_rows_double(x, out, scratch, first, end, height, out_h, width, out_w)


cdef void _max_pool_rows(const floating* x, floating* out, floating* scratch,
                         Py_ssize_t per_thread, Py_ssize_t rows, int height, int out_h,
                         int width, int out_w, int threads) noexcept nogil:
    """All ``rows`` output rows, one contiguous share per thread (``per_thread``
    values of ``scratch`` each)."""
    cdef int thread
    if threads == 1:   # no parallel region to enter
        _max_pool_share(x, out, scratch, 0, rows, height, out_h, width, out_w)
        return
    for thread in prange(threads, num_threads=threads, schedule="static"):
        _max_pool_share(x, out, scratch + thread * per_thread, rows * thread // threads,
                        rows * (thread + 1) // threads, height, out_h, width, out_w)


def max_pool2d_2x2_into(x, out, int num_threads):
    """out (P, H // 2, W // 2) = the max of each 2x2 window of x (P, H, W), stride 2.

    A trailing odd row or column is left out (floor mode). NaN wins a window.
    float32 or float64, C-contiguous; ``out`` is overwritten.
    """
    cdef int typenum = _float_type("max_pool2d_2x2_into", x)
    cdef cnp.npy_intp* shape = _dims("max_pool2d_2x2_into", x, "x", 3, typenum, False)
    cdef cnp.npy_intp* pooled = _dims("max_pool2d_2x2_into", out, "out", 3, typenum, True)
    cdef int planes = shape[0], height = shape[1], width = shape[2]
    cdef int out_h = height // 2, out_w = width // 2
    cdef Py_ssize_t rows = <Py_ssize_t>planes * out_h
    cdef int threads = 1 if <Py_ssize_t>planes * height * width < SERIAL_BELOW \
        else max(1, num_threads)
    if pooled[0] != planes or pooled[1] != out_h or pooled[2] != out_w:
        raise ValueError("max_pool2d_2x2_into: out must be (%d, %d, %d) for x %s, got %s"
                         % (planes, out_h, out_w, (planes, height, width),
                            (pooled[0], pooled[1], pooled[2])))
    cdef void* source = _data(x)
    cdef void* target = _data(out)
    # scratch for every thread, taken here so that a failed allocation raises
    cdef Py_ssize_t per_thread = max(<Py_ssize_t>POOL_SCRATCH, 2 * <Py_ssize_t>out_w)
    cdef void* scratch = malloc(threads * per_thread * (4 if typenum == cnp.NPY_FLOAT32 else 8))
    if scratch == NULL:
        raise MemoryError()
    try:
        with nogil:
            if typenum == cnp.NPY_FLOAT32:
                _max_pool_rows(<const float*>source, <float*>target, <float*>scratch,
                               per_thread, rows, height, out_h, width, out_w, threads)
            else:
                _max_pool_rows(<const double*>source, <double*>target, <double*>scratch,
                               per_thread, rows, height, out_h, width, out_w, threads)
    finally:
        free(scratch)


cdef void _means(const floating* x, floating* out, Py_ssize_t planes, Py_ssize_t size,
                 int threads) noexcept nogil:
    cdef Py_ssize_t plane
    if threads == 1:
        for plane in range(planes):
            out[plane] = mean(x + plane * size, size)
        return
    for plane in prange(planes, num_threads=threads, schedule="static"):
        out[plane] = mean(x + plane * size, size)


def global_mean_into(x, out, int num_threads):
    """out (P,) = the mean of each row of x (P, S), summed in float64.

    float32 or float64, C-contiguous; ``out`` is overwritten.
    """
    cdef int typenum = _float_type("global_mean_into", x)
    cdef cnp.npy_intp* shape = _dims("global_mean_into", x, "x", 2, typenum, False)
    cdef cnp.npy_intp* means = _dims("global_mean_into", out, "out", 1, typenum, True)
    cdef Py_ssize_t planes = shape[0], size = shape[1]
    cdef int threads = 1 if planes * size < SERIAL_BELOW else max(1, num_threads)
    if means[0] != planes:
        raise ValueError("global_mean_into: out must have %d values for x %s, got %d"
                         % (planes, (planes, size), means[0]))
    if size == 0:
        raise ValueError("global_mean_into: x has no values to average, shape %s"
                         % ((planes, size),))
    cdef void* source = _data(x)
    cdef void* target = _data(out)
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            _means(<const float*>source, <float*>target, planes, size, threads)
        else:
            _means(<const double*>source, <double*>target, planes, size, threads)
