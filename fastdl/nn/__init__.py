"""Layers and containers, named and built as in ``torch.nn``."""
from fastdl.nn import init
from fastdl.nn.layers import Conv2d, ConvTranspose2d, Linear
from fastdl.nn.loss import (BCELoss, BCEWithLogitsLoss, CosineEmbeddingLoss, CrossEntropyLoss,
                            FocalLoss, HuberLoss, KLDivLoss, L1Loss, MSELoss, NLLLoss,
                            SmoothL1Loss, SoftMarginLoss)
from fastdl.nn.module import Module, ModuleList, Sequential
from fastdl.nn.normalization import (BatchNorm1d, BatchNorm2d, GroupNorm, InstanceNorm2d,
                                     LayerNorm)
from fastdl.nn.parameter import Parameter
from fastdl.nn.residual import BasicBlock
from fastdl.nn.simple import (AdaptiveAvgPool2d, AvgPool2d, Dropout, Flatten, Identity,
                              LeakyReLU, MaxPool2d, ReLU, Sigmoid, Softmax, Tanh, Upsample)

__all__ = ["AdaptiveAvgPool2d", "AvgPool2d", "BCELoss", "BCEWithLogitsLoss", "BasicBlock",
           "BatchNorm1d", "BatchNorm2d", "HuberLoss", "KLDivLoss", "L1Loss", "NLLLoss",
           "SmoothL1Loss", "SoftMarginLoss", "CosineEmbeddingLoss",
           "Conv2d", "ConvTranspose2d", "CrossEntropyLoss", "Dropout", "Flatten", "FocalLoss",
           "GroupNorm", "Identity", "InstanceNorm2d", "LayerNorm", "LeakyReLU", "Linear",
           "MSELoss", "MaxPool2d", "Module", "ModuleList", "Parameter", "ReLU", "Sequential",
           "Sigmoid", "Softmax", "Tanh", "Upsample", "init"]
