"""Generated scenes of small shapes for segmentation and detection examples."""
import numpy as np

CLASS_NAMES = ("background", "square", "disk")


def make_shapes(n, size=32, max_objects=4, min_size=3, max_size=10, noise=0.1, seed=0):
    """Scenes of squares and disks on a noisy background.

    Parameters
    ----------
    n : int
        Number of images.
    size : int or (H, W)
    max_objects : int
        Each image holds 1 to ``max_objects`` objects (they may overlap; later
        ones are drawn on top).
    min_size, max_size : int
        Object side / diameter in pixels (down to 3 px: small objects).
    noise : float
        Standard deviation of the Gaussian pixel noise.

    Returns
    -------
    images : float32 (n, 1, H, W)
    masks : int64 (n, H, W), 0 background, 1 square, 2 disk
    boxes : list of float64 (k, 5) arrays ``(x1, y1, x2, y2, class)`` per image
    """
    height, width = (size, size) if np.isscalar(size) else size
    if not 1 <= min_size <= max_size <= min(height, width):
        raise ValueError("make_shapes: need 1 <= min_size <= max_size <= image size")
    rng = np.random.default_rng(seed)
    images = rng.normal(0.0, noise, size=(n, 1, height, width)).astype(np.float32)
    masks = np.zeros((n, height, width), dtype=np.int64)
    ys, xs = np.mgrid[0:height, 0:width]
    boxes = []
    for index in range(n):
        objects = []
        for _ in range(rng.integers(1, max_objects + 1)):
            side = int(rng.integers(min_size, max_size + 1))
            top = int(rng.integers(0, height - side + 1))
            left = int(rng.integers(0, width - side + 1))
            label = int(rng.integers(1, 3))
            if label == 1:
                region = (ys >= top) & (ys < top + side) & (xs >= left) & (xs < left + side)
            else:
                radius = side / 2
                region = (ys + 0.5 - top - radius) ** 2 + (xs + 0.5 - left - radius) ** 2 \
                    <= radius ** 2
            masks[index][region] = label
            images[index, 0][region] = 1.0 + rng.normal(0.0, noise, size=region.sum())
            objects.append((left, top, left + side, top + side, label))
        boxes.append(np.array(objects, dtype=np.float64))
    return images, masks, boxes
