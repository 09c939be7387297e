"""Per-tile fusion on real sentences: nothing rewritten, negations kept, no tile lost, short captions that say what
the tile is.

The sentences come from the UC Merced captions (human, five per image) and the
UrbanCLIP Beijing captions (LLaMA-Adapter V2), copied here so the tests need no data.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import datasets
import pytest

from tests.fakes.captions import caption_row
from urbanln_cli import artifacts
from urbanln_cli.fusion import FusionOptions, TileFusion, Tools, fuse_tile
from urbanln_cli.stages.fuse import FuseConfig, _tools, fuse
from urbanln_cli.text.claims import parse_claims
from urbanln_cli.text.clauses import cut, layout
from urbanln_cli.text.clean import split_sentences
from urbanln_cli.text.lexicon import load_lexicon

LEX = load_lexicon()
FREEWAY = "There are two straight freeways closed to each other with some cars on the roads ."
TANK = "A small white storage tank on the lawn ."
INTERSECTION = "An intersection with no cars or pedestrians ."
UCM_FREEWAY = {  # freeway00
    "h1": "There are two straight freeways closed to each other .",
    "h2": FREEWAY,
    "h3": "Two straight freeways closed to each other with some cars on the roads .",
    "h4": "Some cars are on the freeways .",
    "h5": "There are some cars are on the freeways .",
}
UCM_INTERSECTION = {  # intersection00
    "h1": "An intersection with no cars or pedestrians on the road .",
    "h2": "An intersection with some houses and plants at the corners .",
    "h3": "A desolate intersection only with some houses and plants at the corners .",
    "h4": "A desolate intersection with no cars or pedestrians .",
    "h5": "An intersection with two roads vertical to each other .",
}
BEIJING = [
    "The image depicts a large, open field with a train track running through it. The field is situated near a "
    "city, and there "
    "are several cars parked nearby. The scene also includes a few trucks, a bus, and a traffic light, indicating "
    "that the area is "
    "a busy transportation hub.",
    "The image depicts a large, empty parking lot situated in the middle of a desert. The lot is surrounded by a "
    "vast, barren "
    "landscape, with no visible buildings or structures nearby. The parking lot appears to be empty, with no cars "
    "or other vehicles "
    "parked in it.",
    "The image depicts a large, open field with a mix of green and brown grass, situated in a rural area. The "
    "field is surrounded "
    "by a few buildings, including a house and a barn. In the background, there are several cars and trucks parked "
    "or driving "
    "along a road, indicating that the area is not completely isolated from urban life.",
]


@pytest.fixture(scope="module")
def tools() -> Tools:
    return _tools(FuseConfig())


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:[-'][a-z0-9]+)*", text.lower())


def _subsequence(small: str, big: str) -> bool:
    it = iter(_words(big))
    return all(w in it for w in _words(small))


def _faithful(row: dict, captions: dict[str, str]) -> None:
    """Every kept sentence is its model's own sentence with pieces removed; the short caption is the caption's."""
    for cand in row["candidates"]:
        raw = split_sentences(captions[cand["model"]])
        for sentence in split_sentences(cand["caption"]):
            assert any(_subsequence(sentence, r) for r in raw), (sentence, raw)
    for sentence in split_sentences(row["caption_short"]):
        assert _subsequence(sentence, row["caption"]), (sentence, row["caption"])


# ---------------------------------------------------------------- the examples


def test_a_sentence_is_cut_never_rebuilt_freeways_and_cars(tools):
    # at 2 m/px cars are too small: the phrase that carries them goes, the freeways stay as written
    row = fuse_tile("t", {"a": FREEWAY}, 2.0, FusionOptions(), tools)
    assert row["caption"] == "There are two straight freeways closed to each other ."
    (drop,) = [d for d in json.loads(row["dropped"]) if d["reason"] == "too_small"]
    assert drop["removed"] == "with some cars on the roads" and drop["step"] == "visibility"
    assert {d["reason"] for d in json.loads(row["dropped"])} == {
        "too_small",
        "clause_dropped",
    }  # the roads went with the cars
    # when the freeways are what no one else saw, the whole sentence goes: never "There are straight cars."
    row = fuse_tile("t", {"a": FREEWAY, "b": "Some cars are on the road ."}, 0.3, FusionOptions(), tools)
    assert "straight cars" not in row["caption"] and all("straight cars" not in c["caption"] for c in row["candidates"])
    _faithful(row, {"a": FREEWAY, "b": "Some cars are on the road ."})
    # the real tile: five people's captions
    row = fuse_tile("freeway00", UCM_FREEWAY, 0.3, FusionOptions(), tools)
    _faithful(row, UCM_FREEWAY)
    assert "freeways" in row["caption"] and "freeways" in row["caption_short"]
    assert not any("straight cars" in c["caption"] for c in row["candidates"])


def test_attributes_stay_with_their_nouns_storage_tank_on_the_lawn(tools):
    claims = parse_claims(TANK, LEX)
    lawn = next(c for c in claims if c.concept is not None and "lawn" in c.term)
    assert lawn.attributes == ()  # "small white" is the tank's
    assert "small white lawn" not in " ".join(c.render() for c in claims)
    # the lawn dropped: the tank stays as written; the tank dropped: the sentence goes (nothing is re-attached)
    spans = [c.spans for c in claims]
    lay = layout(TANK)
    assert cut(lay, spans, {claims.index(lawn)}, tools.is_attribute).text == "A small white storage tank ."
    others = {i for i, c in enumerate(claims) if c is not lawn}
    assert cut(lay, spans, others, tools.is_attribute).text is None
    row = fuse_tile("t", {"a": TANK, "b": "There is a white storage tank on the ground ."}, 0.3, FusionOptions(), tools)
    _faithful(row, {"a": TANK, "b": "There is a white storage tank on the ground ."})
    assert "white lawn" not in row["caption"] and "storage tank" in row["caption"]


def test_no_cars_or_pedestrians_is_an_absence_and_never_becomes_a_presence(tools):
    claims = parse_claims(INTERSECTION, LEX)
    by = {c.concept: c for c in claims}
    assert not by["road"].negated and by["car"].negated and by["person"].negated
    assert by["car"].render() == "no cars"
    # at 0.3 m/px people can never be seen: "or pedestrians" goes, "no cars" stays an absence
    row = fuse_tile("t", {"a": INTERSECTION}, 0.3, FusionOptions(), tools)
    assert row["caption"] == "An intersection with no cars ."
    kept = json.loads(row["claims"])
    assert [c["negated"] for c in kept if c["concept"] == "car"] == [True]
    # the real tile: whatever is dropped, no candidate says there are cars where its author said there were none
    row = fuse_tile("intersection00", UCM_INTERSECTION, 0.3, FusionOptions(), tools)
    _faithful(row, UCM_INTERSECTION)
    for cand in row["candidates"]:
        if "no cars" in UCM_INTERSECTION[cand["model"]]:
            assert "cars" not in cand["caption"] or "no cars" in cand["caption"]
    assert not any(c["concept"] == "car" and not c["negated"] for c in json.loads(row["claims"]))


@pytest.mark.parametrize(
    ("text", "absent", "present"),
    [
        ("No vehicles are visible on the road.", {"car"}, {"road"}),
        ("A quiet street without pedestrians.", {"person"}, {"road"}),
        ("Cars and pedestrians are not visible.", {"car", "person"}, set()),
        ("Neither trees nor buildings can be seen.", {"tree", "building"}, set()),
        ("The parking lot appears to be empty, with no cars or other vehicles parked in it.", {"car"}, {"parking"}),
        ("Not a single tree can be seen.", {"tree"}, set()),
        ("There is not much traffic on the highway.", set(), {"car", "highway"}),
        ("There are no cars and a large park.", {"car"}, {"park"}),
    ],
)
def test_negation_is_part_of_the_claim(text, absent, present):
    claims = parse_claims(text, LEX)
    assert {c.concept for c in claims if c.negated} == absent
    assert {c.concept for c in claims if not c.negated} >= present


def test_absence_is_backed_by_absence_and_contradicted_by_presence(tools):
    caps = {
        "a": "An intersection with no cars .",
        "b": "No vehicles are visible at the intersection .",
        "c": "An intersection with some cars .",
    }
    row = fuse_tile("t", caps, 0.3, FusionOptions(), tools)
    claims = json.loads(row["claims"])
    absent = [c for c in claims if c["concept"] == "car" and c["negated"]]
    assert {c["model"] for c in absent} == {"a", "b"} and all(
        c["support"] == 0.5 and c["contradicted_by"] == ["c"] for c in absent
    )
    dropped = [d for d in json.loads(row["dropped"]) if d.get("concept") == "car"]
    assert [(d["model"], d["reason"], d["text"]) for d in dropped] == [
        ("c", "unsupported", "cars")
    ]  # no one else saw cars
    # backed by one other model, but more say the opposite: contradicted
    five = {
        "a": "An intersection with some cars .",
        "b": "An intersection with some cars .",
        "c": "An intersection with no cars .",
        "d": "An intersection with no cars .",
        "e": "An intersection with no cars .",
    }
    row = fuse_tile("t", five, 0.3, FusionOptions(min_support=0.2), tools)
    reasons = {(d["model"], d["reason"]) for d in json.loads(row["dropped"]) if d.get("concept") == "car"}
    assert reasons == {("a", "contradicted"), ("b", "contradicted")}
    assert all(d["step"] == "support" for d in json.loads(row["dropped"]) if d["reason"] == "contradicted")
    assert "no cars" in row["caption"]


def test_cuts_keep_the_words_and_the_negations_of_real_vlm_captions(tools):
    """Every way of dropping one claim of a real sentence leaves the sentence's own words, negations whole."""
    for caption in BEIJING + list(UCM_INTERSECTION.values()) + list(UCM_FREEWAY.values()) + [TANK]:
        for sentence in split_sentences(caption):
            claims = parse_claims(sentence, LEX)
            lay = layout(sentence)
            for i in range(len(claims)):
                out = cut(lay, [c.spans for c in claims], {i}, tools.is_attribute).text
                if out is None:
                    continue
                assert _subsequence(out, sentence), (sentence, out)
                for c in claims:
                    if c.negated and c.term in out.lower():
                        assert re.search(r"\b(?:no|not|without|neither|nor)\b", out.lower()), (sentence, out)


