"""Cross-validation splits as one fold id per row, and the buffer between training and test tiles.

A split is an int array ``fold`` over the rows: fold ``k`` tests on the rows with
``fold == k`` and trains on every other row, including rows marked ``TRAIN_ONLY``
(-1, used by ``transfer:A->B``). Rows outside the split are removed before.

``inner`` ids (0..K-1) partition the rows again for the inner cross-validation
that picks ridge's alpha (and the MLP's early-stopping validation set). They are
drawn per spatial block where the outer split is spatial or by group, so the inner
validation is as hard as the outer one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from urbanln_cli.errors import UsageProblem

TRAIN_ONLY = -1
KINDS = ("auto", "random", "spatial", "group", "logo", "transfer")
EARTH_RADIUS_KM = 6371.0088


@dataclass(frozen=True)
class SplitSpec:
    kind: str
    train_groups: tuple[str, ...] = ()  # transfer only
    test_groups: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> SplitSpec:
        """``auto``, ``random``, ``spatial``, ``group``, ``logo`` or ``transfer:A->B`` (A and B may be comma lists)."""
        text = text.strip()
        if text in KINDS[:-1]:
            return cls(text)
        match = re.fullmatch(r"transfer:(.+?)->(.+)", text)
        if match:
            train = tuple(g.strip() for g in match.group(1).split(",") if g.strip())
            test = tuple(g.strip() for g in match.group(2).split(",") if g.strip())
            if train and test:
                if set(train) & set(test):
                    raise UsageProblem(
                        f"--split {text!r} trains and tests on the same group",
                        hint="name different groups on each side of ->",
                    )
                return cls("transfer", train, test)
        raise UsageProblem(
            f"--split {text!r} is not auto, random, spatial, group, logo or transfer:A->B",
            hint="e.g. --split spatial, or --split 'transfer:beijing->shanghai' (quote the > in a shell)",
        )

    def describe(self) -> str:
        if self.kind == "transfer":
            return f"transfer:{','.join(self.train_groups)}->{','.join(self.test_groups)}"
        return self.kind


def local_km(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kilometres east and north of the south-west corner on a local equirectangular grid (NaN without lon/lat).

    Both the blocks and the buffer measure distance on this grid, so "within D km" means the same in each.
    """
    lon = np.asarray(lon, np.float64)
    lat = np.asarray(lat, np.float64)
    ok = np.isfinite(lon) & np.isfinite(lat)
    x = np.full(len(lon), np.nan)
    y = np.full(len(lon), np.nan)
    if ok.any():
        lat0 = float(np.mean(lat[ok]))
        x[ok] = np.radians(lon[ok] - float(np.min(lon[ok]))) * math.cos(math.radians(lat0)) * EARTH_RADIUS_KM
        y[ok] = np.radians(lat[ok] - float(np.min(lat[ok]))) * EARTH_RADIUS_KM
    return x, y


def spatial_blocks(lon: np.ndarray, lat: np.ndarray, block_km: float) -> np.ndarray:
    """Square blocks of ``block_km`` on a local equirectangular grid: an int id per row (-1 without lon/lat)."""
    x, y = local_km(lon, lat)
    ok = np.isfinite(x)
    ids = np.full(len(x), -1, np.int64)
    if not ok.any():
        return ids
    x, y = x[ok], y[ok]
    bx = np.floor(x / block_km).astype(np.int64)
    by = np.floor(y / block_km).astype(np.int64)
    _, ids[ok] = np.unique(bx * (int(by.max()) + 1) + by, return_inverse=True)
    return ids


def random_folds(n: int, folds: int, seed: int) -> np.ndarray:
    from sklearn.model_selection import KFold

    fold = np.empty(n, np.int64)
    for k, (_, test) in enumerate(KFold(folds, shuffle=True, random_state=seed).split(np.zeros((n, 1)))):
        fold[test] = k
    return fold


def group_k_folds(groups: np.ndarray, folds: int) -> np.ndarray:
    """sklearn's GroupKFold: no group in two folds, fold sizes balanced."""
    from sklearn.model_selection import GroupKFold

    fold = np.empty(len(groups), np.int64)
    for k, (_, test) in enumerate(GroupKFold(folds).split(np.zeros((len(groups), 1)), groups=groups)):
        fold[test] = k
    return fold


