"""``urbanln tile``: cut imagery into region tiles."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from urbanln_cli.commands import _common


class ImageFormat(str, Enum):
    png = "png"
    jpeg = "jpeg"


def tile(
    ctx: typer.Context,
    inputs: Annotated[
        list[Path],
        typer.Argument(
            metavar="INPUT",
            help="GeoTIFFs, folders of PNG/JPEG/TIFF images, or XYZ folders (z/x/y.png), mixed freely.",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output tiles dataset folder.")] = Path("tiles"),
    size: Annotated[int, typer.Option(help="Tile size in source pixels (rasters).")] = 256,
    stride: Annotated[
        int | None,
        typer.Option(help="Step between windows in pixels. \\[default: --size, no overlap]", show_default=False),
    ] = None,
    resize: Annotated[
        int | None, typer.Option(help="Resize every tile to this many pixels square.", show_default=False)
    ] = None,
    format: Annotated[ImageFormat, typer.Option("--format", help="Encoding of the stored tiles.")] = ImageFormat.png,
    min_valid: Annotated[
        float,
        typer.Option(
            help="Skip tiles whose share of valid pixels (not nodata, not black/white fill) is below this. 0 keeps "
            "every tile."
        ),
    ] = 0.5,
    group: Annotated[
        str | None,
        typer.Option(help="City or region name for every tile. \\[default: each input's name]", show_default=False),
    ] = None,
    bands: Annotated[
        str | None,
        typer.Option(
            help="Raster bands to use, 1-based: one (grey) or three, e.g. 4,3,2. \\[default: RGB by colour "
            "interpretation, else 1,2,3]",
            show_default=False,
        ),
    ] = None,
    crop: Annotated[
        str | None,
        typer.Option(
            help="Trim image files' borders: N, or TOP,RIGHT,BOTTOM,LEFT pixels (e.g. to cut a watermark).",
            show_default=False,
        ),
    ] = None,
    locations: Annotated[
        Path | None,
        typer.Option(
            help="CSV with id,lon,lat[,gsd,group] for image-folder tiles; id is the file's name or relative path.",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes. \\[default: all cores, at most 8]", show_default=False)
    ] = None,
    max_pixels: Annotated[
        int,
        typer.Option(
            help="Largest image file (width × height) to read; larger ones are skipped, counted and named in a "
            "warning. Also caps --size² and --resize², and stages that decode the tiles allow what was allowed here."
        ),
    ] = 89_478_485,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON summary on stdout instead of the output path.")
    ] = False,
) -> None:
    """Cut imagery into region tiles: a tiles dataset with images, geometry and lon/lat.

    Rasters are cut into --size windows streamed from disk; non-uint8 data gets a
    2–98 percentile stretch per band. Image files become one tile each. Rerunning
    an interrupted command resumes it.
    """
    from urbanln_cli.imagery import parse_bands, parse_crop
    from urbanln_cli.stages.tile import TileConfig
    from urbanln_cli.stages.tile import tile as run_tile

    config = TileConfig(
        inputs=tuple(inputs),
        out=out,
        size=size,
        stride=stride,
        resize=resize,
        format=format.value,
        min_valid=min_valid,
        group=group,
        bands=parse_bands(bands),
        crop=parse_crop(crop),
        locations=locations,
        workers=workers,
        overwrite=overwrite,
        max_pixels=max_pixels,
    )
    with _common.progress_bar("tiling") as update:
        result = run_tile(config, progress=update, run=_common.run_info(ctx))
    detail = _common.describe_counts(result.counts, skip=("tiles",))
    resumed = f" (resumed {result.resumed_shards} of {result.shards} shards)" if result.resumed_shards else ""
    _common.summary(f"wrote {result.rows} tiles to {result.out}{resumed}" + (f"; {detail}" if detail else ""))
    for problem in result.manifest.get("problems", [])[:5]:
        _common.warn(problem)
    _common.emit(
        {"out": str(result.out), "rows": result.rows, "counts": result.counts} if as_json else result.out, as_json
    )


def register(app: typer.Typer) -> None:
    app.command("tile", no_args_is_help=True)(tile)
