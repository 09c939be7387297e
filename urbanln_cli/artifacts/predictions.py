"""A probe's out-of-fold predictions: ``probe/<target>/predictions.parquet``, read back checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from urbanln_cli.artifacts.manifests import PRODUCERS, check_artifact
from urbanln_cli.errors import InputError

PREDICTIONS_FILE = "predictions.parquet"
PREDICTION_COLUMNS = ("tile_id", "y_pred")  # target, embeddings, fold and y_true are read when there


def probe_folder(path: Path | str) -> Path:
    """The probe folder of ``path``: the folder itself, or the one holding its predictions.parquet."""
    path = Path(path)
    return path.parent if path.name == PREDICTIONS_FILE and path.is_file() else path


def read_predictions(path: Path | str) -> tuple[Any, dict[str, Any]]:
    """(pyarrow Table, manifest) of a probe folder's predictions (``path``: the folder or the file)."""
    import pyarrow.parquet as pq

    folder = probe_folder(path)
    manifest = check_artifact(folder, "probe")
    file = folder / PREDICTIONS_FILE
    if not file.is_file():
        raise InputError(
            f"{folder} has no {PREDICTIONS_FILE} (a segmentation probe keeps no per-tile predictions)",
            hint=f"export a regression or classification probe, made with `{PRODUCERS['probe']}`",
        )
    try:
        table = pq.read_table(str(file))
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise InputError(f"cannot read {file}: {exc}", hint=f"re-create it with `{PRODUCERS['probe']}`") from None
    missing = [c for c in PREDICTION_COLUMNS if c not in table.column_names]
    if missing:
        raise InputError(
            f"{file} lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
            hint=f"re-create it with `{PRODUCERS['probe']}`",
        )
    return table, manifest
