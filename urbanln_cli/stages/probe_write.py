"""Writing the probe folder: report.json, predictions.parquet, the plots and the manifest, staged then renamed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from urbanln_cli import artifacts
from urbanln_cli.evaluation import metrics


def safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name)


def predictions_frame(result):
    """One row per scored tile × target × embeddings; class names in class_true/class_pred for class targets."""
    import pandas as pd

    ids = result.labels["tile_id"].to_numpy()
    any_class = any(r.kind == "classification" for r in result.runs)
    frames = []
    for r in result.runs:
        part = {
            "tile_id": ids[r.rows],
            "target": r.target,
            "embeddings": r.embeddings,
            "fold": r.fold.astype(np.int64),
        }
        if r.kind == "classification":
            names = np.asarray(r.classes + ("",), object)  # -1 (no prediction) reads as ""
            part |= {
                "y_true": np.full(len(r.rows), np.nan),
                "y_pred": np.full(len(r.rows), np.nan),
                "class_true": names[r.y_true],
                "class_pred": names[r.y_pred],
            }
        else:
            part |= {"y_true": r.y_true, "y_pred": r.y_pred}
            if any_class:
                part |= {"class_true": None, "class_pred": None}
        frames.append(pd.DataFrame(part))
    return pd.concat(frames, ignore_index=True)


def write(config, out: Path, result, run: artifacts.RunInfo):
    """The folder for an ``Evaluation``; returns the ``ProbeResult``'s parts (report, plots, manifest)."""
    predictions = predictions_frame(result)
    report = dict(result.report)
    plots: dict[str, dict[str, str]] = {}
    with artifacts.staged_dir(out, config.overwrite) as staging:
        predictions.to_parquet(staging / "predictions.parquet", index=False)
        if config.plots:
            plots = _plots(staging, result)
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
    return report, plots, manifest


def _plots(staging: Path, result) -> dict[str, dict[str, str]]:
    from urbanln_cli.evaluation import plots as plotting

    labels = result.labels
    lon, lat = labels["lon"].to_numpy(np.float64), labels["lat"].to_numpy(np.float64)
    several = len({r.embeddings for r in result.runs}) > 1
    plots: dict[str, dict[str, str]] = {}
    for target in result.report["targets"]:
        runs = [r for r in result.runs if r.target == target]
        files: dict[str, str] = {}
        if runs[0].kind == "classification":
            for r in runs:
                name = f"confusion_{safe(target)}" + (f"_{safe(r.embeddings)}" if several else "") + ".png"
                title = (
                    f"{target} · {r.embeddings}: accuracy {r.pooled['accuracy']:.3f} "
                    f"(folds {r.metrics['accuracy']['mean']:.3f} ± {r.metrics['accuracy']['std']:.3f})"
                )
                plotting.confusion_figure(staging / name, r.confusion(), list(r.classes), title)
                files[f"confusion_{r.embeddings}" if several else "confusion"] = name
            plots[target] = files
            continue
        log_scale = result.log_targets[target]
        scatter = f"scatter_{safe(target)}.png"
        plotting.scatter_figure(
            staging / scatter,
            [
                (
                    r.embeddings,
                    r.y_true,
                    r.y_pred,
                    f"R2 {r.pooled['r2']:.3f} (folds {r.metrics['r2']['mean']:.3f} ± {r.metrics['r2']['std']:.3f})",
                )
                for r in runs
            ],
            target,
            log_scale=log_scale,
        )
        files["scatter"] = scatter
        rows = np.unique(np.concatenate([r.rows for r in runs]))
        if np.isfinite(lon[rows]).any() and np.isfinite(lat[rows]).any():
            panel_rows: list[tuple[str, Any, Any]] = []
            for r in runs:
                y_true = labels[target].to_numpy(np.float64)[rows]
                y_pred = np.full(len(rows), np.nan)
                y_pred[np.searchsorted(rows, r.rows)] = r.y_pred
                panel_rows.append((r.embeddings, y_true, y_pred))
            name = f"map_{safe(target)}.png"
            plotting.map_figure(staging / name, lon[rows], lat[rows], panel_rows, target, log_scale=log_scale)
            files["map"] = name
        plots[target] = files
    return plots
