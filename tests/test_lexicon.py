"""The lexicon: remote-sensing scene vocabulary, paraphrases, sizes and visibility, backward compatibility."""

from __future__ import annotations

import dataclasses

import pytest

from urbanln_cli.text.lexicon import PIXELS_TO_SEE, SIZES_M, Concept, Lexicon, builtin, load_lexicon

LEX = builtin()

# the land-use classes of the public scene benchmarks, as a caption names them -> the concept it means
UC_MERCED = {  # Yang & Newsam 2010: 21 classes
    "agricultural land": "farmland",
    "airplane": "airplane",
    "baseball diamond": "baseball_diamond",
    "beach": "beach",
    "buildings": "building",
    "chaparral": "shrubland",
    "dense residential area": "residential",
    "forest": "forest",
    "freeway": "highway",
    "golf course": "golf_course",
    "harbor": "harbor",
    "intersection": "road",
    "medium residential area": "residential",
    "mobile home park": "mobile_home_park",
    "overpass": "bridge",
    "parking lot": "parking",
    "river": "river",
    "runway": "runway",
    "sparse residential area": "residential",
    "storage tanks": "storage_tank",
    "tennis court": "tennis_court",
}
AID = {  # Xia et al. 2017: 30 classes ("center" is named by what it is: a commercial or city centre)
    "airport": "airport",
    "bare land": "open_land",
    "baseball field": "baseball_diamond",
    "beach": "beach",
    "bridge": "bridge",
    "commercial center": "commercial",
    "church": "church",
    "commercial area": "commercial",
    "dense residential": "residential",
    "desert": "desert",
    "farmland": "farmland",
    "forest": "forest",
    "industrial area": "industrial",
    "meadow": "grassland",
    "medium residential": "residential",
    "mountain": "mountain",
    "park": "park",
    "parking": "parking",
    "playground": "sports_field",
    "pond": "lake",
    "port": "harbor",
    "railway station": "railway_station",
    "resort": "resort",
    "river": "river",
    "school": "school",
    "sparse residential": "residential",
    "square": "plaza",
    "stadium": "stadium",
    "storage tanks": "storage_tank",
    "viaduct": "bridge",
}
NWPU_RESISC45 = {  # Cheng et al. 2017: 45 classes
    "airplane": "airplane",
    "airport": "airport",
    "baseball diamond": "baseball_diamond",
    "basketball court": "basketball_court",
    "beach": "beach",
    "bridge": "bridge",
    "chaparral": "shrubland",
    "church": "church",
    "circular farmland": "farmland",
    "cloud": "cloud",
    "commercial area": "commercial",
    "dense residential": "residential",
    "desert": "desert",
    "forest": "forest",
    "freeway": "highway",
    "golf course": "golf_course",
    "ground track field": "sports_field",
    "harbor": "harbor",
    "industrial area": "industrial",
    "intersection": "road",
    "island": "island",
    "lake": "lake",
    "meadow": "grassland",
    "medium residential": "residential",
    "mobile home park": "mobile_home_park",
    "mountain": "mountain",
    "overpass": "bridge",
    "palace": "palace",
    "parking lot": "parking",
    "railway": "railway",
    "railway station": "railway_station",
    "rectangular farmland": "farmland",
    "river": "river",
    "roundabout": "road",
    "runway": "runway",
    "sea ice": "snow_ice",
    "ship": "boat",
    "snowberg": "snow_ice",
    "sparse residential": "residential",
    "stadium": "stadium",
    "storage tank": "storage_tank",
    "tennis court": "tennis_court",
    "terrace": "farmland",
    "thermal power station": "power_station",
    "wetland": "wetland",
}

