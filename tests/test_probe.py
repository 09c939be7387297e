"""``urbanln probe`` (regression): splits, ridge and MLP heads, metrics in target units, joins, plots, the CLI.

Classification is in test_probe_classify.py, the splits' new rules (auto, group k-fold, buffer, per-fold
log decision) in test_probe_splits.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest

from urbanln_cli import artifacts
from urbanln_cli.errors import InputError, UsageProblem
from urbanln_cli.evaluation import metrics, splits
from urbanln_cli.evaluation.heads import DEFAULT_ALPHAS, mlp_cv, ridge_cv
from urbanln_cli.stages.probe import ProbeConfig, evaluate, probe, probe_metrics

SIDE = 18  # an 18 × 18 grid of tiles, about 450 m apart: 324 tiles over ~8 km (16+ blocks of the default 2 km)
DIM = 24


def write_embeddings(path: Path, vectors: np.ndarray, ids: list[str]) -> Path:
    manifest = artifacts.new_manifest("embeddings", run=artifacts.RunInfo("test"), inputs=[], rows=len(ids))
    return artifacts.write_tensors(
        path,
        {"embeddings": np.asarray(vectors, np.float32)},
        manifest,
        metadata={"tile_ids": ids, "model": {"kind": "test"}},
    )


def write_labels(path: Path, frame: pd.DataFrame) -> Path:
    features = datasets.Features(
        {
            "tile_id": datasets.Value("string"),
            "lon": datasets.Value("float64"),
            "lat": datasets.Value("float64"),
            "group": datasets.Value("string"),
        }
        | {c: datasets.Value("float64") for c in frame.columns if c not in ("tile_id", "lon", "lat", "group")}
    )
    ds = datasets.Dataset.from_pandas(frame.reset_index(drop=True), features=features, preserve_index=False)
    manifest = artifacts.new_manifest("labels", run=artifacts.RunInfo("test"), inputs=[], rows=len(frame))
    return artifacts.write_dataset(ds, path, manifest)


def city(seed: int = 0, side: int = SIDE, dim: int = DIM):
    """Tiles on a grid, three groups (west/centre/east), embeddings with planted signals.

    carbon = exp(linear) is skewed and non-negative; population is linear and symmetric.
    """
    rng = np.random.default_rng(seed)
    r, c = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    r, c = r.ravel(), c.ravel()
    n = len(r)
    X = rng.normal(size=(n, dim))
    w = rng.normal(size=dim) / math.sqrt(dim)
    frame = pd.DataFrame(
        {
            "tile_id": [f"city/r{i}_c{j}" for i, j in zip(r, c)],
            "lon": 116.30 + 0.0053 * c,
            "lat": 39.90 + 0.004 * r,
            "group": np.array(["west", "centre", "east"])[np.minimum(c * 3 // side, 2)],
            "carbon": np.exp(3.0 + 1.2 * (X @ w) + rng.normal(0, 0.1, n)),
            "population": 50.0 + 10.0 * (X @ w) + rng.normal(0, 1.0, n),
        }
    )
    return frame, X


@pytest.fixture
def data(tmp_path):
    frame, X = city()
    labels = write_labels(tmp_path / "labels", frame)
    good = write_embeddings(tmp_path / "good.safetensors", X, frame["tile_id"].tolist())
    noise = np.random.default_rng(9).normal(size=X.shape)
    bad = write_embeddings(tmp_path / "bad.safetensors", noise, frame["tile_id"].tolist())
    return {"frame": frame, "X": X, "labels": labels, "good": good, "bad": bad, "tmp": tmp_path}


def run_probe(data, **kw) -> tuple:
    kw.setdefault("embeddings", (data["good"],))
    kw.setdefault("labels", data["labels"])
    kw.setdefault("out", data["tmp"] / "probe")
    result = probe(ProbeConfig(**kw))
    report = json.loads((result.out / "report.json").read_text())
    predictions = pd.read_parquet(result.out / "predictions.parquet")
    return result, report, predictions


# ---------------------------------------------------------------- metrics and heads


def test_metrics_equal_sklearn():
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    rng = np.random.default_rng(3)
    y, p = rng.gamma(2.0, 10.0, 500), rng.gamma(2.0, 10.0, 500)
    assert metrics.r2(y, p) == pytest.approx(r2_score(y, p), rel=1e-12)
    assert metrics.rmse(y, p) == pytest.approx(math.sqrt(mean_squared_error(y, p)), rel=1e-12)
    assert metrics.mae(y, p) == pytest.approx(mean_absolute_error(y, p), rel=1e-12)
    constant = np.full(10, 4.0)
    assert metrics.r2(constant, constant) == r2_score(constant, constant) == 1.0
    assert metrics.r2(constant, constant + 1) == r2_score(constant, constant + 1) == 0.0


def test_ridge_equals_sklearn_grid_search():
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    n, p = 240, 15
    X = (rng.normal(size=(n, p)) * rng.uniform(0.1, 5, p) + 3).astype(np.float32)
    X[:, 4] = 1.5  # a constant column
    y = X @ rng.normal(size=p) * 0.3 + rng.normal(size=n) * 4 + 10
    fold = rng.integers(0, 4, n)
    fold[:20] = splits.TRAIN_ONLY
    inner = splits.shuffled_unit_folds(np.arange(n), 5, 1)
    alphas = np.array(DEFAULT_ALPHAS)
    pred, records = ridge_cv(X, y, fold, inner, alphas)
    assert np.isnan(pred[:20]).all()
    for record in records:
        k = record["fold"]
        train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        cv = [(np.flatnonzero(inner[train] != j), np.flatnonzero(inner[train] == j)) for j in range(5)]
        search = GridSearchCV(
            make_pipeline(StandardScaler(), Ridge()), {"ridge__alpha": alphas}, scoring="neg_mean_squared_error", cv=cv
        )
        search.fit(X[train].astype(np.float64), y[train])
        assert record["alpha"] == search.best_params_["ridge__alpha"]
        np.testing.assert_allclose(pred[test], search.predict(X[test].astype(np.float64)), rtol=1e-9, atol=1e-9)
        assert record["n_train"] == len(train) and record["n_test"] == len(test)


def test_mlp_is_deterministic_and_learns():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 12)).astype(np.float32)
    y = X @ rng.normal(size=12) + rng.normal(0, 0.1, 300)
    fold = splits.random_folds(300, 3, 0)
    inner = splits.shuffled_unit_folds(np.arange(300), 5, 1)
    a, rec = mlp_cv(X, y, fold, inner, seed=4, max_epochs=40, patience=5)
    b, _ = mlp_cv(X, y, fold, inner, seed=4, max_epochs=40, patience=5)
    np.testing.assert_array_equal(a, b)
    assert metrics.r2(y, a) > 0.8
    assert all(r["n_val"] > 0 and r["best_epoch"] >= 1 for r in rec)


# ---------------------------------------------------------------- the stage


def test_reported_metrics_equal_sklearn_on_the_predictions(data):
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    result, report, predictions = run_probe(data, target="population", split="random")
    (run,) = report["results"]
    assert len(predictions) == len(data["frame"]) == run["n"]
    per_fold = []
    for record in run["folds"]:
        part = predictions[predictions["fold"] == record["fold"]]
        expected = {
            "r2": r2_score(part["y_true"], part["y_pred"]),
            "rmse": math.sqrt(mean_squared_error(part["y_true"], part["y_pred"])),
            "mae": mean_absolute_error(part["y_true"], part["y_pred"]),
        }
        for name, value in expected.items():
            assert record[name] == pytest.approx(value, rel=1e-10)
        per_fold.append(expected)
    for name in metrics.NAMES:
        values = [f[name] for f in per_fold]
        assert run["metrics"][name]["mean"] == pytest.approx(np.mean(values), rel=1e-10)
        assert run["metrics"][name]["std"] == pytest.approx(np.std(values), rel=1e-10, abs=1e-12)
    assert run["metrics"]["r2"]["mean"] > 0.9
    # predictions line up with the labels by tile id
    truth = data["frame"].set_index("tile_id")["population"]
    np.testing.assert_array_equal(predictions["y_true"].to_numpy(), truth.loc[predictions["tile_id"]].to_numpy())
    assert set(predictions.columns) == {"tile_id", "target", "embeddings", "fold", "y_true", "y_pred"}
    manifest = json.loads((result.out / "urbanln.json").read_text())
    assert manifest["stage"] == "probe" and manifest["rows"] == len(predictions)
    assert report["table"][0]["r2_mean"] == run["metrics"]["r2"]["mean"]


def test_spatial_split_never_shares_a_block(data):
    _, report, predictions = run_probe(data, target="population", split="spatial", block_km=0.8)
    frame = data["frame"].set_index("tile_id").loc[predictions["tile_id"]]
    blocks = splits.spatial_blocks(frame["lon"].to_numpy(), frame["lat"].to_numpy(), 0.8)
    per_block = pd.Series(predictions["fold"].to_numpy()).groupby(blocks).nunique()
    assert (per_block == 1).all()  # each block is tested in exactly one fold, so it is never in train and test at once
    info = report["targets_info"]["population"]["folds"]
    assert info["blocks"] == len(np.unique(blocks)) and len(info["blocks_per_fold"]) == 5
    assert predictions["fold"].nunique() == 5


def test_spatial_blocks_are_the_right_size():
    lon = np.array([116.0, 116.0 + 0.9 / 85.3, 116.0 + 1.1 / 85.3])  # ~0.9 km and ~1.1 km east at 40°N
    lat = np.full(3, 40.0)
    blocks = splits.spatial_blocks(lon, lat, 1.0)
    assert blocks[0] == blocks[1] != blocks[2]


def test_too_few_blocks_is_a_usage_error(data):
    with pytest.raises(UsageProblem, match="spatial block"):
        evaluate(
            ProbeConfig(
                target="population", embeddings=(data["good"],), labels=data["labels"], split="spatial", block_km=50
            )
        )


def test_logo_split_leaves_one_group_out(data):
    _, report, predictions = run_probe(data, target="population", split="logo")
    groups = data["frame"].set_index("tile_id").loc[predictions["tile_id"], "group"].to_numpy()
    assert (pd.Series(predictions["fold"].to_numpy()).groupby(groups).nunique() == 1).all()
    assert (pd.Series(groups).groupby(predictions["fold"].to_numpy()).nunique() == 1).all()
    sizes = data["frame"]["group"].value_counts()
    for record in report["results"][0]["folds"]:
        assert record["n_train"] == len(data["frame"]) - sizes[record["test_group"]]
    assert sorted(r["test_group"] for r in report["results"][0]["folds"]) == ["centre", "east", "west"]


def test_transfer_trains_only_on_a(data):
    frame = data["frame"].copy()
    # in the east the signal is reversed: training on it would ruin predictions for the centre
    east = frame["group"] == "east"
    frame.loc[east, "population"] = 100.0 - frame.loc[east, "population"]
    labels = write_labels(data["tmp"] / "labels_t", frame)
    _, report, predictions = run_probe(data, labels=labels, target="population", split="transfer:west->centre")
    (record,) = report["results"][0]["folds"]
    assert record["n_train"] == int((frame["group"] == "west").sum())
    assert record["n_test"] == int((frame["group"] == "centre").sum())
    test_groups = frame.set_index("tile_id").loc[predictions["tile_id"], "group"]
    assert set(test_groups) == {"centre"}
    assert report["targets_info"]["population"]["dropped"]["outside_transfer"] == int(east.sum())
    assert report["results"][0]["metrics"]["r2"]["mean"] > 0.9
    with pytest.raises(UsageProblem, match="no tile is in group 'mars'"):
        evaluate(
            ProbeConfig(target="population", embeddings=(data["good"],), labels=labels, split="transfer:west->mars")
        )


def test_split_spec_parsing():
    assert splits.SplitSpec.parse("transfer:a,b->c") == splits.SplitSpec("transfer", ("a", "b"), ("c",))
    assert [splits.SplitSpec.parse(k).kind for k in ("auto", "group", "logo")] == ["auto", "group", "logo"]
    for bad in ("transfer:a", "transfer:a->a", "blocks", "transfer:->b"):
        with pytest.raises(UsageProblem):
            splits.SplitSpec.parse(bad)


def test_log_target_round_trips_units(data):
    _, report, predictions = run_probe(data, target="carbon", log_target="auto")
    info = report["targets_info"]["carbon"]
    assert info["log_target"] is True and info["skewness"] > 1
    truth = data["frame"].set_index("tile_id")["carbon"]
    # y_true is the raw value, not its log, and predictions are back in the same units
    np.testing.assert_array_equal(predictions["y_true"].to_numpy(), truth.loc[predictions["tile_id"]].to_numpy())
    ratio = predictions["y_pred"] / predictions["y_true"]
    assert ratio.median() == pytest.approx(1.0, abs=0.05)
    assert (predictions["y_pred"] >= 0).all()
    assert report["results"][0]["metrics"]["r2"]["mean"] > 0.8
    from sklearn.metrics import r2_score

    fold0 = predictions[predictions["fold"] == 0]
    assert report["results"][0]["folds"][0]["r2"] == pytest.approx(r2_score(fold0["y_true"], fold0["y_pred"]))
    # the symmetric target stays as it is; 'no' is respected
    sym = evaluate(
        ProbeConfig(target="population,carbon", embeddings=(data["good"],), labels=data["labels"], log_target="no")
    )
    assert sym.log_targets == {"population": False, "carbon": False}
    assert evaluate(
        ProbeConfig(target="population", embeddings=(data["good"],), labels=data["labels"])
    ).log_targets == {"population": False}


def test_log_target_yes_refuses_negative_values(data):
    frame = data["frame"].copy()
    frame["population"] -= 200
    labels = write_labels(data["tmp"] / "neg", frame)
    with pytest.raises(UsageProblem, match="negative"):
        evaluate(ProbeConfig(target="population", embeddings=(data["good"],), labels=labels, log_target="yes"))


def test_ids_that_do_not_match(data):
    frame, X = data["frame"], data["X"]
    other = write_embeddings(data["tmp"] / "other.safetensors", X, [f"elsewhere/{i}" for i in range(len(X))])
    with pytest.raises(InputError, match="no tile id") as err:
        evaluate(ProbeConfig(target="population", embeddings=(other,), labels=data["labels"]))
    assert "0 matched" in err.value.message and err.value.exit_code == 3 and "elsewhere/0" in err.value.hint
    few_ids = frame["tile_id"].tolist()[:4] + [f"elsewhere/{i}" for i in range(len(X) - 4)]
    few = write_embeddings(data["tmp"] / "few.safetensors", X, few_ids)
    with pytest.raises(InputError, match=f"only 4 of {len(X)} tile ids"):
        evaluate(ProbeConfig(target="population", embeddings=(few,), labels=data["labels"]))
    # a partial match is probed and counted
    half = len(X) // 2
    partial = write_embeddings(
        data["tmp"] / "partial.safetensors",
        X,
        frame["tile_id"].tolist()[:half] + [f"elsewhere/{i}" for i in range(len(X) - half)],
    )
    result = evaluate(ProbeConfig(target="population", embeddings=(partial,), labels=data["labels"]))
    assert result.counts["matched_partial"] == half and result.counts["unmatched_partial"] == len(X) - half
    assert result.table[0]["n"] == half
    assert result.report["embeddings"][0]["labels_without_embedding"] == len(X) - half


def test_nan_and_zero_targets_are_dropped_and_counted(data):
    frame = data["frame"].copy()
    frame.loc[:6, "population"] = np.nan
    frame.loc[7:9, "population"] = 0.0
    labels = write_labels(data["tmp"] / "nan", frame)
    result, report, predictions = run_probe(data, labels=labels, target="population", drop_zero=True)
    assert report["targets_info"]["population"]["dropped"] == {"nan": 7, "zero": 3, "no_location": 0}
    assert result.counts["nan_population"] == 7 and result.counts["zero_population"] == 3
    assert report["results"][0]["n"] == len(frame) - 10 == len(predictions)
    assert predictions["y_true"].notna().all() and (predictions["y_true"] != 0).all()
    manifest = json.loads((result.out / "urbanln.json").read_text())
    assert manifest["counts"]["nan_population"] == 7


def test_target_all_and_empty_targets(data):
    frame = data["frame"].copy()
    frame["empty"] = np.nan
    labels = write_labels(data["tmp"] / "all", frame)
    result = evaluate(ProbeConfig(target="all", embeddings=(data["good"],), labels=labels))
    assert result.report["targets"] == ["carbon", "population"]
    assert "empty" in result.report["skipped"]
    with pytest.raises(InputError, match="usable rows"):
        evaluate(ProbeConfig(target="empty", embeddings=(data["good"],), labels=labels))
    with pytest.raises(UsageProblem, match="did you mean 'carbon'"):
        evaluate(ProbeConfig(target="carbn", embeddings=(data["good"],), labels=labels))


def test_several_embeddings_side_by_side(data):
    result, report, predictions = run_probe(data, target="all", embeddings=(data["good"], data["bad"]))
    assert report["split"]["kind"] == "spatial" and report["split"]["requested"] == "auto"
    assert result.out == data["tmp"] / "probe"
    assert [(r["target"], r["embeddings"]) for r in result.table] == [
        ("carbon", "good"),
        ("carbon", "bad"),
        ("population", "good"),
        ("population", "bad"),
    ]
    by = {(r["target"], r["embeddings"]): r["r2_mean"] for r in result.table}
    assert by[("population", "good")] > 0.9 > 0.2 > by[("population", "bad")]
    # the same folds for every embeddings file, so the comparison is fair
    folds = predictions.pivot_table(index=["target", "tile_id"], columns="embeddings", values="fold")
    assert (folds["good"] == folds["bad"]).all()
    assert set(result.plots) == {"carbon", "population"}


def test_library_table_writes_nothing(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = probe_metrics(
        [data["good"], data["bad"]], data["labels"], target=["population"], split="spatial", block_km=0.8
    )
    assert [r["embeddings"] for r in rows] == ["good", "bad"]
    assert {"r2_mean", "r2_std", "rmse_mean", "rmse_std", "mae_mean", "mae_std", "n", "split"} <= set(rows[0])
    assert rows[0]["split"] == "spatial"
    assert rows[0]["r2_pooled"] > 0.9 and rows[0]["model"] == "ridge"  # the pooled headline beside the fold mean
    assert not (tmp_path / "probe").exists()


def test_same_stem_names_are_disambiguated(data):
    (data["tmp"] / "a").mkdir()
    (data["tmp"] / "b").mkdir()
    one = write_embeddings(data["tmp"] / "a" / "embeddings.safetensors", data["X"], data["frame"]["tile_id"].tolist())
    two = write_embeddings(data["tmp"] / "b" / "embeddings.safetensors", data["X"], data["frame"]["tile_id"].tolist())
    rows = probe_metrics([one, two], data["labels"], target="population")
    assert [r["embeddings"] for r in rows] == ["a/embeddings", "b/embeddings"]


def test_mlp_through_the_stage(data):
    result = evaluate(
        ProbeConfig(
            target="population", embeddings=(data["good"],), labels=data["labels"], model="mlp", max_epochs=30, folds=3
        )
    )
    assert result.report["model"]["kind"] == "mlp"
    assert result.table[0]["r2_mean"] > 0.5
    assert all("epochs" in f for f in result.report["results"][0]["folds"])


def test_plots_are_written_and_not_blank(data):
    from PIL import Image

    result, report, _ = run_probe(data, target="carbon", embeddings=(data["good"], data["bad"]))
    files = report["files"]["plots"]["carbon"]
    assert set(files) == {"scatter", "map"}
    for name in files.values():
        image = np.asarray(Image.open(result.out / name).convert("RGB"), np.float64)
        assert image.shape[0] > 200 and image.shape[1] > 500
        assert image.std() > 20
    # the map's first panel (true values) is coloured, not white
    image = np.asarray(Image.open(result.out / files["map"]).convert("RGB"))
    panel = image[70:340, 20:300]
    assert len(np.unique(panel.reshape(-1, 3), axis=0)) > 20


def test_output_exists_and_overwrite(data):
    run_probe(data, target="population")
    from urbanln_cli.errors import OutputExistsError

    with pytest.raises(OutputExistsError):
        run_probe(data, target="population")
    run_probe(data, target="population", overwrite=True)


def test_wrong_artifacts(data):
    from urbanln_cli.errors import WrongArtifactError

    with pytest.raises(InputError, match="labels artifact not found"):
        evaluate(ProbeConfig(target="population", embeddings=(data["good"],), labels=data["tmp"] / "missing"))
    with pytest.raises(WrongArtifactError, match="holds embeddings"):
        evaluate(ProbeConfig(target="population", embeddings=(data["good"],), labels=data["good"]))


# ---------------------------------------------------------------- the CLI


def test_cli_table_on_stdout(cli, data, monkeypatch):
    monkeypatch.chdir(data["tmp"])
    result = cli(
        "probe",
        "--target",
        "population",
        "-e",
        "good.safetensors",
        "-e",
        "bad.safetensors",
        "--labels",
        "labels",
        "--split",
        "spatial",
        "--block-km",
        "0.8",
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "R²" in lines[0] and "RMSE" in lines[0]
    assert any(line.split()[:2] == ["population", "good"] for line in lines)
    assert "best R²" in result.stderr and "map of population: probe/population/map_population.png" in result.stderr
    assert (data["tmp"] / "probe" / "population" / "report.json").is_file()
    manifest = json.loads((data["tmp"] / "probe" / "population" / "urbanln.json").read_text())
    assert manifest["params"]["split"] == {"value": "spatial", "source": "flag"}


def test_cli_mlp_settings_reach_the_head(cli, data, monkeypatch):
    monkeypatch.chdir(data["tmp"])
    result = cli(
        "probe",
        "-t",
        "population",
        "-e",
        "good.safetensors",
        "--model",
        "mlp",
        "--hidden",
        "8",
        "--max-epochs",
        "3",
        "--patience",
        "2",
        "--lr",
        "0.01",
        "--weight-decay",
        "0",
        "--no-plots",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads((data["tmp"] / "probe" / "population" / "report.json").read_text())
    assert (
        report["model"]["layers"] == "D->8->1"
        and report["model"]["max_epochs"] == 3
        and report["model"]["patience"] == 2
    )
    assert report["model"]["optimizer"] == "adam lr 0.01 weight_decay 0"
    assert all(f["epochs"] <= 3 for f in report["results"][0]["folds"])
    ridge = cli("probe", "-t", "population", "-e", "good.safetensors", "--hidden", "8", "-o", "other")
    assert ridge.exit_code == 2 and "--hidden is for --model mlp" in ridge.stderr and ridge.stdout == ""
    ridge = cli("probe", "-t", "population", "-e", "good.safetensors", "--model", "ridge", "--lr", "0.1", "-o", "other")
    assert ridge.exit_code == 2 and "--lr is for --model mlp" in ridge.stderr and ridge.stdout == ""


def test_cli_json(cli, data, monkeypatch):
    monkeypatch.chdir(data["tmp"])
    result = cli("probe", "-t", "all", "-e", "good.safetensors", "--json", "--no-plots")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["out"] == str(Path("probe") / "all")
    assert {r["target"] for r in payload["table"]} == {"carbon", "population"}
    assert payload["plots"] == {}


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["--labels", "nowhere"], 3, "labels artifact not found"),
        (["-e", "missing.safetensors"], 3, "embeddings artifact not found"),
        (["--target", "carbn"], 2, "did you mean"),
        (["--split", "blocks"], 2, "transfer:A->B"),
        (["--split", "spatial", "--block-km", "100"], 2, "spatial block"),
        (["--folds", "1"], 2, "--folds"),
        (["--model", "forest"], 2, "forest"),
        (["--alphas", "1,x"], 2, "--alphas"),
        (["-e", "other.safetensors"], 3, "0 matched"),
    ],
)
def test_cli_errors(cli, data, monkeypatch, args, code, words):
    monkeypatch.chdir(data["tmp"])
    write_embeddings(data["tmp"] / "other.safetensors", data["X"], [f"x{i}" for i in range(len(data["X"]))])
    base = ["probe", "-t", "carbon", "-e", "good.safetensors"]
    result = cli(*base, *args)
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and "hint: " in result.stderr
    assert words in result.stderr
    assert not (data["tmp"] / "probe").exists()


def test_cli_refuses_to_overwrite(cli, data, monkeypatch):
    monkeypatch.chdir(data["tmp"])
    assert cli("probe", "-t", "population", "-e", "good.safetensors", "--no-plots").exit_code == 0
    again = cli("probe", "-t", "population", "-e", "good.safetensors", "--no-plots")
    assert again.exit_code == 1 and again.stdout == "" and "--overwrite" in again.stderr
    assert cli("probe", "-t", "population", "-e", "good.safetensors", "--no-plots", "--overwrite").exit_code == 0


def test_manifest_records_resolved_values_of_the_head_that_ran(cli, data, monkeypatch):
    monkeypatch.chdir(data["tmp"])
    assert cli("probe", "-t", "population", "-e", "good.safetensors", "--no-plots").exit_code == 0
    params = json.loads((data["tmp"] / "probe" / "population" / "urbanln.json").read_text())["params"]
    # options left out are None on the command line; the manifest records what ran
    assert params["model"] == {"value": "linear", "source": "default"}
    assert params["split"] == {"value": "auto", "source": "default"}
    assert params["block_km"] == {"value": 2.0, "source": "default"}
    assert params["alphas"] == {"value": list(DEFAULT_ALPHAS), "source": "default"}
    assert params["embeddings"] == {"value": ["good.safetensors"], "source": "flag"}
    # only the options of the task and head that ran
    for name in (
        "mask",
        "tiles",
        "arch",
        "pretrained",
        "baseline",
        "epochs",
        "batch_size",
        "device",
        "hidden",
        "max_epochs",
        "patience",
        "lr",
        "weight_decay",
        "as_json",
    ):
        assert name not in params, name
    assert (
        cli(
            "probe",
            "-t",
            "population",
            "-e",
            "good.safetensors",
            "--model",
            "mlp",
            "--max-epochs",
            "3",
            "--lr",
            "0.01",
            "--no-plots",
            "-o",
            "mlp",
        ).exit_code
        == 0
    )
    params = json.loads((data["tmp"] / "mlp" / "urbanln.json").read_text())["params"]
    assert params["model"] == {"value": "mlp", "source": "flag"}
    assert params["lr"] == {"value": 0.01, "source": "flag"}
    assert params["weight_decay"] == {"value": 1e-4, "source": "default"}  # the MLP's default
    assert "cs" not in params
    assert params["max_epochs"] == {"value": 3, "source": "flag"} and params["hidden"] == {
        "value": 256,
        "source": "default",
    }
    assert "alphas" not in params and "epochs" not in params


@pytest.mark.parametrize(
    "args, env, words",
    [
        ([], {"URBANLN_PROBE_HIDDEN": "8"}, "URBANLN_PROBE_HIDDEN (--hidden) is for --model mlp"),
        (["--lr", "0.1"], {}, "--lr is for --model mlp"),
        (["--model", "mlp"], {"URBANLN_PROBE_ALPHAS": "1,2"}, "URBANLN_PROBE_ALPHAS (--alphas) is for --model linear"),
        (["--model", "mlp", "--cs", "1,2"], {}, "--cs is for --model linear"),
    ],
)
def test_options_of_another_task_from_the_environment_are_refused(cli, data, monkeypatch, args, env, words):
    monkeypatch.chdir(data["tmp"])
    result = cli("probe", "-t", "population", "-e", "good.safetensors", "--no-plots", *args, env=env)
    assert result.exit_code == 2 and result.stdout == ""
    assert words in result.stderr
    for variable in env:
        assert f"unset {variable}" in result.stderr
    assert not (data["tmp"] / "probe").exists()


def test_options_of_another_task_in_the_config_file_are_left_out(cli, data, monkeypatch):
    # one [probe] table may hold settings for both tasks and both heads: the run uses its own, and records only those
    monkeypatch.chdir(data["tmp"])
    (data["tmp"] / "urbanln.toml").write_text('[probe]\nhidden = 8\nlr = 0.05\nsplit = "spatial"\nblock-km = 0.8\n')
    result = cli("--config", "urbanln.toml", "probe", "-t", "population", "-e", "good.safetensors", "--no-plots")
    assert result.exit_code == 0, result.stderr
    params = json.loads((data["tmp"] / "probe" / "population" / "urbanln.json").read_text())["params"]
    assert params["split"] == {"value": "spatial", "source": "config"}
    assert not {"hidden", "lr"} & set(params)
    report = json.loads((data["tmp"] / "probe" / "population" / "report.json").read_text())
    assert report["model"]["kind"] == "ridge"
    # with --model mlp the config's hidden and lr take part
    result = cli(
        "--config",
        "urbanln.toml",
        "probe",
        "-t",
        "population",
        "-e",
        "good.safetensors",
        "--no-plots",
        "--model",
        "mlp",
        "--max-epochs",
        "2",
        "-o",
        "mlp",
    )
    assert result.exit_code == 0, result.stderr
    params = json.loads((data["tmp"] / "mlp" / "urbanln.json").read_text())["params"]
    assert params["hidden"] == {"value": 8, "source": "config"} and params["lr"] == {"value": 0.05, "source": "config"}
    assert (
        json.loads((data["tmp"] / "mlp" / "report.json").read_text())["model"]["optimizer"]
        == "adam lr 0.05 weight_decay 0.0001"
    )


def test_probe_has_one_job_and_one_default_per_option(cli):
    import dataclasses

    import typer.main

    from urbanln_cli.cli import app

    params = {p.name: p for p in typer.main.get_command(app).commands["probe"].params}
    # segmentation lives in `urbanln evaluate segmentation`
    assert not {"task", "mask", "tiles", "epochs", "device", "arch", "pretrained", "baseline"} & set(params)
    defaults = {f.name: f.default for f in dataclasses.fields(ProbeConfig)}
    for name in ("model", "split", "folds", "block_km", "buffer_km", "lr", "weight_decay", "hidden", "seed"):
        assert params[name].default == defaults[name], name
    assert params["lr"].default == 1e-3
    result = cli("probe", "--task", "segmentation")
    assert result.exit_code == 2 and "--task" in result.stderr
