"""Fused optimizer updates over flat parameter, gradient and state buffers.

An optimizer keeps every parameter in one contiguous buffer (and likewise the
gradients and each state slot). The buffer is cut into fixed-size chunks, each
inside one parameter's segment; one parallel Numba loop over the chunks
updates everything in a single pass. Per-segment arrays carry what differs
between parameters: whether it is active this step (it has a gradient), its
step count, and its group's hyper-parameters (``hyper[segment, j]``).

The update rules are exactly those of ``torch.optim`` (DESIGN.md seed errata:
momentum ``v ← μv + g; θ ← θ − ηv``; Adam with bias correction).
"""
import numpy as np

from fastdl.kernels._jit import jit, prange

__all__ = ["make_chunks", "sgd_update", "adagrad_update", "rmsprop_update", "adam_update",
           "adadelta_update", "adamax_update", "nadam_update", "radam_update",
           "sum_of_squares", "max_abs", "scale_"]

#: Elements per chunk: large enough to amortise the loop overhead, small enough to balance.
CHUNK = 1 << 15


def make_chunks(segment_starts, segment_sizes):
    """(chunk_start, chunk_end, chunk_segment) int64 arrays covering every segment."""
    starts, ends, owners = [], [], []
    for segment, (start, size) in enumerate(zip(segment_starts, segment_sizes)):
        for offset in range(0, size, CHUNK):
            starts.append(start + offset)
            ends.append(start + min(offset + CHUNK, size))
            owners.append(segment)
    return (np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64),
            np.array(owners, dtype=np.int64))


def _sgd(params, grads, momentum_buffer, chunks_start, chunks_end, chunks_segment, active,
         steps, hyper):
    # hyper columns: lr, momentum, dampening, weight_decay, nesterov, maximize
    for chunk in prange(chunks_start.shape[0]):
        segment = chunks_segment[chunk]
        if not active[segment]:
            continue
        lr, momentum, dampening, decay = (hyper[segment, 0], hyper[segment, 1],
                                          hyper[segment, 2], hyper[segment, 3])
        first = steps[segment] == 1
        nesterov = hyper[segment, 4] != 0
        sign = -1 if hyper[segment, 5] != 0 else 1   # maximize: ascend
        start, stop = chunks_start[chunk], chunks_end[chunk]
        p, grad, buffer = params[start:stop], grads[start:stop], momentum_buffer[start:stop]
        for i in range(p.shape[0]):   # from 0 over slices: LLVM vectorises this
            g = sign * grad[i]
            if decay != 0:
                g = g + decay * p[i]
            if momentum != 0:
                if first:
                    buf = g
                else:
                    buf = momentum * buffer[i] + (1 - dampening) * g
                buffer[i] = buf
                g = g + momentum * buf if nesterov else buf
            p[i] = p[i] - lr * g


def _adagrad(params, grads, state_sum, chunks_start, chunks_end, chunks_segment, active, steps,
             hyper):
    # hyper columns: lr, lr_decay, weight_decay, eps, maximize
    for chunk in prange(chunks_start.shape[0]):
        segment = chunks_segment[chunk]
        if not active[segment]:
            continue
        decay, eps = hyper[segment, 2], hyper[segment, 3]
        clr = hyper[segment, 0] / (1 + (steps[segment] - 1) * hyper[segment, 1])
        sign = -1 if hyper[segment, 4] != 0 else 1
        start, stop = chunks_start[chunk], chunks_end[chunk]
        p, grad, total = params[start:stop], grads[start:stop], state_sum[start:stop]
        for i in range(p.shape[0]):
            g = sign * grad[i]
            if decay != 0:
                g = g + decay * p[i]
            total[i] = total[i] + g * g
            p[i] = p[i] - clr * (g / (np.sqrt(total[i]) + eps))


def _rmsprop(params, grads, square_avg, grad_avg, momentum_buffer, chunks_start, chunks_end,
             chunks_segment, active, steps, hyper):
    # hyper columns: lr, alpha, eps, weight_decay, momentum, centered, maximize
    for chunk in prange(chunks_start.shape[0]):
        segment = chunks_segment[chunk]
        if not active[segment]:
            continue
        lr, alpha, eps = hyper[segment, 0], hyper[segment, 1], hyper[segment, 2]
        decay, momentum = hyper[segment, 3], hyper[segment, 4]
        centered = hyper[segment, 5] != 0
        sign = -1 if hyper[segment, 6] != 0 else 1
        start, stop = chunks_start[chunk], chunks_end[chunk]
        p, grad = params[start:stop], grads[start:stop]
        square, mean, buffer = (square_avg[start:stop], grad_avg[start:stop],
                                momentum_buffer[start:stop])
        for i in range(p.shape[0]):
            g = sign * grad[i]
            if decay != 0:
                g = g + decay * p[i]
            square[i] = alpha * square[i] + (1 - alpha) * g * g
            if centered:
                mean[i] = alpha * mean[i] + (1 - alpha) * g
                avg = np.sqrt(square[i] - mean[i] * mean[i]) + eps
            else:
                avg = np.sqrt(square[i]) + eps
            if momentum > 0:
                buffer[i] = momentum * buffer[i] + g / avg
                p[i] = p[i] - lr * buffer[i]
            else:
                p[i] = p[i] - lr * (g / avg)


