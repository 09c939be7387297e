"""Reading a synthetic city's scene.json and extracting the facts a caption of one tile can state."""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from urbanln_cli.captioners import TileInfo
from urbanln_cli.errors import InputError

CELL_M = 256.0  # grid index cell
CARS_VISIBLE_BELOW_M = 1.5  # same threshold as the prompt's visibility note


# fmt: off
_KINDS = ("buildings", "roads", "rail", "parks", "water", "sports_fields", "trees", "vehicles", "zones", "paved",
    "fields")
# fmt: on


class Scene:
    """scene.json with a grid index, so a tile finds its objects without scanning the city."""

    def __init__(self, path: Path | str):
        import orjson

        self.path = Path(path)
        try:
            raw = self.path.read_bytes()
            data = orjson.loads(raw)
        except (OSError, orjson.JSONDecodeError) as exc:
            raise InputError(
                f"cannot read scene {self.path}: {exc}", hint="pass the scene.json that `urbanln synth city` wrote"
            ) from None
        self.sha256 = hashlib.sha256(raw).hexdigest()
        try:
            self.crs = data["crs"]
            a, b, c, d, e, f = data["transform"][:6]
            size = data["size"]
            xs, ys = (c, c + a * size), (f, f + e * size)
            self.extent = (min(xs), min(ys), max(xs), max(ys))
            self.objects = {kind: data.get(kind, []) for kind in _KINDS}
            self._index: dict[str, dict[tuple[int, int], list[int]]] = {}
            for kind, items in self.objects.items():
                grid: dict[tuple[int, int], list[int]] = defaultdict(list)
                for i, obj in enumerate(items):
                    for cell in _cells(_bbox(obj)):
                        grid[cell].append(i)
                self._index[kind] = grid
        except (
            KeyError,
            TypeError,
            ValueError,
            IndexError,
            AttributeError,
            OverflowError,
        ) as exc:  # JSON, but not a scene
            raise InputError(
                f"{self.path} is not a scene of `urbanln synth city` ({type(exc).__name__}: {exc})",
                hint="pass the scene.json that `urbanln synth city` wrote",
            ) from None

    def query(self, kind: str, bounds) -> list[dict[str, Any]]:
        """Objects whose bbox touches ``bounds`` (points: that lie inside), each once, in scene order."""
        grid, items, hits = self._index[kind], self.objects[kind], set()
        for cell in _cells(bounds):
            for i in grid.get(cell, ()):
                obj = items[i]
                if i not in hits and (_point_in(obj, bounds) if "x" in obj else _intersects(_bbox(obj), bounds)):
                    hits.add(i)
        return [items[i] for i in sorted(hits)]

    def contains(self, tile: TileInfo) -> bool:
        if tile.crs != self.crs or not all(math.isfinite(v) for v in tile.bounds):
            return False
        minx, miny, maxx, maxy = tile.bounds
        ex = self.extent
        tol = 1.0
        return minx >= ex[0] - tol and miny >= ex[1] - tol and maxx <= ex[2] + tol and maxy <= ex[3] + tol


def _bbox(obj) -> tuple[float, float, float, float]:
    if "bbox" in obj:
        return tuple(obj["bbox"])
    return (obj["x"], obj["y"], obj["x"], obj["y"])


def _cells(bounds):
    minx, miny, maxx, maxy = bounds
    for cx in range(math.floor(minx / CELL_M), math.floor(maxx / CELL_M) + 1):
        for cy in range(math.floor(miny / CELL_M), math.floor(maxy / CELL_M) + 1):
            yield (cx, cy)


def _overlap(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h)


def _intersects(a, b) -> bool:
    # closed on one side only, so a line on a shared tile edge belongs to one tile
    return a[0] < b[2] and a[2] >= b[0] and a[1] < b[3] and a[3] >= b[1]


def _point_in(obj, bounds) -> bool:
    return bounds[0] <= obj["x"] < bounds[2] and bounds[1] <= obj["y"] < bounds[3]


# ---------------------------------------------------------------- facts


