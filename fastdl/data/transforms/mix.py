"""Occlusion and mixing: ``RandomErasing`` per image; ``mixup`` and ``cutmix`` per batch.

``mixup`` (Zhang et al., 2018) blends each example with another of the batch,
``x' = lam * x + (1 - lam) * x[perm]`` with ``lam ~ Beta(alpha, alpha)``;
``cutmix`` (Yun et al., 2019) pastes a box of the other example instead, with
``lam`` the area left. Both return either the paired targets
``(y, y[perm], lam)``, to train on ``lam * loss(out, y_a) + (1 - lam) *
loss(out, y_b)``, or, given ``num_classes``, soft targets ``lam * onehot(y)
+ (1 - lam) * onehot(y[perm])`` for a loss taking class probabilities.
"""
import numpy as np

from fastdl.data._common import as_array, as_tensor, is_tensor, like, numpy_generator
from fastdl.data.transforms._image import from_batch, to_batch
from fastdl.data.transforms.basic import Transform


def _random_boxes(rng, n, height, width, scale, ratio):
    """Ten tries per image at a box smaller than the image (torchvision's RandomErasing).

    Returns ``(found, top, left, h, w)`` arrays (n,); ``h = round(sqrt(area *
    aspect))`` with the area fraction in ``scale`` and the aspect in ``ratio``.
    """
    log_ratio = np.log(ratio)
    box_area = height * width * rng.uniform(scale[0], scale[1], size=(n, 10))
    aspect = np.exp(rng.uniform(log_ratio[0], log_ratio[1], size=(n, 10)))
    box_h = np.rint(np.sqrt(box_area * aspect)).astype(np.int64)
    box_w = np.rint(np.sqrt(box_area / aspect)).astype(np.int64)
    fits = (box_h < height) & (box_w < width)
    first = np.argmax(fits, axis=1)
    rows = np.arange(n)
    found = fits[rows, first]
    box_h, box_w = box_h[rows, first] * found, box_w[rows, first] * found
    top = np.floor(rng.random(n) * (height - box_h + 1)).astype(np.int64)
    left = np.floor(rng.random(n) * (width - box_w + 1)).astype(np.int64)
    return found, top, left, box_h, box_w


def _box_masks(top, left, box_h, box_w, height, width):
    """``(N, 1, H, W)`` booleans: each image's box."""
    rows = np.arange(height)[None, :]
    cols = np.arange(width)[None, :]
    inside_rows = (rows >= top[:, None]) & (rows < (top + box_h)[:, None])
    inside_cols = (cols >= left[:, None]) & (cols < (left + box_w)[:, None])
    return (inside_rows[:, :, None] & inside_cols[:, None, :])[:, None]


class RandomErasing(Transform):
    """With probability ``p``, overwrite a random box of each image (Zhong et al., 2020).

    Parameters
    ----------
    p : float
    scale : (min, max)
        The box's area as a fraction of the image's.
    ratio : (min, max)
        The box's aspect ratio (height / width), drawn log-uniformly.
    value : number, per-channel sequence, or 'random'
        What the box holds; 'random' is standard normal noise.
    inplace : bool
        Accepted; the input is never modified.
    """

    def __init__(self, p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0, inplace=False):
        if not 0 <= p <= 1:
            raise ValueError("RandomErasing: p must be in [0, 1], got %r" % (p,))
        if scale[0] > scale[1] or ratio[0] > ratio[1] or scale[0] < 0 or scale[1] > 1 \
                or ratio[0] <= 0:
            raise ValueError("RandomErasing: scale must be an increasing pair in [0, 1] and "
                             "ratio an increasing pair of positive numbers, got %r and %r"
                             % (scale, ratio))
        if isinstance(value, str) and value != "random":
            raise ValueError("RandomErasing: value must be a number, a sequence or 'random', "
                             "got %r" % (value,))
        self.p, self.scale, self.ratio = float(p), tuple(scale), tuple(ratio)
        self.value, self.inplace = value, inplace

    def __call__(self, img, rng=None):
        batch, how = to_batch(img)
        n, channels, height, width = batch.shape
        rng = numpy_generator(rng)
        erase = rng.random(n) < self.p
        found, top, left, box_h, box_w = _random_boxes(rng, n, height, width, self.scale,
                                                       self.ratio)
        mask = _box_masks(top, left, box_h, box_w, height, width) \
            & (erase & found)[:, None, None, None]
        if isinstance(self.value, str):
            value = rng.standard_normal(batch.shape).astype(batch.dtype)
        else:
            value = np.asarray(self.value, dtype=batch.dtype).reshape(1, -1, 1, 1)
        return from_batch(np.where(mask, value, batch), how)


