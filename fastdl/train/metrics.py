"""Classification and segmentation metrics from predicted and true labels."""
import numpy as np


def confusion_matrix(y_true, y_pred, num_classes):
    """``(num_classes, num_classes)`` counts: row = true class, column = predicted."""
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    for name, labels in (("y_true", y_true), ("y_pred", y_pred)):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError("confusion_matrix: %s must be in [0, %d), got min %d max %d"
                             % (name, num_classes, labels.min(), labels.max()))
    counts = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def accuracy(y_true, y_pred):
    """Fraction of correct predictions."""
    y_true = np.asarray(y_true)
    return float(np.mean(y_true == np.asarray(y_pred))) if y_true.size else float("nan")


def per_class_recall(y_true, y_pred, num_classes):
    """Recall of each class (NaN for a class absent from ``y_true``)."""
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    support = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(matrix) / support, np.nan)


def _valid_labels(y_true, y_pred, ignore_index):
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError("y_true and y_pred must have the same shape, got %s and %s"
                         % (y_true.shape, y_pred.shape))
    valid = y_true != ignore_index
    return y_true[valid], y_pred[valid]


def pixel_accuracy(y_true, y_pred, ignore_index=-100):
    """Fraction of correctly labelled pixels among those whose target is not ``ignore_index``.

    Parameters
    ----------
    y_true, y_pred : int arrays of the same shape, e.g. ``(N, H, W)``
    ignore_index : int

    Returns
    -------
    float (NaN when every pixel is ignored)
    """
    y_true, y_pred = _valid_labels(y_true, y_pred, ignore_index)
    return float(np.mean(y_true == y_pred)) if y_true.size else float("nan")


def mean_iou_from_confusion(matrix):
    """Mean over classes present (row or column sum > 0) of TP / (TP + FP + FN)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    true_positives = np.diag(matrix)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - true_positives
    present = union > 0
    return float(np.mean(true_positives[present] / union[present])) if present.any() \
        else float("nan")


def mean_iou(y_true, y_pred, num_classes, ignore_index=-100):
    """Mean intersection over union of the classes present in ``y_true`` or ``y_pred``.

    Pixels whose target is ``ignore_index`` are left out; a class that appears
    in neither is not averaged (its IoU would be 0/0).

    Parameters
    ----------
    y_true, y_pred : int arrays of the same shape with values in ``[0, num_classes)``
    num_classes : int
    ignore_index : int

    Returns
    -------
    float (NaN when every pixel is ignored)
    """
    y_true, y_pred = _valid_labels(y_true, y_pred, ignore_index)
    return mean_iou_from_confusion(confusion_matrix(y_true, y_pred, num_classes))