@dataclass
class Facts:
    land_use: str  # residential, commercial, industrial, park, water, farmland, open
    buildings: int
    storeys: float
    roofs: list[str]
    materials: list[str]
    roads: dict[str, int]  # class -> most lanes
    rail: bool
    water: str | None
    parks: int
    sports_fields: int
    trees: int
    cars: int
    gsd: float
    zone: str | None = None
    storey_range: tuple[int, int] = (0, 0)
    parking: int = 0
    crops: tuple[str, ...] = ()
    vehicles: int = 0  # every kind (cars, trucks, buses)
    building_use: str | None = None  # the commonest use of the counted buildings
    buildings_touching: int = 0  # buildings with any part in the tile


def tile_facts(scene: Scene, tile: TileInfo) -> Facts:
    bounds = tile.bounds
    area = (bounds[2] - bounds[0]) * (bounds[3] - bounds[1])
    inside = []
    use_area: Counter = Counter()
    touching_buildings = scene.query("buildings", bounds)
    for b in touching_buildings:
        bb = _bbox(b)
        share = _overlap(bb, bounds) / max(1e-9, (bb[2] - bb[0]) * (bb[3] - bb[1]))
        use_area[b["use"]] += _overlap(bb, bounds)
        if share >= 0.5:  # counted where most of it is
            inside.append(b)
    cover: Counter = Counter()
    for kind, name in (("parks", "park"), ("water", "water")):
        for obj in scene.query(kind, bounds):
            cover[name] += _overlap(_bbox(obj), bounds)
    built = sum(use_area.values())
    if built >= 0.08 * area:
        land_use = use_area.most_common(1)[0][0]
    elif cover and cover.most_common(1)[0][1] >= 0.25 * area:
        land_use = cover.most_common(1)[0][0]
    else:
        land_use = "farmland" if built == 0 and not scene.query("roads", bounds) else "open"
    roads: dict[str, int] = {}
    for r in scene.query("roads", bounds):
        roads[r["class"]] = max(roads.get(r["class"], 0), int(r.get("lanes", 2)))
    water = [w.get("kind", "water") for w in scene.query("water", bounds)]
    all_vehicles = scene.query("vehicles", bounds)
    vehicles = [v for v in all_vehicles if v.get("kind") == "car"]
    return Facts(
        land_use=land_use,
        buildings=len(inside),
        storeys=sum(b.get("storeys", 1) for b in inside) / len(inside) if inside else 0.0,
        roofs=[c for c, _ in Counter(b.get("roof_colour", "grey") for b in inside).most_common(2)],
        materials=[c for c, _ in Counter(b.get("roof_material", "concrete") for b in inside).most_common(2)],
        roads=roads,
        rail=bool(scene.query("rail", bounds)),
        water=water[0] if water else None,
        parks=len(scene.query("parks", bounds)),
        sports_fields=len(scene.query("sports_fields", bounds)),
        trees=len(scene.query("trees", bounds)),
        cars=len(vehicles),
        gsd=tile.gsd or 1.0,
        zone=_zone_at(scene, ((bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2)),
        storey_range=(min(b.get("storeys", 1) for b in inside), max(b.get("storeys", 1) for b in inside))
        if inside
        else (0, 0),
        parking=sum(1 for p in scene.query("paved", bounds) if p.get("kind") == "parking"),
        crops=tuple(sorted({f.get("crop", "crops") for f in scene.query("fields", bounds)}))[:2],
        vehicles=len(all_vehicles),
        building_use=Counter(b["use"] for b in inside).most_common(1)[0][0] if inside else None,
        buildings_touching=len(touching_buildings),
    )


def _zone_at(scene: Scene, point: tuple[float, float]) -> str | None:
    x, y = point
    for zone in scene.query("zones", (x, y, x, y)):
        if _inside(point, zone.get("polygon") or []):
            return zone.get("name")
    return None


def _inside(point, polygon) -> bool:
    """Even-odd ray casting."""
    x, y = point
    inside = False
    for (x1, y1), (x2, y2) in zip(polygon, polygon[1:] + polygon[:1]):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside
