"""The model zoo."""
from fastdl.models.cascade import CascadeDetector, cascade_detector
from fastdl.models.fcn import FCN, FPN, ResNetFPN, fcn, resnet_fpn
from fastdl.models.lenet import lenet5
from fastdl.models.receptive import receptive_field
from fastdl.models.resnet import ResNet, resnet8, resnet20

__all__ = ["CascadeDetector", "FCN", "FPN", "ResNet", "ResNetFPN", "cascade_detector", "fcn",
           "lenet5", "resnet8", "resnet20", "receptive_field", "resnet_fpn"]
