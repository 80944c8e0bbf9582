"""The residual block of ResNet (He et al. 2016), CIFAR variant."""
from fastdl import functional as F
from fastdl._checks import positive_int
from fastdl.nn.layers import Conv2d
from fastdl.nn.container import Sequential
from fastdl.nn.module import Module
from fastdl.nn.normalization import BatchNorm2d


class BasicBlock(Module):
    """conv3×3-BN-ReLU-conv3×3-BN plus shortcut, then ReLU.

    The shortcut is the identity, or a 1×1 conv + BN when ``stride != 1`` or
    the channel count changes.

    Shape: ``(N, in_ch, H, W) → (N, out_ch, ceil(H/stride), ceil(W/stride))``.
    """

    def __init__(self, in_ch, out_ch, stride=1):
        super().__init__()
        self.in_ch = positive_int("BasicBlock", "in_ch", in_ch)
        self.out_ch = positive_int("BasicBlock", "out_ch", out_ch)
        self.stride = positive_int("BasicBlock", "stride", stride)
        self.conv1 = Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = BatchNorm2d(out_ch)
        self.conv2 = Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = BatchNorm2d(out_ch)
        if stride != 1 or in_ch != out_ch:
            self.shortcut = Sequential(Conv2d(in_ch, out_ch, 1, stride, bias=False),
                                       BatchNorm2d(out_ch))
        else:
            self.shortcut = None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + identity)
