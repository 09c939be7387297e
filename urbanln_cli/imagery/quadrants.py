"""The four quadrants of a tile, as crop boxes or as PNG crops."""

from __future__ import annotations

import io

from urbanln_cli.imagery.limits import open_image

QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")


def quadrant_bounds(bounds: tuple[float, float, float, float], k: int) -> tuple[float, float, float, float]:
    """The map bounds of quadrant ``k`` (``QUADRANTS`` order) of a north-up tile: the top is the larger y."""
    minx, miny, maxx, maxy = bounds
    midx, midy = (minx + maxx) / 2, (miny + maxy) / 2
    west, north = k in (0, 2), k in (0, 1)
    return (minx if west else midx, midy if north else miny, midx if west else maxx, maxy if north else midy)


def quadrant_boxes(w: int, h: int) -> list[tuple[int, int, int, int]]:
    """PIL crop boxes of the four quadrants of a w×h image, in ``QUADRANTS`` order."""
    return [(0, 0, w // 2, h // 2), (w // 2, 0, w, h // 2), (0, h // 2, w // 2, h), (w // 2, h // 2, w, h)]


def quadrant_crops(image: bytes, size: int | None = None, max_pixels: int | None = None) -> list[bytes]:
    """The four quadrant crops of a tile as PNG bytes, in ``QUADRANTS`` order (each at most ``size`` px a side).

    ``imagery.ImageTooLarge`` when the tile has more than ``max_pixels`` pixels (never decoded).
    """
    from PIL import Image

    with open_image(image, max_pixels, "it") as img:
        img = img.convert("RGB")
        out = []
        for box in quadrant_boxes(*img.size):
            buf = io.BytesIO()
            crop = img.crop(box)
            if size is not None and max(crop.size) > size:
                crop.thumbnail((size, size), Image.Resampling.LANCZOS)
            crop.save(buf, "PNG")
            out.append(buf.getvalue())
    return out
