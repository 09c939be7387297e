"""Stage ``export``: embeddings or a probe's predictions, with their tiles, as files a GIS opens.

The output is a folder (an ``export`` artifact) holding:

- ``<kind>.parquet``: GeoParquet 1.1, one row per tile, the tile's footprint polygon
  (its bounds in the tiles' CRS) as WKB, a ``bbox`` covering column, ``tile_id``,
  ``lon``, ``lat``, ``gsd`` and the vector (a list, a fixed-size list or one column per
  dimension) or the predictions; GeoPandas, QGIS and GDAL open it.
- ``<kind>.tif`` with ``cog``: a Cloud-Optimized GeoTIFF with one pixel per tile and one
  float32 band per dimension (or the predictions), for tiles cut from one raster.

``<kind>`` is ``embeddings`` or ``predictions``. A GeoParquet geometry column has one
CRS: tiles in several CRSs are refused unless ``crs`` names one to reproject every
footprint to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from urbanln_cli import artifacts
from urbanln_cli.errors import InputError, UsageProblem, WrongArtifactError
from urbanln_cli.stages import export_tables as tables
from urbanln_cli.stages.export_grid import tile_grid

VECTOR_LAYOUTS = ("list", "fixed", "columns")


@dataclass(frozen=True)
class ExportConfig:
    embeddings: Path | None = None  # an embeddings file; default embeddings.safetensors unless ``predictions``
    predictions: Path | None = None  # a probe folder, or its predictions.parquet
    tiles: Path = Path("tiles")
    out: Path = Path("export")
    crs: str | None = None  # reproject every footprint to this CRS (needed for tiles in several CRSs)
    vector: str = "list"  # list | fixed | columns
    cog: bool = False  # also write the Cloud-Optimized GeoTIFF
    target: str | None = None  # which target of a probe's predictions (when it holds several)
    embeddings_name: str | None = None  # which embeddings of a probe's predictions (when it compared several)
    blocksize: int | None = None  # COG block side; default: by band count (artifacts.cog.cog_blocksize)
    overwrite: bool = False

    def source(self) -> Path:
        """What is exported: the predictions, else the embeddings file."""
        return self.predictions or self.embeddings or Path("embeddings.safetensors")

    def check(self) -> None:
        if self.embeddings is not None and self.predictions is not None:
            raise UsageProblem("give --embeddings or --predictions, not both", hint="export each to its own -o")
        if self.predictions is None and (self.target is not None or self.embeddings_name is not None):
            raise UsageProblem(
                "--target and --embeddings-name pick rows of a probe's predictions, and no --predictions is given",
                hint="add --predictions probe/<target>/, or drop them",
            )
        if self.vector not in VECTOR_LAYOUTS:
            raise UsageProblem(f"--vector {self.vector!r} is not one of {', '.join(VECTOR_LAYOUTS)}")
        if self.crs is not None:
            tables.parse_crs(self.crs)
        if self.blocksize is not None and (self.blocksize < 16 or self.blocksize % 16):
            raise UsageProblem(f"COG block size {self.blocksize} is not a multiple of 16")


@dataclass
class ExportResult:
    out: Path
    kind: str  # embeddings | predictions
    rows: int
    files: dict[str, str]  # geoparquet / cog -> file name in ``out``
    crs: str
    counts: dict[str, int]
    grid: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)


def export(
    config: ExportConfig, progress: Callable[[int, int], None] | None = None, run: artifacts.RunInfo | None = None
) -> ExportResult:
    config.check()
    with artifacts.writing(config.out, "export", overwrite=config.overwrite, inputs=(config.source(), config.tiles)):
        return _export(config, progress or (lambda done, total: None), run or artifacts.RunInfo.from_config(config))


def _export(config: ExportConfig, report: Callable[[int, int], None], run: artifacts.RunInfo) -> ExportResult:
    steps = 3 + config.cog
    report(0, steps)
    source = _read_input(config)
    if not source.ids:
        raise InputError(f"{source.path} has no rows to export", hint="check it with `urbanln inspect`")
    tiles, tiles_manifest = tables.read_tiles(config.tiles)
    warnings = list(source.warnings)
    if source.tiles_artifact and source.tiles_artifact != tiles_manifest.get("artifact_id"):
        warnings.append(f"{source.path} was made from another tiles artifact than {config.tiles}; joined by tile id")
    at = tables.join(source.ids, tiles["tile_id"], source.path, config.tiles)
    picked = {name: values[at] for name, values in tiles.items()}
    report(1, steps)

    shapes = tables.footprints(picked, config.crs)
    counts = {"tiles": len(at), **shapes.counts}
    if shapes.counts.get("no_footprint"):
        warnings.append(f"{shapes.counts['no_footprint']} tiles have no footprint (not georeferenced): null geometry")
    columns = {
        "tile_id": picked["tile_id"],
        "lon": picked["lon"],
        "lat": picked["lat"],
        "gsd": picked["gsd"],
        **source.columns(config.vector),
    }
    report(2, steps)

    kind = source.kind
    files = {"geoparquet": f"{kind}.parquet"}
    grid = None
    inputs = [artifacts.fingerprint(source.path), artifacts.fingerprint(config.tiles)]
    extra: dict[str, Any] = {"kind": kind, "crs": shapes.crs, "files": files, **source.describe()}
    if config.cog:  # before anything is written: tiles that make no grid are refused with why
        grid = tile_grid(picked, tables.tiles_stride(tiles_manifest))
        files["cog"] = f"{kind}.tif"
        extra["grid"] = grid.describe()
    with artifacts.staged_dir(config.out, config.overwrite, "export") as staging:
        manifest = artifacts.new_manifest(
            "export", run=run, inputs=inputs, rows=len(at), counts=counts, models=source.models, extra=extra
        )
        geo = artifacts.write_geoparquet(
            staging / files["geoparquet"],
            tables.arrow_columns(columns),
            shapes.wkb,
            shapes.bounds,
            shapes.crs,
            manifest,
        )
        report(3, steps)
        if grid is not None:
            bands = source.bands()
            artifacts.write_cog(
                staging / files["cog"],
                lambda i: tables.band_image(grid, bands.values[:, i]),
                count=bands.values.shape[1],
                height=grid.height,
                width=grid.width,
                transform=grid.transform,
                crs=grid.crs,
                descriptions=bands.names,
                tags={"urbanln_manifest": manifest, **bands.tags},
                resampling=bands.resampling,
                blocksize=config.blocksize,
            )
            report(4, steps)
        manifest["geo"] = {"version": geo["version"], "bbox": geo["columns"]["geometry"]["bbox"]}
        artifacts.write_json_atomic(staging / artifacts.MANIFEST_NAME, manifest)
    return ExportResult(
        config.out,
        kind,
        len(at),
        files,
        shapes.crs,
        counts,
        grid.describe() if grid else None,
        warnings,
        manifest,
    )


def _read_input(config: ExportConfig) -> tables.Source:
    """A probe's predictions (its folder or predictions.parquet), or embeddings (a safetensors file)."""
    if config.predictions is not None:
        table, _ = artifacts.read_predictions(config.predictions)
        folder = artifacts.probe_folder(config.predictions)
        return tables.predictions_source(folder, table, config.target, config.embeddings_name)
    path = config.source()
    manifest = artifacts.read_manifest(artifacts.probe_folder(path)) if path.exists() else None
    if (manifest or {}).get("stage") == "probe":
        raise WrongArtifactError(
            f"{path} is a probe folder, not an embeddings file",
            hint=f"export its predictions with --predictions {path}",
        )
    arrays, meta, emb_manifest = artifacts.read_tensors(path, "embeddings")
    vectors, ids = arrays.get("embeddings"), meta.get("tile_ids")
    if vectors is None or ids is None or len(ids) != len(vectors) or vectors.ndim != 2:
        raise InputError(
            f"{path} has no embeddings tensor lined up with tile_ids", hint="re-create it with `urbanln embed`"
        )
    return tables.embeddings_source(path, np.asarray(vectors, np.float32), ids, meta, emb_manifest)
