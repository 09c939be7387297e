"""The simulated panel answers `fuse --refine` and `fuse --check vlm` through the same code path as Ollama models."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import replace

import datasets
import pytest

from tests.test_sim import ORIGIN, _scene
from urbanln_cli.captioners import GenerationOptions, ModelMissing, TileInfo
from urbanln_cli.captioners.refine import REWRITE_SCHEMA, parse_rewrite, parse_rewrite_prompt, rewrite_prompt
from urbanln_cli.captioners.sim import PERSONAS, SimBackend
from urbanln_cli.captioners.sim import backend as sim_backend
from urbanln_cli.captioners.sim.rewrite import write_rewrite
from urbanln_cli.errors import ServiceUnavailable
from urbanln_cli.image_check.vlm import ANSWER_SCHEMA, question
from urbanln_cli.imagery import quadrant_bounds
from urbanln_cli.stages.caption import CaptionConfig, caption
from urbanln_cli.stages.fuse import FuseConfig, fuse
from urbanln_cli.stages.tile import TileConfig, tile
from urbanln_cli.text.claims import parse_claims
from urbanln_cli.text.lexicon import load_lexicon
from urbanln_cli.text.match import Matcher

PANEL = ("sim:precise", "sim:verbose", "sim:hallucinating", "sim:generic")
X0, YTOP = ORIGIN
WEST = TileInfo("w", "EPSG:32650", (X0, YTOP - 64, X0 + 64, YTOP), 1.0)


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    """The hand-made two-tile city of test_sim (west: six houses up top, a 4-lane road below; east: a lake, cars)."""
    folder = tmp_path_factory.mktemp("simfuse")
    city = _scene(folder / "city")
    tiles = tile(TileConfig(inputs=(city / "imagery.tif",), out=folder / "tiles", size=64)).out
    captions = caption(CaptionConfig(tiles=tiles, out=folder / "captions", models=PANEL)).out
    return folder, tiles, captions


@pytest.fixture
def flawless(monkeypatch):
    """sim:precise without any error, so what it says can be checked exactly."""
    perfect = replace(
        PERSONAS["precise"],
        omission=0.0,
        wrong_count=0.0,
        wrong_land_use=0.0,
        hallucinated_object=0.0,
        false_absence=0.0,
        check_false_yes=0.0,
        check_false_no=0.0,
        rewrite_leak=0.0,
    )
    monkeypatch.setitem(PERSONAS, "precise", perfect)
    return perfect


def _concepts(text: str) -> set[tuple[str | None, bool]]:
    return {(c.concept, c.negated) for c in parse_claims(text, load_lexicon())}


def _rows(path) -> dict[str, dict]:
    return {r["tile_id"]: r for r in datasets.load_from_disk(str(path)).to_list()}


def test_quadrant_bounds_are_north_up():
    tl, tr, bl, br = (quadrant_bounds((0.0, 0.0, 10.0, 20.0), k) for k in range(4))
    assert tl == (0.0, 10.0, 5.0, 20.0) and tr == (5.0, 10.0, 10.0, 20.0)
    assert bl == (0.0, 0.0, 5.0, 10.0) and br == (5.0, 0.0, 10.0, 10.0)


def test_fuse_refine_and_check_with_the_sim_panel(city, flawless, tmp_path):
    _, tiles, captions = city
    config = FuseConfig(
        captions=(captions,), tiles=tiles, out=tmp_path / "corpus", image_check="vlm", refine="sim:precise"
    )
    result = fuse(config)
    counts = result.counts
    assert counts["checked"] > 0 and counts.get("check_errors", 0) == 0 and counts.get("refine_errors", 0) == 0
    assert counts["refined"] > 0 and counts["vlm_asked"] > 0 and counts["dropped_refine_new"] == 0
    assert result.manifest["models"]["sim:precise"]["roles"] == ["check", "refine"]
    rows = _rows(result.out)
    (west,) = [r for t, r in rows.items() if t.endswith("c0")]
    (east,) = [r for t, r in rows.items() if not t.endswith("c0")]
    # quadrant captions follow the quadrant's own objects: houses up top, the road below, the lake everywhere east
    top = [_concepts(text) for text in west["local_captions"][:2]]
    bottom = [_concepts(text) for text in west["local_captions"][2:]]
    assert all(("road", False) not in c and c & {("residential", False), ("building", False)} for c in top)
    assert all(("road", False) in c and ("residential", False) not in c for c in bottom)
    assert all("4-lane" in text or "four-lane" in text for text in west["local_captions"][2:])
    assert all(("lake", False) in _concepts(text) for text in east["local_captions"])
    # the chosen caption is a rewrite; it says where things are
    assert west["model"] in {c["model"] for c in west["candidates"] if c["refined_by"] == "sim:precise"}
    assert "quarter" in west["caption"]
    # the flawless checker confirms true claims only: every claim it confirmed is true of the tile
    for row in rows.values():
        for item in json.loads(row["claims"]) + json.loads(row["dropped"]):
            if item.get("checked_by") == "vlm:sim:precise" and item.get("confirmed"):
                assert item["concept"] not in ("car", "railway", "highway", None)


def test_rewrites_restate_only_checked_facts(flawless):
    """What a rewrite claims, fuse's own matcher finds among the facts it was given (nothing for refine_new)."""
    lexicon = load_lexicon()
    facts = ["residential area", "about 6 houses", "4-lane road", "park", "no cars", "no lake", "red roofs"]
    local = [
        "This quarter shows a residential area, with about 3 low-rise houses and a park.",
        "The quarter is mostly housing, with about 3 low-rise homes and railway tracks.",  # no fact backs the rail
        "This quarter shows open land, with a 4-lane main road.",
        "The bottom-right quarter shows vacant land, with a 4-lane street.",
    ]
    backing = [c for f in facts for c in parse_claims(f, lexicon)]
    matcher_claims = list(backing)
    for seed in range(30):
        text, info = write_rewrite(flawless, local, facts, random.Random(seed), lexicon)
        claims = parse_claims(text, lexicon)
        matcher = Matcher(matcher_claims + claims)
        assert claims and all(matcher.best(c, backing) > 0 for c in claims), text
        assert ("railway", False) not in _concepts(text) and info["leaked"] == []
        assert "in the bottom-left and bottom-right quarters" in text.lower()  # the road, placed by the quadrants
        assert "in the top-left quarter" in text.lower()  # the park
        assert text.lower().index("top-left") < text.lower().index("bottom-left")  # ordered by place
    leaky = replace(flawless, rewrite_leak=1.0)
    text, info = write_rewrite(leaky, local, facts, random.Random(0), lexicon)
    assert ("railway", False) in _concepts(text) and info["leaked"]  # a slip that fuse's refine_new catches


