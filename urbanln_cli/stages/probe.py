"""Stage ``probe``: how well do embeddings predict each target? (a ``probe`` folder).

A linear (ridge) or small MLP head is fitted on tile embeddings joined with the
``labels`` artifact by tile id, and scored out of fold under a random, spatial
(blocks of ``block_km``), leave-one-group-out or transfer (A→B) split. R², RMSE
and MAE are computed per fold in the target's own units, then reported as mean ±
std over folds. Several embeddings files are probed on the same folds, side by side.

Library use without the CLI::

    from urbanln_cli.stages.probe import probe_metrics
    rows = probe_metrics(["a.safetensors", "b.safetensors"], "labels", target="all", split="spatial")

``evaluate`` does the work and writes nothing; ``probe`` also writes the folder:
``report.json``, ``predictions.parquet``, ``scatter_<target>.png``, ``map_<target>.png``
and the manifest ``urbanln.json``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from urbanln_cli import artifacts
from urbanln_cli.errors import InputError, UsageProblem, WrongArtifactError
from urbanln_cli.evaluation import metrics, splits
from urbanln_cli.evaluation.heads import DEFAULT_ALPHAS
from urbanln_cli.evaluation.target_plan import SKEW_LIMIT, plan_target

RESERVED = {"tile_id", "lon", "lat", "group"}
MODELS = ("ridge", "mlp")
LOG_TARGET = ("auto", "yes", "no")


@dataclass(frozen=True)
class ProbeConfig:
    target: str = "carbon"  # a labels column, a comma-separated list, or "all"
    embeddings: tuple[Path, ...] = (Path("embeddings.safetensors"),)
    labels: Path = Path("labels")
    out: Path | None = None  # default probe/<target> (probe/all for all)
    model: str = "ridge"  # ridge | mlp
    split: str = "random"  # random | spatial | group | transfer:A->B
    folds: int = 5  # random and spatial
    block_km: float = 1.0  # spatial blocks (also the units of the inner CV for spatial, group, transfer)
    inner_folds: int = 5  # ridge's alpha search; the MLP's early-stopping validation is one of them
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
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

    def check(self) -> None:
        if self.model not in MODELS:
            raise UsageProblem(f"--model {self.model!r} is not one of {', '.join(MODELS)}")
        if self.log_target not in LOG_TARGET:
            raise UsageProblem(f"--log-target {self.log_target!r} is not one of {', '.join(LOG_TARGET)}")
        splits.SplitSpec.parse(self.split)
        if self.folds < 2:
            raise UsageProblem(f"--folds {self.folds} must be at least 2")
        if self.inner_folds < 2:
            raise UsageProblem(f"inner_folds {self.inner_folds} must be at least 2")
        if not self.block_km > 0:
            raise UsageProblem(f"--block-km {self.block_km} must be positive")
        if not self.alphas or any(not a > 0 for a in self.alphas):
            raise UsageProblem("alphas must be positive numbers", hint="e.g. --alphas 0.1,1,10,100")
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
class Embeddings:
    name: str
    path: Path
    vectors: np.ndarray  # float32 [N, D]
    tile_ids: list[str]
    label_row: np.ndarray  # per embeddings row: its row in the labels table, or -1
    info: dict[str, Any]


@dataclass
class TargetRun:
    """One embeddings file × one target: out-of-fold predictions and their scores."""

    target: str
    embeddings: str
    rows: np.ndarray  # label rows scored (test rows)
    fold: np.ndarray
    y_true: np.ndarray
    y_pred: np.ndarray
    folds: list[dict]
    metrics: dict[str, dict[str, float]]
    pooled: dict[str, float]
    n: int

    def table_row(self, model: str, split: str, log_target: bool) -> dict[str, Any]:
        row: dict[str, Any] = {
            "target": self.target,
            "embeddings": self.embeddings,
            "model": model,
            "split": split,
            "n": self.n,
            "folds": len(self.folds),
        }
        for name in metrics.NAMES:
            row[f"{name}_mean"] = self.metrics[name]["mean"]
            row[f"{name}_std"] = self.metrics[name]["std"]
        row["log_target"] = log_target
        return row


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
        return _write(config, out, result, run or artifacts.RunInfo.from_config(config))


def evaluate(config: ProbeConfig, progress: Callable[[int, int], None] | None = None) -> Evaluation:
    """Read, join, split and score; nothing is written."""
    config.check()
    report_progress = progress or (lambda done, total: None)
    spec = splits.SplitSpec.parse(config.split)
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

            runs.append(_run_one(plan, src, config, step))
    report_progress(total, total)

    log_targets = {p["target"]: p["log"] for p in plans}
    table = [r.table_row(config.model, spec.describe(), log_targets[r.target]) for r in runs]
    report = {
        "targets": [p["target"] for p in plans],
        "skipped": skipped,
        "split": {
            "kind": spec.kind,
            "spec": spec.describe(),
            "folds": config.folds if spec.kind in ("random", "spatial") else None,
            "block_km": config.block_km,
            "inner_folds": config.inner_folds,
            "seed": config.seed,
            **(
                {"train_groups": list(spec.train_groups), "test_groups": list(spec.test_groups)}
                if spec.kind == "transfer"
                else {}
            ),
        },
        "model": _model_info(config),
        "settings": {
            "log_target": config.log_target,
            "skew_limit": SKEW_LIMIT,
            "drop_zero": config.drop_zero,
            "min_rows": config.min_rows,
        },
        "labels": {"path": str(config.labels), "rows": len(labels), "artifact_id": labels_manifest.get("artifact_id")},
        "embeddings": [{"name": s.name, "path": str(s.path), **s.info} for s in sources],
        "targets_info": {
            p["target"]: {
                "log_target": p["log"],
                "skewness": p["skewness"],
                "usable": int(len(p["rows"])),
                "dropped": p["dropped"],
                "folds": p["fold_info"],
            }
            for p in plans
        },
        "counts": dict(sorted(counts.items())),
        "results": [
            {
                "target": r.target,
                "embeddings": r.embeddings,
                "n": r.n,
                "log_target": log_targets[r.target],
                "metrics": r.metrics,
                "pooled": r.pooled,
                "folds": r.folds,
            }
            for r in runs
        ],
        "table": table,
    }
    return Evaluation(table, runs, report, counts, labels, log_targets)


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
    import pandas as pd

    from urbanln_cli.config import suggest

    available = [
        c
        for c in labels.columns
        if c not in RESERVED and pd.api.types.is_numeric_dtype(labels[c]) and not pd.api.types.is_bool_dtype(labels[c])
    ]
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


# ---------------------------------------------------------------- fitting


def _model_info(config: ProbeConfig) -> dict[str, Any]:
    if config.model == "ridge":
        return {
            "kind": "ridge",
            "standardise": True,
            "alphas": list(config.alphas),
            "alpha_search": f"{config.inner_folds}-fold inner CV, mean MSE",
        }
    return {
        "kind": "mlp",
        "layers": f"D->{config.hidden}->1",
        "activation": "relu",
        "dropout": 0.1,
        "optimizer": f"adam lr {config.lr:g} weight_decay {config.weight_decay:g}",
        "batch_size": 256,
        "max_epochs": config.max_epochs,
        "patience": config.patience,
        "standardise": True,
        "seed": config.seed,
    }


def _run_one(plan: dict[str, Any], src: Embeddings, config: ProbeConfig, step: Callable[[int], None]) -> TargetRun:
    from urbanln_cli.evaluation.heads import mlp_cv, ridge_cv

    rows_all = plan["rows"]
    # rows of this target the embeddings file covers, and its vector for each
    emb_row = _inverse(src.label_row, rows_all)
    have = emb_row >= 0
    rows, X = rows_all[have], src.vectors[emb_row[have]]
    y = plan["y"][have]
    fold, inner = plan["fold"][have], plan["inner"][have]
    z = np.log1p(y) if plan["log"] else y
    skipped = [k for k in plan["fold_ids"] if not (fold == k).any()]
    if config.model == "ridge":
        pred_z, records = ridge_cv(X, z, fold, inner, config.alphas, on_fold=step)
    else:
        pred_z, records = mlp_cv(
            X,
            z,
            fold,
            inner,
            seed=config.seed,
            hidden=config.hidden,
            max_epochs=config.max_epochs,
            patience=config.patience,
            lr=config.lr,
            weight_decay=config.weight_decay,
            on_fold=step,
        )
    for _ in skipped:
        step(-1)
    pred = np.full(len(y), np.nan)
    per_fold = []
    for record in records:
        k = record["fold"]
        test = fold == k
        if plan["log"]:
            # back to the target's units; a log1p-modelled target is >= 0, and the cap keeps expm1 finite
            cap = float(z[fold != k].max()) + 1.0
            pred[test] = np.expm1(np.clip(pred_z[test], 0.0, cap))
        else:
            pred[test] = pred_z[test]
        scores = metrics.regression(y[test], pred[test])
        record.update(scores)
        test_group = plan["fold_info"].get("test_group", {}).get(k)
        if test_group is not None:
            record["test_group"] = test_group
        per_fold.append(scores)
    scored = fold != splits.TRAIN_ONLY
    return TargetRun(
        target=plan["target"],
        embeddings=src.name,
        rows=rows[scored],
        fold=fold[scored],
        y_true=y[scored],
        y_pred=pred[scored],
        folds=records,
        metrics=metrics.summarise(per_fold),
        pooled=metrics.regression(y[scored], pred[scored]),
        n=int(len(y)),
    )


def _inverse(label_row: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For each label row in ``rows``: the embeddings row that points at it, or -1."""
    lookup = np.full(int(max(label_row.max(initial=-1), rows.max(initial=-1))) + 1, -1, np.int64)
    hit = label_row >= 0
    lookup[label_row[hit]] = np.flatnonzero(hit)
    return lookup[rows]


