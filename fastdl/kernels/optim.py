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
    # hyper columns: lr, momentum, dampening, weight_decay, nesterov
    for chunk in prange(chunks_start.shape[0]):
        segment = chunks_segment[chunk]
        if not active[segment]:
            continue
        lr, momentum, dampening, decay = (hyper[segment, 0], hyper[segment, 1],
                                          hyper[segment, 2], hyper[segment, 3])
        first = steps[segment] == 1
        nesterov = hyper[segment, 4] != 0
        for i in range(chunks_start[chunk], chunks_end[chunk]):
            g = grads[i]
            if decay != 0:
                g = g + decay * params[i]
            if momentum != 0:
                if first:
                    buf = g
                else:
                    buf = momentum * momentum_buffer[i] + (1 - dampening) * g
                momentum_buffer[i] = buf
                g = g + momentum * buf if nesterov else buf
            params[i] = params[i] - lr * g


def _adagrad(params, grads, state_sum, chunks_start, chunks_end, chunks_segment, active, steps,
             hyper):
    # hyper columns: lr, lr_decay, weight_decay, eps
    for chunk in prange(chunks_start.shape[0]):
        segment = chunks_segment[chunk]
        if not active[segment]:
            continue
        decay, eps = hyper[segment, 2], hyper[segment, 3]
        clr = hyper[segment, 0] / (1 + (steps[segment] - 1) * hyper[segment, 1])
        for i in range(chunks_start[chunk], chunks_end[chunk]):
            g = grads[i]
            if decay != 0:
                g = g + decay * params[i]
            state_sum[i] = state_sum[i] + g * g
            params[i] = params[i] - clr * (g / (np.sqrt(state_sum[i]) + eps))


def _rmsprop(params, grads, square_avg, grad_avg, momentum_buffer, chunks_start, chunks_end,
             chunks_segment, active, steps, hyper):
    # hyper columns: lr, alpha, eps, weight_decay, momentum, centered
    for chunk in prange(chunks_start.shape[0]):
        segment = chunks_segment[chunk]
        if not active[segment]:
            continue
        lr, alpha, eps = hyper[segment, 0], hyper[segment, 1], hyper[segment, 2]
        decay, momentum = hyper[segment, 3], hyper[segment, 4]
        centered = hyper[segment, 5] != 0
        for i in range(chunks_start[chunk], chunks_end[chunk]):
            g = grads[i]
            if decay != 0:
                g = g + decay * params[i]
            square_avg[i] = alpha * square_avg[i] + (1 - alpha) * g * g
            if centered:
                grad_avg[i] = alpha * grad_avg[i] + (1 - alpha) * g
                avg = np.sqrt(square_avg[i] - grad_avg[i] * grad_avg[i]) + eps
            else:
                avg = np.sqrt(square_avg[i]) + eps
            if momentum > 0:
                momentum_buffer[i] = momentum * momentum_buffer[i] + g / avg
                params[i] = params[i] - lr * momentum_buffer[i]
            else:
                params[i] = params[i] - lr * (g / avg)


def _adam(params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, chunks_start, chunks_end,
          chunks_segment, active, steps, hyper, decoupled):
    # hyper columns: lr, beta1, beta2, eps, weight_decay, amsgrad
    for chunk in prange(chunks_start.shape[0]):
        segment = chunks_segment[chunk]
        if not active[segment]:
            continue
        lr, beta1, beta2 = hyper[segment, 0], hyper[segment, 1], hyper[segment, 2]
        eps, decay = hyper[segment, 3], hyper[segment, 4]
        amsgrad = hyper[segment, 5] != 0
        step = steps[segment]
        bias_correction1 = 1 - beta1 ** step
        bias_correction2_sqrt = np.sqrt(1 - beta2 ** step)
        step_size = lr / bias_correction1
        for i in range(chunks_start[chunk], chunks_end[chunk]):
            g = grads[i]
            p = params[i]
            if decay != 0:
                if decoupled:        # AdamW: decay the weights, not the gradient
                    p = p * (1 - lr * decay)
                else:
                    g = g + decay * p
            m = beta1 * exp_avg[i] + (1 - beta1) * g
            v = beta2 * exp_avg_sq[i] + (1 - beta2) * g * g
            exp_avg[i] = m
            exp_avg_sq[i] = v
            if amsgrad:
                v = max(max_exp_avg_sq[i], v)
                max_exp_avg_sq[i] = v
            params[i] = p - step_size * (m / (np.sqrt(v) / bias_correction2_sqrt + eps))


sgd_update = jit(_sgd, parallel=True)
adagrad_update = jit(_adagrad, parallel=True)
rmsprop_update = jit(_rmsprop, parallel=True)
adam_update = jit(_adam, parallel=True)

_NORM_BLOCK = 1 << 14


def _sum_of_squares(values):
    # Fixed blocks summed in order: the same bits at any thread count.
    n_blocks = (values.shape[0] + _NORM_BLOCK - 1) // _NORM_BLOCK
    partial = np.zeros(n_blocks, dtype=np.float64)
    for block in prange(n_blocks):
        total = np.float64(0.0)
        for i in range(block * _NORM_BLOCK, min((block + 1) * _NORM_BLOCK, values.shape[0])):
            value = np.float64(values[i])
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
        for i in range(block * _NORM_BLOCK, min((block + 1) * _NORM_BLOCK, values.shape[0])):
            value = abs(np.float64(values[i]))
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
