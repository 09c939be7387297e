"""The urban lexicon: concepts with their synonyms, attribute words, and visibility limits.

A concept is a canonical name (``residential``, ``river``, ``car``) with the
surface terms that mean it (``housing``, ``homes``, ``suburb``…). Longer terms
win over shorter ones (``commercial buildings`` is ``commercial``, not
``building``). ``visibility`` gives, per concept, the coarsest ground sample
distance (metres per pixel) at which the object can still be seen; ``0``
means never from a satellite or aircraft (people, traffic lights, road signs).
For objects it does not list, ``SIZES_M`` gives a typical size and the limit
is that size over ``PIXELS_TO_SEE`` pixels (a 24 m tennis court: 8 m/px).

The built-in concepts cover the land-use classes of the public scene
benchmarks (UC Merced's 21, AID's 30, NWPU-RESISC45's 45: beach, baseball
diamond, storage tank, mobile home park, chaparral, runway, …) and the words
real captions use for them (freeway/highway, cropland/farmland,
harbour/port/marina, overpass/viaduct); ``bench/lexicon_coverage.py`` measures
the share of real captions' noun phrases it recognises.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from urbanln_cli.errors import InputError

# concept -> (kind, label, terms). kind: land_use (what a tile is) or object (what is in it).
# The land-use classes of the public scene benchmarks (UC Merced's 21, AID's 30, NWPU-RESISC45's 45) each
# have a concept or a term; tests/test_lexicon.py lists them. Terms are whole words, longest match first, so
# "mobile home park" is mobile_home_park and "power plants" power_station while "plants" alone is vegetation.
# Hand-packed data tables (many terms a line): the formatter leaves them as written.
# fmt: off
_CONCEPTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # land use
    "residential": ("land_use", "residential area", (
        "residential", "residential area", "residential district", "residential neighbourhood", "residential "
            "neighborhood",
        "residential zone", "housing", "housing estate", "homes", "houses", "house", "dwellings", "suburb", "suburbs",
        "suburban area", "apartment blocks", "apartment buildings", "residential blocks", "residential buildings",
        "residential community", "residential complex", "residential complexes", "apartment complex",
            "apartment complexes",
        "housing complex", "housing complexes", "housing area", "housing development", "apartments", "residences",
        "villa", "villas", "residential areas")),
    "commercial": ("land_use", "commercial area", (
        "commercial", "commercial area", "commercial buildings", "commercial district", "shops", "shopping centre",
        "shopping center", "mall", "retail", "offices", "office buildings", "business district",
        "commercial areas", "commercial zone", "commercial centre", "commercial center", "commercial complex",
        "shopping mall", "shopping malls", "malls", "shopping centres", "shopping centers", "store", "stores",
        "supermarket", "supermarkets", "market", "marketplace", "hotel", "hotels", "business park", "office park",
        "office complex", "retail park", "commercial space", "commercial spaces", "retail spaces", "businesses",
            "gas station", "gas stations", "petrol station", "petrol stations")),
    "industrial": ("land_use", "industrial area", (
        "industrial", "industrial area", "industrial zone", "industrial estate", "industrial buildings",
            "industrial park",
        "factory", "factories", "warehouse", "warehouses", "plant", "depot", "logistics centre",
        "industrial areas", "industrial zones", "industrial district", "industrial complex", "industrial complexes",
        "industrial facility", "industrial facilities", "industrial plants", "chemical plant", "chemical plants",
        "treatment plant", "workshop", "workshops", "factory buildings", "depots", "logistics center", "logistics park",
        "loading dock", "loading docks", "loading bay", "loading bays")),
    "downtown": ("land_use", "city centre", (
        "city centre", "city center", "downtown", "central business district", "town centre", "town center",
            "urban core",
        "financial district", "city core")),
    "village": ("land_use", "village", ("village", "hamlet", "rural settlement", "villages", "hamlets")),
    "farmland": ("land_use", "farmland", (
        "farmland", "cropland", "fields", "field", "farm", "farms", "agricultural land", "agricultural fields", "crops",
        "crop fields", "arable land", "paddies", "orchard", "orchards", "greenhouses", "greenhouse",
        "agricultural", "agricultural area", "agricultural areas", "farmlands", "croplands", "farm land", "farm fields",
        "cultivated land", "cultivated fields", "paddy", "paddy fields", "rice paddies", "rice fields", "terrace",
            "terraces",
        "terraced fields", "rice terraces", "center pivot", "center-pivot", "centre pivot", "pivot irrigation",
        "vineyard", "vineyards", "plantation", "plantations")),
    "park": ("land_use", "park", (
        "park", "parks", "parkland", "green space", "green spaces", "green area", "public garden", "gardens",
        "green areas", "city park", "public park", "urban park", "garden", "botanical garden", "recreational area",
        "recreational areas", "recreation area")),
    "open_land": ("land_use", "open land", (
        "open land", "open field", "open fields", "grassy field", "grassy fields", "grass field", "dirt field",
            "sparsely built land", "vacant land", "empty land", "bare land", "barren land", "wasteland", "open space",
        "open spaces", "bare soil", "bare ground", "open ground", "dirt", "dirt area", "dirt lot", "vacant lot",
        "vacant lots", "empty lot", "undeveloped land")),
    "forest": ("land_use", "forest", ("forest", "woodland", "woods", "wooded area", "forests", "woodlands",
        "forested area")),
    "airport": ("land_use", "airport", ("airport", "airfield", "tarmac", "apron", "airports", "airfields",
                                        "airport terminal", "terminal building", "hangar", "hangars", "control tower")),
    "water_body": ("land_use", "open water", (
        "open water", "water body", "body of water", "waterfront", "water bodies", "water", "waters", "sea", "seas",
        "ocean", "seawater", "sea water", "open sea", "bay", "gulf", "coastal waters", "waves", "foam", "foams")),
    "beach": ("land_use", "beach", (
        "beach", "beaches", "sandy beach", "shore", "shores", "shoreline", "seashore", "coast", "coastline",
            "coastal area",
        "seaside")),
    "desert": ("land_use", "desert", ("desert", "deserts", "desert area", "dune", "dunes", "sand dunes", "arid land")),
    "grassland": ("land_use", "grassland", (
        "grassland", "grasslands", "grass", "meadow", "meadows", "lawn", "lawns", "turf", "turfs", "pasture",
            "pastures",
        "prairie", "grassy area", "weeds")),
    "shrubland": ("land_use", "shrubland", ("chaparral", "shrubland", "shrublands", "scrubland", "scrub", "brushland",
        "bushland")),
    "wetland": ("land_use", "wetland", (
        "wetland", "wetlands", "marsh", "marshes", "marshland", "swamp", "swamps", "bog", "mudflat", "mudflats",
        "tidal flat", "tidal flats", "reed beds")),
    "mountain": ("land_use", "mountains", (
        "mountain", "mountains", "mountainous area", "mountainous region", "mountain range", "mountainous terrain",
            "hill", "hills", "hillside",
        "hillsides", "hilly area", "hilly terrain", "valley", "valleys", "ridge", "ridges", "slope", "slopes", "peak",
        "peaks", "cliff", "cliffs")),
    "island": ("land_use", "island", ("island", "islands", "islet", "islets")),
    "snow_ice": ("land_use", "snow and ice", (
        "snow", "snowfield", "snowfields", "sea ice", "ice", "ice floes", "iceberg", "icebergs", "snowberg",
            "snowbergs",
        "glacier", "glaciers")),
    "golf_course": ("land_use", "golf course", (
        "golf course", "golf courses", "golf club", "golf links", "fairway", "fairways", "putting green",
            "putting greens",
        "bunker", "bunkers", "sand trap", "sand traps")),
    "harbor": ("land_use", "harbour", (
        "harbor", "harbors", "harbour", "harbours", "port", "ports", "seaport", "marina", "marinas", "dock", "docks",
        "pier", "piers", "wharf", "wharves", "quay", "quays", "jetty", "jetties", "container terminal",
            "container port")),
    "mobile_home_park": ("land_use", "mobile home park", (
        "mobile home park", "mobile home parks", "mobile homes", "mobile home", "trailer park", "trailer parks",
        "caravan park", "caravan parks")),
    "school": ("land_use", "school", (
        "school", "schools", "campus", "campuses", "university", "universities", "college", "colleges", "schoolyard",
        "school building", "school buildings")),
    "resort": ("land_use", "resort", ("resort", "resorts", "holiday resort", "vacation resort", "holiday village")),
    "railway_station": ("land_use", "railway station", (
        "railway station", "railway stations", "train station", "train stations", "railroad station", "rail station")),
    "power_station": ("land_use", "power station", (
        "power station", "power stations", "power plant", "power plants", "thermal power station",
            "thermal power plant",
        "coal power plant", "coal-fired power plant", "cooling tower", "cooling towers")),
    "construction_site": ("land_use", "construction site", (
        "construction site", "construction sites", "construction area", "construction areas", "building site",
        "building sites", "construction zone")),
    "quarry": ("land_use", "quarry", ("quarry", "quarries", "mine", "mines", "open-pit mine", "open pit mine",
        "mining area", "mining site")),
    "palace": ("land_use", "palace", ("palace", "palaces", "imperial palace", "royal palace", "castle", "castles")),
    # infrastructure and objects
    "building": ("object", "buildings", (
        "building", "buildings", "structures", "structure", "block", "blocks", "tower", "towers", "skyscraper",
            "skyscrapers",
        "barn", "barns", "farmhouse", "farmhouses", "shed", "sheds")),
    "road": ("object", "roads", (
        "road", "roads", "street", "streets", "street network", "road network", "avenue", "boulevard",
        "intersection", "intersections", "junction", "crossroads", "roundabout",
        "avenues", "boulevards", "junctions", "t-junction", "roundabouts", "traffic circle", "roadside", "roadsides",
        "lane", "lanes", "traffic lanes", "dirt road", "dirt roads", "dirt track", "alley", "alleys", "alleyway",
        "driveway", "driveways", "cul-de-sac", "cul-de-sacs")),
    "highway": ("object", "a highway", (
        "highway", "highways", "freeway", "expressway", "motorway", "interstate",
        "freeways", "expressways", "motorways", "interchange", "interchanges", "highway interchange", "cloverleaf")),
    "railway": ("object", "railway tracks", (
        "railway", "railway line", "railway tracks", "rail line", "rail tracks", "railroad", "train tracks", "tracks",
            "rail",
        "railways", "railroads", "railway lines", "rail lines", "train track", "railway track", "railroad track",
        "railroad tracks", "rail track", "rail yard", "railway yard", "train yard")),
    "river": ("object", "a river", (
        "river", "stream", "creek", "brook", "rivers", "streams", "creeks", "riverbank", "riverbanks", "river bank",
        "river banks", "riverside", "banks")),
    "lake": ("object", "a lake", ("lake", "pond", "reservoir", "lakes", "ponds", "reservoirs", "lagoon")),
    "canal": ("object", "a canal", ("canal", "waterway", "canals", "waterways", "ditch", "ditches")),
    "tree": ("object", "trees", (
        "tree", "trees", "tree cover", "vegetation", "greenery", "shrubs", "plants", "shrub", "bush", "bushes", "hedge",
        "hedges", "grove", "groves", "tree line", "treeline")),
    "parking": ("object", "a parking lot", (
        "parking lot", "parking lots", "car park", "car parks", "parking area", "parking",
        "parking areas", "parking spots", "parking spot", "parking spaces", "parking space", "parking positions",
        "parking garage", "parking garages", "parking structure", "parking deck")),
    "sports_field": ("object", "a sports field", (
        "sports field", "sports fields", "football pitch", "soccer field", "playing field", "athletic track",
        "football pitches", "football field", "football fields", "soccer fields", "playing fields", "athletic field",
        "athletic fields", "running track", "running tracks", "ground track field", "track and field", "track field",
        "playground", "playgrounds", "sports ground", "sports grounds", "sports complex")),
    "tennis_court": ("object", "a tennis court", ("tennis court", "tennis courts")),
    "basketball_court": ("object", "a basketball court", ("basketball court", "basketball courts")),
    "baseball_diamond": ("object", "a baseball diamond", (
        "baseball diamond", "baseball diamonds", "baseball field", "baseball fields", "ballfield", "ballfields",
        "softball field", "softball fields")),
    "stadium": ("object", "a stadium", ("stadium", "arena", "stadiums", "arenas")),
    "swimming_pool": ("object", "a swimming pool", ("swimming pool", "swimming pools", "pool", "pools")),
    "storage_tank": ("object", "storage tanks", (
        "storage tank", "storage tanks", "oil tank", "oil tanks", "fuel tank", "fuel tanks", "oil storage tanks",
        "tank", "tanks", "water tank", "water tanks", "gas tank", "gas tanks")),
    "runway": ("object", "a runway", ("runway", "runways", "airstrip", "airstrips", "landing strip", "taxiway",
        "taxiways")),
    "church": ("object", "a church", ("church", "churches", "cathedral", "chapel", "temple", "temples", "mosque",
        "mosques")),
    "roof": ("object", "roofs", ("roof", "roofs", "roofing", "rooftops", "rooftop", "roof terrace", "roof terraces",
        "rooftop terrace")),
    "bridge": ("object", "a bridge", (
        "bridge", "bridges", "overpass", "overpasses", "viaduct", "viaducts", "flyover", "flyovers", "footbridge",
        "footbridges", "pedestrian bridge")),
    "plaza": ("object", "a plaza", ("plaza", "square", "courtyard", "plazas", "squares", "courtyards",
        "public square")),
    "car": ("object", "cars", (
        "car", "cars", "vehicle", "vehicles", "truck", "trucks", "bus", "buses", "traffic",
        "lorry", "lorries", "van", "vans", "taxi", "taxis")),
    "bicycle": ("object", "bicycles", ("bicycle", "bicycles", "bike", "bikes")),
    "bike_lane": ("object", "a bike lane", ("bike lane", "bike lanes", "cycle lane", "cycle path", "bike path",
        "bike paths", "cycle lanes", "cycle paths")),
    "road_marking": ("object", "road markings", (
        "road markings", "lane markings", "zebra crossing", "crosswalk", "crosswalks", "pedestrian crossing",
        "markings", "mark lines", "marking lines", "lane lines", "white lines")),
    "person": ("object", "people", (
        "people", "person", "pedestrians", "pedestrian", "crowd", "crowds", "walkers", "residents",
        "visitors", "tourists", "travelers", "travellers", "commuters", "shoppers", "spectators", "passengers",
            "drivers",
        "children", "families", "joggers", "golfers", "locals")),
    "cyclist": ("object", "cyclists", ("cyclist", "cyclists")),
    "traffic_light": ("object", "traffic lights", ("traffic light", "traffic lights", "traffic signals",
        "traffic signal")),
    "road_sign": ("object", "road signs", ("road sign", "road signs", "street sign", "street signs", "signage",
        "signs")),
    "street_light": ("object", "street lights", ("street light", "street lights", "streetlights", "lamp posts",
        "lampposts")),
    "sidewalk": ("object", "sidewalks", (
        "sidewalk", "sidewalks", "pavement", "pavements", "footpath", "footpaths",
        "path", "paths", "walkway", "walkways", "trail", "trails", "footway")),
    "bench": ("object", "benches", ("bench", "benches", "park bench", "park benches")),
    "fence": ("object", "a fence", ("fence", "fences", "fencing")),
    "airplane": ("object", "airplanes", (
        "airplane", "airplanes", "aircraft", "aeroplane", "aeroplanes", "plane", "planes", "jet", "jets", "airliner",
            "airliners")),
    "train": ("object", "a train", ("train", "trains", "locomotive", "freight train")),
    "boat": ("object", "boats", (
        "boat", "boats", "ship", "ships", "vessel", "vessels", "yacht", "yachts", "sailboat", "sailboats", "ferry",
            "ferries",
        "barge", "barges", "cargo ship", "cargo ships", "container ship", "container ships")),
    "solar_panel": ("object", "solar panels", (
        "solar panel", "solar panels", "solar farm", "solar farms", "solar array", "solar arrays",
            "photovoltaic panels",
        "solar power station", "solar power plant")),
    "sand": ("object", "sand", ("sand", "sands", "sandy area", "sandbank", "sandbanks", "sandbar", "sandbars")),
    "cloud": ("object", "clouds", ("cloud", "clouds", "cloud cover")),
}

# coarsest GSD (m/px) at which a concept can be seen; 0 = never; missing = always.
# "<concept>+count" applies to counted instances only ("roughly 20 trees": individual trees).
_VISIBILITY: dict[str, float] = {
    "person": 0.0, "cyclist": 0.0, "traffic_light": 0.0, "road_sign": 0.0, "street_light": 0.0,
    "bicycle": 0.6, "road_marking": 0.6, "bike_lane": 0.6,
    "car": 1.5, "sidewalk": 1.5, "tree+count": 1.5,
    "boat": 5.0, "solar_panel": 5.0, "building+count": 5.0, "train": 5.0, "airplane": 10.0,
}

# Typical size in metres of one object (its length, or a tank's diameter), for objects the limits above do not
# cover. An object is seen when it spans PIXELS_TO_SEE pixels, so its limit is size / PIXELS_TO_SEE m/px (the
# limits above follow the same rule: a 4.5 m car at 1.5 m/px, a 30-40 m airliner at 10 m/px).
PIXELS_TO_SEE = 3.0
SIZES_M: dict[str, float] = {
    "storage_tank": 15.0,  # 10-30 m across (oil depots); smaller ones are water or gas tanks
    "tennis_court": 24.0,  # 23.8 x 11 m playing area
    "basketball_court": 28.0,  # 28 x 15 m
    "baseball_diamond": 60.0,  # 27 m base paths; the infield skin and its grass edge about 60 m across
    "swimming_pool": 10.0,  # garden pools 8-12 m, public ones 25-50 m
    "runway": 45.0,  # 30-60 m wide, kilometres long
    "church": 30.0,
    "bench": 2.0,
    "fence": 1.5,  # thin; seen by its line and shadow only at fine resolution
}
_VISIBILITY.update({name: round(size / PIXELS_TO_SEE, 1) for name, size in SIZES_M.items() if name not in _VISIBILITY})

# attribute words a claim keeps (modifiers of a concept); multi-word first.
_ATTRIBUTES: tuple[str, ...] = (
    "high-density", "mid-density", "low-density", "medium-density", "densely packed", "sparsely built",
    "dense", "sparse", "compact", "scattered", "crowded", "busy",
    "low-rise", "mid-rise", "high-rise", "multi-storey", "single-storey", "tall", "short",
    "large", "small", "big", "huge", "narrow", "wide", "long", "multi-lane", "main", "major", "minor", "winding",
        "straight",
    "arterial", "local", "secondary", "primary", "residential", "detached", "terraced", "semi-detached",
    "dark grey", "light grey", "grey", "gray", "red", "white", "blue", "green", "brown", "beige", "black", "terracotta",
    "orange", "yellow", "tan", "dark",
    "concrete", "metal", "membrane", "gravel", "tiled", "asphalt", "slate", "glass", "brick", "shingle",
    "fallow", "maize", "wheat", "young wheat", "ploughed", "plowed", "vegetables", "rapeseed", "barley", "irrigated",
    "oval", "flat", "pitched", "paved", "unpaved", "empty", "full", "open", "green", "leafy", "mature",
    "medium", "circular", "rectangular", "round", "curved", "sandy", "grassy", "rocky", "lush", "elevated",
)

NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17,
    "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "dozen": 12, "a dozen": 12,
    "dozens": 24, "hundred": 100, "hundreds": 200,
}
# fmt: on


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
        limits = [
            v
            for k, v in (
                (concept, self.visibility.get(concept)),
                (f"{concept}+count", self.visibility.get(f"{concept}+count") if counted else None),
            )
            if v is not None
        ]
        return min(limits) if limits else None

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "concepts": len(self.concepts),
            "terms": len(self.term_to_concept),
            "visibility": dict(sorted(self.visibility.items())),
        }


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
        raise InputError(
            f"lexicon {path}: unknown table(s) {', '.join(unknown)}",
            hint="a lexicon has [concepts.NAME], [visibility] and [attributes] tables",
        )
    concepts = dict(lex.concepts)
    for name, spec in (data.get("concepts") or {}).items():
        if not isinstance(spec, Mapping):
            raise InputError(
                f"lexicon {path}: concepts.{name} must be a table", hint='e.g. [concepts.boat] terms = ["boat", "ship"]'
            )
        bad = sorted(set(spec) - {"terms", "kind", "label"})
        if bad:
            raise InputError(
                f"lexicon {path}: concepts.{name} has unknown key(s) {', '.join(bad)}",
                hint="keys are terms, kind and label",
            )
        terms = spec.get("terms", [])
        if not isinstance(terms, list) or not all(isinstance(t, str) and t.strip() for t in terms):
            raise InputError(
                f"lexicon {path}: concepts.{name}.terms must be a list of words", hint='e.g. terms = ["boat", "ship"]'
            )
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
            raise InputError(
                f"lexicon {path}: visibility.{name} = {value!r} is not a GSD in metres per pixel (0 = never visible)"
            )
        if name.removesuffix("+count") not in concepts:
            raise InputError(
                f"lexicon {path}: visibility.{name} names no concept", hint="add it under [concepts.NAME] first"
            )
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
        raise InputError(
            f"lexicon {path} is not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'}: {exc}",
            hint="check its syntax",
        ) from None
    if not isinstance(data, dict):
        raise InputError(f"lexicon {path} must hold a table/object at the top level")
    return data
