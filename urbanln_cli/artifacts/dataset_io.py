"""Dataset artifacts: ``save_to_disk`` folders with a manifest, written atomically and read back checked."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from urbanln_cli.artifacts import outputs
from urbanln_cli.artifacts.manifests import MANIFEST_NAME, PRODUCERS, check_artifact
from urbanln_cli.artifacts.outputs import remove, staged_dir
from urbanln_cli.errors import InputError, WrongArtifactError

# Columns a reader cannot do without, per stage (readers may ask for more).
REQUIRED_COLUMNS = {
    "tiles": ("tile_id", "image"),
    "labels": ("tile_id",),
    "captions": ("tile_id", "model", "caption"),
    "corpus": ("tile_id", "caption"),
}


def write_dataset(ds, out: Path | str, manifest: Mapping[str, Any], overwrite: bool = False) -> Path:
    """Save a ``datasets.Dataset`` and its manifest atomically under ``out``."""
    import datasets

    out = Path(out)
    datasets.disable_progress_bars()  # our own progress bar is on stderr already
    if ds.num_rows == 0:
        # save_to_disk writes no data file for 0 rows, and load_from_disk then fails: keep one empty file
        import pyarrow as pa

        out.parent.mkdir(parents=True, exist_ok=True)
        empty = out.parent / f".{out.name}.empty-{uuid.uuid4().hex[:8]}.arrow"
        try:
            with pa.OSFile(str(empty), "wb") as sink, pa.ipc.new_stream(sink, ds.features.arrow_schema):
                pass
            return write_sharded_dataset([(empty, 0)], ds.features, out, manifest, overwrite)
        finally:
            remove(empty, "leftover")
    with staged_dir(out, overwrite, manifest.get("stage")) as staging:
        ds.save_to_disk(str(staging))
        outputs.write_json_atomic(staging / MANIFEST_NAME, dict(manifest))
    return out


def write_sharded_dataset(
    shards: list[tuple[Path, int]], features, out: Path | str, manifest: Mapping[str, Any], overwrite: bool = False
) -> Path:
    """Publish finished Arrow shards (path, rows) as a ``save_to_disk`` folder, without copying them.

    Copying through ``save_to_disk`` would re-read and re-write every image: about a
    tenth of tiling time, and memory that grows with the output. Instead datasets
    itself writes the metadata of an empty dataset with these features, the shards
    are hard-linked in as its data files, and ``load_from_disk`` must open the result
    before it is renamed into place.
    """
    import datasets

    out = Path(out)
    datasets.disable_progress_bars()
    with staged_dir(out, overwrite, manifest.get("stage")) as staging:
        datasets.Dataset.from_dict({name: [] for name in features}, features=features).save_to_disk(str(staging))
        state = json.loads((staging / "state.json").read_text(encoding="utf-8"))
        # load_from_disk needs at least one data file, so an empty result keeps one empty shard
        full = [(path, rows) for path, rows in shards if rows] or shards[:1]
        if full:
            for entry in state["_data_files"]:
                remove(staging / entry["filename"], "staged")
            names = [f"data-{i:05d}-of-{len(full):05d}.arrow" for i in range(len(full))]
            for (path, _), name in zip(full, names):
                _link_or_copy(path, staging / name)
            state["_data_files"] = [{"filename": name} for name in names]
        state["_fingerprint"] = manifest["artifact_id"]
        outputs.write_json_atomic(staging / "state.json", state)
        check = datasets.load_from_disk(str(staging))
        expected = sum(rows for _, rows in full)
        if check.num_rows != expected or check.features != features:
            raise RuntimeError(f"sharded dataset check failed: {check.num_rows} rows, expected {expected}")
        del check
        outputs.write_json_atomic(staging / MANIFEST_NAME, dict(manifest))
    return out


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not supported
        shutil.copyfile(src, dst)


def read_dataset(path: Path | str, expect: str, columns: tuple[str, ...] = ()):
    """Open a dataset artifact after checking it is the stage we expect. Returns (dataset, manifest).

    ``columns`` are needed beyond the stage's ``REQUIRED_COLUMNS``; a missing one is an InputError.
    """
    manifest = check_artifact(path, expect)
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises several types for damaged folders
        raise InputError(f"cannot open {expect} dataset {path}: {exc}", hint="re-create the artifact") from None
    if not isinstance(ds, datasets.Dataset):
        raise WrongArtifactError(f"{path} is a DatasetDict, not a {expect} dataset")
    missing = [c for c in (*REQUIRED_COLUMNS.get(expect, ()), *columns) if c not in ds.column_names]
    if missing:
        raise InputError(
            f"{path} lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)} that {expect} have",
            hint=f"re-create it with `{PRODUCERS.get(expect, 'its stage')}`",
        )
    return ds, manifest
