"""``urbanln label``: attach targets to tiles."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from urbanln_cli.commands import _common


class Dup(str, Enum):
    mean = "mean"
    first = "first"


def label(
    ctx: typer.Context,
    tiles: Annotated[Path, typer.Argument(help="Tiles dataset from `urbanln tile`.")] = Path("tiles"),
    out: Annotated[Path, typer.Option("--out", "-o", help="Output labels dataset folder.")] = Path("labels"),
    raster: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=PATH[:AGG], repeatable. AGG: sum (counts, e.g. population), mean (default), max, median, "
            "fractions (one column per class of a categorical raster), majority (the class covering most of the "
            "tile, a categorical target), or mask (each tile's class mask on its own pixel grid, for "
            "`urbanln evaluate segmentation`).",
            show_default=False,
        ),
    ] = None,
    table: Annotated[
        Path | None,
        typer.Option(
            help="CSV or parquet table of targets: number columns are numeric targets, text columns categorical.",
            show_default=False,
        ),
    ] = None,
    id_column: Annotated[
        str | None,
        typer.Option(
            help="Join the table where this column equals tile_id. \\[default: join by nearest lon/lat]",
            show_default=False,
        ),
    ] = None,
    lon_column: Annotated[str, typer.Option(help="Table column with longitude (nearest join).")] = "lon",
    lat_column: Annotated[str, typer.Option(help="Table column with latitude (nearest join).")] = "lat",
    max_distance: Annotated[
        float | None,
        typer.Option(
            help="Nearest join: farthest match in metres. \\[default: half the tile's width]", show_default=False
        ),
    ] = None,
    dup: Annotated[Dup, typer.Option(help="How to merge table rows with the same id (or point).")] = Dup.mean,
    columns: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated table columns to take. \\[default: every number column, and every text column "
            "that looks like classes]",
            show_default=False,
        ),
    ] = None,
    categorical: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated table columns that hold classes even when written as numbers (codes such as 11, "
            "21), kept as the text of each cell. \\[default: text columns only]",
            show_default=False,
        ),
    ] = None,
    mask_size: Annotated[
        int | None,
        typer.Option(
            help="Masks (:mask) at most this many pixels a side, for large tiles. \\[default: the tile's own size]",
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON summary on stdout instead of the output path.")
    ] = False,
) -> None:
    """Attach targets (carbon, population, GDP, night light, land cover…) to tiles.

    Raster statistics are taken over each tile's footprint, reprojected to the
    raster's CRS, weighting cells by the share the tile covers. Missing values are NaN.
    Categorical targets (a table's text columns, :majority classes) are string
    columns, empty where missing. A :mask target stores each tile's class mask
    (PNG, 255 = nodata) in a NAME_mask column.
    """
    from urbanln_cli.stages.label import LabelConfig, RasterTarget
    from urbanln_cli.stages.label import label as run_label

    config = LabelConfig(
        tiles=tiles,
        out=out,
        rasters=tuple(RasterTarget.parse(r) for r in raster or ()),
        table=table,
        id_column=id_column,
        lon_column=lon_column,
        lat_column=lat_column,
        max_distance=max_distance,
        dup=dup.value,
        columns=tuple(c.strip() for c in columns.split(",") if c.strip()) if columns else None,
        categorical=tuple(c.strip() for c in categorical.split(",") if c.strip()) if categorical else (),
        mask_size=mask_size,
        overwrite=overwrite,
    )
    with _common.progress_bar("labelling") as update:
        result = run_label(config, progress=update, run=_common.run_info(ctx))
    for warning in result.warnings:
        _common.warn(warning)
    detail = _common.describe_counts(result.counts)
    _common.summary(
        f"wrote {len(result.targets)} target(s) for {result.rows} tiles to {result.out}"
        + (f"; {detail}" if detail else "")
    )
    _common.emit(
        {
            "out": str(result.out),
            "rows": result.rows,
            "targets": result.targets,
            "categorical": result.categorical,
            "counts": result.counts,
        }
        if as_json
        else result.out,
        as_json,
    )


def register(app: typer.Typer) -> None:
    app.command("label")(label)
