# cython: language_level=3, boundscheck=False, wraparound=False
"""Depthwise convolution (groups == input channels), forward, input gradient and
weight gradient, as direct vector loops over (image, channel) planes.

The C is in ``include/fastdl_depthwise.h`` (see there for the layout). Here each
call checks its arrays, takes one scratch block per thread before the parallel
region, and hands the threads runs of whole output planes (forward), input planes
(input gradient) or output channels (weight gradient: each channel summed over all
images by one thread). The results are bitwise the same for any thread count.
"""
from cython.parallel cimport parallel, prange, threadid
from libc.stdlib cimport free

cimport numpy as cnp

cnp.import_array()

from fastdl_ext._arrays cimport _data, _dims, _float_type
from fastdl_ext._phases cimport _scratch, _whole_lines

cdef extern from "fastdl_depthwise.h":
    ctypedef struct Shape "fastdl_dw_shape":
        Py_ssize_t images, channels, multiplier, height, width, out_h, out_w
        int kernel, stride_h, stride_w, pad_h, pad_w
    Py_ssize_t _scratch_float "fastdl_dw_scratch_size_float"(const Shape* s) noexcept nogil
    Py_ssize_t _scratch_double "fastdl_dw_scratch_size_double"(const Shape* s) noexcept nogil
    void _forward_float "fastdl_dw_forward_float"(
        const Shape* s, const float* x, const float* weight, const float* bias,
        const float* residual, int activate, float slope, float* out, Py_ssize_t first,
        Py_ssize_t end, float* scratch) noexcept nogil
    void _forward_double "fastdl_dw_forward_double"(
        const Shape* s, const double* x, const double* weight, const double* bias,
        const double* residual, int activate, double slope, double* out, Py_ssize_t first,
        Py_ssize_t end, double* scratch) noexcept nogil
    void _grad_input_float "fastdl_dw_grad_input_float"(
        const Shape* s, const float* grad_out, const float* weight, float* grad_input,
        Py_ssize_t first, Py_ssize_t end, float* scratch) noexcept nogil
    void _grad_input_double "fastdl_dw_grad_input_double"(
        const Shape* s, const double* grad_out, const double* weight, double* grad_input,
        Py_ssize_t first, Py_ssize_t end, double* scratch) noexcept nogil
    void _grad_weight_float "fastdl_dw_grad_weight_float"(
        const Shape* s, const float* x, const float* grad_out, float* grad_weight,
        float* grad_bias, Py_ssize_t first, Py_ssize_t end, float* scratch) noexcept nogil
    void _grad_weight_double "fastdl_dw_grad_weight_double"(
        const Shape* s, const double* x, const double* grad_out, double* grad_weight,
        double* grad_bias, Py_ssize_t first, Py_ssize_t end, double* scratch) noexcept nogil

cdef enum:
    # Runs of planes (or channels) per thread: enough that a thread the machine's other
    # work delays is not waited for, few enough that each run is long.
    CHUNKS_PER_THREAD = 8
    FORWARD = 0
    GRAD_INPUT = 1
    GRAD_WEIGHT = 2


