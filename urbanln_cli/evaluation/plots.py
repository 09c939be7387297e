"""PNG figures drawn with matplotlib's Agg canvas: predicted-vs-true scatters, tile maps, confusion matrices and
segmentation examples.

Each figure is a ``matplotlib.figure.Figure`` on its own ``FigureCanvasAgg``: no pyplot, no global backend
switch, no state shared between calls. matplotlib is imported inside the functions so the CLI starts fast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DPI = 100
IGNORED = (235, 235, 235)  # class 255: not scored
NAN_GREY = "#c8c8c8"  # a tile whose value is missing


def _figure(width_in: float, height_in: float, dpi: int = DPI):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    path = Path(path)
    fig.savefig(path, format="png", bbox_inches="tight", pad_inches=0.15)  # long labels stay whole
    return path


def _symlog(v: np.ndarray) -> np.ndarray:
    """matplotlib's symlog with linthresh 1, approximately: log1p for positives, mirrored for negatives."""
    return np.sign(v) * np.log1p(np.abs(v))


def _unsymlog(v: np.ndarray) -> np.ndarray:
    return np.sign(v) * np.expm1(np.abs(v))


def _log_norm(vmin: float, vmax: float):
    from matplotlib.colors import SymLogNorm

    return SymLogNorm(linthresh=1.0, vmin=vmin, vmax=vmax, base=10)


# ---------------------------------------------------------------- scatter


def scatter_figure(
    path: Path,
    panels: Sequence[tuple[str, np.ndarray, np.ndarray, str]],
    target: str,
    log_scale: bool = False,
    size: int = 300,
) -> Path:
    """Predicted against true values, one panel per embeddings file, with the y = x line.

    ``panels``: (name, y_true, y_pred, subtitle such as "R² 0.81"). Pairs with a NaN or
    infinite value are left out. Marker opacity falls with the number of points so dense
    clouds stay readable. Axes are symmetric-log (linear within ±1) when ``log_scale``.
    """
    n = max(1, len(panels))
    side = size / DPI
    fig = _figure(n * (side + 0.9) + 0.3, side + 1.3)
    fig.suptitle(f"{target}: predicted vs true" + (" (log axes)" if log_scale else ""), fontsize=12)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (name, y_true, y_pred, subtitle) in zip(axes, panels):
        t, p = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
        ok = np.isfinite(t) & np.isfinite(p)
        t, p = t[ok], p[ok]
        ax.set_title(f"{name}  {subtitle}", fontsize=9)
        ax.set_xlabel(f"true {target}", fontsize=9)
        ax.set_ylabel("predicted", fontsize=9)
        ax.tick_params(labelsize=8)
        if not len(t):
            ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
            continue
        # limits from the 0.5-99.5th percentiles of both, padded by 3 % on the drawn scale
        forward, inverse = (_symlog, _unsymlog) if log_scale else (lambda v: v, lambda v: v)
        lo, hi = np.percentile(forward(np.concatenate([t, p])), [0.5, 99.5])
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        lo, hi = inverse(np.array([lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo)]))
        alpha = float(np.clip(30 / math.sqrt(len(t)), 0.04, 0.8))
        ax.scatter(t, p, s=6 if len(t) < 5000 else 2, c="#1f61a0", alpha=alpha, linewidths=0, rasterized=True)
        ax.plot([lo, hi], [lo, hi], color="#c83c28", linewidth=1)
        if log_scale:
            ax.set_xscale("symlog", linthresh=1.0)
            ax.set_yscale("symlog", linthresh=1.0)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal" if not log_scale else "auto")
        ax.grid(True, color="#e1e1e1", linewidth=0.6)
        ax.set_axisbelow(True)
    return _save(fig, path)


# ---------------------------------------------------------------- maps


