"""``urbanln probe`` on a class target: logistic regression against scikit-learn, metrics, the stage and the CLI."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pandas as pd
import pytest

from tests.test_probe import city, write_embeddings
from urbanln_cli import artifacts
from urbanln_cli.evaluation import metrics, splits
from urbanln_cli.evaluation.classify import DEFAULT_CS, logistic_cv
from urbanln_cli.stages.probe import ProbeConfig, evaluate, probe

CLASSES = ("industrial", "park", "residential", "water")


def write_class_labels(path, frame: pd.DataFrame, class_columns=("landuse",)):
    """A labels dataset as `label --table` writes one with a class column: strings, null for missing."""
    features = datasets.Features(
        {c: datasets.Value("string" if c in ("tile_id", "group", *class_columns) else "float64") for c in frame.columns}
    )
    ds = datasets.Dataset.from_dict(
        {c: [None if isinstance(v, float) and np.isnan(v) else v for v in frame[c]] for c in frame.columns},
        features=features,
    )
    categorical = {
        c: {"classes": sorted(frame[c].dropna().unique()), "counts": frame[c].value_counts().to_dict()}
        for c in class_columns
    }
    manifest = artifacts.new_manifest(
        "labels", run=artifacts.RunInfo("test"), inputs=[], rows=len(frame), extra={"categorical": categorical}
    )
    return artifacts.write_dataset(ds, path, manifest)


def land_use(X: np.ndarray, seed: int = 0) -> np.ndarray:
    """Four classes, linearly separable up to noise in the embeddings."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(X.shape[1], len(CLASSES)))
    return np.asarray(CLASSES, object)[(X @ W + rng.gumbel(size=(len(X), len(CLASSES)))).argmax(axis=1)]


@pytest.fixture
def data(tmp_path):
    frame, X = city(seed=1)
    frame["landuse"] = land_use(X)
    frame.loc[[3, 40, 41], "landuse"] = None  # missing
    labels = write_class_labels(tmp_path / "labels", frame)
    good = write_embeddings(tmp_path / "good.safetensors", X, frame["tile_id"].tolist())
    noise = write_embeddings(
        tmp_path / "noise.safetensors", np.random.default_rng(7).normal(size=X.shape), frame["tile_id"].tolist()
    )
    return {"frame": frame, "X": X, "labels": labels, "good": good, "noise": noise, "tmp": tmp_path}


def test_classification_metrics_equal_sklearn():
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 300)
    p = np.where(rng.random(300) < 0.6, y, rng.integers(0, 6, 300))  # class 5 is predicted, never true
    got = metrics.classification(y, p, 6)
    assert got["accuracy"] == pytest.approx(accuracy_score(y, p))
    with pytest.warns(UserWarning):  # sklearn warns about the predicted-only class, and ignores it, as we do
        assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p))
    assert got["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"))
    assert got["f1"] == pytest.approx(list(f1_score(y, p, average=None, labels=range(6))))
    np.testing.assert_array_equal(metrics.confusion(y, p, 6), confusion_matrix(y, p, labels=range(6)))
    assert metrics.classification(y[:0], p[:0], 6)["f1"] == [None] * 6


@pytest.mark.filterwarnings("ignore::FutureWarning")  # sklearn 1.9 on LogisticRegressionCV's coming defaults
@pytest.mark.parametrize("n_classes", [2, 4])
def test_logistic_probe_equals_sklearn_logistic_regression_cv(n_classes):
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(n_classes)
    n, p = 360, 10
    X = rng.normal(size=(n, p)) * rng.uniform(0.3, 4, p) + rng.normal(size=p) * 3
    X[:, 2] = 7.0  # a constant column
    y = (X @ rng.normal(size=(p, n_classes)) + 2 * rng.gumbel(size=(n, n_classes))).argmax(axis=1)
    fold = splits.group_k_folds(rng.integers(0, 30, n), 3)  # outer folds over 30 "blocks"
    inner = splits.shuffled_unit_folds(rng.integers(0, 40, n), 4, 1)  # inner folds over other units
    excluded = {0: np.flatnonzero(fold != 0)[:15]}  # a buffer in fold 0
    pred, records = logistic_cv(X, y, fold, inner, DEFAULT_CS, excluded=excluded, tol=1e-8)
    for record in records:
        k = record["fold"]
        train = np.setdiff1d(np.flatnonzero(fold != k), excluded.get(k, []))
        test = np.flatnonzero(fold == k)
        cv = [(np.flatnonzero(inner[train] != j), np.flatnonzero(inner[train] == j)) for j in range(4)]
        with threadpool_limits(1, "blas"):  # as ours: BLAS threads stall on small products when cores are busy
            reference = make_pipeline(
                StandardScaler(),
                LogisticRegressionCV(Cs=list(DEFAULT_CS), cv=cv, scoring="neg_log_loss", tol=1e-8, max_iter=10_000),
            ).fit(X[train], y[train])
        assert record["C"] == pytest.approx(float(np.ravel(reference[-1].C_)[0]))
        np.testing.assert_array_equal(pred[test], reference.predict(X[test]))
        assert record["n_train"] == len(train) and record["inner_folds"] == 4
    assert (pred >= 0).all()


