"""Benchmark `urbanln probe` (ridge, 5-fold spatial CV) against scikit-learn's RidgeCV in a loop.

Data: 100,000 tiles on a grid (~32 km across) with 512-d embeddings. A 32-d latent
drives both the embeddings (through a random mixing matrix, plus noise) and the
target (linearly, plus noise), so a linear probe should find R² ≈ 0.8.

Ours: ``evaluate`` end to end from the files on disk: read the safetensors and
labels, join by tile id, spatial blocks of 2 km, GroupKFold, ridge with alpha
chosen by 5-fold inner CV over spatial blocks (19 alphas), metrics per fold.
Baseline: the plainest code doing the same outer work on arrays already in memory:
``make_pipeline(StandardScaler(), RidgeCV(alphas))`` fitted per outer fold (RidgeCV
picks alpha by efficient leave-one-out, not by blocks). Same folds, same alphas.

    python bench/probe_bench.py                 # 100,000 × 512
    python bench/probe_bench.py --rows 20000    # quicker

Prints seconds, R² and the ratio (baseline / ours).
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
sys.path.insert(0, str(ROOT))


def make_data(workdir: Path, rows: int, dim: int, seed: int = 0) -> tuple[Path, Path]:
    """Embeddings and labels on disk (kept between runs of the same size)."""
    import datasets

    from urbanln_cli import artifacts

    emb_path, labels_path = workdir / f"probe_emb_{rows}x{dim}.safetensors", workdir / f"probe_labels_{rows}"
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
        },
        features=datasets.Features(
            {
                "tile_id": datasets.Value("string"),
                "lon": datasets.Value("float64"),
                "lat": datasets.Value("float64"),
                "group": datasets.Value("string"),
                "carbon": datasets.Value("float64"),
            }
        ),
    )
    artifacts.write_dataset(ds, labels_path, artifacts.new_manifest("labels", run=run, inputs=[], rows=rows))
    return emb_path, labels_path


def ours(emb: Path, labels: Path, block_km: float, folds: int):
    from urbanln_cli.stages.probe import ProbeConfig, evaluate

    start = time.perf_counter()
    result = evaluate(
        ProbeConfig(
            target="carbon",
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


def baseline(emb: Path, labels: Path, block_km: float, folds: int, threads: int | None = None):
    """The plainest version: sklearn RidgeCV in a pipeline, per fold. Loading and fold making are not timed.

    ``threads``: limit BLAS to this many threads (None: the library default, as a user would run it).
    """
    import datasets
    from safetensors.numpy import load_file
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    from urbanln_cli.evaluation import splits
    from urbanln_cli.evaluation.heads import DEFAULT_ALPHAS

    X = load_file(str(emb))["embeddings"]
    frame = datasets.load_from_disk(str(labels)).to_pandas()
    y = frame["carbon"].to_numpy()
    fold = splits.group_k_folds(
        splits.spatial_blocks(frame["lon"].to_numpy(), frame["lat"].to_numpy(), block_km), folds
    )
    start = time.perf_counter()
    scores, alphas = [], []
    with threadpool_limits(threads, "blas"):
        for k in range(folds):
            train, test = fold != k, fold == k
            model = make_pipeline(StandardScaler(), RidgeCV(alphas=DEFAULT_ALPHAS)).fit(X[train], y[train])
            scores.append(r2_score(y[test], model.predict(X[test])))
            alphas.append(float(model[-1].alpha_))
    return time.perf_counter() - start, float(np.mean(scores)), alphas, fold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--block-km", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of ours; the best is kept")
    parser.add_argument(
        "--single-thread-baseline",
        action="store_true",
        help="also time the baseline with BLAS limited to one thread (as ours limits its p × p LAPACK work)",
    )
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    emb, labels = make_data(args.workdir, args.rows, args.dim)
    print(f"data: {args.rows} × {args.dim} ({time.perf_counter() - t0:.1f} s to make or find)", file=sys.stderr)
    best, result = min((ours(emb, labels, args.block_km, args.folds) for _ in range(args.repeats)), key=lambda x: x[0])
    row = result.table[0]
    folds_ours = result.report["results"][0]["folds"]
    base_s, base_r2, base_alphas, _ = baseline(emb, labels, args.block_km, args.folds)
    one_s, one_r2, _, _ = (
        baseline(emb, labels, args.block_km, args.folds, threads=1)
        if args.single_thread_baseline
        else (math.nan, math.nan, None, None)
    )
    report = {
        "rows": args.rows,
        "dim": args.dim,
        "split": f"spatial, {args.folds} folds, {args.block_km:g} km blocks "
        f"({result.report['targets_info']['carbon']['folds']['blocks']} blocks)",
        "cpus": os.cpu_count(),
        "load_average_1m_at_start": round(load, 2),
        "ours_s": round(best, 2),
        "ours_r2": round(row["r2_mean"], 4),
        "ours_r2_std": round(row["r2_std"], 4),
        "ours_alphas": [f["alpha"] for f in folds_ours],
        "baseline_s": round(base_s, 2),
        "baseline_r2": round(base_r2, 4),
        "baseline_alphas": base_alphas,
        "ratio_baseline_over_ours": round(base_s / best, 2),
        "baseline_1_blas_thread_s": round(one_s, 2),
        "ratio_baseline_1_thread_over_ours": round(one_s / best, 2),
        "note": "ours is timed end to end from disk (read, join, split, inner CV, fit, metrics); the baseline only "
        "its fit/predict loop on arrays in memory",
    }
    print(json.dumps(report, indent=2))
    print(
        f"ours {best:.2f} s (R² {row['r2_mean']:.4f}), RidgeCV loop {base_s:.2f} s (R² {base_r2:.4f}): "
        f"{base_s / best:.2f}× faster"
        + (f"; RidgeCV on 1 BLAS thread {one_s:.2f} s: {one_s / best:.2f}×" if args.single_thread_baseline else ""),
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