def shuffled_unit_folds(units: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Assign whole units (rows, or blocks) to k folds at random, balancing row counts."""
    uniq, inverse, counts = np.unique(units, return_inverse=True, return_counts=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    load = np.zeros(k, np.int64)
    assign = np.empty(len(uniq), np.int64)
    if len(uniq) >= 4 * k:  # many small units: a random permutation is balanced enough and unrelated to size
        assign[order] = np.arange(len(uniq)) % k
    else:
        for u in order[np.argsort(-counts[order], kind="stable")]:
            j = int(np.argmin(load))
            assign[u] = j
            load[j] += counts[u]
    return assign[inverse]


def has_group(group: np.ndarray) -> np.ndarray:
    """Rows whose group is a non-empty name (not None, NaN or '')."""
    return np.array(
        [g is not None and not (isinstance(g, float) and math.isnan(g)) and str(g) != "" for g in group], bool
    )


def usable_rows(
    spec: SplitSpec, usable: np.ndarray, lon: np.ndarray, lat: np.ndarray, group: np.ndarray
) -> tuple[np.ndarray, dict[str, int]]:
    """Narrow ``usable`` to the rows the split can place, and count why the others were dropped.

    A spatial split needs lon/lat; group and transfer splits need a group; a transfer
    split keeps only rows in its train or test groups (and every group it names must exist).
    """
    usable = np.asarray(usable, bool).copy()
    lon, lat, group = np.asarray(lon, np.float64), np.asarray(lat, np.float64), np.asarray(group, object)
    dropped: dict[str, int] = {}
    grouped = has_group(group)
    if spec.kind == "spatial":
        located = np.isfinite(lon) & np.isfinite(lat)
        dropped["no_location"] = int((usable & ~located).sum())
        usable &= located
    elif spec.kind in ("group", "logo", "transfer"):
        dropped["no_group"] = int((usable & ~grouped).sum())
        usable &= grouped
    if spec.kind == "transfer":
        names = {str(g) for g in group[grouped]}
        missing = [g for g in (*spec.train_groups, *spec.test_groups) if g not in names]
        if missing:
            raise UsageProblem(
                f"--split {spec.describe()}: no tile is in group {', '.join(map(repr, missing))}",
                hint=f"the labels' groups are: {', '.join(sorted(names)[:20]) or 'none'}",
            )
        in_train = usable & np.isin(group.astype(str), spec.train_groups)
        in_test = usable & np.isin(group.astype(str), spec.test_groups)
        dropped["outside_transfer"] = int((usable & ~in_train & ~in_test).sum())
        usable &= in_train | in_test
    return usable, dropped


def outer_folds(
    spec: SplitSpec,
    lon: np.ndarray,
    lat: np.ndarray,
    group: np.ndarray,
    *,
    folds: int,
    block_km: float,
    seed: int,
    what: str,
) -> tuple[np.ndarray, dict]:
    """The fold id of each row (rows already narrowed by ``usable_rows``) and a description of the folds.

    ``what`` names the rows in errors, e.g. "target 'carbon'".
    """
    n = len(lon)
    if spec.kind == "random":
        return random_folds(n, folds, seed), {}
    if spec.kind == "spatial":
        blocks = spatial_blocks(lon, lat, block_km)
        n_blocks = len(np.unique(blocks))
        if n_blocks < folds:
            raise UsageProblem(
                f"{what}: {n} tiles fall in only {n_blocks} spatial block(s) of {block_km:g} km, fewer than "
                f"--folds {folds}",
                hint="use a smaller --block-km or fewer --folds",
            )
        fold = group_k_folds(blocks, folds)
        return fold, {
            "blocks": n_blocks,
            "blocks_per_fold": [int(len(np.unique(blocks[fold == k]))) for k in range(folds)],
        }
    names = np.asarray(group, object).astype(str)
    uniq = np.unique(names)
    if spec.kind == "group":
        if len(uniq) < folds:
            raise UsageProblem(
                f"--split group --folds {folds}: {what} has only {len(uniq)} group(s)",
                hint="use fewer --folds, --split logo (one fold per group) or --split spatial",
            )
        fold = group_k_folds(names, folds)
        return fold, {
            "groups": int(len(uniq)),
            "groups_per_fold": [int(len(np.unique(names[fold == k]))) for k in range(folds)],
        }
    if spec.kind == "logo":
        uniq, fold = np.unique(names, return_inverse=True)
        if len(uniq) < 2:
            raise UsageProblem(
                f"--split logo needs at least two groups; {what} has {len(uniq)} ({', '.join(uniq)})",
                hint="use --split spatial or --split random",
            )
        return fold.astype(np.int64), {"test_group": {int(k): str(g) for k, g in enumerate(uniq)}}
    fold = np.where(np.isin(names, spec.test_groups), 0, TRAIN_ONLY).astype(np.int64)
    return fold, {"test_group": {0: ",".join(spec.test_groups)}, "train_groups": list(spec.train_groups)}


def resolve_auto(lon: np.ndarray, lat: np.ndarray, group: np.ndarray, folds: int) -> tuple[SplitSpec, str]:
    """What ``--split auto`` means for these rows, and why: spatial where tiles have lon/lat, else group k-fold
    where at least ``folds`` groups exist, else random (which leaks spatial autocorrelation; the caller warns)."""
    located = np.isfinite(np.asarray(lon, np.float64)) & np.isfinite(np.asarray(lat, np.float64))
    if located.any():
        return SplitSpec("spatial"), f"{int(located.sum())} of {len(located)} tiles have lon/lat"
    grouped = has_group(np.asarray(group, object))
    n_groups = len({str(g) for g in np.asarray(group, object)[grouped]})
    if n_groups >= folds:
        return SplitSpec("group"), f"no tile has lon/lat; {n_groups} groups"
    return SplitSpec("random"), f"no tile has lon/lat and {n_groups} group(s) are fewer than --folds {folds}"


def buffer_exclusions(lon: np.ndarray, lat: np.ndarray, fold: np.ndarray, buffer_km: float) -> dict[int, np.ndarray]:
    """Per test fold: the training rows within ``buffer_km`` (inclusive) of any of its test rows.

    Those rows are left out of that fold's training (and inner CV), so no training tile sits right beside
    a test tile. Rows without lon/lat are never dropped; a buffer of 0 drops nothing.
    """
    from scipy.spatial import cKDTree

    fold = np.asarray(fold, np.int64)
    ids = sorted(int(f) for f in np.unique(fold) if f != TRAIN_ONLY)
    if not buffer_km > 0:
        return {k: np.zeros(0, np.int64) for k in ids}
    x, y = local_km(lon, lat)
    located = np.isfinite(x)
    xy = np.column_stack([x, y])
    out = {}
    for k in ids:
        test = located & (fold == k)
        train = np.flatnonzero(located & (fold != k))
        if not test.any() or not len(train):
            out[k] = np.zeros(0, np.int64)
            continue
        # a hair over D so a tile at exactly D km counts as within, whatever the rounding
        dist, _ = cKDTree(xy[test]).query(xy[train], k=1, distance_upper_bound=buffer_km * (1 + 1e-9))
        out[k] = train[np.isfinite(dist)]
    return out