# surface forms that must mean one concept
PARAPHRASES = [
    ("highway", ["freeway", "freeways", "highway", "expressway", "motorway", "motorways", "interchange"]),
    (
        "farmland",
        ["farmland", "cropland", "croplands", "agricultural land", "fields", "paddy fields", "terraced fields"],
    ),
    ("harbor", ["harbor", "harbour", "port", "marina", "docks", "pier", "wharf"]),
    ("bridge", ["bridge", "overpass", "overpasses", "viaduct", "flyover", "footbridge"]),
    ("grassland", ["meadow", "grassland", "grass", "lawn", "lawns", "turfs", "pasture"]),
    ("shrubland", ["chaparral", "shrubland", "scrubland"]),
    ("storage_tank", ["storage tank", "storage tanks", "oil tanks", "tanks"]),
    ("baseball_diamond", ["baseball diamond", "baseball field", "ballfield"]),
    ("sports_field", ["ground track field", "running track", "athletic track", "soccer field", "playground"]),
    ("railway_station", ["railway station", "train station", "railroad station"]),
    ("power_station", ["power station", "power plant", "power plants", "cooling towers"]),
    ("snow_ice", ["sea ice", "iceberg", "snowberg", "glacier", "snow"]),
    ("beach", ["beach", "shoreline", "coast", "seashore"]),
    ("water_body", ["sea", "ocean", "water", "waves", "body of water"]),
    ("mobile_home_park", ["mobile home park", "mobile homes", "trailer park"]),
    ("mountain", ["mountain", "hills", "hillside", "valley"]),
    ("residential", ["residential area", "houses", "villas", "apartment complexes"]),
    ("boat", ["ship", "ships", "boats", "yacht"]),
    ("runway", ["runway", "runways", "airstrip", "taxiway"]),
    ("tree", ["trees", "plants", "bushes", "vegetation"]),
    ("parking", ["parking lot", "car park", "parking spaces", "parking spots"]),
]


def concept_of(phrase: str, lexicon: Lexicon = LEX) -> str | None:
    """The concept of the phrase's longest term (as ``claims`` finds it), the last one if several."""
    found = [lexicon.term_to_concept[m.group(1)] for m in lexicon.term_pattern.finditer(phrase.lower())]
    return found[-1] if found else None


@pytest.mark.parametrize("benchmark", [UC_MERCED, AID, NWPU_RESISC45], ids=["ucmerced-21", "aid-30", "nwpu-resisc45"])
def test_every_scene_benchmark_class_is_recognised(benchmark):
    assert len(benchmark) in (21, 30, 45)
    wrong = {
        name: concept_of(f"There is a {name} here.")
        for name, want in benchmark.items()
        if concept_of(f"There is a {name} here.") != want
    }
    assert not wrong


@pytest.mark.parametrize("concept,terms", PARAPHRASES, ids=[c for c, _ in PARAPHRASES])
def test_paraphrases_are_one_concept(concept, terms):
    assert {t: concept_of(t) for t in terms} == {t: concept for t in terms}


def test_the_longest_term_wins():
    assert concept_of("a mobile home park") == "mobile_home_park"  # not park
    assert concept_of("two power plants") == "power_station"  # not vegetation
    assert concept_of("green plants") == "tree" and concept_of("a chemical plant") == "industrial"
    assert concept_of("a car park") == "parking" and concept_of("a business park") == "commercial"
    assert concept_of("a train track") == "railway"  # not the train
    assert concept_of("a water tank") == "storage_tank"  # not open water
    assert concept_of("a baseball field") == "baseball_diamond" and concept_of("a field") == "farmland"
    assert concept_of("a running track") == "sports_field" and concept_of("tracks") == "railway"
    assert concept_of("a dirt road") == "road" and concept_of("dirt") == "open_land"
    assert concept_of("a roof terrace") == "roof" and concept_of("rice terraces") == "farmland"
    assert concept_of("loading docks") == "industrial" and concept_of("docks") == "harbor"
    assert concept_of("the airport") == "airport"  # 'port' is a whole word only


def test_real_captions_name_their_class():
    # UC Merced captions (public domain; UCM-Captions, Qu et al. 2016), one per class the old lexicon missed
    captions = {
        "Three storage tanks are in the lawn .": "storage_tank",
        "It is a straight runway with some white mark lines on it .": "runway",
        "This is a beach with blue sea and white sands .": "beach",
        "This is an old baseball diamond .": "baseball_diamond",
        "There are two straight freeways closed to each other .": "highway",
        "Lots of boats docked at the harbor .": "boat",
        "Many mobile homes arranged in lines in the mobile home park .": "mobile_home_park",
        "This is a part of a golf course with turfs and some trees .": "golf_course",
        "There is a tennis court surrounded by lots of plants .": "tennis_court",
        "This is a chaparral .": "shrubland",
    }
    for text, concept in captions.items():
        first = LEX.term_pattern.search(text.lower())
        assert first and LEX.term_to_concept[first.group(1)] == concept, text
    assert concept_of("Lots of boats docked at the harbor .") == "harbor"


