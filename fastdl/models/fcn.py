"""Fully convolutional segmentation (FCN, Long et al. 2015) and a Feature Pyramid Network
(FPN, Lin et al. 2017) on the ResNet backbone."""
from fastdl import functional as F
from fastdl import nn
from fastdl.models.resnet import ResNet


def _crop_to(x, height, width):
    """Crop (N, C, H', W') with H' >= height, W' >= width to its top-left height × width."""
    if x.shape[2] == height and x.shape[3] == width:
        return x
    return x[:, :, :height, :width]


def _conv_bn_relu(in_channels, out_channels):
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU())


class FCN(nn.Module):
    """Encoder of conv-BN-ReLU stages with 2×2 max pooling (ceil mode, so any size works),
    a 1×1 classifier per stage, and a decoder that upsamples the deepest scores by 2,
    crops, and adds the next shallower stage's scores (the FCN-8s skips).

    Shape: ``(N, in_channels, H, W) → (N, num_classes, H, W)`` for any H, W ≥ 1.
    """

    def __init__(self, in_channels=1, num_classes=2, width=16, depth=3, skip=True):
        super().__init__()
        if depth < 1:
            raise ValueError("fcn: depth must be >= 1, got %r" % (depth,))
        channels = [width * 2 ** i for i in range(depth + 1)]
        self.stem = _conv_bn_relu(in_channels, channels[0])
        self.stages = nn.ModuleList([nn.Sequential(nn.MaxPool2d(2, ceil_mode=True),
                                                   _conv_bn_relu(channels[i], channels[i + 1]),
                                                   _conv_bn_relu(channels[i + 1],
                                                                 channels[i + 1]))
                                     for i in range(depth)])
        self.skip = bool(skip)
        self.classifiers = nn.ModuleList([nn.Conv2d(c, num_classes, 1) for c in channels])

    def forward(self, x):
        features = [self.stem(x)]
        for stage in self.stages:
            features.append(stage(features[-1]))
        scores = self.classifiers[-1](features[-1])
        for level in range(len(features) - 2, -1, -1):
            target = features[level]
            scores = _crop_to(F.interpolate(scores, scale_factor=2), target.shape[2],
                              target.shape[3])
            if self.skip or level == 0:
                scores = scores + self.classifiers[level](target)
        return scores


def fcn(in_channels=1, num_classes=2, width=16, depth=3, skip=True):
    """A fully convolutional segmentation net (no Linear layers); see :class:`FCN`."""
    return FCN(in_channels, num_classes, width, depth, skip)


class FPN(nn.Module):
    """Lateral 1×1 convs, top-down nearest upsampling and addition, 3×3 smoothing.

    Takes the backbone's feature maps (shallow to deep) and returns one map
    per level, each with ``out_channels`` channels and its input's size.
    ``top_down=False`` drops the top-down additions (for ablations).
    """

    def __init__(self, backbone_channels, out_channels, top_down=True):
        super().__init__()
        self.lateral = nn.ModuleList([nn.Conv2d(c, out_channels, 1)
                                      for c in backbone_channels])
        self.smooth = nn.ModuleList([nn.Conv2d(out_channels, out_channels, 3, padding=1)
                                     for _ in backbone_channels])
        self.top_down = bool(top_down)

    def forward(self, features):
        if len(features) != len(self.lateral):
            raise ValueError("FPN: expected %d feature maps, got %d"
                             % (len(self.lateral), len(features)))
        merged = [None] * len(features)
        merged[-1] = self.lateral[-1](features[-1])
        for level in range(len(features) - 2, -1, -1):
            lateral = self.lateral[level](features[level])
            if self.top_down:
                upsampled = F.interpolate(merged[level + 1], scale_factor=2)
                lateral = lateral + _crop_to(upsampled, lateral.shape[2], lateral.shape[3])
            merged[level] = lateral
        return [smooth(m) for smooth, m in zip(self.smooth, merged)]


class ResNetFPN(nn.Module):
    """A CIFAR-style ResNet's three stages feeding an FPN: ``forward`` returns 3 maps
    at strides 1, 2 and 4 of the input."""

    def __init__(self, blocks_per_stage=1, width=16, in_channels=3, out_channels=32,
                 top_down=True):
        super().__init__()
        self.backbone = ResNet(blocks_per_stage, 10, width, in_channels)
        self.fpn = FPN([width, 2 * width, 4 * width], out_channels, top_down)
        self.strides = (1, 2, 4)

    def forward(self, x):
        return self.fpn(list(self.backbone.forward_features(x)))


def resnet_fpn(blocks_per_stage=1, width=16, in_channels=3, out_channels=32, top_down=True):
    """ResNet-8 (``blocks_per_stage=1``) or ResNet-20 (3) backbone with an FPN."""
    return ResNetFPN(blocks_per_stage, width, in_channels, out_channels, top_down)
