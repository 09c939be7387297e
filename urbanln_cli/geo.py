"""Small geodesy helpers shared by tiling and labelling.

Everything here works on plain floats and tuples so it can run in worker
processes; rasterio is imported where a reprojection is needed.
"""

from __future__ import annotations

import math
from typing import Sequence

EARTH_RADIUS_M = 6_371_008.8  # mean radius; good to ~0.3% for pixel sizes
WEB_MERCATOR_HALF = 20_037_508.342789244  # metres from the origin to the edge of EPSG:3857
WGS84 = "EPSG:4326"


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def to_wgs84(crs: str, xs: Sequence[float], ys: Sequence[float]) -> tuple[list[float], list[float]]:
    """Reproject points from ``crs`` to lon/lat."""
    if crs in ("EPSG:4326", "OGC:CRS84"):
        return list(xs), list(ys)
    from rasterio.warp import transform

    lons, lats = transform(crs, WGS84, list(xs), list(ys))
    return list(lons), list(lats)


def centres_and_gsd(crs: str, bounds: list[tuple[float, float, float, float]], width_px: int, height_px: int):
    """Centre lon/lat and ground sample distance of north-up boxes, with one reprojection call."""
    points = []
    for minx, miny, maxx, maxy in bounds:
        cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
        points.append(((cx, cy), (minx, cy), (maxx, cy), (cx, miny), (cx, maxy)))
    return _measure(crs, points, width_px, height_px)


def window_centres_and_gsd(crs: str, transform: Sequence[float], windows: list[tuple[int, int]], size: int):
    """The same for raster windows (row, col), through the affine transform: right for rotated grids too."""
    a, b, c, d, e, f = transform[:6]

    def at(col: float, row: float) -> tuple[float, float]:
        return a * col + b * row + c, d * col + e * row + f

    half = size / 2
    points = [
        (at(col + half, row + half), at(col, row + half), at(col + size, row + half), at(col + half, row), at(col + half, row + size))
        for row, col in windows
    ]
    return _measure(crs, points, size, size)


def _measure(crs: str, points, width_px: int, height_px: int):
    """From (centre, left, right, top, bottom) points: centre lon/lat and metres per pixel on the ground."""
    flat = [p for group in points for p in group]
    lons, lats = to_wgs84(crs, [p[0] for p in flat], [p[1] for p in flat])
    centres, gsds = [], []
    for i in range(0, len(flat), 5):
        centres.append((lons[i], lats[i]))
        across = haversine_m(lons[i + 1], lats[i + 1], lons[i + 2], lats[i + 2]) / width_px
        down = haversine_m(lons[i + 3], lats[i + 3], lons[i + 4], lats[i + 4]) / height_px
        gsds.append((across + down) / 2)
    return centres, gsds


def xyz_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """EPSG:3857 bounds (minx, miny, maxx, maxy) of a slippy-map tile."""
    span = 2 * WEB_MERCATOR_HALF / (1 << z)
    minx = -WEB_MERCATOR_HALF + x * span
    maxy = WEB_MERCATOR_HALF - y * span
    return minx, maxy - span, minx + span, maxy


def mercator_to_lonlat(mx: float, my: float) -> tuple[float, float]:
    lon = mx / WEB_MERCATOR_HALF * 180.0
    lat = math.degrees(2 * math.atan(math.exp(my / 6_378_137.0)) - math.pi / 2)
    return lon, lat


def window_bounds(transform: Sequence[float], row: int, col: int, height: int, width: int) -> tuple[float, float, float, float]:
    """Bounds of a pixel window under an affine (a, b, c, d, e, f) transform."""
    a, b, c, d, e, f = transform[:6]
    xs, ys = [], []
    for r, cc in ((row, col), (row, col + width), (row + height, col), (row + height, col + width)):
        xs.append(a * cc + b * r + c)
        ys.append(d * cc + e * r + f)
    return min(xs), min(ys), max(xs), max(ys)
