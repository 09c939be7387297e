"""The phrase tables of the caption grammar (land uses, nouns, absences, hallucinations, boilerplate) and
small word helpers (numbers, articles, lists)."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

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
