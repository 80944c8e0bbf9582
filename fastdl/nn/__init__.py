"""Layers and containers, named and built as in ``torch.nn``."""
from fastdl.nn import functional, init, utils
from fastdl.nn.activation import (CELU, ELU, GELU, Hardsigmoid, Hardswish, Hardtanh, LeakyReLU,
                                  LogSigmoid, LogSoftmax, Mish, PReLU, ReLU, ReLU6, SELU, SiLU,
                                  Sigmoid, Softmax, Softmin, Softplus, Tanh)
from fastdl.nn.container import (ModuleDict, ModuleList, ParameterDict, ParameterList,
                                 Sequential)
from fastdl.nn.conv import Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d
from fastdl.nn.layers import Linear
from fastdl.nn.loss import (BCELoss, BCEWithLogitsLoss, CosineEmbeddingLoss, CrossEntropyLoss,
                            FocalLoss, HuberLoss, KLDivLoss, L1Loss, MSELoss, NLLLoss,
                            SmoothL1Loss, SoftMarginLoss)
from fastdl.nn.module import Module
from fastdl.nn.normalization import (BatchNorm1d, BatchNorm2d, GroupNorm, InstanceNorm1d,
                                     InstanceNorm2d, LayerNorm)
from fastdl.nn.parameter import Parameter
from fastdl.nn.pooling import (AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveMaxPool1d,
                               AdaptiveMaxPool2d, AvgPool1d, AvgPool2d, MaxPool1d, MaxPool2d)
from fastdl.nn.residual import BasicBlock
from fastdl.nn.simple import (Dropout, Dropout1d, Dropout2d, Flatten, Identity, PixelShuffle,
                              PixelUnshuffle, Unflatten, Upsample, UpsamplingBilinear2d,
                              UpsamplingNearest2d)
from fastdl.nn.sparse import Embedding

__all__ = ["AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d",
           "AvgPool1d", "AvgPool2d", "BCELoss", "BCEWithLogitsLoss", "BasicBlock", "BatchNorm1d",
           "BatchNorm2d", "CELU", "Conv1d", "Conv2d", "ConvTranspose1d", "ConvTranspose2d",
           "CosineEmbeddingLoss", "CrossEntropyLoss", "Dropout", "Dropout1d", "Dropout2d", "ELU",
           "Embedding", "Flatten", "FocalLoss", "GELU", "GroupNorm", "Hardsigmoid", "Hardswish",
           "Hardtanh", "HuberLoss", "Identity", "InstanceNorm1d", "InstanceNorm2d", "KLDivLoss",
           "L1Loss", "LayerNorm", "LeakyReLU", "Linear", "LogSigmoid", "LogSoftmax", "MSELoss",
           "MaxPool1d", "MaxPool2d", "Mish", "Module", "ModuleDict", "ModuleList", "NLLLoss",
           "PReLU", "Parameter", "ParameterDict", "ParameterList", "PixelShuffle",
           "PixelUnshuffle", "ReLU", "ReLU6", "SELU", "Sequential", "SiLU", "Sigmoid",
           "SmoothL1Loss", "SoftMarginLoss", "Softmax", "Softmin", "Softplus", "Tanh", "Unflatten",
           "Upsample", "UpsamplingBilinear2d", "UpsamplingNearest2d", "functional", "init",
           "utils"]
