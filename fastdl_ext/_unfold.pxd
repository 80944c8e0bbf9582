# cython: language_level=3
"""The stride-2 unfold and fold of ``include/fastdl_unfold.h`` (im2col's column matrix of
one whole image, through the even and odd halves of each padded row)."""
from fastdl_ext._blas cimport floating

cdef extern from "fastdl_unfold.h":
    ctypedef struct fastdl_unfold_geometry:
        Py_ssize_t channels, height, width, kernel_h, kernel_w, pad_h, pad_w, out_h, out_w
    Py_ssize_t fastdl_unfold_scratch(fastdl_unfold_geometry g) noexcept nogil
    void _unfold_s2_float "fastdl_unfold_s2_float"(
        float* image, fastdl_unfold_geometry g, float* cols, Py_ssize_t ld, float* scratch,
        int fold) noexcept nogil
    void _unfold_s2_double "fastdl_unfold_s2_double"(
        double* image, fastdl_unfold_geometry g, double* cols, Py_ssize_t ld,
        double* scratch, int fold) noexcept nogil


cdef inline void unfold_s2(floating* image, fastdl_unfold_geometry g, floating* cols,
                           Py_ssize_t ld, floating* scratch, bint fold) noexcept nogil:
    """cols[(c kH + i) kW + j, oy out_w + ox] = the padded pixel (2 oy + i, 2 ox + j) of
    channel c; with ``fold`` the adjoint, added into ``image``."""
    if floating is float:
        _unfold_s2_float(image, g, cols, ld, scratch, fold)
    else:
        _unfold_s2_double(image, g, cols, ld, scratch, fold)
