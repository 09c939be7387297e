"""Stage ``probe``: how well do embeddings predict each target? (a ``probe`` folder).

A head is fitted on tile embeddings joined with the ``labels`` artifact by tile id and
scored out of fold. A numeric target is regression (ridge, or an MLP): R², RMSE and MAE
in the target's own units. A string target is classification (logistic regression, or
an MLP classifier): accuracy, balanced accuracy, macro-F1, per-class F1 and a confusion
matrix. The headline is pooled over all out-of-fold predictions, with the mean ± std over
folds beside it. Splits: ``auto`` (spatial blocks of ``block_km`` where tiles have lon/lat,
else grouped k-fold where they have groups, else random with a warning), ``random``,
``spatial``, ``group`` (grouped k-fold), ``logo`` (leave one group out) or
``transfer:A->B``; ``buffer_km`` leaves training tiles that close to a fold's test tiles
out of its training. Several embeddings files are probed on the same folds, side by side.

Library use without the CLI::

    from urbanln_cli.stages.probe import probe_metrics
    rows = probe_metrics(["a.safetensors", "b.safetensors"], "labels", target="all", split="spatial")

``evaluate`` does the work and writes nothing; ``probe`` also writes the folder:
``report.json``, ``predictions.parquet``, ``scatter_<target>.png``, ``map_<target>.png``
(regression), ``confusion_<target>.png`` (classification) and the manifest ``urbanln.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from urbanln_cli import artifacts
from urbanln_cli.errors import InputError, UsageProblem, WrongArtifactError
from urbanln_cli.evaluation import splits
from urbanln_cli.evaluation.classify import DEFAULT_CS
from urbanln_cli.evaluation.heads import DEFAULT_ALPHAS
from urbanln_cli.evaluation.target_plan import SKEW_LIMIT, plan_target, target_kind
from urbanln_cli.stages.probe_fit import Embeddings, TargetRun, model_info, run_one
from urbanln_cli.stages.probe_write import write

logger = logging.getLogger(__name__)

RESERVED = {"tile_id", "lon", "lat", "group"}
MODELS = ("linear", "mlp")
MODEL_ALIASES = {"ridge": "linear", "logistic": "linear"}  # the linear head's name per task, accepted as --model
LOG_TARGET = ("auto", "yes", "no")
DEFAULT_BLOCK_KM = 2.0  # see docs/probe.md: over 3 sigmas of the synthetic night light's 600 m blur
RANDOM_WARNING = "a random split leaks spatial autocorrelation (neighbouring tiles land in training and test)"


@dataclass(frozen=True)
class ProbeConfig:
    target: str = "carbon"  # a labels column, a comma-separated list, or "all"
    embeddings: tuple[Path, ...] = (Path("embeddings.safetensors"),)
    labels: Path = Path("labels")
    out: Path | None = None  # default probe/<target> (probe/all for all)
    model: str = "linear"  # linear (ridge or logistic, by task) | mlp; "ridge" and "logistic" mean linear
    split: str = "auto"  # auto | random | spatial | group | logo | transfer:A->B
    folds: int = 5  # random, spatial and group
    block_km: float = DEFAULT_BLOCK_KM  # spatial blocks (also the units of the inner CV except for random)
    buffer_km: float = 0.0  # training tiles within this distance of a fold's test tiles leave its training
    inner_folds: int = 5  # ridge's alpha and logistic's C search; the MLP's early-stopping validation is one of them
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    cs: tuple[float, ...] = DEFAULT_CS
    log_target: str = "auto"  # auto: log1p when skewness > 1 and min >= 0
    drop_zero: bool = False
    min_rows: int = 10  # fewer usable rows than this is an error
    seed: int = 0
    hidden: int = 256  # mlp
    max_epochs: int = 200  # mlp
    patience: int = 10  # mlp
    lr: float = 1e-3  # mlp, Adam
    weight_decay: float = 1e-4  # mlp, Adam's L2 penalty
    plots: bool = True
    overwrite: bool = False

    def head(self) -> str:
        """linear or mlp (an alias resolved)."""
        return MODEL_ALIASES.get(self.model, self.model)

    def check(self) -> None:
        if self.head() not in MODELS:
            raise UsageProblem(
                f"--model {self.model!r} is not one of {', '.join(MODELS)}",
                hint="linear: ridge for a numeric target, logistic regression for a class target; mlp: a small MLP",
            )
        if self.log_target not in LOG_TARGET:
            raise UsageProblem(f"--log-target {self.log_target!r} is not one of {', '.join(LOG_TARGET)}")
        splits.SplitSpec.parse(self.split)
        if self.folds < 2:
            raise UsageProblem(f"--folds {self.folds} must be at least 2")
        if self.inner_folds < 2:
            raise UsageProblem(f"inner_folds {self.inner_folds} must be at least 2")
        if not self.block_km > 0:
            raise UsageProblem(f"--block-km {self.block_km} must be positive")
        if not self.buffer_km >= 0:
            raise UsageProblem(f"--buffer-km {self.buffer_km} must be 0 or more")
        if not self.alphas or any(not a > 0 for a in self.alphas):
            raise UsageProblem("alphas must be positive numbers", hint="e.g. --alphas 0.1,1,10,100")
        if not self.cs or any(not c > 0 for c in self.cs):
            raise UsageProblem("Cs must be positive numbers", hint="e.g. --cs 0.01,0.1,1,10")
        if not self.embeddings:
            raise UsageProblem("no embeddings given", hint="pass --embeddings FILE (repeatable)")
        if self.min_rows < 2 or self.hidden < 1 or self.max_epochs < 1 or self.patience < 1:
            raise UsageProblem("min_rows must be at least 2, and --hidden, --max-epochs and --patience at least 1")
        if not (self.lr > 0 and self.weight_decay >= 0):
            raise UsageProblem(f"--lr {self.lr} must be positive and --weight-decay {self.weight_decay} at least 0")

    def output(self) -> Path:
        if self.out is not None:
            return Path(self.out)
        name = self.target.strip()
        if name != "all":
            name = "+".join(t.strip() for t in name.split(",") if t.strip())
        return Path("probe") / name


@dataclass
class Evaluation:
    """What ``evaluate`` found: the metrics table, the runs behind it and everything for the report."""

    table: list[dict[str, Any]]
    runs: list[TargetRun]
    report: dict[str, Any]
    counts: dict[str, int]
    labels: Any = field(repr=False, default=None)  # the labels table (pandas)
    log_targets: dict[str, bool] = field(default_factory=dict)


@dataclass
class ProbeResult:
    out: Path
    table: list[dict[str, Any]]
    report: dict[str, Any]
    plots: dict[str, dict[str, str]]
    counts: dict[str, int]
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)
    runs: list[TargetRun] = field(repr=False, default_factory=list)  # per-fold scores, as ``evaluate`` gives them


# ---------------------------------------------------------------- public API


def probe_metrics(
    embeddings: Sequence[Path | str],
    labels: Path | str = "labels",
    target: str | Sequence[str] = "all",
    progress: Callable[[int, int], None] | None = None,
    **settings: Any,
) -> list[dict[str, Any]]:
    """The metrics table for several embeddings files, one row per embeddings file × target.

    Writes nothing. ``settings`` are other ``ProbeConfig`` fields (model, split, folds,
    block_km, log_target, drop_zero, seed, …). Each row holds target, embeddings (a
    short name), model, split, n, folds, r2/rmse/mae _mean and _std, and log_target;
    ``pandas.DataFrame(rows)`` makes an ablation table of it.
    """
    if not isinstance(target, str):
        target = ",".join(target)
    config = ProbeConfig(
        target=target, embeddings=tuple(Path(p) for p in embeddings), labels=Path(labels), plots=False, **settings
    )
    return evaluate(config, progress).table


def probe(
    config: ProbeConfig, progress: Callable[[int, int], None] | None = None, run: artifacts.RunInfo | None = None
) -> ProbeResult:
    """Evaluate, then write the probe folder atomically (see the module docstring)."""
    config.check()
    out = config.output()
    with artifacts.writing(out, "probe", overwrite=config.overwrite, inputs=(*config.embeddings, config.labels)):
        result = evaluate(config, progress)
        report, plots, manifest = write(config, out, result, run or artifacts.RunInfo.from_config(config))
        return ProbeResult(out, result.table, report, plots, result.counts, manifest, result.runs)


def evaluate(config: ProbeConfig, progress: Callable[[int, int], None] | None = None) -> Evaluation:
    """Read, join, split and score; nothing is written."""
    config.check()
    report_progress = progress or (lambda done, total: None)
    requested = splits.SplitSpec.parse(config.split)
    labels, labels_manifest = _read_labels(config.labels)
    targets = _resolve_targets(config.target, labels, config.labels)
    sources = [
        _read_embeddings(path, name, labels, config) for path, name in zip(config.embeddings, _names(config.embeddings))
    ]
    counts: dict[str, int] = {}
    for src in sources:
        counts[f"matched_{src.name}"] = src.info["matched"]
        if src.info["unmatched"]:
            counts[f"unmatched_{src.name}"] = src.info["unmatched"]

    covered = np.zeros(len(labels), bool)
    for src in sources:
        covered[src.label_row[src.label_row >= 0]] = True
    spec, reason = requested, "asked for"
    if requested.kind == "auto":
        spec, reason = splits.resolve_auto(
            labels["lon"].to_numpy(np.float64)[covered],
            labels["lat"].to_numpy(np.float64)[covered],
            labels["group"].to_numpy(object)[covered],
            config.folds,
        )
    if spec.kind == "random":
        logger.warning(("" if requested.kind == "random" else f"split auto is random: {reason}; ") + RANDOM_WARNING)
    plans, skipped = [], {}
    for target in targets:
        try:
            plans.append(plan_target(target, labels, covered, spec, config, counts))
        except InputError as exc:
            if config.target.strip() != "all":
                raise
            skipped[target] = exc.message
    if not plans:
        raise InputError(
            f"no target has enough usable rows to probe ({len(skipped)} skipped)",
            hint="; ".join(f"{t}: {why}" for t, why in skipped.items()) or "check the labels",
        )

    total = sum(len(p["fold_ids"]) for p in plans) * len(sources)
    done = 0
    runs: list[TargetRun] = []
    for plan in plans:
        for src in sources:

            def step(_k: int) -> None:
                nonlocal done
                done += 1
                report_progress(done, total)

            runs.append(run_one(plan, src, config, step))
    report_progress(total, total)

    log_targets = {p["target"]: p["log"] for p in plans}
    table = [r.table_row(spec.describe(), log_targets[r.target]) for r in runs]
    report = {
        "targets": [p["target"] for p in plans],
        "skipped": skipped,
        "split": _split_report(config, requested, spec, reason),
        "model": model_info(config, {p["kind"] for p in plans}),
        "settings": {
            "log_target": config.log_target,
            "log_target_decided_on": "each training fold",
            "retransformation": "Duan's smearing (mean exp(residual) on the training fold)",
            "skew_limit": SKEW_LIMIT,
            "drop_zero": config.drop_zero,
            "min_rows": config.min_rows,
        },
        "labels": {"path": str(config.labels), "rows": len(labels), "artifact_id": labels_manifest.get("artifact_id")},
        "embeddings": [{"name": s.name, "path": str(s.path), **s.info} for s in sources],
        "targets_info": {p["target"]: _target_info(p) for p in plans},
        "counts": dict(sorted(counts.items())),
        "results": [_result(r, log_targets[r.target]) for r in runs],
        "table": table,
    }
    return Evaluation(table, runs, report, counts, labels, log_targets)


def _split_report(config: ProbeConfig, requested, spec, reason: str) -> dict[str, Any]:
    blocks = spec.kind != "random"  # spatial folds, and the inner CV's units of every other non-random split
    return {
        "kind": spec.kind,
        "spec": spec.describe(),
        "requested": requested.describe(),
        "why": reason,
        "folds": config.folds if spec.kind in ("random", "spatial", "group") else None,
        "block_km": config.block_km if blocks else None,
        "buffer_km": config.buffer_km,
        "inner_folds": config.inner_folds,
        "seed": config.seed,
        **(
            {"train_groups": list(spec.train_groups), "test_groups": list(spec.test_groups)}
            if spec.kind == "transfer"
            else {}
        ),
    }


def _target_info(plan: dict[str, Any]) -> dict[str, Any]:
    info: dict[str, Any] = {
        "task": plan["kind"],
        "usable": int(len(plan["rows"])),
        "dropped": plan["dropped"],
        "folds": plan["fold_info"],
    }
    if plan["kind"] == "classification":
        counts = np.bincount(plan["y"], minlength=len(plan["classes"]))
        return info | {"classes": plan["classes"], "class_counts": dict(zip(plan["classes"], counts.tolist()))}
    return info | {
        "log_target": plan["log"],
        "log_target_folds": {int(k): v for k, v in plan["log_folds"].items()},
        "skewness": plan["skewness"],
    }


def _result(run: TargetRun, log_target: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "target": run.target,
        "task": run.kind,
        "embeddings": run.embeddings,
        "model": run.head,
        "n": run.n,
        "metrics": run.metrics,
        "pooled": run.pooled,
        "folds": run.folds,
    }
    if run.kind == "classification":
        out["classes"] = list(run.classes)
        out["confusion"] = run.confusion().tolist()
    else:
        out["log_target"] = log_target
    return out


# ---------------------------------------------------------------- reading and joining


def _read_labels(path: Path):
    ds, manifest = artifacts.read_dataset(path, "labels")
    masks = [
        name for name, feature in ds.features.items() if getattr(feature, "dtype", None) == "binary"
    ]  # label --raster NAME=PATH:mask
    frame = ds.remove_columns(masks).to_pandas()
    if "tile_id" not in frame.columns:
        raise WrongArtifactError(
            f"{path} has no tile_id column", hint=f"re-create it with `{artifacts.PRODUCERS['labels']}`"
        )
    frame["tile_id"] = frame["tile_id"].astype(str)
    duplicated = int(frame["tile_id"].duplicated().sum())
    if duplicated:
        raise InputError(
            f"{path} has {duplicated} duplicate tile ids", hint="re-create the labels from one tiles dataset"
        )
    for column in ("lon", "lat"):
        if column not in frame.columns:
            frame[column] = np.nan
    if "group" not in frame.columns:
        frame["group"] = None
    return frame.reset_index(drop=True), manifest


def _resolve_targets(text: str, labels, path: Path) -> list[str]:
    from urbanln_cli.config import suggest

    # numeric columns are regression targets, string columns class targets
    available = [c for c in labels.columns if c not in RESERVED and target_kind(labels, c) is not None]
    if text.strip() == "all":
        if not available:
            raise InputError(
                f"{path} has no target columns", hint=f"add targets with `{artifacts.PRODUCERS['labels']}`"
            )
        return available
    wanted = [t.strip() for t in text.split(",") if t.strip()]
    if not wanted:
        raise UsageProblem(
            "--target is empty", hint=f"name a target ({', '.join(available) or 'none in the labels'}) or 'all'"
        )
    for name in wanted:
        if name not in available:
            raise UsageProblem(
                f"--target {name!r}: {path} has no such target{suggest(name, available)}",
                hint=f"its targets are: {', '.join(available) or 'none'}; or use --target all",
            )
    return list(dict.fromkeys(wanted))


def _names(paths: Sequence[Path]) -> list[str]:
    """Short unique names for embeddings files: the file stem, with parent folders where stems collide."""
    paths = [Path(p) for p in paths]
    for depth in range(1, 6):
        names = ["/".join(p.with_suffix("").parts[-depth:]) for p in paths]
        if len(set(names)) == len(names):
            return names
    return [f"{n}#{i}" for i, n in enumerate(names)]


def _read_embeddings(path: Path, name: str, labels, config: ProbeConfig) -> Embeddings:
    import pandas as pd

    arrays, meta, manifest = artifacts.read_tensors(path, "embeddings")
    if "embeddings" not in arrays:
        raise WrongArtifactError(
            f"{path} has no 'embeddings' tensor (it has {', '.join(arrays) or 'none'})",
            hint=f"re-create it with `{artifacts.PRODUCERS['embeddings']}`",
        )
    vectors = np.asarray(arrays["embeddings"])
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise InputError(
            f"{path}: embeddings have shape {list(vectors.shape)}, expected [tiles, dim]",
            hint="re-create the embeddings",
        )
    vectors = vectors.astype(np.float32, copy=False)
    ids = meta.get("tile_ids")
    if not isinstance(ids, list) or len(ids) != len(vectors):
        got = "none" if ids is None else (f"{len(ids)}" if isinstance(ids, list) else type(ids).__name__)
        raise InputError(
            f"{path}: tile_ids metadata ({got}) does not line up with its {len(vectors)} rows",
            hint="re-create the embeddings",
        )
    ids = [str(i) for i in ids]
    if len(set(ids)) != len(ids):
        raise InputError(
            f"{path} has {len(ids) - len(set(ids))} duplicate tile ids",
            hint="re-create the embeddings from one tiles dataset",
        )
    bad = int((~np.isfinite(vectors).all(axis=1)).sum())
    if bad:
        raise InputError(
            f"{path} has {bad} rows with NaN or infinite values",
            hint="re-create the embeddings; check the model's weights",
        )
    label_row = pd.Index(labels["tile_id"]).get_indexer(ids)
    matched = int((label_row >= 0).sum())
    needed = max(config.min_rows, config.folds)
    if matched < needed:
        example_e, example_l = ids[0], labels["tile_id"].iloc[0] if len(labels) else None
        what = "no tile id" if matched == 0 else f"only {matched} of {len(ids)} tile ids"
        raise InputError(
            f"{what} in {path} matched a row of {config.labels} ({len(labels)} rows); {matched} matched, at least "
            f"{needed} are needed",
            hint=f"embed and label the same tiles (ids look like {example_e!r} in the embeddings, {example_l!r} in "
            "the labels)",
        )
    info = {
        "rows": int(len(vectors)),
        "dim": int(vectors.shape[1]),
        "matched": matched,
        "unmatched": int(len(ids) - matched),
        "labels_without_embedding": int(len(labels) - matched),
        "artifact_id": manifest.get("artifact_id"),
        "model": meta.get("model"),
    }
    return Embeddings(name, Path(path), vectors, ids, label_row, info)