cdef Shape _shape(str op, object x, object weight, object grad_out, tuple stride,
                  tuple padding, int typenum) except *:
    """The geometry of one call, from x (or the input gradient), weight and grad_out
    (or the output), each checked C-contiguous of ``typenum``."""
    cdef cnp.npy_intp* dims = _dims(op, x, "input", 4, typenum, False)
    cdef cnp.npy_intp* taps = _dims(op, weight, "weight", 4, typenum, False)
    cdef cnp.npy_intp* out = _dims(op, grad_out, "output", 4, typenum, False)
    cdef Shape s
    s.images, s.channels, s.height, s.width = dims[0], dims[1], dims[2], dims[3]
    s.out_h, s.out_w = out[2], out[3]
    s.kernel = taps[2]
    s.stride_h, s.stride_w = stride
    s.pad_h, s.pad_w = padding
    s.multiplier = taps[0] // max(s.channels, 1)
    if (taps[1] != 1 or taps[2] != taps[3] or taps[2] not in (3, 5)
            or taps[0] != s.channels * s.multiplier or out[0] != s.images
            or out[1] != taps[0] or s.stride_h not in (1, 2) or s.stride_w not in (1, 2)
            or s.pad_h < 0 or s.pad_w < 0
            or (s.out_h - 1) * s.stride_h + s.kernel > s.height + 2 * s.pad_h
            or (s.out_w - 1) * s.stride_w + s.kernel > s.width + 2 * s.pad_w
            or s.out_h * s.stride_h + s.kernel <= s.height + 2 * s.pad_h
            or s.out_w * s.stride_w + s.kernel <= s.width + 2 * s.pad_w):
        raise ValueError("%s: not a depthwise 3x3/5x5 conv at stride 1 or 2: input %s, "
                         "weight %s, output %s, stride %s, padding %s"
                         % (op, x.shape, weight.shape, grad_out.shape, stride, padding))
    return s


cdef void _run(int kind, Shape* s, void* first, void* second, void* third, void* fourth,
               void* fifth, int activate, double slope, bint is_float, Py_ssize_t items,
               char* scratch, size_t per_thread, int threads) noexcept nogil:
    """Split ``items`` into CHUNKS_PER_THREAD * threads runs taken in turn (a thread
    that the machine's other work slows takes fewer); each thread in its scratch."""
    cdef Py_ssize_t chunks = min(items, <Py_ssize_t>threads * CHUNKS_PER_THREAD)
    cdef Py_ssize_t chunk
    cdef int thread
    with parallel(num_threads=threads):
        thread = threadid()
        for chunk in prange(chunks, schedule="dynamic"):
            _share(kind, s, first, second, third, fourth, fifth, activate, slope, is_float,
                   items * chunk // chunks, items * (chunk + 1) // chunks,
                   scratch + thread * per_thread)


cdef inline void _share(int kind, Shape* s, void* first, void* second, void* third,
                        void* fourth, void* fifth, int activate, double slope, bint is_float,
                        Py_ssize_t start, Py_ssize_t stop, char* scratch) noexcept nogil:
    if kind == FORWARD:
        if is_float:
            _forward_float(s, <float*>first, <float*>second, <float*>fourth, <float*>fifth,
                           activate, <float>slope, <float*>third, start, stop,
                           <float*>scratch)
        else:
            _forward_double(s, <double*>first, <double*>second, <double*>fourth,
                            <double*>fifth, activate, slope, <double*>third, start, stop,
                            <double*>scratch)
    elif kind == GRAD_INPUT:
        if is_float:
            _grad_input_float(s, <float*>first, <float*>second, <float*>third, start, stop,
                              <float*>scratch)
        else:
            _grad_input_double(s, <double*>first, <double*>second, <double*>third, start,
                               stop, <double*>scratch)
    else:
        if is_float:
            _grad_weight_float(s, <float*>first, <float*>second, <float*>third,
                               <float*>fourth, start, stop, <float*>scratch)
        else:
            _grad_weight_double(s, <double*>first, <double*>second, <double*>third,
                                <double*>fourth, start, stop, <double*>scratch)


cdef void _launch(int kind, Shape* s, void* first, void* second, void* third, void* fourth,
                  void* fifth, int activate, double slope, bint is_float, Py_ssize_t items,
                  int threads) except *:
    cdef size_t per_thread
    cdef void* allocated
    cdef char* scratch
    if items == 0:
        return
    threads = <int>max(1, min(threads, items))
    if is_float:
        per_thread = _whole_lines(sizeof(float) * _scratch_float(s))
    else:
        per_thread = _whole_lines(sizeof(double) * _scratch_double(s))
    scratch = _scratch(threads, per_thread, True, &allocated)   # zeroed: see the header
    with nogil:
        if threads == 1:   # no parallel region to enter
            _share(kind, s, first, second, third, fourth, fifth, activate, slope, is_float,
                   0, items, scratch)
        else:
            _run(kind, s, first, second, third, fourth, fifth, activate, slope, is_float,
                 items, scratch, per_thread, threads)
    free(allocated)