def _adam_plain(param, grad, first, second, weight_scale, sign, beta1, beta2, keep1, keep2,
                step_size, bias_correction2_sqrt, eps):
    """Adam's update without AMSGrad or gradient-coupled weight decay (AdamW's
    decoupled decay is ``weight_scale``; 1 without decay, exact): a branch-free loop
    that LLVM vectorises (the general loop, with those branches inside, ran at half
    the memory rate)."""
    for i in range(param.shape[0]):
        g = sign * grad[i]   # sign = -1 maximizes; exact
        m = beta1 * first[i] + keep1 * g
        v = beta2 * second[i] + keep2 * g * g
        first[i] = m
        second[i] = v
        param[i] = param[i] * weight_scale - step_size * (
            m / (np.sqrt(v) / bias_correction2_sqrt + eps))


_adam_plain_kernel = jit(_adam_plain, inline="always")


def _adam(params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, chunks_start, chunks_end,
          chunks_segment, active, steps, hyper):
    # hyper columns: lr, beta1, beta2, eps, weight_decay, amsgrad, maximize,
    # decoupled_weight_decay (AdamW)
    for chunk in prange(chunks_start.shape[0]):
        segment = chunks_segment[chunk]
        if not active[segment]:
            continue
        lr, beta1, beta2 = hyper[segment, 0], hyper[segment, 1], hyper[segment, 2]
        eps, decay = hyper[segment, 3], hyper[segment, 4]
        amsgrad = hyper[segment, 5] != 0
        decoupled = hyper[segment, 7] != 0
        step = steps[segment]
        # the scalars in float64, the elementwise update in the parameters' dtype
        # (as torch's fused Adam): float64 division and square root per element
        # made the float32 step compute-bound, 2x torch's time
        to_dtype = params.dtype.type
        bias_correction2_sqrt = to_dtype(np.sqrt(1 - beta2 ** step))
        step_size = to_dtype(lr / (1 - beta1 ** step))
        weight_scale = to_dtype(1 - lr * decay)
        sign = to_dtype(-1 if hyper[segment, 6] != 0 else 1)
        decay, eps = to_dtype(decay), to_dtype(eps)
        beta1, beta2 = to_dtype(beta1), to_dtype(beta2)
        keep1, keep2 = to_dtype(1 - hyper[segment, 1]), to_dtype(1 - hyper[segment, 2])
        start, stop = chunks_start[chunk], chunks_end[chunk]
        param, grad = params[start:stop], grads[start:stop]
        first, second, second_max = (exp_avg[start:stop], exp_avg_sq[start:stop],
                                     max_exp_avg_sq[start:stop])
        if not amsgrad and (decay == 0 or decoupled):
            # weight_scale is exactly 1 without decay
            _adam_plain_kernel(param, grad, first, second, weight_scale, sign, beta1, beta2,
                               keep1, keep2, step_size, bias_correction2_sqrt, eps)
            continue
        for i in range(param.shape[0]):
            g = sign * grad[i]
            p = param[i]
            if decay != 0:
                if decoupled:        # AdamW: decay the weights, not the gradient
                    p = p * weight_scale
                else:
                    g = g + decay * p
            m = beta1 * first[i] + keep1 * g
            v = beta2 * second[i] + keep2 * g * g
            first[i] = m
            second[i] = v
            if amsgrad:
                v = max(second_max[i], v)
                second_max[i] = v
            param[i] = p - step_size * (m / (np.sqrt(v) / bias_correction2_sqrt + eps))


