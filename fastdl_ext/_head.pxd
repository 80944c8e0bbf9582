# cython: language_level=3
"""A classifier head, the global average pool and then a dense layer, computed right
after a chain of convs without returning to Python (``direct.Chain.set_head``).

At batch 1 the three Python steps it replaces (pool, flatten, dense) took ~25 µs
after a ResNet-20 chain, each first touching code and data that the chain had pushed
out of the caches; the arithmetic is a few thousand additions.
"""
from fastdl_ext._epilogue cimport mean
from fastdl_ext._blas cimport floating


cdef inline void pool_dense(const floating* x, Py_ssize_t images, Py_ssize_t channels,
                            Py_ssize_t plane, const floating* weight, const floating* bias,
                            Py_ssize_t features, floating* means, floating* out,
                            bint activate, double slope) noexcept nogil:
    """means (N, C) = the mean of each plane of ``plane`` values of x (N, C, H, W), as
    the global average pool computes it; out (N, F) = act(means @ weight (F, C)ᵀ +
    bias (F,)), summed in float64. ``bias`` may be NULL; ``activate``: ``v < 0 →
    slope·v``."""
    cdef Py_ssize_t n, c, f
    cdef double total
    for n in range(images):
        for c in range(channels):
            means[n * channels + c] = mean(x + (n * channels + c) * plane, plane)
        for f in range(features):
            total = bias[f] if bias != NULL else 0
            for c in range(channels):
                total += <double>weight[f * channels + c] * means[n * channels + c]
            if activate and total < 0:
                total *= slope
            out[n * features + f] = total
