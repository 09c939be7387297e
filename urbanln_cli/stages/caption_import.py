"""Stage ``caption`` with ``--import``: captions made elsewhere (CSV, JSON lines, …) as a captions artifact.

No model runs: rows are matched to the tiles, checked and written as one row per (tile, candidate).
``caption`` hands a run with ``config.imports`` to ``import_captions`` here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from urbanln_cli import artifacts, manifest_fields
from urbanln_cli.errors import InputError, OutputExistsError
from urbanln_cli.stages.caption import (
    IMPORT_PROMPT_ID,
    MOST_UNMATCHED,
    CaptionConfig,
    CaptionResult,
    caption_features,
)


def import_captions(
    config: CaptionConfig, progress: Callable[..., None], run: artifacts.RunInfo | None
) -> CaptionResult:
    """Captions made elsewhere (``config.imports``) as a captions artifact: one row per (tile, candidate).

    Rows are matched to the tiles of ``config.tiles`` (or keep the files' ids when it is None).
    Several rows of one tile become several candidates; when a model (the ``model`` column, or
    the file's stem) has several rows for one tile anywhere, every row of that model is named
    ``model#k``, k counting that tile's rows of the model in file order, so each stays a candidate.
    """
    from urbanln_cli.captioners import imported

    tiles_manifest, order, image_sha, index = None, None, {}, None
    if config.tiles is not None:
        if not Path(config.tiles).exists():
            raise InputError(
                f"tiles artifact not found: {config.tiles}",
                hint="tile the imagery the captions describe with `urbanln tile`, or pass --no-tiles to keep "
                "the file's ids (fuse then needs --gsd)",
            )
        tiles_ds, tiles_manifest = artifacts.read_dataset(config.tiles, "tiles")
        columns = tiles_ds.column_names
        ids = tiles_ds.data.column("tile_id").to_pylist()
        sources = tiles_ds.data.column("source").to_pylist() if "source" in columns else [None] * len(ids)
        if "image_sha256" in columns:
            image_sha = dict(zip(ids, tiles_ds.data.column("image_sha256").to_pylist()))
        order = {t: i for i, t in enumerate(ids)}
        index = imported.TileIndex(ids, sources)
    files = []
    for n, path in enumerate(config.imports):
        progress(n, len(config.imports), description="reading")
        file = imported.read_file(path)
        imported.match(file, index)
        files.append(file)
        _refuse_unmatched(file, index, config)
    progress(len(files), len(files), description="reading")

    plan = {
        "files": [f.sha256 for f in files],
        "tiles": manifest_fields.field(tiles_manifest, config.tiles, "artifact_id", str)
        if tiles_manifest is not None
        else None,
        "trusted": config.trusted,
    }
    plan_sha = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()
    if config.out.exists():
        existing = artifacts.check_artifact(config.out, "captions")
        if existing.get("plan_sha256") == plan_sha and existing.get("prompt", {}).get("id") == IMPORT_PROMPT_ID:
            rows = manifest_fields.field(existing, config.out, "rows", int, required=True)
            counts = manifest_fields.field(existing, config.out, "counts", dict, {})
            return CaptionResult(config.out, rows, counts, True, existing)
        if not config.overwrite:
            raise OutputExistsError(f"{config.out} holds other captions than these imports")

    # (tile, model) -> [(file, row)] in file order
    entries: dict[tuple[str, str], list[tuple[Any, Any]]] = {}
    for file in files:
        for row, tile in zip(file.rows, file.tiles):
            if tile is not None:
                entries.setdefault((tile, row.model or file.default_model), []).append((file, row))
    if not entries:
        raise InputError(
            "no caption to import: every matched row is empty",
            hint="check the caption column of " + ", ".join(str(p) for p in config.imports),
        )
    several = {model for (_, model), found in entries.items() if len(found) > 1}
    first_seen = {tile: n for n, (tile, _) in enumerate(entries)}
    rank = order if order is not None else first_seen
    records = []
    for (tile, model), found in sorted(
        entries.items(), key=lambda kv: rank[kv[0][0]]
    ):  # stable: file order within a tile
        for k, (file, row) in enumerate(found, 1):
            records.append(
                {
                    "tile_id": tile,
                    "model": f"{model}#{k}" if model in several else model,
                    "model_digest": file.digest,
                    "prompt_id": IMPORT_PROMPT_ID,
                    "prompt_sha256": None,
                    "options_sha256": None,
                    "image_sha256": image_sha.get(tile),
                    "caption": row.caption,
                    "error": None,
                    "error_class": None,
                    "attempts": 0,
                    "latency_s": 0.0,
                    "prompt_tokens": None,
                    "output_tokens": None,
                    "host": f"import:{file.path.name}",
                    "sentence_labels": None,
                    "trusted": config.trusted,
                }
            )

    import datasets

    features = caption_features(trusted=True)
    ds = datasets.Dataset.from_dict({name: [r[name] for r in records] for name in features}, features=features)
    models: dict[str, dict[str, Any]] = {}
    for r in records:
        entry = models.setdefault(r["model"], {"digest": r["model_digest"], "capabilities": [], "files": []})
        if r["host"].removeprefix("import:") not in entry["files"]:
            entry["files"].append(r["host"].removeprefix("import:"))
    captioned = len({r["tile_id"] for r in records})
    total = {k: sum(f.counts.get(k, 0) for f in files) for k in ("unmatched", "ambiguous", "empty")}
    counts = {
        "captions": len(records),
        "failed": 0,
        "reused": 0,
        "rows_read": sum(len(f.rows) for f in files),
        "unmatched_rows": total["unmatched"],
        "ambiguous_rows": total["ambiguous"],
        "empty_rows": total["empty"],
        "tiles_captioned": captioned,
    }
    if order is not None:
        counts["tiles_without_captions"] = len(order) - captioned
    counts = {k: v for k, v in counts.items() if v or k in ("captions", "failed", "reused")}
    inputs = [f.summary() for f in files]
    if tiles_manifest is not None:
        inputs.insert(
            0,
            {
                "path": str(config.tiles),
                "stage": "tiles",
                "artifact_id": manifest_fields.field(tiles_manifest, config.tiles, "artifact_id", str),
            },
        )
    manifest = artifacts.new_manifest(
        "captions",
        run=run or artifacts.RunInfo.from_config(config),
        inputs=inputs,
        rows=len(records),
        counts=counts,
        models=models,
        extra={
            "trusted": config.trusted,
            "hosts": [],
            "prompt": {"id": IMPORT_PROMPT_ID, "sha256": None, "text": None},
            "options": {},
            "shard": "0/1",
            "tiles": captioned,
            "plan_sha256": plan_sha,
            "scheduling": "imported: captions made elsewhere, no model was run",
            "scene": None,
            "import": {
                "ids": "matched to tiles" if index is not None else "as given (no tiles)",
                "several_rows": "several rows of one tile and model become model#1, model#2, … (file order)",
            },
        },
    )
    artifacts.write_dataset(ds, config.out, manifest, overwrite=True)  # the plan check above guards real overwrites
    warnings = []
    for file in files:
        lost = file.counts["unmatched"] + file.counts["ambiguous"]
        if lost:
            what = "match no tile" if not file.counts["ambiguous"] else "match no tile or several"
            warnings.append(
                f"{lost} of {len(file.rows)} rows of {file.path} {what}, left out (e.g. "
                f"{', '.join(file.unmatched_examples[:3])})"
            )
        if file.counts["empty"]:
            warnings.append(f"{file.counts['empty']} rows of {file.path} have an empty caption, left out")
    return CaptionResult(config.out, len(records), counts, False, manifest, warnings)


def _refuse_unmatched(file, index, config: CaptionConfig) -> None:
    """A file most of whose rows match no tile names other tiles, or names them another way: exit 3."""
    lost = file.counts["unmatched"] + file.counts["ambiguous"]
    if index is None or lost <= MOST_UNMATCHED * len(file.rows):
        return
    theirs = (
        f"{config.tiles} holds tiles like {index.examples[0]!r}" if index.examples else f"{config.tiles} holds no tiles"
    )
    several = (
        f" ({file.counts['ambiguous']} name several tiles: give the path inside the tiled folder)"
        if file.counts["ambiguous"]
        else ""
    )
    raise InputError(
        f"{lost} of {len(file.rows)} rows of {file.path} match no tile in {config.tiles}{several} "
        f"(e.g. {', '.join(file.unmatched_examples[:3])})",
        hint=f"the file names tiles like {file.unmatched_examples[0]}; {theirs}: give tile_id exactly as the tiles "
        "have it, or image as "
        "a path inside the tiled folder or a file name, or pass --no-tiles to keep the file's ids",
    )
