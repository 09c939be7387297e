"""``urbanln export``: embeddings or a probe's predictions as GeoParquet (and a COG) for a GIS."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from urbanln_cli.commands import _common


class Vector(str, Enum):
    list = "list"
    fixed = "fixed"
    columns = "columns"


def export(
    ctx: typer.Context,
    embeddings: Annotated[
        Path | None,
        typer.Option(
            "--embeddings",
            "-e",
            help="Embeddings file from `urbanln embed`. \\[default: embeddings.safetensors, unless --predictions]",
            show_default=False,
        ),
    ] = None,
    predictions: Annotated[
        Path | None,
        typer.Option(
            help="A probe folder from `urbanln probe` (or its predictions.parquet): export its predictions instead.",
            show_default=False,
        ),
    ] = None,
    tiles: Annotated[
        Path, typer.Option(help="The tiles dataset the embeddings (or the probe's) were made from.")
    ] = Path("tiles"),
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder: <kind>.parquet, <kind>.tif with --cog, urbanln.json.")
    ] = Path("export"),
    cog: Annotated[
        bool,
        typer.Option(
            "--cog",
            help="Also write a Cloud-Optimized GeoTIFF: one pixel per tile, one band per dimension "
            "(tiles cut from one raster only).",
        ),
    ] = False,
    crs: Annotated[
        str | None,
        typer.Option(
            help="Reproject every footprint to this CRS (e.g. EPSG:4326); needed for tiles in several CRSs. "
            "\\[default: the tiles' CRS]",
            show_default=False,
        ),
    ] = None,
    vector: Annotated[
        Vector,
        typer.Option(help="The embedding as a list column, a fixed-size list column, or one column per dimension."),
    ] = Vector.list,
    target: Annotated[
        str | None,
        typer.Option(help="With --predictions of a probe of several targets: the one to export.", show_default=False),
    ] = None,
    embeddings_name: Annotated[
        str | None,
        typer.Option(
            help="With --predictions of a probe that compared several embeddings: the one to export.",
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON summary on stdout instead of the output path.")
    ] = False,
) -> None:
    """Write embeddings (or a probe's predictions) with their tiles' footprints as GeoParquet, and a COG."""
    from urbanln_cli.stages.export import ExportConfig
    from urbanln_cli.stages.export import export as run_export

    config = ExportConfig(
        embeddings=embeddings,
        predictions=predictions,
        tiles=tiles,
        out=out,
        crs=crs,
        vector=vector.value,
        cog=cog,
        target=target,
        embeddings_name=embeddings_name,
        overwrite=overwrite,
    )
    with _common.progress_bar("exporting") as update:
        result = run_export(config, progress=update, run=_common.run_info(ctx, config))
    for line in result.warnings:
        _common.warn(line)
    files = ", ".join(result.files.values())
    grid = ""
    if result.grid:  # the raster stays on the tiles' grid, in their CRS, whatever --crs did to the footprints
        grid = f"; raster {result.grid['width']}×{result.grid['height']}"
        if result.grid["crs"] != result.crs:
            grid += f" in {result.grid['crs']}"
    _common.summary(f"wrote {result.rows} tiles' {result.kind} ({result.crs}{grid}) to {result.out}: {files}")
    _common.emit(
        {
            "out": str(result.out),
            "kind": result.kind,
            "rows": result.rows,
            "files": {k: str(result.out / v) for k, v in result.files.items()},
            "crs": result.crs,
            "counts": result.counts,
            "grid": result.grid,
        }
        if as_json
        else result.out,
        as_json,
    )


def register(app: typer.Typer) -> None:
    app.command("export")(export)
