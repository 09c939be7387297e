"""The vector city: zones, roads, rail, water, parks, buildings, trees and vehicles.

The scene is generated whole before anything is drawn. Districts are the
Voronoi cells of jittered seed points; each gets a zone from its distance to
the centre (bent by a smooth random field), its own street-grid orientation and
block size, and is filled block by block with the building pattern of its zone.
Major roads (rings and spokes, a grid, or a linear spine, by ``style``), the
river, a lake and a rail line cut through districts, and everything that would
sit on them is dropped. Geometry lives in local metres (see ``geometry``) until
``write_scene_json`` converts it to the CRS.

Roof colour and material are drawn from one distribution for every building,
independently of use and zone, so colour alone says nothing about land use.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from urbanln_cli.synth import geometry as geo

STYLES = ("radial", "grid", "linear")
CLASSES = {
    0: "water",
    1: "park/vegetation",
    2: "road",
    3: "residential building",
    4: "commercial building",
    5: "industrial building",
    6: "bare/farmland",
    7: "other paved (plazas, parking, yards)",
    8: "trees",
    9: "rail",
}
USES = ("residential", "commercial", "industrial")
USE_CLASS = np.array([3, 4, 5], np.uint8)
ZONES = (
    "centre",
    "residential_high",
    "residential_mid",
    "residential_low",
    "industrial",
    "park",
    "village",
    "farmland",
)
Z = {name: i for i, name in enumerate(ZONES)}
ROOF_COLOURS = (
    ("light grey", (186, 186, 182)),
    ("dark grey", (92, 95, 100)),
    ("white", (228, 228, 222)),
    ("blue", (78, 112, 158)),
    ("red", (158, 70, 58)),
    ("terracotta", (176, 102, 68)),
    ("green", (88, 126, 98)),
    ("beige", (204, 188, 150)),
    ("brown", (116, 90, 70)),
    ("teal", (66, 136, 136)),
)
ROOF_COLOUR_P = np.array([0.2, 0.14, 0.12, 0.1, 0.08, 0.08, 0.06, 0.1, 0.07, 0.05])
ROOF_MATERIALS = ("concrete", "metal", "tile", "membrane", "gravel")
ROOF_MATERIAL_P = np.array([0.34, 0.2, 0.18, 0.16, 0.12])
STOREY_M = np.array([3.0, 4.0, 6.0])  # residential, commercial, industrial
ROAD_CLASSES = ("highway", "arterial", "local")
VEHICLE_KINDS = ("car", "bus", "truck")
VEHICLE_SIZE = {"car": (4.6, 1.9), "bus": (12.0, 2.6), "truck": (9.0, 2.5)}
SUN_AZIMUTH_DEG = 135.0  # sun in the south-east (mid-morning), so shadows fall to the north-west
SUN_ELEVATION_DEG = 52.0
SETBACK_M = 5.0  # from a street's edge to a building; leaves room for street trees

# Per zone: street grid spacing (m) along and across, street width (m), lanes, building use odds.
ZONE_LAYOUT = {
    "centre": ((135, 105), 12.0, 2, (0.22, 0.78, 0.0)),
    "residential_high": ((175, 135), 10.0, 2, (0.88, 0.12, 0.0)),
    "residential_mid": ((135, 110), 9.0, 2, (0.92, 0.08, 0.0)),
    "residential_low": ((95, 62), 7.0, 2, (0.95, 0.05, 0.0)),
    "industrial": ((230, 175), 12.0, 2, (0.0, 0.12, 0.88)),
    "village": ((0, 0), 4.0, 1, (0.9, 0.05, 0.05)),
}


@dataclass
class Scene:
    size: int
    gsd: float
    seed: int
    style: str
    crs: str
    origin: tuple[float, float]  # CRS x of the left edge, y of the top edge
    lonlat: tuple[float, float]
    zones: list[dict] = field(default_factory=list)  # name, polygon
    roads: list[dict] = field(default_factory=list)  # class, lanes, width_m, line
    rail: list[dict] = field(default_factory=list)  # line, width_m
    parks: list[dict] = field(default_factory=list)
    water: list[dict] = field(default_factory=list)  # kind, polygon
    sports_fields: list[dict] = field(default_factory=list)
    fields: list[dict] = field(default_factory=list)  # farmland: polygon, crop
    paved: list[dict] = field(default_factory=list)  # plazas, parking, yards: polygon, kind
    buildings: dict[str, np.ndarray] = field(default_factory=dict)  # struct of arrays
    trees: dict[str, np.ndarray] = field(default_factory=dict)
    vehicles: dict[str, np.ndarray] = field(default_factory=dict)
    ground: list[tuple[np.ndarray, int]] = field(default_factory=list)  # per district: polygon, zone code

    @property
    def extent(self) -> float:
        return self.size * self.gsd

    @property
    def transform(self) -> tuple[float, float, float, float, float, float]:
        return (self.gsd, 0.0, self.origin[0], 0.0, -self.gsd, self.origin[1])

    def footprints(self) -> np.ndarray:
        b = self.buildings
        return geo.rect_corners(b["cx"], b["cy"], b["length"], b["depth"], b["angle"])


# ---------------------------------------------------------------- placement


def place(size: int, gsd: float, seed: int) -> tuple[str, tuple[float, float], tuple[float, float]]:
    """A UTM zone-50N origin for the image near Beijing, moved by the seed; (crs, origin, lon/lat)."""
    from rasterio.warp import transform

    rng = np.random.default_rng([seed, 7])
    lon, lat = 116.4 + rng.uniform(-0.8, 0.8), 39.9 + rng.uniform(-0.6, 0.6)
    crs = "EPSG:32650"
    xs, ys = transform("EPSG:4326", crs, [lon], [lat])
    half = size * gsd / 2
    # whole metres, so every coarse grid lines up with the imagery exactly
    return crs, (float(round(xs[0] - half)), float(round(ys[0] + half))), (lon, lat)


# ---------------------------------------------------------------- generation


class _Builder:
    def __init__(self, size: int, gsd: float, seed: int, style: str):
        self.size, self.gsd, self.seed, self.style = size, gsd, seed, style
        self.L = size * gsd
        self.R = self.L / 2
        self.rng = np.random.default_rng([seed, STYLES.index(style), 1])
        self.centre = np.array([self.R, self.R]) + self.rng.uniform(-0.06, 0.06, 2) * self.L
        self.axis_angle = self.rng.uniform(0, math.pi)
        self.warp = geo.SmoothField(self.rng, wavelength=self.L * 0.6, waves=5)
        self.clearing = geo.SmoothField(self.rng, wavelength=90.0, waves=5)
        self.obstacles: list[tuple[np.ndarray, np.ndarray, float]] = []  # polyline, half widths, kind
        self.roads: list[dict] = []
        self.b: dict[str, list] = {k: [] for k in ("cx", "cy", "length", "depth", "angle", "height", "use", "zone")}
        self.trees: dict[str, list] = {"x": [], "y": [], "crown": []}
        self.parked: list[tuple[float, float, float]] = []
        self.scene_lists: dict[str, list] = {
            k: [] for k in ("parks", "water", "sports_fields", "fields", "paved", "rail", "zones")
        }
        self.ground: list[tuple[np.ndarray, int]] = []
        self.lakes: list[tuple[float, float, float]] = []
        self.lake_park = None

    # -- helpers

    def centrality(self, p: np.ndarray) -> np.ndarray:
        """0 at the centre, about 1 at the image edge; rings bent by a smooth field."""
        d = p - self.centre
        if self.style == "linear":
            a = np.array([math.cos(self.axis_angle), math.sin(self.axis_angle)])
            across = np.abs(d @ np.array([-a[1], a[0]]))
            along = np.abs(d @ a)
            r = across / (0.62 * self.R) + 0.35 * along / self.R
        elif self.style == "grid":
            r = np.abs(d).max(axis=-1) * 0.55 / self.R + np.hypot(d[..., 0], d[..., 1]) * 0.45 / self.R
        else:
            r = np.hypot(d[..., 0], d[..., 1]) / self.R
        return r + 0.07 * self.warp(p[..., 0], p[..., 1])

    def add_obstacle(self, line: np.ndarray, half_width, kind: str) -> None:
        hw = np.broadcast_to(np.asarray(half_width, np.float64), (len(line),)).copy()
        self.obstacles.append((line, hw, kind))

    def obstacle_arrays(self):
        a, b, hw = [], [], []
        for line, w, _ in self.obstacles:
            a.append(line[:-1])
            b.append(line[1:])
            hw.append(np.maximum(w[:-1], w[1:]))
        self._oa, self._ob, self._ohw = np.concatenate(a), np.concatenate(b), np.concatenate(hw)
        lo = np.minimum(self._oa, self._ob) - self._ohw[:, None]
        hi = np.maximum(self._oa, self._ob) + self._ohw[:, None]
        self._obox = np.concatenate([lo, hi], axis=1)

    def clear_of_obstacles(self, pts: np.ndarray, radius: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Whether circles (pts, radius) keep clear of roads, water and rail; box bounds them all."""
        ok = np.ones(len(pts), bool)
        if not len(pts):
            return ok
        near = (
            (self._obox[:, 0] <= box[2])
            & (self._obox[:, 2] >= box[0])
            & (self._obox[:, 1] <= box[3])
            & (self._obox[:, 3] >= box[1])
        )
        if near.any():
            d = geo.segment_distance(pts, self._oa[near], self._ob[near]) - self._ohw[near][None]
            ok &= (d >= radius[:, None]).all(axis=1)
        for lake in self.lakes:
            ok &= np.hypot(pts[:, 0] - lake[0], pts[:, 1] - lake[1]) >= lake[2] + radius
        return ok

    # -- water and rail

    def river(self) -> None:
        rng = self.rng
        L = self.L
        angle = self.axis_angle + (
            rng.uniform(-0.15, 0.15) if self.style == "linear" else rng.uniform(0.5, math.pi - 0.5)
        )
        a = np.array([math.cos(angle), math.sin(angle)])
        n = np.array([-a[1], a[0]])
        offset = rng.uniform(0.12, 0.3) * self.R * rng.choice([-1, 1])
        t = np.arange(-0.85 * L, 0.85 * L + 1, max(8.0, L / 400))
        meander = geo.SmoothField(rng, wavelength=L * 0.35, waves=3)
        lateral = offset + 0.05 * L * meander(t, 0 * t)
        centre = self.centre[None] + t[:, None] * a[None] + lateral[:, None] * n[None]
        keep = (centre > -0.2 * L).all(axis=1) & (centre < 1.2 * L).all(axis=1)
        centre = centre[keep]
        width = float(np.clip(0.014 * L, 24, 160))
        half = width / 2 * (1 + 0.18 * geo.SmoothField(rng, wavelength=L * 0.2, waves=3)(centre[:, 0], centre[:, 1]))
        tang = np.gradient(centre, axis=0)
        tang /= np.hypot(tang[:, 0], tang[:, 1])[:, None]
        norm = np.stack([-tang[:, 1], tang[:, 0]], axis=1)
        polygon = np.concatenate([centre + norm * half[:, None], (centre - norm * half[:, None])[::-1]])
        self.river_line, self.river_half = centre, half
        self.scene_lists["water"].append({"kind": "river", "polygon": polygon})
        self.add_obstacle(centre, half + 6, "water")

    def lake(self) -> None:
        rng = self.rng
        r = float(np.clip(0.035 * self.L, 25, 320))
        for _ in range(20):
            ang = rng.uniform(0, 2 * math.pi)
            c = self.centre + rng.uniform(0.22, 0.45) * self.R * np.array([math.cos(ang), math.sin(ang)])
            if (c < r * 1.5).any() or (c > self.L - r * 1.5).any():
                continue
            if np.min(np.hypot(*(self.river_line - c).T) - self.river_half) > r * 2:
                break
        else:
            return
        k = 48
        theta = np.linspace(0, 2 * math.pi, k, endpoint=False)
        wobble = 1 + 0.18 * np.sin(2 * theta + rng.uniform(0, 6)) + 0.1 * np.sin(3 * theta + rng.uniform(0, 6))
        poly = c[None] + (r * wobble)[:, None] * np.stack([np.cos(theta), np.sin(theta)], axis=1)
        self.lakes.append((float(c[0]), float(c[1]), float(r * wobble.max() + 6)))
        self.lake_park = (c, r * 1.9)
        self.scene_lists["water"].append({"kind": "lake", "polygon": poly})

    def railway(self) -> None:
        rng = self.rng
        L = self.L
        angle = self.axis_angle + (
            rng.uniform(-0.1, 0.1) if self.style == "linear" else rng.uniform(0.3, math.pi - 0.3)
        )
        a = np.array([math.cos(angle), math.sin(angle)])
        n = np.array([-a[1], a[0]])
        offset = rng.uniform(0.25, 0.45) * self.R * rng.choice([-1, 1])
        t = np.arange(-0.8 * L, 0.8 * L + 1, max(20.0, L / 200))
        bend = 0.04 * L * np.sin(t / L * math.pi * rng.uniform(0.5, 1.2) + rng.uniform(0, 6))
        line = self.centre[None] + t[:, None] * a[None] + (offset + bend)[:, None] * n[None]
        keep = (line > -0.2 * L).all(axis=1) & (line < 1.2 * L).all(axis=1)
        line = line[keep]
        self.rail_line = line
        self.scene_lists["rail"].append({"line": line, "width_m": 12.0})
        self.add_obstacle(line, 12.0, "rail")

    # -- roads

    def add_road(self, cls: str, lanes: int, width: float, line: np.ndarray, obstacle: bool = True) -> None:
        # roads end at the image edge, so each one's length (and traffic) lies inside the image
        for run in geo.clip_polyline_box(np.asarray(line, np.float64), 0.0, self.L):
            if geo.polyline_length(run) < 1:
                continue
            self.roads.append({"class": cls, "lanes": int(lanes), "width_m": float(width), "line": np.round(run, 2)})
            if obstacle:
                self.add_obstacle(run, width / 2 + 2.0, "road")

    def major_roads(self) -> None:
        rng, L, R, c = self.rng, self.L, self.R, self.centre
        pad = 0.1 * L

        def clip(line):
            keep = (line > -pad).all(axis=1) & (line < L + pad).all(axis=1)
            runs, cur = [], []
            for p, k in zip(line, keep):
                if k:
                    cur.append(p)
                elif cur:
                    runs.append(np.asarray(cur))
                    cur = []
            if cur:
                runs.append(np.asarray(cur))
            return [r for r in runs if len(r) >= 2]

        if self.style == "radial":
            # ring roads and spokes keep real spacing: a small city gets fewer of them, not narrower ones
            for frac, cls, lanes, width in ((0.3, "arterial", 6, 26.0), (0.62, "highway", 8, 36.0)):
                if frac * R < 450:
                    continue
                theta = np.linspace(0, 2 * math.pi, 181)
                rad = frac * R * (1 + 0.05 * np.sin(3 * theta + rng.uniform(0, 6)))
                ring = c[None] + rad[:, None] * np.stack([np.cos(theta), np.sin(theta)], axis=1)
                for run in clip(ring):
                    self.add_road(cls, lanes, width, run)
            spokes = int(rng.integers(6, 9)) if L >= 3000 else int(rng.integers(2, 4)) if L >= 1500 else 0
            base = rng.uniform(0, 2 * math.pi)
            for k in range(spokes):
                ang = base + 2 * math.pi * k / spokes + rng.uniform(-0.12, 0.12)
                t = np.linspace(max(0.12 * R, 180.0), 1.6 * R, 60)
                wig = 0.02 * R * np.sin(t / R * 5 + rng.uniform(0, 6))
                d = np.array([math.cos(ang), math.sin(ang)])
                line = c[None] + t[:, None] * d[None] + wig[:, None] * np.array([-d[1], d[0]])[None]
                for run in clip(line):
                    self.add_road("arterial", 6, 24.0, run)
        elif self.style == "grid":
            ang = self.axis_angle % (math.pi / 2) - math.pi / 4
            ang *= 0.3  # mostly north-up grids, a little rotated
            self.grid_angle = ang
            a = np.array([math.cos(ang), math.sin(ang)])
            n = np.array([-a[1], a[0]])
            step = float(np.clip(L / 5, 500, 1400))
            t = np.linspace(-L, L, 80)
            for axis, normal in ((a, n), (n, a)):
                for k in range(-8, 9):
                    off = k * step + rng.uniform(-0.08, 0.08) * step
                    if abs(off) > 0.9 * L:
                        continue
                    line = c[None] + t[:, None] * axis[None] + off * normal[None]
                    for run in clip(line):
                        self.add_road("arterial", 6, 24.0, run)
            half = 0.58 * R if L >= 3000 else 0.9 * L
            sq = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1), (-1, -1)], np.float64) * half
            corners = c[None] + sq[:, 0:1] * a[None] + sq[:, 1:2] * n[None]
            dense = np.concatenate(
                [np.linspace(p, q, 30, endpoint=False) for p, q in zip(corners[:-1], corners[1:])] + [corners[-1:]]
            )
            for run in clip(dense):
                self.add_road("highway", 8, 36.0, run)
        else:
            a = np.array([math.cos(self.axis_angle), math.sin(self.axis_angle)])
            n = np.array([-a[1], a[0]])
            t = np.linspace(-L, L, 120)
            spine = ((0.0, "highway", 8, 36.0), (-0.22 * R, "arterial", 6, 24.0), (0.22 * R, "arterial", 6, 24.0))
            for off, cls, lanes, width in spine if L >= 2000 else spine[:1]:
                wig = 0.015 * L * np.sin(t / L * 4 + rng.uniform(0, 6))
                line = c[None] + t[:, None] * a[None] + (off + wig)[:, None] * n[None]
                for run in clip(line):
                    self.add_road(cls, lanes, width, run)
            step = float(np.clip(L / 6, 400, 1200))
            s = np.linspace(-0.5 * L, 0.5 * L, 40)
            for k in range(-12, 13):
                off = k * step + rng.uniform(-0.1, 0.1) * step
                if abs(off) > 0.9 * L:
                    continue
                line = c[None] + off * a[None] + s[:, None] * n[None]
                for run in clip(line):
                    self.add_road("arterial", 4, 18.0, run)

    # -- districts

    def districts(self, progress: Callable[[str], None]) -> None:
        from scipy.spatial import Voronoi

        rng, L = self.rng, self.L
        S = float(np.clip(L / 10, 170, 460))
        n = max(2, int(math.ceil(L / S)))
        g = (np.arange(n) + 0.5) * (L / n)
        gx, gy = np.meshgrid(g, g)
        seeds = np.stack([gx.ravel(), gy.ravel()], axis=1) + rng.uniform(-0.35, 0.35, (n * n, 2)) * (L / n)
        ghost_t = np.linspace(-L * 0.5, L * 1.5, 4 * n + 9)
        ghosts = np.concatenate(
            [np.stack([ghost_t, np.full_like(ghost_t, v)], 1) for v in (-L * 0.5, L * 1.5)]
            + [np.stack([np.full_like(ghost_t, v), ghost_t], 1) for v in (-L * 0.5, L * 1.5)]
        )
        vor = Voronoi(np.concatenate([seeds, ghosts]))
        frame = np.array([(0, 0), (L, 0), (L, L), (0, L)], np.float64)
        zones = self.assign_zones(seeds, S)
        self.seeds, self.seed_zone = seeds, zones

        # district edges become roads: arterials between urban districts, farm tracks outside
        for (i, j), verts in zip(vor.ridge_points, vor.ridge_vertices):
            if -1 in verts or (i >= len(seeds) and j >= len(seeds)):
                continue
            p, q = vor.vertices[verts[0]], vor.vertices[verts[1]]
            seg = geo.clip_line_convex(p, q - p, frame)
            if seg is None:
                continue
            a, b = seg
            # clip_line_convex returns the whole line inside the frame; keep the ridge's own span
            t = np.clip(
                [0.0, 1.0],
                *sorted(
                    ((a - p) @ (q - p) / max((q - p) @ (q - p), 1e-9), (b - p) @ (q - p) / max((q - p) @ (q - p), 1e-9))
                ),
            )
            a, b = p + t[0] * (q - p), p + t[1] * (q - p)
            if np.hypot(*(b - a)) < 5:
                continue
            zi = zones[i] if i < len(seeds) else zones[j]
            zj = zones[j] if j < len(seeds) else zones[i]
            rural = {zi, zj} <= {Z["farmland"], Z["village"]}
            if rural:
                if rng.random() < 0.45:
                    continue
                self.add_road("local", 2, 6.0, np.array([a, b]))
            elif rng.random() < 0.55 and Z["park"] not in (zi, zj):
                self.add_road("arterial", 4, 18.0, np.array([a, b]))
            else:
                self.add_road("local", 2, 10.0, np.array([a, b]))

        polys = []
        for k in range(len(seeds)):
            region = vor.regions[vor.point_region[k]]
            poly = vor.vertices[region]
            centre = poly.mean(axis=0)
            poly = poly[np.argsort(np.arctan2(poly[:, 1] - centre[1], poly[:, 0] - centre[0]))]
            poly = geo.clip_polygon_convex(poly, frame)
            polys.append(poly)
            if len(poly) >= 3:
                self.ground.append((poly, int(zones[k])))
                self.scene_lists["zones"].append({"name": ZONES[zones[k]], "polygon": poly})
        self.district_polys = polys
        # internal streets first, so every street is an obstacle before any building is placed
        self.streets = {}
        for k, poly in enumerate(polys):
            if len(poly) >= 3:
                self.district_streets(k, poly)
        self.obstacle_arrays()
        for k, poly in enumerate(polys):
            if len(poly) >= 3:
                self.fill_district(k, poly)
            if k % 16 == 15:
                progress(f"districts {k + 1}/{len(polys)}")

    def assign_zones(self, seeds: np.ndarray, S: float) -> np.ndarray:
        rng = self.rng
        r = self.centrality(seeds) + rng.uniform(-0.03, 0.03, len(seeds))
        zones = np.full(len(seeds), Z["farmland"])
        zones[r < 0.95] = Z["residential_low"]
        zones[r < 0.68] = Z["residential_mid"]
        zones[r < 0.43] = Z["residential_high"]
        zones[r < 0.17] = Z["centre"]
        zones[np.argmin(np.hypot(*(seeds - self.centre).T))] = Z["centre"]
        rural = zones == Z["farmland"]
        zones[rural & (rng.random(len(seeds)) < 0.3)] = Z["village"]
        # industry along the rail or the river, on one side of town
        feature = self.rail_line if rng.random() < 0.5 else self.river_line
        dist = geo.segment_distance(seeds, feature[:-1], feature[1:]).min(axis=1)
        side = np.array([math.cos(self.axis_angle + 1.3), math.sin(self.axis_angle + 1.3)])
        towards = (seeds - self.centre) @ side
        industrial = (dist < max(0.16 * self.L, 1.2 * S)) & (r > 0.3) & (r < 0.95) & (towards > -0.1 * self.R)
        zones[industrial] = Z["industrial"]
        urban = np.isin(zones, [Z["residential_high"], Z["residential_mid"], Z["residential_low"], Z["centre"]])
        zones[urban & (rng.random(len(seeds)) < 0.07)] = Z["park"]
        if self.lake_park is not None:
            c, rad = self.lake_park
            zones[np.hypot(*(seeds - c).T) < max(rad, 0.6 * S)] = Z["park"]
        return zones

    def district_streets(self, k: int, poly: np.ndarray) -> None:
        zone = ZONES[self.seed_zone[k]]
        rng = self.rng
        centre = self.seeds[k]
        if self.style == "radial":
            d = centre - self.centre
            angle = math.atan2(d[1], d[0]) + rng.uniform(-0.15, 0.15)
        elif self.style == "grid":
            angle = self.grid_angle + rng.uniform(-0.05, 0.05)
        else:
            angle = self.axis_angle + rng.uniform(-0.08, 0.08)
        if zone in ("village", "farmland"):
            angle = rng.uniform(0, math.pi)
        spec = ZONE_LAYOUT.get(zone)
        info = {"angle": angle, "blocks": []}
        self.streets[k] = info
        if spec is None or zone == "village":
            return
        (bx, by), width, lanes, _ = spec
        bx *= rng.uniform(0.85, 1.2)
        by *= rng.uniform(0.85, 1.2)
        a = np.array([math.cos(angle), math.sin(angle)])
        n = np.array([-a[1], a[0]])
        rel = poly - centre
        us, vs = rel @ a, rel @ n
        u0 = us.min() + rng.uniform(0.3, 0.7) * bx
        v0 = vs.min() + rng.uniform(0.3, 0.7) * by
        ucuts = np.arange(u0, us.max(), bx)
        vcuts = np.arange(v0, vs.max(), by)
        for u in ucuts:
            seg = geo.clip_line_convex(centre + u * a, n, poly, margin=4)
            if seg is not None:
                self.add_road("local", lanes, width, np.array(seg))
        for v in vcuts:
            seg = geo.clip_line_convex(centre + v * n, a, poly, margin=4)
            if seg is not None:
                self.add_road("local", lanes, width, np.array(seg))
        ue = np.concatenate([[us.min()], ucuts, [us.max()]])
        ve = np.concatenate([[vs.min()], vcuts, [vs.max()]])
        for i in range(len(ue) - 1):
            for j in range(len(ve) - 1):
                info["blocks"].append((ue[i], ve[j], ue[i + 1], ve[j + 1]))
        info["street_half"] = width / 2
        info["frame"] = (centre, a, n)

    def fill_district(self, k: int, poly: np.ndarray) -> None:
        zone = ZONES[self.seed_zone[k]]
        if zone == "park":
            self.park(poly)
        elif zone == "farmland":
            self.farmland(k, poly, village=False)
        elif zone == "village":
            self.farmland(k, poly, village=True)
        else:
            self.urban(k, poly, zone)

    # -- urban blocks

    def urban(self, k: int, poly: np.ndarray, zone: str) -> None:
        info = self.streets[k]
        centre, a, n = info["frame"]
        half = info["street_half"]
        rows: list[tuple] = []  # local-frame buildings: u, v, length, depth, height, use
        extras: list[tuple] = []  # local-frame paved rects: u, v, length, depth, kind
        tree_pts: list[np.ndarray] = []
        for u0, v0, u1, v1 in info["blocks"]:
            inset = half + SETBACK_M
            bu0, bv0, bu1, bv1 = u0 + inset, v0 + inset, u1 - inset, v1 - inset
            if bu1 - bu0 < 12 or bv1 - bv0 < 12:
                continue
            before = len(rows)
            self.block_layout(zone, bu0, bv0, bu1, bv1, rows, extras)
            if zone in ("residential_high", "residential_mid", "residential_low", "centre"):
                tree_pts.append(self.block_trees(zone, (u0, v0, u1, v1), half, rows[before:]))
        if not rows and not extras:
            return
        box = np.array([poly[:, 0].min(), poly[:, 1].min(), poly[:, 0].max(), poly[:, 1].max()]) + np.array(
            [-150, -150, 150, 150]
        )
        angle = math.atan2(a[1], a[0])
        if rows:
            arr = np.asarray(rows, np.float64)
            wc = centre[None] + arr[:, 0:1] * a[None] + arr[:, 1:2] * n[None]
            corners = geo.rect_corners(wc[:, 0], wc[:, 1], arr[:, 2], arr[:, 3], np.full(len(arr), angle))
            inside = geo.inside_convex(corners.reshape(-1, 2), poly, margin=14.0).reshape(-1, 4).all(axis=1)
            inside &= (corners >= 1).all(axis=(1, 2)) & (corners <= self.L - 1).all(axis=(1, 2))
            inside &= self.rects_clear(wc, arr[:, 2], arr[:, 3], angle, box)
            arr, wc = arr[inside], wc[inside]
            self.b["cx"].append(wc[:, 0])
            self.b["cy"].append(wc[:, 1])
            self.b["length"].append(arr[:, 2])
            self.b["depth"].append(arr[:, 3])
            self.b["angle"].append(np.full(len(arr), angle))
            self.b["height"].append(arr[:, 4])
            self.b["use"].append(arr[:, 5].astype(np.int64))
            self.b["zone"].append(np.full(len(arr), Z[zone]))
        inner = None
        for u, v, span, d, kind in extras:
            wc = centre + u * a + v * n
            corners = geo.rect_corners(wc[0], wc[1], span, d, angle)[0]
            if kind == "parking":  # cars stand on it, so it must be whole and off every road
                if (
                    geo.inside_convex(corners, poly, margin=14.0).all()
                    and self.rects_clear(wc[None], np.array([span]), np.array([d]), angle, box)[0]
                ):
                    self.scene_lists["paved"].append({"kind": kind, "polygon": corners})
                    self.parking_cars(wc, span, d, angle)
                continue
            inner = _shrink(poly, 12.0) if inner is None else inner
            clipped = geo.clip_polygon_convex(corners, inner) if len(inner) >= 3 else np.zeros((0, 2))
            if len(clipped) >= 3 and geo.polygon_area(clipped) > 60:
                self.scene_lists["paved"].append({"kind": kind, "polygon": clipped})
        if tree_pts:
            pts = np.concatenate(tree_pts)
            if len(pts):
                w = centre[None] + pts[:, 0:1] * a[None] + pts[:, 1:2] * n[None]
                ok = geo.inside_convex(w, poly, margin=8.0) & self.clear_of_obstacles(w, pts[:, 2] / 2, box)
                self.add_trees(w[ok], pts[ok, 2])

    def rects_clear(
        self, centres: np.ndarray, length: np.ndarray, depth: np.ndarray, angle, box: np.ndarray
    ) -> np.ndarray:
        """Whether rotated rectangles keep clear of obstacles, tested with a cover of small circles.

        One circle per cell of at most 6 m: a road at least 4 m wide cannot slip between them,
        and the cover overshoots the rectangle by under 1.3 m, which the setback absorbs.
        """
        n = len(centres)
        if not n:
            return np.ones(0, bool)
        nu = np.maximum(1, np.ceil(length / 6.0)).astype(np.int64)
        nv = np.maximum(1, np.ceil(depth / 6.0)).astype(np.int64)
        count = nu * nv
        owner = np.repeat(np.arange(n), count)
        k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        fu = ((k % nu[owner]) + 0.5) / nu[owner] - 0.5
        fv = ((k // nu[owner]) + 0.5) / nv[owner] - 0.5
        ang = np.broadcast_to(np.asarray(angle, np.float64), (n,))[owner]
        du, dv = fu * length[owner], fv * depth[owner]
        c, s = np.cos(ang), np.sin(ang)
        pts = centres[owner] + np.stack([c * du - s * dv, s * du + c * dv], axis=1)
        radius = np.hypot(length[owner] / nu[owner], depth[owner] / nv[owner]) / 2
        ok = np.ones(len(pts), bool)
        for lo in range(0, len(pts), 4096):  # bounds the points × segments matrix
            ok[lo : lo + 4096] = self.clear_of_obstacles(pts[lo : lo + 4096], radius[lo : lo + 4096], box)
        return np.bincount(owner, weights=~ok, minlength=n) == 0

    def pick_use(self, zone: str, n: int = 1) -> np.ndarray:
        return self.rng.choice(3, size=n, p=np.asarray(ZONE_LAYOUT[zone][3]))

    def block_layout(self, zone: str, u0: float, v0: float, u1: float, v1: float, rows: list, extras: list) -> None:
        rng = self.rng
        w, h = u1 - u0, v1 - v0
        if zone == "centre":
            nu, nv = max(1, round(w / 42)), max(1, round(h / 40))
            pw, ph = w / nu, h / nv
            for i in range(nu):
                for j in range(nv):
                    if rng.random() < 0.06:
                        continue
                    span = min(70.0, pw * rng.uniform(0.6, 0.85))
                    d = min(60.0, ph * rng.uniform(0.6, 0.85))
                    height = float(np.clip(rng.lognormal(math.log(55), 0.55), 14, 240))
                    cu = u0 + (i + 0.5) * pw + rng.uniform(-0.5, 0.5) * (pw - span)
                    cv = v0 + (j + 0.5) * ph + rng.uniform(-0.5, 0.5) * (ph - d)
                    rows.append((cu, cv, span, d, height, self.pick_use(zone)[0]))
        elif zone == "residential_high":
            if rng.random() < 0.3:  # point towers
                s = rng.uniform(22, 30)
                gap = rng.uniform(28, 40)
                for cu in np.arange(u0 + s / 2, u1 - s / 2 + 1e-6, s + gap):
                    for cv in np.arange(v0 + s / 2, v1 - s / 2 + 1e-6, s + gap):
                        rows.append(
                            (cu, cv, s, s * rng.uniform(0.85, 1.0), rng.uniform(60, 120), self.pick_use(zone)[0])
                        )
            else:
                d = rng.uniform(14, 18)
                length = rng.uniform(38, 62)
                height = rng.uniform(40, 95)
                spacing = d + rng.uniform(32, 48)
                gap = rng.uniform(12, 22)
                podium = rng.random() < 0.5
                vstart = v0 + (22 if podium else 0)
                if podium:
                    for cu in np.arange(u0 + 15, u1 - 15 + 1e-6, 32):
                        rows.append((cu, v0 + 8, 28, 14, rng.uniform(6, 14), rng.choice(3, p=[0.2, 0.8, 0.0])))
                for cv in np.arange(vstart + d / 2, v1 - d / 2 + 1e-6, spacing):
                    for cu in np.arange(u0 + length / 2, u1 - length / 2 + 1e-6, length + gap):
                        rows.append((cu, cv, length, d, height * rng.uniform(0.9, 1.1), self.pick_use(zone)[0]))
                if rng.random() < 0.4 and h > 60:
                    extras.append((u1 - 22, (v0 + v1) / 2, 16, min(h - 10, 60), "parking"))
        elif zone == "residential_mid":
            d = rng.uniform(11, 14)
            length = rng.uniform(40, 70)
            height = rng.uniform(15, 21)
            spacing = d + rng.uniform(18, 26)
            gap = rng.uniform(8, 14)
            lot = rng.random() < 0.4
            vmax = v1 - (18 if lot else 0)
            for cv in np.arange(v0 + d / 2, vmax - d / 2 + 1e-6, spacing):
                for cu in np.arange(u0 + length / 2, u1 - length / 2 + 1e-6, length + gap):
                    rows.append((cu, cv, length, d, height, self.pick_use(zone)[0]))
                extras.append(((u0 + u1) / 2, cv + d / 2 + 3.5, w, 5.0, "lane"))
            if lot:
                extras.append(((u0 + u1) / 2, v1 - 8, min(w, 90), 16, "parking"))
        elif zone == "residential_low":
            lot_w = rng.uniform(16, 23)
            for side, cv in ((0, v0), (1, v1)):
                for cu in np.arange(u0 + lot_w / 2, u1 - lot_w / 2 + 1e-6, lot_w):
                    if rng.random() < 0.08:
                        continue
                    span, d = rng.uniform(9, min(15, lot_w - 4)), rng.uniform(8, 12)  # 2 m of jitter room: no overlaps
                    if d > h / 2 - 2:
                        continue
                    v = cv + d / 2 if side == 0 else cv - d / 2
                    rows.append((cu + rng.uniform(-1, 1), v, span, d, rng.uniform(6, 10), self.pick_use(zone)[0]))
        elif zone == "industrial":
            parts = max(1, min(4, int(w // 55)))
            pw = w / parts
            for i in range(parts):
                if rng.random() < 0.05:
                    continue
                span = min(180.0, pw * rng.uniform(0.55, 0.88))
                d = min(120.0, h * rng.uniform(0.4, 0.75))
                cu = u0 + (i + 0.5) * pw
                cv = v0 + d / 2 + rng.uniform(0, max(0.0, h - d - 26))
                use = self.pick_use(zone)[0]
                rows.append((cu, cv, span, d, rng.uniform(8, 17), use))
                if v1 - (cv + d / 2) > 26 and rng.random() < 0.6:
                    ol, od = min(pw * 0.5, rng.uniform(18, 30)), rng.uniform(10, 14)
                    rows.append(
                        (
                            cu + rng.uniform(-0.2, 0.2) * (pw - ol),
                            v1 - od / 2 - 3,
                            ol,
                            od,
                            rng.uniform(10, 24),
                            rng.choice(3, p=[0.0, 0.5, 0.5]),
                        )
                    )
                elif v1 - (cv + d / 2) > 24:
                    extras.append((cu, v1 - 10, min(pw * 0.7, 60), 16, "parking"))

    def block_trees(self, zone: str, block: tuple, half: float, rows: list) -> np.ndarray:
        """Street trees along the block's edges and trees in open ground inside it (local frame)."""
        rng = self.rng
        u0, v0, u1, v1 = block
        out = []
        off = half + 2.0
        step = rng.uniform(8, 12)
        for along in np.arange(u0 + off + 4, u1 - off - 4, step):
            out += [(along, v0 + off), (along, v1 - off)]
        for along in np.arange(v0 + off + 4, v1 - off - 4, step):
            out += [(u0 + off, along), (u1 - off, along)]
        pts = np.asarray(out, np.float64).reshape(-1, 2)
        pts = pts[rng.random(len(pts)) < (0.75 if zone != "centre" else 0.6)]
        density = {"centre": 0.0004, "residential_high": 0.0022, "residential_mid": 0.0025, "residential_low": 0.003}[
            zone
        ]
        m = rng.poisson(density * (u1 - u0) * (v1 - v0))
        inner = (
            np.stack([rng.uniform(u0 + off + 3, u1 - off - 3, m), rng.uniform(v0 + off + 3, v1 - off - 3, m)], axis=1)
            if m
            else np.zeros((0, 2))
        )
        if len(inner) and rows:
            r = np.asarray(rows, np.float64)
            du = np.abs(inner[:, None, 0] - r[None, :, 0]) - r[None, :, 2] / 2
            dv = np.abs(inner[:, None, 1] - r[None, :, 1]) - r[None, :, 3] / 2
            clear = ((du > 5) | (dv > 5)).all(axis=1)
            inner = inner[clear]
        pts = np.concatenate([pts, inner])
        crown = rng.uniform(3.5, 7.5, len(pts))
        return np.concatenate([pts, crown[:, None]], axis=1)

    def parking_cars(self, centre: np.ndarray, span: float, d: float, angle: float) -> None:
        rng = self.rng
        a = np.array([math.cos(angle), math.sin(angle)])
        n = np.array([-a[1], a[0]])
        for row in (-d / 2 + 2.8, d / 2 - 2.8):
            for u in np.arange(-span / 2 + 1.6, span / 2 - 1.6, 2.6):
                if rng.random() < 0.65:
                    p = centre + u * a + row * n
                    self.parked.append((p[0], p[1], math.degrees(angle) + 90 + (180 if rng.random() < 0.5 else 0)))

    # -- parks, farmland, villages

    def park(self, poly: np.ndarray) -> None:
        rng = self.rng
        inner = _shrink(poly, 11.0)
        if len(inner) < 3:
            return
        self.scene_lists["parks"].append({"polygon": inner})
        box = np.array([inner[:, 0].min(), inner[:, 1].min(), inner[:, 0].max(), inner[:, 1].max()])
        area = geo.polygon_area(inner)
        sports = None
        if rng.random() < 0.45 and area > 25000:
            ang = rng.uniform(0, math.pi)
            c = inner.mean(axis=0) + rng.uniform(-20, 20, 2)
            rect = geo.rect_corners(c[0], c[1], 120, 78, ang)[0]
            if (
                geo.inside_convex(rect, inner, 3).all()
                and self.clear_of_obstacles(c[None], np.array([72.0]), box + [-150, -150, 150, 150])[0]
            ):
                self.scene_lists["sports_fields"].append({"polygon": rect})
                sports = rect
        m = rng.poisson(area * 0.02)
        pts = np.stack([rng.uniform(box[0], box[2], m), rng.uniform(box[1], box[3], m)], axis=1)
        crown = rng.uniform(4, 10, m)
        # groves and open lawns: keep trees where a smooth field is high
        ok = geo.inside_convex(pts, inner, 2.0) & (self.clearing(pts[:, 0], pts[:, 1]) > 0.35)
        if sports is not None:
            ok &= ~geo.inside_convex(pts, sports, -6.0)
        ok &= self.clear_of_obstacles(pts, crown / 2, box + [-150, -150, 150, 150])
        self.add_trees(pts[ok], crown[ok])

    def farmland(self, k: int, poly: np.ndarray, village: bool) -> None:
        rng = self.rng
        angle = self.streets[k]["angle"]
        a = np.array([math.cos(angle), math.sin(angle)])
        n = np.array([-a[1], a[0]])
        centre = self.seeds[k]
        inner = _shrink(poly, 6.0)
        if len(inner) < 3:
            return
        vr = 0.0
        box = np.array([inner[:, 0].min(), inner[:, 1].min(), inner[:, 0].max(), inner[:, 1].max()])
        big = box + [-150, -150, 150, 150]
        if village:
            vr = rng.uniform(70, 130)
            self.village(centre, vr, angle, inner, big)
        rel = inner - centre
        us, vs = rel @ a, rel @ n
        u = us.min()
        crops = len(CROPS)
        while u < us.max():
            cw = rng.uniform(70, 190)
            v = vs.min()
            while v < vs.max():
                sh = rng.uniform(18, 70)
                cu, cv = u + cw / 2, v + sh / 2
                c = centre + cu * a + cv * n
                if np.hypot(*(c - centre)) > vr + 25:
                    rect = geo.rect_corners(c[0], c[1], cw - 3, sh - 2.5, angle)[0]
                    clipped = geo.clip_polygon_convex(rect, inner)
                    if len(clipped) >= 3 and geo.polygon_area(clipped) > 150:
                        self.scene_lists["fields"].append(
                            {"crop": CROPS[int(rng.integers(crops))][0], "polygon": clipped}
                        )
                v += sh
            # windbreak of trees along some field columns
            if rng.random() < 0.25:
                t = np.arange(vs.min(), vs.max(), rng.uniform(6, 9))
                pts = centre[None] + (u + cw)[None, None] * a[None] + t[:, None] * n[None]
                crown = rng.uniform(4, 7, len(pts))
                ok = geo.inside_convex(pts, inner, 4.0) & (np.hypot(*(pts - centre).T) > vr + 10)
                ok &= self.clear_of_obstacles(pts, crown / 2, big)
                self.add_trees(pts[ok], crown[ok])
            u += cw

    def village(self, centre: np.ndarray, radius: float, angle: float, inner: np.ndarray, big: np.ndarray) -> None:
        rng = self.rng
        a = np.array([math.cos(angle), math.sin(angle)])
        n = np.array([-a[1], a[0]])
        lane_lines = []
        for direction, off in ((a, 0.0), (n, rng.uniform(-0.3, 0.3) * radius)):
            normal = np.array([-direction[1], direction[0]])
            seg = geo.clip_line_convex(centre + off * normal, direction, inner, margin=2)
            if seg is not None:
                p, q = seg
                t0 = max(-radius * 1.3, (p - centre) @ direction)
                t1 = min(radius * 1.3, (q - centre) @ direction)
                if t1 > t0:
                    line = np.array([centre + off * normal + t0 * direction, centre + off * normal + t1 * direction])
                    self.add_road("local", 1, 5.0, line)
                    lane_lines.append(line)
        cell_u, cell_v = rng.uniform(14, 18), rng.uniform(12, 16)
        rows = []
        for cu in np.arange(-radius, radius, cell_u):
            for cv in np.arange(-radius, radius, cell_v):
                wob = radius * (1 + 0.25 * math.sin(3 * math.atan2(cv, cu) + rng.uniform(0, 1)))
                if math.hypot(cu, cv) > wob or rng.random() < 0.22:
                    continue
                span, d = rng.uniform(7, min(13, cell_u - 2.5)), rng.uniform(6, min(10, cell_v - 2.5))
                rows.append((cu + rng.uniform(-1, 1), cv + rng.uniform(-1, 1), span, d, rng.uniform(3.5, 7.5)))
        if not rows:
            return
        arr = np.asarray(rows)
        wc = centre[None] + arr[:, 0:1] * a[None] + arr[:, 1:2] * n[None]
        # the village's own lanes came after the obstacle arrays were built: test them here
        radius_b = np.hypot(arr[:, 2], arr[:, 3]) / 2
        ok = geo.inside_convex(wc, inner, 8.0) & self.clear_of_obstacles(wc, radius_b + 1, big)
        for line in lane_lines:
            ok &= geo.segment_distance(wc, line[:-1], line[1:]).min(axis=1) > 2.5 + radius_b + 1
        arr, wc = arr[ok], wc[ok]
        self.b["cx"].append(wc[:, 0])
        self.b["cy"].append(wc[:, 1])
        self.b["length"].append(arr[:, 2])
        self.b["depth"].append(arr[:, 3])
        self.b["angle"].append(np.full(len(arr), angle) + rng.uniform(-0.06, 0.06, len(arr)))
        self.b["height"].append(arr[:, 4])
        self.b["use"].append(self.pick_use("village", len(arr)))
        self.b["zone"].append(np.full(len(arr), Z["village"]))
        # a few yard trees between houses
        m = max(1, len(arr) // 3)
        pts = centre[None] + rng.uniform(-radius, radius, (m, 2))
        crown = rng.uniform(4, 8, m)
        du = geo.segment_distance(pts, wc, wc).min(axis=1) if len(wc) else np.full(m, 99.0)
        ok = (du > 9) & geo.inside_convex(pts, inner, 6.0) & self.clear_of_obstacles(pts, crown / 2, big)
        for line in lane_lines:
            ok &= geo.segment_distance(pts, line[:-1], line[1:]).min(axis=1) > 2.5 + crown / 2
        self.add_trees(pts[ok], crown[ok])

    def add_trees(self, pts: np.ndarray, crown: np.ndarray) -> None:
        if len(pts):
            self.trees["x"].append(pts[:, 0])
            self.trees["y"].append(pts[:, 1])
            self.trees["crown"].append(crown)

    # -- vehicles

    def traffic(self) -> dict[str, np.ndarray]:
        rng = self.rng
        xs, ys, kinds, heads = [], [], [], []
        density = {"highway": 1 / 70, "arterial": 1 / 90, "local": 1 / 220}
        for road in self.roads:
            line, lanes, width, cls = road["line"], road["lanes"], road["width_m"], road["class"]
            seg = np.diff(line, axis=0)
            seglen = np.hypot(seg[:, 0], seg[:, 1])
            total = seglen.sum()
            cum = np.concatenate([[0], np.cumsum(seglen)])
            lane_w = width / max(lanes, 1) * (0.85 if cls == "highway" else 0.9)
            for lane in range(lanes):
                offset = (lane - (lanes - 1) / 2) * lane_w if lanes > 1 else 0.0
                gaps = 7.5 + rng.exponential(1 / density[cls], int(total * density[cls] * 2) + 4)
                pos = np.cumsum(gaps) - rng.uniform(0, gaps[0])
                pos = pos[(pos > 3) & (pos < total - 3)]
                if not len(pos):
                    continue
                idx = np.clip(np.searchsorted(cum, pos) - 1, 0, len(seg) - 1)
                t = (pos - cum[idx]) / np.maximum(seglen[idx], 1e-9)
                p = line[idx] + t[:, None] * seg[idx]
                d = seg[idx] / np.maximum(seglen[idx], 1e-9)[:, None]
                p = p + offset * np.stack([-d[:, 1], d[:, 0]], axis=1)
                heading = np.degrees(np.arctan2(d[:, 1], d[:, 0])) + (
                    180.0 if offset < 0 or (lanes == 1 and rng.random() < 0.5) else 0.0
                )
                kind = rng.choice(3, size=len(p), p=[0.86, 0.06, 0.08] if cls != "local" else [0.96, 0.01, 0.03])
                xs.append(p[:, 0])
                ys.append(p[:, 1])
                kinds.append(kind)
                heads.append(heading)
        if self.parked:
            park = np.asarray(self.parked)
            xs.append(park[:, 0])
            ys.append(park[:, 1])
            kinds.append(np.zeros(len(park), np.int64))
            heads.append(park[:, 2])
        if not xs:
            return {"x": np.zeros(0), "y": np.zeros(0), "kind": np.zeros(0, np.int64), "heading": np.zeros(0)}
        x, y = np.concatenate(xs), np.concatenate(ys)
        keep = (x > 2) & (y > 2) & (x < self.L - 2) & (y < self.L - 2)
        # no cars in rivers: bridges carry only what fits on them, which these roads do
        return {
            "x": x[keep],
            "y": y[keep],
            "kind": np.concatenate(kinds)[keep],
            "heading": (np.concatenate(heads)[keep] % 360),
        }


CROPS = (
    ("wheat", (168, 160, 96)),
    ("young wheat", (118, 146, 70)),
    ("maize", (96, 128, 58)),
    ("vegetables", (82, 118, 66)),
    ("fallow", (150, 128, 100)),
    ("ploughed", (126, 102, 80)),
    ("greenhouse", (208, 210, 206)),
    ("orchard", (74, 104, 60)),
)


def _shrink(poly: np.ndarray, margin: float) -> np.ndarray:
    """A convex polygon moved in by ``margin`` on every edge (by clipping against shifted half-planes)."""
    normals, starts = geo._inward_normals(poly)
    big = np.array([(-1e7, -1e7), (1e7, -1e7), (1e7, 1e7), (-1e7, 1e7)], np.float64)
    out = big
    for nrm, s in zip(normals, starts):
        p = s + nrm * margin
        d = np.array([-nrm[1], nrm[0]])
        half = np.array([p - d * 1e7, p + d * 1e7, p + d * 1e7 + nrm * 1e7, p - d * 1e7 + nrm * 1e7])
        out = geo.clip_polygon_convex(out, half)
        if len(out) < 3:
            return np.zeros((0, 2))
    return out


def generate(size: int, gsd: float, seed: int, style: str, progress: Callable[[str], None] | None = None) -> Scene:
    """Build the whole vector scene; deterministic for (size, gsd, seed, style)."""
    say = progress or (lambda text: None)
    crs, origin, lonlat = place(size, gsd, seed)
    b = _Builder(size, gsd, seed, style)
    b.river()
    b.lake()
    b.railway()
    b.major_roads()
    b.districts(say)
    vehicles = b.traffic()
    rng = np.random.default_rng([seed, STYLES.index(style), 2])

    def cat(key, dtype=np.float64):
        parts = b.b[key]
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    buildings = {k: cat(k) for k in ("cx", "cy", "length", "depth", "angle", "height")}
    buildings["use"] = cat("use", np.int64)
    buildings["zone"] = cat("zone", np.int64)
    n = len(buildings["cx"])
    # round geometry to the centimetre now, so what scene.json holds is exactly what was drawn and counted
    for k in ("cx", "cy", "length", "depth"):
        buildings[k] = np.round(buildings[k], 2)
    buildings["height"] = np.round(buildings["height"], 1)
    buildings["storeys"] = np.maximum(1, np.round(buildings["height"] / STOREY_M[buildings["use"]])).astype(np.int64)
    # independent of use and zone by construction: drawn from its own stream
    buildings["colour"] = rng.choice(len(ROOF_COLOURS), size=n, p=ROOF_COLOUR_P)
    buildings["material"] = rng.choice(len(ROOF_MATERIALS), size=n, p=ROOF_MATERIAL_P)
    buildings["tone"] = rng.uniform(-1, 1, (n, 3))  # per-roof colour jitter, for rendering only
    trees = {k: (np.round(np.concatenate(v), 2) if v else np.zeros(0)) for k, v in b.trees.items()}
    keep = (trees["x"] > 0) & (trees["y"] > 0) & (trees["x"] < b.L) & (trees["y"] < b.L)
    trees = {k: v[keep] for k, v in trees.items()}
    vehicles = {k: (np.round(v, 2) if v.dtype.kind == "f" else v) for k, v in vehicles.items()}
    lists = b.scene_lists
    return Scene(
        size=size,
        gsd=gsd,
        seed=seed,
        style=style,
        crs=crs,
        origin=origin,
        lonlat=lonlat,
        zones=lists["zones"],
        roads=b.roads,
        rail=lists["rail"],
        parks=lists["parks"],
        water=lists["water"],
        sports_fields=lists["sports_fields"],
        fields=lists["fields"],
        paved=lists["paved"],
        buildings=buildings,
        trees=trees,
        vehicles=vehicles,
        ground=b.ground,
    )


# ---------------------------------------------------------------- scene.json


def write_scene_json(scene: Scene, path, classes: dict, formulas: dict, extra: dict[str, Any]) -> None:
    """Stream scene.json: objects one by one, so a 16k city never builds one huge string."""
    ox, oy = scene.origin

    def pts(a: np.ndarray) -> list:
        a = np.asarray(a, np.float64)
        return [[round(ox + float(x), 2), round(oy - float(y), 2)] for x, y in a]

    def bbox(a: np.ndarray) -> list:
        a = np.asarray(a, np.float64)
        return [
            round(ox + float(a[:, 0].min()), 2),
            round(oy - float(a[:, 1].max()), 2),
            round(ox + float(a[:, 0].max()), 2),
            round(oy - float(a[:, 1].min()), 2),
        ]

    head = {
        "version": 1,
        "seed": scene.seed,
        "style": scene.style,
        "size": scene.size,
        "gsd": scene.gsd,
        "crs": scene.crs,
        "transform": list(scene.transform),
        "centre_lonlat": [round(scene.lonlat[0], 6), round(scene.lonlat[1], 6)],
        "sun": {"azimuth_deg": SUN_AZIMUTH_DEG, "elevation_deg": SUN_ELEVATION_DEG},
        "classes": {str(k): v for k, v in classes.items()},
        "formulas": formulas,
        **extra,
    }
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(head, indent=1)[:-2] + ",\n")

        def section(name: str, items, last: bool = False) -> None:
            f.write(f' "{name}": [')
            first = True
            for item in items:
                f.write(("\n  " if first else ",\n  ") + json.dumps(item, separators=(",", ":")))
                first = False
            f.write("\n ]" + ("\n" if last else ",\n"))

        b = scene.buildings
        corners = scene.footprints()

        def buildings():
            for i in range(len(b["cx"])):
                yield {
                    "id": f"b{i}",
                    "use": USES[b["use"][i]],
                    "zone": ZONES[b["zone"][i]],
                    "footprint": pts(corners[i]),
                    "bbox": bbox(corners[i]),
                    "height_m": float(b["height"][i]),
                    "storeys": int(b["storeys"][i]),
                    "roof_colour": ROOF_COLOURS[b["colour"][i]][0],
                    "roof_material": ROOF_MATERIALS[b["material"][i]],
                    "footprint_m2": float(b["footprint_m2"][i]),
                    "floor_area_m2": float(b["floor_area_m2"][i]),
                    "population": float(b["population"][i]),
                    "carbon": float(b["carbon"][i]),
                    "gdp": float(b["gdp"][i]),
                    "nightlight": float(b["nightlight"][i]),
                    "noise": {k: float(b[f"noise_{k}"][i]) for k in ("population", "carbon", "gdp", "nightlight")},
                }

        def roads():
            for i, r in enumerate(scene.roads):
                yield {
                    "id": f"r{i}",
                    "class": r["class"],
                    "lanes": r["lanes"],
                    "width_m": r["width_m"],
                    "line": pts(r["line"]),
                    "bbox": bbox(r["line"]),
                    "length_m": r["length_m"],
                    "carbon": r["carbon"],
                    "nightlight": r["nightlight"],
                    "noise": r["noise"],
                }

        def polys(items, prefix, keys=()):
            for i, item in enumerate(items):
                yield {
                    "id": f"{prefix}{i}",
                    **{k: item[k] for k in keys},
                    "polygon": pts(item["polygon"]),
                    "bbox": bbox(item["polygon"]),
                }

        section("buildings", buildings())
        section("roads", roads())
        section(
            "rail",
            (
                {"id": f"rl{i}", "width_m": r["width_m"], "line": pts(r["line"]), "bbox": bbox(r["line"])}
                for i, r in enumerate(scene.rail)
            ),
        )
        section("parks", polys(scene.parks, "p"))
        section("water", polys(scene.water, "w", ("kind",)))
        section("sports_fields", polys(scene.sports_fields, "s"))
        section("fields", polys(scene.fields, "f", ("crop",)))
        section("paved", polys(scene.paved, "pv", ("kind",)))
        t = scene.trees
        section(
            "trees",
            (
                {
                    "id": f"t{i}",
                    "x": round(ox + float(t["x"][i]), 2),
                    "y": round(oy - float(t["y"][i]), 2),
                    "crown_m": float(t["crown"][i]),
                }
                for i in range(len(t["x"]))
            ),
        )
        v = scene.vehicles  # local headings run clockwise from east; scene.json holds compass bearings
        section(
            "vehicles",
            (
                {
                    "id": f"v{i}",
                    "x": round(ox + float(v["x"][i]), 2),
                    "y": round(oy - float(v["y"][i]), 2),
                    "kind": VEHICLE_KINDS[v["kind"][i]],
                    "heading_deg": round((90.0 + float(v["heading"][i])) % 360.0, 1),
                }
                for i in range(len(v["x"]))
            ),
        )
        section(
            "zones",
            (
                {"id": f"z{i}", "name": z["name"], "polygon": pts(z["polygon"]), "bbox": bbox(z["polygon"])}
                for i, z in enumerate(scene.zones)
            ),
            last=True,
        )
        f.write("}\n")
