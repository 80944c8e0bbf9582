# cython: language_level=3
"""3×3 stride-1 convolution by Winograd's minimal filtering F(2×2, 3×3).

Each 2×2 output tile comes from a 4×4 input patch ``d``:
``Y = Aᵀ [ Σ_c (G g Gᵀ) ⊙ (Bᵀ d B) ] A``. The sum over input channels of the
16 element-wise products is 16 matrix products, one per transformed position
ξ: ``M[ξ] (C_out × T) = U[ξ] (C_out × C_in) @ V[ξ] (C_in × T)`` over a block of
``T`` tiles, so the multiplies drop from 36 to 16 per tile and channel pair
(2.25×) and still run through single-threaded BLAS.

Backward is the exact adjoint of the same linear map, not a second
convolution: the output transform's adjoint turns the 2×2 output gradient into
``dM = A dY Aᵀ``; then ``dV[ξ] = U[ξ]ᵀ dM[ξ]`` folds back into the input as
``B dV Bᵀ`` (grad_input), and ``dU[ξ] = Σ_tiles dM[ξ] V[ξ]ᵀ`` (grad_weight,
brought back to 3×3 by the caller as ``Gᵀ dU G``).

Work items are blocks of whole tile rows (image, tile row), so a block's GEMMs
are large even for small maps, and batch 1 splits into several blocks.
Neighbouring tile rows overlap by two input rows, so grad_input scatters even
tile rows in one pass and odd ones in a second: within a pass no two blocks
touch the same input pixel.

Layouts: ``u`` is (16, plane), row ξ holding U[ξ] as a row-major (C_out, C_in)
matrix (plane ≥ C_out·C_in, padded so the 16 rows do not share cache sets); a
thread's ``V`` is (16, C_in, T) and ``M`` (16, C_out, T), ξ = 4·row + column of
the 4×4 transformed tile.
"""
from cython.parallel cimport parallel, prange, threadid
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memset

from fastdl_ext._epilogue cimport bias_pointer, epilogue_rows, residual_pointer
from fastdl_ext._blas cimport floating, gemm, part_beta, zero_unwritten_parts
from fastdl_ext._panels cimport _PANEL_ROWS, panel_gemm, panel_wide
from fastdl_ext._winograd cimport _adjoint_rows, _input_rows, _tile_rows


cdef int _WIDE = panel_wide()


cdef struct Tiling:
    int in_channels
    int out_channels
    int height
    int width
    int pad_h
    int pad_w
    int out_h
    int out_w
    int tiles_x
    int first_row        # the tile rows of a pass: first_row, first_row + row_step, ...
    int row_step
    int rows_per_image   # tile rows of one image in this pass
    int rows_per_block


