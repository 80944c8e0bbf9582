# cython: language_level=3
"""Convolution by tiled im2col + GEMM, with OpenMP over (image, column tile).

Design
------
The output of one image, ``(C_out, P)`` with ``P = OH * OW`` positions, is cut
into column tiles of ``T`` positions. A work item is one (image, tile): it
unfolds just that tile of the input into a thread-local ``(K, T)`` column
buffer (``K = C_in/groups * kH * kW``, ``T`` chosen by the caller so the buffer
stays in cache — never a whole-batch column matrix) and multiplies it by the
weights with a single-threaded ``sgemm``/``dgemm`` from SciPy's BLAS. Tiles
make batch 1 use every core, too.

* Forward:      out[:, tile]  = W_g @ cols                 (per group g)
* grad_weight:  dW_g         += grad_out[:, tile] @ cols^T  (thread-local dW, summed after)
* grad_input:   cols          = W_g^T @ grad_out[:, tile], then col2im scatter-add.
  Tiles of one image overlap in the input, so grad_input parallelises over
  images (the 1×1, stride-1, unpadded case writes disjoint tiles and runs
  over all items).

Row-major GEMM goes through column-major BLAS with the operands swapped
(``_blas.pxd``).

For 1×1 kernels with stride 1 and no padding the input tile *is* the column
matrix (leading dimension ``H*W``): no unfolding.

Small maps (``*_images_into``): a work item is several whole images, their column
matrices side by side, so that each GEMM is as wide as their positions together; a
stride-2 conv unfolds (and folds back) whole images through each padded row's even
and odd pixels (``include/fastdl_unfold.h``).
"""
from cython.parallel cimport parallel, prange, threadid
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset

from fastdl_ext._epilogue cimport bias_pointer, epilogue_rows, residual_pointer
from fastdl_ext._unfold cimport fastdl_unfold_geometry, fastdl_unfold_scratch, unfold_s2
from fastdl_ext._blas cimport floating, gemm as _gemm
from fastdl_ext._panels cimport panel_gemm, panel_wide


cdef int _WIDE = panel_wide()


cdef struct Geometry:
    int channels       # input channels of one group
    int height
    int width
    int kernel_h
    int kernel_w
    int stride_h
    int stride_w
    int pad_h
    int pad_w
    int dilation_h
    int dilation_w
    int out_w


cdef inline void _valid_columns(Geometry g, int j, int* first, int* stop) noexcept nogil:
    """Output columns ox whose input column ox*stride - pad + j*dilation lies inside."""
    cdef int offset = j * g.dilation_w - g.pad_w
    cdef int lo = 0
    cdef int hi
    if offset < 0:
        lo = (-offset + g.stride_w - 1) // g.stride_w
    hi = (g.width - 1 - offset) // g.stride_w + 1 if g.width - 1 - offset >= 0 else 0
    first[0] = min(lo, g.out_w)
    stop[0] = max(first[0], min(hi, g.out_w))


cdef inline void _zero(floating* column, int begin, int end) noexcept nogil:
    if end > begin:
        memset(column + begin, 0, (end - begin) * sizeof(floating))


cdef void _walk_tile(floating* cols, Geometry g, int start, int tile, int ld,
                     floating* image, bint scatter) noexcept nogil:
    """Unfold (``scatter`` False) or fold back (True) one tile of output positions.

    Unfold: ``cols[(c*kH + i)*kW + j, t] = image[c, y, x]`` of position
    ``start + t`` (0 outside the image), rows ``ld`` apart. Fold: the adjoint,
    scatter-adding the columns into ``image``. The tile is walked one output row at a time, so the
    bounds are decided per row segment and the inner loops are plain strided
    copies the compiler vectorises.
    """
    cdef int c, i, j, t, oy, ox, iy, row, ox_begin, ox_end, first, stop, offset, lo, hi
    cdef int first_row = start // g.out_w, first_column = start % g.out_w
    cdef floating* pixels
    cdef floating* column
    for c in range(g.channels):
        for i in range(g.kernel_h):
            for j in range(g.kernel_w):
                row = (c * g.kernel_h + i) * g.kernel_w + j
                _valid_columns(g, j, &first, &stop)
                offset = j * g.dilation_w - g.pad_w
                t = 0
                oy = first_row
                ox_begin = first_column
                while t < tile:
                    ox_end = min(g.out_w, ox_begin + tile - t)
                    column = cols + <Py_ssize_t>row * ld + t - ox_begin
                    iy = oy * g.stride_h - g.pad_h + i * g.dilation_h
                    pixels = image + (<Py_ssize_t>c * g.height + iy) * g.width + offset
                    lo = max(first, ox_begin)
                    hi = min(stop, ox_end)
                    if scatter:
                        if 0 <= iy < g.height:
                            if g.stride_w == 1:
                                for ox in range(lo, hi):
                                    pixels[ox] += column[ox]
                            else:
                                for ox in range(lo, hi):
                                    pixels[ox * g.stride_w] += column[ox]
                    elif iy < 0 or iy >= g.height:
                        _zero(column, ox_begin, ox_end)
                    else:
                        # segments are short (one output row): libc's memcpy/memset
                        # pick the widest vectors the CPU has, loops here get SSE2
                        _zero(column, ox_begin, min(first, ox_end))
                        if g.stride_w == 1:
                            if hi > lo:
                                memcpy(column + lo, pixels + lo, (hi - lo) * sizeof(floating))
                        else:
                            for ox in range(lo, hi):
                                column[ox] = pixels[ox * g.stride_w]
                        _zero(column, max(stop, ox_begin), ox_end)
                    t = t + ox_end - ox_begin
                    oy = oy + 1
                    ox_begin = 0


