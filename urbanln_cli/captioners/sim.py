"""The simulated VLM panel: captions written from a synthetic city's scene, with known errors.

``sim:<persona>`` describes a tile from the scene objects inside its bounds. Each
persona has its own length, style and error profile (omissions, wrong counts,
wrong land use, hallucinated objects, hallucinated objects too small to see,
false absences, boilerplate). Only tiles of a synthetic city (``urbanln synth
city``) can be described; real imagery needs Ollama models.

The text comes from a small seeded grammar that writes the way real captions
do (LLaMA-Adapter V2 on Beijing tiles, the human UCM-Captions): overview and
land use first, then objects, then details; several surface forms per fact
("About 40 houses stand here, most of them low-rise", "There are roughly 40
two-storey homes with red and beige roofs", "The tile holds around 40
buildings, most of which have 2 storeys"); attribute phrases and relative
clauses; absence statements ("No vehicles are visible on the roads", "...,
without any water bodies"); and some words outside urbanln's lexicon
(thoroughfare, townhouses, watercourse, automobiles, teal, ...). Absence
statements are more frequent than in real captions (about 1 sentence in 100
there) so that parsers meet them often. The same persona, tile and seed always
give the same caption.

Every sentence carries its truth label, so ``fuse`` can be scored against the
truth. ``sentence_labels`` is ``{"sentences": [...], "omitted": [facts]}``, one
entry per sentence of ``split_sentences(caption)``:

- ``text``: the sentence, exactly as in the caption;
- ``fact``: what its main assertion is about (``land_use``, ``building_count``,
  ``roads``, ``water``, ``cars``, ...; ``none`` for boilerplate and
  hallucinations);
- ``label``: ``true``, or the error the sentence makes: ``wrong_land_use``,
  ``wrong_count``, ``hallucinated_object``, ``hallucinated_small_object``,
  ``false_absence`` (says something the tile has is not there), ``boilerplate``;
- ``polarity``: ``present`` (says something is there) or ``absent`` ("there are
  no cars"; fact then names the thing said to be missing);
- ``absent``: the lexicon concepts the sentence says are not there, from its main
  assertion and any attached clause (``["car"]`` for "..., with no vehicles
  visible on it"); ``[]`` when it denies nothing;
- ``also``: assertions of attached clauses, each ``{fact, polarity, label,
  absent[, value]}`` ("..., most of which have red roofs", "..., without any
  water bodies"); ``[]`` for most sentences. Clauses are attached only to true
  sentences and are always true themselves, so ``label`` is ``true`` exactly
  when everything the sentence says is true;
- ``value`` (facts with one): what it states, e.g. the land use, the count, or
  ``{"class": "arterial", "lanes": 4}``.

``omitted`` lists the true facts the persona left out. Schema v1 had only
``text``, ``label`` and ``fact``; the added keys keep those meanings.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from urbanln_cli.captioners import GenerationOptions, ModelInfo, Reply, TileInfo
from urbanln_cli.config import suggest
from urbanln_cli.errors import InputError, UsageProblem

SIM_VERSION = 2  # 2: varied syntax, absence statements, label schema with polarity
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
    absence: float = 0.0  # per caption, twice: says that something the tile lacks is not there (true)
    false_absence: float = 0.0  # per caption: says that something the tile has is not there (an error)


# Hand-packed data tables: the formatter leaves them as written.
# fmt: off
PERSONAS = {
    "precise": Persona(detail=5, omission=0.10, wrong_count=0.05, wrong_land_use=0.03, hallucinated_object=0.03,
                       hallucinated_small_object=0.0, boilerplate=0.0, style="plain", absence=0.35, false_absence=0.02),
    "verbose": Persona(detail=12, omission=0.05, wrong_count=0.15, wrong_land_use=0.05, hallucinated_object=0.15,
                       hallucinated_small_object=0.15, boilerplate=0.5, style="florid", absence=0.45,
                           false_absence=0.05),
    "hallucinating": Persona(detail=6, omission=0.15, wrong_count=0.30, wrong_land_use=0.25, hallucinated_object=0.50,
                             hallucinated_small_object=0.60, boilerplate=0.2, style="florid", absence=0.25,
                                 false_absence=0.20),
    "generic": Persona(detail=1, omission=0.50, wrong_count=0.10, wrong_land_use=0.10, hallucinated_object=0.05,
                       hallucinated_small_object=0.05, boilerplate=0.8, style="vague", absence=0.20,
                           false_absence=0.05),
}

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


# ---------------------------------------------------------------- writing
#
# A seeded grammar: every fact has several surface forms; a persona's style picks
# among plain, florid or vague ones. A form is a sentence body without its full
# stop; attached clauses and a florid persona's padding go after the body.

# Hand-packed data tables: the formatter leaves them as written.
# fmt: off
_USES = ["residential", "commercial", "industrial", "park", "farmland"]
# land use -> (phrase, form): "c" takes an article, "m" is a mass noun, "p" a plural
_LAND_USE: dict[str, tuple[tuple[str, str], ...]] = {
    "residential": (("residential area", "c"), ("residential district", "c"), ("residential neighbourhood", "c"),
                    ("housing estate", "c"), ("neighbourhood of family homes", "c"), ("housing", "m")),
    "commercial": (("commercial area", "c"), ("commercial district", "c"), ("business district", "c"),
                   ("shopping district", "c"), ("commercial buildings", "p")),
    "industrial": (("industrial area", "c"), ("industrial zone", "c"), ("industrial estate", "c"),
                   ("industrial buildings and warehouses", "p"), ("manufacturing district", "c")),
    "park": (("park", "c"), ("public park", "c"), ("parkland", "m"), ("green space", "m"), ("recreation ground", "c")),
    "water": (("open water", "m"), ("body of water", "c"), ("water body", "c"), ("expanse of open water", "c")),
    "farmland": (("farmland", "m"), ("agricultural land", "m"), ("cropland", "m"), ("agricultural fields", "p"),
                 ("farming country", "m")),
    "open": (("open, sparsely built land", "m"), ("open land", "m"), ("vacant land", "m"), ("undeveloped ground", "m")),
}
_ZONE_TEXT = {
    "centre": "the dense city centre", "residential_high": "a high-density residential district",
    "residential_mid": "a mid-density residential area", "residential_low": "a low-density suburb",
    "industrial": "an industrial zone", "park": "a large park", "village": "a village at the edge of the city",
    "farmland": "farmland outside the city",
}
# (plural, singular) by the buildings' use and height
_BUILDING_NOUNS = {
    "residential": (("buildings", "building"), ("houses", "house"), ("homes", "home"), ("dwellings", "dwelling")),
    "residential_tall": (("buildings", "building"), ("apartment blocks", "apartment block"), ("residential buildings",
        "residential building")),
    "residential_high": (("buildings", "building"), ("apartment blocks", "apartment block"), ("tower blocks",
        "tower block"),
                         ("high-rises", "high-rise")),
    "commercial": (("buildings", "building"), ("office buildings", "office building"), ("commercial buildings",
        "commercial building")),
    "industrial": (("buildings", "building"), ("warehouses", "warehouse"), ("sheds", "shed"), ("factory buildings",
        "factory building")),
}
_ROAD_NOUNS = {
    "highway": ("highway", "motorway", "expressway", "dual carriageway"),
    "arterial": ("arterial road", "main road", "avenue", "thoroughfare"),
    "local": ("local road", "street", "road", "side street"),
}
_CROPS = {"fallow": "fallow land", "ploughed": "ploughed soil", "orchard": "orchards", "greenhouse": "greenhouses"}
_ROOFING = {"tile": "clay tiles"}
_APPROX = ("about", "around", "roughly", "approximately", "some")
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve",
                 "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty")

# what an absence statement denies: thing -> (lexicon concepts, sentences, clauses for a host sentence)
_ABSENCE: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "water": (("river", "lake", "canal", "water_body"),
              ("There is no water in the tile", "No rivers or lakes are visible", "The area has no water bodies"),
              (", without any water bodies", ", with no water in sight", ", and there is no river or lake")),
    "rail": (("railway", "train"), ("There are no railway tracks", "No rail lines cross the area", "The tile has "
        "no railway"), ()),
    "parks": (("park",), ("There is no park or other green space", "The tile has no parks", "No parks can be seen"),
        ()),
    "highway": (("highway",), ("No highway passes through the tile", "There is no motorway"), ()),
    "sports_fields": (("sports_field", "stadium"), ("No sports fields can be seen", "There are no sports pitches"), ()),
    "cars": (("car",), ("There are no cars", "No traffic can be seen", "No vehicles are visible on the roads"),
             (", with no vehicles visible on it", ", but no cars can be seen on it", ", with no traffic on it")),
    "trees": (("tree",), ("There are no trees", "Not a single tree can be seen"), (", without any trees",)),
    "buildings": (("building",), ("There are no buildings", "No buildings or other structures stand here"),
        (", without any buildings",)),
    "roads": (("road", "highway"), ("No roads cross the tile", "There are no roads"), (", with no roads",)),
    "fields": (("farmland",), ("There are no fields", "There is no farmland"), ()),
    "parking": (("parking",), ("There is no parking lot", "No car parks can be seen"), ()),
}
# how readily a captioner remarks that a thing is missing
_SALIENCE = {"water": 3.0, "cars": 3.0, "buildings": 2.0, "trees": 2.0, "roads": 2.0, "rail": 1.0, "parks": 1.0,
    "highway": 1.0,
             "fields": 1.0, "parking": 1.0, "sports_fields": 0.5}
# the presence facts an absence contradicts (a false absence prefers a thing the caption says nothing else about)
_PRESENCE_FACTS = {"water": {"water", "use:water"}, "rail": {"rail"}, "parks": {"parks", "use:park"},
                   "highway": {"roads", "road_classes"}, "sports_fields": {"sports_fields"}, "cars": {"cars"},
                   "trees": {"tree_count", "parks", "use:park"},
                   "buildings": {"building_count", "storey_range", "roofs", "materials", "use:residential",
                       "use:commercial", "use:industrial"},
                   "roads": {"roads", "road_classes", "cars", "parking"}, "fields": {"fields", "use:farmland"},
                       "parking": {"parking"}}
_ABSENT_OBJECTS = {  # hallucinations: presence statements about things the tile lacks
    "water": ("A river winds through the area", "A narrow canal runs along one side of the tile",
        "There is a small pond among the buildings"),
    "rail": ("A railway line crosses the tile", "Train tracks run through the area"),
    "park": ("A large park with lawns and paths lies at its centre", "There is a park, which offers green space to "
        "residents"),
    "highway": ("A multi-lane highway cuts across the scene", "An elevated expressway passes over the area"),
    "stadium": ("A stadium with a large oval stand is visible", "There is a ballpark with floodlights"),
}
_HALLUCINATED_ABSENCE = {"water": "water", "rail": "rail", "park": "parks", "highway": "highway",
    "stadium": "sports_fields"}
_SMALL_OBJECTS = [
    "People can be seen walking along the pavements.",
    "Traffic lights control the main intersection.",
    "Road signs line the streets.",
    "Cyclists ride along a bike lane.",
    "Pedestrians can be seen crossing the street.",
    "Street lamps line the road.",
]
_SMALL_CARS = ["Cars are parked along the kerbs.", "Several cars and a bus are driving along the road."]
_BOILERPLATE = [
    "This image shows an aerial view of an area.",
    "The picture is a satellite image taken from above.",
    "The image is a bird's eye view of the area.",
]
_CLOSING = [
    "Overall, this is a typical scene.",
    "The aerial view provides a comprehensive view of the area's layout.",
    "The scene captures the everyday character of the place.",
]
# A florid persona pads sentences the way chatty VLMs do; the padding asserts nothing.
_FLOURISH = [
    ", which is clearly visible from above", ", as can be seen in the image", ", giving the scene a distinctive "
        "character",
    ", in a way that is typical of such areas", ", adding to the overall texture of the landscape",
    ", showcasing the variety of the landscape", ", creating a picturesque scene",
]
# fmt: on


def _height_words(storeys: float) -> str:
    return "low-rise" if storeys <= 3 else "mid-rise" if storeys <= 8 else "high-rise"


def _wrong_count(rng: random.Random, n: int) -> int:
    wrong = n
    while wrong == n:
        wrong = max(1, round(n * rng.choice([0.3, 0.5, 2.0, 3.0]) + rng.choice([-2, 2])))  # 0 would be an absence
    return wrong


def _num(rng: random.Random, n: int, spell: float = 0.25) -> str:
    return _NUMBER_WORDS[n] if 0 < n < len(_NUMBER_WORDS) and rng.random() < spell else str(n)


def _storey(n: int) -> str:
    """'two-storey', '14-storey'."""
    return f"{_NUMBER_WORDS[n] if 0 < n < len(_NUMBER_WORDS) else n}-storey"


def _a(phrase: str) -> str:
    """The phrase with its indefinite article: 'an 8-lane highway', 'a one-lane street', 'an industrial zone'."""
    w = phrase.lower()
    digits = re.match(r"\d+", w)
    if digits:
        vowel = digits.group().startswith("8") or digits.group() in ("11", "18")
    else:
        vowel = w[:1] in "aeiou" and not w.startswith(("one", "uni", "use"))
    return f"{'an' if vowel else 'a'} {phrase}"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _and(items: Sequence[str], word: str = "and") -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" {word} " + items[-1]


@dataclass
class _Line:
    """One sentence before it is written out: its body (no full stop), attached clauses and labels."""

    fact: str
    label: str
    body: str = ""
    polarity: str = "present"
    absent: tuple[str, ...] = ()
    value: Any = None
    clauses: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (text, assertion)
    pad: bool = True  # a florid persona may pad it

    def attach(
        self, text: str, fact: str, polarity: str = "present", absent: tuple[str, ...] = (), value: Any = None
    ) -> None:
        assertion: dict[str, Any] = {"fact": fact, "polarity": polarity, "label": "true", "absent": list(absent)}
        if value is not None:
            assertion["value"] = value
        self.clauses.append((text, assertion))

    def write(self, rng: random.Random, florid: bool) -> dict[str, Any]:
        text = self.body + "".join(t for t, _ in self.clauses)
        if florid and self.pad and not any(a["polarity"] == "absent" for _, a in self.clauses) and rng.random() < 0.6:
            text += rng.choice(_FLOURISH)
        absent = list(self.absent) + [c for _, a in self.clauses for c in a["absent"]]
        out: dict[str, Any] = {
            "text": _cap(text) + ".",
            "label": self.label,
            "fact": self.fact,
            "polarity": self.polarity,
            "absent": list(dict.fromkeys(absent)),
            "also": [a for _, a in self.clauses],
        }
        if self.value is not None:
            out["value"] = self.value
        return out


def _land_use_body(rng: random.Random, style: str, use: str, facts: Facts) -> str:
    phrase, form = rng.choice(_LAND_USE[use])
    if (
        form == "c"
        and use in ("residential", "commercial", "industrial")
        and facts.buildings > 20
        and rng.random() < 0.4
    ):
        phrase = "dense " + phrase
    x = _a(phrase) if form == "c" else phrase
    if style == "vague":
        forms = [f"There {'are' if form == 'p' else 'is'} {x}"]
        if form == "c":
            forms += [f"Here is {x}", f"It is {x}"]
        elif form == "m" and use in ("farmland", "open"):
            forms.append(f"There is a piece of {x}")
        return rng.choice(forms)
    forms = [
        f"The area is dominated by {x}",
        f"The image shows {x}",
        f"The image depicts {x}",
        f"Most of the tile is taken up by {x}",
        f"The tile is mostly {x}",
    ]
    if form == "c":
        forms.append(f"{x} fills most of the tile")
    if style == "florid":
        forms += [f"The image is a bird's eye view of {x}", f"The image is an aerial view of {x}"]
    return rng.choice(forms)


def _roof_colours(facts: Facts, word: str = "and") -> str:
    return _and(facts.roofs, word)


def _buildings_body(rng: random.Random, style: str, n: int, facts: Facts, roofs: bool) -> str:
    """The count and the height of the buildings (and their roof colours when ``roofs``)."""
    use = facts.building_use or "residential"
    if use == "residential" and facts.storeys > 4:
        use = "residential_high" if facts.storeys > 8 else "residential_tall"
    nouns = _BUILDING_NOUNS.get(use, _BUILDING_NOUNS["residential"])
    plural, singular = rng.choice(nouns)
    if use == "residential" and facts.storeys <= 3 and rng.random() < 0.2:
        plural, singular = (
            "townhouses" if facts.storeys >= 2 else "bungalows",
            "townhouse" if facts.storeys >= 2 else "bungalow",
        )
    h, s = _height_words(facts.storeys), round(facts.storeys)
    with_roofs = f" with {_roof_colours(facts)} roofs" if roofs else ""
    if style == "vague":
        if n == 1:
            return f"There is a {singular}{with_roofs}"
        return rng.choice(
            [
                f"There are some {plural}{with_roofs}",
                f"Some {plural}{with_roofs} can be seen",
                f"There are a number of {plural}{with_roofs}",
            ]
        )
    S = _num(rng, s, 0.4)
    if n == 1:
        return rng.choice(
            [
                f"A single {h} {singular}{with_roofs} with {S} storey{'s' if s != 1 else ''} stands here",
                f"There is one {_storey(s)} {singular}{with_roofs}",
            ]
        )
    N = _num(rng, n)
    approx = rng.choice(_APPROX)
    forms = [
        f"{approx} {N} {plural}{with_roofs} stand here, most of them {h} with around {S} storeys",
        f"The tile holds {approx} {N} {plural}{with_roofs}, mostly {h} ({S} storeys)",
        f"{approx} {N} {_storey(s)} {plural}{with_roofs} can be seen",
    ]
    if roofs:
        forms.append(
            f"There are {approx} {N} {_storey(s)} {plural}, most of which have {_roof_colours(facts, 'or')} roofs"
        )
    else:
        forms.append(f"There are {approx} {N} {h} {plural}, most of which have {S} storeys")
    return rng.choice(forms)


def _roads_body(rng: random.Random, style: str, facts: Facts) -> tuple[str, dict[str, Any]]:
    order = ["highway", "arterial", "local"]
    main = min(facts.roads, key=lambda c: order.index(c) if c in order else 9)
    lanes = facts.roads[main]
    value = {"class": main, "lanes": lanes}
    if style == "vague":
        return rng.choice(["There are some roads", "A road passes through", "Roads cross the area"]), value
    noun = rng.choice(_ROAD_NOUNS.get(main, (f"{main} road",)))
    L = _num(rng, lanes, 0.2)
    forms = [
        f"{_a(f'{L}-lane {noun}')} runs through the tile",
        f"The tile is crossed by {_a(f'{L}-lane {noun}')}",
        f"{_a(noun)} with {L} lane{'s' if lanes != 1 else ''} cuts across the area",
        f"There is {_a(f'{L}-lane {noun}')}, which crosses the tile",
    ]
    return rng.choice(forms), value


def _water_body(rng: random.Random, style: str, kind: str) -> str:
    if kind not in ("river", "lake", "canal", "pond", "reservoir", "stream"):
        kind = "body of water"
    if style == "vague":
        return rng.choice([f"There is {_a(kind)}", "There is some water"])
    forms = [f"{_a(kind)} is visible", f"There is {_a(kind)} in the tile", f"Part of the tile is covered by {_a(kind)}"]
    forms += {
        "river": ["A river flows through the area", "A watercourse runs through the tile"],
        "lake": ["A lake occupies part of the tile", "A stretch of still water, probably a lake, lies within the tile"],
    }.get(kind, [])
    if style == "florid":
        forms.append(f"The shimmering surface of {_a(kind)} catches the light")
    return rng.choice(forms)


def _detail_body(rng: random.Random, style: str, fact: str, facts: Facts, n: int | None = None) -> tuple[str, Any]:
    """A detail sentence (zone, heights, roads, parking, fields, roofs, materials, trees, sports fields, cars)."""
    if fact == "zone":
        z = _ZONE_TEXT[facts.zone]
        return rng.choice(
            [
                f"This part of the city is {z}",
                f"The tile lies in {z}",
                f"It appears to be part of {z}",
                f"The setting is {z}",
            ]
        ), facts.zone
    if fact == "storey_range":
        a, b = facts.storey_range
        return rng.choice(
            [
                f"Building heights range from {a} to {b} storeys",
                f"The buildings vary from {a} to {b} floors in height",
                f"Heights vary between {a} and {b} storeys",
                f"The lowest buildings have {a} storeys and the tallest {b}",
            ]
        ), [a, b]
    if fact == "road_classes":
        classes = sorted(facts.roads)
        forms = [
            f"The street network mixes {_and(classes)} roads",
            f"There is a mix of {_and(classes)} roads",
            f"The roads include {_and(classes)} streets",
        ]
        if len(classes) == 2:
            forms.append(f"Both {classes[0]} and {classes[1]} roads can be seen")
        return rng.choice(forms), classes
    if fact == "parking":
        p = facts.parking
        if p == 1:
            return rng.choice(
                ["There is a parking lot", "A car park is visible", "A paved parking area can be seen"]
            ), p
        P = _num(rng, p, 0.5)
        return rng.choice([f"There are {P} parking lots", f"The tile has {P} car parks"]), p
    if fact == "fields":
        crops = [_CROPS.get(c, c) for c in facts.crops]
        return rng.choice(
            [
                f"Fields of {_and(crops)} are visible",
                f"There are fields of {_and(crops)}",
                f"The farmland is a patchwork of {_and(crops)}",
                f"The fields show {_and(crops)}",
            ]
        ), list(facts.crops)
    if fact == "roofs":
        c = facts.roofs
        forms = [
            f"Roofs are mostly {_and(c)}",
            f"The roofs are predominantly {_and(c)}",
            f"Most of the buildings have {_and(c, 'or')} roofs",
        ]
        if len(c) == 2:
            forms.append(f"Most rooftops are {c[0]}, with some {c[1]} ones")
        return rng.choice(forms), list(c)
    if fact == "materials":
        m = [_ROOFING.get(x, x) for x in facts.materials]
        return rng.choice(
            [
                f"Roofing looks like {_and(facts.materials)}",
                f"The roofs appear to be made of {_and(m)}",
                f"Roof materials include {_and(m)}",
                f"Most roofs are covered in {_and(m, 'or')}",
            ]
        ), list(facts.materials)
    if fact == "tree_count":
        if n == 1:
            return rng.choice(["There is a single tree", "One tree can be seen"]), n
        N = _num(rng, n)
        return rng.choice(
            [
                f"Roughly {N} trees are scattered around",
                f"There are about {N} trees",
                f"Around {N} trees dot the tile",
                f"The tile has some {N} trees",
            ]
        ), n
    if fact == "sports_fields":
        return rng.choice(["A sports field is visible", "There is a playing field", "A sports pitch can be seen"]), None
    if fact == "cars":
        if facts.cars == 1:
            return rng.choice(["A single car can be seen on the street", "There is one car on the road"]), 1
        N = _num(rng, facts.cars)
        return rng.choice(
            [
                f"Around {N} cars are parked or moving on the streets",
                f"There are about {N} cars on the roads",
                f"Roughly {N} cars can be seen",
                f"About {N} automobiles are visible on the streets",
            ]
        ), facts.cars
    raise ValueError(fact)


def _lacks(thing: str, facts: Facts) -> bool:
    """The tile truly has none of it, so saying so is true."""
    return {
        "water": facts.water is None,
        "rail": not facts.rail,
        "parks": facts.parks == 0,
        "highway": "highway" not in facts.roads,
        "sports_fields": facts.sports_fields == 0,
        "cars": facts.vehicles == 0,
        "trees": facts.trees == 0,
        "buildings": facts.buildings_touching == 0,
        "roads": not facts.roads,
        "fields": not facts.crops,
        "parking": facts.parking == 0,
    }[thing]


def _has(thing: str, facts: Facts) -> bool:
    """The tile visibly has it, so denying it is an error (cars only where the GSD shows them)."""
    return {
        "water": facts.water is not None,
        "rail": facts.rail,
        "parks": facts.parks > 0,
        "highway": "highway" in facts.roads,
        "sports_fields": facts.sports_fields > 0,
        "cars": facts.cars > 0 and facts.gsd <= CARS_VISIBLE_BELOW_M,
        "trees": facts.trees > 0,
        "buildings": facts.buildings > 0,
        "roads": bool(facts.roads),
        "fields": bool(facts.crops),
        "parking": facts.parking > 0,
    }[thing]


def _noticed_absences(facts: Facts) -> list[str]:
    """What the tile lacks, most noticeable first: one order per tile, shared by every persona (models tend to remark
    on the same missing things, so absences find support), drawn by salience from the facts themselves."""
    order = random.Random(hashlib.sha256(json.dumps(asdict(facts), sort_keys=True).encode()).digest())
    lacking = [k for k in _ABSENCE if _lacks(k, facts)]
    return sorted(lacking, key=lambda k: order.random() ** (1 / _SALIENCE[k]), reverse=True)


def _absence_sentence(rng: random.Random, thing: str, facts: Facts) -> str:
    forms = list(_ABSENCE[thing][1])
    if thing == "cars" and not facts.roads:
        forms.remove("No vehicles are visible on the roads")
    return rng.choice(forms)


def write_caption(persona: Persona, facts: Facts, rng: random.Random) -> tuple[str, dict[str, Any]]:
    """The caption and its labels: every sentence with what it asserts and 'true' or the error it makes."""
    style = persona.style
    florid, vague = style == "florid", style == "vague"
    omitted: list[str] = []

    def kept(fact: str) -> bool:  # the omission draw for a true fact
        if rng.random() < persona.omission:
            omitted.append(fact)
            return False
        return True

    # 1. what to say, with its errors (every random error and omission is drawn here)
    opening = rng.random() < persona.boilerplate
    use, use_label = facts.land_use, "true"
    if rng.random() < persona.wrong_land_use:
        use, use_label = rng.choice([u for u in _USES if u != facts.land_use]), "wrong_land_use"
    buildings = None
    if facts.buildings:
        n, label = facts.buildings, "true"
        if not vague and rng.random() < persona.wrong_count:  # a vague persona states no count to get wrong
            n, label = _wrong_count(rng, facts.buildings), "wrong_count"
        if label != "true" or kept("building_count"):
            buildings = (n, label)
    objects = [
        fact
        for fact, present in (
            ("roads", bool(facts.roads)),
            ("water", facts.water is not None),
            ("parks", facts.parks > 0),
            ("rail", facts.rail),
        )
        if present and kept(fact)
    ]
    details: list[tuple[str, str, int | None]] = []  # (fact, label, count)
    if facts.zone in _ZONE_TEXT:
        details.append(("zone", "true", None))
    if facts.buildings > 1 and facts.storey_range[1] > facts.storey_range[0]:
        details.append(("storey_range", "true", None))
    if len(facts.roads) > 1:
        details.append(("road_classes", "true", None))
    if facts.parking:
        details.append(("parking", "true", None))
    if facts.crops:
        details.append(("fields", "true", None))
    if facts.roofs:
        details.append(("roofs", "true", None))
    if facts.materials:
        details.append(("materials", "true", None))
    if facts.trees:
        n, label = facts.trees, "true"
        if rng.random() < persona.wrong_count:
            n, label = _wrong_count(rng, facts.trees), "wrong_count"
        details.append(("tree_count", label, n))
    if facts.sports_fields:
        details.append(("sports_fields", "true", None))
    if facts.cars and facts.gsd <= CARS_VISIBLE_BELOW_M:
        details.append(("cars", "true", facts.cars))
    details = [d for d in details[: persona.detail] if d[1] != "true" or kept(d[0])]
    hallucinated = None
    if rng.random() < persona.hallucinated_object:
        candidates = [k for k in _ABSENT_OBJECTS if not _present(k, facts)]
        hallucinated = rng.choice(candidates) if candidates else None
    lacking = [k for k in _noticed_absences(facts) if hallucinated is None or _HALLUCINATED_ABSENCE[hallucinated] != k]
    absences: list[str] = []
    for _ in range(2):
        if rng.random() < persona.absence and lacking:
            # most often the absence any captioner of this tile would remark on first, else any
            thing = (
                lacking[0] if rng.random() < 0.75 else rng.choices(lacking, weights=[_SALIENCE[k] for k in lacking])[0]
            )
            lacking.remove(thing)
            absences.append(thing)
    false_absence = None
    if rng.random() < persona.false_absence:
        stated = {"building_count"} if buildings else set()
        stated |= set(objects) | {d[0] for d in details} | {f"use:{use}"}
        deniable = [k for k in _ABSENCE if _has(k, facts)]
        unstated = [k for k in deniable if not _PRESENCE_FACTS[k] & stated]
        pool = unstated or deniable
        false_absence = rng.choice(pool) if pool else None
    small = rng.random() < persona.hallucinated_small_object
    closing = florid and rng.random() < persona.boilerplate

    # 2. how to say it: which facts share a sentence, in which words and order
    land = _Line("land_use", use_label, _land_use_body(rng, style, use, facts), value=use)
    if florid and facts.buildings > 20 and rng.random() < 0.3:
        land.body += ", densely packed"
    detail_facts = [d[0] for d in details]
    lines_overview: list[_Line] = []
    if "zone" in detail_facts:
        detail_facts.remove("zone")
        if use_label == "true" and not vague and rng.random() < 0.35:
            land.attach(
                rng.choice([", part of {}", ", in what appears to be {}", " in {}"]).format(_ZONE_TEXT[facts.zone]),
                "zone",
                value=facts.zone,
            )
        else:
            body, value = _detail_body(rng, style, "zone", facts)
            lines_overview.append(_Line("zone", "true", body, value=value))
    object_lines: list[_Line] = []
    if buildings:
        n, label = buildings
        roofs = label == "true" and not vague and "roofs" in detail_facts and rng.random() < 0.5
        line = _Line("building_count", label, _buildings_body(rng, style, n, facts, roofs), value=None if vague else n)
        if roofs:
            detail_facts.remove("roofs")
            line.clauses.append(
                (
                    "",
                    {"fact": "roofs", "polarity": "present", "label": "true", "absent": [], "value": list(facts.roofs)},
                )
            )
        object_lines.append(line)
    roads_line = None
    for fact in objects:
        if fact == "roads":
            body, value = _roads_body(rng, style, facts)
            roads_line = _Line("roads", "true", body, value=value)
            object_lines.append(roads_line)
        elif fact == "water":
            object_lines.append(_Line("water", "true", _water_body(rng, style, facts.water), value=facts.water))
        elif fact == "parks":
            object_lines.append(
                _Line(
                    "parks",
                    "true",
                    rng.choice(
                        ["There is a park", "There is some green space"]
                        if vague
                        else [
                            "Green space with lawns and trees covers part of the tile",
                            "There is a park with open lawns",
                            "A park occupies part of the tile",
                            "Part of the area is given over to a landscaped park",
                        ]
                    ),
                )
            )
        elif fact == "rail":
            object_lines.append(
                _Line(
                    "rail",
                    "true",
                    rng.choice(
                        ["There is a railway"]
                        if vague
                        else [
                            "Railway tracks cross the area",
                            "A railway line runs through the tile",
                            "Train tracks pass through the area",
                            "A railway corridor cuts across the tile",
                        ]
                    ),
                )
            )
    if len(object_lines) > 2:  # buildings and roads first, the rest in any order
        head, rest = object_lines[:2], object_lines[2:]
        rng.shuffle(rest)
        object_lines = head + rest
    if hallucinated:
        object_lines.insert(
            rng.randint(0, len(object_lines)),
            _Line("none", "hallucinated_object", rng.choice(_ABSENT_OBJECTS[hallucinated]), pad=False),
        )
    detail_lines = []
    by_fact = {d[0]: d for d in details}
    for fact in detail_facts:
        _, label, count = by_fact[fact]
        body, value = _detail_body(rng, style, fact, facts, count)
        detail_lines.append(_Line(fact, label, body, value=value))
    # absences: a clause on a true host sentence, or a sentence among the details
    hosts = {"water": land, "buildings": land, "roads": land, "trees": land, "cars": roads_line}
    for thing in absences:
        concepts, _, clauses = _ABSENCE[thing]
        host = hosts.get(thing)
        if host is not None and clauses and host.label == "true" and not host.clauses and rng.random() < 0.5:
            host.attach(rng.choice(clauses), thing, "absent", concepts)
        else:
            detail_lines.insert(
                rng.randint(0, len(detail_lines)),
                _Line(thing, "true", _absence_sentence(rng, thing, facts), "absent", concepts, pad=False),
            )
    if false_absence:
        detail_lines.insert(
            rng.randint(0, len(detail_lines)),
            _Line(
                false_absence,
                "false_absence",
                _absence_sentence(rng, false_absence, facts),
                "absent",
                _ABSENCE[false_absence][0],
                pad=False,
            ),
        )
    lines = [land, *lines_overview, *object_lines, *detail_lines]
    sentences = (
        [
            {
                "text": rng.choice(_BOILERPLATE[:2] if not florid else _BOILERPLATE),
                "label": "boilerplate",
                "fact": "none",
                "polarity": "present",
                "absent": [],
                "also": [],
            }
        ]
        if opening
        else []
    )
    sentences += [line.write(rng, florid) for line in lines]
    if small:
        options = list(_SMALL_OBJECTS) + (list(_SMALL_CARS) if facts.gsd > CARS_VISIBLE_BELOW_M else [])
        sentences.append(
            {
                "text": rng.choice(options),
                "label": "hallucinated_small_object",
                "fact": "none",
                "polarity": "present",
                "absent": [],
                "also": [],
            }
        )
    if closing:
        sentences.append(
            {
                "text": rng.choice(_CLOSING),
                "label": "boilerplate",
                "fact": "none",
                "polarity": "present",
                "absent": [],
                "also": [],
            }
        )
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
            spec = json.dumps(
                {"persona": asdict(PERSONAS[persona]), "version": SIM_VERSION, "scene": self.scene.sha256},
                sort_keys=True,
            )
            infos[model] = ModelInfo(
                model, "sha256:" + hashlib.sha256(spec.encode()).hexdigest(), ("vision",), ("sim",)
            )
        return infos

    def check_tiles(self, tiles: Sequence[TileInfo]) -> None:
        for tile in tiles:
            if not self.scene.contains(tile):
                raise InputError(
                    f"tile {tile.tile_id} is not part of the synthetic city in {self.scene.path}",
                    hint="sim: models describe only tiles of `urbanln synth city` imagery; for real imagery use "
                    "Ollama models, e.g. --models llava,qwen-vl",
                )

    async def caption(
        self,
        host: str,
        model: str,
        image: bytes,
        prompt: str,
        options: GenerationOptions,
        tile: TileInfo,
        format: dict | None = None,
    ) -> Reply:
        if format is not None:
            raise UsageProblem(
                "the simulated panel only writes captions; it cannot answer structured requests",
                hint="use an Ollama vision model for fuse --refine and --check vlm",
            )
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
