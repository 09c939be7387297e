"""Fitting one embeddings file on one planned target: the head over every fold, scores per fold and pooled.

Regression: ridge or the MLP on the target, or on log1p(target) in the folds whose training rows chose it;
those predictions go back to the target's units with Duan's smearing factor of the fold. Classification:
logistic regression or the MLP classifier over the target's classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from urbanln_cli.errors import InputError
from urbanln_cli.evaluation import metrics, splits


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
    y_true: np.ndarray  # target values, or class codes for classification
    y_pred: np.ndarray
    folds: list[dict]
    metrics: dict[str, dict[str, float]]
    pooled: dict[str, Any]
    n: int
    kind: str = "regression"
    classes: tuple[str, ...] = ()
    head: str = "ridge"

    def table_row(self, split: str, log_target: bool) -> dict[str, Any]:
        row: dict[str, Any] = {
            "target": self.target,
            "task": self.kind,
            "embeddings": self.embeddings,
            "model": self.head,
            "split": split,
            "n": self.n,
            "folds": len(self.folds),
        }
        for name in metrics.NAMES if self.kind == "regression" else metrics.CLASS_NAMES:
            row[f"{name}_pooled"] = self.pooled[name]
            row[f"{name}_mean"] = self.metrics[name]["mean"]
            row[f"{name}_std"] = self.metrics[name]["std"]
        row["log_target"] = log_target
        return row

    def confusion(self) -> np.ndarray:
        """Pooled out-of-fold counts [true class, predicted class]."""
        return metrics.confusion(self.y_true, self.y_pred, len(self.classes))


def head_name(model: str, kind: str) -> str:
    """What --model linear means for this task (ridge or logistic); mlp stays mlp."""
    if model == "mlp":
        return "mlp"
    return "logistic" if kind == "classification" else "ridge"


def run_one(plan: dict[str, Any], src: Embeddings, config: Any, step: Callable[[int], None]) -> TargetRun:
    rows_all = plan["rows"]
    # rows of this target the embeddings file covers, and its vector for each
    emb_row = _inverse(src.label_row, rows_all)
    have = emb_row >= 0
    rows, X = rows_all[have], src.vectors[emb_row[have]]
    y = plan["y"][have]
    fold, inner = plan["fold"][have], plan["inner"][have]
    position = np.cumsum(have) - 1  # a plan row's position among the covered rows
    excluded = {k: position[v[have[v]]] for k, v in plan["excluded"].items()}
    present = {int(k) for k in np.unique(fold) if k != splits.TRAIN_ONLY}
    for k in sorted(present):  # a buffer (or a file covering few tiles) can leave a fold nothing to learn from
        left = np.setdiff1d(np.flatnonzero(fold != k), excluded.get(k, ()))
        if len(left) < 2:
            raise InputError(
                f"target {plan['target']!r}, {src.name}: fold {k} has {len(left)} training tile(s) left"
                + (
                    f" after --buffer-km {config.buffer_km:g} removed {len(excluded[k])}"
                    if len(excluded.get(k, ()))
                    else ""
                ),
                hint="use a smaller --buffer-km, larger --block-km blocks, or embeddings that cover more tiles",
            )
    head = head_name(config.model, plan["kind"])
    fit = _classify if plan["kind"] == "classification" else _regress
    pred, records = fit(plan, head, X, y, fold, inner, excluded, present, config, step)
    for _ in set(plan["fold_ids"]) - present:
        step(-1)
    for record in records:
        record["buffer_dropped"] = int(len(excluded.get(record["fold"], ())))
        test_group = plan["fold_info"].get("test_group", {}).get(record["fold"])
        if test_group is not None:
            record["test_group"] = test_group
    scored = fold != splits.TRAIN_ONLY
    if plan["kind"] == "classification":
        n_classes = len(plan["classes"])
        scores = [metrics.classification(y[fold == r["fold"]], pred[fold == r["fold"]], n_classes) for r in records]
        names, pooled = metrics.CLASS_NAMES, metrics.classification(y[scored], pred[scored], n_classes)
    else:
        scores = [metrics.regression(y[fold == r["fold"]], pred[fold == r["fold"]]) for r in records]
        names, pooled = metrics.NAMES, metrics.regression(y[scored], pred[scored])
    for record, score in zip(records, scores):
        record.update(score)
    return TargetRun(
        target=plan["target"],
        embeddings=src.name,
        rows=rows[scored],
        fold=fold[scored],
        y_true=y[scored],
        y_pred=pred[scored],
        folds=records,
        metrics=metrics.summarise(scores, names),
        pooled=pooled,
        n=int(len(y)),
        kind=plan["kind"],
        classes=tuple(plan["classes"]),
        head=head,
    )


def _classify(plan, head, X, y, fold, inner, excluded, present, config, step):
    from urbanln_cli.evaluation.classify import logistic_cv
    from urbanln_cli.evaluation.heads import mlp_cv

    if head == "logistic":
        return logistic_cv(X, y, fold, inner, config.cs, on_fold=step, excluded=excluded)
    return mlp_cv(X, y, fold, inner, n_classes=len(plan["classes"]), excluded=excluded, on_fold=step, **_mlp(config))


def _regress(plan, head, X, y, fold, inner, excluded, present, config, step):
    """Fit each fold on the target or on log1p(target), as its training rows chose; predictions in target units."""
    from urbanln_cli.evaluation.heads import mlp_cv, ridge_cv

    pred = np.full(len(y), np.nan)
    records: list[dict] = []
    for use_log in (False, True):
        only = {k for k in present if plan["log_folds"].get(k, False) == use_log}
        if not only:
            continue
        z = np.log1p(y) if use_log else y
        if head == "ridge":
            part, recs = ridge_cv(
                X, z, fold, inner, config.alphas, on_fold=step, excluded=excluded, only=only, smearing=use_log
            )
        else:
            part, recs = mlp_cv(
                X, z, fold, inner, excluded=excluded, only=only, smearing=use_log, on_fold=step, **_mlp(config)
            )
        for record in recs:
            k = record["fold"]
            test = fold == k
            record["log_target"] = use_log
            if use_log:
                # back to the target's units: E[y] = exp(z) · smearing − 1; a log1p-modelled target is >= 0,
                # and the cap keeps exp finite
                train = fold != k
                train[excluded.get(k, ())] = False
                cap = float(z[train].max()) + 1.0
                pred[test] = np.maximum(np.exp(np.minimum(part[test], cap)) * record["smearing"] - 1.0, 0.0)
            else:
                pred[test] = part[test]
        records.extend(recs)
    records.sort(key=lambda r: r["fold"])
    return pred, records


def _mlp(config) -> dict[str, Any]:
    return {
        "seed": config.seed,
        "hidden": config.hidden,
        "max_epochs": config.max_epochs,
        "patience": config.patience,
        "lr": config.lr,
        "weight_decay": config.weight_decay,
    }


def model_info(config, kinds: set[str]) -> dict[str, Any]:
    """The head's settings for the report: per head that ran (ridge, logistic, mlp)."""
    if config.model == "mlp":
        return {
            "kind": "mlp",
            "layers": f"D->{config.hidden}->" + ("1" if kinds == {"regression"} else "1|classes"),
            "activation": "relu",
            "dropout": 0.1,
            "loss": "mse (regression), cross-entropy (classification)",
            "optimizer": f"adam lr {config.lr:g} weight_decay {config.weight_decay:g}",
            "batch_size": 256,
            "max_epochs": config.max_epochs,
            "patience": config.patience,
            "standardise": True,
            "seed": config.seed,
        }
    heads = {
        "ridge": {
            "kind": "ridge",
            "standardise": True,
            "alphas": list(config.alphas),
            "alpha_search": f"{config.inner_folds}-fold inner CV, mean MSE",
        },
        "logistic": {
            "kind": "logistic",
            "standardise": True,
            "Cs": list(config.cs),
            "C_search": f"{config.inner_folds}-fold inner CV, mean log-loss",
            "solver": "L-BFGS; multinomial for more than two classes",
        },
    }
    used = [head_name("linear", kind) for kind in sorted(kinds, reverse=True)]
    if len(used) == 1:
        return heads[used[0]]
    return {"kind": "linear", **{name: heads[name] for name in used}}


def _inverse(label_row: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For each label row in ``rows``: the embeddings row that points at it, or -1."""
    lookup = np.full(int(max(label_row.max(initial=-1), rows.max(initial=-1))) + 1, -1, np.int64)
    hit = label_row >= 0
    lookup[label_row[hit]] = np.flatnonzero(hit)
    return lookup[rows]
