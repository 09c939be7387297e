"""Small vectorised plane geometry for the synthetic city (numpy only).

Coordinates are local metres: u east from the image's left edge, v south from
its top edge, so pixel (row, col) has its centre at ((col + .5)·gsd, (row + .5)·gsd).
"""

from __future__ import annotations

import math

import numpy as np


def rect_corners(cx, cy, length, depth, angle) -> np.ndarray:
    """Corners (n, 4, 2) of rotated rectangles; ``length`` runs along ``angle`` (radians)."""
    cx, cy, length, depth, angle = (np.atleast_1d(np.asarray(a, np.float64)) for a in (cx, cy, length, depth, angle))
    c, s = np.cos(angle), np.sin(angle)
    hl, hd = length / 2, depth / 2
    local = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], np.float64)
    du = local[None, :, 0] * hl[:, None]
    dv = local[None, :, 1] * hd[:, None]
    x = cx[:, None] + c[:, None] * du - s[:, None] * dv
    y = cy[:, None] + s[:, None] * du + c[:, None] * dv
    return np.stack([x, y], axis=-1)


def polygon_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def polygon_areas(polys: np.ndarray) -> np.ndarray:
    """Areas of many polygons with the same vertex count, (n, k, 2)."""
    x, y = polys[..., 0], polys[..., 1]
    return 0.5 * np.abs((x * np.roll(y, -1, axis=1) - y * np.roll(x, -1, axis=1)).sum(axis=1))


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Andrew's monotone chain; returns the hull in one consistent orientation."""
    pts = sorted(set(map(tuple, np.round(points, 6))))
    if len(pts) <= 2:
        return np.asarray(pts, np.float64)

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.asarray(lower[:-1] + upper[:-1], np.float64)


