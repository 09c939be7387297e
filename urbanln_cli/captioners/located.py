"""Image bytes that know which tile (and which quadrant of it) they show.

``fuse`` sends its questions through ``CachedVlm`` and the request runner, which
pass a backend the image bytes, the prompt and the JSON schema, but no
``TileInfo``. A ``LocatedImage`` is those same bytes (a ``bytes`` subclass, so
Ollama receives exactly what it would otherwise) carrying the tile and the
quadrant they were cut from. The simulated panel reads them to answer from the
scene: a quadrant caption describes the quadrant's objects, a yes/no check looks
at the tile's truth. A backend that does not care never notices.
"""

from __future__ import annotations

from urbanln_cli.captioners import TileInfo
from urbanln_cli.imagery import QUADRANTS


class LocatedImage(bytes):
    """Bytes of an image, with ``tile`` (where it is) and ``quadrant`` (index into ``QUADRANTS``, or None: whole)."""

    tile: TileInfo | None
    quadrant: int | None

    def __new__(cls, data: bytes, tile: TileInfo | None, quadrant: int | None = None) -> LocatedImage:
        if quadrant is not None and not 0 <= quadrant < len(QUADRANTS):
            raise ValueError(f"quadrant {quadrant} is not one of 0..{len(QUADRANTS) - 1}")
        obj = super().__new__(cls, data)
        obj.tile, obj.quadrant = tile, quadrant
        return obj

    def __reduce__(self):  # pickles (and copies) keep where the image is
        return (LocatedImage, (bytes(self), self.tile, self.quadrant))


def located(data: bytes, tile: TileInfo | None, quadrant: int | None = None) -> bytes:
    """``data`` labelled with where it is (unchanged when ``tile`` is None)."""
    return data if tile is None else LocatedImage(data, tile, quadrant)


def quadrant_bounds(bounds: tuple[float, float, float, float], quadrant: int) -> tuple[float, float, float, float]:
    """The bounds of quadrant ``quadrant`` (``QUADRANTS`` order) of a north-up tile: top is the larger y."""
    minx, miny, maxx, maxy = bounds
    midx, midy = (minx + maxx) / 2, (miny + maxy) / 2
    west = quadrant in (0, 2)
    north = quadrant in (0, 1)
    return (minx if west else midx, midy if north else miny, midx if west else maxx, maxy if north else midy)


def quadrant_tile(tile: TileInfo, quadrant: int) -> TileInfo:
    """The TileInfo of one quadrant of a tile (its id gets ``#q<k>``)."""
    return TileInfo(f"{tile.tile_id}#q{quadrant}", tile.crs, quadrant_bounds(tile.bounds, quadrant), tile.gsd)
