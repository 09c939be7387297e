"""Planning one probed target: its usable label rows, its transform and its outer and inner folds."""

from __future__ import annotations

from typing import Any

import numpy as np

from urbanln_cli.errors import InputError, UsageProblem
from urbanln_cli.evaluation import metrics, splits

SKEW_LIMIT = 1.0  # a non-negative target skewed more than this is modelled as log1p under --log-target auto


def plan_target(
    target: str, labels, covered: np.ndarray, spec: splits.SplitSpec, config: Any, counts: dict[str, int]
) -> dict[str, Any]:
    """Which label rows a target uses, its transform, and its folds (the same for every embeddings file).

    ``config`` is the probe's ``ProbeConfig``; ``counts`` gathers the rows dropped, per reason and target.
    """
    y = labels[target].to_numpy(np.float64)
    usable = covered.copy()
    dropped: dict[str, int] = {}
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
    needed = max(config.min_rows, config.folds if spec.kind in ("random", "spatial") else 2)
    if len(rows) < needed:
        detail = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in dropped.items() if n)
        raise InputError(
            f"target {target!r} has {len(rows)} usable rows, fewer than {needed}"
            + (f" (dropped: {detail})" if detail else ""),
            hint="check the labels for NaN values, or probe another target",
        )

    values = y[rows]
    skew = metrics.skewness(values)
    nonneg = bool(values.min() >= 0)
    if config.log_target == "yes" and not nonneg:
        raise UsageProblem(
            f"--log-target yes: target {target!r} has negative values (min {values.min():g})",
            hint="use --log-target no",
        )
    use_log = config.log_target == "yes" or (config.log_target == "auto" and nonneg and skew > SKEW_LIMIT)

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
    units = inner_units(rows, lon, lat, spec, config)
    inner = splits.shuffled_unit_folds(units, config.inner_folds, config.seed + 1)
    fold_ids = sorted(int(f) for f in np.unique(fold) if f != splits.TRAIN_ONLY)
    return {
        "target": target,
        "rows": rows,
        "y": values,
        "log": bool(use_log),
        "skewness": skew,
        "dropped": dropped,
        "fold": fold,
        "inner": inner,
        "fold_ids": fold_ids,
        "fold_info": fold_info,
    }


def inner_units(rows, lon, lat, spec: splits.SplitSpec, config: Any) -> np.ndarray:
    """Units the inner folds are drawn over: rows for a random split, else spatial blocks (rows without lon/lat
    alone)."""
    n = len(rows)
    if spec.kind == "random":
        return np.arange(n)
    blocks = splits.spatial_blocks(lon[rows], lat[rows], config.block_km)
    return np.where(blocks >= 0, blocks, blocks.max(initial=0) + 1 + np.arange(n))