cdef Tiling _tiling(int n_images, int in_channels, int out_channels, int height, int width,
                    tuple padding, int out_h, int out_w, int first_row, int row_step,
                    int rows_per_block, int* blocks):
    cdef Tiling s
    cdef int tiles_y = (out_h + 1) // 2
    s.in_channels = in_channels
    s.out_channels = out_channels
    s.height = height
    s.width = width
    s.pad_h, s.pad_w = padding
    s.out_h = out_h
    s.out_w = out_w
    s.tiles_x = (out_w + 1) // 2
    s.first_row = first_row
    s.row_step = row_step
    s.rows_per_image = max(0, (tiles_y - first_row + row_step - 1) // row_step)
    s.rows_per_block = rows_per_block
    blocks[0] = (n_images * s.rows_per_image + rows_per_block - 1) // rows_per_block
    return s


cdef inline void _unit(Tiling s, int unit, int* image, int* row) noexcept nogil:
    """The image and tile row of the ``unit``-th (image, tile row) pair of a pass."""
    image[0] = unit // s.rows_per_image
    row[0] = s.first_row + s.row_step * (unit % s.rows_per_image)


cdef inline Py_ssize_t _plane(int channels, int tiles) noexcept nogil:
    """Elements between consecutive ξ matrices of a block buffer. A power-of-two
    stride would map the 16 streams of a transform onto the same cache sets; 16
    extra elements shift each by a cache line."""
    return <Py_ssize_t>channels * tiles + 16


cdef inline size_t _input_planes(Tiling s, size_t max_tiles) noexcept nogil:
    return 16 * _plane(s.in_channels, max_tiles)


cdef inline size_t _output_planes(Tiling s, size_t max_tiles) noexcept nogil:
    return 16 * _plane(s.out_channels, max_tiles)


cdef floating* _scratch(Tiling s, size_t max_tiles, floating* like) noexcept nogil:
    """One thread's buffers in one allocation (``like``, a typed NULL, picks the dtype): the
    block's input-side planes (16 × C_in × T) at the start, then its output-side
    planes (16 × C_out × T, from ``_input_planes`` on) and the transforms' row buffers
    (8 × ``_row_width``, after both). The caller frees the returned pointer; it takes
    the two offsets by plain assignment so that OpenMP keeps them thread-private."""
    return <floating*>malloc(sizeof(floating) * (_input_planes(s, max_tiles)
                                                 + _output_planes(s, max_tiles)
                                                 + 8 * _row_width(s)))


cdef inline int _block_units(Tiling s, int block, int n_images) noexcept nogil:
    """How many (image, tile row) pairs block ``block`` holds (it starts at
    ``block * rows_per_block``)."""
    return min(s.rows_per_block, n_images * s.rows_per_image - block * s.rows_per_block)


cdef inline int _row_width(Tiling s) noexcept nogil:
    """Input columns the tiles of one tile row read: 2 per tile plus the 2 of overlap."""
    return 2 * s.tiles_x + 2


cdef void _transform_input(const floating* x, Tiling s, int first, int units,
                           floating* v, floating* rows, int c_first,
                           int c_stop) noexcept nogil:
    """v[ξ, c, t] = (Bᵀ d B)[ξ], d the tile's 4×4 input patch (zero in the padding).

    Per (channel, tile row), Bᵀ is applied along the four input rows as they are read
    from the image (rows past it read a row of zeros) and the column half eight
    tiles at a time (``_input_rows``). ``rows`` holds the zeros and the mixed rows,
    whose padding columns stay zero.
    """
    cdef int tiles = units * s.tiles_x
    cdef Py_ssize_t plane = _plane(s.in_channels, tiles)
    cdef int width = _row_width(s)
    cdef floating* zeros = rows
    cdef floating* mixed = rows + 4 * width
    cdef const floating* source[4]
    cdef int c, unit, image, row, t, r, y, x0, lo, hi
    cdef const floating* channel
    x0 = -s.pad_w
    lo = max(0, -x0)                      # first buffer column inside the image
    hi = max(lo, min(width, s.width - x0))
    memset(rows, 0, sizeof(floating) * 8 * width)
    for c in range(c_first, c_stop):
        t = 0
        for unit in range(first, first + units):
            _unit(s, unit, &image, &row)
            channel = x + (<Py_ssize_t>image * s.in_channels + c) * s.height * s.width
            for r in range(4):
                y = 2 * row - s.pad_h + r
                # from buffer column lo, image column x0 + lo
                source[r] = zeros if y < 0 or y >= s.height else \
                    channel + <Py_ssize_t>y * s.width + x0 + lo
            _input_rows(source[0], source[1], source[2], source[3], lo, hi - lo, mixed,
                        width, v + <Py_ssize_t>c * tiles + t, plane, s.tiles_x)
            t = t + s.tiles_x


cdef void _adjoint_input(const floating* dv, Tiling s, int first, int units,
                         floating* grad_input, floating* rows) noexcept nogil:
    """grad_input patch += B dV Bᵀ for each tile, dropping what falls in the padding.

    Per (channel, tile row): the column half of the map is applied per tile and
    accumulated into four zeroed ``_row_width`` rows of ``rows``, one per row of
    dV (neighbouring tiles overlap by two columns); the row half then runs along
    whole rows and adds them into the image (unit stride, vectorised).
    """
    cdef int tiles = units * s.tiles_x
    cdef Py_ssize_t plane = _plane(s.in_channels, tiles)
    cdef int width = _row_width(s)
    cdef int c, unit, image, row, tx, t, r, q, y, x0, lo, hi
    cdef floating* channel
    cdef floating* line
    cdef floating* target
    cdef const floating* src
    cdef const floating* l0
    cdef const floating* l1
    cdef const floating* l2
    cdef const floating* l3
    cdef floating g0, g1, g2, g3
    x0 = -s.pad_w
    lo = max(0, -x0)
    hi = max(lo, min(width, s.width - x0))
    l0, l1, l2, l3 = rows + lo, rows + width + lo, rows + 2 * width + lo, rows + 3 * width + lo
    for c in range(s.in_channels):
        t = 0
        for unit in range(first, first + units):
            _unit(s, unit, &image, &row)
            channel = grad_input + (<Py_ssize_t>image * s.in_channels + c) * s.height * s.width
            memset(rows, 0, sizeof(floating) * 4 * width)
            for r in range(4):
                src = dv + 4 * r * plane + <Py_ssize_t>c * tiles + t
                line = rows + r * width
                for tx in range(s.tiles_x):
                    g0, g1 = src[tx], src[plane + tx]
                    g2, g3 = src[2 * plane + tx], src[3 * plane + tx]
                    line[2 * tx] += g0
                    line[2 * tx + 1] += g1 - g2 + g3
                    line[2 * tx + 2] += g1 + g2 - g0
                    line[2 * tx + 3] -= g3
            for r in range(4):
                y = 2 * row - s.pad_h + r
                if y < 0 or y >= s.height:
                    continue
                target = channel + <Py_ssize_t>y * s.width + x0 + lo   # buffer column lo
                if r == 0:
                    for q in range(hi - lo):
                        target[q] += l0[q]
                elif r == 1:
                    for q in range(hi - lo):
                        target[q] += l1[q] - l2[q] + l3[q]
                elif r == 2:
                    for q in range(hi - lo):
                        target[q] += l1[q] + l2[q] - l0[q]
                else:
                    for q in range(hi - lo):
                        target[q] -= l3[q]
            t = t + s.tiles_x


cdef void _transform_output(const floating* m, Tiling s, int first, int units,
                            floating* out, const floating* bias, const floating* residual,
                            bint activate, floating slope, int co_first,
                            int co_stop) noexcept nogil:
    """out tile = Aᵀ M A, then bias, residual and (leaky) ReLU, a tile row at a time
    (``_tile_rows``)."""
    cdef int tiles = units * s.tiles_x
    cdef Py_ssize_t plane = _plane(s.out_channels, tiles)
    cdef floating shift
    cdef int co, unit, image, row, t, oy, count
    cdef Py_ssize_t at
    for co in range(co_first, co_stop):
        t = 0
        shift = bias[co] if bias != NULL else 0
        for unit in range(first, first + units):
            _unit(s, unit, &image, &row)
            oy = 2 * row
            count = min(2, s.out_h - oy)          # output rows of this tile row
            at = ((<Py_ssize_t>image * s.out_channels + co) * s.out_h + oy) * s.out_w
            _tile_rows(m + <Py_ssize_t>co * tiles + t, plane, s.tiles_x, shift, out + at,
                       out + at + s.out_w if count == 2 else NULL, s.out_w)
            # the unit's output rows are adjacent: one pass over both
            epilogue_rows(out + at, s.out_w, out + at, s.out_w,
                          residual + at if residual != NULL else NULL, s.out_w, count,
                          s.out_w, NULL, activate, slope)
            t = t + s.tiles_x


cdef void _adjoint_output(const floating* grad_out, Tiling s, int first, int units,
                          floating* dm) noexcept nogil:
    """dm[ξ, co, t] = (A dY Aᵀ)[ξ], dY the tile's 2×2 output gradient (0 past the edge),
    a tile row at a time (eight tiles on vectors, ``fastdl_winograd_adjoint_rows``)."""
    cdef int tiles = units * s.tiles_x
    cdef Py_ssize_t plane = _plane(s.out_channels, tiles)
    cdef int co, unit, image, row, t, oy
    cdef const floating* top
    for co in range(s.out_channels):
        t = 0
        for unit in range(first, first + units):
            _unit(s, unit, &image, &row)
            oy = 2 * row
            top = grad_out + ((<Py_ssize_t>image * s.out_channels + co) * s.out_h + oy) \
                * s.out_w
            _adjoint_rows(top, top + s.out_w if oy + 1 < s.out_h else NULL, s.out_w,
                          s.tiles_x, dm + <Py_ssize_t>co * tiles + t, plane)
            t = t + s.tiles_x


cdef inline void _transformed_product(const floating* u, const floating* v, floating* m,
                                      int in_channels, int out_channels, int tiles,
                                      bint packed, floating* spill) noexcept nogil:
    """One ξ's ``M = U V`` of a forward: (C_out, C_in) weights ``u`` (in panels where
    ``packed``, by the register tiles, ``spill`` their scratch; else OpenBLAS's GEMM)
    times (C_in, tiles) ``v``, written to (C_out, tiles) ``m``."""
    if packed:
        panel_gemm(u, out_channels, in_channels, tiles, 1, v, tiles, 0, m, tiles, 0, NULL,
                   NULL, False, 0.0, spill, _WIDE)
    else:
        gemm(c'N', c'N', tiles, out_channels, in_channels, 1, v, tiles, u, in_channels, 0,
             m, tiles)


def _check_packed(str name, const floating[:, ::1] u, bint packed, int out_channels,
                  int in_channels):
    """Refuse a packed ``u`` too short for its panels (the tiles read whole panels)."""
    if packed and u.shape[1] < _packed_size(out_channels, in_channels):
        raise ValueError("%s: packed u must be (16, >= %d), got %s"
                         % (name, _packed_size(out_channels, in_channels), tuple(u.shape)[:2]))


def winograd_forward_into(const floating[:, :, :, ::1] x, const floating[:, ::1] u,
                          floating[:, :, :, ::1] out, tuple padding, int rows_per_block,
                          int num_threads, bint packed, const floating[::1] bias=None,
                          const floating[:, :, :, ::1] residual=None, bint activate=False,
                          double slope=0.0):
    """out = act(conv3x3(x) + bias + residual), ``u`` the transformed weights (16, C_out, C_in).

    ``rows_per_block`` tile rows (of ``ceil(OW/2)`` tiles each) make one work item.
    ``packed``: each ξ's (C_out, C_in) matrix of ``u`` is in panels (``transform_weight_into``
    with ``packed``), multiplied by the pointwise convs' register tiles
    (``include/fastdl_panel_gemm.h``) instead of OpenBLAS's GEMM.
    """
    cdef int n_images = x.shape[0], in_channels = x.shape[1], out_channels = out.shape[1]
    cdef int blocks, block, first, units, tiles, xi
    cdef Tiling s = _tiling(n_images, in_channels, out_channels, x.shape[2], x.shape[3],
                            padding, out.shape[2], out.shape[3], 0, 1, rows_per_block,
                            &blocks)
    cdef size_t max_tiles = <size_t>rows_per_block * s.tiles_x
    cdef floating* v
    cdef floating* m
    cdef floating* rows
    cdef floating* spill
    cdef const floating* bias_ptr = bias_pointer(bias)
    cdef const floating* residual_ptr = residual_pointer(residual)
    cdef floating slope_value = <floating>slope
    if n_images == 0 or s.rows_per_image == 0 or s.tiles_x == 0:
        return
    _check_packed("winograd_forward_into", u, packed, out_channels, in_channels)
    with nogil, parallel(num_threads=num_threads):
        v = _scratch(s, max_tiles, <floating*>NULL)
        m = v + _input_planes(s, max_tiles)
        rows = m + _output_planes(s, max_tiles)
        spill = <floating*>malloc(<size_t>in_channels * 64) if packed else NULL
        for block in prange(blocks, schedule="static"):
            first = block * s.rows_per_block
            units = _block_units(s, block, n_images)
            tiles = units * s.tiles_x
            _transform_input(&x[0, 0, 0, 0], s, first, units, v, rows, 0, in_channels)
            for xi in range(16):
                _transformed_product(&u[xi, 0], v + xi * _plane(in_channels, tiles),
                                     m + xi * _plane(out_channels, tiles), in_channels,
                                     out_channels, tiles, packed, spill)
            _transform_output(m, s, first, units, &out[0, 0, 0, 0], bias_ptr, residual_ptr,
                              activate, slope_value, 0, out_channels)
        free(spill)
        free(v)


def winograd_forward_shared_into(const floating[:, :, :, ::1] x, const floating[:, ::1] u,
                                 floating[:, :, :, ::1] out, tuple padding, int num_threads,
                                 bint packed, const floating[::1] bias=None,
                                 const floating[:, :, :, ::1] residual=None,
                                 bint activate=False, double slope=0.0):
    """``winograd_forward_into`` as one block of every tile, the threads sharing its three
    steps: the input transform by input channels, the 16 GEMMs by ξ, the output
    transform by output channels (a barrier between steps). Each thread reads only its
    ξ's transformed weights, once: blocks of tiles each read all of them, which costs
    more than the GEMMs where they are large (512 channels) and the maps small.
    ``packed``: ``u`` in panels, multiplied by the register tiles (as
    ``winograd_forward_into``).
    """
    cdef int n_images = x.shape[0], in_channels = x.shape[1], out_channels = out.shape[1]
    cdef int blocks, units, tiles, xi, c
    cdef Tiling s
    cdef floating* v
    cdef floating* m
    cdef floating* rows
    cdef floating* spill
    cdef const floating* bias_ptr = bias_pointer(bias)
    cdef const floating* residual_ptr = residual_pointer(residual)
    cdef floating slope_value = <floating>slope
    if n_images == 0 or out.shape[2] == 0 or out.shape[3] == 0:
        return
    _check_packed("winograd_forward_shared_into", u, packed, out_channels, in_channels)
    s = _tiling(n_images, in_channels, out_channels, x.shape[2], x.shape[3], padding,
                out.shape[2], out.shape[3], 0, 1, 1, &blocks)
    units = n_images * s.rows_per_image
    s.rows_per_block = units
    tiles = units * s.tiles_x
    v = <floating*>malloc(sizeof(floating) * (_input_planes(s, tiles)
                                              + _output_planes(s, tiles)))
    if v == NULL:
        raise MemoryError()
    m = v + _input_planes(s, tiles)
    with nogil, parallel(num_threads=num_threads):
        rows = <floating*>malloc(sizeof(floating) * 8 * _row_width(s))
        spill = <floating*>malloc(<size_t>in_channels * 64) if packed else NULL
        for c in prange(in_channels, schedule="static"):
            _transform_input(&x[0, 0, 0, 0], s, 0, units, v, rows, c, c + 1)
        for xi in prange(16, schedule="static"):
            _transformed_product(&u[xi, 0], v + xi * _plane(in_channels, tiles),
                                 m + xi * _plane(out_channels, tiles), in_channels,
                                 out_channels, tiles, packed, spill)
        for c in prange(out_channels, schedule="static"):
            _transform_output(m, s, 0, units, &out[0, 0, 0, 0], bias_ptr, residual_ptr,
                              activate, slope_value, c, c + 1)
        free(spill)
        free(rows)
    free(v)


def winograd_grad_input_into(const floating[:, :, :, ::1] grad_out, const floating[:, ::1] u,
                             floating[:, :, :, ::1] grad_input, tuple padding,
                             int rows_per_block, int num_threads):
    """grad_input += the adjoint of ``winograd_forward_into`` applied to ``grad_out``.

    ``grad_input`` (N, C_in, H, W) must be zero on entry.
    """
    cdef int n_images = grad_input.shape[0], in_channels = grad_input.shape[1]
    cdef int out_channels = grad_out.shape[1]
    cdef int blocks, block, first, units, tiles, xi, parity
    cdef Tiling s
    cdef size_t max_tiles = <size_t>rows_per_block * ((grad_out.shape[3] + 1) // 2)
    cdef floating* dv
    cdef floating* dm
    cdef floating* rows
    if n_images == 0 or grad_out.shape[2] == 0 or grad_out.shape[3] == 0:
        return
    for parity in range(2):
        s = _tiling(n_images, in_channels, out_channels, grad_input.shape[2],
                    grad_input.shape[3], padding, grad_out.shape[2], grad_out.shape[3],
                    parity, 2, rows_per_block, &blocks)
        if blocks == 0:
            continue
        with nogil, parallel(num_threads=num_threads):
            dv = _scratch(s, max_tiles, <floating*>NULL)
            dm = dv + _input_planes(s, max_tiles)
            rows = dm + _output_planes(s, max_tiles)
            for block in prange(blocks, schedule="static"):
                first = block * s.rows_per_block
                units = _block_units(s, block, n_images)
                tiles = units * s.tiles_x
                _adjoint_output(&grad_out[0, 0, 0, 0], s, first, units, dm)
                for xi in range(16):
                    gemm(c'N', c'T', tiles, in_channels, out_channels, 1,
                         dm + xi * _plane(out_channels, tiles), tiles,
                         &u[xi, 0], in_channels, 0,
                         dv + xi * _plane(in_channels, tiles), tiles)
                _adjoint_input(dv, s, first, units, &grad_input[0, 0, 0, 0], rows)
            free(dv)


def winograd_grad_weight_into(const floating[:, :, :, ::1] x,
                              const floating[:, :, :, ::1] grad_out,
                              floating[:, :, ::1] partial, tuple padding,
                              int rows_per_block, int num_threads):
    """partial[thread, ξ] = Σ_tiles dM[ξ] V[ξ]ᵀ over the thread's blocks, the gradient of
    ``u``; its values on entry are not read (``part_beta``).

    ``partial`` is (threads, 16, plane) laid out like ``u``; the caller sums over threads and
    maps the result back to 3×3 weights (``Gᵀ dU G``).
    """
    cdef int n_images = x.shape[0], in_channels = x.shape[1]
    cdef int out_channels = grad_out.shape[1]
    cdef int blocks, block, first, units, tiles, xi, thread
    cdef Tiling s = _tiling(n_images, in_channels, out_channels, x.shape[2], x.shape[3],
                            padding, grad_out.shape[2], grad_out.shape[3], 0, 1,
                            rows_per_block, &blocks)
    cdef size_t max_tiles = <size_t>rows_per_block * s.tiles_x
    cdef int parts = partial.shape[0]
    cdef floating* v
    cdef floating* dm
    cdef floating* rows
    cdef floating beta
    cdef char* written
    if n_images == 0 or s.rows_per_image == 0 or s.tiles_x == 0:
        blocks = 0
    if parts == 0:
        return
    written = <char*>calloc(parts, 1)
    if written == NULL:
        raise MemoryError()
    with nogil, parallel(num_threads=num_threads):
        v = _scratch(s, max_tiles, <floating*>NULL)
        dm = v + _input_planes(s, max_tiles)
        rows = dm + _output_planes(s, max_tiles)
        for block in prange(blocks, schedule="static"):
            thread = threadid()
            first = block * s.rows_per_block
            units = _block_units(s, block, n_images)
            tiles = units * s.tiles_x
            _transform_input(&x[0, 0, 0, 0], s, first, units, v, rows, 0, in_channels)
            _adjoint_output(&grad_out[0, 0, 0, 0], s, first, units, dm)
            beta = part_beta(written, thread)
            for xi in range(16):
                gemm(c'T', c'N', in_channels, out_channels, tiles, 1,
                     v + xi * _plane(in_channels, tiles), tiles,
                     dm + xi * _plane(out_channels, tiles), tiles, beta,
                     &partial[thread, xi, 0], in_channels)
        free(v)
    zero_unwritten_parts(&partial[0, 0, 0], <size_t>partial.shape[1] * partial.shape[2],
                         parts, written)
    free(written)


cdef inline void _transform_filter(const floating* g, Py_ssize_t step, floating* u,
                                   Py_ssize_t plane, Py_ssize_t column) noexcept nogil:
    """u[ξ * plane + column] = (G g Gᵀ)[ξ] for the 3×3 filter whose row-major value i is
    g[i * step] (step -1 from its last value: the filter turned by 180 degrees)."""
    cdef floating rows[4][3]
    cdef floating half = 0.5
    cdef int r, q
    for q in range(3):
        rows[0][q] = g[q * step]
        rows[1][q] = half * (g[q * step] + g[(3 + q) * step] + g[(6 + q) * step])
        rows[2][q] = half * (g[q * step] - g[(3 + q) * step] + g[(6 + q) * step])
        rows[3][q] = g[(6 + q) * step]
    for r in range(4):
        u[4 * r * plane + column] = rows[r][0]
        u[(4 * r + 1) * plane + column] = half * (rows[r][0] + rows[r][1] + rows[r][2])
        u[(4 * r + 2) * plane + column] = half * (rows[r][0] - rows[r][1] + rows[r][2])
        u[(4 * r + 3) * plane + column] = rows[r][2]


cdef inline Py_ssize_t _packed_size(Py_ssize_t rows, Py_ssize_t depth) noexcept nogil:
    """Values of one ξ's (rows, depth) matrix in panels of PANEL_ROWS rows."""
    return (rows + _PANEL_ROWS - 1) // _PANEL_ROWS * _PANEL_ROWS * depth


cdef inline Py_ssize_t _panel_index(Py_ssize_t row, Py_ssize_t column,
                                    Py_ssize_t depth) noexcept nogil:
    """Where (row, column) of a (rows, depth) matrix lies in its panels (as
    ``kernels.pointwise.pack`` lays them out: (ceil(rows / 8), depth, 8))."""
    return (row // _PANEL_ROWS * depth + column) * _PANEL_ROWS + row % _PANEL_ROWS


def packed_size(Py_ssize_t rows, Py_ssize_t depth):
    """Values of one ξ's (rows, depth) matrix in panels (``transform_weight_into``)."""
    return _packed_size(rows, depth)


def transform_weight_into(const floating[:, :, :, ::1] weight, floating[:, ::1] u,
                          int num_threads=1, bint flipped=False, bint packed=False):
    """u[ξ, o*C_in + c] = (G g Gᵀ)[ξ] for each 3×3 filter g = weight[o, c].

    ``flipped``: the transform of the input gradient's forward conv instead, whose
    filters are weight's turned by 180 degrees with the channels swapped:
    u[ξ, c*C_out + o] from g = weight[o, c, ::-1, ::-1] (no flipped copy is made).
    ``u`` is (16, plane) with plane ≥ C_out·C_in (rows padded apart, see the callers).
    ``packed``: each ξ's matrix in panels of 8 rows (``_panel_index``; plane ≥
    ``packed_size``), the rows past the last zero, for ``winograd_forward_into``'s
    register tiles. Threads take whole rows of ``u``'s matrices; each value is computed
    the same way by any thread.
    """
    cdef Py_ssize_t o, c, column, rows, depth
    cdef int xi
    cdef Py_ssize_t out_channels = weight.shape[0], in_channels = weight.shape[1]
    cdef Py_ssize_t plane = u.shape[1]
    cdef const floating* g
    cdef floating* target
    if out_channels == 0 or in_channels == 0:
        return
    if weight.shape[2] != 3 or weight.shape[3] != 3 or u.shape[0] != 16 \
            or plane < out_channels * in_channels:
        raise ValueError("transform_weight_into: weight must be (C_out, C_in, 3, 3) and u "
                         "(16, >= C_out*C_in), got (%d, %d, %d, %d) and (%d, %d)"
                         % (weight.shape[0], weight.shape[1], weight.shape[2],
                            weight.shape[3], u.shape[0], u.shape[1]))
    rows = in_channels if flipped else out_channels
    depth = out_channels if flipped else in_channels
    if packed and plane < _packed_size(rows, depth):
        raise ValueError("transform_weight_into: packed u must be (16, >= %d), got (%d, %d)"
                         % (_packed_size(rows, depth), u.shape[0], plane))
    g = &weight[0, 0, 0, 0]
    target = &u[0, 0]
    with nogil:
        if packed and rows % _PANEL_ROWS:
            for xi in range(16):   # the last panel, whose rows past the matrix stay zero
                for o in range(_packed_size(rows, depth) - _PANEL_ROWS * depth,
                               _packed_size(rows, depth)):
                    target[xi * plane + o] = 0
        if flipped:
            # by rows of the result (weight's input channels): its writes run in order
            for c in prange(in_channels, num_threads=max(1, num_threads), schedule="static"):
                for o in range(out_channels):
                    _transform_filter(g + 9 * (o * in_channels + c) + 8, -1, target, plane,
                                      _panel_index(c, o, depth) if packed
                                      else c * out_channels + o)
        else:
            for o in prange(out_channels, num_threads=max(1, num_threads), schedule="static"):
                for c in range(in_channels):
                    column = o * in_channels + c
                    _transform_filter(g + 9 * column, 1, target, plane,
                                      _panel_index(o, c, depth) if packed else column)


cdef enum:
    _COLUMNS = 64   # filters per step of weight_from_transformed_into


cdef void _filters_from_transformed(const floating* partial, Py_ssize_t parts,
                                    Py_ssize_t part_stride, Py_ssize_t plane,
                                    Py_ssize_t first, int count,
                                    floating* weight) noexcept nogil:
    """Filters ``first .. first + count`` (row-major 3×3 each, from ``weight``) = Gᵀ D G,
    D[ξ] = Σ_t partial[t * part_stride + ξ * plane + column], the parts summed in order.
    The sums are gathered for ``count`` columns at once: one filter at a time read 16
    values from each of 16 * parts planes, which the prefetchers did not follow."""
    cdef floating d[16][_COLUMNS]
    cdef floating rows[3][4]
    cdef floating half = 0.5
    cdef Py_ssize_t t
    cdef int r, q, xi, j
    cdef const floating* source
    cdef floating* g
    for xi in range(16):
        source = partial + xi * plane + first
        for j in range(count):
            d[xi][j] = source[j]
        for t in range(1, parts):
            source = partial + t * part_stride + xi * plane + first
            for j in range(count):
                d[xi][j] += source[j]
    for j in range(count):
        g = weight + 9 * (first + j)
        for q in range(4):
            rows[0][q] = d[q][j] + half * (d[4 + q][j] + d[8 + q][j])
            rows[1][q] = half * (d[4 + q][j] - d[8 + q][j])
            rows[2][q] = half * (d[4 + q][j] + d[8 + q][j]) + d[12 + q][j]
        for r in range(3):
            g[3 * r] = rows[r][0] + half * (rows[r][1] + rows[r][2])
            g[3 * r + 1] = half * (rows[r][1] - rows[r][2])
            g[3 * r + 2] = half * (rows[r][1] + rows[r][2]) + rows[r][3]


def weight_from_transformed_into(const floating[:, :, ::1] partial,
                                 floating[:, :, :, ::1] weight, int num_threads=1):
    """weight[o, c] = Gᵀ D G, D the 4×4 of Σ_t partial[t, ξ, o*C_in + c]: the transform's
    adjoint, summing the threads' parts on the way (in order, so any ``num_threads``
    gives the same values; threads take runs of whole filters)."""
    cdef Py_ssize_t filters = weight.shape[0] * weight.shape[1], parts = partial.shape[0]
    cdef Py_ssize_t plane = partial.shape[2], step
    if filters == 0 or parts == 0:
        return
    if (weight.shape[2] != 3 or weight.shape[3] != 3 or partial.shape[1] != 16
            or plane < filters):
        raise ValueError("weight_from_transformed_into: partial must be (T, 16, >= C_out*C_in) "
                         "and weight (C_out, C_in, 3, 3)")
    cdef const floating* source = &partial[0, 0, 0]
    cdef floating* target = &weight[0, 0, 0, 0]
    with nogil:
        for step in prange((filters + _COLUMNS - 1) // _COLUMNS,
                           num_threads=max(1, num_threads), schedule="static"):
            _filters_from_transformed(source, parts, 16 * plane, plane, step * _COLUMNS,
                                      <int>min(_COLUMNS, filters - step * _COLUMNS), target)