def _adadelta(params, grads, square_avg, acc_delta, chunks_start, chunks_end, chunks_segment,
              active, steps, hyper):
    # hyper (float64) columns: lr, rho, eps, weight_decay, maximize
    for chunk in prange(chunks_start.shape[0]):
        segment = chunks_segment[chunk]
        if not active[segment]:
            continue
        to_dtype = params.dtype.type   # scalars in float64, elements in the params' dtype
        lr, rho, eps = to_dtype(hyper[segment, 0]), to_dtype(hyper[segment, 1]), \
            to_dtype(hyper[segment, 2])
        decay, keep = to_dtype(hyper[segment, 3]), to_dtype(1 - hyper[segment, 1])
        sign = to_dtype(-1 if hyper[segment, 4] != 0 else 1)
        start, stop = chunks_start[chunk], chunks_end[chunk]
        p, grad = params[start:stop], grads[start:stop]
        square, accumulated = square_avg[start:stop], acc_delta[start:stop]
        for i in range(p.shape[0]):
            g = sign * grad[i]
            if decay != 0:
                g = g + decay * p[i]
            square[i] = square[i] * rho + keep * g * g
            delta = np.sqrt(accumulated[i] + eps) / np.sqrt(square[i] + eps) * g
            accumulated[i] = accumulated[i] * rho + keep * delta * delta
            p[i] = p[i] - lr * delta


def _adamax(params, grads, exp_avg, exp_inf, chunks_start, chunks_end, chunks_segment, active,
            steps, hyper):
    # hyper (float64) columns: lr, beta1, beta2, eps, weight_decay, maximize
    for chunk in prange(chunks_start.shape[0]):
        segment = chunks_segment[chunk]
        if not active[segment]:
            continue
        to_dtype = params.dtype.type
        clr = to_dtype(hyper[segment, 0] / (1 - hyper[segment, 1] ** steps[segment]))
        keep1, beta2 = to_dtype(1 - hyper[segment, 1]), to_dtype(hyper[segment, 2])
        eps, decay = to_dtype(hyper[segment, 3]), to_dtype(hyper[segment, 4])
        sign = to_dtype(-1 if hyper[segment, 5] != 0 else 1)
        start, stop = chunks_start[chunk], chunks_end[chunk]
        p, grad, first, norm = (params[start:stop], grads[start:stop], exp_avg[start:stop],
                                exp_inf[start:stop])
        for i in range(p.shape[0]):
            g = sign * grad[i]
            if decay != 0:
                g = g + decay * p[i]
            first[i] = first[i] + keep1 * (g - first[i])   # torch's lerp
            norm[i] = max(norm[i] * beta2, abs(g) + eps)
            p[i] = p[i] - clr * (first[i] / norm[i])


def _decayed_moments_plain(g, weight, average, average_sq, decay, decoupled, weight_scale,
                           keep1, beta2, keep2):
    """One element's weight decay (L2 into ``g``, or decoupled into ``weight``) and its
    first and second moments, as NAdam and RAdam take them:
    ``(g, weight, average, average_sq)`` after the step."""
    if decay != 0:
        if decoupled:
            weight = weight * weight_scale
        else:
            g = g + decay * weight
    average = average + keep1 * (g - average)
    average_sq = average_sq * beta2 + keep2 * g * g
    return g, weight, average, average_sq


# inlined into the update loops, so each keeps its one pass over the buffers
_decayed_moments = jit(_decayed_moments_plain, inline="always")


def _nadam(params, grads, exp_avg, exp_avg_sq, chunks_start, chunks_end, chunks_segment,
           active, hyper, coefficients):
    # hyper (float64) columns: lr, beta1, beta2, eps, weight_decay, momentum_decay,
    # decoupled_weight_decay, maximize; coefficients (per segment, from the optimizer's
    # mu_product): grad_step, avg_step, bias_correction2
    for chunk in prange(chunks_start.shape[0]):
        segment = chunks_segment[chunk]
        if not active[segment]:
            continue
        to_dtype = params.dtype.type
        keep1, beta2 = to_dtype(1 - hyper[segment, 1]), to_dtype(hyper[segment, 2])
        keep2, eps = to_dtype(1 - hyper[segment, 2]), to_dtype(hyper[segment, 3])
        decay, decoupled = to_dtype(hyper[segment, 4]), hyper[segment, 6] != 0
        weight_scale = to_dtype(1 - hyper[segment, 0] * hyper[segment, 4])
        sign = to_dtype(-1 if hyper[segment, 7] != 0 else 1)
        grad_step, avg_step = to_dtype(coefficients[segment, 0]), \
            to_dtype(coefficients[segment, 1])
        bias_correction2 = to_dtype(coefficients[segment, 2])
        start, stop = chunks_start[chunk], chunks_end[chunk]
        p, grad, first, second = (params[start:stop], grads[start:stop], exp_avg[start:stop],
                                  exp_avg_sq[start:stop])
        for i in range(p.shape[0]):
            g, p[i], first[i], second[i] = _decayed_moments(
                sign * grad[i], p[i], first[i], second[i], decay, decoupled, weight_scale,
                keep1, beta2, keep2)
            denominator = np.sqrt(second[i] / bias_correction2) + eps
            p[i] = p[i] - grad_step * (g / denominator)
            p[i] = p[i] - avg_step * (first[i] / denominator)


