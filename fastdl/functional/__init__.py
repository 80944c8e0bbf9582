"""Differentiable operations, named and ordered as ``torch.nn.functional`` (import as F).

Every op accepts Tensors or ndarrays, validates its arguments once, and calls
the kernels of ``fastdl.kernels``.
"""
from fastdl.autograd import cat, stack
from fastdl.functional.activation import (dropout, leaky_relu, log_softmax, relu, sigmoid,
                                          softmax, tanh)
from fastdl.functional.conv import conv2d, conv2d_relu, conv_transpose2d
from fastdl.functional.linear import linear
from fastdl.functional.loss import (binary_cross_entropy, binary_cross_entropy_with_logits,
                                    cross_entropy, focal_loss, huber_loss, kl_div, l1_loss,
                                    l1_penalty, l2_penalty, mse_loss, nll_loss,
                                    smooth_l1_loss, soft_margin_loss)
from fastdl.functional.normalization import batch_norm, group_norm, instance_norm, layer_norm
from fastdl.functional.pooling import adaptive_avg_pool2d, avg_pool2d, max_pool2d
from fastdl.functional.resize import interpolate

__all__ = ["adaptive_avg_pool2d", "avg_pool2d", "batch_norm", "binary_cross_entropy",
           "binary_cross_entropy_with_logits", "cat", "conv2d",
           "conv2d_relu", "conv_transpose2d", "cross_entropy", "dropout", "focal_loss",
           "group_norm", "huber_loss", "instance_norm", "interpolate", "kl_div", "l1_loss",
           "l1_penalty", "l2_penalty", "layer_norm",
           "leaky_relu", "linear", "log_softmax", "max_pool2d", "mse_loss", "nll_loss", "relu",
           "sigmoid", "smooth_l1_loss", "soft_margin_loss", "softmax", "stack", "tanh"]
