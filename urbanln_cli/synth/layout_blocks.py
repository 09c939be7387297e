"""Filling a district: urban blocks of buildings, parks, farmland and villages, trees, and the traffic on the roads."""

from __future__ import annotations

import math

import numpy as np

from urbanln_cli.synth import geometry as geo
from urbanln_cli.synth.scene_model import CROPS, SETBACK_M, ZONE_LAYOUT, Z


class _BlockLayout:
    """The block-filling half of the scene builder (a mixin of ``layout_districts._Builder``)."""

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