cdef inline void _im2col_tile(const floating* image, Geometry g, int start, int tile,
                              floating* cols, int ld) noexcept nogil:
    _walk_tile(cols, g, start, tile, ld, <floating*>image, False)


cdef inline void _col2im_tile(const floating* cols, Geometry g, int start, int tile,
                              floating* image, int ld) noexcept nogil:
    _walk_tile(<floating*>cols, g, start, tile, ld, image, True)


cdef Geometry _geometry(int channels, int height, int width, int kernel_h, int kernel_w,
                        tuple stride, tuple padding, tuple dilation, int out_w):
    cdef Geometry g
    g.channels = channels
    g.height = height
    g.width = width
    g.kernel_h = kernel_h
    g.kernel_w = kernel_w
    g.stride_h, g.stride_w = stride
    g.pad_h, g.pad_w = padding
    g.dilation_h, g.dilation_w = dilation
    g.out_w = out_w
    return g


cdef inline floating* _columns(const floating* image, Geometry g, int start, int width_t,
                               bint pointwise, floating* cols, int* leading) noexcept nogil:
    """The (K, width_t) column matrix of one tile: the image itself for pointwise convs
    (leading dimension H*W), else unfolded into ``cols`` (leading dimension width_t)."""
    if pointwise:
        leading[0] = g.height * g.width
        return <floating*>image + start
    _im2col_tile(image, g, start, width_t, cols, width_t)
    leading[0] = width_t
    return cols


cdef inline bint _is_pointwise(Geometry g) noexcept nogil:
    return (g.kernel_h == 1 and g.kernel_w == 1 and g.stride_h == 1 and g.stride_w == 1
            and g.pad_h == 0 and g.pad_w == 0)


cdef void _epilogue(floating* out, int channels, int positions, int width_t,
                    const floating* bias, const floating* residual, bint activate,
                    floating slope) noexcept nogil:
    """bias, residual add and (leaky) ReLU on one tile while it is still in cache."""
    cdef int channel
    cdef Py_ssize_t at
    for channel in range(channels):
        at = <Py_ssize_t>channel * positions
        epilogue_rows(out + at, 0, out + at, 0, residual + at if residual != NULL else NULL,
                      0, 1, width_t, bias + channel if bias != NULL else NULL, activate, slope)


