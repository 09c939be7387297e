"""The simulated VLM panel: captions written from a synthetic city's scene, with known errors.

``sim:<persona>`` describes a tile from the scene objects inside its bounds. Each
persona has its own length, vocabulary and error profile (omissions, wrong
counts, wrong land use, hallucinated objects, hallucinated objects too small
to see, boilerplate). Every sentence it writes carries its truth label, so
``fuse`` can be scored against the truth. Only tiles of a synthetic city
(``urbanln synth city``) can be described; real imagery needs Ollama models.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from urbanln_cli.captioners import GenerationOptions, ModelInfo, Reply, TileInfo
from urbanln_cli.config import suggest
from urbanln_cli.errors import InputError, UsageProblem

SIM_VERSION = 1
CELL_M = 256.0  # grid index cell
CARS_VISIBLE_BELOW_M = 1.5  # same threshold as the prompt's visibility note


@dataclass(frozen=True)
class Persona:
    """Error rates are probabilities: per fact sentence (omission, wrong_count, wrong_land_use) or per caption."""

    detail: int  # how many optional detail sentences it adds (length)
    omission: float
    wrong_count: float
    wrong_land_use: float
    hallucinated_object: float
    hallucinated_small_object: float
    boilerplate: float
    style: str  # "plain", "florid" or "vague"


PERSONAS = {
    "precise": Persona(detail=5, omission=0.10, wrong_count=0.05, wrong_land_use=0.03, hallucinated_object=0.03,
                       hallucinated_small_object=0.0, boilerplate=0.0, style="plain"),
    "verbose": Persona(detail=12, omission=0.05, wrong_count=0.15, wrong_land_use=0.05, hallucinated_object=0.15,
                       hallucinated_small_object=0.15, boilerplate=0.5, style="florid"),
    "hallucinating": Persona(detail=6, omission=0.15, wrong_count=0.30, wrong_land_use=0.25, hallucinated_object=0.50,
                             hallucinated_small_object=0.60, boilerplate=0.2, style="florid"),
    "generic": Persona(detail=1, omission=0.50, wrong_count=0.10, wrong_land_use=0.10, hallucinated_object=0.05,
                       hallucinated_small_object=0.05, boilerplate=0.8, style="vague"),
}

_KINDS = ("buildings", "roads", "rail", "parks", "water", "sports_fields", "trees", "vehicles", "zones", "paved", "fields")


class Scene:
    """scene.json with a grid index, so a tile finds its objects without scanning the city."""

    def __init__(self, path: Path | str):
        import orjson

        self.path = Path(path)
        try:
            raw = self.path.read_bytes()
            data = orjson.loads(raw)
        except (OSError, orjson.JSONDecodeError) as exc:
            raise InputError(f"cannot read scene {self.path}: {exc}", hint="pass the scene.json that `urbanln synth city` wrote") from None
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
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as exc:  # JSON, but not a scene
            raise InputError(f"{self.path} is not a scene of `urbanln synth city` ({type(exc).__name__}: {exc})",
                             hint="pass the scene.json that `urbanln synth city` wrote") from None

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


def tile_facts(scene: Scene, tile: TileInfo) -> Facts:
    bounds = tile.bounds
    area = (bounds[2] - bounds[0]) * (bounds[3] - bounds[1])
    inside = []
    use_area: Counter = Counter()
    for b in scene.query("buildings", bounds):
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
    vehicles = [v for v in scene.query("vehicles", bounds) if v.get("kind") == "car"]
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
        storey_range=(min(b.get("storeys", 1) for b in inside), max(b.get("storeys", 1) for b in inside)) if inside else (0, 0),
        parking=sum(1 for p in scene.query("paved", bounds) if p.get("kind") == "parking"),
        crops=tuple(sorted({f.get("crop", "crops") for f in scene.query("fields", bounds)}))[:2],
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


# ---------------------------------------------------------------- writing

_USES = ["residential", "commercial", "industrial", "park", "farmland"]
_USE_TEXT = {
    "residential": "housing", "commercial": "commercial buildings", "industrial": "industrial buildings and warehouses",
    "park": "parkland", "water": "open water", "farmland": "farmland", "open": "open, sparsely built land",
}
_ABSENT_OBJECTS = {
    "water": "A river winds through the area.",
    "rail": "A railway line crosses the tile.",
    "park": "A large park with lawns and paths lies at its centre.",
    "highway": "A multi-lane highway cuts across the scene.",
    "stadium": "A stadium with a large oval stand is visible.",
}
_SMALL_OBJECTS = [
    "People can be seen walking along the pavements.",
    "Traffic lights control the main intersection.",
    "Road signs line the streets.",
    "Cyclists ride along a bike lane.",
]
_BOILERPLATE = [
    "This image shows an aerial view of an area.",
    "The picture is a satellite image taken from above.",
    "Overall, this is a typical scene.",
]


_ZONE_TEXT = {
    "centre": "the dense city centre", "residential_high": "a high-density residential district",
    "residential_mid": "a mid-density residential area", "residential_low": "a low-density suburb",
    "industrial": "an industrial zone", "park": "a large park", "village": "a village at the edge of the city",
    "farmland": "farmland outside the city",
}
# A florid persona pads sentences the way chatty VLMs do; the padding asserts nothing.
_FLOURISH = [
    ", which is clearly visible from above", ", as can be seen in the image", ", giving the scene a distinctive character",
    ", in a way that is typical of such areas", ", adding to the overall texture of the landscape",
]


def _height_words(storeys: float) -> str:
    return "low-rise" if storeys <= 3 else "mid-rise" if storeys <= 8 else "high-rise"


def _wrong_count(rng: random.Random, n: int) -> int:
    wrong = n
    while wrong == n:
        wrong = max(0, round(n * rng.choice([0.3, 0.5, 2.0, 3.0]) + rng.choice([-2, 2])))
    return wrong


def write_caption(persona: Persona, facts: Facts, rng: random.Random) -> tuple[str, dict[str, Any]]:
    """The caption and its labels: every sentence with its fact and 'true' or the error it makes."""
    florid, vague = persona.style == "florid", persona.style == "vague"
    sentences: list[dict[str, str]] = []
    omitted: list[str] = []

    def say(fact: str, text: str, label: str = "true", may_omit: bool = True) -> None:
        if may_omit and label == "true" and rng.random() < persona.omission:
            omitted.append(fact)
            return
        if florid:
            text = text[:-1] + rng.choice(_FLOURISH) + "."
        sentences.append({"text": text, "label": label, "fact": fact})

    if rng.random() < persona.boilerplate:
        sentences.append({"text": rng.choice(_BOILERPLATE[:2]), "label": "boilerplate", "fact": "none"})
    # land use: the one sentence every persona writes
    use, label = facts.land_use, "true"
    if rng.random() < persona.wrong_land_use:
        use, label = rng.choice([u for u in _USES if u != facts.land_use]), "wrong_land_use"
    opener = "The area is dominated by" if not vague else "There is"
    say("land_use", f"{opener} {_USE_TEXT[use]}{', densely packed' if florid and facts.buildings > 20 else ''}.", label, may_omit=False)
    if facts.buildings:
        n, label = facts.buildings, "true"
        if rng.random() < persona.wrong_count:
            n, label = _wrong_count(rng, facts.buildings), "wrong_count"
        text = (f"About {n} building{'s' if n != 1 else ''} stand{'s' if n == 1 else ''} here" if not vague else "There are some buildings") + (
            f", {'most of them ' if n != 1 else ''}{_height_words(facts.storeys)} with around {round(facts.storeys)} storeys." if not vague else ".")
        say("building_count", text, label)
    if facts.roads:
        order = ["highway", "arterial", "local"]
        main = min(facts.roads, key=lambda c: order.index(c) if c in order else 9)
        lanes = facts.roads[main]
        article = "An" if str(lanes).startswith("8") or lanes in (11, 18) else "A"
        say("roads", f"{article} {lanes}-lane {main} road runs through the tile." if not vague else "There are some roads.")
    if facts.water:
        say("water", f"A {facts.water} is visible." if not florid else f"The shimmering surface of a {facts.water} catches the light.")
    if facts.parks:
        say("parks", "Green space with lawns and trees covers part of the tile.")
    if facts.rail:
        say("rail", "Railway tracks cross the area.")
    details = []
    if facts.zone in _ZONE_TEXT:
        details.append(("zone", f"This part of the city is {_ZONE_TEXT[facts.zone]}."))
    if facts.buildings > 1 and facts.storey_range[1] > facts.storey_range[0]:
        details.append(("storey_range", f"Building heights range from {facts.storey_range[0]} to {facts.storey_range[1]} storeys."))
    if len(facts.roads) > 1:
        details.append(("road_classes", f"The street network mixes {' and '.join(sorted(facts.roads))} roads."))
    if facts.parking:
        details.append(("parking", "There is a parking lot." if facts.parking == 1 else f"There are {facts.parking} parking lots."))
    if facts.crops:
        details.append(("fields", f"Fields of {' and '.join(facts.crops)} are visible."))
    if facts.roofs:
        details.append(("roofs", f"Roofs are mostly {' and '.join(facts.roofs)}."))
    if facts.materials:
        details.append(("materials", f"Roofing looks like {' and '.join(facts.materials)}."))
    if facts.trees:
        n, label = facts.trees, "true"
        if rng.random() < persona.wrong_count:
            n, label = _wrong_count(rng, facts.trees), "wrong_count"
        details.append(("tree_count", f"Roughly {n} trees are scattered around.", label))
    if facts.sports_fields:
        details.append(("sports_fields", "A sports field is visible."))
    if facts.cars and facts.gsd <= CARS_VISIBLE_BELOW_M:
        details.append(("cars", f"Around {facts.cars} cars are parked or moving on the streets."))
    for item in details[: persona.detail]:
        fact, text, *label = item
        say(fact, text, label[0] if label else "true")
    if rng.random() < persona.hallucinated_object:
        absent = [k for k in _ABSENT_OBJECTS if not _present(k, facts)]
        if absent:
            sentences.append({"text": _ABSENT_OBJECTS[rng.choice(absent)], "label": "hallucinated_object", "fact": "none"})
    if rng.random() < persona.hallucinated_small_object:
        small = list(_SMALL_OBJECTS)
        if facts.gsd > CARS_VISIBLE_BELOW_M:
            small.append("Cars are parked along the kerbs.")
        sentences.append({"text": rng.choice(small), "label": "hallucinated_small_object", "fact": "none"})
    if florid and rng.random() < persona.boilerplate:
        sentences.append({"text": _BOILERPLATE[2], "label": "boilerplate", "fact": "none"})
    text = " ".join(s["text"] for s in sentences)
    return text, {"sentences": sentences, "omitted": omitted}


def _present(key: str, facts: Facts) -> bool:
    return {
        "water": facts.water is not None,
        "rail": facts.rail,
        "park": facts.parks > 0,
        "highway": "highway" in facts.roads,
        "stadium": facts.sports_fields > 0,
    }[key]


# ---------------------------------------------------------------- backend


class SimBackend:
    """The Backend interface over a scene: no server, no GPU, known truth."""

    def __init__(self, scene: Path | str):
        self.scene = Scene(scene)
        self.hosts = ["sim"]

    async def aclose(self) -> None:
        return None

    async def preflight(self, models: Sequence[str]) -> dict[str, ModelInfo]:
        infos = {}
        for model in models:
            persona = model.removeprefix("sim:")
            if not model.startswith("sim:") or persona not in PERSONAS:
                raise UsageProblem(
                    f"unknown simulated model '{model}'{suggest(persona, PERSONAS)}",
                    hint=f"the panel has {', '.join('sim:' + p for p in PERSONAS)}",
                )
            spec = json.dumps({"persona": asdict(PERSONAS[persona]), "version": SIM_VERSION, "scene": self.scene.sha256}, sort_keys=True)
            infos[model] = ModelInfo(model, "sha256:" + hashlib.sha256(spec.encode()).hexdigest(), ("vision",), ("sim",))
        return infos

    def check_tiles(self, tiles: Sequence[TileInfo]) -> None:
        for tile in tiles:
            if not self.scene.contains(tile):
                raise InputError(
                    f"tile {tile.tile_id} is not part of the synthetic city in {self.scene.path}",
                    hint="sim: models describe only tiles of `urbanln synth city` imagery; for real imagery use Ollama models, e.g. --models llava,qwen-vl",
                )

    async def caption(self, host: str, model: str, image: bytes, prompt: str, options: GenerationOptions, tile: TileInfo,
                      format: dict | None = None) -> Reply:
        if format is not None:
            raise UsageProblem("the simulated panel only writes captions; it cannot answer structured requests",
                               hint="use an Ollama vision model for fuse --refine and --check vlm")
        persona = PERSONAS[model.removeprefix("sim:")]
        seed = int.from_bytes(hashlib.sha256(f"{model}|{tile.tile_id}|{options.seed}".encode()).digest()[:8], "little")
        text, labels = write_caption(persona, tile_facts(self.scene, tile), random.Random(seed))
        return Reply(text, None, len(text.split()), {"sentence_labels": labels})


def scene_for_tiles(tiles_path: Path) -> Path | None:
    """The scene.json beside the raster the tiles were cut from, if there is one."""
    import datasets

    ds = datasets.load_from_disk(str(tiles_path))
    if not ds.num_rows or "source" not in ds.column_names:
        return None
    source = ds.data.column("source")[0].as_py()
    if not isinstance(source, str) or not source:
        return None
    candidate = Path(source).parent / "scene.json"
    return candidate if candidate.is_file() else None
