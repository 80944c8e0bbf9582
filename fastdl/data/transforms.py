"""Batch transforms: each takes and returns a whole batch ``(N, C, H, W)``, vectorised."""
import numpy as np


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, batch, rng):
        for transform in self.transforms:
            batch = transform(batch, rng)
        return batch


class Normalize:
    """``(x - mean) / std`` per channel."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
        if np.any(self.std <= 0):
            raise ValueError("Normalize: std must be positive, got %s" % (std,))

    def __call__(self, batch, rng=None):
        return (batch - self.mean) / self.std


class RandomCrop:
    """Zero-pad by ``padding`` then crop ``size`` at a random offset per image."""

    def __init__(self, size, padding=0):
        self.size = (size, size) if np.isscalar(size) else tuple(size)
        self.padding = int(padding)

    def __call__(self, batch, rng):
        n, c, h, w = batch.shape
        p = self.padding
        padded = np.pad(batch, ((0, 0), (0, 0), (p, p), (p, p))) if p else batch
        out_h, out_w = self.size
        if out_h > h + 2 * p or out_w > w + 2 * p:
            raise ValueError("RandomCrop: size %s exceeds the padded image %s"
                             % (self.size, (h + 2 * p, w + 2 * p)))
        top = rng.integers(0, h + 2 * p - out_h + 1, size=n)
        left = rng.integers(0, w + 2 * p - out_w + 1, size=n)
        rows = top[:, None] + np.arange(out_h)            # (n, out_h)
        cols = left[:, None] + np.arange(out_w)           # (n, out_w)
        images = np.arange(n)[:, None, None, None]
        channels = np.arange(c)[None, :, None, None]
        return np.ascontiguousarray(padded[images, channels, rows[:, None, :, None],
                                           cols[:, None, None, :]])


class RandomHorizontalFlip:
    """Mirror each image left-right with probability ``p``."""

    def __init__(self, p=0.5):
        self.p = float(p)

    def __call__(self, batch, rng):
        flip = rng.random(len(batch)) < self.p
        out = batch.copy()
        out[flip] = batch[flip, :, :, ::-1]
        return out
