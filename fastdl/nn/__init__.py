"""Layers and containers, named and built as in ``torch.nn``."""
from fastdl.nn import init
from fastdl.nn.layers import Conv2d, ConvTranspose2d, Linear
from fastdl.nn.loss import CrossEntropyLoss, FocalLoss, MSELoss
from fastdl.nn.module import Module, ModuleList, Sequential
from fastdl.nn.normalization import (BatchNorm1d, BatchNorm2d, GroupNorm, InstanceNorm2d,
                                     LayerNorm)
from fastdl.nn.parameter import Parameter
from fastdl.nn.residual import BasicBlock
from fastdl.nn.simple import (AdaptiveAvgPool2d, AvgPool2d, Dropout, Flatten, Identity,
                              LeakyReLU, MaxPool2d, ReLU, Sigmoid, Softmax, Tanh, Upsample)

__all__ = ["AdaptiveAvgPool2d", "AvgPool2d", "BasicBlock", "BatchNorm1d", "BatchNorm2d",
           "Conv2d", "ConvTranspose2d", "CrossEntropyLoss", "Dropout", "Flatten", "FocalLoss",
           "GroupNorm", "Identity", "InstanceNorm2d", "LayerNorm", "LeakyReLU", "Linear",
           "MSELoss", "MaxPool2d", "Module", "ModuleList", "Parameter", "ReLU", "Sequential",
           "Sigmoid", "Softmax", "Tanh", "Upsample", "init"]
