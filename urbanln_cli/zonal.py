"""Zonal statistics of a raster over tile footprints, with exact partial-cell weights.

A tile's footprint is reprojected into the raster's pixel grid. When it lands
as an axis-aligned rectangle there (same or aligned grid), each cell is weighted
by the exact share of it that the tile covers, so sums over tiles that cover a
raster add up to its total. Otherwise the footprint is sampled on a fine grid
of points, each standing for an equal share of the tile's area in cell units.
Class rasters are never interpolated: ``fractions`` and ``majority`` weigh each
cell's class by the share of the tile it covers.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from urbanln_cli.errors import InputError

AGGREGATIONS = ("sum", "mean", "max", "median", "fractions", "majority")
TIE_RTOL = 1e-9  # class areas this close count as a tie (partial-cell weights carry rounding error)
IN_MEMORY_CELLS = 1 << 24  # rasters up to 16M cells are read once; larger ones window by window
EDGE_POINTS = 8  # points per footprint edge when reprojecting, so curved edges stay close


@dataclass
class Zone:
    values: np.ndarray  # cell values under the footprint (valid cells only)
    weights: np.ndarray  # covered area of each, in cells
    status: str  # "ok", "partial" (part outside the raster), "outside", "nodata"


class ZonalRaster:
    def __init__(self, path: Path | str, band: int = 1):
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"raster not found: {self.path}", hint="check the PATH in --raster NAME=PATH[:AGG]")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)  # reported below as a clear error
                self.ds = rasterio.open(self.path)
        except RasterioIOError as exc:
            raise InputError(
                f"cannot read raster {self.path}: {exc}", hint="check that it is a complete GeoTIFF"
            ) from None
        if self.ds.crs is None:
            raise InputError(
                f"{self.path} has no CRS, so tiles cannot be placed on it",
                hint="georeference it (e.g. gdal_edit.py -a_srs)",
            )
        self.band = band
        self.crs = self.ds.crs
        self.crs_key = _crs_key(self.crs.to_wkt())
        self.inverse = ~self.ds.transform
        self.shape = (self.ds.height, self.ds.width)
        self._data = None
        if self.ds.width * self.ds.height <= IN_MEMORY_CELLS:
            self._data = self._read(0, 0, self.ds.height, self.ds.width)

    def close(self) -> None:
        self.ds.close()

    def _read(self, r0: int, c0: int, r1: int, c1: int) -> np.ma.MaskedArray:
        from rasterio.windows import Window

        try:
            data = self.ds.read(self.band, window=Window(c0, r0, c1 - c0, r1 - r0), masked=True)
        except Exception as exc:  # damaged blocks: rasterio raises RasterioIOError and CPLE_* errors
            raise InputError(
                f"cannot read raster {self.path}: {exc}", hint="check that it is a complete, valid GeoTIFF"
            ) from None
        if np.issubdtype(data.dtype, np.floating):
            data = np.ma.masked_invalid(data)
        return data

    def _cells(self, r0: int, c0: int, r1: int, c1: int) -> np.ma.MaskedArray:
        if self._data is not None:
            return self._data[r0:r1, c0:c1]
        return self._read(r0, c0, r1, c1)

    def zone(self, crs: str, bounds: tuple[float, float, float, float]) -> Zone:
        """The cells under a footprint given as bounds in ``crs``."""
        cols, rows = self._to_pixels(crs, _ring(bounds))
        if not (np.isfinite(cols).all() and np.isfinite(rows).all()):
            return Zone(np.empty(0), np.empty(0), "outside")
        height, width = self.shape
        if cols.max() <= 0 or rows.max() <= 0 or cols.min() >= width or rows.min() >= height:
            return Zone(np.empty(0), np.empty(0), "outside")
        partial = cols.min() < 0 or rows.min() < 0 or cols.max() > width or rows.max() > height
        if _is_rectangle(cols, rows):
            values, weights = self._rectangle(cols.min(), rows.min(), cols.max(), rows.max())
        else:
            values, weights = self._sampled(crs, bounds, cols, rows)
        if values.size == 0:
            return Zone(values, weights, "outside")
        keep = ~np.ma.getmaskarray(values) & (weights > 0)
        some_nodata = bool((np.ma.getmaskarray(values) & (weights > 0)).any())
        values, weights = np.asarray(values.data[keep], np.float64), weights[keep]
        status = "nodata" if values.size == 0 else "partial" if partial else "some_nodata" if some_nodata else "ok"
        return Zone(values, weights, status)

    def grid(
        self, crs: str, bounds: tuple[float, float, float, float], height: int, width: int
    ) -> tuple[np.ma.MaskedArray, str]:
        """Nearest-neighbour values at the centres of a ``height`` × ``width`` grid over ``bounds``.

        Cell (r, c) of the grid is the raster cell under the point at fraction
        ((c + 0.5) / width, (r + 0.5) / height) of the bounds, from the top-left
        corner, so on a tile's own pixel grid cell (r, c) lies under image pixel (r, c).
        Points outside the raster and nodata cells are masked. Status as in ``zone``.
        """
        minx, miny, maxx, maxy = bounds
        xs = minx + (np.arange(width) + 0.5) / width * (maxx - minx)
        ys = maxy - (np.arange(height) + 0.5) / height * (maxy - miny)
        a, b, _, d, _, _ = tuple(self.inverse)[:6]
        if (
            (not crs or _crs_key(crs) == self.crs_key) and b == 0 and d == 0
        ):  # north-up, same CRS: rows and columns apart
            cols, _ = self._to_pixels("", (xs.tolist(), [0.0] * width))
            _, rows = self._to_pixels("", ([0.0] * height, ys.tolist()))
            cols, rows = (
                np.broadcast_to(cols[None, :], (height, width)),
                np.broadcast_to(rows[:, None], (height, width)),
            )
        else:
            gx, gy = np.meshgrid(xs, ys)
            cols, rows = self._to_pixels(crs, (gx.ravel().tolist(), gy.ravel().tolist()))
            cols, rows = cols.reshape(height, width), rows.reshape(height, width)
        n_rows, n_cols = self.shape
        with np.errstate(invalid="ignore"):
            inside = (
                np.isfinite(cols) & np.isfinite(rows) & (cols >= 0) & (rows >= 0) & (cols < n_cols) & (rows < n_rows)
            )
        out = np.ma.masked_all((height, width), dtype=self.ds.dtypes[self.band - 1])
        if not inside.any():
            return out, "outside"
        ci, ri = np.floor(cols[inside]).astype(np.int64), np.floor(rows[inside]).astype(np.int64)
        r0, c0 = int(ri.min()), int(ci.min())
        cells = self._cells(r0, c0, int(ri.max()) + 1, int(ci.max()) + 1)
        out[inside] = cells[ri - r0, ci - c0]
        nodata = bool(np.ma.getmaskarray(out)[inside].any())
        status = (
            "nodata"
            if np.ma.getmaskarray(out).all()
            else "partial"
            if not inside.all()
            else "some_nodata"
            if nodata
            else "ok"
        )
        return out, status

    def colormap(self) -> dict[int, tuple[int, int, int]] | None:
        """The band's colour table (class -> RGB), if the raster has one."""
        try:
            table = self.ds.colormap(self.band)
        except ValueError:  # no colour table
            return None
        return {int(k): tuple(int(c) for c in v[:3]) for k, v in table.items()}

    def class_names(self) -> dict[int, str]:
        """Class names from the band's ``class_<id>=name`` tags (as ``urbanln synth city`` writes them)."""
        tags = self.ds.tags(self.band)
        return {int(k[6:]): v for k, v in tags.items() if k.startswith("class_") and k[6:].isdigit()}

    def _to_pixels(self, crs: str, ring: tuple[list[float], list[float]]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = ring
        if crs and _crs_key(crs) != self.crs_key:
            from rasterio.warp import transform

            xs, ys = transform(crs, self.crs, xs, ys)
        a, b, c, d, e, f = tuple(self.inverse)[:6]
        xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
        return a * xs + b * ys + c, d * xs + e * ys + f

    def _rectangle(self, c0: float, r0: float, c1: float, r1: float) -> tuple[np.ma.MaskedArray, np.ndarray]:
        height, width = self.shape
        ic0, ir0 = max(0, math.floor(c0)), max(0, math.floor(r0))
        ic1, ir1 = min(width, math.ceil(c1)), min(height, math.ceil(r1))
        if ic1 <= ic0 or ir1 <= ir0:
            return np.ma.masked_array(np.empty(0)), np.empty(0)
        col_edges = np.arange(ic0, ic1, dtype=np.float64)
        row_edges = np.arange(ir0, ir1, dtype=np.float64)
        wx = np.clip(np.minimum(col_edges + 1, c1) - np.maximum(col_edges, c0), 0, 1)
        wy = np.clip(np.minimum(row_edges + 1, r1) - np.maximum(row_edges, r0), 0, 1)
        cells = self._cells(ir0, ic0, ir1, ic1)
        return cells.ravel(), np.outer(wy, wx).ravel()

    def _sampled(self, crs: str, bounds, cols: np.ndarray, rows: np.ndarray):
        area = abs(_shoelace(cols, rows))  # footprint area in cells
        span = max(cols.max() - cols.min(), rows.max() - rows.min())
        k = int(min(256, max(16, math.ceil(4 * span))))  # at least ~4 samples per cell side
        minx, miny, maxx, maxy = bounds
        fx = (np.arange(k) + 0.5) / k
        gx, gy = np.meshgrid(minx + fx * (maxx - minx), miny + fx * (maxy - miny))
        sc, sr = self._to_pixels(crs, (gx.ravel().tolist(), gy.ravel().tolist()))
        height, width = self.shape
        inside = (sc >= 0) & (sr >= 0) & (sc < width) & (sr < height)
        ci, ri = np.floor(sc[inside]).astype(np.int64), np.floor(sr[inside]).astype(np.int64)
        if ci.size == 0:
            return np.ma.masked_array(np.empty(0)), np.empty(0)
        c0, r0 = ci.min(), ri.min()
        cells = self._cells(r0, c0, ri.max() + 1, ci.max() + 1)
        values = cells[ri - r0, ci - c0]
        return values, np.full(values.shape, area / (k * k))


def aggregate(zone: Zone, how: str) -> float | dict[float, float]:
    if zone.values.size == 0 or zone.weights.sum() <= 0:
        return {} if how == "fractions" else math.nan
    v, w = zone.values, zone.weights
    if how == "sum":
        return float((v * w).sum())
    if how == "mean":
        return float((v * w).sum() / w.sum())
    if how == "max":
        return float(v[w > 0].max())
    if how == "median":
        order = np.argsort(v, kind="stable")
        cum = np.cumsum(w[order])
        return float(v[order][np.searchsorted(cum, cum[-1] / 2)])
    if how == "fractions":
        total = w.sum()
        classes, inverse = np.unique(v, return_inverse=True)
        shares = np.bincount(inverse, weights=w) / total
        return {float(c): float(s) for c, s in zip(classes, shares)}
    if how == "majority":  # the class covering the most area; among ties, the smallest (np.unique sorts)
        classes, inverse = np.unique(v, return_inverse=True)
        area = np.bincount(inverse, weights=w)
        return float(classes[np.flatnonzero(area >= area.max() * (1 - TIE_RTOL))[0]])
    raise ValueError(how)


def _ring(bounds) -> tuple[list[float], list[float]]:
    """The footprint's outline, with EDGE_POINTS points per edge."""
    minx, miny, maxx, maxy = bounds
    t = [i / EDGE_POINTS for i in range(EDGE_POINTS)]
    xs = (
        [minx + (maxx - minx) * s for s in t]
        + [maxx] * EDGE_POINTS
        + [maxx - (maxx - minx) * s for s in t]
        + [minx] * EDGE_POINTS
    )
    ys = (
        [miny] * EDGE_POINTS
        + [miny + (maxy - miny) * s for s in t]
        + [maxy] * EDGE_POINTS
        + [maxy - (maxy - miny) * s for s in t]
    )
    return xs, ys


def _is_rectangle(cols: np.ndarray, rows: np.ndarray, tol: float = 1e-6) -> bool:
    on_x = np.minimum(abs(cols - cols.min()), abs(cols - cols.max()))
    on_y = np.minimum(abs(rows - rows.min()), abs(rows - rows.max()))
    scale = max(1.0, cols.max() - cols.min(), rows.max() - rows.min())
    return bool(((on_x <= tol * scale) | (on_y <= tol * scale)).all() and _axis_edges(cols, rows, tol * scale))


def _axis_edges(cols, rows, tol) -> bool:
    # Every consecutive pair of outline points must share a column or a row (no diagonal edges).
    dc, dr = np.abs(np.diff(np.append(cols, cols[0]))), np.abs(np.diff(np.append(rows, rows[0])))
    return bool(((dc <= tol) | (dr <= tol)).all())


def _shoelace(xs: np.ndarray, ys: np.ndarray) -> float:
    return 0.5 * float(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1)))


@functools.lru_cache(maxsize=64)
def _crs_key(crs: str) -> str:
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        parsed = CRS.from_user_input(crs)
    except CRSError:
        return crs
    epsg = parsed.to_epsg()
    return f"EPSG:{epsg}" if epsg else parsed.to_wkt()
