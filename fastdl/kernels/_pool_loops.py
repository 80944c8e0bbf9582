"""The compiled loops behind ``fastdl.kernels.pool`` (see its design notes).

Plain-Python kernels over planes ``(N*C, H, W)``, bound through ``jit``.
"""
import numpy as np

from fastdl.kernels._jit import jit, prange

# planes per parallel task: scratch rows are allocated once per task
_PLANES_PER_TASK = 8


def _padded_length(width, out_w, kernel, stride, pad):
    # a row between pads: room for every window (ceil_mode's last may overhang)
    return max((out_w - 1) * stride + kernel, pad + width)


_padded_length = jit(_padded_length, inline="always")


def _window_max_range(row, row_start, w_starts, w_stops, first, stop, best_row, code_row):
    # Windows first..stop-1 of one row, any bounds: the max and the position
    # (row_start + column) of its first maximum.
    for o in range(first, stop):
        best = row[w_starts[o]]
        position = w_starts[o]
        for w in range(w_starts[o] + 1, w_stops[o]):
            value = row[w]
            take = (value > best) | (value != value)   # NaN wins, as in torch
            best = value if take else best
            position = w if take else position
        best_row[o] = best
        code_row[o] = row_start + position


_window_max_range_kernel = jit(_window_max_range, inline="always")


