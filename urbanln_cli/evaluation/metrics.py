"""Probe metrics in numpy, matching scikit-learn.

Regression: r2_score, mean_squared_error (as RMSE) and mean_absolute_error. Classification:
accuracy_score, balanced_accuracy_score, f1_score (macro and per class) and confusion_matrix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

NAMES = ("r2", "rmse", "mae")
CLASS_NAMES = ("accuracy", "balanced_accuracy", "macro_f1")


def r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """R²; like sklearn (force_finite): 1.0 for a perfect fit of a constant target, else 0.0 when it is constant."""
    y_true = np.asarray(y_true, np.float64)
    y_pred = np.asarray(y_pred, np.float64)
    ss_res = float(np.sum((y_true - y_pred) ** 2))
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    if ss_tot == 0.0:
        return 1.0 if ss_res == 0.0 else 0.0
    return 1.0 - ss_res / ss_tot


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return math.sqrt(float(np.mean((np.asarray(y_true, np.float64) - np.asarray(y_pred, np.float64)) ** 2)))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(y_true, np.float64) - np.asarray(y_pred, np.float64))))


def regression(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    if len(y_true) == 0:
        return {name: math.nan for name in NAMES}
    return {"r2": r2(y_true, y_pred), "rmse": rmse(y_true, y_pred), "mae": mae(y_true, y_pred)}


def summarise(per_fold: Sequence[dict[str, float]], names: Sequence[str] = NAMES) -> dict[str, dict[str, float]]:
    """Mean and (population, ddof=0) standard deviation of each metric over folds."""
    out = {}
    for name in names:
        values = np.asarray([f[name] for f in per_fold], np.float64)
        out[name] = {
            "mean": float(values.mean()) if len(values) else math.nan,
            "std": float(values.std()) if len(values) else math.nan,
        }
    return out


def skewness(values: np.ndarray) -> float:
    """Fisher-Pearson sample skewness (scipy.stats.skew with bias=True); 0 for a constant."""
    values = np.asarray(values, np.float64)
    if len(values) < 3:
        return 0.0
    centred = values - values.mean()
    m2 = float(np.mean(centred**2))
    if m2 <= 0:
        return 0.0
    return float(np.mean(centred**3) / m2**1.5)


def json_finite(value: Any) -> Any:
    """JSON has no NaN or infinity: a copy of ``value`` with them as None (numpy scalars as Python ones)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_finite(v) for v in value]
    if isinstance(value, np.generic):
        return json_finite(value.item())
    return value


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts [true class, predicted class] over class codes 0..n_classes-1 (sklearn's confusion_matrix)."""
    y_true = np.asarray(y_true, np.int64)
    y_pred = np.asarray(y_pred, np.int64)
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def classification(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, Any]:
    """Accuracy, balanced accuracy (mean recall over the classes present in y_true), macro-F1 and per-class F1.

    Like sklearn, macro-F1 averages over the classes in y_true or y_pred; a class in neither has F1 None.
    """
    if len(y_true) == 0:
        return {name: math.nan for name in CLASS_NAMES} | {"f1": [None] * n_classes}
    m = confusion(y_true, y_pred, n_classes).astype(np.float64)
    tp = np.diag(m)
    true_n, pred_n = m.sum(axis=1), m.sum(axis=0)
    present = true_n > 0
    seen = present | (pred_n > 0)
    recall = np.divide(tp, true_n, out=np.zeros(n_classes), where=present)
    denominator = true_n + pred_n
    f1 = np.divide(2 * tp, denominator, out=np.zeros(n_classes), where=denominator > 0)
    return {
        "accuracy": float(tp.sum() / m.sum()),
        "balanced_accuracy": float(recall[present].mean()),
        "macro_f1": float(f1[seen].mean()),
        "f1": [float(f) if s else None for f, s in zip(f1, seen)],
    }
