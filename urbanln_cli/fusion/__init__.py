"""Per-tile fusion of several models' captions: pure functions over one tile's candidates.

No I/O, no model, no network: ``fuse_tile(tile_id, {model: caption}, gsd, options,
tools)`` gives the corpus row of one tile, and the same input always gives the
same row. The ``fuse`` stage (``stages.fuse``) reads the artifacts, runs the
optional image check and rewrite over every tile, and writes the corpus.
"""

from urbanln_cli.fusion.options import COLLATERAL, REASONS, STEP_OF, FusionOptions, Tools, step_of
from urbanln_cli.fusion.tile import ClaimRef, Rewrite, TileFusion, fuse_tile

__all__ = [
    "FusionOptions",
    "Tools",
    "REASONS",
    "STEP_OF",
    "COLLATERAL",
    "step_of",
    "TileFusion",
    "Rewrite",
    "ClaimRef",
    "fuse_tile",
]
