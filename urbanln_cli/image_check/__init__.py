"""Step 5 of ``fuse``: does the tile's image confirm a disputed claim?

Two checkers answer the same question for a list of claims:

- ``clip`` (``image_check.clip``): scores each claim's text against the tile and
  its four quadrant crops with a CLIP model (a ``pretrain`` folder or open_clip
  weights);
- ``vlm`` (``image_check.vlm``): asks a VLM through Ollama a yes/no question
  about each claim, so one model checks another's claims.

A claim is disputed when too few other models back it (or, with a single model,
always). A disputed claim stays only when its checker confirms it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass


@dataclass(frozen=True)
class ClaimQuery:
    """One claim to check against one tile's image."""

    tile_id: str
    phrase: str  # the claim as a short noun phrase, e.g. "a river" or "dense mid-rise residential blocks"
    concept: str | None  # canonical lexicon concept; None for a phrase claim
    author: str  # the model whose caption made the claim


@dataclass(frozen=True)
class Verdict:
    confirmed: bool
    by: str  # "clip" or "vlm:<model tag>"
    score: float | None = None  # clip: the claim's margin over the contrast prompts
    answer: str | None = None  # vlm: what the model answered
    error: str | None = None  # why no answer came (the claim then counts as not confirmed)


QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")


def quadrant_boxes(w: int, h: int) -> list[tuple[int, int, int, int]]:
    """PIL crop boxes of the four quadrants of a w×h image, in ``QUADRANTS`` order."""
    return [(0, 0, w // 2, h // 2), (w // 2, 0, w, h // 2), (0, h // 2, w // 2, h), (w // 2, h // 2, w, h)]


def gsd_phrase(gsd: float | None) -> str:
    """' at about 2.40 m per pixel' for a prompt, or nothing when the GSD is unknown."""
    return f" at about {gsd:.2f} m per pixel" if gsd else ""


def quadrant_crops(image: bytes, size: int | None = None, max_pixels: int | None = None) -> list[bytes]:
    """The four quadrant crops of a tile as PNG bytes, in ``QUADRANTS`` order (each at most ``size`` px a side).

    ``imagery.ImageTooLarge`` when the tile has more than ``max_pixels`` pixels (never decoded).
    """
    from PIL import Image

    from urbanln_cli.imagery import open_image

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
