"""The tile grid behind an embedding raster: one pixel per tile of one raster, or why there is none.

``urbanln tile`` cuts a raster into ``size``-pixel windows every ``stride`` pixels, from
row and column 0. A tile is then one pixel of a coarser grid: pixel (i, j) is the window
at row ``i·stride``, column ``j·stride``, centred on that window, ``stride`` source pixels
wide. The source raster's transform is recovered from the tiles' bounds and pixel
windows, and every tile must agree with it: tiles from several rasters, CRSs or window
sizes, rotated or south-up rasters, or windows off the stride make no such grid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from urbanln_cli.errors import UsageProblem

_HINT = "export them as GeoParquet only (drop --cog), or tile the raster on its own and export those tiles"


@dataclass(frozen=True)
class TileGrid:
    crs: str
    transform: tuple[float, float, float, float, float, float]  # of the output raster: one pixel per tile
    width: int
    height: int
    rows: np.ndarray  # each tile's pixel row in the output raster
    cols: np.ndarray
    stride: int  # source pixels between neighbouring tiles
    size: tuple[int, int]  # the tiles' window (height, width) in source pixels

    def describe(self) -> dict[str, Any]:
        return {
            "crs": self.crs,
            "transform": list(self.transform),
            "width": self.width,
            "height": self.height,
            "stride_px": self.stride,
            "tile_px": list(self.size),
        }


def tile_grid(tiles: Mapping[str, np.ndarray], stride: int | None = None) -> TileGrid:
    """The grid of ``tiles`` (columns source, crs, row_off, col_off, height, width, minx, miny, maxx, maxy).

    ``stride`` is the one ``urbanln tile`` used (from the tiles' manifest), when known;
    else the largest step all offsets share, at most the window size.
    """
    n = len(tiles["row_off"])
    sources = sorted(set(tiles["source"]))
    if len(sources) > 1:
        listed = ", ".join(sources[:3]) + (f" and {len(sources) - 3} more" if len(sources) > 3 else "")
        raise UsageProblem(
            f"an embedding raster needs tiles cut from one raster; these come from {len(sources)} ({listed})",
            hint=_HINT,
        )
    crs = set(tiles["crs"])
    if crs != {next(iter(crs))} or not next(iter(crs)):
        why = "are not georeferenced" if crs == {""} else f"are in {len(crs)} CRSs"
        raise UsageProblem(f"an embedding raster needs tiles in one CRS; these {why}", hint=_HINT)
    heights, widths = np.unique(tiles["height"]), np.unique(tiles["width"])
    if len(heights) > 1 or len(widths) > 1:
        raise UsageProblem("an embedding raster needs windows of one size; these tiles differ", hint=_HINT)
    size_h, size_w = int(heights[0]), int(widths[0])
    rows, cols = np.asarray(tiles["row_off"], np.int64), np.asarray(tiles["col_off"], np.int64)
    minx, miny = np.asarray(tiles["minx"], np.float64), np.asarray(tiles["miny"], np.float64)
    maxx, maxy = np.asarray(tiles["maxx"], np.float64), np.asarray(tiles["maxy"], np.float64)
    if not np.isfinite(np.stack([minx, miny, maxx, maxy])).all():
        raise UsageProblem("an embedding raster needs the bounds of every tile; some have none", hint=_HINT)

    # the source's pixel size, and its origin, as each tile sees them: all must agree
    a, e = float(np.median((maxx - minx) / size_w)), float(np.median((maxy - miny) / size_h))
    c, f = minx - a * cols, maxy + e * rows
    tolerance = 1e-3 * min(a, e)
    if a <= 0 or e <= 0 or max(np.ptp(c), np.ptp(f)) > tolerance or _spread((maxx - minx) / size_w, a, tolerance):
        raise UsageProblem(
            "these tiles' bounds do not follow one north-up pixel grid (a rotated or south-up raster, "
            "or bounds that were edited)",
            hint=_HINT,
        )
    step = _stride(rows, cols, size_h, size_w, stride)
    grid_rows, grid_cols = (rows - rows.min()) // step, (cols - cols.min()) // step
    if ((rows - rows.min()) % step).any() or ((cols - cols.min()) % step).any():
        raise UsageProblem(f"these tiles' windows are not on a {step}-pixel stride", hint=_HINT)
    # pixel (0, 0) is centred on the window at the smallest offsets, ``step`` source pixels wide
    x0 = float(np.median(c)) + a * (cols.min() + size_w / 2 - step / 2)
    y0 = float(np.median(f)) - e * (rows.min() + size_h / 2 - step / 2)
    return TileGrid(
        crs=next(iter(crs)),
        transform=(a * step, 0.0, x0, 0.0, -e * step, y0),
        width=int(grid_cols.max()) + 1 if n else 0,
        height=int(grid_rows.max()) + 1 if n else 0,
        rows=grid_rows,
        cols=grid_cols,
        stride=step,
        size=(size_h, size_w),
    )


def _spread(values: np.ndarray, centre: float, tolerance: float) -> bool:
    return bool(np.abs(values - centre).max() > tolerance) if len(values) else False


def _stride(rows: np.ndarray, cols: np.ndarray, size_h: int, size_w: int, stride: int | None) -> int:
    if stride is not None:
        if stride < 1:
            raise UsageProblem(f"the tiles' stride {stride} is not a positive number of pixels", hint=_HINT)
        return int(stride)
    offsets = np.concatenate([rows - rows.min(), cols - cols.min()])
    step = math.gcd(*(int(v) for v in np.unique(offsets) if v)) if offsets.any() else 0
    size = min(size_h, size_w)
    if step == 0 or (step > size and step % size == 0):  # one tile, or gaps where tiles were skipped
        return size
    return step
