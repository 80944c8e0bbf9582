"""CIFAR-10 classifiers written the way torch model zoos write them.

Only the three import lines below differ between torch and fastdl: the tests run
this text once as written and once with ``import fastdl as torch``,
``import fastdl.nn as nn`` and ``import fastdl.nn.functional as F``. The configs
marked "small" have fewer blocks or channels than the published networks so that
a test runs each in well under a second; their structure (every kind of block and
every op) is the published one.

One file over the usual ~600 lines, by design: it is a single torch program, loaded
whole by ``porting.load_program``, whose families share blocks (``conv_bn``, the ResNet
``BasicBlock`` in DLA and RegNet's ``SqueezeExcite`` after EfficientNet's); split, each
part would have to copy them.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_bn(in_planes, out_planes, kernel_size=3, stride=1, groups=1):
    padding = (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size, stride, padding, groups=groups,
                  bias=False),
        nn.BatchNorm2d(out_planes))


# ---------------------------------------------------------------------------- VGG
class VGG(nn.Module):
    layouts = {"VGG11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]}

    def __init__(self, name="VGG11", num_classes=10):
        super().__init__()
        layers, channels = [], 3
        for item in self.layouts[name]:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, item, kernel_size=3, padding=1),
                           nn.BatchNorm2d(item), nn.ReLU(inplace=True)]
                channels = item
        layers.append(nn.AvgPool2d(kernel_size=1, stride=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x):
        out = self.features(x)
        out = out.view(out.size(0), -1)
        return self.classifier(out)


# ------------------------------------------------------------------ ResNet family
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = conv_bn(in_planes, planes, 1, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class SEPreActBlock(PreActBlock):
    """A pre-activation block whose residual is rescaled per channel (squeeze-excitation)."""

    def __init__(self, in_planes, planes, stride=1):
        super().__init__(in_planes, planes, stride)
        self.fc1 = nn.Conv2d(planes, planes // 16, kernel_size=1)
        self.fc2 = nn.Conv2d(planes // 16, planes, kernel_size=1)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        weight = F.avg_pool2d(out, out.size(2))
        weight = torch.sigmoid(self.fc2(F.relu(self.fc1(weight))))
        return out * weight + shortcut


class ResNet(nn.Module):
    def __init__(self, block, num_blocks, num_classes=10, preact=False):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.preact = preact
        if not preact:   # pre-activation blocks normalise their own inputs
            self.bn1 = nn.BatchNorm2d(64)
        stages = []
        for index, (planes, count) in enumerate(zip([64, 128, 256, 512], num_blocks)):
            stages.append(self._make_layer(block, planes, count, 1 if index == 0 else 2))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, count, stride):
        layers = []
        for block_stride in [stride] + [1] * (count - 1):
            layers.append(block(self.in_planes, planes, block_stride))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = self.conv1(x) if self.preact else F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4)
        out = out.view(out.size(0), -1)
        return self.linear(out)


def ResNet18():
    return ResNet(BasicBlock, [2, 2, 2, 2])


def PreActResNet18():
    return ResNet(PreActBlock, [2, 2, 2, 2], preact=True)


def SENet18():
    return ResNet(SEPreActBlock, [2, 2, 2, 2], preact=True)


# ---------------------------------------------------------------------- GoogLeNet
class Inception(nn.Module):
    def __init__(self, in_planes, n1x1, n3x3red, n3x3, n5x5red, n5x5, pool_planes):
        super().__init__()

        def conv(cin, cout, k):
            return [nn.Conv2d(cin, cout, kernel_size=k, padding=k // 2),
                    nn.BatchNorm2d(cout), nn.ReLU(True)]

        self.b1 = nn.Sequential(*conv(in_planes, n1x1, 1))
        self.b2 = nn.Sequential(*conv(in_planes, n3x3red, 1), *conv(n3x3red, n3x3, 3))
        self.b3 = nn.Sequential(*conv(in_planes, n5x5red, 1), *conv(n5x5red, n5x5, 3),
                                *conv(n5x5, n5x5, 3))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1),
                                *conv(in_planes, pool_planes, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class GoogLeNet(nn.Module):
    """Small: the first two Inception stages, at half width."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.pre_layers = nn.Sequential(nn.Conv2d(3, 96, kernel_size=3, padding=1),
                                        nn.BatchNorm2d(96), nn.ReLU(True))
        self.a3 = Inception(96, 32, 48, 64, 8, 16, 16)
        self.b3 = Inception(128, 64, 64, 96, 16, 48, 32)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.a4 = Inception(240, 96, 48, 104, 8, 24, 32)
        self.avgpool = nn.AvgPool2d(8, stride=1)
        self.linear = nn.Linear(256, num_classes)

    def forward(self, x):
        out = self.b3(self.a3(self.pre_layers(x)))
        out = self.maxpool(out)
        out = self.maxpool(self.a4(out))
        out = self.avgpool(out)
        return self.linear(torch.flatten(out, 1))


