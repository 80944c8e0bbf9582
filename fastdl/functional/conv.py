"""Differentiable convolution and transposed convolution, 2-D and (through the 2-D
kernels with H = 1) 1-D.

As torch's, inputs may be batched ``(N, C, H, W)`` or one sample ``(C, H, W)``
(``(N, C, L)`` / ``(C, L)`` in 1-D), and ``padding`` may be ``'valid'`` (none)
or ``'same'`` (stride 1; an odd total padding puts the extra row/column at
the end, by zero-padding the input first, as ATen does).
"""
from fastdl import tensor_deferred
from fastdl._checks import is_int, pair
from fastdl.autograd import Function
from fastdl.functional import _deferred_conv
from fastdl.functional._util import as_tensor, data_of
from fastdl.functional.padding import pad as _pad
from fastdl.kernels import activation as activation_kernels, conv as kernels

__all__ = ["conv1d", "conv2d", "conv2d_relu", "conv_transpose1d", "conv_transpose2d",
           "same_padding"]


class Conv2d(Function):
    new_grads = True   # the kernels allocate every gradient they return

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups, relu=False):
        ctx.hyper = (stride, padding, dilation, groups)
        # conv2d() / conv2d_relu() below checked the arguments and normalised the pairs;
        # with ``relu`` the ReLU runs in the convolution's epilogue, values as relu()'s
        out = kernels.conv2d_forward_unchecked(x, weight, bias, stride, padding, dilation,
                                               groups, negative_slope=0.0 if relu else None)
        ctx.save_for_backward(x, weight, out if relu else None)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, relu_output = ctx.saved_tensors
        if relu_output is not None:
            grad = activation_kernels.relu_backward(grad, relu_output)
        needs = ctx.needs_input_grad
        grad_x = (kernels.conv2d_grad_input_unchecked(grad, weight, x.shape, *ctx.hyper)
                  if needs[0] else None)
        grad_weight = grad_bias = None
        if needs[1] and needs[2]:
            grad_weight, grad_bias = kernels.conv2d_grad_weight_unchecked(
                x, grad, weight.shape, *ctx.hyper, with_bias=True)
        elif needs[1]:
            grad_weight = kernels.conv2d_grad_weight_unchecked(x, grad, weight.shape, *ctx.hyper)
        elif needs[2]:
            grad_bias = kernels.conv2d_grad_bias(grad)
        return grad_x, grad_weight, grad_bias


def same_padding(kernel_size, dilation):
    """Per axis ``(before, after)`` of torch's ``padding='same'``: ``d (k - 1)`` in total,
    the odd one at the end."""
    pairs = []
    for kernel, step in zip(kernel_size, dilation):
        total = step * (kernel - 1)
        pairs.append((total // 2, total - total // 2))
    return tuple(pairs)


def _string_padding(op, input, weight, padding, stride, dilation):
    """``'valid'``/``'same'`` as ``(input, padding pair)`` for the numeric path."""
    if padding not in ("valid", "same"):
        raise ValueError("Invalid padding string %r, should be one of {'valid', 'same'}"
                         % (padding,))
    if padding == "valid":
        return input, (0, 0)
    if pair(stride, "stride", op) != (1, 1):
        raise ValueError("padding='same' is not supported for strided convolutions")
    dilation = pair(dilation, "dilation", op)
    pairs = same_padding(data_of(weight).shape[-2:], dilation)
    extra = [after - before for before, after in pairs]
    if any(extra):   # ATen: the odd row/column of padding goes to the end
        input = _pad(input, (0, extra[1], 0, extra[0]))
    return input, tuple(before for before, _ in pairs)


def _apply_conv2d(op, input, weight, bias, stride, padding, dilation, groups, relu):
    # a deferred conv's output is checked by its shape and dtype, not yet computed: this
    # conv may take it as the step before it in one chain (_deferred_conv)
    source = None if isinstance(padding, str) else tensor_deferred.pending(input)
    x = data_of(input) if source is None else _deferred_conv.stand_in(source)
    unbatched = x.ndim == 3
    if unbatched:   # one sample (C, H, W), as torch takes it
        input = as_tensor(input).reshape((1,) + x.shape)
        x = data_of(input)
    if isinstance(padding, str):
        input, padding = _string_padding(op, input, weight, padding, stride, dilation)
        x = data_of(input)
    stride, padding, dilation, _ = kernels.check_conv2d_args(
        op, x, data_of(weight), data_of(bias), stride, padding, dilation, groups)
    if not unbatched and tensor_deferred.active(input, weight, bias):
        return _deferred_conv.defer_conv2d(input, source, data_of(weight), data_of(bias),
                                           stride, padding, dilation, groups, relu)
    out = Conv2d.apply(as_tensor(input), as_tensor(weight), as_tensor(bias), stride, padding,
                       dilation, groups, relu)
    return out.reshape(out.shape[1:]) if unbatched else out


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation), as ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    input : Tensor (N, C_in, H, W) or (C_in, H, W)
    weight : Tensor (C_out, C_in/groups, kH, kW)
    bias : Tensor (C_out,) or None
    stride, dilation : int or pair
    padding : int, pair, 'valid' or 'same'
    groups : int

    Returns
    -------
    Tensor (N, C_out, OH, OW), ``OH = (H + 2p - d(kH-1) - 1) // s + 1``.

    Raises
    ------
    ValueError
        Channel or shape mismatches (naming both), ``'same'`` with a stride,
        an unknown padding string.
    """
    return _apply_conv2d("conv2d", input, weight, bias, stride, padding, dilation, groups,
                         False)


def conv2d_relu(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``relu(conv2d(...))`` in one pass: the ReLU runs in the convolution's epilogue.

    Values and gradients equal the two separate ops'; one output array and one
    pass over it fewer. ``nn.Sequential`` uses it for a Conv2d followed by a ReLU.
    Arguments and shapes as ``conv2d``.
    """
    return _apply_conv2d("conv2d_relu", input, weight, bias, stride, padding, dilation, groups,
                         True)


class ConvTranspose2d(Function):
    new_grads = True   # the kernels allocate every gradient they return

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, output_padding, groups, dilation):
        ctx.save_for_backward(x, weight)
        ctx.hyper = (stride, padding, groups, dilation)
        return kernels.conv_transpose2d_forward(x, weight, bias, stride, padding,
                                                output_padding, groups, dilation)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_x = (kernels.conv_transpose2d_grad_input(grad, weight, *ctx.hyper)
                  if needs[0] else None)
        grad_weight = (kernels.conv_transpose2d_grad_weight(x, grad, weight.shape, *ctx.hyper)
                       if needs[1] else None)
        grad_bias = kernels.conv2d_grad_bias(grad) if needs[2] else None
        return grad_x, grad_weight, grad_bias


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1):
    """2-D transposed convolution, as ``torch.nn.functional.conv_transpose2d``.

    Parameters
    ----------
    input : Tensor (N, C_in, H, W)
    weight : Tensor (C_in, C_out/groups, kH, kW)

    Returns
    -------
    Tensor (N, C_out, OH, OW),
    ``OH = (H-1)*stride - 2*padding + dilation*(kH-1) + output_padding + 1``.
    """
    unbatched = data_of(input).ndim == 3
    if unbatched:   # one sample (C, H, W), as torch takes it
        input = as_tensor(input).reshape((1,) + data_of(input).shape)
    stride, padding, dilation, output_padding = kernels.check_conv2d_args(
        "conv_transpose2d", data_of(input), data_of(weight), data_of(bias), stride, padding,
        dilation, groups, transposed=True, output_padding=output_padding)
    out = ConvTranspose2d.apply(as_tensor(input), as_tensor(weight), as_tensor(bias), stride,
                                padding, output_padding, groups, dilation)
    return out.reshape(out.shape[1:]) if unbatched else out