def _radam(params, grads, exp_avg, exp_avg_sq, chunks_start, chunks_end, chunks_segment,
           active, steps, hyper):
    # hyper (float64) columns: lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay,
    # maximize
    for chunk in prange(chunks_start.shape[0]):
        segment = chunks_segment[chunk]
        if not active[segment]:
            continue
        lr, beta1, beta2 = hyper[segment, 0], hyper[segment, 1], hyper[segment, 2]
        step = steps[segment]
        bias_correction2 = 1 - beta2 ** step
        # the length of the approximated simple moving average (Liu et al. 2019, eq. 5)
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * step * beta2 ** step / bias_correction2
        rectified = rho_t > 5.0
        rect = 0.0
        if rectified:
            rect = np.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                           / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        to_dtype = params.dtype.type
        bias_correction1 = to_dtype(1 - beta1 ** step)
        root_correction2, rect = to_dtype(np.sqrt(bias_correction2)), to_dtype(rect)
        keep1, keep2 = to_dtype(1 - beta1), to_dtype(1 - beta2)
        beta2, lr, eps = to_dtype(beta2), to_dtype(lr), to_dtype(hyper[segment, 3])
        decay, decoupled = to_dtype(hyper[segment, 4]), hyper[segment, 5] != 0
        weight_scale = to_dtype(1 - hyper[segment, 0] * hyper[segment, 4])
        sign = to_dtype(-1 if hyper[segment, 6] != 0 else 1)
        start, stop = chunks_start[chunk], chunks_end[chunk]
        p, grad, first, second = (params[start:stop], grads[start:stop], exp_avg[start:stop],
                                  exp_avg_sq[start:stop])
        for i in range(p.shape[0]):
            g, p[i], first[i], second[i] = _decayed_moments(
                sign * grad[i], p[i], first[i], second[i], decay, decoupled, weight_scale,
                keep1, beta2, keep2)
            corrected = first[i] / bias_correction1
            if rectified:
                adaptive = root_correction2 / (np.sqrt(second[i]) + eps)
                p[i] = p[i] - corrected * lr * adaptive * rect
            else:
                p[i] = p[i] - corrected * lr


sgd_update = jit(_sgd, parallel=True)
adagrad_update = jit(_adagrad, parallel=True)
rmsprop_update = jit(_rmsprop, parallel=True)
adam_update = jit(_adam, parallel=True)
adadelta_update = jit(_adadelta, parallel=True)
adamax_update = jit(_adamax, parallel=True)
nadam_update = jit(_nadam, parallel=True)
radam_update = jit(_radam, parallel=True)

_NORM_BLOCK = 1 << 14


def _sum_of_squares(values):
    # Fixed blocks summed in order: the same bits at any thread count.
    n_blocks = (values.shape[0] + _NORM_BLOCK - 1) // _NORM_BLOCK
    partial = np.zeros(n_blocks, dtype=np.float64)
    for block in prange(n_blocks):
        total = np.float64(0.0)
        part = values[block * _NORM_BLOCK:min((block + 1) * _NORM_BLOCK, values.shape[0])]
        for i in range(part.shape[0]):
            value = np.float64(part[i])
            total += value * value
        partial[block] = total
    result = np.float64(0.0)
    for block in range(n_blocks):
        result += partial[block]
    return result


def _max_abs(values):
    n_blocks = (values.shape[0] + _NORM_BLOCK - 1) // _NORM_BLOCK
    partial = np.zeros(n_blocks, dtype=np.float64)
    for block in prange(n_blocks):
        best = np.float64(0.0)
        part = values[block * _NORM_BLOCK:min((block + 1) * _NORM_BLOCK, values.shape[0])]
        for i in range(part.shape[0]):
            value = abs(np.float64(part[i]))
            if value > best or value != value:  # keep NaN visible
                best = value
        partial[block] = best
    result = np.float64(0.0)
    for block in range(n_blocks):
        if partial[block] > result or partial[block] != partial[block]:
            result = partial[block]
    return result


def _scale(values, factor):
    for i in prange(values.shape[0]):
        values[i] = values[i] * factor


sum_of_squares = jit(_sum_of_squares, parallel=True)
max_abs = jit(_max_abs, parallel=True)
scale_ = jit(_scale, parallel=True)
