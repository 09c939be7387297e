"""PNG figures drawn with PIL alone (no matplotlib): predicted-vs-true scatters, tile maps and segmentation examples.

Points are rasterised with numpy, so a figure of 100,000 tiles takes well under a second.
Text uses PIL's default font.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

WHITE = (255, 255, 255)
INK = (40, 40, 40)
GRID = (225, 225, 225)
_VIRIDIS = [
    (68, 1, 84),
    (71, 44, 122),
    (59, 81, 139),
    (44, 113, 142),
    (33, 144, 141),
    (39, 173, 129),
    (92, 200, 99),
    (170, 220, 50),
    (253, 231, 37),
]
_DIVERGING = [
    (33, 102, 172),
    (103, 169, 207),
    (209, 229, 240),
    (247, 247, 247),
    (253, 219, 199),
    (239, 138, 98),
    (178, 24, 43),
]
_POINT = np.array([31, 97, 160], np.float64)


def colormap(values01: np.ndarray, name: str = "viridis") -> np.ndarray:
    """RGB uint8 colours for values in [0, 1] (NaN: light grey)."""
    stops = np.asarray(_VIRIDIS if name == "viridis" else _DIVERGING, np.float64)
    v = np.asarray(values01, np.float64)
    nan = ~np.isfinite(v)
    pos = np.clip(np.nan_to_num(v), 0, 1) * (len(stops) - 1)
    lo = np.minimum(pos.astype(np.int64), len(stops) - 2)
    frac = (pos - lo)[..., None]
    rgb = stops[lo] * (1 - frac) + stops[lo + 1] * frac
    rgb[nan] = 200
    return np.round(rgb).astype(np.uint8)


def _font(size: int = 12):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def fmt(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.2e}"
    return f"{value:.4g}"


def _vertical_text(image, xy: tuple[int, int], text: str, font, fill=INK) -> None:
    from PIL import Image, ImageDraw

    left, top, right, bottom = font.getbbox(text)
    label = Image.new("RGBA", (right - left + 2, bottom - top + 4), (255, 255, 255, 0))
    ImageDraw.Draw(label).text((1 - left, 2 - top), text, font=font, fill=fill)
    rotated = label.rotate(90, expand=True)
    image.paste(rotated, (xy[0], xy[1] - rotated.height // 2), rotated)


def colorbar(
    image,
    box: tuple[int, int, int, int],
    cmap: str,
    vmin: float,
    vmax: float,
    font,
    labels: Sequence[str] | None = None,
) -> None:
    """A vertical colour bar in ``box`` (x0, y0, x1, y1) with its top, middle and bottom values."""
    from PIL import Image, ImageDraw

    x0, y0, x1, y1 = box
    height = y1 - y0
    ramp = colormap(np.linspace(1, 0, height)[:, None].repeat(x1 - x0, axis=1), cmap)
    image.paste(Image.fromarray(ramp, "RGB"), (x0, y0))
    draw = ImageDraw.Draw(image)
    draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=INK)
    texts = labels or [fmt(vmax), fmt((vmin + vmax) / 2), fmt(vmin)]
    for text, y in zip(texts, (y0, y0 + height // 2, y1)):
        draw.line((x1, y, x1 + 3, y), fill=INK)
        draw.text((x1 + 5, y), text, font=font, fill=INK, anchor="lm")


def _project(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lat0 = float(np.nanmean(lat)) if np.isfinite(lat).any() else 0.0
    return np.asarray(lon, np.float64) * math.cos(math.radians(lat0)), np.asarray(lat, np.float64)


def _marker_px(px: np.ndarray, py: np.ndarray) -> int:
    """The typical spacing between neighbouring tiles, in pixels: the side of each tile's square."""
    from scipy.spatial import cKDTree

    pts = np.unique(np.stack([px, py], axis=1), axis=0)
    if len(pts) < 2:
        return 6
    if len(pts) > 20000:
        pts = pts[np.random.default_rng(0).choice(len(pts), 20000, replace=False)]
    dist, _ = cKDTree(pts).query(pts, k=2)
    return int(np.clip(round(float(np.median(dist[:, 1]))), 1, 40))


