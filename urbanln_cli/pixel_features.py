"""The pixel baseline: colour histograms and simple texture statistics of a tile.

What a probe can learn from colour and texture alone; any learned representation
has to beat it to be worth its training.
"""

from __future__ import annotations

import numpy as np

DIM = 34


def pixel_features(rgb: np.ndarray) -> np.ndarray:
    """34 numbers for an H×W×3 uint8 image: 3×8 histogram bins, channel means and spreads, 4 texture statistics."""
    rgb = rgb.astype(np.float32) / 255.0
    hist = [np.histogram(rgb[..., c], bins=8, range=(0, 1))[0] / rgb[..., c].size for c in range(3)]
    grey = rgb.mean(axis=2)
    gy, gx = np.gradient(grey)
    grad = np.hypot(gx, gy)
    lap = grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4 * grey[1:-1, 1:-1]
    stats = [rgb.mean(axis=(0, 1)), rgb.std(axis=(0, 1)), [grad.mean(), grad.std(), lap.var(), (grad > 0.1).mean()]]
    return np.concatenate([*hist, *map(np.ravel, stats)]).astype(np.float32)