# ----------------------------------------------------------------------- DenseNet
class DenseLayer(nn.Module):
    def __init__(self, in_planes, growth_rate):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth_rate, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth_rate)
        self.conv2 = nn.Conv2d(4 * growth_rate, growth_rate, 3, padding=1, bias=False)

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x], 1)


class Transition(nn.Module):
    def __init__(self, in_planes, out_planes):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size=1, bias=False)

    def forward(self, x):
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet(nn.Module):
    """Small: blocks of (2, 4, 6, 4) layers, growth rate 12."""

    def __init__(self, num_layers=(2, 4, 6, 4), growth_rate=12, reduction=0.5,
                 num_classes=10):
        super().__init__()
        planes = 2 * growth_rate
        self.conv1 = nn.Conv2d(3, planes, kernel_size=3, padding=1, bias=False)
        stages = []
        for index, count in enumerate(num_layers):
            layers = []
            for _ in range(count):
                layers.append(DenseLayer(planes, growth_rate))
                planes += growth_rate
            stages.append(nn.Sequential(*layers))
            if index < len(num_layers) - 1:
                out_planes = int(math.floor(planes * reduction))
                stages.append(Transition(planes, out_planes))
                planes = out_planes
        self.features = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(planes)
        self.linear = nn.Linear(planes, num_classes)

    def forward(self, x):
        out = self.features(self.conv1(x))
        out = F.avg_pool2d(F.relu(self.bn(out)), 4)
        return self.linear(out.view(out.size(0), -1))


