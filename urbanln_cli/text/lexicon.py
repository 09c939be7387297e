"""The urban lexicon: concepts with their synonyms, attribute words, and visibility limits.

A concept is a canonical name (``residential``, ``river``, ``car``) with the
surface terms that mean it (``housing``, ``homes``, ``suburb``…). Longer terms
win over shorter ones (``commercial buildings`` is ``commercial``, not
``building``). ``visibility`` gives, per concept, the coarsest ground sample
distance (metres per pixel) at which the object can still be seen; ``0``
means never from a satellite or aircraft (people, traffic lights, road signs).

A user extends it with ``--lexicon FILE`` (TOML or JSON)::

    [concepts.boat]
    terms = ["boat", "ship", "vessel"]
    kind = "object"             # or "land_use"
    label = "boats"             # how short captions name it (default: the first term)

    [visibility]
    boat = 3.0                  # m/px; 0 = never visible
    "tree+count" = 1.5          # counted instances only ("about 20 trees")

    [attributes]
    words = ["derelict", "gated"]
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from urbanln_cli.errors import InputError

# concept -> (kind, label, terms). kind: land_use (what a tile is) or object (what is in it).
_CONCEPTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # land use
    "residential": ("land_use", "residential area", (
        "residential", "residential area", "residential district", "residential neighbourhood", "residential neighborhood",
        "residential zone", "housing", "housing estate", "homes", "houses", "house", "dwellings", "suburb", "suburbs",
        "suburban area", "apartment blocks", "apartment buildings", "residential blocks", "residential buildings")),
    "commercial": ("land_use", "commercial area", (
        "commercial", "commercial area", "commercial buildings", "commercial district", "shops", "shopping centre",
        "shopping center", "mall", "retail", "offices", "office buildings", "business district")),
    "industrial": ("land_use", "industrial area", (
        "industrial", "industrial area", "industrial zone", "industrial estate", "industrial buildings", "industrial park",
        "factory", "factories", "warehouse", "warehouses", "plant", "depot", "logistics centre")),
    "downtown": ("land_use", "city centre", (
        "city centre", "city center", "downtown", "central business district", "town centre", "town center", "urban core")),
    "village": ("land_use", "village", ("village", "hamlet", "rural settlement")),
    "farmland": ("land_use", "farmland", (
        "farmland", "cropland", "fields", "field", "farm", "farms", "agricultural land", "agricultural fields", "crops",
        "crop fields", "arable land", "paddies", "orchard", "orchards", "greenhouses", "greenhouse")),
    "park": ("land_use", "park", (
        "park", "parks", "parkland", "green space", "green spaces", "green area", "lawns", "lawn", "public garden", "gardens")),
    "open_land": ("land_use", "open land", (
        "open land", "open field", "open fields", "grassy field", "grassy fields", "grass field", "dirt field", "sparsely built land", "vacant land", "empty land", "bare land", "barren land", "wasteland", "open space")),
    "forest": ("land_use", "forest", ("forest", "woodland", "woods", "wooded area")),
    "airport": ("land_use", "airport", ("airport", "airfield", "airstrip", "runway", "runways", "tarmac", "apron")),
    "water_body": ("land_use", "open water", ("open water", "water body", "body of water", "waterfront")),
    # infrastructure and objects
    "building": ("object", "buildings", ("building", "buildings", "structures", "structure", "block", "blocks", "tower", "towers", "skyscraper", "skyscrapers")),
    "road": ("object", "roads", (
        "road", "roads", "street", "streets", "street network", "road network", "avenue", "boulevard",
        "intersection", "intersections", "junction", "crossroads", "roundabout")),
    "highway": ("object", "a highway", ("highway", "highways", "freeway", "expressway", "motorway", "interstate")),
    "railway": ("object", "railway tracks", ("railway", "railway line", "railway tracks", "rail line", "rail tracks", "railroad", "train tracks", "tracks", "rail")),
    "river": ("object", "a river", ("river", "stream", "creek", "brook")),
    "lake": ("object", "a lake", ("lake", "pond", "reservoir")),
    "canal": ("object", "a canal", ("canal", "waterway")),
    "tree": ("object", "trees", ("tree", "trees", "tree cover", "vegetation", "greenery", "shrubs")),
    "parking": ("object", "a parking lot", ("parking lot", "parking lots", "car park", "car parks", "parking area", "parking")),
    "sports_field": ("object", "a sports field", (
        "sports field", "sports fields", "football pitch", "soccer field", "playing field", "athletic track", "tennis court", "tennis courts")),
    "stadium": ("object", "a stadium", ("stadium", "arena")),
    "roof": ("object", "roofs", ("roof", "roofs", "roofing", "rooftops", "rooftop")),
    "bridge": ("object", "a bridge", ("bridge", "bridges", "overpass")),
    "plaza": ("object", "a plaza", ("plaza", "square", "courtyard")),
    "car": ("object", "cars", ("car", "cars", "vehicle", "vehicles", "truck", "trucks", "bus", "buses", "traffic")),
    "bicycle": ("object", "bicycles", ("bicycle", "bicycles", "bike", "bikes")),
    "bike_lane": ("object", "a bike lane", ("bike lane", "bike lanes", "cycle lane", "cycle path")),
    "road_marking": ("object", "road markings", ("road markings", "lane markings", "zebra crossing", "crosswalk", "crosswalks", "pedestrian crossing")),
    "person": ("object", "people", ("people", "person", "pedestrians", "pedestrian", "crowd", "crowds", "walkers", "residents")),
    "cyclist": ("object", "cyclists", ("cyclist", "cyclists")),
    "traffic_light": ("object", "traffic lights", ("traffic light", "traffic lights", "traffic signals", "traffic signal")),
    "road_sign": ("object", "road signs", ("road sign", "road signs", "street sign", "street signs", "signage", "signs")),
    "street_light": ("object", "street lights", ("street light", "street lights", "streetlights", "lamp posts", "lampposts")),
    "sidewalk": ("object", "sidewalks", ("sidewalk", "sidewalks", "pavement", "pavements", "footpath", "footpaths")),
    "airplane": ("object", "airplanes", ("airplane", "airplanes", "aircraft", "aeroplane", "aeroplanes", "plane", "planes", "jet", "jets")),
    "train": ("object", "a train", ("train", "trains", "locomotive", "freight train")),
    "boat": ("object", "boats", ("boat", "boats", "ship", "ships", "vessel", "vessels")),
    "solar_panel": ("object", "solar panels", ("solar panel", "solar panels", "solar farm")),
}

# coarsest GSD (m/px) at which a concept can be seen; 0 = never; missing = always.
# "<concept>+count" applies to counted instances only ("roughly 20 trees": individual trees).
_VISIBILITY: dict[str, float] = {
    "person": 0.0, "cyclist": 0.0, "traffic_light": 0.0, "road_sign": 0.0, "street_light": 0.0,
    "bicycle": 0.6, "road_marking": 0.6, "bike_lane": 0.6,
    "car": 1.5, "sidewalk": 1.5, "tree+count": 1.5,
    "boat": 5.0, "solar_panel": 5.0, "building+count": 5.0, "train": 5.0, "airplane": 10.0,
}

# attribute words a claim keeps (modifiers of a concept); multi-word first.
_ATTRIBUTES: tuple[str, ...] = (
    "high-density", "mid-density", "low-density", "medium-density", "densely packed", "sparsely built",
    "dense", "sparse", "compact", "scattered", "crowded", "busy",
    "low-rise", "mid-rise", "high-rise", "multi-storey", "single-storey", "tall", "short",
    "large", "small", "big", "huge", "narrow", "wide", "long", "multi-lane", "main", "major", "minor", "winding", "straight",
    "arterial", "local", "secondary", "primary", "residential", "detached", "terraced", "semi-detached",
    "dark grey", "light grey", "grey", "gray", "red", "white", "blue", "green", "brown", "beige", "black", "terracotta",
    "orange", "yellow", "tan", "dark",
    "concrete", "metal", "membrane", "gravel", "tiled", "asphalt", "slate", "glass", "brick", "shingle",
    "fallow", "maize", "wheat", "young wheat", "ploughed", "plowed", "vegetables", "rapeseed", "barley", "irrigated",
    "oval", "flat", "pitched", "paved", "unpaved", "empty", "full", "open", "green", "leafy", "mature",
)

NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17,
    "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "dozen": 12, "a dozen": 12,
    "dozens": 24, "hundred": 100, "hundreds": 200,
}


@dataclass(frozen=True)
class Concept:
    name: str
    kind: str  # "land_use" or "object"
    label: str  # how short captions name it
    terms: tuple[str, ...]


@dataclass
class Lexicon:
    concepts: dict[str, Concept] = field(default_factory=dict)
    visibility: dict[str, float] = field(default_factory=dict)
    attributes: tuple[str, ...] = ()
    source: str = "builtin"

    def __post_init__(self) -> None:
        self._build()

    def _build(self) -> None:
        terms: dict[str, str] = {}
        for concept in self.concepts.values():
            for term in concept.terms:
                terms[_norm(term)] = concept.name
        self.term_to_concept = terms
        # longest first, so "commercial buildings" wins over "buildings"
        ordered = sorted(terms, key=lambda t: (-len(t), t))
        self.term_pattern = re.compile(r"(?<![\w-])(" + "|".join(re.escape(t) for t in ordered) + r")(?![\w-])")
        attrs = sorted({_norm(a) for a in self.attributes}, key=lambda t: (-len(t), t))
        self.attribute_pattern = re.compile(r"(?<![\w-])(" + "|".join(re.escape(a) for a in attrs) + r")(?![\w-])")

    def max_gsd(self, concept: str, counted: bool) -> float | None:
        """The coarsest GSD at which a claim about ``concept`` is visible, or None (always)."""
        limits = [v for k, v in ((concept, self.visibility.get(concept)), (f"{concept}+count", self.visibility.get(f"{concept}+count") if counted else None)) if v is not None]
        return min(limits) if limits else None

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "concepts": len(self.concepts), "terms": len(self.term_to_concept), "visibility": dict(sorted(self.visibility.items()))}


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def builtin() -> Lexicon:
    concepts = {name: Concept(name, kind, label, terms) for name, (kind, label, terms) in _CONCEPTS.items()}
    return Lexicon(concepts, dict(_VISIBILITY), _ATTRIBUTES, "builtin")


def load_lexicon(path: Path | str | None = None) -> Lexicon:
    """The built-in lexicon, extended (and overridden term by term) by a TOML or JSON file."""
    lex = builtin()
    if path is None:
        return lex
    path = Path(path)
    data = _read_file(path)
    unknown = sorted(set(data) - {"concepts", "visibility", "attributes"})
    if unknown:
        raise InputError(f"lexicon {path}: unknown table(s) {', '.join(unknown)}", hint="a lexicon has [concepts.NAME], [visibility] and [attributes] tables")
    concepts = dict(lex.concepts)
    for name, spec in (data.get("concepts") or {}).items():
        if not isinstance(spec, Mapping):
            raise InputError(f"lexicon {path}: concepts.{name} must be a table", hint='e.g. [concepts.boat] terms = ["boat", "ship"]')
        bad = sorted(set(spec) - {"terms", "kind", "label"})
        if bad:
            raise InputError(f"lexicon {path}: concepts.{name} has unknown key(s) {', '.join(bad)}", hint="keys are terms, kind and label")
        terms = spec.get("terms", [])
        if not isinstance(terms, list) or not all(isinstance(t, str) and t.strip() for t in terms):
            raise InputError(f"lexicon {path}: concepts.{name}.terms must be a list of words", hint='e.g. terms = ["boat", "ship"]')
        old = concepts.get(name)
        kind = spec.get("kind", old.kind if old else "object")
        if kind not in ("object", "land_use"):
            raise InputError(f"lexicon {path}: concepts.{name}.kind {kind!r} is not object or land_use")
        all_terms = tuple(dict.fromkeys((*(old.terms if old else ()), name.replace("_", " "), *terms)))
        # a term the user gives to this concept leaves every other concept
        moved = {_norm(t) for t in terms}
        for other, c in list(concepts.items()):
            if other != name and moved & {_norm(t) for t in c.terms}:
                concepts[other] = Concept(other, c.kind, c.label, tuple(t for t in c.terms if _norm(t) not in moved))
        concepts[name] = Concept(name, kind, str(spec.get("label", old.label if old else all_terms[0])), all_terms)
    visibility = dict(lex.visibility)
    for name, value in (data.get("visibility") or {}).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise InputError(f"lexicon {path}: visibility.{name} = {value!r} is not a GSD in metres per pixel (0 = never visible)")
        if name.removesuffix("+count") not in concepts:
            raise InputError(f"lexicon {path}: visibility.{name} names no concept", hint="add it under [concepts.NAME] first")
        visibility[name] = float(value)
    attrs = data.get("attributes") or {}
    words = attrs.get("words", []) if isinstance(attrs, Mapping) else attrs
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise InputError(f"lexicon {path}: attributes.words must be a list of words")
    return Lexicon(concepts, visibility, tuple(dict.fromkeys((*lex.attributes, *words))), str(path))


def _read_file(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read lexicon {path}: {exc}", hint="pass a TOML or JSON file to --lexicon") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(raw)
        else:
            import tomllib

            data = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"lexicon {path} is not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'}: {exc}", hint="check its syntax") from None
    if not isinstance(data, dict):
        raise InputError(f"lexicon {path} must hold a table/object at the top level")
    return data
