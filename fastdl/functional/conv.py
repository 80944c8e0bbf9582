"""Differentiable convolution and transposed convolution."""
from fastdl.autograd import Function
from fastdl.functional._util import as_tensor, data_of
from fastdl.kernels import activation as activation_kernels, conv as kernels


class Conv2d(Function):
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


def _apply_conv2d(op, input, weight, bias, stride, padding, dilation, groups, relu):
    stride, padding, dilation, _ = kernels.check_conv2d_args(
        op, data_of(input), data_of(weight), data_of(bias), stride, padding, dilation, groups)
    return Conv2d.apply(as_tensor(input), as_tensor(weight), as_tensor(bias), stride, padding,
                        dilation, groups, relu)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation), as ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    input : Tensor (N, C_in, H, W)
    weight : Tensor (C_out, C_in/groups, kH, kW)
    bias : Tensor (C_out,) or None
    stride, padding, dilation : int or pair
    groups : int

    Returns
    -------
    Tensor (N, C_out, OH, OW), ``OH = (H + 2p - d(kH-1) - 1) // s + 1``.
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
    stride, padding, dilation, output_padding = kernels.check_conv2d_args(
        "conv_transpose2d", data_of(input), data_of(weight), data_of(bias), stride, padding,
        dilation, groups, transposed=True, output_padding=output_padding)
    return ConvTranspose2d.apply(as_tensor(input), as_tensor(weight), as_tensor(bias), stride,
                                 padding, output_padding, groups, dilation)
