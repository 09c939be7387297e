"""Planning one probed target: its usable label rows, its kind, its transform per fold, its outer and inner folds
and the buffer rows each fold leaves out of training.

A target is numeric (regression) or a string column (classification: null or "" is missing). The plan is the
same for every embeddings file probed, so they are compared on the same folds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from urbanln_cli.errors import InputError, UsageProblem
from urbanln_cli.evaluation import metrics, splits

SKEW_LIMIT = 1.0  # a non-negative target skewed more than this is modelled as log1p under --log-target auto


def target_kind(labels, name: str) -> str | None:
    """ "regression" for a numeric column, "classification" for a string one, None for anything else."""
    import pandas as pd

    column = labels[name]
    if pd.api.types.is_bool_dtype(column):
        return None
    if pd.api.types.is_numeric_dtype(column):
        return "regression"
    if pd.api.types.is_string_dtype(column) or pd.api.types.is_object_dtype(column):
        values = column.dropna()
        if all(isinstance(v, str) for v in values):
            return "classification"
    return None


def plan_target(
    target: str, labels, covered: np.ndarray, spec: splits.SplitSpec, config: Any, counts: dict[str, int]
) -> dict[str, Any]:
    """Which label rows a target uses, its transform, and its folds (the same for every embeddings file).

    ``spec`` is a resolved split (not auto); ``config`` is the probe's ``ProbeConfig``; ``counts``
    gathers the rows dropped, per reason and target.
    """
    kind = target_kind(labels, target)
    usable = covered.copy()
    dropped: dict[str, int] = {}
    classes: list[str] = []
    if kind == "classification":
        raw = labels[target].to_numpy(object)
        missing = covered & np.array([not isinstance(v, str) or v == "" for v in raw], bool)
        dropped["missing"] = int(missing.sum())
        usable &= ~missing
        y = np.full(len(raw), np.nan)
    else:
        y = labels[target].to_numpy(np.float64)
        nan = covered & ~np.isfinite(y)
        dropped["nan"] = int(nan.sum())
        usable &= ~nan
        if config.drop_zero:
            zero = usable & (y == 0)
            dropped["zero"] = int(zero.sum())
            usable &= ~zero
    lon, lat = labels["lon"].to_numpy(np.float64), labels["lat"].to_numpy(np.float64)
    group = labels["group"].to_numpy(object)
    usable, split_dropped = splits.usable_rows(spec, usable, lon, lat, group)
    dropped.update(split_dropped)
    for reason, n in dropped.items():
        if n:
            counts[f"{reason}_{target}"] = counts.get(f"{reason}_{target}", 0) + n
    rows = np.flatnonzero(usable)
    needed = max(config.min_rows, config.folds if spec.kind in ("random", "spatial", "group") else 2)
    if len(rows) < needed:
        detail = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in dropped.items() if n)
        raise InputError(
            f"target {target!r} has {len(rows)} usable rows, fewer than {needed}"
            + (f" (dropped: {detail})" if detail else ""),
            hint="check the labels for missing values, or probe another target",
        )

    fold, fold_info = splits.outer_folds(
        spec,
        lon[rows],
        lat[rows],
        group[rows],
        folds=config.folds,
        block_km=config.block_km,
        seed=config.seed,
        what=f"target {target!r}",
    )
    excluded = splits.buffer_exclusions(lon[rows], lat[rows], fold, config.buffer_km)
    fold_info["buffer_dropped"] = {int(k): int(len(v)) for k, v in excluded.items()}
    units = inner_units(rows, lon, lat, spec, config)
    inner = splits.shuffled_unit_folds(units, config.inner_folds, config.seed + 1)
    fold_ids = sorted(int(f) for f in np.unique(fold) if f != splits.TRAIN_ONLY)
    plan = {
        "target": target,
        "kind": kind,
        "rows": rows,
        "dropped": dropped,
        "fold": fold,
        "inner": inner,
        "fold_ids": fold_ids,
        "fold_info": fold_info,
        "excluded": excluded,
    }
    if kind == "classification":
        classes, codes = np.unique(labels[target].to_numpy(object)[rows].astype(str), return_inverse=True)
        return plan | {"y": codes.astype(np.int64), "classes": [str(c) for c in classes], "log": False, "log_folds": {}}
    values = y[rows]
    log_folds = _log_per_fold(target, values, fold, excluded, fold_ids, config.log_target)
    return plan | {
        "y": values,
        "classes": classes,
        "log": any(log_folds.values()),
        "log_folds": log_folds,
        "skewness": metrics.skewness(values),
    }


def _log_per_fold(target, values, fold, excluded, fold_ids, setting: str) -> dict[int, bool]:
    """Whether each fold models log1p(target), decided on that fold's training rows only (never its test rows)."""
    if setting == "yes" and values.min() < 0:
        raise UsageProblem(
            f"--log-target yes: target {target!r} has negative values (min {values.min():g})",
            hint="use --log-target no",
        )
    out = {}
    for k in fold_ids:
        if setting != "auto":
            out[k] = setting == "yes"
            continue
        train = np.ones(len(values), bool)
        train[fold == k] = False
        train[excluded.get(k, ())] = False
        part = values[train]
        out[k] = bool(len(part) and part.min() >= 0 and metrics.skewness(part) > SKEW_LIMIT)
    return out


def inner_units(rows, lon, lat, spec: splits.SplitSpec, config: Any) -> np.ndarray:
    """Units the inner folds are drawn over: rows for a random split, else spatial blocks (rows without lon/lat
    alone)."""
    n = len(rows)
    if spec.kind == "random":
        return np.arange(n)
    blocks = splits.spatial_blocks(lon[rows], lat[rows], config.block_km)
    return np.where(blocks >= 0, blocks, blocks.max(initial=0) + 1 + np.arange(n))
