"""The model zoo."""
from fastdl.models.lenet import lenet5
from fastdl.models.resnet import ResNet, resnet8, resnet20

__all__ = ["ResNet", "lenet5", "resnet8", "resnet20"]
