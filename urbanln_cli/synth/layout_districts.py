"""Laying out the city: river, lake and rail, the major roads, and the districts with their zones and streets."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from urbanln_cli.synth import geometry as geo
from urbanln_cli.synth.layout_blocks import _BlockLayout
from urbanln_cli.synth.scene_model import STYLES, ZONE_LAYOUT, ZONES, Z


class _Builder(_BlockLayout):
    """Builds the whole vector scene in local metres; the block-filling methods come from ``_BlockLayout``."""

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
