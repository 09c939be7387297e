"""Segmentation metrics in numpy: a confusion matrix, per-class IoU, mIoU and pixel accuracy.

Conventions (the usual ones, as in mmsegmentation and torchmetrics' ``JaccardIndex``
with ``ignore_index``):

- Pixels whose truth is the ignore value (255: nodata or outside) count nowhere,
  whatever is predicted there.
- The IoU of class c is TP / (TP + FP + FN) over the pixels scored. A class that is
  neither in the truth nor in the prediction has no IoU (NaN): it is not a zero.
- mIoU is the mean IoU over the classes present in the truth or the prediction of
  the pixels scored, i.e. the mean of the IoUs that are not NaN.
- Pixel accuracy is the share of scored pixels whose class is right.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

IGNORE = 255


def confusion(truth: np.ndarray, pred: np.ndarray, n_classes: int, ignore: int = IGNORE) -> np.ndarray:
    """``n_classes`` × ``n_classes`` pixel counts (int64): rows are the true class, columns the predicted one."""
    truth = np.asarray(truth).ravel()
    pred = np.asarray(pred).ravel()
    if truth.shape != pred.shape:
        raise ValueError(f"truth has {truth.size} pixels, the prediction {pred.size}")
    keep = truth != ignore
    t, p = truth[keep].astype(np.int64), pred[keep].astype(np.int64)
    if t.size and (t.max() >= n_classes or p.max() >= n_classes or min(t.min(), p.min()) < 0):
        raise ValueError(f"class ids must lie in 0..{n_classes - 1}")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def iou(conf: np.ndarray) -> np.ndarray:
    """IoU per class; NaN for a class in neither the truth nor the prediction."""
    conf = np.asarray(conf, np.float64)
    tp = np.diag(conf)
    union = conf.sum(axis=0) + conf.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, math.nan)


def mean_iou(conf: np.ndarray) -> float:
    """Mean IoU over the classes present in the truth or the prediction (NaN when no pixel is scored)."""
    values = iou(conf)
    present = np.isfinite(values)
    return float(values[present].mean()) if present.any() else math.nan


def pixel_accuracy(conf: np.ndarray) -> float:
    conf = np.asarray(conf, np.float64)
    total = conf.sum()
    return float(np.trace(conf) / total) if total > 0 else math.nan


def scores(conf: np.ndarray, classes: Sequence[int]) -> dict:
    """mIoU, pixel accuracy, the IoU of each class (keyed by its class id as a string; None when absent),
    and the pixels scored, in all and per true class."""
    conf = np.asarray(conf)
    per_class = iou(conf)
    return {
        "miou": mean_iou(conf),
        "pixel_accuracy": pixel_accuracy(conf),
        "iou": {str(c): (float(v) if math.isfinite(v) else None) for c, v in zip(classes, per_class)},
        "pixels": int(conf.sum()),
        "class_pixels": {str(c): int(n) for c, n in zip(classes, conf.sum(axis=1))},
    }


def summarise(per_fold: Sequence[dict], classes: Sequence[int]) -> dict:
    """Mean and population (ddof=0) standard deviation over folds of mIoU, pixel accuracy and each class's IoU.

    A class's IoU is averaged over the folds where it has one; ``folds`` says how many.
    """

    def stat(values: list) -> dict:
        v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
        return {
            "mean": float(v.mean()) if v.size else math.nan,
            "std": float(v.std()) if v.size else math.nan,
            "folds": int(v.size),
        }

    return {
        "miou": stat([f["miou"] for f in per_fold]),
        "pixel_accuracy": stat([f["pixel_accuracy"] for f in per_fold]),
        "iou": {str(c): stat([f["iou"][str(c)] for f in per_fold]) for c in classes},
    }