def test_no_term_has_two_concepts_and_terms_are_normalised():
    seen: dict[str, str] = {}
    for concept in LEX.concepts.values():
        assert concept.kind in ("land_use", "object") and concept.label and concept.terms
        assert len(set(concept.terms)) == len(concept.terms), concept.name
        for term in concept.terms:
            assert term == " ".join(term.lower().split()), term
            assert seen.setdefault(term, concept.name) == concept.name, f"{term!r} in {seen[term]} and {concept.name}"


def test_sizes_give_plausible_visibility_limits():
    # an object is seen when it spans PIXELS_TO_SEE pixels: limit = size / PIXELS_TO_SEE m/px
    assert PIXELS_TO_SEE == 3.0
    assert (
        10 <= SIZES_M["storage_tank"] <= 30
        and 22 <= SIZES_M["tennis_court"] <= 26
        and 26 <= SIZES_M["basketball_court"] <= 30
    )
    for name, size in SIZES_M.items():
        assert name in LEX.concepts and LEX.concepts[name].kind == "object"
        assert LEX.max_gsd(name, counted=False) == pytest.approx(size / PIXELS_TO_SEE, abs=0.05)
    assert LEX.max_gsd("tennis_court", counted=False) == 8.0
    assert 3.0 <= LEX.max_gsd("storage_tank", counted=False) <= 10.0
    # at UC Merced's 0.3 m/px every benchmark object is visible; at Sentinel-2's 10 m/px a tennis court is not
    assert all(
        LEX.max_gsd(c, counted=False) is None or LEX.max_gsd(c, counted=False) >= 0.3
        for c in {*UC_MERCED.values(), *AID.values(), *NWPU_RESISC45.values()}
    )
    assert LEX.max_gsd("tennis_court", counted=False) < 10 and LEX.max_gsd("baseball_diamond", counted=False) > 10
    # land uses are never too small
    assert all(LEX.max_gsd(c.name, counted=True) is None for c in LEX.concepts.values() if c.kind == "land_use")
    assert all(k.removesuffix("+count") in LEX.concepts for k in LEX.visibility)


def test_earlier_limits_are_kept():
    old = {
        "person": 0.0,
        "cyclist": 0.0,
        "traffic_light": 0.0,
        "road_sign": 0.0,
        "street_light": 0.0,
        "bicycle": 0.6,
        "road_marking": 0.6,
        "bike_lane": 0.6,
        "car": 1.5,
        "sidewalk": 1.5,
        "tree+count": 1.5,
        "boat": 5.0,
        "solar_panel": 5.0,
        "building+count": 5.0,
        "train": 5.0,
        "airplane": 10.0,
    }
    assert {k: LEX.visibility[k] for k in old} == old
    assert LEX.max_gsd("tree", counted=True) == 1.5 and LEX.max_gsd("tree", counted=False) is None


def test_api_is_backward_compatible(tmp_path):
    assert [f.name for f in dataclasses.fields(Concept)] == ["name", "kind", "label", "terms"]
    assert [f.name for f in dataclasses.fields(Lexicon)][:4] == ["concepts", "visibility", "attributes", "source"]
    lex = Lexicon({"kiosk": Concept("kiosk", "object", "kiosks", ("kiosk", "kiosks"))}, {"kiosk": 0.5}, ("colourful",))
    assert lex.term_to_concept == {"kiosk": "kiosk", "kiosks": "kiosk"} and lex.max_gsd("kiosk", counted=True) == 0.5
    assert set(builtin().describe()) == {"source", "concepts", "terms", "visibility"}
    # a user file still moves a term to its own concept and sets limits
    path = tmp_path / "lex.toml"
    path.write_text('[concepts.puddle]\nterms = ["pool", "puddles"]\n[visibility]\npuddle = 0.5\ntennis_court = 4\n')
    user = load_lexicon(path)
    assert concept_of("a pool", user) == "puddle" and concept_of("a swimming pool", user) == "swimming_pool"
    assert "pool" not in user.concepts["swimming_pool"].terms and user.max_gsd("tennis_court", counted=False) == 4.0


def test_the_sim_panels_outside_words_stay_outside():
    # captioners/sim/ writes these on purpose so that fuse meets words outside the lexicon
    for word in ("thoroughfare", "townhouses", "bungalows", "watercourse", "automobiles", "teal", "neighbourhood"):
        assert concept_of(word) is None, word
