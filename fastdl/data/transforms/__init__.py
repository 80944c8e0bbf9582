"""Image transforms, as ``torchvision.transforms``, and batch mixing (mixup, cutmix).

``transform(img, rng=None)`` takes a Tensor or ndarray ``(..., C, H, W)`` (or
a PIL image) and returns the same kind; a 4-D input is a batch, each image
with its own random parameters, computed vectorised. Randomness comes from
``rng`` or else fastdl's global generator (``fastdl.manual_seed``; in a
DataLoader worker, the worker's seed). The DataLoader's ``transform=`` hook
calls ``transform(x_batch, rng)`` with a generator seeded per batch.
"""
from fastdl.data.transforms._image import InterpolationMode
from fastdl.data.transforms.basic import (CenterCrop, Compose, Lambda, Normalize, RandomCrop,
                                          RandomHorizontalFlip, RandomResizedCrop,
                                          RandomVerticalFlip, Resize, ToTensor, Transform)
from fastdl.data.transforms.color import ColorJitter
from fastdl.data.transforms.geometric import RandomAffine, RandomRotation
from fastdl.data.transforms.mix import RandomErasing, cutmix, mixup

__all__ = ["CenterCrop", "ColorJitter", "Compose", "InterpolationMode", "Lambda", "Normalize",
           "RandomAffine", "RandomCrop", "RandomErasing", "RandomHorizontalFlip",
           "RandomResizedCrop", "RandomRotation", "RandomVerticalFlip", "Resize", "ToTensor",
           "Transform", "cutmix", "mixup"]