def _lam(alpha, rng):
    if alpha < 0:
        raise ValueError("alpha must be non-negative, got %r" % (alpha,))
    return float(rng.beta(alpha, alpha)) if alpha > 0 else 1.0


def _targets(y, perm, lam, num_classes, tensor):
    labels = as_array(y)
    if num_classes is None:
        paired = (labels, labels[perm])
        return tuple(as_tensor(t) if tensor else t for t in paired) + (lam,)
    if labels.ndim == 1:
        labels = np.eye(num_classes, dtype=np.float32)[labels]
    soft = (lam * labels + (1.0 - lam) * labels[perm]).astype(np.float32)
    return (as_tensor(soft) if tensor else soft,)


def mixup(x, y, alpha=1.0, num_classes=None, generator=None):
    """Blend each example with another of the batch.

    Parameters
    ----------
    x : Tensor or ndarray (N, ...)
    y : Tensor or ndarray (N,) int labels, or (N, K) soft targets
    alpha : float
        ``lam ~ Beta(alpha, alpha)``, one per batch (0: no mixing).
    num_classes : int, optional
        Return soft targets instead of the pair.
    generator : None, int or numpy.random.Generator

    Returns
    -------
    ``(x_mixed, y_a, y_b, lam)``, or ``(x_mixed, soft_targets (N, K) float32)``
    with ``num_classes``; Tensors when ``x`` is one.
    """
    rng = numpy_generator(generator)
    lam = _lam(alpha, rng)
    array = as_array(x)
    perm = rng.permutation(len(array))
    mixed = (lam * array + (1.0 - lam) * array[perm]).astype(array.dtype, copy=False)
    return (like(mixed, x),) + _targets(y, perm, lam, num_classes, is_tensor(x) or is_tensor(y))


def cutmix(x, y, alpha=1.0, num_classes=None, generator=None):
    """Paste a random box of another example of the batch into each image.

    The box covers ``1 - lam`` of the image (``lam ~ Beta(alpha, alpha)``),
    centred uniformly and clipped at the borders; ``lam`` is then the area
    actually kept. Parameters and returns as :func:`mixup`, with ``x`` of
    shape ``(N, C, H, W)``.
    """
    rng = numpy_generator(generator)
    lam = _lam(alpha, rng)
    batch = as_array(x)
    if batch.ndim != 4:
        raise ValueError("cutmix: x must be (N, C, H, W), got shape %s" % (batch.shape,))
    n, _, height, width = batch.shape
    perm = rng.permutation(n)
    cut = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    centre_y, centre_x = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = np.clip([centre_y - cut_h // 2, centre_y + cut_h // 2], 0, height)
    left, right = np.clip([centre_x - cut_w // 2, centre_x + cut_w // 2], 0, width)
    mixed = batch.copy()
    mixed[:, :, top:bottom, left:right] = batch[perm, :, top:bottom, left:right]
    lam = 1.0 - (bottom - top) * (right - left) / (height * width)
    return (like(mixed, x),) + _targets(y, perm, lam, num_classes, is_tensor(x) or is_tensor(y))