# ----------------------------------------------------------------------------- 1-D
def _single(op, name, value):
    """A 1-D conv argument (an int or a 1-tuple) as an int; strings pass through."""
    if isinstance(value, str):
        return value
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    if not is_int(value):
        raise TypeError("%s: %s must be an int or a 1-tuple of ints, got %r" % (op, name, value))
    return int(value)


def _planar(op, input, weight):
    """(input as (N, C, 1, L), weight as (O, I, 1, k), undo): 1-D through 2-D kernels."""
    x, w = data_of(input), data_of(weight)
    if x.ndim not in (2, 3):
        raise ValueError("%s: input must be 3-D (N, C, L) or 2-D (C, L), got shape %s"
                         % (op, x.shape))
    if w.ndim != 3:
        raise ValueError("%s: weight must be 3-D, got shape %s" % (op, w.shape))
    planar_x = as_tensor(input).reshape(x.shape[:-1] + (1, x.shape[-1]))
    planar_w = as_tensor(weight).reshape(w.shape[:2] + (1, w.shape[2]))

    def undo(out):
        return out.reshape(out.shape[:-2] + (out.shape[-1],))
    return planar_x, planar_w, undo


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D convolution, as ``torch.nn.functional.conv1d``.

    Parameters
    ----------
    input : Tensor (N, C_in, L) or (C_in, L)
    weight : Tensor (C_out, C_in/groups, k)
    bias : Tensor (C_out,) or None
    stride, dilation : int
    padding : int, 'valid' or 'same'

    Returns
    -------
    Tensor (N, C_out, L_out), ``L_out = (L + 2p - d(k-1) - 1) // s + 1``.
    """
    x, w, undo = _planar("conv1d", input, weight)
    padding = _single("conv1d", "padding", padding)
    return undo(_apply_conv2d("conv1d", x, w, bias, (1, _single("conv1d", "stride", stride)),
                              padding if isinstance(padding, str) else (0, padding),
                              (1, _single("conv1d", "dilation", dilation)), groups, False))


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """1-D transposed convolution, as ``torch.nn.functional.conv_transpose1d``.

    ``input (N, C_in, L)``, ``weight (C_in, C_out/groups, k)``; output length
    ``(L-1)*stride - 2*padding + dilation*(k-1) + output_padding + 1``.
    """
    x, w, undo = _planar("conv_transpose1d", input, weight)
    op = "conv_transpose1d"
    return undo(conv_transpose2d(x, w, bias, (1, _single(op, "stride", stride)),
                                 (0, _single(op, "padding", padding)),
                                 (0, _single(op, "output_padding", output_padding)), groups,
                                 (1, _single(op, "dilation", dilation))))