def _points_layer(
    size: tuple[int, int], px: np.ndarray, py: np.ndarray, colours: np.ndarray, marker: int
) -> np.ndarray:
    w, h = size
    canvas = np.full((h, w, 3), 255, np.uint8)
    half = marker // 2
    xs = np.round(px).astype(np.int64) - half
    ys = np.round(py).astype(np.int64) - half
    for dy in range(marker):
        for dx in range(marker):
            x, y = xs + dx, ys + dy
            ok = (x >= 0) & (x < w) & (y >= 0) & (y < h)
            canvas[y[ok], x[ok]] = colours[ok]
    return canvas


def map_figure(
    path: Path,
    lon: np.ndarray,
    lat: np.ndarray,
    rows: Sequence[tuple[str, np.ndarray, np.ndarray]],
    target: str,
    log_scale: bool = False,
    panel: int = 300,
) -> Path:
    """One row per embeddings file: tiles at their lon/lat coloured by the true value, the prediction and the residual.

    ``rows``: (name, y_true, y_pred) over the same tiles as ``lon``/``lat``. True and
    predicted values share one colour scale (2nd-98th percentile of the true values,
    on a log1p scale when ``log_scale``); residuals (prediction - truth) use a
    diverging scale symmetric about zero.
    """
    from PIL import Image, ImageDraw

    font, title_font = _font(12), _font(14)
    lon, lat = np.asarray(lon, np.float64), np.asarray(lat, np.float64)
    x, y = _project(lon, lat)
    ok = np.isfinite(x) & np.isfinite(y)
    bar_w, gap, top, left = 14, 78, 46, 12
    cell_w = panel + bar_w + gap
    row_h = panel + 34
    image = Image.new("RGB", (left + 3 * cell_w, top + row_h * len(rows) + 8), WHITE)
    draw = ImageDraw.Draw(image)
    draw.text(
        (left, 8),
        f"{target}: true, predicted and residual per tile" + (" (colours on a log1p scale)" if log_scale else ""),
        font=title_font,
        fill=INK,
    )
    if ok.any():
        xmin, xmax, ymin, ymax = x[ok].min(), x[ok].max(), y[ok].min(), y[ok].max()
        span = max(xmax - xmin, ymax - ymin) or 1.0
        pad = 0.04 * panel
        k = (panel - 2 * pad) / span
        px = pad + (x - xmin) * k + (panel - 2 * pad - (xmax - xmin) * k) / 2
        py = panel - (pad + (y - ymin) * k + (panel - 2 * pad - (ymax - ymin) * k) / 2)
        marker = _marker_px(px[ok], py[ok])
    for r, (name, y_true, y_pred) in enumerate(rows):
        y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
        tv, pv = (np.log1p(np.maximum(y_true, 0)), np.log1p(np.maximum(y_pred, 0))) if log_scale else (y_true, y_pred)
        finite = np.isfinite(tv)
        vmin, vmax = np.percentile(tv[finite], [2, 98]) if finite.any() else (0.0, 1.0)
        if vmax <= vmin:
            vmin, vmax = vmin - 0.5, vmax + 0.5
        residual = y_pred - y_true
        rlim = float(np.percentile(np.abs(residual[np.isfinite(residual)]), 98)) if np.isfinite(residual).any() else 1.0
        rlim = rlim or 1.0
        oy = top + r * row_h
        panels = [
            (f"{name}: true", (tv - vmin) / (vmax - vmin), "viridis", vmin, vmax),
            (f"{name}: predicted", (pv - vmin) / (vmax - vmin), "viridis", vmin, vmax),
            (f"{name}: residual (pred - true)", (residual + rlim) / (2 * rlim), "diverging", -rlim, rlim),
        ]
        for c, (title, values01, cmap, lo, hi) in enumerate(panels):
            ox = left + c * cell_w
            draw.text((ox, oy), title, font=font, fill=INK)
            py0 = oy + 18
            if ok.any():
                layer = _points_layer((panel, panel), px[ok], py[ok], colormap(values01[ok], cmap), marker)
                image.paste(Image.fromarray(layer, "RGB"), (ox, py0))
            draw.rectangle((ox, py0, ox + panel - 1, py0 + panel - 1), outline=GRID)
            labels = None
            if log_scale and cmap == "viridis":
                labels = [fmt(math.expm1(hi)), fmt(math.expm1((lo + hi) / 2)), fmt(math.expm1(lo))]
            colorbar(
                image,
                (ox + panel + 6, py0 + panel // 4, ox + panel + 6 + bar_w, py0 + 3 * panel // 4),
                cmap,
                lo,
                hi,
                font,
                labels,
            )
    path = Path(path)
    image.save(path, optimize=False)
    return path


def scatter_figure(
    path: Path,
    panels: Sequence[tuple[str, np.ndarray, np.ndarray, str]],
    target: str,
    log_scale: bool = False,
    size: int = 300,
) -> Path:
    """Predicted against true values, one panel per embeddings file, with the y = x line.

    ``panels``: (name, y_true, y_pred, subtitle such as "R² 0.81"). Points are shaded
    by how many fall on a pixel, so dense clouds stay readable. Axes are log1p when ``log_scale``.
    """
    from PIL import Image, ImageDraw

    font, title_font = _font(12), _font(14)
    margin_l, margin_b, top, gap = 70, 44, 50, 30
    cell = margin_l + size + gap
    image = Image.new("RGB", (cell * max(1, len(panels)) + 10, top + size + margin_b + 10), WHITE)
    draw = ImageDraw.Draw(image)
    draw.text(
        (10, 8), f"{target}: predicted vs true" + (" (log1p axes)" if log_scale else ""), font=title_font, fill=INK
    )
    tf = (lambda v: np.log1p(np.maximum(v, 0))) if log_scale else (lambda v: v)
    inverse = math.expm1 if log_scale else (lambda v: v)
    for i, (name, y_true, y_pred, subtitle) in enumerate(panels):
        t, p = tf(np.asarray(y_true, np.float64)), tf(np.asarray(y_pred, np.float64))
        ok = np.isfinite(t) & np.isfinite(p)
        t, p = t[ok], p[ok]
        both = np.concatenate([t, p]) if len(t) else np.array([0.0, 1.0])
        lo, hi = np.percentile(both, [0.5, 99.5])
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        lo, hi = lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo)
        ox, oy = 10 + i * cell + margin_l, top
        to_px = lambda v, lo=lo, hi=hi: (v - lo) / (hi - lo) * (size - 1)  # noqa: E731  (this panel's range)
        for tick in np.linspace(lo, hi, 5):
            g = to_px(tick)
            draw.line((ox + g, oy, ox + g, oy + size - 1), fill=GRID)
            draw.line((ox, oy + size - 1 - g, ox + size - 1, oy + size - 1 - g), fill=GRID)
            draw.text((ox + g, oy + size + 7), fmt(inverse(tick)), font=font, fill=INK, anchor="mt")
            draw.text((ox - 4, oy + size - 1 - g), fmt(inverse(tick)), font=font, fill=INK, anchor="rm")
        counts = np.zeros((size, size), np.float64)
        xs = np.clip(np.round(to_px(t)).astype(np.int64), 0, size - 1)
        ys = np.clip(size - 1 - np.round(to_px(p)).astype(np.int64), 0, size - 1)
        np.add.at(counts, (ys, xs), 1.0)
        if len(t) < 5000:  # few points: draw each as 2 × 2 pixels
            grown = counts.copy()
            grown[1:, :] += counts[:-1, :]
            grown[:, 1:] += counts[:, :-1]
            grown[1:, 1:] += counts[:-1, :-1]
            counts = grown
        shade = 1 - 0.55**counts
        area = np.array(image.crop((ox, oy, ox + size, oy + size)), np.float64)
        area = area * (1 - shade[..., None]) + _POINT * shade[..., None]
        image.paste(Image.fromarray(np.round(area).astype(np.uint8), "RGB"), (ox, oy))
        draw.line((ox, oy + size - 1, ox + size - 1, oy), fill=(200, 60, 40), width=1)
        draw.rectangle((ox, oy, ox + size - 1, oy + size - 1), outline=INK)
        draw.text((ox, oy - 18), f"{name}  {subtitle}", font=font, fill=INK)
        draw.text((ox + size // 2, oy + size + 22), f"true {target}", font=font, fill=INK, anchor="mt")
        _vertical_text(image, (ox - margin_l + 2, oy + size // 2), "predicted", font)
    path = Path(path)
    image.save(path, optimize=False)
    return path


# a qualitative palette for class ids without colours of their own (tab20-like)
_CLASS_COLOURS = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
    (196, 156, 148),
    (247, 182, 210),
    (199, 199, 199),
    (219, 219, 141),
    (158, 218, 229),
]
IGNORED = (235, 235, 235)


def class_colours(classes: Sequence[int], palette: dict[int, tuple[int, int, int]] | None = None) -> np.ndarray:
    """A 256 × 3 uint8 lookup from class id to colour: the raster's own colours where known, ignored (255) light
    grey."""
    lut = np.zeros((256, 3), np.uint8)
    for i, c in enumerate(classes):
        lut[c] = (palette or {}).get(int(c), _CLASS_COLOURS[i % len(_CLASS_COLOURS)])
    lut[255] = IGNORED
    return lut


def segmentation_figure(
    path: Path,
    tiles: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    classes: Sequence[int],
    iou: dict[int, float],
    title: str,
    palette: dict[int, tuple[int, int, int]] | None = None,
    names: dict[int, str] | None = None,
    panel: int = 192,
) -> Path:
    """One row per tile: the image, the true classes and the predicted ones, with a legend of class IoUs.

    ``tiles``: (tile id, RGB image, true class ids, predicted class ids); class masks
    may be coarser than the image and are drawn with nearest neighbour. 255 is
    drawn light grey (not scored).
    """
    from PIL import Image, ImageDraw

    font, title_font = _font(12), _font(14)
    lut = class_colours(classes, palette)
    top, left, gap, row_h = 40, 12, 10, panel + 24
    legend_w = 230
    width = left + 3 * (panel + gap) + legend_w
    height = max(top + row_h * len(tiles) + 8, top + 18 * len(classes) + 30)
    image = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(image)
    draw.text((left, 10), title, font=title_font, fill=INK)
    for r, (tile_id, rgb, truth, pred) in enumerate(tiles):
        oy = top + r * row_h
        pictures = [
            (
                "image",
                Image.fromarray(np.asarray(rgb, np.uint8), "RGB").resize((panel, panel), Image.Resampling.BILINEAR),
            ),
            (
                "truth",
                Image.fromarray(lut[np.asarray(truth, np.uint8)], "RGB").resize(
                    (panel, panel), Image.Resampling.NEAREST
                ),
            ),
            (
                "predicted",
                Image.fromarray(lut[np.asarray(pred, np.uint8)], "RGB").resize(
                    (panel, panel), Image.Resampling.NEAREST
                ),
            ),
        ]
        for c, (name, picture) in enumerate(pictures):
            ox = left + c * (panel + gap)
            draw.text((ox, oy), f"{tile_id}: {name}" if c == 0 else name, font=font, fill=INK)
            image.paste(picture, (ox, oy + 16))
            draw.rectangle((ox, oy + 16, ox + panel - 1, oy + 16 + panel - 1), outline=GRID)
    lx = left + 3 * (panel + gap) + 4
    draw.text((lx, top), "class: IoU", font=font, fill=INK)
    for i, c in enumerate(classes):
        y = top + 18 * (i + 1)
        draw.rectangle((lx, y, lx + 12, y + 12), fill=tuple(int(v) for v in lut[c]), outline=INK)
        value = iou.get(int(c))
        label = f"{c} {(names or {}).get(int(c), '')}".strip()
        draw.text(
            (lx + 18, y + 6),
            f"{label}: {f'{value:.3f}' if value is not None and math.isfinite(value) else 'n/a'}",
            font=font,
            fill=INK,
            anchor="lm",
        )
    path = Path(path)
    image.save(path, optimize=False)
    return path
