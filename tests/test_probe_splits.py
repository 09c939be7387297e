"""``urbanln probe`` splits: auto, grouped k-fold, the buffer, pooled scores, the log decision per training fold
and Duan's smearing."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pandas as pd
import pytest

from tests.test_probe import city, write_embeddings, write_labels
from urbanln_cli.errors import UsageProblem
from urbanln_cli.evaluation import metrics, splits
from urbanln_cli.evaluation.heads import DEFAULT_ALPHAS, ridge_cv
from urbanln_cli.stages.probe import ProbeConfig, evaluate


@pytest.fixture
def grouped(tmp_path):
    """The test city with eight groups of uneven size, with and without coordinates."""
    frame, X = city(seed=2)
    rng = np.random.default_rng(5)
    frame["group"] = np.array([f"g{i}" for i in range(8)])[np.minimum(rng.geometric(0.25, len(frame)) - 1, 7)]
    ids = frame["tile_id"].tolist()
    no_xy = frame.assign(lon=np.nan, lat=np.nan)
    return {
        "frame": frame,
        "X": X,
        "emb": write_embeddings(tmp_path / "e.safetensors", X, ids),
        "labels": write_labels(tmp_path / "labels", frame),
        "labels_no_xy": write_labels(tmp_path / "labels_no_xy", no_xy),
        "labels_bare": write_labels(tmp_path / "labels_bare", no_xy.assign(group=None)),
        "tmp": tmp_path,
    }


def config(data, labels="labels", **kw) -> ProbeConfig:
    return ProbeConfig(target="population", embeddings=(data["emb"],), labels=data[labels], **kw)


def test_auto_picks_spatial_then_group_then_random_with_a_warning(grouped, caplog):
    with caplog.at_level(logging.WARNING, logger="urbanln_cli"):
        spatial = evaluate(config(grouped))
        group = evaluate(config(grouped, "labels_no_xy"))
        assert not caplog.records
        random = evaluate(config(grouped, "labels_bare"))
    assert spatial.report["split"] | {"why": None} == {
        "kind": "spatial",
        "spec": "spatial",
        "requested": "auto",
        "why": None,
        "folds": 5,
        "block_km": 2.0,
        "buffer_km": 0.0,
        "inner_folds": 5,
        "seed": 0,
    }
    assert spatial.table[0]["split"] == "spatial"
    assert group.report["split"]["kind"] == "group" and "8 groups" in group.report["split"]["why"]
    assert random.report["split"]["kind"] == "random" and random.report["split"]["block_km"] is None
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and "random split leaks spatial autocorrelation" in record.getMessage()
    assert "\n" not in record.getMessage()


def test_cli_random_split_warns_on_one_stderr_line(grouped, cli, monkeypatch):
    monkeypatch.chdir(grouped["tmp"])
    result = cli("probe", "-t", "population", "-e", "e.safetensors", "--labels", "labels", "--split", "random")
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "leaks spatial autocorrelation" in warnings[0]
    assert "random" in result.stdout
    spatial = cli("probe", "-t", "population", "-e", "e.safetensors", "--labels", "labels", "-o", "s", "--no-plots")
    assert spatial.exit_code == 0 and "warning" not in spatial.stderr
    assert "spatial, 2 km blocks" in spatial.stderr


def test_group_split_is_sklearn_group_k_fold(grouped):
    from sklearn.model_selection import GroupKFold

    result = evaluate(config(grouped, split="group", folds=5))
    (run,) = result.runs
    groups = grouped["frame"]["group"].to_numpy()
    expected = np.empty(len(groups), np.int64)
    for k, (_, test) in enumerate(GroupKFold(5).split(np.zeros((len(groups), 1)), groups=groups)):
        expected[test] = k
    np.testing.assert_array_equal(run.fold, expected[run.rows])
    assert len(run.folds) == 5 and result.report["split"]["folds"] == 5
    # the headline is pooled over every out-of-fold prediction; the fold mean sits beside it
    row = result.table[0]
    assert row["r2_pooled"] == pytest.approx(metrics.r2(run.y_true, run.y_pred), rel=1e-12)
    fold_r2 = [metrics.r2(run.y_true[run.fold == k], run.y_pred[run.fold == k]) for k in range(5)]
    assert row["r2_mean"] == pytest.approx(np.mean(fold_r2)) and row["r2_std"] == pytest.approx(np.std(fold_r2))
    assert [f["r2"] for f in run.folds] == pytest.approx(fold_r2)
    with pytest.raises(UsageProblem, match="only 8 group"):
        evaluate(config(grouped, split="group", folds=9))
    logo = evaluate(config(grouped, split="logo"))
    assert len(logo.runs[0].folds) == 8


def test_buffer_removes_exactly_the_tiles_within_the_distance():
    # tiles on one east-west line at 40°N, at known distances (km) east of the first
    km = np.array([0.0, 0.5, 0.99, 1.01, 1.5, 3.0, 3.2, 4.5, 6.0])
    lat = np.full(len(km), 40.0)
    lon = 116.0 + np.degrees(km / (splits.EARTH_RADIUS_KM * math.cos(math.radians(40.0))))
    fold = np.array([0, 1, 1, 1, 1, 1, 0, 1, 1])  # fold 0 tests the tiles at 0 and 3.2 km
    dropped = splits.buffer_exclusions(lon, lat, fold, 1.0)
    # within 1 km of 0 km: 0.5, 0.99; within 1 km of 3.2 km: 3.0 (0.2) — not 1.01, 1.5 (1.7 from 3.2), 4.5 (1.3)
    assert sorted(km[dropped[0]]) == [0.5, 0.99, 3.0]
    # fold 1 tests everything else: training is 0 km and 3.2 km, each within 1 km of a test tile
    assert sorted(km[dropped[1]]) == [0.0, 3.2]
    assert all(len(v) == 0 for v in splits.buffer_exclusions(lon, lat, fold, 0.0).values())
    # a tile at exactly the distance counts as within it
    at = splits.buffer_exclusions(lon[:2], lat[:2], np.array([0, 1]), 0.5)
    assert list(at[0]) == [1]


def test_a_buffer_that_leaves_a_fold_nothing_to_learn_from_is_an_input_error(grouped):
    from urbanln_cli.errors import InputError

    with pytest.raises(InputError, match="training tile") as caught:
        evaluate(config(grouped, split="spatial", block_km=1.0, buffer_km=500.0))
    assert "--buffer-km 500 removed" in caught.value.message and "smaller --buffer-km" in caught.value.hint


def test_buffer_in_the_stage_shrinks_each_training_fold(grouped):
    plain = evaluate(config(grouped, split="spatial", block_km=1.0))
    buffered = evaluate(config(grouped, split="spatial", block_km=1.0, buffer_km=0.5))
    frame = grouped["frame"]
    info = buffered.report["targets_info"]["population"]["folds"]["buffer_dropped"]
    run = buffered.runs[0]
    for before, after in zip(plain.runs[0].folds, run.folds):
        k = after["fold"]
        test = frame.iloc[run.rows[run.fold == k]]
        train = frame.iloc[np.setdiff1d(np.arange(len(frame)), run.rows[run.fold == k])]
        x, y = splits.local_km(frame["lon"].to_numpy(), frame["lat"].to_numpy())
        xy = np.column_stack([x, y])
        near = [
            i
            for i in train.index
            if np.min(np.hypot(*(xy[test.index] - xy[i]).T)) <= 0.5
        ]  # fmt: skip
        assert after["buffer_dropped"] == info[k] == len(near) > 0
        assert after["n_train"] == before["n_train"] - len(near)
        assert after["n_test"] == before["n_test"]
    assert buffered.report["split"]["buffer_km"] == 0.5


def test_ridge_with_a_buffer_equals_sklearn_on_the_remaining_rows():
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(4)
    n, p = 200, 8
    X = rng.normal(size=(n, p)) * 2 + 1
    y = X @ rng.normal(size=p) + rng.normal(size=n) * 3
    fold = rng.integers(0, 3, n)
    inner = splits.shuffled_unit_folds(np.arange(n), 4, 1)
    excluded = {k: rng.choice(np.flatnonzero(fold != k), 25, replace=False) for k in range(3)}
    alphas = np.array(DEFAULT_ALPHAS)
    pred, records = ridge_cv(X, y, fold, inner, alphas, excluded=excluded, smearing=True)
    for record in records:
        k = record["fold"]
        train = np.setdiff1d(np.flatnonzero(fold != k), excluded[k])
        test = np.flatnonzero(fold == k)
        cv = [(np.flatnonzero(inner[train] != j), np.flatnonzero(inner[train] == j)) for j in range(4)]
        search = GridSearchCV(
            make_pipeline(StandardScaler(), Ridge()), {"ridge__alpha": alphas}, scoring="neg_mean_squared_error", cv=cv
        ).fit(X[train], y[train])
        assert record["alpha"] == search.best_params_["ridge__alpha"] and record["n_train"] == len(train)
        np.testing.assert_allclose(pred[test], search.predict(X[test]), rtol=1e-9, atol=1e-9)
        # Duan's factor: mean exp(residual) over the training fold
        residual = y[train] - search.predict(X[train])
        assert record["smearing"] == pytest.approx(np.mean(np.exp(residual)), rel=1e-9)


def test_log_decision_is_made_on_each_training_fold(tmp_path):
    frame, X = city(seed=3)
    # symmetric in the west and centre; heavily skewed in the east only
    east = (frame["group"] == "east").to_numpy()
    frame["population"] = 50 + frame["population"] * 0.1
    frame.loc[east, "population"] = np.exp(2 + 2.5 * np.random.default_rng(1).normal(size=east.sum()))
    labels = write_labels(tmp_path / "labels", frame)
    emb = write_embeddings(tmp_path / "e.safetensors", X, frame["tile_id"].tolist())
    result = evaluate(ProbeConfig(target="population", embeddings=(emb,), labels=labels, split="logo"))
    info = result.report["targets_info"]["population"]
    by_group = {f["test_group"]: f["log_target"] for f in result.runs[0].folds}
    # testing on the east, the training rows (west, centre) are not skewed: no log; otherwise they are
    assert by_group == {"east": False, "west": True, "centre": True}
    assert sorted(info["log_target_folds"].values()) == [False, True, True]
    assert info["log_target"] is True  # the target's summary: log1p in some fold


def test_raw_unit_predictions_use_the_smearing_factor(tmp_path):
    frame, X = city(seed=0)
    labels = write_labels(tmp_path / "labels", frame)
    emb = write_embeddings(tmp_path / "e.safetensors", X, frame["tile_id"].tolist())
    result = evaluate(
        ProbeConfig(target="carbon", embeddings=(emb,), labels=labels, split="spatial", block_km=1.0, log_target="yes")
    )
    run = result.runs[0]
    plan_fold, rows = run.fold, run.rows
    z = np.log1p(frame["carbon"].to_numpy()[rows])
    from urbanln_cli.evaluation.target_plan import inner_units

    spec = splits.SplitSpec("spatial")
    lon, lat = frame["lon"].to_numpy(), frame["lat"].to_numpy()
    inner = splits.shuffled_unit_folds(inner_units(rows, lon, lat, spec, ProbeConfig(block_km=1.0)), 5, 1)
    vectors = X[rows].astype(np.float32)  # as stored in the embeddings file
    pred_z, records = ridge_cv(vectors, z, plan_fold, inner, DEFAULT_ALPHAS, smearing=True)
    factors = {r["fold"]: r["smearing"] for r in records}
    assert all(f > 1.0 for f in factors.values())  # exp is convex: the correction raises the naive back-transform
    expected = np.maximum(np.exp(pred_z) * np.array([factors[k] for k in plan_fold]) - 1, 0.0)
    np.testing.assert_allclose(run.y_pred, expected, rtol=1e-9)
    assert [f["smearing"] for f in run.folds] == pytest.approx([factors[k] for k in sorted(factors)])
    # on average the corrected predictions are closer to unbiased than the naive expm1
    y = run.y_true
    assert abs(np.mean(run.y_pred - y)) < abs(np.mean(np.expm1(pred_z) - y))


def test_report_and_manifest_name_the_split_used(grouped, cli, monkeypatch):
    monkeypatch.chdir(grouped["tmp"])
    result = cli("probe", "-t", "population", "-e", "e.safetensors", "--labels", "labels_no_xy", "--no-plots", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads((grouped["tmp"] / "probe" / "population" / "report.json").read_text())
    assert report["split"]["kind"] == "group" and report["split"]["requested"] == "auto"
    assert json.loads(result.stdout)["table"][0]["split"] == "group"
    frame = pd.read_parquet(grouped["tmp"] / "probe" / "population" / "predictions.parquet")
    assert frame["fold"].nunique() == 5


def test_probe_target_carbon_works_with_every_default(cli, tmp_path, monkeypatch):
    frame, X = city(seed=4)
    monkeypatch.chdir(tmp_path)
    write_labels(tmp_path / "labels", frame)
    write_embeddings(tmp_path / "embeddings.safetensors", X, frame["tile_id"].tolist())
    result = cli("probe", "--target", "carbon")
    assert result.exit_code == 0, result.stderr
    assert "(linear, spatial, 2 km blocks)" in result.stderr and "warning" not in result.stderr
    report = json.loads((tmp_path / "probe" / "carbon" / "report.json").read_text())
    assert report["model"]["kind"] == "ridge" and report["split"]["kind"] == "spatial"
    assert report["table"][0]["r2_pooled"] > 0.5
