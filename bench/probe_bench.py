"""Benchmark `urbanln probe` (5-fold spatial CV): ridge against RidgeCV, and the classification probe against
LogisticRegressionCV, on the same folds, in one process.

Data: 100,000 tiles on a grid (~32 km across) with 512-d embeddings. A 32-d latent
drives the embeddings (through a random mixing matrix, plus noise), a numeric target
(linearly, plus noise; a linear probe should find R² ≈ 0.8) and an 8-class target
(the argmax of linear scores plus Gumbel noise).

Ours: ``evaluate`` end to end from the files on disk: read the safetensors and
labels, join by tile id, spatial blocks of 2 km, GroupKFold, then ridge (alpha by
5-fold inner CV over spatial blocks, 19 alphas) or logistic regression (C by 5-fold
inner CV over spatial blocks, 7 Cs), metrics per fold and pooled.
Baselines: the plainest code doing the same outer work on arrays already in memory,
per outer fold: ``make_pipeline(StandardScaler(), RidgeCV(alphas))`` (alpha by efficient
leave-one-out) and ``make_pipeline(StandardScaler(), LogisticRegressionCV(Cs, cv=the same
inner folds, scoring="neg_log_loss"))``. Same outer folds, same alphas and Cs.
LogisticRegressionCV is slow at this size, so by default it runs on the first
``--baseline-folds 1`` outer fold(s) only, and the ratio compares it with ours on the
same folds (ours timed again with ``only`` those folds).

    python bench/probe_bench.py                 # 100,000 × 512
    python bench/probe_bench.py --rows 20000    # quicker

Prints seconds, scores and the ratios (baseline / ours).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CLASSES = 8
sys.path.insert(0, str(ROOT))


def make_data(workdir: Path, rows: int, dim: int, seed: int = 0) -> tuple[Path, Path]:
    """Embeddings and labels on disk (kept between runs of the same size)."""
    import datasets

    from urbanln_cli import artifacts

    emb_path, labels_path = workdir / f"probe_emb_{rows}x{dim}.safetensors", workdir / f"probe_labels_{rows}_v2"
    if emb_path.exists() and labels_path.exists():
        return emb_path, labels_path
    shutil.rmtree(labels_path, ignore_errors=True)
    emb_path.unlink(missing_ok=True)
    rng = np.random.default_rng(seed)
    side = math.ceil(math.sqrt(rows))
    r, c = np.divmod(np.arange(rows), side)
    latent = rng.standard_normal((rows, 32), dtype=np.float32)
    mixing = rng.standard_normal((32, dim), dtype=np.float32) / np.sqrt(32)
    X = latent @ mixing + 0.5 * rng.standard_normal((rows, dim), dtype=np.float32)
    y = 100.0 + 10.0 * (latent @ rng.normal(size=32).astype(np.float32)) / np.sqrt(32) + 5.0 * rng.standard_normal(rows)
    scores = latent @ rng.normal(size=(32, CLASSES)).astype(np.float32) / np.sqrt(32) * 3
    landuse = (scores + rng.gumbel(size=(rows, CLASSES))).argmax(axis=1)
    ids = [f"bench/r{i}_c{j}" for i, j in zip(r, c)]
    run = artifacts.RunInfo("bench/probe_bench.py")
    artifacts.write_tensors(
        emb_path,
        {"embeddings": X},
        artifacts.new_manifest("embeddings", run=run, inputs=[], rows=rows),
        metadata={"tile_ids": ids},
    )
    ds = datasets.Dataset.from_dict(
        {
            "tile_id": ids,
            "lon": (116.0 + 0.001 * c).tolist(),
            "lat": (39.8 + 0.0009 * r).tolist(),
            "group": ["bench"] * rows,
            "carbon": y.astype(np.float64).tolist(),
            "landuse": [f"class_{c}" for c in landuse],
        },
        features=datasets.Features(
            {
                "tile_id": datasets.Value("string"),
                "lon": datasets.Value("float64"),
                "lat": datasets.Value("float64"),
                "group": datasets.Value("string"),
                "carbon": datasets.Value("float64"),
                "landuse": datasets.Value("string"),
            }
        ),
    )
    artifacts.write_dataset(ds, labels_path, artifacts.new_manifest("labels", run=run, inputs=[], rows=rows))
    return emb_path, labels_path


def ours(emb: Path, labels: Path, target: str, block_km: float, folds: int):
    from urbanln_cli.stages.probe import ProbeConfig, evaluate

    start = time.perf_counter()
    result = evaluate(
        ProbeConfig(
            target=target,
            embeddings=(emb,),
            labels=labels,
            split="spatial",
            block_km=block_km,
            folds=folds,
            log_target="no",
            plots=False,
        )
    )
    return time.perf_counter() - start, result


def arrays(emb: Path, labels: Path, block_km: float, folds: int):
    import datasets
    from safetensors.numpy import load_file

    from urbanln_cli.evaluation import splits

    X = load_file(str(emb))["embeddings"]
    frame = datasets.load_from_disk(str(labels)).to_pandas()
    blocks = splits.spatial_blocks(frame["lon"].to_numpy(), frame["lat"].to_numpy(), block_km)
    return X, frame, blocks, splits.group_k_folds(blocks, folds)


def ridge_baseline(X, frame, fold, folds: int, threads: int | None = None):
    """The plainest version: sklearn RidgeCV in a pipeline, per fold. Loading and fold making are not timed.

    ``threads``: limit BLAS to this many threads (None: the library default, as a user would run it).
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    from urbanln_cli.evaluation.heads import DEFAULT_ALPHAS

    y = frame["carbon"].to_numpy()
    start = time.perf_counter()
    scores, alphas = [], []
    with threadpool_limits(threads, "blas"):
        for k in range(folds):
            train, test = fold != k, fold == k
            model = make_pipeline(StandardScaler(), RidgeCV(alphas=DEFAULT_ALPHAS)).fit(X[train], y[train])
            scores.append(r2_score(y[test], model.predict(X[test])))
            alphas.append(float(model[-1].alpha_))
    return time.perf_counter() - start, float(np.mean(scores)), alphas