def depthwise_forward_into(x, weight, out, tuple stride, tuple padding, bias, residual,
                           bint activate, double slope, int num_threads):
    """out (N, C_in * M, OH, OW) = act(depthwise conv of x (N, C_in, H, W) with weight
    (C_in * M, 1, K, K) + bias + residual); ``bias`` (C_out,) and ``residual`` (like
    out) may be None; ``activate``: ``v if v > 0 else slope * v`` last."""
    cdef int typenum = _float_type("depthwise_forward_into", x)
    cdef Shape s = _shape("depthwise_forward_into", x, weight, out, stride, padding, typenum)
    _dims("depthwise_forward_into", out, "out", 4, typenum, True)
    if bias is not None:
        _dims("depthwise_forward_into", bias.reshape(1, 1, 1, -1), "bias", 4, typenum, False)
        if bias.shape[0] != out.shape[1]:
            raise ValueError("depthwise_forward_into: bias must have %d values, got %d"
                             % (out.shape[1], bias.shape[0]))
    if residual is not None:
        _dims("depthwise_forward_into", residual, "residual", 4, typenum, False)
        if residual.shape != out.shape:
            raise ValueError("depthwise_forward_into: residual must be %s, got %s"
                             % (out.shape, residual.shape))
    _launch(FORWARD, &s, _data(x), _data(weight), _data(out),
            NULL if bias is None else _data(bias), NULL if residual is None else _data(residual),
            activate, slope, typenum == cnp.NPY_FLOAT32, s.images * s.channels * s.multiplier,
            num_threads)


def depthwise_grad_input_into(grad_out, weight, grad_input, tuple stride, tuple padding,
                              int num_threads):
    """grad_input (N, C_in, H, W) = the input gradient of the depthwise conv, from
    grad_out (N, C_in * M, OH, OW); grad_input is overwritten."""
    cdef int typenum = _float_type("depthwise_grad_input_into", grad_out)
    cdef Shape s = _shape("depthwise_grad_input_into", grad_input, weight, grad_out, stride,
                          padding, typenum)
    _dims("depthwise_grad_input_into", grad_input, "grad_input", 4, typenum, True)
    _launch(GRAD_INPUT, &s, _data(grad_out), _data(weight), _data(grad_input), NULL, NULL,
            0, 0, typenum == cnp.NPY_FLOAT32, s.images * s.channels, num_threads)


def depthwise_grad_weight_into(x, grad_out, grad_weight, grad_bias, tuple stride,
                               tuple padding, int num_threads):
    """grad_weight (C_out, 1, K, K) and, unless None, grad_bias (C_out,) of the depthwise
    conv of x, from grad_out; both are overwritten."""
    cdef int typenum = _float_type("depthwise_grad_weight_into", x)
    cdef Shape s = _shape("depthwise_grad_weight_into", x, grad_weight, grad_out, stride,
                          padding, typenum)
    _dims("depthwise_grad_weight_into", grad_weight, "grad_weight", 4, typenum, True)
    if grad_bias is not None:
        _dims("depthwise_grad_weight_into", grad_bias.reshape(1, 1, 1, -1), "grad_bias", 4,
              typenum, True)
        if grad_bias.shape[0] != grad_weight.shape[0]:
            raise ValueError("depthwise_grad_weight_into: grad_bias must have %d values"
                             % grad_weight.shape[0])
    _launch(GRAD_WEIGHT, &s, _data(x), _data(grad_out), _data(grad_weight),
            NULL if grad_bias is None else _data(grad_bias), NULL, 0, 0,
            typenum == cnp.NPY_FLOAT32, s.channels * s.multiplier, num_threads)
