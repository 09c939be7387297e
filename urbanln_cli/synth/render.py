"""Draw the scene block by block: RGB imagery and the land-cover raster on the same grid.

``prepare`` turns the scene into flat draw lists in pixel coordinates and a grid
index (which primitives touch which block). ``render_block`` then draws one
block plus a small margin with PIL, in painter's order, and adds texture,
shadows, illumination, haze, blur and sensor noise with numpy. Every random
number comes from the scene, a hash of global pixel coordinates, or a
generator seeded by (seed, block), so blocks join without seams and the same
seed gives the same bytes whatever order blocks are drawn in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from urbanln_cli.synth import geometry as geo
from urbanln_cli.synth.scene import (
    CROPS,
    ROOF_COLOURS,
    ROOF_MATERIALS,
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


# ---------------------------------------------------------------- drawing


def _hash_noise(x0: int, y0: int, w: int, h: int, cell: float, seed: int) -> np.ndarray:
    """Value noise in [-1, 1] from a hashed lattice in global pixel coordinates (seamless across blocks)."""
    xs = (np.arange(w) + x0) / cell
    ys = (np.arange(h) + y0) / cell
    ix0, iy0 = int(np.floor(xs[0])), int(np.floor(ys[0]))
    gx = np.arange(ix0, int(np.floor(xs[-1])) + 2, dtype=np.int64)
    gy = np.arange(iy0, int(np.floor(ys[-1])) + 2, dtype=np.int64)
    hx = (gx.astype(np.uint64) * np.uint64(73856093))[None, :]
    hy = (gy.astype(np.uint64) * np.uint64(19349663))[:, None]
    hval = (hx ^ hy ^ np.uint64((seed * 83492791) & 0xFFFFFFFF)) & np.uint64(0xFFFFFFFF)
    hval = (hval ^ (hval >> np.uint64(13))) * np.uint64(1274126177) & np.uint64(0xFFFFFFFF)
    hval = hval ^ (hval >> np.uint64(16))
    lattice = hval.astype(np.float64) / 2**31 - 1.0
    fx, fy = xs - np.floor(xs), ys - np.floor(ys)
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    cx = np.floor(xs).astype(np.int64) - ix0
    cy = np.floor(ys).astype(np.int64) - iy0
    v00 = lattice[cy][:, cx]
    v10 = lattice[cy][:, cx + 1]
    v01 = lattice[cy + 1][:, cx]
    v11 = lattice[cy + 1][:, cx + 1]
    top = v00 + (v10 - v00) * fx[None]
    bottom = v01 + (v11 - v01) * fx[None]
    return top + (bottom - top) * fy[:, None]


def render_block(data: RenderData, bx: int, by: int) -> tuple[np.ndarray, np.ndarray]:
    """One block: (rgb uint8 (h, w, 3), land cover uint8 (h, w)), cropped to the image."""
    from PIL import Image, ImageDraw
    from scipy.ndimage import gaussian_filter

    B, M = data.block, MARGIN
    W = B + 2 * M
    x0, y0 = bx * B - M, by * B - M
    block_id = by * data.blocks + bx
    L = data.layers
    img = Image.new("RGB", (W, W), GROUND["farmland"][0])
    lc = Image.new("L", (W, W), 6)
    di, dl = ImageDraw.Draw(img), ImageDraw.Draw(lc)
    origin = np.array([x0, y0], np.float64)

    def rgb(c):
        return tuple(int(round(v)) for v in c)

    for name in ("ground", "fields", "paved", "parks", "sports", "water"):
        layer = L[name]
        for i in layer.at(block_id):
            pts = (layer.data["polys"][i] - origin).ravel().tolist()
            di.polygon(pts, fill=rgb(layer.data["colour"][i]))
            dl.polygon(pts, fill=int(layer.data["cls"][i]))
            if name == "sports":
                _pitch(di, layer.data["polys"][i] - origin, data.gsd)
            elif name == "fields" and layer.data["crop"][i] in ("maize", "vegetables", "orchard", "young wheat"):
                _rows(di, layer.data["polys"][i] - origin, layer.data["colour"][i], data.gsd)

    lines = L["lines"]
    d = lines.data
    for i in lines.at(block_id):
        a, b, w = d["a"][i] - origin, d["b"][i] - origin, d["w"][i]
        quad = _quad(a, b, w)
        fill = rgb(d["colour"][i])
        di.polygon(quad, fill=fill)
        dl.polygon(quad, fill=int(d["cls"][i]))
        r = w / 2 - CIRCLE_SHRINK
        if r > 0.5:
            for p in (a, b):
                box = [p[0] - r, p[1] - r, p[0] + r, p[1] + r]
                di.ellipse(box, fill=fill)
                dl.ellipse(box, fill=int(d["cls"][i]))
    for i in L["marks"].at(block_id):
        m = L["marks"].data["m"][i]
        di.line([m[0] - x0, m[1] - y0, m[2] - x0, m[3] - y0], fill=MARK_RGB[int(m[5])], width=max(1, int(round(m[4]))))

    # shadows of trees and buildings, on everything drawn so far
    shade = Image.new("L", (W, W), 0)
    ds = ImageDraw.Draw(shade)
    trees = L["trees"]
    t = trees.data
    sx, sy = data.shadow
    tree_ids = trees.at(block_id)
    for i in tree_ids:
        cx, cy, r, sh = t["x"][i] - x0, t["y"][i] - y0, t["r"][i], t["sh"][i]
        ds.ellipse([cx + sx * sh - r, cy + sy * sh - r, cx + sx * sh + r, cy + sy * sh + r], fill=200)
    bl = L["buildings"]
    bdat = bl.data
    b_ids = bl.at(block_id)
    for i in b_ids:
        c = bdat["corners"][i] - origin
        o = bdat["off"][i]
        ds.polygon((c + o).ravel().tolist(), fill=255)
        for k in range(4):
            p, q = c[k], c[(k + 1) % 4]
            ds.polygon([p[0], p[1], q[0], q[1], q[0] + o[0], q[1] + o[1], p[0] + o[0], p[1] + o[1]], fill=255)

    arr = np.asarray(img, np.float64)
    cls = np.asarray(lc)
    grain = 0.65 * _hash_noise(x0, y0, W, W, 1.7, data.seed) + 0.35 * _hash_noise(x0, y0, W, W, 9.0, data.seed + 1)
    patch = _hash_noise(x0, y0, W, W, 70.0, data.seed + 2)
    amp = TEXTURE[cls]
    veg = (cls == 1) | (cls == 6)
    factor = 1 + amp * grain + np.where(veg, 0.09, 0.03) * patch
    arr *= factor[..., None]
    s = np.asarray(shade, np.float64)[..., None] / 255.0
    arr *= 1 - s * (1 - SHADOW_RGB)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    di = ImageDraw.Draw(img)

    for i in tree_ids:
        cx, cy, r = t["x"][i] - x0, t["y"][i] - y0, t["r"][i]
        rr = max(r - CIRCLE_SHRINK, 0.0)  # a crown under a pixel wide (coarse --gsd) is still a dot, not an error
        col = t["colour"][i]
        di.ellipse([cx - rr, cy - rr, cx + rr, cy + rr], fill=rgb(col))
        dl.ellipse([cx - rr, cy - rr, cx + rr, cy + rr], fill=8)
        hx, hy = cx + data.light[0] * r * 0.3, cy + data.light[1] * r * 0.3
        hr = r * 0.55
        di.ellipse([hx - hr, hy - hr, hx + hr, hy + hr], fill=rgb(np.minimum(col * 1.22 + 6, 255)))

    for i in b_ids:
        _roof(di, bdat, i, origin, data)
        dl.polygon((bdat["lc"][i] - origin).ravel().tolist(), fill=int(bdat["cls"][i]))

    vl = L["vehicles"]
    v = vl.data
    for i in vl.at(block_id):
        c = v["corners"][i] - origin
        di.polygon((c + np.array([sx, sy]) * 1.5).ravel().tolist(), fill=(40, 40, 44))
        di.polygon(c.ravel().tolist(), fill=rgb(v["colour"][i]))
        if v["kind"][i] == 0 and v["sizes"][i][0] >= 3:  # a darker windscreen-and-roof band on cars
            ctr = c.mean(axis=0)
            hd = np.array([math.cos(v["heading"][i]), math.sin(v["heading"][i])])
            di.line([*(ctr + hd * 0.6), *(ctr + hd * 1.2)], fill=(60, 66, 72), width=1)

    arr = np.asarray(img, np.float64)
    # illumination and haze vary smoothly across the scene; then optics blur and sensor noise
    yy, xx = np.mgrid[y0 : y0 + W, x0 : x0 + W].astype(np.float64)
    fields = _fields(data.seed)
    light = 1 + 0.07 * fields[0](xx, yy)
    haze = np.clip(0.07 + 0.06 * fields[1](xx, yy), 0.0, 0.2)[..., None]
    arr = arr * light[..., None] * (1 - haze) + haze * np.array([196, 204, 214])
    arr = gaussian_filter(arr, sigma=(0.6, 0.6, 0))
    rng = np.random.default_rng([data.seed, 5, bx, by])
    arr += rng.normal(0, 2.2, arr.shape)
    rgb_out = np.clip(np.round(arr), 0, 255).astype(np.uint8)[M:-M, M:-M]
    lc_out = np.asarray(lc, np.uint8)[M:-M, M:-M]
    h = min(B, data.size - by * B)
    w = min(B, data.size - bx * B)
    return rgb_out[:h, :w], lc_out[:h, :w].copy()


_FIELD_CACHE: dict[int, tuple] = {}


def _fields(seed: int):
    if seed not in _FIELD_CACHE:
        rng = np.random.default_rng([seed, 6])
        _FIELD_CACHE[seed] = (geo.SmoothField(rng, 2500.0, 5), geo.SmoothField(rng, 4000.0, 4))
    return _FIELD_CACHE[seed]


def _quad(a: np.ndarray, b: np.ndarray, w: float) -> list:
    d = b - a
    n = np.hypot(d[0], d[1])
    if n < 1e-9:
        return [a[0], a[1], a[0], a[1], a[0], a[1]]
    off = np.array([-d[1], d[0]]) / n * w / 2
    return [
        a[0] + off[0],
        a[1] + off[1],
        b[0] + off[0],
        b[1] + off[1],
        b[0] - off[0],
        b[1] - off[1],
        a[0] - off[0],
        a[1] - off[1],
    ]


def _pitch(draw, poly: np.ndarray, gsd: float) -> None:
    """A football pitch inside a running track (the polygon is the track's outer rectangle)."""
    c = poly.mean(axis=0)
    inner = c + (poly - c) * np.array([[0.78], [0.78], [0.78], [0.78]])
    draw.polygon(inner.ravel().tolist(), fill=(78, 136, 66))
    draw.line([*inner.ravel().tolist(), *inner[0].tolist()], fill=(214, 214, 206), width=1)
    mid_a, mid_b = (inner[0] + inner[3]) / 2, (inner[1] + inner[2]) / 2
    if np.hypot(*(inner[1] - inner[0])) < np.hypot(*(inner[3] - inner[0])):
        mid_a, mid_b = (inner[0] + inner[1]) / 2, (inner[2] + inner[3]) / 2
    draw.line([*mid_a, *mid_b], fill=(214, 214, 206), width=1)
    r = 9.15 / gsd
    draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], outline=(214, 214, 206))


