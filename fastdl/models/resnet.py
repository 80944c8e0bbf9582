"""CIFAR-style ResNets (He et al. 2016, section 4.2): ResNet-8 and ResNet-20."""
from fastdl import nn


class ResNet(nn.Module):
    """conv3×3-BN-ReLU stem, three stages of BasicBlocks at width, 2·width, 4·width
    (stride 2 at stages 2 and 3), global average pooling and a linear classifier.

    Shape: ``(N, in_channels, H, W) → (N, num_classes)``; ``6n + 2`` layers.
    """

    def __init__(self, blocks_per_stage, num_classes=10, width=16, in_channels=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        stages = []
        channels = width
        for index, stage_width in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for block in range(blocks_per_stage):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(nn.BasicBlock(channels, stage_width, stride))
                channels = stage_width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def forward_features(self, x):
        """The three stages' outputs (for FPN-style heads)."""
        c1 = self.layer1(self.stem(x))
        c2 = self.layer2(c1)
        return c1, c2, self.layer3(c2)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.forward_features(x)[-1])))


def resnet8(num_classes=10, width=16, in_channels=3):
    """ResNet-8: one BasicBlock per stage."""
    return ResNet(1, num_classes, width, in_channels)


def resnet20(num_classes=10, width=16, in_channels=3):
    """ResNet-20: three BasicBlocks per stage."""
    return ResNet(3, num_classes, width, in_channels)
