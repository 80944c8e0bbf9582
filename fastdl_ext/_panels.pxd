# cython: language_level=3
"""The GEMM on weights packed in panels of ``include/fastdl_panel_gemm.h`` (the pointwise
convs' register tiles), for the im2col forward by image items (conv.pyx) and Winograd's
16 products (winograd.pyx)."""
from fastdl_ext._blas cimport floating

cdef extern from "fastdl_panel_gemm.h":
    int _PANEL_ROWS "FASTDL_PW_ROWS"
    int panel_wide "fastdl_pw_wide"() noexcept nogil
    void _panel_gemm_float "fastdl_panel_gemm_float"(
        const float* packed, Py_ssize_t rows, Py_ssize_t depth, Py_ssize_t positions,
        Py_ssize_t images, const float* x, Py_ssize_t ldx, Py_ssize_t x_image_stride,
        float* out, Py_ssize_t ldout, Py_ssize_t out_image_stride, const float* bias,
        const float* residual, int activate, float slope, float* spill,
        int wide) noexcept nogil
    void _panel_gemm_double "fastdl_panel_gemm_double"(
        const double* packed, Py_ssize_t rows, Py_ssize_t depth, Py_ssize_t positions,
        Py_ssize_t images, const double* x, Py_ssize_t ldx, Py_ssize_t x_image_stride,
        double* out, Py_ssize_t ldout, Py_ssize_t out_image_stride, const double* bias,
        const double* residual, int activate, double slope, double* spill,
        int wide) noexcept nogil


cdef inline void panel_gemm(const floating* packed, Py_ssize_t rows, Py_ssize_t depth,
                            Py_ssize_t positions, Py_ssize_t images, const floating* x,
                            Py_ssize_t ldx, Py_ssize_t x_image_stride, floating* out,
                            Py_ssize_t ldout, Py_ssize_t out_image_stride,
                            const floating* bias, const floating* residual, bint activate,
                            double slope, floating* spill, int wide) noexcept nogil:
    """``fastdl_panel_gemm_<type>``: ``spill`` is ``depth * 64`` bytes of the caller's
    scratch, ``wide`` ``panel_wide()``."""
    if floating is float:
        _panel_gemm_float(packed, rows, depth, positions, images, x, ldx, x_image_stride,
                          out, ldout, out_image_stride, bias, residual, activate,
                          <float>slope, spill, wide)
    else:
        _panel_gemm_double(packed, rows, depth, positions, images, x, ldx, x_image_stride,
                           out, ldout, out_image_stride, bias, residual, activate, slope,
                           spill, wide)
