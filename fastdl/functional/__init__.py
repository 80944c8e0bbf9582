"""Differentiable operations, named and ordered as ``torch.nn.functional`` (import as F).

Every op accepts Tensors or ndarrays, validates its arguments once, and calls
the kernels of ``fastdl.kernels``.
"""
from fastdl.autograd import cat, stack
from fastdl.functional.activation import (dropout, dropout1d, dropout2d, leaky_relu,
                                          log_softmax, relu, relu_, sigmoid, softmax, softmin,
                                          tanh)
from fastdl.functional.conv import (conv1d, conv2d, conv2d_relu, conv_transpose1d,
                                    conv_transpose2d)
from fastdl.functional.elementwise import (celu, elu, gelu, hardsigmoid, hardswish, hardtanh,
                                           logsigmoid, mish, prelu, relu6, selu, silu, softplus)
from fastdl.functional.linear import linear
from fastdl.functional.loss import (binary_cross_entropy, binary_cross_entropy_with_logits,
                                    cosine_embedding_loss, cross_entropy, focal_loss,
                                    huber_loss, kl_div, l1_loss, l1_penalty, l2_penalty,
                                    mse_loss, nll_loss, sigmoid_focal_loss, smooth_l1_loss,
                                    soft_margin_loss)
from fastdl.functional.normalization import (batch_norm, group_norm, instance_norm, layer_norm,
                                             local_response_norm, normalize)
from fastdl.functional.padding import pad
from fastdl.functional.pooling import (adaptive_avg_pool1d, adaptive_avg_pool2d,
                                       adaptive_max_pool1d, adaptive_max_pool2d, avg_pool1d,
                                       avg_pool2d, max_pool1d, max_pool2d,
                                       max_pool2d_with_indices)
from fastdl.functional.resize import (channel_shuffle, interpolate, pixel_shuffle,
                                      pixel_unshuffle, upsample, upsample_bilinear,
                                      upsample_nearest)
from fastdl.functional.sparse import embedding, one_hot
from fastdl.functional.unfold import fold, unfold

__all__ = ["adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool1d",
           "adaptive_max_pool2d", "avg_pool1d", "avg_pool2d", "batch_norm", "binary_cross_entropy",
           "binary_cross_entropy_with_logits", "cat", "celu", "channel_shuffle", "conv1d",
           "conv2d", "conv2d_relu", "conv_transpose1d", "conv_transpose2d",
           "cosine_embedding_loss", "cross_entropy", "dropout", "dropout1d", "dropout2d", "elu",
           "embedding", "focal_loss", "fold", "gelu", "group_norm", "hardsigmoid", "hardswish",
           "hardtanh", "huber_loss", "instance_norm", "interpolate", "kl_div", "l1_loss",
           "l1_penalty", "l2_penalty", "layer_norm", "leaky_relu", "linear", "local_response_norm",
           "log_softmax", "logsigmoid", "max_pool1d", "max_pool2d", "max_pool2d_with_indices",
           "mish", "mse_loss", "nll_loss", "normalize", "one_hot", "pad", "pixel_shuffle",
           "pixel_unshuffle", "prelu", "relu", "relu6", "relu_", "selu", "sigmoid", "sigmoid_focal_loss", "silu",
           "smooth_l1_loss", "soft_margin_loss", "softmax", "softmin", "softplus", "stack", "tanh",
           "unfold", "upsample", "upsample_bilinear", "upsample_nearest"]