def _column_window_max(x, kernel, stride, pad, w_starts, w_stops, row_best, row_codes):
    # Pass 1 of max pooling: the max of every column window of every row of a plane
    # and the flat position h * W + w (int32) of its first maximum.
    height, width = x.shape
    count = row_best.shape[1]
    if kernel == 3 and stride == 2 and width == 2 * count:
        # The overlapping 3-wide, stride-2 windows (ResNet's stem pool) on even
        # rows. A row holds 16 to 64 windows, too few for a vectorised loop (LLVM
        # runs one that short scalar), so one loop runs over the whole plane: with
        # W = 2 * count, window i = h count + o starts at flat position 2 i - pad.
        # The taps' literal offsets become shuffles, the compare-selects vectors
        # (int32 positions: as many lanes as float32 values). The windows over the
        # padding, read across row ends there, are redone by the general loop.
        first = (pad + 1) // 2
        stop = min(count, (width - 3 + pad) // 2 + 1)
        best_flat = row_best.reshape(-1)[first:]
        codes_flat = row_codes.reshape(-1)[first:]
        windows = height * count - (count - stop) - first
        start = 2 * first - pad
        taps = x.reshape(-1)[start:]   # indexed from 0: no wraparound tests
        for i in range(windows):
            position = np.int32(start + 2 * i)
            best = taps[2 * i]
            code = position
            value = taps[2 * i + 1]
            take = (value > best) | (value != value)   # NaN wins, as in torch
            best = value if take else best
            code = position + np.int32(1) if take else code
            value = taps[2 * i + 2]
            take = (value > best) | (value != value)
            best = value if take else best
            code = position + np.int32(2) if take else code
            best_flat[i] = best
            codes_flat[i] = code
    else:
        first = stop = count
    for h in range(height):
        _window_max_range_kernel(x[h], h * width, w_starts, w_stops, 0, first, row_best[h],
                                 row_codes[h])
        _window_max_range_kernel(x[h], h * width, w_starts, w_stops, stop, count,
                                 row_best[h], row_codes[h])


_column_window_max_kernel = jit(_column_window_max, inline="always")


def _max_pool2d_plane(x, h_starts, h_stops, w_starts, w_stops, kernel_w, stride_w, pad_w,
                      row_best, row_codes, best_codes, out, indices):
    # Separable: the max of a window is the max over its rows of each row's
    # max. Pass 1 takes, for every input row, the max of each column window;
    # pass 2 the max of those over each row window, with the inner loop over
    # independent outputs (one loop per window would be one long compare-select
    # dependency chain). Scanning rows, then columns, in order
    # with a strict '>' keeps torch's first-maximum rule. Positions travel as int32
    # codes h * W + w (as many vector lanes as float32 values), widened to the int64
    # indices once per output row.
    out_h, out_w = out.shape
    _column_window_max_kernel(x, kernel_w, stride_w, pad_w, w_starts, w_stops, row_best,
                              row_codes)
    for oh in range(out_h):
        out_row = out[oh]
        first = h_starts[oh]
        # Every select picks between values already loaded: a load under a
        # condition ('row_codes[h, ow] if take else ...') keeps LLVM from vectorising.
        if h_stops[oh] - first == 3:   # the 3-row windows in one pass
            top, middle, bottom = row_best[first], row_best[first + 1], row_best[first + 2]
            top_codes = row_codes[first]
            middle_codes = row_codes[first + 1]
            bottom_codes = row_codes[first + 2]
            for ow in range(out_w):
                best = top[ow]
                code = top_codes[ow]
                value = middle[ow]
                value_code = middle_codes[ow]
                take = (value > best) | (value != value)
                best = value if take else best
                code = value_code if take else code
                value = bottom[ow]
                value_code = bottom_codes[ow]
                take = (value > best) | (value != value)
                out_row[ow] = value if take else best
                best_codes[ow] = value_code if take else code
        else:
            for ow in range(out_w):
                out_row[ow] = row_best[first, ow]
                best_codes[ow] = row_codes[first, ow]
            for h in range(first + 1, h_stops[oh]):
                for ow in range(out_w):
                    best = out_row[ow]
                    code = best_codes[ow]
                    value = row_best[h, ow]
                    value_code = row_codes[h, ow]
                    take = (value > best) | (value != value)
                    out_row[ow] = value if take else best
                    best_codes[ow] = value_code if take else code
        index_row = indices[oh]
        for ow in range(out_w):
            index_row[ow] = best_codes[ow]


_max_pool2d_plane_kernel = jit(_max_pool2d_plane)


def _max_pool2d_forward(x, h_starts, h_stops, w_starts, w_stops, kernel_w, stride_w, pad_w,
                        out, indices):
    # positions within a plane are int32: planes hold fewer than 2**31 cells
    planes, height = x.shape[0], x.shape[1]
    out_w = out.shape[2]
    for task in prange((planes + _PLANES_PER_TASK - 1) // _PLANES_PER_TASK):
        row_best = np.empty((height, out_w), dtype=x.dtype)
        row_codes = np.empty((height, out_w), dtype=np.int32)
        best_codes = np.empty(out_w, dtype=np.int32)
        for plane in range(task * _PLANES_PER_TASK,
                           min((task + 1) * _PLANES_PER_TASK, planes)):
            _max_pool2d_plane_kernel(x[plane], h_starts, h_stops, w_starts, w_stops, kernel_w,
                                     stride_w, pad_w, row_best, row_codes, best_codes,
                                     out[plane], indices[plane])


def _max_pool2d_forward_2x2(x, out, indices):
    # The common 2x2 / stride 2 / no padding case with every window full:
    # straight-line compares that LLVM turns into selects and vectorises (a
    # window loop with run-time bounds is several times slower here).
    planes, width = x.shape[0], x.shape[2]
    out_h, out_w = out.shape[1], out.shape[2]
    for plane in prange(planes):
        for oh in range(out_h):
            top, bottom = 2 * oh, 2 * oh + 1
            for ow in range(out_w):
                left, right = 2 * ow, 2 * ow + 1
                best = x[plane, top, left]
                best_index = top * width + left
                value = x[plane, top, right]
                if value > best or value != value:
                    best = value
                    best_index = top * width + right
                value = x[plane, bottom, left]
                if value > best or value != value:
                    best = value
                    best_index = bottom * width + left
                value = x[plane, bottom, right]
                if value > best or value != value:
                    best = value
                    best_index = bottom * width + right
                out[plane, oh, ow] = best
                indices[plane, oh, ow] = best_index


def _max_pool2d_backward(grad_out, indices, grad_x, out_of_range):
    # grad_x is (planes, H * W): the flat index needs no division. Each plane
    # is zeroed right before its scatter, while it is in cache. Indices not
    # made by the forward are never followed out of the plane: they are
    # counted in out_of_range (a well-predicted branch, no measurable cost).
    planes, out_h, out_w = grad_out.shape
    plane_size = grad_x.shape[1]
    for plane in prange(planes):
        grad_x[plane, :] = 0
        for oh in range(out_h):
            for ow in range(out_w):
                index = indices[plane, oh, ow]
                if 0 <= index < plane_size:
                    grad_x[plane, index] += grad_out[plane, oh, ow]
                else:
                    out_of_range[plane] += 1


max_pool2d_forward_kernel = jit(_max_pool2d_forward, parallel=True)
max_pool2d_forward_2x2_kernel = jit(_max_pool2d_forward_2x2, parallel=True)
# Serial twins for small inputs (batch-1 inference): waking the thread pool costs
# tens of µs, more than pooling a LeNet-sized map.
_max_pool2d_forward_serial = jit(_max_pool2d_forward)
_max_pool2d_forward_2x2_serial = jit(_max_pool2d_forward_2x2)
max_pool2d_backward_kernel = jit(_max_pool2d_backward, parallel=True)


def _window_mean_plane(x, h_starts, h_stops, h_counts, w_starts, w_stops, w_counts,
                       row_sums, window_sums, out):
    # Separable, as max pooling: column-window sums of every input row
    # (float64), then row-window sums of those, divided by the window count.
    out_h, out_w = out.shape
    for h in range(x.shape[0]):
        row = x[h]
        for ow in range(out_w):
            # a slice indexed from 0: no wraparound checks, so the sum vectorises
            window = row[w_starts[ow]:w_stops[ow]]
            total = np.float64(0.0)
            for i in range(window.shape[0]):
                total += window[i]
            row_sums[h, ow] = total
    for oh in range(out_h):
        window_sums[:] = 0.0
        for h in range(h_starts[oh], h_stops[oh]):
            for ow in range(out_w):
                window_sums[ow] += row_sums[h, ow]
        for ow in range(out_w):
            out[oh, ow] = window_sums[ow] / (h_counts[oh] * w_counts[ow])


def _window_mean_plane_backward(grad_out, h_starts, h_stops, h_counts, w_starts, w_stops,
                                w_counts, row_grads, grad_x):
    # The transpose of the forward: each output's share goes to its row
    # window (per output column), then from there to its column window.
    out_h, out_w = grad_out.shape
    row_grads[:] = 0.0
    for oh in range(out_h):
        for h in range(h_starts[oh], h_stops[oh]):
            for ow in range(out_w):
                row_grads[h, ow] += grad_out[oh, ow] / (h_counts[oh] * w_counts[ow])
    grad_x[:] = 0
    for h in range(grad_x.shape[0]):
        grad_x_row = grad_x[h]
        for ow in range(out_w):
            for w in range(w_starts[ow], w_stops[ow]):
                grad_x_row[w] += row_grads[h, ow]


# reassociation vectorises the float64 window sums (rounding-level change only;
# the order is fixed at compile time, so results do not depend on threads)
_window_mean_plane_kernel = jit(_window_mean_plane, fastmath={"reassoc"})
_window_mean_plane_backward_kernel = jit(_window_mean_plane_backward)


def _window_mean_forward(x, h_starts, h_stops, h_counts, w_starts, w_stops, w_counts, out):
    planes, height = x.shape[0], x.shape[1]
    out_w = out.shape[2]
    for task in prange((planes + _PLANES_PER_TASK - 1) // _PLANES_PER_TASK):
        row_sums = np.empty((height, out_w))
        window_sums = np.empty(out_w)
        for plane in range(task * _PLANES_PER_TASK,
                           min((task + 1) * _PLANES_PER_TASK, planes)):
            _window_mean_plane_kernel(x[plane], h_starts, h_stops, h_counts, w_starts, w_stops,
                                      w_counts, row_sums, window_sums, out[plane])


def _window_mean_backward(grad_out, h_starts, h_stops, h_counts, w_starts, w_stops, w_counts,
                          grad_x):
    planes, out_w = grad_out.shape[0], grad_out.shape[2]
    height = grad_x.shape[1]
    for task in prange((planes + _PLANES_PER_TASK - 1) // _PLANES_PER_TASK):
        row_grads = np.empty((height, out_w))
        for plane in range(task * _PLANES_PER_TASK,
                           min((task + 1) * _PLANES_PER_TASK, planes)):
            _window_mean_plane_backward_kernel(grad_out[plane], h_starts, h_stops, h_counts,
                                               w_starts, w_stops, w_counts, row_grads,
                                               grad_x[plane])


def _scaled_window_sums(padded, kernel, stride, scale, sums, out_row):
    # out_row[o] = scale[o] * (the sum of padded[o * stride : o * stride + kernel])
    count = out_row.shape[0]
    for o in range(count):
        sums[o] = padded[stride * o]
    for j in range(1, kernel):
        for o in range(count):
            sums[o] += padded[stride * o + j]
    for o in range(count):
        out_row[o] = sums[o] * scale[o]


def _spread_windows(shares, kernel, stride, spread):
    # The transpose of _scaled_window_sums: spread[c] = the sum of the shares of the
    # windows covering padded column c. shares[1 + o] is window o's; shares[0] and
    # shares[-1] are 0, so the edge windows need no test.
    spread[:] = 0.0
    for j in range(kernel):
        for o in range(shares.shape[0] - 2):
            spread[stride * o + j] += shares[o + 1]


# The general windows' loops are called; the 3-wide stride-2 windows' are written
# out in the plane loops (literal offsets: LLVM turns the stride-2 loads and stores
# into shuffles, where a run-time stride makes gathers), and not through Numba's
# inliner, whose copies of these loops ran 1.7x slower.
_scaled_window_sums_kernel = jit(_scaled_window_sums)
_spread_windows_kernel = jit(_spread_windows)


def _avg_pool2d_plane(x, h_starts, h_stops, kernel_w, stride_w, pad_w, scales, padded, sums,
                      out):
    # Rows first: each output row's row window summed into a float64 row between
    # zero pads (contiguous, vectorised), then its column windows, scaled by the
    # reciprocal divisors: far fewer strided reads than columns first, and no
    # division in the loop.
    width = x.shape[1]
    inner = padded[pad_w:pad_w + width]   # indexed from 0: no wraparound tests
    for oh in range(out.shape[0]):
        first = x[h_starts[oh]]   # no window is empty (see kernels.pool)
        if h_stops[oh] - h_starts[oh] == 3:   # the 3-row windows in one pass
            second = x[h_starts[oh] + 1]
            third = x[h_starts[oh] + 2]
            for w in range(width):
                inner[w] = np.float64(first[w]) + second[w] + third[w]
        else:
            for w in range(width):
                inner[w] = first[w]
            for h in range(h_starts[oh] + 1, h_stops[oh]):
                row = x[h]
                for w in range(width):
                    inner[w] += row[w]
        out_row = out[oh]
        scale = scales[oh]
        if kernel_w == 3 and stride_w == 2:
            for o in range(out_row.shape[0]):
                out_row[o] = (padded[2 * o] + padded[2 * o + 1] + padded[2 * o + 2]) * scale[o]
        else:
            _scaled_window_sums_kernel(padded, kernel_w, stride_w, scale, sums, out_row)


def _spread_rows(grad_out, scales, kernel_w, stride_w, shares, spread):
    # spread[1 + oh]: output row oh's gradients, scaled by their reciprocal divisors,
    # spread over the padded columns of their windows (rows 0 and out_h + 1, and the
    # cells no window covers, stay 0).
    out_w = grad_out.shape[1]
    share_row = shares[1:out_w + 1]
    for oh in range(grad_out.shape[0]):
        grad_row = grad_out[oh]
        scale = scales[oh]
        for ow in range(out_w):
            share_row[ow] = grad_row[ow] * scale[ow]
        target = spread[1 + oh]
        if kernel_w == 3 and stride_w == 2:
            # window o covers 2o, 2o+1, 2o+2: even cells take two windows, odd ones one
            for m in range(out_w + 1):
                target[2 * m] = shares[m] + shares[m + 1]
                target[2 * m + 1] = shares[m + 1]
        else:
            _spread_windows_kernel(shares, kernel_w, stride_w, target)


_spread_rows_kernel = jit(_spread_rows)


def _avg_pool2d_plane_backward(grad_out, scales, kernel_w, stride_w, pad_w, first_out,
                               stop_out, shares, spread, total, grad_x):
    # The transpose: the output rows spread over their columns (_spread_rows), then
    # each input row gathers the spread rows of the row windows covering it
    # (first_out[h] to stop_out[h]), so each grad_x cell is written once, with no
    # zero fill and no atomics.
    _spread_rows_kernel(grad_out, scales, kernel_w, stride_w, shares, spread)
    width = grad_x.shape[1]
    for h in range(grad_x.shape[0]):
        first, stop = 1 + first_out[h], 1 + stop_out[h]
        grad_row = grad_x[h]
        if stop - first == 1:
            source = spread[first, pad_w:pad_w + width]
            for w in range(width):
                grad_row[w] = source[w]
        elif stop - first == 2:   # overlapping windows (stride < kernel)
            source = spread[first, pad_w:pad_w + width]
            second = spread[first + 1, pad_w:pad_w + width]
            for w in range(width):
                grad_row[w] = source[w] + second[w]
        else:   # no window (stride > kernel: 0), or three and more
            total[:] = 0.0
            for oh in range(first, stop):
                source = spread[oh, pad_w:pad_w + width]
                for w in range(width):
                    total[w] += source[w]
            for w in range(width):
                grad_row[w] = total[w]


def _avg_pool2d_plane_backward_3x3s2(grad_out, scales, pad_h, pad_w, shares, spread,
                                     grad_x):
    # The 3x3 stride-2 windows in both directions: window row oh covers padded rows
    # 2 oh, 2 oh + 1 and 2 oh + 2, so an odd padded row 2m + 1 takes window row m
    # alone and an even one 2m takes rows m - 1 and m (spread rows 1 + m and m; the
    # zero rows 0 and out_h + 1 stand for the windows before and after), so every
    # input row is one loop without bounds tests.
    _spread_rows_kernel(grad_out, scales, 3, 2, shares, spread)
    height, width = grad_x.shape
    for h in range(height):
        padded_row = h + pad_h
        half = padded_row // 2
        grad_row = grad_x[h]
        window = spread[1 + half, pad_w:pad_w + width]
        if padded_row % 2:
            for w in range(width):
                grad_row[w] = window[w]
        else:
            previous = spread[half, pad_w:pad_w + width]
            for w in range(width):
                grad_row[w] = previous[w] + window[w]


_avg_pool2d_plane_kernel = jit(_avg_pool2d_plane)
_avg_pool2d_plane_backward_kernel = jit(_avg_pool2d_plane_backward)
_avg_pool2d_plane_backward_3x3s2_kernel = jit(_avg_pool2d_plane_backward_3x3s2)


def _avg_pool2d_forward(x, h_starts, h_stops, kernel_w, stride_w, pad_w, scales, out):
    planes, width = x.shape[0], x.shape[2]
    out_w = out.shape[2]
    for task in prange((planes + _PLANES_PER_TASK - 1) // _PLANES_PER_TASK):
        padded = np.zeros(_padded_length(width, out_w, kernel_w, stride_w, pad_w))
        sums = np.empty(out_w)
        for plane in range(task * _PLANES_PER_TASK,
                           min((task + 1) * _PLANES_PER_TASK, planes)):
            _avg_pool2d_plane_kernel(x[plane], h_starts, h_stops, kernel_w, stride_w, pad_w,
                                     scales, padded, sums, out[plane])


def _avg_pool2d_backward(grad_out, scales, kernel_h, stride_h, pad_h, kernel_w, stride_w,
                         pad_w, first_out, stop_out, grad_x):
    planes, out_h, out_w = grad_out.shape
    width = grad_x.shape[2]
    length = _padded_length(width, out_w, kernel_w, stride_w, pad_w)
    fast = kernel_h == 3 and stride_h == 2 and kernel_w == 3 and stride_w == 2
    for task in prange((planes + _PLANES_PER_TASK - 1) // _PLANES_PER_TASK):
        shares = np.zeros(out_w + 2)
        # one column more: the 3-wide stride-2 spread writes its last cell, a 0, there
        spread = np.zeros((out_h + 2, length + 1))
        total = np.empty(width)
        for plane in range(task * _PLANES_PER_TASK,
                           min((task + 1) * _PLANES_PER_TASK, planes)):
            if fast:
                _avg_pool2d_plane_backward_3x3s2_kernel(grad_out[plane], scales, pad_h, pad_w,
                                                        shares, spread, grad_x[plane])
            else:
                _avg_pool2d_plane_backward_kernel(grad_out[plane], scales, kernel_w, stride_w,
                                                  pad_w, first_out, stop_out, shares, spread,
                                                  total, grad_x[plane])


avg_pool2d_forward_kernel = jit(_avg_pool2d_forward, parallel=True)
avg_pool2d_backward_kernel = jit(_avg_pool2d_backward, parallel=True)


def _avg_pool2d_forward_2x2(x, out):
    # 2x2 windows tiling the input (as max pooling's fast path)
    for plane in prange(x.shape[0]):
        for oh in range(out.shape[1]):
            top = x[plane, 2 * oh]
            bottom = x[plane, 2 * oh + 1]
            out_row = out[plane, oh]
            for ow in range(out.shape[2]):
                total = (np.float64(top[2 * ow]) + top[2 * ow + 1]
                         + bottom[2 * ow] + bottom[2 * ow + 1])
                out_row[ow] = 0.25 * total


def _avg_pool2d_backward_2x2(grad_out, grad_x):
    out_h, out_w = grad_out.shape[1], grad_out.shape[2]
    for plane in prange(grad_x.shape[0]):
        # rows and columns past the last full window (odd H or W) get nothing
        grad_x[plane, 2 * out_h:, :] = 0
        grad_x[plane, :, 2 * out_w:] = 0
        for oh in range(out_h):
            grad_row = grad_out[plane, oh]
            for h in range(2 * oh, 2 * oh + 2):
                grad_x_row = grad_x[plane, h]
                for w in range(2 * out_w):
                    grad_x_row[w] = 0.25 * grad_row[w // 2]


avg_pool2d_forward_2x2_kernel = jit(_avg_pool2d_forward_2x2, parallel=True)
avg_pool2d_backward_2x2_kernel = jit(_avg_pool2d_backward_2x2, parallel=True)
window_mean_forward_kernel = jit(_window_mean_forward, parallel=True)
window_mean_backward_kernel = jit(_window_mean_backward, parallel=True)


def _global_mean_backward(grad_out, grad_x):
    for plane in prange(grad_x.shape[0]):
        grad_x[plane, :] = grad_out[plane] / grad_x.shape[1]


global_mean_backward_kernel = jit(_global_mean_backward, parallel=True)