def test_rewrite_prompt_reads_back():
    local = ["A lake.", "Houses, a road.", "Open land.", "A park with trees."]
    facts = ["residential area", "no cars"]
    prompt = rewrite_prompt("Houses by a lake.\nA road.", local, facts, 2.0)
    assert parse_rewrite_prompt(prompt) == ("Houses by a lake.\nA road.", local, facts)
    assert parse_rewrite_prompt("Describe this image.") is None


def _ask(backend, model, phrase, tile, seed):
    options = GenerationOptions(temperature=0.0, seed=seed)
    reply = asyncio.run(backend.caption("sim", model, b"png", question(phrase, 1.0), options, tile, ANSWER_SCHEMA))
    return json.loads(reply.text)["answer"]


@pytest.mark.parametrize("name", ["precise", "hallucinating"])
def test_check_answers_follow_the_truth_at_the_persona_error_rates(city, name):
    folder, _, _ = city
    backend = SimBackend(folder / "city" / "scene.json")
    persona = PERSONAS[name]
    true = ["residential area", "about 6 houses", "4-lane road", "no cars", "no lake", "red roofs"]
    false = ["lake", "railway tracks", "about 40 buildings", "highway", "no roads", "people", "blue roofs"]
    n = 420  # per kind: each claim asked with many seeds
    wrong_no = sum(_ask(backend, f"sim:{name}", true[i % len(true)], WEST, i) == "no" for i in range(n))
    wrong_yes = sum(_ask(backend, f"sim:{name}", false[i % len(false)], WEST, i) == "yes" for i in range(n))

    def close(k, p):  # four binomial standard errors
        return abs(k / n - p) <= 4 * (p * (1 - p) / n) ** 0.5 + 1e-9

    assert close(wrong_no, persona.check_false_no) and close(wrong_yes, persona.check_false_yes)
    # the same question with the same seed always gets the same answer
    assert {_ask(backend, f"sim:{name}", "lake", WEST, 7) for _ in range(3)} == {
        _ask(backend, f"sim:{name}", "lake", WEST, 7)
    }


