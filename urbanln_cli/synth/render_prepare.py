"""Preparing a scene for drawing: flat draw lists in pixel coordinates, colours, and a grid index of blocks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from urbanln_cli.synth import geometry as geo
from urbanln_cli.synth.scene import (
    CROPS,
    ROOF_COLOURS,
    SUN_AZIMUTH_DEG,
    SUN_ELEVATION_DEG,
    USE_CLASS,
    VEHICLE_KINDS,
    VEHICLE_SIZE,
    ZONES,
    Scene,
)

MARGIN = 4  # pixels drawn around each block, so the blur sees its neighbours
LC_SHRINK = 0.3  # PIL fills a polygon's outline too; insetting by 0.3 px makes areas unbiased
CIRCLE_SHRINK = 0.45

# zone ground: (colour, land-cover class)
GROUND = {
    "centre": ((150, 147, 140), 7),
    "residential_high": ((122, 128, 100), 1),
    "residential_mid": ((118, 126, 94), 1),
    "residential_low": ((108, 128, 82), 1),
    "industrial": ((158, 152, 138), 7),
    "park": ((90, 124, 68), 1),
    "village": ((146, 132, 108), 6),
    "farmland": ((136, 122, 96), 6),
}
TEXTURE = np.array([0.03, 0.14, 0.05, 0.06, 0.06, 0.06, 0.12, 0.07, 0.10, 0.12])  # by class: grain strength
SHADOW_RGB = np.array([0.46, 0.49, 0.6])
VEHICLE_COLOURS = np.array(
    [(235, 235, 232), (30, 30, 34), (170, 172, 176), (150, 40, 36), (40, 64, 120), (110, 112, 116), (200, 190, 170)]
)
VEHICLE_P = np.array([0.3, 0.2, 0.2, 0.08, 0.08, 0.1, 0.04])


@dataclass
class Layer:
    """Primitives of one kind, their bounding boxes (px) and what to draw them with."""

    kind: str
    bbox: np.ndarray  # (n, 4): x0, y0, x1, y1
    data: dict = field(default_factory=dict)
    offsets: np.ndarray | None = None  # CSR grid index: block -> slice of items
    items: np.ndarray | None = None

    def index(self, nb: int, block: int) -> None:
        n = len(self.bbox)
        if not n:
            self.offsets, self.items = np.zeros(nb * nb + 1, np.int64), np.zeros(0, np.int64)
            return
        b = np.floor(self.bbox / block).astype(np.int64)
        b = np.clip(b, 0, nb - 1)
        bx0, by0, bx1, by1 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
        w, h = bx1 - bx0 + 1, by1 - by0 + 1
        count = w * h
        owner = np.repeat(np.arange(n), count)
        k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        bx = bx0[owner] + k % w[owner]
        by = by0[owner] + k // w[owner]
        block_id = by * nb + bx
        order = np.lexsort((owner, block_id))  # by block, then draw order
        self.items = owner[order]
        self.offsets = np.concatenate([[0], np.cumsum(np.bincount(block_id, minlength=nb * nb))])

    def at(self, block_id: int) -> np.ndarray:
        return self.items[self.offsets[block_id] : self.offsets[block_id + 1]]


@dataclass
class RenderData:
    size: int
    block: int
    seed: int
    gsd: float
    layers: dict[str, Layer]
    shadow: tuple[float, float]  # shadow offset per metre of height, in px
    light: tuple[float, float]  # unit vector towards the sun, px

    @property
    def blocks(self) -> int:
        return math.ceil(self.size / self.block)


def _bbox_of(polys: list[np.ndarray], pad: float = 1.0) -> np.ndarray:
    if not polys:
        return np.zeros((0, 4))
    return np.array(
        [(p[:, 0].min() - pad, p[:, 1].min() - pad, p[:, 0].max() + pad, p[:, 1].max() + pad) for p in polys]
    )


def _jitter(rng, base, n, amount=8.0) -> np.ndarray:
    return np.clip(
        np.asarray(base, np.float64)[None]
        + rng.uniform(-amount, amount, (n, 1))
        + rng.uniform(-amount / 3, amount / 3, (n, 3)),
        0,
        255,
    )


def prepare(scene: Scene, block: int = 512) -> RenderData:
    """Flatten the scene into draw lists in pixel coordinates, indexed by block."""
    rng = np.random.default_rng([scene.seed, 4])
    g = scene.gsd

    def px(a):
        return np.asarray(a, np.float64) / g - 0.5

    az = math.radians(SUN_AZIMUTH_DEG)
    # azimuth is clockwise from north; image x is east and y is south, and shadows point away from the sun
    toward_sun = (math.sin(az), -math.cos(az))
    per_m = 1 / math.tan(math.radians(SUN_ELEVATION_DEG)) / g
    shadow = (-toward_sun[0] * per_m, -toward_sun[1] * per_m)
    layers: dict[str, Layer] = {}

    def poly_layer(name, polys, colours, classes, extra=None):
        polys = [px(p) for p in polys]
        layers[name] = Layer(
            "poly",
            _bbox_of(polys),
            {"polys": polys, "colour": colours, "cls": np.asarray(classes, np.uint8), **(extra or {})},
        )

    poly_layer(
        "ground",
        [p for p, _ in scene.ground],
        _jitter(rng, (0, 0, 0), len(scene.ground), 6)
        + np.array([GROUND[ZONES[z]][0] for _, z in scene.ground]).reshape(-1, 3),
        [GROUND[ZONES[z]][1] for _, z in scene.ground],
    )
    crop_rgb = {name: rgb for name, rgb in CROPS}
    poly_layer(
        "fields",
        [f["polygon"] for f in scene.fields],
        np.array([crop_rgb[f["crop"]] for f in scene.fields]).reshape(-1, 3)
        + rng.uniform(-10, 10, (len(scene.fields), 1)),
        [6] * len(scene.fields),
        {"crop": [f["crop"] for f in scene.fields]},
    )
    paved_rgb = {"lane": (172, 170, 162), "parking": (108, 108, 110)}
    poly_layer(
        "paved",
        [p["polygon"] for p in scene.paved],
        _jitter(rng, (0, 0, 0), len(scene.paved), 5)
        + np.array([paved_rgb[p["kind"]] for p in scene.paved]).reshape(-1, 3),
        [7] * len(scene.paved),
    )
    poly_layer(
        "parks",
        [p["polygon"] for p in scene.parks],
        _jitter(rng, (86, 122, 64), len(scene.parks), 5),
        [1] * len(scene.parks),
    )
    poly_layer(
        "sports",
        [p["polygon"] for p in scene.sports_fields],
        np.tile([(168, 92, 72)], (len(scene.sports_fields), 1)),
        [1] * len(scene.sports_fields),
    )
    water_rgb = {"river": (50, 76, 86), "lake": (44, 78, 90)}
    poly_layer(
        "water",
        [w["polygon"] for w in scene.water],
        np.array([water_rgb[w["kind"]] for w in scene.water]).reshape(-1, 3),
        [0] * len(scene.water),
    )

    # linear features as quads per segment (+ round joints): rail, then sidewalks, then roads
    segs = {"a": [], "b": [], "w": [], "colour": [], "cls": [], "layer": []}

    def add_line(line, width_px, colour, cls, layer):
        line = px(line)
        for p, q in zip(line[:-1], line[1:]):
            segs["a"].append(p)
            segs["b"].append(q)
            segs["w"].append(width_px)
            segs["colour"].append(colour)
            segs["cls"].append(cls)
            segs["layer"].append(layer)

    for r in scene.rail:
        add_line(r["line"], r["width_m"] / g, (122, 114, 104), 9, 0)
    road_rgb = {"highway": (80, 82, 86), "arterial": (88, 89, 92), "local": (100, 100, 100)}
    marks = []
    order = sorted(
        range(len(scene.roads)), key=lambda i: ("local", "arterial", "highway").index(scene.roads[i]["class"])
    )
    for i in order:
        r = scene.roads[i]
        if r["class"] != "highway" and r["width_m"] >= 8:
            add_line(r["line"], (r["width_m"] + 5) / g, (166, 164, 158), 7, 1)
    for i in order:
        r = scene.roads[i]
        base = (
            road_rgb[r["class"]] if r["width_m"] >= 7 else ((146, 140, 126) if r["width_m"] >= 6 else (150, 136, 112))
        )
        tone = rng.uniform(-7, 7)
        add_line(r["line"], r["width_m"] / g - 2 * LC_SHRINK, tuple(np.clip(np.add(base, tone), 0, 255)), 2, 2)
        marks.append(_markings(r, px, 1 / g))
    a, b = np.asarray(segs["a"]).reshape(-1, 2), np.asarray(segs["b"]).reshape(-1, 2)
    w = np.asarray(segs["w"])
    bbox = np.concatenate([np.minimum(a, b) - w[:, None] / 2 - 1, np.maximum(a, b) + w[:, None] / 2 + 1], axis=1)
    layers["lines"] = Layer(
        "lines",
        bbox,
        {
            "a": a,
            "b": b,
            "w": w,
            "colour": np.asarray(segs["colour"]).reshape(-1, 3),
            "cls": np.asarray(segs["cls"], np.uint8),
        },
    )
    m = np.concatenate([x for x in marks if len(x)]) if any(len(x) for x in marks) else np.zeros((0, 6))
    layers["marks"] = Layer(
        "marks",
        np.concatenate([np.minimum(m[:, 0:2], m[:, 2:4]) - 2, np.maximum(m[:, 0:2], m[:, 2:4]) + 2], axis=1),
        {"m": m},
    )

    t = scene.trees
    tx, ty, tr = px(t["x"]), px(t["y"]), t["crown"] / g / 2
    tree_shadow = tr * 1.6 * per_m * g  # trees about 1.6 crowns tall
    layers["trees"] = Layer(
        "trees",
        np.stack(
            [
                tx - tr - 1 + np.minimum(0, shadow[0] * tree_shadow),
                ty - tr - 1 + np.minimum(0, shadow[1] * tree_shadow),
                tx + tr + 1 + np.maximum(0, shadow[0] * tree_shadow),
                ty + tr + 1 + np.maximum(0, shadow[1] * tree_shadow),
            ],
            axis=1,
        ).reshape(-1, 4),
        {"x": tx, "y": ty, "r": tr, "sh": tree_shadow, "colour": _jitter(rng, (54, 84, 46), len(tx), 10)},
    )

    bd = scene.buildings
    corners = px(scene.footprints()) if len(bd["cx"]) else np.zeros((0, 4, 2))
    lc_corners = (
        px(
            geo.rect_corners(
                bd["cx"],
                bd["cy"],
                np.maximum(bd["length"] - 2 * LC_SHRINK * g, 0.1),
                np.maximum(bd["depth"] - 2 * LC_SHRINK * g, 0.1),
                bd["angle"],
            )
        )
        if len(bd["cx"])
        else corners
    )
    off = (
        np.stack([shadow[0] * bd["height"] * g, shadow[1] * bd["height"] * g], axis=1)
        if len(bd["cx"])
        else np.zeros((0, 2))
    )
    lo = np.minimum(corners.min(axis=1), corners.min(axis=1) + off) - 2
    hi = np.maximum(corners.max(axis=1), corners.max(axis=1) + off) + 2
    colours = (
        np.array([rgb for _, rgb in ROOF_COLOURS], np.float64)[bd["colour"]] * (1 + 0.07 * bd["tone"])
        if len(bd["cx"])
        else np.zeros((0, 3))
    )
    layers["buildings"] = Layer(
        "buildings",
        np.concatenate([lo, hi], axis=1).reshape(-1, 4),
        {
            "corners": corners,
            "lc": lc_corners,
            "off": off,
            "colour": np.clip(colours, 0, 255),
            "cls": USE_CLASS[bd["use"]] if len(bd["cx"]) else np.zeros(0, np.uint8),
            "material": bd["material"],
            "angle": bd["angle"],
            "length": bd["length"] / g,
            "depth": bd["depth"] / g,
            "cx": px(bd["cx"]),
            "cy": px(bd["cy"]),
            "height": bd["height"],
        },
    )

    v = scene.vehicles
    n = len(v["x"])
    sizes = np.array([VEHICLE_SIZE[k] for k in VEHICLE_KINDS])[v["kind"]] / g if n else np.zeros((0, 2))
    vc = (
        geo.rect_corners(px(v["x"]), px(v["y"]), sizes[:, 0], sizes[:, 1], np.radians(v["heading"]))
        if n
        else np.zeros((0, 4, 2))
    )
    colour = VEHICLE_COLOURS[rng.choice(len(VEHICLE_COLOURS), size=n, p=VEHICLE_P)] if n else np.zeros((0, 3))
    colour[v["kind"] == 1] = (206, 196, 120)
    layers["vehicles"] = Layer(
        "vehicles",
        np.concatenate([vc.min(axis=1) - 2, vc.max(axis=1) + 2], axis=1).reshape(-1, 4),
        {"corners": vc, "colour": colour, "sizes": sizes, "heading": np.radians(v["heading"]), "kind": v["kind"]},
    )

    data = RenderData(scene.size, block, scene.seed, g, layers, shadow, toward_sun)
    for layer in layers.values():
        layer.index(data.blocks, block)
    return data


def _markings(road: dict, px, px_per_m: float) -> np.ndarray:
    """Lane markings as short line segments (x0, y0, x1, y1, width px, colour code)."""
    line = px(road["line"])
    lanes, width, cls = road["lanes"], road["width_m"], road["class"]
    if lanes < 2 or width < 7:
        return np.zeros((0, 6))
    seg = np.diff(line, axis=0)
    seglen = np.hypot(seg[:, 0], seg[:, 1])
    cum = np.concatenate([[0], np.cumsum(seglen)])
    total = cum[-1]
    lane_w = width / lanes * (0.85 if cls == "highway" else 0.9)
    out = []

    def along(s, offset_px):
        idx = np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(seg) - 1)
        d = seg[idx] / np.maximum(seglen[idx], 1e-9)[:, None]
        t = (s - cum[idx])[:, None]
        return line[idx] + d * t + offset_px * np.stack([-d[:, 1], d[:, 0]], axis=1)

    dash, gap = 3.0 * px_per_m, 6.0 * px_per_m
    starts = np.arange(gap / 2, max(total - dash, 0), dash + gap)
    for lane in range(1, lanes):
        off = (lane - lanes / 2) * lane_w * px_per_m
        if lane == lanes // 2:
            if cls == "local":
                if width < 10:
                    continue
                p, q = along(starts, off), along(starts + dash, off)
                out.append(np.concatenate([p, q, np.full((len(p), 1), 1), np.full((len(p), 1), 0)], axis=1))
                continue
            # continuous centre: a double yellow line, or a barrier on divided highways
            s = np.arange(0, total, 4 * px_per_m)
            if len(s) < 2:
                continue
            p, q = along(s[:-1], off), along(s[1:], off)
            out.append(
                np.concatenate(
                    [
                        p,
                        q,
                        np.full((len(p), 1), 2 if cls == "highway" else 1),
                        np.full((len(p), 1), 2 if cls == "highway" else 1),
                    ],
                    axis=1,
                )
            )
            continue
        if len(starts):
            p, q = along(starts, off), along(starts + dash, off)
            out.append(np.concatenate([p, q, np.full((len(p), 1), 1), np.full((len(p), 1), 0)], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 6))


MARK_RGB = ((196, 196, 190), (190, 168, 92), (150, 150, 146))