# ---------------------------------------------------------------- no tile vanishes, and every drop is counted


def test_a_tile_whose_every_candidate_is_emptied_keeps_its_best_cleaned_one(tools):
    caps = {"a": "I'm sorry, I cannot tell. This image shows a river.", "b": "A stadium with a large oval stand."}
    row = fuse_tile("t", caps, 2.0, FusionOptions(), tools)
    assert row["fallback"] and row["model"] == "a" and row["caption"] == "A river."  # cleaned, not filtered
    drops = json.loads(row["dropped"])
    assert {(d["model"], d["reason"]) for d in drops} >= {("a", "refusal"), ("a", "unsupported"), ("b", "unsupported")}
    assert all(d.get("kept_by_fallback") for d in drops if d["model"] == "a" and d["step"] != "clean")
    assert [c["model"] for c in row["candidates"]] == ["a"]
    # only a tile that cleaning emptied has no row
    assert fuse_tile("t", {"a": "I'm sorry, I cannot see the image."}, 2.0, FusionOptions(), tools) is None


def _write(path: Path, rows: list[dict], trusted_column: bool, manifest_trusted: bool | None = None) -> Path:
    from urbanln_cli.stages.caption import caption_features

    features = caption_features()
    if trusted_column:
        features["trusted"] = datasets.Value("bool")
    ds = datasets.Dataset.from_list([{k: r.get(k) for k in features} for r in rows], features=features)
    extra = {} if manifest_trusted is None else {"trusted": manifest_trusted}
    manifest = artifacts.new_manifest("captions", run=artifacts.RunInfo(), inputs=[], rows=len(rows), extra=extra)
    return artifacts.write_dataset(ds, path, manifest)