def test_requests_the_sim_cannot_place_are_refused(city):
    folder, _, _ = city
    backend = SimBackend(folder / "city" / "scene.json")
    options = GenerationOptions()
    with pytest.raises(Exception, match="not told which tile"):
        asyncio.run(backend.caption("sim", "sim:precise", b"png", question("lake", 1.0), options, None, ANSWER_SCHEMA))
    with pytest.raises(Exception, match="cannot answer a request with the schema"):
        asyncio.run(backend.caption("sim", "sim:precise", b"png", "hi", options, WEST, {"required": ["x"]}))
    rewritten = asyncio.run(
        backend.caption(
            "sim",
            "sim:precise",
            b"png",
            rewrite_prompt("A lake.", ["a"] * 4, ["lake"], 1.0),
            options,
            None,
            REWRITE_SCHEMA,
        )
    )
    assert parse_rewrite(rewritten.text) and "lake" in parse_rewrite(rewritten.text)


def test_fuse_with_the_sim_is_deterministic_and_resumes(city, tmp_path, monkeypatch):
    _, tiles, captions = city

    def config(out, **kw):
        return FuseConfig(
            captions=(captions,), tiles=tiles, out=tmp_path / out, image_check="vlm", refine="sim:verbose", **kw
        )

    first = fuse(config("a"))
    assert _rows(first.out) == _rows(fuse(config("b")).out)  # same inputs and seed: the same corpus
    other = _rows(fuse(config("c", seed=1)).out)
    assert [r["local_captions"] for r in other.values()] != [r["local_captions"] for r in _rows(first.out).values()]

    def gone(*args, **kwargs):
        raise ModelMissing("sim:verbose", "sim")

    monkeypatch.setattr(sim_backend, "write_rewrite", gone)  # the rewrites fail: checks and quadrants are journaled
    with pytest.raises(ServiceUnavailable):
        fuse(config("d"))
    assert (tmp_path / "d.partial" / "vlm.jsonl").is_file() and not (tmp_path / "d").exists()
    monkeypatch.undo()
    resumed = fuse(config("d"))
    asked_first = first.counts["vlm_asked"]
    assert resumed.counts["vlm_reused"] > 0 and resumed.counts["vlm_asked"] < asked_first
    assert resumed.counts["vlm_reused"] + resumed.counts["vlm_asked"] == asked_first
    assert _rows(resumed.out) == _rows(first.out)


def test_cli_fuse_refine_and_check_offline(city, tmp_path, cli):
    _, tiles, captions = city
    out = tmp_path / "corpus"
    result = cli("fuse", captions, "--tiles", tiles, "-o", out, "--check", "vlm", "--refine", "sim:precise")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(out) and "rewritten by sim:precise" in result.stderr
    tile_id = next(iter(_rows(out)))
    shown = cli("fuse", out, "--explain", tile_id, "--json")
    record = json.loads(shown.stdout)
    assert shown.exit_code == 0 and len(record["local_captions"]) == 4 and record["caption"]
    stranger = cli(
        "fuse", captions, "--tiles", tiles, "-o", tmp_path / "x", "--refine", "sim:precise", "--scene", tmp_path
    )
    assert stranger.exit_code == 3 and "cannot read scene" in stranger.stderr
    stray = cli("fuse", captions, "--tiles", tiles, "-o", tmp_path / "x", "--scene", tmp_path / "scene.json")
    assert stray.exit_code == 2 and "--scene is for sim: models" in stray.stderr
