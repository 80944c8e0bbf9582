# cython: language_level=3
"""In-place (leaky) ReLU over a contiguous run, for the fused conv epilogues.

Written as plain C in a form the compiler turns into vector masks: ``v if v > 0
else v * slope`` compiles to a data-dependent branch (IEEE trapping rules keep
the multiply conditional), mispredicted on half the elements (3× a LeNet conv's
own time). Here both selects pick ``v`` or 0 and the sum is exact; NaN goes to
the second term and stays NaN.
"""
from fastdl_ext._blas cimport floating

cdef extern from *:
    """
    #define FASTDL_LEAKY_RELU(name, type)                                              \
        static void name(type *restrict values, Py_ssize_t count, type slope) {        \
            for (Py_ssize_t i = 0; i < count; i++) {                                   \
                type v = values[i];                                                    \
                int positive = v > (type)0;                                            \
                values[i] = (positive ? v : (type)0) + slope * (positive ? (type)0 : v); \
            }                                                                          \
        }
    FASTDL_LEAKY_RELU(fastdl_leaky_relu_float, float)
    FASTDL_LEAKY_RELU(fastdl_leaky_relu_double, double)
    """
    void _leaky_relu_float "fastdl_leaky_relu_float"(float* values, Py_ssize_t count,
                                                     float slope) noexcept nogil
    void _leaky_relu_double "fastdl_leaky_relu_double"(double* values, Py_ssize_t count,
                                                       double slope) noexcept nogil


cdef inline void leaky_relu(floating* values, Py_ssize_t count, floating slope) noexcept nogil:
    """values[i] = values[i] if values[i] > 0 else slope * values[i] (0: ReLU)."""
    if floating is float:
        _leaky_relu_float(values, count, slope)
    else:
        _leaky_relu_double(values, count, slope)
