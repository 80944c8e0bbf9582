"""Layers and containers, named and built as in ``torch.nn``."""
from fastdl.nn import functional, init, utils
from fastdl.nn.activation import (CELU, ELU, GELU, Hardsigmoid, Hardswish, Hardtanh, LeakyReLU,
                                  LogSigmoid, LogSoftmax, Mish, PReLU, ReLU, ReLU6, SELU, SiLU,
                                  Sigmoid, Softmax, Softmax2d, Softmin, Softplus, Tanh)
from fastdl.nn.container import (ModuleDict, ModuleList, ParameterDict, ParameterList,
                                 Sequential)
from fastdl.nn.conv import Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d
from fastdl.nn.layers import Linear
from fastdl.nn.loss import (BCELoss, BCEWithLogitsLoss, CosineEmbeddingLoss, CrossEntropyLoss,
                            FocalLoss, HuberLoss, KLDivLoss, L1Loss, MSELoss, NLLLoss,
                            SmoothL1Loss, SoftMarginLoss)
from fastdl.nn.module import Module
from fastdl.nn.normalization import (BatchNorm1d, BatchNorm2d, GroupNorm, InstanceNorm1d,
                                     InstanceNorm2d, LayerNorm, LocalResponseNorm)
from fastdl.nn.padding import (CircularPad1d, CircularPad2d, ConstantPad1d, ConstantPad2d,
                               ReflectionPad1d, ReflectionPad2d, ReplicationPad1d,
                               ReplicationPad2d, ZeroPad1d, ZeroPad2d)
from fastdl.nn.parallel import DataParallel
from fastdl.nn.parameter import Parameter
from fastdl.nn.pooling import (AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveMaxPool1d,
                               AdaptiveMaxPool2d, AvgPool1d, AvgPool2d, MaxPool1d, MaxPool2d)
from fastdl.nn.residual import BasicBlock
from fastdl.nn.simple import (ChannelShuffle, Dropout, Dropout1d, Dropout2d, Flatten, Fold,
                              Identity, PixelShuffle, PixelUnshuffle, Unflatten, Unfold, Upsample,
                              UpsamplingBilinear2d, UpsamplingNearest2d)
from fastdl.nn.sparse import Embedding

__all__ = ["AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d",
           "AvgPool1d", "AvgPool2d", "BCELoss", "BCEWithLogitsLoss", "BasicBlock", "BatchNorm1d",
           "BatchNorm2d", "CELU", "ChannelShuffle", "CircularPad1d", "CircularPad2d",
           "ConstantPad1d", "ConstantPad2d", "Conv1d", "Conv2d", "ConvTranspose1d",
           "ConvTranspose2d", "CosineEmbeddingLoss", "CrossEntropyLoss", "DataParallel", "Dropout",
           "Dropout1d", "Dropout2d", "ELU", "Embedding", "Flatten", "FocalLoss", "Fold", "GELU",
           "GroupNorm", "Hardsigmoid", "Hardswish", "Hardtanh", "HuberLoss", "Identity",
           "InstanceNorm1d", "InstanceNorm2d", "KLDivLoss", "L1Loss", "LayerNorm", "LeakyReLU",
           "Linear", "LocalResponseNorm", "LogSigmoid", "LogSoftmax", "MSELoss", "MaxPool1d",
           "MaxPool2d", "Mish", "Module", "ModuleDict", "ModuleList", "NLLLoss", "PReLU",
           "Parameter", "ParameterDict", "ParameterList", "PixelShuffle", "PixelUnshuffle", "ReLU",
           "ReLU6", "ReflectionPad1d", "ReflectionPad2d", "ReplicationPad1d", "ReplicationPad2d",
           "SELU", "Sequential", "SiLU", "Sigmoid", "SmoothL1Loss", "SoftMarginLoss", "Softmax",
           "Softmax2d", "Softmin", "Softplus", "Tanh", "Unflatten", "Unfold", "Upsample",
           "UpsamplingBilinear2d", "UpsamplingNearest2d", "ZeroPad1d", "ZeroPad2d", "functional",
           "init", "utils"]