def test_folds_in_worker_processes_equal_the_folds_in_order(monkeypatch):
    """Large inputs fit their outer folds in forked workers; the result must not depend on it."""
    from urbanln_cli.evaluation import classify

    rng = np.random.default_rng(3)
    n, p = 300, 8
    X = rng.normal(size=(n, p))
    y = (X @ rng.normal(size=(p, 3)) + rng.gumbel(size=(n, 3))).argmax(axis=1)
    fold = splits.group_k_folds(rng.integers(0, 25, n), 4)
    inner = splits.shuffled_unit_folds(rng.integers(0, 30, n), 3, 1)
    monkeypatch.setattr(classify, "_FLOAT32_ABOVE", 0)  # every input counts as large (float32, and the pool)
    monkeypatch.setattr(classify.os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)  # two cores
    contexts = []
    real_context = classify.multiprocessing.get_context
    monkeypatch.setattr(classify.multiprocessing, "get_context", lambda m: contexts.append(m) or real_context(m))
    monkeypatch.setattr(classify, "_WORKERS", 1)
    in_order = logistic_cv(X, y, fold, inner)
    assert contexts == []
    monkeypatch.setattr(classify, "_WORKERS", 3)
    pooled = logistic_cv(X, y, fold, inner)
    assert contexts == ["fork"]
    np.testing.assert_array_equal(pooled[0], in_order[0])
    assert pooled[1] == in_order[1]


def test_classification_probe_end_to_end(data):
    from PIL import Image

    result = probe(
        ProbeConfig(
            target="landuse",
            embeddings=(data["good"], data["noise"]),
            labels=data["labels"],
            out=data["tmp"] / "p",
        )
    )
    report = json.loads((result.out / "report.json").read_text())
    good, noise = result.table
    assert good["task"] == "classification" and good["model"] == "logistic" and good["split"] == "spatial"
    assert good["accuracy_pooled"] > 0.6 > 0.4 > noise["accuracy_pooled"]  # four classes: chance is about 0.25-0.35
    assert {"balanced_accuracy_pooled", "macro_f1_pooled", "accuracy_mean", "accuracy_std"} <= set(good)
    info = report["targets_info"]["landuse"]
    assert info["task"] == "classification" and info["classes"] == list(CLASSES)
    assert info["dropped"]["missing"] == 3 and sum(info["class_counts"].values()) == len(data["frame"]) - 3
    run = report["results"][0]
    assert run["classes"] == list(CLASSES) and len(run["pooled"]["f1"]) == 4
    assert all(f["C"] in DEFAULT_CS for f in run["folds"])
    confusion = np.array(run["confusion"])
    assert confusion.sum() == len(data["frame"]) - 3
    assert np.trace(confusion) / confusion.sum() == pytest.approx(run["pooled"]["accuracy"])
    predictions = pd.read_parquet(result.out / "predictions.parquet")
    mine = predictions[predictions["embeddings"] == "good"]
    truth = data["frame"].set_index("tile_id")["landuse"]
    assert (mine["class_true"].to_numpy() == truth.loc[mine["tile_id"]].to_numpy()).all()
    assert (mine["class_pred"] == mine["class_true"]).mean() == pytest.approx(good["accuracy_pooled"])
    files = report["files"]["plots"]["landuse"]
    assert set(files) == {"confusion_good", "confusion_noise"}
    image = np.asarray(Image.open(result.out / files["confusion_good"]).convert("RGB"), np.float64)
    assert image.shape[0] > 200 and image.std() > 20


def test_mixed_targets_and_the_mlp_classifier(data):
    result = evaluate(
        ProbeConfig(
            target="landuse,population",
            embeddings=(data["good"],),
            labels=data["labels"],
            model="mlp",
            hidden=32,
            max_epochs=20,
            lr=1e-2,
            folds=3,
        )
    )
    row = result.table[0]
    assert row["model"] == "mlp" and row["task"] == "classification" and row["accuracy_pooled"] > 0.5
    assert all("val_cross_entropy" in f for f in result.runs[0].folds)
    assert result.table[1]["task"] == "regression" and "r2_pooled" in result.table[1]
    linear = evaluate(ProbeConfig(target="all", embeddings=(data["good"],), labels=data["labels"], folds=3))
    tasks = {r["target"]: r["task"] for r in linear.table}
    assert tasks == {"carbon": "regression", "population": "regression", "landuse": "classification"}
    assert {r["model"] for r in linear.table} == {"ridge", "logistic"}
    assert set(linear.report["model"]) == {"kind", "ridge", "logistic"}


def test_cli_classification_table(cli, data, monkeypatch):
    monkeypatch.chdir(data["tmp"])
    result = cli("probe", "-t", "landuse", "-e", "good.safetensors", "--no-plots", "--cs", "0.01,0.1,1")
    assert result.exit_code == 0, result.stderr
    header = result.stdout.splitlines()[0]
    assert "accuracy" in header and "macro-F1" in header and "R²" not in header
    assert "best accuracy" in result.stderr
    report = json.loads((data["tmp"] / "probe" / "landuse" / "report.json").read_text())
    assert report["model"]["Cs"] == [0.01, 0.1, 1.0]
    assert all(f["C"] in (0.01, 0.1, 1.0) for f in report["results"][0]["folds"])
