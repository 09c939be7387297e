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

from dataclasses import dataclass

# The quadrant crops live in imagery (captioners use them too); re-exported for the checkers.
from urbanln_cli.imagery import QUADRANTS, quadrant_boxes, quadrant_crops  # noqa: F401


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
