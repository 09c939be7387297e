"""The simulated VLM panel (`sim:<persona>`): captions from a scene, with labelled errors."""

import json
import random

import datasets
import pytest

from tests.fakes.rasters import make_geotiff
from urbanln_cli.captioners import TileInfo
from urbanln_cli.captioners.sim import (
    _LAND_USE,
    PERSONAS,
    Scene,
    _has,
    _lacks,
    tile_facts,
    write_caption,
)
from urbanln_cli.stages.caption import CaptionConfig, caption
from urbanln_cli.stages.tile import TileConfig, tile

ORIGIN = (500_000.0, 4_400_000.0)  # top-left corner, EPSG:32650, 1 m pixels, 128 × 64 m


def _box(x0, y0, x1, y1):
    return {"polygon": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], "bbox": [x0, y0, x1, y1]}


def _scene(folder):
    """A tiny hand-made city: the west tile has houses and a road, the east tile a lake and cars."""
    x0, ytop = ORIGIN
    houses = []
    for i in range(6):
        bx, by = x0 + 2 + i * 10, ytop - 20
        box = _box(bx, by, bx + 9, by + 9)
        houses.append(
            {
                "id": i,
                "use": "residential",
                "zone": "suburb",
                "footprint": box["polygon"],
                "bbox": box["bbox"],
                "height_m": 6,
                "storeys": 2,
                "roof_colour": "red",
                "roof_material": "tile",
                "floor_area_m2": 162,
                "population": 3,
                "carbon": 0,
                "gdp": 0,
            }
        )
    scene = {
        "version": 1,
        "seed": 0,
        "style": "test",
        "size": 128,
        "gsd": 1.0,
        "crs": "EPSG:32650",
        "transform": [1.0, 0.0, x0, 0.0, -1.0, ytop],
        "buildings": houses,
        "roads": [
            {
                "id": 0,
                "class": "arterial",
                "lanes": 4,
                "width_m": 14,
                "line": [[x0, ytop - 40], [x0 + 64, ytop - 40]],
                "bbox": [x0, ytop - 40, x0 + 64, ytop - 40],
            }
        ],
        "water": [{"id": 0, "kind": "lake", **_box(x0 + 70, ytop - 60, x0 + 126, ytop - 4)}],
        "vehicles": [{"id": i, "x": x0 + 66 + i, "y": ytop - 2, "kind": "car", "heading_deg": 90} for i in range(3)],
        "parks": [],
        "rail": [],
        "sports_fields": [],
        "trees": [],
        "zones": [],
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scene.json").write_text(json.dumps(scene))
    make_geotiff(folder / "imagery.tif", width=128, height=64, res=1.0, crs="EPSG:32650", origin=ORIGIN)
    return folder


@pytest.fixture
def city_tiles(tmp_path):
    city = _scene(tmp_path / "city")
    return tile(TileConfig(inputs=(city / "imagery.tif",), out=tmp_path / "tiles", size=64)).out, city


def test_facts_follow_the_scene(city_tiles):
    _, city = city_tiles
    scene = Scene(city / "scene.json")
    x0, ytop = ORIGIN
    west = tile_facts(scene, TileInfo("w", "EPSG:32650", (x0, ytop - 64, x0 + 64, ytop), 1.0))
    assert west.land_use == "residential" and west.buildings == 6 and west.roofs == ["red"]
    assert west.roads == {"arterial": 4} and west.water is None and west.cars == 0
    east = tile_facts(scene, TileInfo("e", "EPSG:32650", (x0 + 64, ytop - 64, x0 + 128, ytop), 1.0))
    assert east.land_use == "water" and east.water == "lake" and east.cars == 3 and east.buildings == 0


def _west_facts(city):
    x0, ytop = ORIGIN
    return tile_facts(Scene(city / "scene.json"), TileInfo("w", "EPSG:32650", (x0, ytop - 64, x0 + 64, ytop), 1.0))


def _flawless(**changes):
    base = PERSONAS["precise"].__dict__ | {
        "omission": 0,
        "wrong_count": 0,
        "wrong_land_use": 0,
        "hallucinated_object": 0,
        "false_absence": 0,
    }
    return PERSONAS["precise"].__class__(**(base | changes))


def test_precise_persona_without_errors_says_only_true_things(city_tiles):
    _, city = city_tiles
    facts = _west_facts(city)
    assert facts.vehicles == 0 and facts.building_use == "residential" and facts.buildings_touching == 6
    uses = [phrase for phrase, _ in _LAND_USE["residential"]]
    for seed in range(40):
        text, labels = write_caption(_flawless(absence=1.0), facts, random.Random(seed))
        sentences = labels["sentences"]
        assert all(s["label"] == "true" for s in sentences) and labels["omitted"] == []
        assert all(a["label"] == "true" for s in sentences for a in s["also"])
        by_fact = {s["fact"]: s for s in sentences if s["polarity"] == "present"}
        assert sentences[0]["fact"] == "land_use" and by_fact["land_use"]["value"] == "residential"
        assert any(u in by_fact["land_use"]["text"] for u in uses)
        assert by_fact["building_count"]["value"] == 6 and ("6" in text or "six" in text)
        assert by_fact["roads"]["value"] == {"class": "arterial", "lanes": 4} and ("4" in text or "four" in text)
        # two absences, each of something the tile really lacks, said as a sentence or as a clause
        denied = [s for s in sentences if s["polarity"] == "absent"] + [
            a for s in sentences for a in s["also"] if a["polarity"] == "absent"
        ]
        assert len(denied) == 2 and all(_lacks(d["fact"], facts) and d["absent"] for d in denied)
        assert {c for s in sentences for c in s["absent"]} == {c for d in denied for c in d["absent"]}


def test_the_same_facts_in_varied_words(city_tiles):
    _, city = city_tiles
    facts = _west_facts(city)
    texts = {p: [write_caption(PERSONAS[p], facts, random.Random(seed))[0] for seed in range(60)] for p in PERSONAS}
    assert all(len(set(t)) >= 40 for p, t in texts.items() if p != "generic")
    assert len(set(texts["generic"])) >= 10
    every = " ".join(t for ts in texts.values() for t in ts)
    assert "most of which" in every and ", which " in every  # relative clauses
    assert " with " in every and "roofs" in every  # attribute phrases
    assert any(w in every for w in ("No ", " no ", "without"))  # absence statements
    assert any(
        w in every for w in ("thoroughfare", "townhouses", "dwellings", "neighbourhood", "bungalows")
    )  # words outside the lexicon


def test_false_absences_deny_what_is_there(city_tiles):
    _, city = city_tiles
    facts = _west_facts(city)
    seen = 0
    for seed in range(30):
        _, labels = write_caption(_flawless(false_absence=1.0, absence=0.0), facts, random.Random(seed))
        wrong = [s for s in labels["sentences"] if s["label"] == "false_absence"]
        assert (
            len(wrong) == 1
            and wrong[0]["polarity"] == "absent"
            and _has(wrong[0]["fact"], facts)
            and wrong[0]["absent"]
        )
        seen += 1
    assert seen == 30


def test_sim_panel_through_caption(city_tiles, cli, tmp_path):
    tiles, city = city_tiles
    result = cli("caption", tiles, "--models", "sim:precise,sim:hallucinating", "-o", tmp_path / "cap", "--json")
    assert result.exit_code == 0, result.stderr
    rows = datasets.load_from_disk(str(tmp_path / "cap")).to_list()
    assert len(rows) == 4 and all(r["caption"] and r["host"] == "sim" for r in rows)
    for row in rows:
        labels = json.loads(row["sentence_labels"])
        assert " ".join(s["text"] for s in labels["sentences"]) == row["caption"]
    manifest = json.loads((tmp_path / "cap" / "urbanln.json").read_text())
    assert manifest["models"]["sim:precise"]["digest"].startswith("sha256:")
    # deterministic: the same command again is a finished run; a fresh folder gives the same text
    again = caption(CaptionConfig(tiles=tiles, out=tmp_path / "cap2", models=("sim:precise", "sim:hallucinating")))
    assert again.rows == 4
    assert datasets.load_from_disk(str(tmp_path / "cap2"))["caption"] == [r["caption"] for r in rows]


def test_sim_refuses_real_imagery_and_unknown_personas(tmp_path, cli, city_tiles):
    make_geotiff(tmp_path / "real" / "photo.tif", width=64, height=64)
    real = tile(TileConfig(inputs=(tmp_path / "real" / "photo.tif",), out=tmp_path / "real_tiles", size=64)).out
    _, city = city_tiles
    result = cli("caption", real, "--models", "sim:precise", "--scene", city / "scene.json", "-o", tmp_path / "c")
    assert result.exit_code == 3 and "not part of the synthetic city" in result.stderr
    assert "hint: " in result.stderr and "Ollama" in result.stderr
    result = cli("caption", real, "--models", "sim:precise", "-o", tmp_path / "c")
    assert result.exit_code == 2 and "need the scene" in result.stderr
    result = cli("caption", city_tiles[0], "--models", "sim:precize", "-o", tmp_path / "c")
    assert result.exit_code == 2 and "did you mean 'precise'" in result.stderr


@pytest.fixture(scope="module")
def synth_captions(tmp_path_factory):
    """The four personas over 256 tiles of a small synthetic city."""
    from urbanln_cli.synth import SynthConfig, synth_city

    folder = tmp_path_factory.mktemp("synth")
    synth_city(SynthConfig(out=folder / "city", size=1024, seed=1, workers=1))
    tiles = tile(
        TileConfig(inputs=(folder / "city" / "imagery.tif",), out=folder / "tiles", size=64, min_valid=0, workers=1)
    ).out
    models = tuple(f"sim:{p}" for p in PERSONAS)
    caption(CaptionConfig(tiles=tiles, out=folder / "cap", models=models, concurrency=8))
    return folder, datasets.load_from_disk(str(folder / "cap")).to_list()


def test_true_sentences_agree_with_the_scene(synth_captions):
    from urbanln_cli.text.clean import split_sentences

    folder, rows = synth_captions
    scene = Scene(folder / "city" / "scene.json")
    tiles = {r["tile_id"]: r for r in datasets.load_from_disk(str(folder / "tiles")).remove_columns("image").to_list()}

    checked = absent = 0
    for row in rows:
        t = tiles[row["tile_id"]]
        facts = tile_facts(
            scene, TileInfo(t["tile_id"], t["crs"], (t["minx"], t["miny"], t["maxx"], t["maxy"]), t["gsd"])
        )
        sentences = json.loads(row["sentence_labels"])["sentences"]
        assert [s["text"] for s in sentences] == split_sentences(row["caption"])  # one label per sentence fuse sees
        order = [s["fact"] for s in sentences if s["label"] != "boilerplate"]
        assert order[0] == "land_use"  # overview first
        for s in sentences:
            if s["also"]:  # clauses ride only on true sentences, and are true themselves
                assert s["label"] == "true" and all(a["label"] == "true" for a in s["also"])
            for a in s["also"]:
                if a["polarity"] == "absent":
                    assert _lacks(a["fact"], facts) and set(a["absent"]) <= set(s["absent"])
            if s["label"] == "false_absence":
                assert s["polarity"] == "absent" and _has(s["fact"], facts)
            if s["label"] != "true":
                continue
            if s["polarity"] == "absent":
                assert _lacks(s["fact"], facts) and s["absent"]
                absent += 1
            elif s["fact"] == "land_use":
                assert s["value"] == facts.land_use
            elif s["fact"] == "building_count" and s.get("value") is not None:
                assert s["value"] == facts.buildings
            elif s["fact"] == "tree_count":
                assert s["value"] == facts.trees
            elif s["fact"] == "roads":
                assert facts.roads.get(s["value"]["class"]) == s["value"]["lanes"]
            elif s["fact"] == "water":
                assert facts.water is not None
            elif s["fact"] == "cars":
                assert s["value"] == facts.cars > 0 and facts.gsd <= 1.5
            if s["polarity"] == "present":
                assert not s["absent"] or s["also"]
            checked += 1
    assert checked > 1000 and absent > 50


@pytest.mark.parametrize("name", list(PERSONAS))
def test_measured_error_rates_match_each_persona(synth_captions, name):
    _, rows = synth_captions
    persona = PERSONAS[name]
    labels = [json.loads(r["sentence_labels"]) for r in rows if r["model"] == f"sim:{name}"]
    n = len(labels)
    sentences = [s for lab in labels for s in lab["sentences"]]

    def rate(events, chances):
        return events / max(1, chances)

    def close(measured, expected, chances):
        # four binomial standard errors, and never tighter than 0.03
        return abs(measured - expected) <= max(0.03, 4 * (expected * (1 - expected) / max(1, chances)) ** 0.5)

    land = [s for s in sentences if s["fact"] == "land_use"]
    assert len(land) == n  # every caption states a land use
    assert close(rate(sum(s["label"] == "wrong_land_use" for s in land), len(land)), persona.wrong_land_use, len(land))
    # omission applies to what is there: sentences, and clauses such as "..., most of which have red roofs"
    stated = [a for s in sentences if s["label"] == "true" for a in (s, *s["also"]) if a["polarity"] == "present"]
    omitted = sum(len(lab["omitted"]) for lab in labels)
    omittable = sum(a["fact"] not in ("land_use", "none") for a in stated) + omitted
    assert close(rate(omitted, omittable), persona.omission, omittable)
    false_absence = sum(s["label"] == "false_absence" for s in sentences)
    assert close(rate(false_absence, n), persona.false_absence, n)
    small = sum(s["label"] == "hallucinated_small_object" for s in sentences)
    assert close(rate(small, n), persona.hallucinated_small_object, n)
    opening = sum(lab["sentences"][0]["label"] == "boilerplate" for lab in labels)
    assert close(rate(opening, n), persona.boilerplate, n)