def logistic_baseline(X, frame, blocks, fold, folds: list[int], seed: int = 0):
    """sklearn LogisticRegressionCV in a pipeline on the outer ``folds``, inner folds as ours (spatial blocks)."""
    import warnings

    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from urbanln_cli.evaluation import splits
    from urbanln_cli.evaluation.classify import DEFAULT_CS

    y = frame["landuse"].to_numpy()
    inner = splits.shuffled_unit_folds(blocks, 5, seed + 1)  # as target_plan.inner_units for a spatial split
    start = time.perf_counter()
    accuracy, Cs = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for k in folds:
            train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
            cv = [(np.flatnonzero(inner[train] != j), np.flatnonzero(inner[train] == j)) for j in range(5)]
            model = make_pipeline(
                StandardScaler(), LogisticRegressionCV(Cs=list(DEFAULT_CS), cv=cv, scoring="neg_log_loss")
            ).fit(X[train], y[train])
            accuracy.append(float((model.predict(X[test]) == y[test]).mean()))
            Cs.append(float(np.ravel(model[-1].C_)[0]))
    return time.perf_counter() - start, accuracy, Cs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--block-km", type=float, default=2.0)
    parser.add_argument("--baseline-folds", type=int, default=1, help="outer folds LogisticRegressionCV runs on")
    parser.add_argument(
        "--single-thread-baseline",
        action="store_true",
        help="also time the RidgeCV baseline with BLAS limited to one thread (as ours limits its p × p LAPACK work)",
    )
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    emb, labels = make_data(args.workdir, args.rows, args.dim)
    print(f"data: {args.rows} × {args.dim} ({time.perf_counter() - t0:.1f} s to make or find)", file=sys.stderr)
    ridge_s, ridge = ours(emb, labels, "carbon", args.block_km, args.folds)
    logistic_s, logistic = ours(emb, labels, "landuse", args.block_km, args.folds)
    X, frame, blocks, fold = arrays(emb, labels, args.block_km, args.folds)
    base_s, base_r2, base_alphas = ridge_baseline(X, frame, fold, args.folds)
    one_s = ridge_baseline(X, frame, fold, args.folds, threads=1)[0] if args.single_thread_baseline else math.nan
    some = list(range(min(args.baseline_folds, args.folds)))
    # ours on the same outer folds as the logistic baseline, from arrays in memory like it
    from urbanln_cli.evaluation import splits
    from urbanln_cli.evaluation.classify import logistic_cv

    codes = np.unique(frame["landuse"].to_numpy(), return_inverse=True)[1]
    inner = splits.shuffled_unit_folds(blocks, 5, 1)
    start = time.perf_counter()
    part_pred, part_records = logistic_cv(X, codes, fold, inner, only=set(some))
    part_s = time.perf_counter() - start
    part_acc = [float((part_pred[fold == k] == codes[fold == k]).mean()) for k in some]
    lbase_s, lbase_acc, lbase_Cs = logistic_baseline(X, frame, blocks, fold, some)

    ridge_row, logistic_row = ridge.table[0], logistic.table[0]
    report = {
        "rows": args.rows,
        "dim": args.dim,
        "split": f"spatial, {args.folds} folds, {args.block_km:g} km blocks "
        f"({ridge.report['targets_info']['carbon']['folds']['blocks']} blocks)",
        "cpus": os.cpu_count(),
        "load_average_1m_at_start": round(load, 2),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "ridge": {
            "ours_s": round(ridge_s, 2),
            "ours_r2_pooled": round(ridge_row["r2_pooled"], 4),
            "ours_r2_mean": round(ridge_row["r2_mean"], 4),
            "ours_alphas": [f["alpha"] for f in ridge.runs[0].folds],
            "baseline_RidgeCV_s": round(base_s, 2),
            "baseline_r2_mean": round(base_r2, 4),
            "baseline_alphas": base_alphas,
            "ratio_baseline_over_ours": round(base_s / ridge_s, 2),
            "baseline_1_blas_thread_s": round(one_s, 2),
        },
        "logistic": {
            "classes": CLASSES,
            "ours_s": round(logistic_s, 2),
            "ours_accuracy_pooled": round(logistic_row["accuracy_pooled"], 4),
            "ours_accuracy_mean": round(logistic_row["accuracy_mean"], 4),
            "ours_Cs": [f["C"] for f in logistic.runs[0].folds],
            "baseline_folds": some,
            "ours_on_those_folds_s": round(part_s, 2),
            "ours_on_those_folds_accuracy": part_acc,
            "ours_on_those_folds_Cs": [r["C"] for r in part_records],
            "baseline_LogisticRegressionCV_s": round(lbase_s, 2),
            "baseline_accuracy": lbase_acc,
            "baseline_Cs": lbase_Cs,
            "ratio_baseline_over_ours": round(lbase_s / part_s, 2),
        },
        "note": "ours (full) is timed end to end from disk (read, join, split, inner CV, fit, metrics); the baselines "
        "and 'ours_on_those_folds' only their fit/predict loop on arrays in memory",
    }
    print(json.dumps(report, indent=2))
    print(
        f"ridge: ours {ridge_s:.2f} s (pooled R² {ridge_row['r2_pooled']:.4f}), RidgeCV loop {base_s:.2f} s "
        f"(R² {base_r2:.4f}): {base_s / ridge_s:.2f}×\n"
        f"logistic: ours {logistic_s:.2f} s for {args.folds} folds (pooled accuracy "
        f"{logistic_row['accuracy_pooled']:.4f}); on fold(s) {some}: ours {part_s:.2f} s, LogisticRegressionCV "
        f"{lbase_s:.2f} s: {lbase_s / part_s:.2f}×",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