def _inward_normals(poly: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit inward normals of a convex polygon's edges, and the edges' start points."""
    edges = np.roll(poly, -1, axis=0) - poly
    lengths = np.maximum(np.hypot(edges[:, 0], edges[:, 1]), 1e-12)
    normals = np.stack([-edges[:, 1], edges[:, 0]], axis=1) / lengths[:, None]
    centre = poly.mean(axis=0)
    sign = np.sign(((centre - poly) * normals).sum(axis=1))
    sign[sign == 0] = 1
    return normals * sign[:, None], poly


def inside_convex(points: np.ndarray, poly: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """Whether each point lies inside a convex polygon, at least ``margin`` from every edge."""
    normals, starts = _inward_normals(poly)
    d = (points[:, None, :] - starts[None, :, :]) * normals[None, :, :]
    return (d.sum(axis=2) >= margin).all(axis=1)


def clip_line_convex(point: np.ndarray, direction: np.ndarray, poly: np.ndarray, margin: float = 0.0):
    """The part of the infinite line point + t·direction inside a convex polygon shrunk by margin."""
    normals, starts = _inward_normals(poly)
    t0, t1 = -math.inf, math.inf
    for n, s in zip(normals, starts):
        denom = float(n @ direction)
        num = float(n @ (point - s)) - margin
        if abs(denom) < 1e-12:
            if num < 0:
                return None
            continue
        t = -num / denom
        if denom > 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
    if t1 - t0 <= 1e-9:
        return None
    return point + t0 * direction, point + t1 * direction


def clip_polygon_convex(subject: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """Sutherland–Hodgman: ``subject`` clipped by the convex polygon ``clip``."""
    normals, starts = _inward_normals(clip)
    out = [tuple(p) for p in subject]
    for n, s in zip(normals, starts):
        if not out:
            break
        pts, out = out, []
        for i, cur in enumerate(pts):
            prev = pts[i - 1]
            dc = (cur[0] - s[0]) * n[0] + (cur[1] - s[1]) * n[1]
            dp = (prev[0] - s[0]) * n[0] + (prev[1] - s[1]) * n[1]
            if dc >= 0:
                if dp < 0:
                    t = dp / (dp - dc)
                    out.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
                out.append(cur)
            elif dp >= 0:
                t = dp / (dp - dc)
                out.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
    return np.asarray(out, np.float64).reshape(-1, 2)


def segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distances (n, m) from n points to m segments a→b."""
    ab = b - a
    denom = np.maximum((ab * ab).sum(axis=1), 1e-12)
    ap = points[:, None, :] - a[None, :, :]
    t = np.clip((ap * ab[None]).sum(axis=2) / denom[None], 0.0, 1.0)
    closest = a[None] + t[..., None] * ab[None]
    diff = points[:, None, :] - closest
    return np.sqrt((diff * diff).sum(axis=2))


def points_in_polygon(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule for any simple polygon, vectorised over points."""
    x, y = points[:, 0:1], points[:, 1:2]
    x0, y0 = poly[:, 0][None], poly[:, 1][None]
    x1, y1 = np.roll(poly[:, 0], -1)[None], np.roll(poly[:, 1], -1)[None]
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return (crosses & (x < xi)).sum(axis=1) % 2 == 1


def polyline_length(line: np.ndarray) -> float:
    d = np.diff(line, axis=0)
    return float(np.hypot(d[:, 0], d[:, 1]).sum())


def resample_polyline(line: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Midpoints and lengths of pieces at most ``step`` long covering a polyline exactly."""
    mids, lengths = [], []
    for p, q in zip(line[:-1], line[1:]):
        seg = float(np.hypot(*(q - p)))
        if seg <= 0:
            continue
        n = max(1, math.ceil(seg / step))
        t = (np.arange(n) + 0.5) / n
        mids.append(p[None] + t[:, None] * (q - p)[None])
        lengths.append(np.full(n, seg / n))
    if not mids:
        return np.zeros((0, 2)), np.zeros(0)
    return np.concatenate(mids), np.concatenate(lengths)


class SmoothField:
    """A deterministic smooth random field: a sum of a few plane waves, roughly in [-1, 1].

    Cheap to evaluate anywhere, so block-by-block rendering stays seamless.
    """

    def __init__(self, rng: np.random.Generator, wavelength: float, waves: int = 6):
        angles = rng.uniform(0, 2 * math.pi, waves)
        freqs = 2 * math.pi / (wavelength * rng.uniform(0.6, 1.6, waves))
        self.kx, self.ky = np.cos(angles) * freqs, np.sin(angles) * freqs
        self.phase = rng.uniform(0, 2 * math.pi, waves)
        self.scale = math.sqrt(2.0 / waves)

    def __call__(self, x, y):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        total = np.zeros(np.broadcast(x, y).shape)
        for kx, ky, ph in zip(self.kx, self.ky, self.phase):
            total += np.sin(kx * x + ky * y + ph)
        return total * self.scale


def clip_polyline_box(line: np.ndarray, lo: float, hi: float) -> list[np.ndarray]:
    """The runs of a polyline inside the square [lo, hi]² (Liang–Barsky per segment)."""
    runs: list[list] = []
    cur: list = []
    for p, q in zip(line[:-1], line[1:]):
        d = q - p
        t0, t1 = 0.0, 1.0
        for pv, dv in ((p[0], d[0]), (p[1], d[1])):
            for bound, sign in ((lo, -1.0), (hi, 1.0)):
                num, den = sign * (bound - pv), sign * dv
                if abs(den) < 1e-12:
                    if num < 0:
                        t0, t1 = 1.0, 0.0
                elif den > 0:
                    t1 = min(t1, num / den)
                else:
                    t0 = max(t0, num / den)
        if t1 <= t0:
            if cur:
                runs.append(cur)
                cur = []
            continue
        a, b = p + t0 * d, p + t1 * d
        if not cur:
            cur = [a]
        cur.append(b)
        if t1 < 1.0:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return [np.asarray(r) for r in runs if len(r) >= 2]