def _rows(draw, poly: np.ndarray, colour, gsd: float) -> None:
    """Crop rows: faint darker lines along the field's long side."""
    if len(poly) < 3:
        return
    edges = np.diff(np.vstack([poly, poly[:1]]), axis=0)
    k = int(np.argmax(np.hypot(edges[:, 0], edges[:, 1])))
    d = edges[k] / max(np.hypot(*edges[k]), 1e-9)
    n = np.array([-d[1], d[0]])
    proj = (poly - poly[k]) @ n
    lo, hi = proj.min(), proj.max()
    col = tuple(int(max(0, c * 0.82)) for c in colour)
    step = 3.0 / gsd
    if step < 1.5:
        return
    for off in np.arange(lo + step / 2, hi, step):
        base = poly[k] + off * n
        seg = geo.clip_line_convex(base, d, poly, margin=0.5)
        if seg is None:
            continue
        draw.line([*seg[0], *seg[1]], fill=col, width=1)


def _roof(draw, d: dict, i: int, origin: np.ndarray, data: RenderData) -> None:
    c = d["corners"][i] - origin
    colour = d["colour"][i]
    material = ROOF_MATERIALS[d["material"][i]]
    span, w = d["length"][i], d["depth"][i]
    ang = d["angle"][i]
    ctr = np.array([d["cx"][i], d["cy"][i]]) - origin
    u = np.array([math.cos(ang), math.sin(ang)])
    v = np.array([-u[1], u[0]])

    def tone(f):
        return tuple(int(min(255, max(0, x * f))) for x in colour)

    if material == "tile" or (material == "metal" and min(span, w) < 14):
        # a gable roof: the half facing the sun is lighter, the ridge runs along the long side
        draw.polygon(c.ravel().tolist(), fill=tone(0.78))
        axis = v if span >= w else u
        long_axis = u if span >= w else v
        half_l = max(span, w) / 2
        half_w = min(span, w) / 2
        side = 1.0 if float(axis @ np.asarray(data.light)) > 0 else -1.0
        p = [
            ctr + long_axis * half_l,
            ctr - long_axis * half_l,
            ctr - long_axis * half_l + axis * side * half_w,
            ctr + long_axis * half_l + axis * side * half_w,
        ]
        draw.polygon(np.ravel(p).tolist(), fill=tone(1.12))
        draw.line([*(ctr + long_axis * half_l), *(ctr - long_axis * half_l)], fill=tone(1.25), width=1)
        return
    if material == "metal":
        draw.polygon(c.ravel().tolist(), fill=tone(1.0))
        step = 2.2 / data.gsd
        if step >= 1.5:
            for s in np.arange(-span / 2 + step, span / 2, step):
                a = ctr + u * s - v * (w / 2 - 0.5)
                b = ctr + u * s + v * (w / 2 - 0.5)
                draw.line([*a, *b], fill=tone(0.9), width=1)
        return
    # flat roofs: a parapet, the deck, and plant boxes on larger roofs
    draw.polygon(c.ravel().tolist(), fill=tone(0.72))
    inset = 1.0 / data.gsd
    if span > 3 * inset and w > 3 * inset:
        inner = geo.rect_corners(ctr[0], ctr[1], span - 2 * inset, w - 2 * inset, ang)[0]
        deck = 1.06 if material == "membrane" else 0.95 if material == "gravel" else 1.0
        draw.polygon(inner.ravel().tolist(), fill=tone(deck))
    area_m2 = span * w * data.gsd**2
    if area_m2 > 250:
        h = (i * 2654435761) & 0xFFFFFFFF
        for _ in range(1 + int(area_m2 // 900) % 4):
            h = (h * 1103515245 + 12345) & 0xFFFFFFFF
            fu = ((h >> 8) % 1000) / 1000 - 0.5
            fv = ((h >> 18) % 1000) / 1000 - 0.5
            size = (2.5 + (h % 5)) / data.gsd
            p = ctr + u * fu * (span - size - 2) + v * fv * (w - size - 2)
            box = geo.rect_corners(p[0], p[1], size, size * 0.7, ang)[0]
            draw.polygon((box + np.asarray(data.shadow) * 2.5 * data.gsd).ravel().tolist(), fill=tone(0.55))
            draw.polygon(box.ravel().tolist(), fill=(200, 200, 196))