def test_the_stage_counts_fallbacks_and_the_drops_in_them(tmp_path, cli):
    rows = [
        caption_row("x/1", "a", "A river."),
        caption_row("x/1", "b", "A stadium."),
        caption_row("x/2", "a", "I'm sorry, I cannot help."),
        caption_row("x/2", "b", "As an AI, I cannot see it."),
    ]
    captions = _write(tmp_path / "captions", rows, trusted_column=False)
    result = fuse(FuseConfig(captions=(captions,), tiles=None, gsd=2.0, out=tmp_path / "corpus"))
    assert result.rows == 1 and result.counts["fallback_tiles"] == 1 and result.counts["empty_tiles"] == 1
    assert (
        result.counts["dropped_unsupported"] == 2 and result.counts["dropped_refusal"] == 2
    )  # the emptied tile's drops count too
    assert datasets.load_from_disk(str(result.out))[0]["fallback"] is True
    shown = cli("fuse", captions, "--gsd", "2", "--tiles", tmp_path / "none", "--explain", "x/1")
    assert shown.exit_code == 0 and "fallback:" in shown.stdout and "[support]" in shown.stdout
    empty = cli("fuse", captions, "--gsd", "2", "--tiles", tmp_path / "none", "--explain", "x/2")
    assert empty.exit_code == 0 and "cleaning removed every sentence" in empty.stdout and "2 refusal" in empty.stdout