# ---------------------------------------------------------------- writing


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name)


def _write(config: ProbeConfig, out: Path, result: Evaluation, run: artifacts.RunInfo) -> ProbeResult:
    import pandas as pd

    from urbanln_cli.evaluation import plots as plotting

    labels = result.labels
    frames = [
        pd.DataFrame(
            {
                "tile_id": labels["tile_id"].to_numpy()[r.rows],
                "target": r.target,
                "embeddings": r.embeddings,
                "fold": r.fold.astype(np.int64),
                "y_true": r.y_true,
                "y_pred": r.y_pred,
            }
        )
        for r in result.runs
    ]
    predictions = pd.concat(frames, ignore_index=True)
    report = dict(result.report)
    plots: dict[str, dict[str, str]] = {}
    with artifacts.staged_dir(out, config.overwrite) as staging:
        predictions.to_parquet(staging / "predictions.parquet", index=False)
        if config.plots:
            lon, lat = labels["lon"].to_numpy(np.float64), labels["lat"].to_numpy(np.float64)
            for target in report["targets"]:
                runs = [r for r in result.runs if r.target == target]
                log_scale = result.log_targets[target]
                scatter = f"scatter_{_safe(target)}.png"
                plotting.scatter_figure(
                    staging / scatter,
                    [
                        (
                            r.embeddings,
                            r.y_true,
                            r.y_pred,
                            f"R2 {r.metrics['r2']['mean']:.3f} ± {r.metrics['r2']['std']:.3f}",
                        )
                        for r in runs
                    ],
                    target,
                    log_scale=log_scale,
                )
                files = {"scatter": scatter}
                rows = np.unique(np.concatenate([r.rows for r in runs]))
                if np.isfinite(lon[rows]).any() and np.isfinite(lat[rows]).any():
                    panel_rows = []
                    for r in runs:
                        y_true = labels[target].to_numpy(np.float64)[rows]
                        y_pred = np.full(len(rows), np.nan)
                        y_pred[np.searchsorted(rows, r.rows)] = r.y_pred
                        panel_rows.append((r.embeddings, y_true, y_pred))
                    name = f"map_{_safe(target)}.png"
                    plotting.map_figure(staging / name, lon[rows], lat[rows], panel_rows, target, log_scale=log_scale)
                    files["map"] = name
                plots[target] = files
        report["files"] = {"predictions": "predictions.parquet", "plots": plots}
        report = metrics.json_finite(report)
        artifacts.write_json_atomic(staging / "report.json", report)
        inputs = [artifacts.fingerprint(p) for p in (*config.embeddings, config.labels)]
        manifest = artifacts.new_manifest(
            "probe",
            run=run,
            inputs=inputs,
            rows=int(len(predictions)),
            counts=result.counts,
            extra={
                "targets": report["targets"],
                "model": report["model"],
                "split": report["split"],
                "table": report["table"],
            },
        )
        artifacts.write_json_atomic(staging / artifacts.MANIFEST_NAME, manifest)
    return ProbeResult(out, result.table, report, plots, result.counts, manifest)