def conv2d_forward_into(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                        floating[:, :, :, ::1] out, tuple stride, tuple padding,
                        tuple dilation, int groups, int tile, int num_threads,
                        const floating[::1] bias=None,
                        const floating[:, :, :, ::1] residual=None,
                        bint activate=False, double slope=0.0):
    """out[n] = act(conv(x[n], weight) + bias + residual[n]) for every image.

    ``out`` (N, C_out, OH, OW) is overwritten; ``bias`` (C_out,), ``residual``
    (shape of ``out``) and the activation (``activate``: ``v < 0 → slope·v``)
    are applied per tile right after its GEMM, so the output is written once.
    """
    cdef int n_images = x.shape[0], height = x.shape[2], width = x.shape[3]
    cdef int out_channels = weight.shape[0], kernel_h = weight.shape[2]
    cdef int kernel_w = weight.shape[3]
    cdef int out_h = out.shape[2], out_w = out.shape[3]
    cdef int positions = out_h * out_w
    cdef int out_per_group = out_channels // groups
    cdef Geometry g = _geometry(weight.shape[1], height, width, kernel_h, kernel_w, stride,
                                padding, dilation, out_w)
    cdef int k = g.channels * kernel_h * kernel_w
    cdef bint pointwise = _is_pointwise(g)
    cdef int tiles = (positions + tile - 1) // tile
    cdef int item, image, start, width_t, group
    cdef floating* cols
    cdef floating* operand
    cdef int ld_operand
    cdef const floating* bias_ptr = bias_pointer(bias)
    cdef const floating* residual_ptr = residual_pointer(residual)
    cdef floating slope_value = <floating>slope
    cdef Py_ssize_t image_size = <Py_ssize_t>out_channels * positions
    if n_images == 0 or positions == 0:
        return
    with nogil:
        for item in prange(n_images * tiles, num_threads=num_threads, schedule="static"):
            image = item // tiles
            start = (item % tiles) * tile
            width_t = min(tile, positions - start)
            cols = <floating*>malloc(sizeof(floating) * <size_t>k * tile) if not pointwise \
                else NULL
            for group in range(groups):
                operand = _columns(&x[image, group * g.channels, 0, 0], g, start, width_t,
                                   pointwise, cols, &ld_operand)
                _gemm(c'N', c'N', width_t, out_per_group, k, 1, operand, ld_operand,
                      &weight[group * out_per_group, 0, 0, 0], k, 0,
                      &out[image, group * out_per_group, 0, 0] + start, positions)
            if bias_ptr != NULL or residual_ptr != NULL or activate:
                _epilogue(&out[image, 0, 0, 0] + start, out_channels, positions, width_t,
                          bias_ptr,
                          residual_ptr + image * image_size + start if residual_ptr != NULL
                          else NULL, activate, slope_value)
            free(cols)


def conv2d_grad_weight_into(const floating[:, :, :, ::1] x,
                            const floating[:, :, :, ::1] grad_out,
                            floating[:, :, :, ::1] partial, tuple weight_shape, tuple stride,
                            tuple padding, tuple dilation, int groups, int tile,
                            int num_threads):
    """partial[t, group] += this thread's sum of cols @ grad_out_tileᵀ; caller sums over t.

    ``partial`` is (threads, groups, C_in/groups·kH·kW, C_out/groups), zero on
    entry: the weight gradient transposed, the GEMM orientation OpenBLAS runs
    faster for thin outputs (C_out × K output, long reduction over positions).
    """
    cdef int n_images = x.shape[0], height = x.shape[2], width = x.shape[3]
    cdef int out_channels = weight_shape[0], kernel_h = weight_shape[2]
    cdef int kernel_w = weight_shape[3]
    cdef int out_w = grad_out.shape[3]
    cdef int positions = grad_out.shape[2] * out_w
    cdef int out_per_group = out_channels // groups
    cdef Geometry g = _geometry(weight_shape[1], height, width, kernel_h, kernel_w, stride,
                                padding, dilation, out_w)
    cdef int k = g.channels * kernel_h * kernel_w
    cdef bint pointwise = _is_pointwise(g)
    cdef int tiles = (positions + tile - 1) // tile
    cdef int item, image, start, width_t, group, thread
    cdef floating* cols
    cdef floating* operand
    cdef int ld_operand
    if n_images == 0 or positions == 0:
        return
    with nogil:
        for item in prange(n_images * tiles, num_threads=num_threads, schedule="static"):
            thread = threadid()
            image = item // tiles
            start = (item % tiles) * tile
            width_t = min(tile, positions - start)
            cols = <floating*>malloc(sizeof(floating) * <size_t>k * tile) if not pointwise \
                else NULL
            for group in range(groups):
                operand = _columns(&x[image, group * g.channels, 0, 0], g, start, width_t,
                                   pointwise, cols, &ld_operand)
                _gemm(c'T', c'N', out_per_group, k, width_t, 1,
                      &grad_out[image, group * out_per_group, 0, 0] + start, positions,
                      operand, ld_operand, 1, &partial[thread, group, 0, 0], out_per_group)
            free(cols)


# Elements a side of the tiles that weight_from_parts_into turns: 16 x 16 floats are
# 16 cache lines read and 16 written, where NumPy's transposed copy of a (2304, 512) sum
# strode 2 KiB between values and took 4.5 ms (every column in the same cache sets).
cdef enum:
    _TURN_TILE = 16


