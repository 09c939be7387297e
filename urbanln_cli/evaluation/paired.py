"""Paired comparisons of two representations scored on the same folds (and training seeds).

An ablation and the full model are probed on the same spatial folds, so their
scores differ fold by fold for reasons (which blocks are held out) that have
nothing to do with the ablation. Their difference on the same fold cancels
that: ``d[s, f] = other[s, f] − reference[s, f]`` for training seed ``s`` and
fold ``f``.

- ``mean`` and ``std`` (ddof = 1) are taken over every seed × fold pair, and
  ``favour_reference`` counts the pairs where the reference scored higher.
- The noise rule has two parts. Folds: the pairs of one fold are first averaged
  over the seeds (a fold holds out the same blocks for every seed, so its pairs
  are not independent of each other), giving ``K`` values ``m[f]`` with standard
  error ``se_folds = std(m, ddof=1) / √K``. Seeds: a training run that is a little
  better or worse everywhere shifts every fold alike, which the folds cannot see;
  with ``N ≥ 2`` seeds, the pairs of one seed averaged over the folds give ``N``
  values with ``se_seeds = std(ddof=1) / √N`` (0 with one seed: it cannot be
  measured then). ``se = √(se_folds² + se_seeds²)``, and a difference is
  *detectable* when ``|mean| ≥ t(0.975, K − 1) × se``. With one seed this is the
  two-sided paired t-test at 5 % over the folds; with more it is that test made
  more cautious by the seed-to-seed spread. (Cross-validation folds share training
  rows, so the fold part is somewhat optimistic; and at one seed a "detectable"
  difference may still be one training run against another.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

CONFIDENCE = 0.95

# fold index -> score, per training seed
Scores = Mapping[int, Mapping[int, float]]


@dataclass(frozen=True)
class PairedDifference:
    """``other − reference`` over the pairs both were scored on (see the module docstring)."""

    mean: float
    std: float  # over every seed × fold pair, ddof = 1 (nan with one pair)
    se: float  # √(se_folds² + se_seeds²)
    threshold: float  # t(0.975, folds − 1) × se: |mean| at least this is a detectable difference
    detectable: bool
    pairs: int  # seed × fold pairs
    folds: int
    seeds: int
    favour_reference: int  # pairs where the reference scored higher
    favour_other: int  # pairs where the other scored higher (ties count in neither)
    se_folds: float = math.nan  # over the folds of the seed-averaged differences, ddof = 1
    se_seeds: float = math.nan  # over the seeds of the fold-averaged differences, ddof = 1 (0 with one seed)

    def as_dict(self) -> dict[str, float | int | bool | None]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def paired_difference(reference: Scores, other: Scores) -> PairedDifference:
    """The per-fold difference ``other − reference``, pooled over seeds and folds both have a finite score on."""
    diffs: dict[int, list[float]] = {}  # fold -> differences over the seeds
    by_seed: dict[int, list[float]] = {}  # seed -> differences over the folds
    for seed, folds in reference.items():
        for fold, ref in folds.items():
            value = other.get(seed, {}).get(fold)
            if value is None or not (math.isfinite(ref) and math.isfinite(value)):
                continue
            diffs.setdefault(fold, []).append(float(value) - float(ref))
            by_seed.setdefault(seed, []).append(float(value) - float(ref))
    pooled = np.asarray([d for fold in sorted(diffs) for d in diffs[fold]], np.float64)
    if not len(pooled):
        nan = math.nan
        return PairedDifference(nan, nan, nan, nan, False, 0, 0, 0, 0, 0)
    per_fold = np.asarray([np.mean(diffs[fold]) for fold in sorted(diffs)], np.float64)
    per_seed = np.asarray([np.mean(by_seed[seed]) for seed in sorted(by_seed)], np.float64)
    k, n = len(per_fold), len(per_seed)
    mean = float(pooled.mean())
    std = float(pooled.std(ddof=1)) if len(pooled) > 1 else math.nan
    se_folds = float(per_fold.std(ddof=1) / math.sqrt(k)) if k > 1 else math.nan
    se_seeds = float(per_seed.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    se = math.hypot(se_folds, se_seeds)
    threshold = t_quantile(k - 1) * se if k > 1 else math.nan
    # a spread of exactly 0 (every fold moved by the same amount) still shows a difference when the mean is not 0
    detectable = bool(k > 1 and abs(mean) > 0 and abs(mean) >= threshold)
    return PairedDifference(
        mean=mean,
        std=std,
        se=se,
        threshold=threshold,
        detectable=detectable,
        pairs=len(pooled),
        folds=k,
        seeds=n,
        favour_reference=int((pooled < 0).sum()),
        favour_other=int((pooled > 0).sum()),
        se_folds=se_folds,
        se_seeds=se_seeds,
    )


def t_quantile(dof: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student-t critical value (2.776 for 4 degrees of freedom at 95 %)."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2, dof))
