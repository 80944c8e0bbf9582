"""Bundled and on-disk datasets: scikit-learn's digits, and ``.npz`` image files."""
import os
import zipfile
import zlib
from types import SimpleNamespace

import numpy as np

from fastdl.data.dataset import TensorDataset
from fastdl.data.split import stratified_split


def load_digits(seed=0, fractions=(0.7, 0.15, 0.15)):
    """scikit-learn's bundled handwritten digits (1,797 images, 8×8, 10 classes).

    Images are scaled to [0, 1] as float32 ``(N, 1, 8, 8)``; labels are int64.
    The stratified train/val/test split is fixed by ``seed``.

    Returns
    -------
    SimpleNamespace with ``train``, ``val``, ``test`` (TensorDatasets),
    ``num_classes`` and ``input_shape``.
    """
    from sklearn.datasets import load_digits as sklearn_digits
    bunch = sklearn_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]
    y = bunch.target.astype(np.int64)
    train, val, test = stratified_split(y, fractions, seed)
    return SimpleNamespace(train=TensorDataset(x[train], y[train]),
                           val=TensorDataset(x[val], y[val]),
                           test=TensorDataset(x[test], y[test]),
                           num_classes=10, input_shape=(1, 8, 8))


def load_npz(path, num_classes=None):
    """Images and labels from a ``.npz`` with arrays ``x`` (N, C, H, W) and ``y`` (N,).

    Returns
    -------
    TensorDataset of float32 ``x`` and int64 ``y``.

    Raises
    ------
    ValueError
        Missing ``x``/``y``, ``x`` not 4-D, lengths differ, non-integer or
        out-of-range labels, non-finite pixels (also after the cast to float32),
        or a file that is not an npz or is truncated or damaged.
    """
    if not os.path.isfile(path):
        raise ValueError("load_npz: no such file: %s" % path)
    # A truncated or damaged archive fails in numpy, zipfile or zlib with any of
    # these, either on opening or on reading an array.
    unreadable = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)
    with open(path, "rb") as f:
        head = f.read(6)
    if head == b"\x93NUMPY":
        raise ValueError("load_npz: %s is not a readable .npz file (it is a single .npy "
                         "array, not an archive of x and y)" % path)
    if not head.startswith(b"PK"):
        raise ValueError("load_npz: %s is not a readable .npz file (not a zip archive)"
                         % path)
    try:
        archive = np.load(path, allow_pickle=False)
    except unreadable as error:
        raise ValueError("load_npz: %s is not a readable .npz file (%s)"
                         % (path, _first_line(error))) from None
    with archive:
        missing = [key for key in ("x", "y") if key not in archive.files]
        if missing:
            raise ValueError("load_npz: %s has no array %s (it has %s)"
                             % (path, " or ".join(repr(m) for m in missing), archive.files))
        try:
            x, y = archive["x"], archive["y"]
        except unreadable as error:
            raise ValueError("load_npz: %s is damaged or truncated (%s)"
                             % (path, _first_line(error))) from None
    if x.ndim != 4:
        raise ValueError("load_npz: x must be 4-D (N, C, H, W) images, got shape %s"
                         % (x.shape,))
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError("load_npz: y must be 1-D with one label per image, got shape %s for "
                         "%d images" % (y.shape, len(x)))
    if x.dtype.kind not in "fiub":
        raise ValueError("load_npz: x must hold finite numbers, got dtype %s" % x.dtype)
    with np.errstate(over="ignore"):   # finite in float64 can still overflow float32
        x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError("load_npz: x must hold finite numbers, but it has NaN or infinite "
                         "values (or values beyond float32's range)")
    if y.dtype.kind not in "iu":
        raise ValueError("load_npz: y must hold integer class labels, got dtype %s" % y.dtype)
    if y.dtype.kind == "u" and len(y) and y.max() > np.iinfo(np.int64).max:
        raise ValueError("load_npz: labels must be in [0, 2**63), got max %d" % y.max())
    upper = num_classes if num_classes is not None else None
    if len(y) and (y.min() < 0 or (upper is not None and y.max() >= upper)):
        raise ValueError("load_npz: labels must be in [0, %s), got min %d max %d"
                         % (upper if upper is not None else "num_classes", y.min(), y.max()))
    return TensorDataset(x, y.astype(np.int64))


def _first_line(error):
    """An exception's message up to its first sentence end or line break."""
    text = str(error).strip() or type(error).__name__
    return text.split("\n")[0].split(". ")[0]
