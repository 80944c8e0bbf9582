"""What the benchmark suites share: seeded data and torch's versions of the zoo's networks.

Torch is imported only when a torch case runs, so ``fastdl bench`` works (and
shows ``-``) where torch is not installed.
"""
import numpy as np

__all__ = ["import_torch", "rng", "torch_lenet5", "torch_resnet"]


def rng():
    """A fresh generator with seed 0: every case starts from the same data."""
    return np.random.default_rng(0)


def import_torch():
    """The torch module, imported on first use."""
    import torch
    return torch


def torch_lenet5(torch):
    """LeNet-5 as ``fastdl.models.lenet5`` builds it."""
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(400, 120), nn.ReLU(),
                         nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def torch_resnet(torch, blocks_per_stage=1):
    """ResNet-8 (one block per stage) or ResNet-20 (three), as ``fastdl.models`` builds."""
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                              nn.BatchNorm2d(cout))

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))
    blocks, channels = [], 16
    for width, stride in ((16, 1), (32, 2), (64, 2)):
        for index in range(blocks_per_stage):
            blocks.append(Block(channels, width, stride if index == 0 else 1))
            channels = width
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                         nn.ReLU(), *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(64, 10))