def weight_from_parts_into(const floating[:, :, :, ::1] partial,
                           floating[:, :, ::1] weight, int num_threads=1):
    """weight[g, o, k] = Σ_t partial[t, g, k, o]: the threads' parts of a weight gradient
    (``conv2d_grad_weight_into``'s transposed layout) summed in order of ``t`` (as
    ``partial.sum(axis=0)``: the same values) and turned, in 16 x 16 tiles."""
    cdef Py_ssize_t parts = partial.shape[0], groups = partial.shape[1]
    cdef Py_ssize_t depth = partial.shape[2], outs = partial.shape[3]
    if weight.shape[0] != groups or weight.shape[1] != outs or weight.shape[2] != depth:
        raise ValueError("weight_from_parts_into: weight must be (%d, %d, %d), got %s"
                         % (groups, outs, depth, tuple(weight.shape)[:3]))
    if parts == 0:
        raise ValueError("weight_from_parts_into: no parts")
    cdef Py_ssize_t tiles_k = (depth + _TURN_TILE - 1) // _TURN_TILE
    cdef Py_ssize_t tiles_o = (outs + _TURN_TILE - 1) // _TURN_TILE
    cdef Py_ssize_t tile, group, k0, o0, k, o, t, k_end, o_end
    cdef floating* block   # each thread's tile of sums (a C array here would be shared)
    with nogil, parallel(num_threads=max(1, num_threads)):
        block = <floating*>malloc(sizeof(floating) * _TURN_TILE * _TURN_TILE)
        for tile in prange(groups * tiles_k * tiles_o, schedule="static"):
            group = tile // (tiles_k * tiles_o)
            k0 = (tile // tiles_o) % tiles_k * _TURN_TILE
            o0 = tile % tiles_o * _TURN_TILE
            k_end = min(k0 + _TURN_TILE, depth)
            o_end = min(o0 + _TURN_TILE, outs)
            for k in range(k0, k_end):
                for o in range(o0, o_end):
                    block[(k - k0) * _TURN_TILE + o - o0] = partial[0, group, k, o]
            for t in range(1, parts):
                for k in range(k0, k_end):
                    for o in range(o0, o_end):
                        block[(k - k0) * _TURN_TILE + o - o0] += partial[t, group, k, o]
            for o in range(o0, o_end):
                for k in range(k0, k_end):
                    weight[group, o, k] = block[(k - k0) * _TURN_TILE + o - o0]
        free(block)


cdef void _grad_input_by_channels(const floating[:, :, :, ::1] grad_out,
                                  const floating[:, :, :, ::1] weight,
                                  floating[:, :, :, ::1] grad_input, Geometry g, int groups,
                                  int tile, int tiles, int num_threads) noexcept nogil:
    """grad_input for fewer images than threads: each thread owns a slice of the input
    channels, computes just its rows of the column gradient and scatters them, so the
    threads never write the same pixel (tiles of one image overlap in the input)."""
    cdef int n_images = grad_input.shape[0]
    cdef int positions = grad_out.shape[2] * grad_out.shape[3]
    cdef int out_per_group = weight.shape[0] // groups
    cdef int window = g.kernel_h * g.kernel_w
    cdef int k = g.channels * window
    cdef int image, tile_index, start, width_t, group, chunk, first, last
    cdef Geometry part
    cdef floating* cols
    with parallel(num_threads=num_threads):
        cols = <floating*>malloc(sizeof(floating) * <size_t>k * tile)
        for image in range(n_images):
            for tile_index in range(tiles):
                start = tile_index * tile
                width_t = min(tile, positions - start)
                for group in range(groups):
                    for chunk in prange(num_threads, schedule="static"):
                        first = chunk * g.channels // num_threads
                        last = (chunk + 1) * g.channels // num_threads
                        if last > first:
                            part = g
                            part.channels = last - first
                            _gemm(c'N', c'T', width_t, (last - first) * window,
                                  out_per_group, 1,
                                  &grad_out[image, group * out_per_group, 0, 0] + start,
                                  positions,
                                  &weight[group * out_per_group, 0, 0, 0] + first * window, k,
                                  0, cols, width_t)
                            _col2im_tile(cols, part, start, width_t,
                                         &grad_input[image, group * g.channels + first, 0, 0],
                                         width_t)
        free(cols)


def conv2d_grad_input_into(const floating[:, :, :, ::1] grad_out,
                           const floating[:, :, :, ::1] weight,
                           floating[:, :, :, ::1] grad_input, tuple stride, tuple padding,
                           tuple dilation, int groups, int tile, int num_threads):
    """grad_input = conv2d's adjoint applied to grad_out; ``grad_input`` must be zero on entry."""
    cdef int n_images = grad_input.shape[0], height = grad_input.shape[2]
    cdef int width = grad_input.shape[3]
    cdef int out_channels = weight.shape[0], kernel_h = weight.shape[2]
    cdef int kernel_w = weight.shape[3]
    cdef int out_w = grad_out.shape[3]
    cdef int positions = grad_out.shape[2] * out_w
    cdef int out_per_group = out_channels // groups
    cdef Geometry g = _geometry(weight.shape[1], height, width, kernel_h, kernel_w, stride,
                                padding, dilation, out_w)
    cdef int k = g.channels * kernel_h * kernel_w
    cdef bint pointwise = _is_pointwise(g)
    cdef int tiles = (positions + tile - 1) // tile
    cdef int item, image, start, width_t, group, tile_index
    cdef floating* cols
    if n_images == 0 or positions == 0:
        return
    with nogil:
        if pointwise:
            # Disjoint tiles: the column matrix is the gradient image itself.
            for item in prange(n_images * tiles, num_threads=num_threads, schedule="static"):
                image = item // tiles
                start = (item % tiles) * tile
                width_t = min(tile, positions - start)
                for group in range(groups):
                    _gemm(c'N', c'T', width_t, k, out_per_group, 1,
                          &grad_out[image, group * out_per_group, 0, 0] + start, positions,
                          &weight[group * out_per_group, 0, 0, 0], k, 0,
                          &grad_input[image, group * g.channels, 0, 0] + start, positions)
        elif n_images < num_threads and g.channels >= num_threads:
            _grad_input_by_channels(grad_out, weight, grad_input, g, groups, tile, tiles,
                                    num_threads)
        else:
            for image in prange(n_images, num_threads=num_threads, schedule="static"):
                cols = <floating*>malloc(sizeof(floating) * <size_t>k * tile)
                for tile_index in range(tiles):
                    start = tile_index * tile
                    width_t = min(tile, positions - start)
                    for group in range(groups):
                        _gemm(c'N', c'T', width_t, k, out_per_group, 1,
                              &grad_out[image, group * out_per_group, 0, 0] + start, positions,
                              &weight[group * out_per_group, 0, 0, 0], k, 0, cols, width_t)
                        _col2im_tile(cols, g, start, width_t,
                                     &grad_input[image, group * g.channels, 0, 0], width_t)
                free(cols)


# ----------------------------------------------------------- several images a tile
# Small maps (a strided conv's 8 x 8 output is 64 positions) make one image's
# tile a thin GEMM that runs at half of BLAS's speed. These variants take whole
# images, ``images`` at a time: their column matrices side by side (K, images * P),
# grad_out's channel rows gathered the same way, and the forward's result scattered
# back to each image.

cdef void _gather_rows(const floating* source, Py_ssize_t image_stride, int rows,
                       int positions, int images, floating* target) noexcept nogil:
    """target[r, b * positions + p] = source[b * image_stride + r * positions + p]."""
    cdef int b, r
    cdef Py_ssize_t width = <Py_ssize_t>images * positions
    for b in range(images):
        for r in range(rows):
            memcpy(target + r * width + b * positions,
                   source + b * image_stride + <Py_ssize_t>r * positions,
                   positions * sizeof(floating))


cdef void _scatter_rows(const floating* source, int rows, int positions, int images,
                        floating* target, Py_ssize_t image_stride) noexcept nogil:
    """The inverse of _gather_rows."""
    cdef int b, r
    cdef Py_ssize_t width = <Py_ssize_t>images * positions
    for b in range(images):
        for r in range(rows):
            memcpy(target + b * image_stride + <Py_ssize_t>r * positions,
                   source + r * width + b * positions, positions * sizeof(floating))


cdef inline bint _by_halves(Geometry g) noexcept nogil:
    """Stride-2 undilated convs unfold whole images through each row's even and odd
    pixels (``unfold_s2``): the general walk decides the bounds of every strided run
    of one output row and tap again, and cost a third of the GEMMs it fed."""
    return (g.stride_h == 2 and g.stride_w == 2 and g.dilation_h == 1
            and g.dilation_w == 1)


cdef inline fastdl_unfold_geometry _unfold_geometry(Geometry g, int out_h) noexcept nogil:
    cdef fastdl_unfold_geometry u
    u.channels, u.height, u.width = g.channels, g.height, g.width
    u.kernel_h, u.kernel_w, u.pad_h, u.pad_w = g.kernel_h, g.kernel_w, g.pad_h, g.pad_w
    u.out_h, u.out_w = out_h, g.out_w
    return u


cdef inline Py_ssize_t _scratch_size(Geometry g, int out_h) noexcept nogil:
    return fastdl_unfold_scratch(_unfold_geometry(g, out_h)) if _by_halves(g) else 0


cdef void _unfold_images(const floating* image, Py_ssize_t image_stride, Geometry g,
                         int positions, int images, floating* cols,
                         floating* phases) noexcept nogil:
    """The column matrices of ``images`` whole images side by side (K, images * P)."""
    cdef int b
    for b in range(images):
        if phases != NULL:
            unfold_s2(<floating*>image + b * image_stride,
                      _unfold_geometry(g, positions // g.out_w), cols + b * positions,
                      images * positions, phases, False)
        else:
            _im2col_tile(image + b * image_stride, g, 0, positions, cols + b * positions,
                         images * positions)


cdef struct ImageItems:
    # a conv's work split into items of whole images (the *_images_into loops)
    Geometry g
    int k                   # rows of an image's column matrix: C_in/groups * kh * kw
    int positions           # output positions of an image
    int out_per_group
    int items               # work items of ``images`` images (the last may hold fewer)
    Py_ssize_t phase_size   # scratch of the stride-2 unfold (0: unfolded directly)
    Py_ssize_t in_stride    # elements between images of the input (or grad_input)
    Py_ssize_t out_stride   # ... of the output (or grad_out)


cdef ImageItems _image_items(int n_images, int in_channels, int height, int width,
                             tuple weight_shape, int out_h, int out_w, tuple stride,
                             tuple padding, tuple dilation, int groups, int images):
    cdef ImageItems plan
    cdef int out_channels = weight_shape[0]
    plan.g = _geometry(weight_shape[1], height, width, weight_shape[2], weight_shape[3],
                       stride, padding, dilation, out_w)
    plan.k = plan.g.channels * plan.g.kernel_h * plan.g.kernel_w
    plan.positions = out_h * out_w
    plan.out_per_group = out_channels // groups
    plan.items = (n_images + images - 1) // images
    plan.phase_size = _scratch_size(plan.g, out_h)
    plan.in_stride = <Py_ssize_t>in_channels * height * width
    plan.out_stride = <Py_ssize_t>out_channels * plan.positions
    return plan


def conv2d_forward_images_into(const floating[:, :, :, ::1] x,
                               const floating[:, :, :, ::1] weight,
                               floating[:, :, :, ::1] out, tuple stride, tuple padding,
                               tuple dilation, int groups, int images, int num_threads,
                               const floating[::1] bias=None,
                               const floating[:, :, :, ::1] residual=None,
                               bint activate=False, double slope=0.0,
                               const floating[:, :, ::1] packed=None):
    """``conv2d_forward_into`` with work items of ``images`` whole images (one GEMM
    over all their positions each).

    ``packed``: the weights (one group) as ``kernels.pointwise.pack`` packs the (M, K)
    matrix, (ceil(M / 8), K, 8): the pointwise convs' register tiles then multiply them
    by each item's columns and store the rows, epilogue included, straight into ``out``
    (``include/fastdl_panel_gemm.h``), instead of OpenBLAS's GEMM and a scatter.
    """
    cdef int n_images = x.shape[0], out_channels = weight.shape[0]
    cdef tuple weight_shape = (weight.shape[0], weight.shape[1], weight.shape[2],
                               weight.shape[3])
    cdef ImageItems plan = _image_items(n_images, x.shape[1], x.shape[2], x.shape[3],
                                        weight_shape, out.shape[2], out.shape[3], stride,
                                        padding, dilation, groups, images)
    cdef const floating* panels = NULL
    if packed is not None:
        if groups != 1 or packed.shape[1] != plan.k or \
                packed.shape[0] * packed.shape[2] < out_channels:
            raise ValueError("conv2d_forward_images_into: packed must hold one group's "
                             "(%d, %d) weights, got %s for %d groups"
                             % (out_channels, plan.k, tuple(packed.shape)[:3], groups))
        panels = &packed[0, 0, 0]
    cdef Geometry g = plan.g
    cdef int k = plan.k, positions = plan.positions, out_per_group = plan.out_per_group
    cdef Py_ssize_t in_stride = plan.in_stride, out_stride = plan.out_stride
    cdef Py_ssize_t phase_size = plan.phase_size
    cdef int item, first, count, width_t, group, b
    cdef floating* cols
    cdef floating* result
    cdef floating* phases
    cdef const floating* bias_ptr = bias_pointer(bias)
    cdef const floating* residual_ptr = residual_pointer(residual)
    cdef floating slope_value = <floating>slope
    if n_images == 0 or positions == 0:
        return
    with nogil:
        for item in prange(plan.items, num_threads=num_threads, schedule="static"):
            first = item * images
            count = min(images, n_images - first)
            width_t = count * positions
            cols = <floating*>malloc(sizeof(floating) * <size_t>k * width_t)
            phases = <floating*>malloc(sizeof(floating) * phase_size) if phase_size else NULL
            if panels != NULL:
                result = <floating*>malloc(<size_t>k * 64)   # the tiles' spill
                _unfold_images(&x[first, 0, 0, 0], in_stride, g, positions, count, cols,
                               phases)
                panel_gemm(panels, out_channels, k, positions, count, cols, width_t,
                           positions, &out[first, 0, 0, 0], positions, out_stride, bias_ptr,
                           residual_ptr + first * out_stride if residual_ptr != NULL
                           else NULL, activate, slope, result, _WIDE)
            else:
                result = <floating*>malloc(sizeof(floating) * <size_t>out_per_group
                                           * width_t)
                for group in range(groups):
                    _unfold_images(&x[first, group * g.channels, 0, 0], in_stride, g,
                                   positions, count, cols, phases)
                    _gemm(c'N', c'N', width_t, out_per_group, k, 1, cols, width_t,
                          &weight[group * out_per_group, 0, 0, 0], k, 0, result, width_t)
                    _scatter_rows(result, out_per_group, positions, count,
                                  &out[first, group * out_per_group, 0, 0], out_stride)
                if bias_ptr != NULL or residual_ptr != NULL or activate:
                    for b in range(count):
                        _epilogue(&out[first + b, 0, 0, 0], out_channels, positions,
                                  positions, bias_ptr, residual_ptr + (first + b) * out_stride
                                  if residual_ptr != NULL else NULL, activate, slope_value)
            free(phases)
            free(result)
            free(cols)


def conv2d_grad_weight_images_into(const floating[:, :, :, ::1] x,
                                   const floating[:, :, :, ::1] grad_out,
                                   floating[:, :, :, ::1] partial, tuple weight_shape,
                                   tuple stride, tuple padding, tuple dilation, int groups,
                                   int images, int num_threads):
    """``conv2d_grad_weight_into`` with work items of ``images`` whole images: each GEMM
    sums over all their positions."""
    cdef int n_images = x.shape[0]
    cdef ImageItems plan = _image_items(n_images, x.shape[1], x.shape[2], x.shape[3],
                                        weight_shape, grad_out.shape[2], grad_out.shape[3],
                                        stride, padding, dilation, groups, images)
    cdef Geometry g = plan.g
    cdef int k = plan.k, positions = plan.positions, out_per_group = plan.out_per_group
    cdef Py_ssize_t in_stride = plan.in_stride, out_stride = plan.out_stride
    cdef Py_ssize_t phase_size = plan.phase_size
    cdef int item, first, count, width_t, group, thread
    cdef floating* cols
    cdef floating* rows
    cdef floating* phases
    if n_images == 0 or positions == 0:
        return
    with nogil:
        for item in prange(plan.items, num_threads=num_threads, schedule="static"):
            thread = threadid()
            first = item * images
            count = min(images, n_images - first)
            width_t = count * positions
            cols = <floating*>malloc(sizeof(floating) * <size_t>k * width_t)
            rows = <floating*>malloc(sizeof(floating) * <size_t>out_per_group * width_t)
            phases = <floating*>malloc(sizeof(floating) * phase_size) if phase_size else NULL
            for group in range(groups):
                _unfold_images(&x[first, group * g.channels, 0, 0], in_stride, g, positions,
                               count, cols, phases)
                _gather_rows(&grad_out[first, group * out_per_group, 0, 0], out_stride,
                             out_per_group, positions, count, rows)
                _gemm(c'T', c'N', out_per_group, k, width_t, 1, rows, width_t, cols, width_t,
                      1, &partial[thread, group, 0, 0], out_per_group)
            free(phases)
            free(rows)
            free(cols)


def conv2d_grad_input_images_into(const floating[:, :, :, ::1] grad_out,
                                  const floating[:, :, :, ::1] weight,
                                  floating[:, :, :, ::1] grad_input, tuple stride,
                                  tuple padding, tuple dilation, int groups, int images,
                                  int num_threads):
    """``conv2d_grad_input_into`` with work items of ``images`` whole images (disjoint
    writes); ``grad_input``'s values on entry are not read: each item zeroes its images
    before it adds into them (in parallel, and into the cache the adds then use: a
    separate ``np.zeros`` was a serial pass over memory, ~0.3 ms of a 2 MB gradient)."""
    cdef int n_images = grad_input.shape[0]
    cdef tuple weight_shape = (weight.shape[0], weight.shape[1], weight.shape[2],
                               weight.shape[3])
    cdef ImageItems plan = _image_items(n_images, grad_input.shape[1], grad_input.shape[2],
                                        grad_input.shape[3], weight_shape, grad_out.shape[2],
                                        grad_out.shape[3], stride, padding, dilation, groups,
                                        images)
    cdef Geometry g = plan.g
    cdef int k = plan.k, positions = plan.positions, out_per_group = plan.out_per_group
    cdef int out_w = grad_out.shape[3]
    cdef Py_ssize_t out_stride = plan.out_stride
    cdef Py_ssize_t phase_size = plan.phase_size
    cdef int item, first, count, width_t, group, b
    cdef floating* cols
    cdef floating* rows
    cdef floating* phases
    if n_images == 0 or positions == 0:
        return
    with nogil:
        for item in prange(plan.items, num_threads=num_threads, schedule="static"):
            first = item * images
            count = min(images, n_images - first)
            width_t = count * positions
            cols = <floating*>malloc(sizeof(floating) * <size_t>k * width_t)
            rows = <floating*>malloc(sizeof(floating) * <size_t>out_per_group * width_t)
            phases = <floating*>malloc(sizeof(floating) * phase_size) if phase_size else NULL
            memset(&grad_input[first, 0, 0, 0], 0, sizeof(floating) * <size_t>count
                   * grad_input.shape[1] * grad_input.shape[2] * grad_input.shape[3])
            for group in range(groups):
                _gather_rows(&grad_out[first, group * out_per_group, 0, 0], out_stride,
                             out_per_group, positions, count, rows)
                _gemm(c'N', c'T', width_t, k, out_per_group, 1, rows, width_t,
                      &weight[group * out_per_group, 0, 0, 0], k, 0, cols, width_t)
                for b in range(count):
                    if phases != NULL:
                        unfold_s2(&grad_input[first + b, group * g.channels, 0, 0],
                                  _unfold_geometry(g, positions // out_w),
                                  cols + b * positions, width_t, phases, True)
                    else:
                        _col2im_tile(cols + b * positions, g, 0, positions,
                                     &grad_input[first + b, group * g.channels, 0, 0], width_t)
            free(phases)
            free(rows)
            free(cols)


def unfold_into(const floating[:, :, :, ::1] x, floating[:, ::1] cols, tuple kernel_size,
                tuple stride, tuple padding, tuple dilation, int out_h, int out_w,
                int num_threads=1):
    """im2col of all of ``x`` (N, C, H, W), one group, into ``cols`` (C*kH*kW, width):
    image n's positions in columns [n*P, (n+1)*P), P = out_h * out_w, and zeros in the
    columns past N*P (``width`` may be larger, for the register tiles' blocks). Threads
    take (image, channel) pairs, whose rows are disjoint."""
    cdef int n_images = x.shape[0], channels = x.shape[1], positions = out_h * out_w
    cdef int taps = kernel_size[0] * kernel_size[1], k = channels * taps, item, b, c, row
    cdef Py_ssize_t width = cols.shape[1]
    # one channel's geometry: each item unfolds one plane into its taps' rows
    cdef Geometry g = _geometry(1, x.shape[2], x.shape[3], kernel_size[0],
                                kernel_size[1], stride, padding, dilation, out_w)
    cdef floating* phases = NULL
    cdef Py_ssize_t phase_size = _scratch_size(g, out_h)
    cdef int axis, span
    for axis in range(2):
        span = dilation[axis] * (kernel_size[axis] - 1) + 1
        if (min(stride[axis], dilation[axis], kernel_size[axis]) < 1 or padding[axis] < 0
                or (out_h, out_w)[axis] != (x.shape[2 + axis] + 2 * padding[axis] - span)
                // stride[axis] + 1):
            raise ValueError("unfold_into: out_h, out_w must be the conv's output size, got "
                             "%d, %d" % (out_h, out_w))
    if cols.shape[0] != k or width < <Py_ssize_t>n_images * positions:
        raise ValueError("unfold_into: cols must be (%d, >= %d), got (%d, %d)"
                         % (k, n_images * positions, cols.shape[0], cols.shape[1]))
    if k == 0 or width == 0:
        return
    with nogil:
        if n_images and positions:
            with parallel(num_threads=max(1, num_threads)):
                # a stride-2 plane's halves: one scratch a thread
                phases = <floating*>malloc(sizeof(floating) * phase_size) if phase_size \
                    else NULL
                for item in prange(n_images * channels, schedule="static"):
                    b = item // channels
                    c = item % channels
                    if phases != NULL:
                        unfold_s2(<floating*>&x[b, c, 0, 0], _unfold_geometry(g, out_h),
                                  &cols[c * taps, 0] + b * positions, width, phases, False)
                    else:
                        _im2col_tile(&x[b, c, 0, 0], g, 0, positions,
                                     &cols[c * taps, 0] + b * positions, <int>width)
                free(phases)
        if width > <Py_ssize_t>n_images * positions:
            for row in range(k):
                _zero(&cols[row, 0], n_images * positions, <int>width)
