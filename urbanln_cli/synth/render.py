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

import numpy as np

from urbanln_cli.synth import geometry as geo
from urbanln_cli.synth.render_prepare import (
    CIRCLE_SHRINK,
    GROUND,
    LC_SHRINK,
    MARGIN,
    MARK_RGB,
    SHADOW_RGB,
    TEXTURE,
    VEHICLE_COLOURS,
    VEHICLE_P,
    Layer,
    RenderData,
    _bbox_of,
    _jitter,
    _markings,
    prepare,
)
from urbanln_cli.synth.scene import ROOF_MATERIALS

__all__ = [
    "CIRCLE_SHRINK",
    "GROUND",
    "LC_SHRINK",
    "Layer",
    "MARGIN",
    "MARK_RGB",
    "RenderData",
    "SHADOW_RGB",
    "TEXTURE",
    "VEHICLE_COLOURS",
    "VEHICLE_P",
    "_FIELD_CACHE",
    "_bbox_of",
    "_fields",
    "_hash_noise",
    "_jitter",
    "_markings",
    "_pitch",
    "_quad",
    "_roof",
    "_rows",
    "prepare",
    "render_block",
]

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
