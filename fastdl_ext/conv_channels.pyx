# cython: language_level=3
"""Convolutions of few output positions as GEMMs shared out by output channels.

``conv.pyx`` gives each thread a tile of positions and all of the weights. Where a
conv has few positions in all (a 4x4 or 8x8 map at batch 1), its GEMMs are thin and
every thread reads every weight, which then costs more than the multiplies. Here the
caller unfolds the images once into one column matrix ``(K, N * P)``, and a work
item is a fixed chunk of output channels: one thread reads that chunk's weight rows
and multiplies them by the columns of each image, writing the output rows in place,
then applies the fused epilogue to them while they are in cache.

Chunks have a fixed size, not a share of the team, so every output value comes from
the same GEMM call whatever the thread count: the result is bitwise the same for
any count.
"""
from cython.parallel cimport prange

from fastdl_ext._blas cimport floating, gemm
from fastdl_ext._epilogue cimport epilogue_rows


def conv2d_channels_into(const floating[:, ::1] cols, const floating[:, ::1] weight,
                         floating[:, :, ::1] out, int chunk, int num_threads,
                         const floating[::1] bias=None,
                         const floating[:, :, ::1] residual=None, bint activate=False,
                         double slope=0.0):
    """out[n] = act(weight @ cols[:, n*P:(n+1)*P] + bias + residual[n]) for every image.

    Parameters
    ----------
    cols : (K, N * P) the images' column matrices side by side
    weight : (C_out, K)
    out : (N, C_out, P), overwritten
    chunk : output channels per work item
    bias : (C_out,) or None; residual : like ``out`` or None
    activate, slope : ``v`` if ``v > 0`` else ``slope * v``, last
    """
    cdef int k = weight.shape[1], out_channels = weight.shape[0]
    cdef int n_images = out.shape[0], positions = out.shape[2]
    cdef int width = n_images * positions
    cdef int chunks, item, first, count, image, row
    cdef floating* target
    cdef const floating* added
    cdef const floating* bias_ptr = &bias[0] if bias is not None and bias.shape[0] else NULL
    cdef const floating* residual_ptr = &residual[0, 0, 0] if residual is not None else NULL
    cdef floating slope_value = <floating>slope
    if (cols.shape[0] != k or cols.shape[1] != width or out.shape[1] != out_channels
            or k < 1 or chunk < 1 or (bias_ptr != NULL and bias.shape[0] != out_channels)
            or (residual is not None and (residual.shape[0] != n_images
                                         or residual.shape[1] != out_channels
                                         or residual.shape[2] != positions))):
        raise ValueError("conv2d_channels_into: cols must be (K, N*P), weight (C_out, K), "
                         "out and residual (N, C_out, P), bias (C_out,); K and chunk >= 1")
    if width == 0 or out_channels == 0:
        return
    chunks = (out_channels + chunk - 1) // chunk
    with nogil:
        for item in prange(chunks, num_threads=max(1, num_threads), schedule="static"):
            first = item * chunk
            count = min(chunk, out_channels - first)
            for image in range(n_images):
                target = &out[image, first, 0]
                gemm(c'N', c'N', positions, count, k, 1, &cols[0, 0] + image * positions,
                     width, &weight[first, 0], k, 0, target, positions)
                if bias_ptr == NULL and residual_ptr == NULL and not activate:
                    continue
                added = residual_ptr + (<Py_ssize_t>image * out_channels + first) * positions \
                    if residual_ptr != NULL else NULL
                for row in range(count):
                    epilogue_rows(target + <Py_ssize_t>row * positions, 0,
                                  target + <Py_ssize_t>row * positions, 0,
                                  added + <Py_ssize_t>row * positions if added != NULL
                                  else NULL, 0, 1, positions,
                                  bias_ptr + first + row if bias_ptr != NULL else NULL,
                                  activate, slope_value)