# ------------------------------------------------------------------------ ResNeXt
class ResNeXtBlock(nn.Module):
    expansion = 2

    def __init__(self, in_planes, cardinality, bottleneck_width, stride):
        super().__init__()
        width = cardinality * bottleneck_width
        self.conv1 = nn.Conv2d(in_planes, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=cardinality,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, self.expansion * width, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(self.expansion * width)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion * width:
            self.shortcut = conv_bn(in_planes, self.expansion * width, 1, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNeXt(nn.Module):
    """Small: ResNeXt29 (2x16d) with one block per stage."""

    def __init__(self, num_blocks=(1, 1, 1), cardinality=2, bottleneck_width=16,
                 num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes, layers = 64, []
        for index, count in enumerate(num_blocks):
            for stride in [1 if index == 0 else 2] + [1] * (count - 1):
                layers.append(ResNeXtBlock(in_planes, cardinality, bottleneck_width, stride))
                in_planes = ResNeXtBlock.expansion * cardinality * bottleneck_width
            bottleneck_width *= 2
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        out = F.avg_pool2d(out, 8)
        return self.linear(out.view(out.size(0), -1))


# ---------------------------------------------------------------------- MobileNets
class DepthwiseSeparable(nn.Module):
    def __init__(self, in_planes, out_planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, in_planes, 3, stride, 1, groups=in_planes,
                               bias=False)
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv2 = nn.Conv2d(in_planes, out_planes, 1, 1, 0, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)))


class MobileNet(nn.Module):
    layout = [64, (128, 2), 128, (256, 2), 256, (512, 2), 512, 512, 512, 512, 512,
              (1024, 2), 1024]

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        layers, in_planes = [], 32
        for item in self.layout:
            out_planes, stride = item if isinstance(item, tuple) else (item, 1)
            layers.append(DepthwiseSeparable(in_planes, out_planes, stride))
            in_planes = out_planes
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(1024, num_classes)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        out = F.avg_pool2d(out, 2)
        return self.linear(out.view(out.size(0), -1))


class InvertedResidual(nn.Module):
    def __init__(self, in_planes, out_planes, expansion, stride, kernel_size=3):
        super().__init__()
        self.stride = stride
        planes = expansion * in_planes
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size, stride, (kernel_size - 1) // 2,
                               groups=planes, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride == 1 and in_planes != out_planes:
            self.shortcut = conv_bn(in_planes, out_planes, 1)

    def forward(self, x):
        out = F.relu6(self.bn1(self.conv1(x)))
        out = F.relu6(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.stride == 1 else out


class MobileNetV2(nn.Module):
    # (expansion, out_planes, num_blocks, stride); strides 1 early for 32x32 inputs
    layout = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
              (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        layers, in_planes = [], 32
        for expansion, out_planes, count, stride in self.layout:
            for block_stride in [stride] + [1] * (count - 1):
                layers.append(InvertedResidual(in_planes, out_planes, expansion, block_stride))
                in_planes = out_planes
        self.layers = nn.Sequential(*layers)
        self.conv2 = nn.Conv2d(320, 1280, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(1280)
        self.linear = nn.Linear(1280, num_classes)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        out = F.relu(self.bn2(self.conv2(out)))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.view(out.size(0), -1))


# --------------------------------------------------------------------- ShuffleNets
def channel_shuffle(x, groups):
    n, c, h, w = x.size()
    return x.view(n, groups, c // groups, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)


class ShuffleBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride, groups):
        super().__init__()
        self.stride, self.groups = stride, groups
        mid = out_planes // 4
        first_groups = 1 if in_planes == 24 else groups
        self.conv1 = nn.Conv2d(in_planes, mid, 1, groups=first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        branch = out_planes - in_planes if stride == 2 else out_planes
        self.conv3 = nn.Conv2d(mid, branch, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(branch)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            return F.relu(torch.cat([out, F.avg_pool2d(x, 3, stride=2, padding=1)], 1))
        return F.relu(out + x)


class ShuffleNet(nn.Module):
    """Small: ShuffleNet g=2 with blocks (1, 2, 1)."""

    def __init__(self, out_planes=(200, 400, 800), num_blocks=(1, 2, 1), groups=2,
                 num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        layers, in_planes = [], 24
        for planes, count in zip(out_planes, num_blocks):
            for index in range(count):
                layers.append(ShuffleBlock(in_planes, planes, 2 if index == 0 else 1, groups))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(out_planes[-1], num_classes)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.view(out.size(0), -1))


class ShuffleV2Block(nn.Module):
    def __init__(self, in_planes, out_planes, stride):
        super().__init__()
        self.stride = stride
        branch = out_planes // 2
        branch_in = in_planes if stride == 2 else branch
        if stride == 2:
            self.left = nn.Sequential(conv_bn(in_planes, in_planes, 3, 2, groups=in_planes),
                                      conv_bn(in_planes, branch, 1), nn.ReLU(inplace=True))
        self.right = nn.Sequential(conv_bn(branch_in, branch, 1), nn.ReLU(inplace=True),
                                   conv_bn(branch, branch, 3, stride, groups=branch),
                                   conv_bn(branch, branch, 1), nn.ReLU(inplace=True))

    def forward(self, x):
        if self.stride == 2:
            out = torch.cat([self.left(x), self.right(x)], dim=1)
        else:
            half = x.size(1) // 2
            left, right = x[:, :half, :, :], x[:, half:, :, :]
            out = torch.cat([left, self.right(right)], dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """Small: width 0.5 with blocks (1, 2, 1)."""

    def __init__(self, out_planes=(48, 96, 192), num_blocks=(1, 2, 1), num_classes=10):
        super().__init__()
        self.conv1 = conv_bn(3, 24, 3)
        layers, in_planes = [], 24
        for planes, count in zip(out_planes, num_blocks):
            for index in range(count):
                layers.append(ShuffleV2Block(in_planes, planes, 2 if index == 0 else 1))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.conv2 = conv_bn(in_planes, 1024, 1)
        self.linear = nn.Linear(1024, num_classes)

    def forward(self, x):
        out = self.layers(F.relu(self.conv1(x)))
        out = F.relu(self.conv2(out))
        out = F.adaptive_avg_pool2d(out, 1)
        return self.linear(torch.flatten(out, start_dim=1))


# -------------------------------------------------------------------- EfficientNet
def swish(x):
    return x * x.sigmoid()


def drop_connect(x, drop_ratio):
    keep = 1.0 - drop_ratio
    mask = torch.empty([x.shape[0], 1, 1, 1], dtype=x.dtype, device=x.device)
    mask.bernoulli_(keep)
    return x / keep * mask


class SqueezeExcite(nn.Module):
    def __init__(self, planes, squeezed, activation=None):
        super().__init__()
        self.activation = activation
        self.reduce = nn.Conv2d(planes, squeezed, kernel_size=1, bias=True)
        self.expand = nn.Conv2d(squeezed, planes, kernel_size=1, bias=True)

    def forward(self, x):
        weight = F.adaptive_avg_pool2d(x, (1, 1))
        weight = self.reduce(weight)
        weight = F.relu(weight) if self.activation is None else self.activation(weight)
        weight = self.expand(weight)
        return x * weight.sigmoid()


class MBConv(nn.Module):
    def __init__(self, in_planes, out_planes, kernel_size, stride, expansion, drop_rate):
        super().__init__()
        self.stride, self.expansion, self.drop_rate = stride, expansion, drop_rate
        planes = expansion * in_planes
        if expansion != 1:
            self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size, stride,
                               padding=1 if kernel_size == 3 else 2, groups=planes, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = SqueezeExcite(planes, max(1, in_planes // 4), activation=swish)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.has_skip = stride == 1 and in_planes == out_planes

    def forward(self, x):
        out = x if self.expansion == 1 else swish(self.bn1(self.conv1(x)))
        out = self.se(swish(self.bn2(self.conv2(out))))
        out = self.bn3(self.conv3(out))
        if self.has_skip:
            if self.training and self.drop_rate > 0:
                out = drop_connect(out, self.drop_rate)
            out = out + x
        return out


class EfficientNetB0(nn.Module):
    # (expansion, out_planes, num_blocks, kernel_size, stride)
    layout = [(1, 16, 1, 3, 1), (6, 24, 2, 3, 1), (6, 40, 2, 5, 2), (6, 80, 3, 3, 2),
              (6, 112, 3, 5, 1), (6, 192, 4, 5, 2), (6, 320, 1, 3, 1)]

    def __init__(self, num_classes=10, dropout=0.2, drop_connect_rate=0.2):
        super().__init__()
        self.dropout = dropout
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        total = sum(count for _, _, count, _, _ in self.layout)
        layers, in_planes = [], 32
        for expansion, out_planes, count, kernel_size, stride in self.layout:
            for block_stride in [stride] + [1] * (count - 1):
                rate = drop_connect_rate * len(layers) / total
                layers.append(MBConv(in_planes, out_planes, kernel_size, block_stride,
                                     expansion, rate))
                in_planes = out_planes
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(320, num_classes)

    def forward(self, x):
        out = self.layers(swish(self.bn1(self.conv1(x))))
        out = F.adaptive_avg_pool2d(out, 1)
        out = out.view(out.size(0), -1)
        out = F.dropout(out, p=self.dropout, training=self.training)
        return self.linear(out)


# -------------------------------------------------------------------------- RegNet
class RegNetBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride, group_width, se_ratio):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=stride, padding=1,
                               groups=out_planes // group_width, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.se = SqueezeExcite(out_planes, int(round(in_planes * se_ratio)))
        self.conv3 = nn.Conv2d(out_planes, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = conv_bn(in_planes, out_planes, 1, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.se(F.relu(self.bn2(self.conv2(out))))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class RegNet(nn.Module):
    """Small: RegNetY-200MF widths with depths (1, 1, 2, 2)."""

    def __init__(self, depths=(1, 1, 2, 2), widths=(24, 56, 152, 368), strides=(1, 1, 2, 2),
                 group_width=8, se_ratio=0.25, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, in_planes = [], 64
        for depth, width, stride in zip(depths, widths, strides):
            for block_stride in [stride] + [1] * (depth - 1):
                layers.append(RegNetBlock(in_planes, width, block_stride, group_width,
                                          se_ratio))
                in_planes = width
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        out = F.adaptive_avg_pool2d(out, (1, 1))
        return self.linear(out.view(out.size(0), -1))


# ----------------------------------------------------------------------------- DLA
class Root(nn.Module):
    def __init__(self, in_planes, out_planes):
        super().__init__()
        self.conv = nn.Conv2d(in_planes, out_planes, 1, stride=1, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(out_planes)

    def forward(self, xs):
        return F.relu(self.bn(self.conv(torch.cat(xs, 1))))


class Tree(nn.Module):
    def __init__(self, in_planes, out_planes, level=1, stride=1):
        super().__init__()
        self.level = level
        if level == 1:
            self.root = Root(2 * out_planes, out_planes)
            self.left = BasicBlock(in_planes, out_planes, stride)
            self.right = BasicBlock(out_planes, out_planes, 1)
        else:
            self.root = Root((level + 2) * out_planes, out_planes)
            self.prev_roots = nn.ModuleList(
                [Tree(in_planes, out_planes, i, stride) for i in reversed(range(1, level))])
            self.prev_root = BasicBlock(in_planes, out_planes, stride)
            self.left = BasicBlock(out_planes, out_planes, 1)
            self.right = BasicBlock(out_planes, out_planes, 1)

    def forward(self, x):
        xs = [self.prev_root(x)] if self.level > 1 else []
        for tree in getattr(self, "prev_roots", []):
            x = tree(x)
            xs.append(x)
        x = self.left(x)
        xs.append(x)
        xs.append(self.right(x))
        return self.root(xs)


class DLA(nn.Module):
    """Small: channels (16, 16, 32, 64, 128, 256)."""

    def __init__(self, channels=(16, 16, 32, 64, 128, 256), num_classes=10):
        super().__init__()

        def stem(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=1, padding=1, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU(True))

        self.base = stem(3, channels[0])
        self.layer1 = stem(channels[0], channels[0])
        self.layer2 = stem(channels[0], channels[1])
        self.layer3 = Tree(channels[1], channels[2], level=1, stride=1)
        self.layer4 = Tree(channels[2], channels[3], level=2, stride=2)
        self.layer5 = Tree(channels[3], channels[4], level=2, stride=2)
        self.layer6 = Tree(channels[4], channels[5], level=1, stride=2)
        self.linear = nn.Linear(channels[5], num_classes)

    def forward(self, x):
        out = self.layer2(self.layer1(self.base(x)))
        out = self.layer6(self.layer5(self.layer4(self.layer3(out))))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.view(out.size(0), -1))


# ----------------------------------------------------------------------------- DPN
class DualPathBlock(nn.Module):
    def __init__(self, last_planes, in_planes, out_planes, dense_depth, stride, first):
        super().__init__()
        self.out_planes, self.dense_depth = out_planes, dense_depth
        self.conv1 = nn.Conv2d(last_planes, in_planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv2 = nn.Conv2d(in_planes, in_planes, 3, stride=stride, padding=1, groups=8,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(in_planes)
        self.conv3 = nn.Conv2d(in_planes, out_planes + dense_depth, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes + dense_depth)
        self.shortcut = nn.Sequential()
        if first:
            self.shortcut = conv_bn(last_planes, out_planes + dense_depth, 1, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        x = self.shortcut(x)
        d = self.out_planes
        out = torch.cat([x[:, :d, :, :] + out[:, :d, :, :], x[:, d:, :, :], out[:, d:, :, :]],
                        1)
        return F.relu(out)


class DPN(nn.Module):
    """Small: DPN26 at a quarter of the width, one block per stage."""

    def __init__(self, in_planes=(24, 48, 96, 192), out_planes=(64, 128, 256, 512),
                 num_blocks=(1, 1, 1, 1), dense_depth=(8, 16, 12, 64), num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, last_planes = [], 64
        for index in range(4):
            stride = 1 if index == 0 else 2
            for block in range(num_blocks[index]):
                layers.append(DualPathBlock(last_planes, in_planes[index], out_planes[index],
                                            dense_depth[index], stride if block == 0 else 1,
                                            block == 0))
                last_planes = out_planes[index] + (block + 2) * dense_depth[index]
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(last_planes, num_classes)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.view(out.size(0), -1))


# ------------------------------------------------------------------------- PNASNet
class SepConv(nn.Module):
    def __init__(self, in_planes, out_planes, kernel_size, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size, stride,
                               padding=(kernel_size - 1) // 2, bias=False, groups=in_planes)
        self.bn1 = nn.BatchNorm2d(out_planes)

    def forward(self, x):
        return self.bn1(self.conv1(x))


class CellB(nn.Module):
    def __init__(self, in_planes, out_planes, stride=1):
        super().__init__()
        self.stride = stride
        self.sep_conv1 = SepConv(in_planes, out_planes, kernel_size=7, stride=stride)
        self.sep_conv2 = SepConv(in_planes, out_planes, kernel_size=3, stride=stride)
        self.sep_conv3 = SepConv(in_planes, out_planes, kernel_size=5, stride=stride)
        if stride == 2:
            self.conv1 = nn.Conv2d(in_planes, out_planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(2 * out_planes, out_planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)

    def forward(self, x):
        y1 = self.sep_conv1(x)
        y2 = self.sep_conv2(x)
        y3 = F.max_pool2d(x, kernel_size=3, stride=self.stride, padding=1)
        if self.stride == 2:
            y3 = self.bn1(self.conv1(y3))
        y4 = self.sep_conv3(x)
        b1 = F.relu(y1 + y2)
        b2 = F.relu(y3 + y4)
        return F.relu(self.bn2(self.conv2(torch.cat([b1, b2], 1))))


class PNASNet(nn.Module):
    """Small: PNASNet-B with one cell per stage and 16 planes."""

    def __init__(self, num_cells=1, num_planes=16, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, num_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(num_planes)
        layers, planes = [], num_planes
        for stage in range(3):
            if stage > 0:
                layers.append(CellB(planes, planes * 2, stride=2))
                planes *= 2
            for _ in range(num_cells):
                layers.append(CellB(planes, planes, stride=1))
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(planes, num_classes)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        out = F.avg_pool2d(out, 8)
        return self.linear(out.view(out.size(0), -1))


MODELS = {"VGG11": VGG, "ResNet18": ResNet18, "PreActResNet18": PreActResNet18,
          "GoogLeNet": GoogLeNet, "DenseNet": DenseNet, "ResNeXt": ResNeXt,
          "MobileNet": MobileNet, "MobileNetV2": MobileNetV2, "ShuffleNet": ShuffleNet,
          "ShuffleNetV2": ShuffleNetV2, "SENet18": SENet18, "EfficientNetB0": EfficientNetB0,
          "RegNet": RegNet, "DLA": DLA, "DPN": DPN, "PNASNet": PNASNet}
