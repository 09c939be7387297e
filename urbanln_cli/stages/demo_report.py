"""The demo's numbers from its probe runs: the table, the paired differences, the notes and the caption lengths.

Every function here reads what the demo just produced (per-fold probe scores,
corpus artifacts) and writes nothing but ``report.json``; ``stages/demo.py``
runs the chain. The paired statistics themselves are in
``urbanln_cli/evaluation/paired.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from urbanln_cli import artifacts
from urbanln_cli.evaluation.paired import PairedDifference, paired_difference

REFERENCE = "UrbanLN"
SHORT_LIMIT = 77  # CLIP's context: what a caption past it loses without the stretch

# variant -> target -> seed -> fold -> R²
FoldScores = dict[str, dict[str, dict[int, dict[int, float]]]]


def fold_scores(runs: Iterable[Any], owners: Mapping[str, list[tuple[str, int]]], prefix: str = "") -> FoldScores:
    """The probe's per-fold R² by variant, target (``prefix`` removed), training seed and fold.

    ``runs`` are the probe's ``TargetRun``s; ``owners`` maps an embeddings file's stem to the (variant, seed) pairs
    it stands for (an unseeded baseline stands for every seed).
    """
    scores: FoldScores = {}
    for run in runs:
        for variant, seed in owners.get(run.embeddings.split("/")[-1], []):
            target = run.target.removeprefix(prefix)
            per_fold = scores.setdefault(variant, {}).setdefault(target, {}).setdefault(seed, {})
            for record in run.folds:
                per_fold[int(record["fold"])] = float(record["r2"])
    return scores


def by_variant(rows: list[dict], embeddings: Mapping[str, Path], prefix: str = "") -> dict[str, dict[str, float]]:
    """The probe's table rows as variant -> target (``prefix`` removed) -> mean R² over the folds."""
    by_file: dict[str, dict[str, float]] = {}
    for row in rows:
        by_file.setdefault(row["embeddings"], {})[row["target"].removeprefix(prefix)] = row["r2_mean"]
    table = {}
    for variant, path in embeddings.items():
        stem = Path(path).with_suffix("").name
        key = next((k for k in by_file if k == stem or k.endswith("/" + stem)), None)
        table[variant] = dict(by_file.get(key, {}))
    return table


def verdicts(table: dict[str, dict[str, float]], targets: list[str], what: str, baselines: list[str]) -> list[str]:
    """One line per baseline: the targets on which UrbanLN's mean R² is higher, and those where it is not."""
    ours = table.get(REFERENCE, {})
    notes = []
    for baseline in baselines:
        theirs = table.get(baseline, {})
        scored = [t for t in targets if _finite(ours.get(t)) and _finite(theirs.get(t))]
        better = [t for t in scored if ours[t] > theirs[t]]
        worse = [t for t in scored if t not in better]
        notes.append(
            f"{what}, UrbanLN vs {baseline}: higher on {', '.join(better) or 'no target'}"
            + (f"; not on {', '.join(worse)}" if worse else "")
        )
    return notes


def _finite(value) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def summary(scores: FoldScores) -> tuple[dict[str, dict[str, float]], ...]:
    """(mean, std, seed_std), each variant -> target -> value.

    mean: over every seed × fold score. std: over the folds (ddof = 0, as the probe's table) of each fold's score
    averaged over the seeds, so with one seed it is the probe's own r2_std. seed_std: over the seeds (ddof = 1) of
    each seed's mean over the folds; nan with one seed.
    """
    mean: dict[str, dict[str, float]] = {}
    std: dict[str, dict[str, float]] = {}
    seed_std: dict[str, dict[str, float]] = {}
    for variant, targets in scores.items():
        for target, by_seed in targets.items():
            values = [v for folds in by_seed.values() for v in folds.values() if math.isfinite(v)]
            folds = sorted({f for fs in by_seed.values() for f in fs})
            per_fold = [np.nanmean([by_seed[s].get(f, math.nan) for s in by_seed]) for f in folds]
            per_seed = [np.nanmean(list(fs.values())) for fs in by_seed.values() if fs]
            mean.setdefault(variant, {})[target] = float(np.mean(values)) if values else math.nan
            std.setdefault(variant, {})[target] = float(np.std(per_fold)) if per_fold else math.nan
            seed_std.setdefault(variant, {})[target] = (
                float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else math.nan
            )
    return mean, std, seed_std


def paired(scores: FoldScores, targets: list[str]) -> dict[str, dict[str, PairedDifference]]:
    """variant − UrbanLN on the same seeds and folds, for every other variant and target."""
    ours = scores.get(REFERENCE, {})
    return {
        variant: {t: paired_difference(ours.get(t, {}), by_target.get(t, {})) for t in targets}
        for variant, by_target in scores.items()
        if variant != REFERENCE
    }


def paired_notes(differences: dict[str, dict[str, PairedDifference]], what: str) -> list[str]:
    """One line per variant: its paired difference from UrbanLN on each target, or "no detectable difference"."""
    notes = []
    for variant, by_target in differences.items():
        parts = []
        for target, d in by_target.items():
            if not d.pairs:
                parts.append(f"{target} not scored")
                continue
            side = f"UrbanLN higher on {d.favour_reference}/{d.pairs}"
            if d.detectable:
                verdict = "UrbanLN higher" if d.mean < 0 else "UrbanLN lower"
                parts.append(f"{target} {d.mean:+.3f} ± {d.std:.3f} ({side}): {verdict}")
            else:
                parts.append(f"{target} {d.mean:+.3f} ± {d.std:.3f} ({side}): no detectable difference")
        first = next(iter(by_target.values()), None)
        unit = f"{first.folds} folds × {first.seeds} seed{'s' if first.seeds != 1 else ''}" if first else ""
        notes.append(f"{what}, {variant} − UrbanLN (paired, {unit}): " + "; ".join(parts))
    return notes


def token_lengths(corpus: Path, count) -> dict[str, float | int]:
    """How long a corpus's captions are in CLIP tokens (start and end included): p10/p50/p90 and the share past 77."""
    ds, _ = artifacts.read_dataset(corpus, "corpus")
    lengths = np.asarray([count(text or "") for text in ds["caption"]], np.float64)
    if not len(lengths):
        return {"captions": 0}
    p10, p50, p90 = np.percentile(lengths, [10, 50, 90])
    return {
        "captions": int(len(lengths)),
        "p10": float(p10),
        "p50": float(p50),
        "p90": float(p90),
        "max": int(lengths.max()),
        f"share_over_{SHORT_LIMIT}": float((lengths > SHORT_LIMIT).mean()),
    }


def caption_pair(refined: Path, unrefined: Path) -> dict[str, str] | None:
    """One tile's caption with refinement beside the same tile's caption without it (the median-length refined one,
    among the tiles whose caption refinement changed)."""
    a, _ = artifacts.read_dataset(refined, "corpus")
    b, _ = artifacts.read_dataset(unrefined, "corpus")
    before = dict(zip(b["tile_id"], b["caption"]))
    changed = [
        (len(text or ""), tile, text)
        for tile, text in zip(a["tile_id"], a["caption"])
        if tile in before and text and text != before[tile]
    ]
    if not changed:
        return None
    changed.sort()
    _, tile, text = changed[len(changed) // 2]
    return {"tile_id": tile, "refined": text, "unrefined": before[tile]}


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float as None (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    if isinstance(obj, PairedDifference):
        return obj.as_dict()
    return obj


def write_report(path: Path, report: dict[str, Any]) -> Path:
    """``report.json`` of the demo folder, written tmp-then-rename."""
    artifacts.write_json_atomic(path, finite(report))
    return path