def _tile_grid(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, tuple[int, int]]:
    """Cell size, column and row of each point and the grid shape: one cell per tile at the typical tile spacing
    (at most ~800 cells a side, so a sparse, wide area merges neighbours instead of making a huge raster)."""
    from scipy.spatial import cKDTree

    pts = np.unique(np.stack([x, y], axis=1), axis=0)
    span = max(float(np.ptp(x)), float(np.ptp(y)))
    spacing = 0.0
    if len(pts) >= 2:
        if len(pts) > 20000:
            pts = pts[np.random.default_rng(0).choice(len(pts), 20000, replace=False)]
        dist, _ = cKDTree(pts).query(pts, k=2)
        spacing = float(np.median(dist[:, 1]))
    cell = max(spacing, span / 800, 1e-9) if span > 0 else max(spacing, 1e-3)
    col = np.round((x - x.min()) / cell).astype(np.int64)
    row = np.round((y - y.min()) / cell).astype(np.int64)
    return cell, col, row, (int(row.max()) + 1, int(col.max()) + 1)


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
    symmetric-log when ``log_scale``); residuals (prediction - truth) use a diverging
    scale symmetric about zero. Tiles with a missing value are grey; tiles without
    coordinates are left out.
    """
    from matplotlib.colors import ListedColormap

    lon, lat = np.asarray(lon, np.float64), np.asarray(lat, np.float64)
    ok = np.isfinite(lon) & np.isfinite(lat)
    side = panel / DPI
    tall = 1.0  # the map's height over its width
    if ok.any():
        cos = max(math.cos(math.radians(float(lat[ok].mean()))), 1e-6)
        x, y = lon[ok] * cos, lat[ok]  # equal-area-ish cells, so tiles stay square
        cell, col, row, shape = _tile_grid(x, y)
        extent = (
            (x.min() - cell / 2) / cos,
            (x.min() + (shape[1] - 0.5) * cell) / cos,
            y.min() - cell / 2,
            y.min() + (shape[0] - 0.5) * cell,
        )
        tall = float(np.clip(shape[0] / shape[1], 0.4, 1.5))
    fig = _figure(3 * (side + 1.1), max(1, len(rows)) * (side * tall + 0.6) + 0.5)
    fig.suptitle(
        f"{target}: true, predicted and residual per tile" + (" (colours on a log scale)" if log_scale else ""),
        fontsize=12,
    )
    axes = fig.subplots(max(1, len(rows)), 3, squeeze=False)
    missing = ListedColormap([NAN_GREY])  # under every tile: shows where the value is NaN
    for r, (name, y_true, y_pred) in enumerate(rows):
        y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
        finite = np.isfinite(y_true)
        vmin, vmax = np.percentile(y_true[finite], [2, 98]) if finite.any() else (0.0, 1.0)
        if vmax <= vmin:
            vmin, vmax = vmin - 0.5, vmax + 0.5
        residual = y_pred - y_true
        rfinite = np.isfinite(residual)
        rlim = float(np.percentile(np.abs(residual[rfinite]), 98)) if rfinite.any() else 1.0
        rlim = rlim or 1.0
        norm = _log_norm(vmin, vmax) if log_scale else None
        panels = [
            (f"{name}: true", y_true, "viridis", norm, (vmin, vmax)),
            (f"{name}: predicted", y_pred, "viridis", norm, (vmin, vmax)),
            (f"{name}: residual (pred - true)", residual, "RdBu_r", None, (-rlim, rlim)),
        ]
        for ax, (title, values, cmap, norm_, (lo, hi)) in zip(axes[r], panels):
            ax.set_title(title, fontsize=9)
            ax.tick_params(labelsize=7)
            if not ok.any():
                ax.text(0.5, 0.5, "no coordinates", ha="center", va="center", transform=ax.transAxes)
                continue
            present = np.full(shape, np.nan)
            present[row, col] = 1.0
            grid = np.full(shape, np.nan)
            grid[row, col] = values[ok]
            aspect = 1 / cos
            ax.imshow(present, origin="lower", extent=extent, cmap=missing, aspect=aspect, interpolation="nearest")
            kwargs = {"norm": norm_} if norm_ is not None else {"vmin": lo, "vmax": hi}
            image = ax.imshow(
                grid, origin="lower", extent=extent, cmap=cmap, aspect=aspect, interpolation="nearest", **kwargs
            )
            bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03, extend="both")
            bar.ax.tick_params(labelsize=7)
    return _save(fig, path)


# ---------------------------------------------------------------- classes


def confusion_figure(path: Path, matrix: np.ndarray, classes: Sequence[str], title: str) -> None:
    """A row-normalised confusion matrix (true classes down, predicted across) with the counts in each cell.

    ``matrix``: int counts [n_true, n_pred] over ``classes``. Colour is the share of the
    true class's tiles, so rare classes stay as visible as common ones; empty rows stay white.
    """
    counts = np.asarray(matrix, np.int64)
    n = len(classes)
    if counts.shape != (n, n):
        raise ValueError(f"confusion matrix has shape {counts.shape}, expected ({n}, {n}) for {n} classes")
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape, np.float64), where=totals > 0)
    side = float(np.clip(0.42 * n + 2.6, 4.5, 16.0))
    cell_font = float(np.clip(13 - 0.35 * n, 4.5, 11))
    label_font = float(np.clip(13 - 0.25 * n, 6, 11))
    fig = _figure(side + 1.2, side, dpi=110)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="share of the true class")
    if n <= 30:  # beyond that the numbers no longer fit their cells
        for i, j in zip(*np.nonzero(counts)):
            ax.text(
                j, i, str(counts[i, j]), ha="center", va="center", fontsize=cell_font,
                color="white" if share[i, j] > 0.55 else "black",
            )  # fmt: skip
    ax.set_xticks(range(n), [str(c) for c in classes], rotation=0 if n <= 6 else 90, fontsize=label_font)
    ax.set_yticks(range(n), [str(c) for c in classes], fontsize=label_font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=11)
    _save(fig, path)


def class_colours(classes: Sequence[int], palette: dict[int, tuple[int, int, int]] | None = None) -> np.ndarray:
    """A 256 × 3 uint8 lookup from class id to colour: the raster's own colours where known, else matplotlib's
    tab20; 255 (not scored) light grey."""
    import matplotlib

    tab20 = matplotlib.colormaps["tab20"]
    order = [*range(0, 20, 2), *range(1, 20, 2)]  # the ten strong colours first, then their light partners
    lut = np.zeros((256, 3), np.uint8)
    for i, c in enumerate(classes):
        default = tuple(int(round(255 * v)) for v in tab20(order[i % 20])[:3])
        lut[int(c)] = (palette or {}).get(int(c), default)
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
    from matplotlib.patches import Patch

    lut = class_colours(classes, palette)
    side = panel / DPI
    n_rows = max(1, len(tiles))
    fig = _figure(3 * (side + 0.1) + 2.6, max(n_rows * (side + 0.3) + 0.5, 0.2 * len(classes) + 0.8))
    fig.suptitle(title, fontsize=11)
    axes = fig.subplots(n_rows, 3, squeeze=False)
    for r, (tile_id, rgb, truth, pred) in enumerate(tiles):
        pictures = [
            (f"{tile_id}: image", np.asarray(rgb, np.uint8), "bilinear"),
            ("truth", lut[np.asarray(truth, np.uint8)], "nearest"),
            ("predicted", lut[np.asarray(pred, np.uint8)], "nearest"),
        ]
        for ax, (name, picture, interpolation) in zip(axes[r], pictures):
            ax.imshow(picture, interpolation=interpolation)
            ax.set_title(name, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    for ax in axes[len(tiles) :].ravel():
        ax.set_axis_off()
    handles = []
    for c in classes:
        value = iou.get(int(c))
        label = f"{c} {(names or {}).get(int(c), '')}".strip()
        shown = f"{value:.3f}" if value is not None and math.isfinite(value) else "n/a"
        handles.append(Patch(facecolor=lut[int(c)] / 255, edgecolor="#282828", label=f"{label}: {shown}"))
    fig.legend(handles=handles, title="class: IoU", loc="outside right upper", fontsize=8, title_fontsize=9)
    return _save(fig, path)
