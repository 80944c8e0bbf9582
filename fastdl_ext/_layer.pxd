# cython: language_level=3
"""One direct conv of a chain (``direct.pyx``): as described (``ConvStep``), and checked and
laid out (``Layer``, ``_layer.pyx``)."""
from libc.string cimport memcmp

from fastdl_ext._blocks cimport Grid
from fastdl_ext._phases cimport Phases, View


cdef struct Layer:
    # One direct conv of a chain, checked and laid out; pointers are to arrays the
    # caller keeps alive, of the chain's dtype.
    Phases phases
    int kernel_h, kernel_w, taps, co_blocks, co_block, lanes, grid_row
    int group, groups   # register blocks of channels per work item, and items per band
    Grid grid
    int n_images, out_channels, out_h, out_w
    int bands, per_image, chunk, total, threads, done_items, sleepers
    int* taken   # per thread, of its share of the items (``_take_items``)
    Py_ssize_t padded_size, wide_stride, image_in, plane
    View x_view, out_view, residual_view
    const void* x
    const void* packed
    const void* bias
    const void* residual
    void* out
    Py_ssize_t* offsets
    bint activate, pool, image_lanes
    bint in_place   # x is stored as (a superset of) this conv's padded planes: read there
    bint winograd   # by F(2x2, 3x3), ``packed`` the transformed weights (``_winograd_layout``)
    int tiles_x, tiles_y
    Py_ssize_t band_tiles, input_plane, product_plane
    bint phased_out   # out is stored in phase planes (``_epilogue_phases``)
    bint reads_first, adds_first   # x / residual is the chain's first input
    double slope


cdef class ConvStep:
    # one conv of a chain, as its caller describes it (``_layer.pyx``)
    cdef readonly object x, packed, out, bias, residual
    cdef readonly tuple kernel_size, padding, stride, layouts, winograd_items
    cdef readonly bint activate, pool
    cdef readonly double slope


cdef inline int _grid_row(int out_w, int cols) noexcept nogil:
    return out_w if out_w % 8 == 0 else cols   # as ``row_vectors`` in ``_fill_grid``


cdef inline bint _same_padding(const Layer* zeroed, const Layer* layer) noexcept nogil:
    # whether ``layer`` pads its images into the layout ``zeroed`` left in the buffer
    return (zeroed != NULL and zeroed.image_lanes == layer.image_lanes
            and zeroed.padded_size == layer.padded_size
            and memcmp(&zeroed.phases, &layer.phases, sizeof(Phases)) == 0)


cdef inline void _tile_band(const Layer* layer, int band, int* first, int* end) noexcept nogil:
    # the tile rows [first, end) of a Winograd layer's band
    first[0] = band * layer.tiles_y // layer.bands
    end[0] = (band + 1) * layer.tiles_y // layer.bands


cdef int _fill_layer(Layer* layer, ConvStep step, int num_threads, int typenum) except -1