@pytest.mark.parametrize("how", ["column", "manifest"])
def test_trusted_captions_are_cleaned_only_unless_asked(tmp_path, how):
    text = {"a": "This image shows a river. Around 9 cars are parked on the streets.", "b": "A river."}
    rows = [caption_row("x/1", m, t) for m, t in text.items()]
    if how == "column":  # a trusted and an untrusted candidate
        for r in rows:
            r["trusted"] = r["model"] == "a"
        captions = _write(tmp_path / "captions", rows, trusted_column=True)
    else:  # every row trusted: no GSD is needed at all
        captions = _write(tmp_path / "captions", rows[:1], trusted_column=False, manifest_trusted=True)
        assert fuse(FuseConfig(captions=(captions,), tiles=tmp_path / "no-tiles", out=tmp_path / "no-gsd")).rows == 1
    plain = fuse(FuseConfig(captions=(captions,), tiles=None, gsd=2.0, out=tmp_path / "corpus"))
    row = datasets.load_from_disk(str(plain.out))[0]
    cand = next(c for c in row["candidates"] if c["model"] == "a")
    assert cand["trusted"] and cand["caption"] == "A river. Around 9 cars are parked on the streets."  # cleaned only
    assert plain.manifest["steps"]["trusted"] == {"captions": 1, "filtered": False}
    assert plain.counts["dropped_too_small"] == 0 and plain.counts["dropped_boilerplate"] == 0
    asked = fuse(FuseConfig(captions=(captions,), tiles=None, gsd=2.0, out=tmp_path / "asked", filter_trusted=True))
    assert asked.counts["dropped_too_small"] == 1
    a = next(c for c in datasets.load_from_disk(str(asked.out))[0]["candidates"] if c["model"] == "a")
    assert "cars" not in a["caption"]


# ---------------------------------------------------------------- the short caption


def test_caption_short_is_the_captions_own_sentences_naming_the_main_land_use_first(tools):
    caption = (
        "Several cars are parked along the street next to a row of tall trees and a small shop with a red awning. "
        "The area is a dense residential neighbourhood with many houses. A narrow road runs to the north."
    )
    row = fuse_tile("t", {"a": caption}, 0.3, FusionOptions(short_tokens=24), tools)
    assert row["short_tokens"] <= 24 and "residential" in row["caption_short"]
    _faithful(row, {"a": caption})
    row = fuse_tile("t", {"a": caption}, 0.3, FusionOptions(), tools)
    assert row["caption_short"] == row["caption"]  # it fits in 77 tokens


def test_the_main_land_use_decides_between_candidates(tools):
    caps = {
        "a": "This is a chaparral .",
        "b": "Lots of plants scattered on the ground .",
        "c": "Some grey plants are scattered on the ground .",
    }
    row = fuse_tile("t", caps, 0.3, FusionOptions(), tools)
    assert "chaparral" in row["caption"] and "chaparral" in row["caption_short"]
    assert next(c for c in json.loads(row["claims"]) if c["model"] == "a")["uncontested"] is True


# ---------------------------------------------------------------- the module


def test_fusion_is_pure_and_imports_point_one_way():
    root = Path(__file__).resolve().parents[1] / "urbanln_cli"
    for folder in ("fusion", "text"):
        for path in (root / folder).glob("*.py"):
            tree = ast.parse(path.read_text())
            names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
            names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
            assert not [
                n
                for n in names
                if n.startswith(("urbanln_cli.stages", "urbanln_cli.commands", "urbanln_cli.artifacts"))
            ], path
            if folder == "text":
                assert not [n for n in names if n.startswith("urbanln_cli.fusion")], path
    for path in [*(root / "fusion").glob("*.py"), root / "stages" / "fuse.py"]:
        assert len(path.read_text().splitlines()) <= 600, path


def test_a_tile_fusion_is_the_same_from_the_stage_and_the_package(tools):
    caps = {"a": UCM_INTERSECTION["h1"], "b": UCM_INTERSECTION["h4"], "c": UCM_INTERSECTION["h5"]}
    state = TileFusion("t", caps, 0.3, FuseConfig().fusion(), tools)
    from urbanln_cli.stages.fuse import fuse_tile as stage_fuse_tile

    assert state.row() == stage_fuse_tile("t", caps, 0.3, FuseConfig(), tools)


@pytest.mark.parametrize(
    "sentence",
    [
        "The image captures the essence of a lively urban environment with a prominent sports facility at its heart.",
        "The scene is captured from an aerial perspective, providing a breathtaking view of the natural beauty of "
        "the forest.",
    ],
)
def test_sentences_about_the_picture_are_boilerplate_not_fragments(sentence):
    """Real LLaMA-Adapter V2 sentences (Beijing): stripping "The image captures" must not leave "The essence of …"."""
    from urbanln_cli.text.clean import clean_sentence

    assert clean_sentence(sentence) == (None, [], "boilerplate")
