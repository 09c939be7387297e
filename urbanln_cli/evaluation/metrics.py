"""Regression metrics in numpy, matching scikit-learn's r2_score, mean_squared_error and mean_absolute_error."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

NAMES = ("r2", "rmse", "mae")


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


def summarise(per_fold: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and (population, ddof=0) standard deviation of each metric over folds."""
    out = {}
    for name in NAMES:
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
