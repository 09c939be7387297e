"""Small geodesy helpers shared by tiling and labelling.

Everything here works on plain floats and tuples so it can run in worker
processes; rasterio is imported where a reprojection is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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
    return _measure(crs, points, [(width_px, height_px)] * len(points))


def window_centres_and_gsd(crs: str, transform: Sequence[float], windows: list[tuple[int, ...]], size: int):
    """The same for raster windows, through the affine transform: right for rotated grids too.

    ``windows``: (row, col) of ``size``-square windows, or (row, col, height, width) where the
    raster ends inside the window: then the centre and GSD are those of the part inside the
    raster, so the padded windows of a world raster stay on the globe.
    """
    a, b, c, d, e, f = transform[:6]

    def at(col: float, row: float) -> tuple[float, float]:
        return a * col + b * row + c, d * col + e * row + f

    points, pixels = [], []
    for window in windows:
        row, col = window[:2]
        h, w = (window[2], window[3]) if len(window) == 4 else (size, size)
        cx, cy = col + w / 2, row + h / 2
        points.append((at(cx, cy), at(col, cy), at(col + w, cy), at(cx, row), at(cx, row + h)))
        pixels.append((w, h))
    return _measure(crs, points, pixels)


def _measure(crs: str, points, pixels: Sequence[tuple[int, int]]):
    """From (centre, left, right, top, bottom) points and (width, height) in pixels of each box:
    centre lon/lat and metres per pixel on the ground.

    A box with a point the CRS cannot reproject (outside its domain) gets NaN for all three,
    and so does a latitude off the globe; longitudes are wrapped into [-180, 180].
    """
    flat = [p for group in points for p in group]
    lons, lats = _to_wgs84_or_nan(crs, [p[0] for p in flat], [p[1] for p in flat])
    centres, gsds = [], []
    for i, (width_px, height_px) in zip(range(0, len(flat), 5), pixels):
        box_lons, box_lats = (
            lons[i : i + 5],
            [min(90.0, max(-90.0, lat)) for lat in lats[i : i + 5]],
        )  # edges may touch a pole
        if not all(map(math.isfinite, box_lons + lats[i : i + 5])) or not -90.0 <= lats[i] <= 90.0:
            centres.append((math.nan, math.nan))
            gsds.append(math.nan)
            continue
        lon = lons[i] if -180.0 <= lons[i] <= 180.0 else (lons[i] + 180.0) % 360.0 - 180.0
        centres.append((lon, lats[i]))
        across = haversine_m(box_lons[1], box_lats[1], box_lons[2], box_lats[2]) / width_px
        down = haversine_m(box_lons[3], box_lats[3], box_lons[4], box_lats[4]) / height_px
        gsds.append((across + down) / 2)
    return centres, gsds


def _to_wgs84_or_nan(crs: str, xs: list[float], ys: list[float], group: int = 5) -> tuple[list[float], list[float]]:
    """``to_wgs84``, but a point outside the CRS's domain (which fails the whole call) gives NaN
    for its group of ``group`` points only: the failing part is found by halving."""
    try:
        return to_wgs84(crs, xs, ys)
    except Exception:  # rasterio raises CPLE_AppDefinedError "Point outside of projection domain"
        n = len(xs) // group
        if n <= 1:
            return [math.nan] * len(xs), [math.nan] * len(ys)
        half = n // 2 * group
        lons_a, lats_a = _to_wgs84_or_nan(crs, xs[:half], ys[:half], group)
        lons_b, lats_b = _to_wgs84_or_nan(crs, xs[half:], ys[half:], group)
        return lons_a + lons_b, lats_a + lats_b


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


def window_bounds(
    transform: Sequence[float], row: int, col: int, height: int, width: int
) -> tuple[float, float, float, float]:
    """Bounds of a pixel window under an affine (a, b, c, d, e, f) transform."""
    a, b, c, d, e, f = transform[:6]
    xs, ys = [], []
    for r, cc in ((row, col), (row, col + width), (row + height, col), (row + height, col + width)):
        xs.append(a * cc + b * r + c)
        ys.append(d * cc + e * r + f)
    return min(xs), min(ys), max(xs), max(ys)
