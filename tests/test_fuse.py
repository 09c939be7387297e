"""``urbanln fuse``: cleaning, claims, visibility, support, consensus, length; merging; the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from tests.fakes.captions import caption_row, write_captions
from tests.fakes.rasters import make_geotiff
from urbanln_cli import artifacts
from urbanln_cli.errors import InputError
from urbanln_cli.stages.fuse import FuseConfig, _tools, fuse, fuse_tile
from urbanln_cli.stages.tile import TileConfig, tile
from urbanln_cli.text.claims import parse_claims
from urbanln_cli.text.clean import clean_caption, split_sentences
from urbanln_cli.text.lexicon import load_lexicon
from urbanln_cli.text.match import Matcher
from urbanln_cli.text.tokens import clip_counter, fit_tokens

LEX = load_lexicon()

PRECISE = (
    "The area is dominated by housing. About 12 buildings stand here, most of them low-rise. A river is "
    "visible. Around 9 cars are parked on the streets."
)
VERBOSE = (
    "This image shows an aerial view of an area. The area is dominated by residential homes, as can be seen in the "
    "image. "
    "About 11 buildings stand here. A stream winds through the tile. Traffic lights control the main intersection. "
    "Railway tracks cross the area. Overall, this is a typical scene."
)
GENERIC = (
    "There is housing. There are some buildings. A river is visible. A stadium with a large oval stand is visible."
)


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> tuple[Path, list[str]]:
    """Two tiles at 2 m/px."""
    tmp = tmp_path_factory.mktemp("tiles")
    make_geotiff(tmp / "city.tif", width=128, height=64, res=2.0)
    tile(TileConfig(inputs=(tmp / "city.tif",), out=tmp / "tiles", size=64))
    ds = datasets.load_from_disk(str(tmp / "tiles"))
    return tmp / "tiles", sorted(ds["tile_id"])


@pytest.fixture
def panel(tmp_path, tiles):
    path, ids = tiles
    rows = []
    for t in ids:
        rows += [
            caption_row(t, "m:precise", PRECISE),
            caption_row(t, "m:verbose", VERBOSE),
            caption_row(t, "m:generic", GENERIC),
        ]
    rows.append(caption_row(ids[0], "m:broken", None, error="timeout"))
    return write_captions(tmp_path / "captions", rows), path, ids


def _tools_default():
    return _tools(FuseConfig())


# ---------------------------------------------------------------- steps on known inputs


def test_clean_strips_boilerplate_filler_repeats_and_says_why():
    text = (
        "I'm sorry, but I cannot see the image clearly. The image shows dense mid-rise residential blocks. "
        "A river is visible, as can be seen in the image. A river is visible. Overall, this is a typical scene. "
        + "The road " * 18
        + "."
    )
    kept, drops = clean_caption(text)
    assert [s.text for s in kept] == ["Dense mid-rise residential blocks.", "A river is visible."]
    assert [s.index for s in kept] == [1, 2]
    assert {(d.reason, d.sentence) for d in drops} == {
        ("refusal", 0),
        ("filler", 2),
        ("repeated", 3),
        ("boilerplate", 4),
        ("repetition", 5),
    }
    assert next(d.text for d in drops if d.reason == "filler") == "as can be seen in the image"
    kept_off, drops_off = clean_caption(text, enabled=False)
    assert len(kept_off) == len(split_sentences(text)) == 6 and drops_off == []


def test_claims_are_atomic_and_canonical():
    claims = parse_claims("About 12 low-rise buildings and a 4-lane arterial road.", LEX)
    assert [c.key for c in claims] == [
        ("building", ("low-rise",), 12, ()),
        ("road", ("arterial",), None, (("lanes", "4"),)),
    ]
    assert claims[0].head and not claims[1].head
    # synonyms normalise to one concept
    for a, b in [
        ("housing", "residential district"),
        ("farmland", "cropland"),
        ("freeway", "expressway"),
        ("stream", "river"),
        ("green space", "park"),
        ("warehouse", "factory"),
    ]:
        assert parse_claims(f"There is {a}.", LEX)[0].concept == parse_claims(f"There is {b}.", LEX)[0].concept, (a, b)
    (res,) = parse_claims("Dense mid-rise residential blocks.", LEX)
    assert (res.concept, set(res.attributes)) == ("residential", {"dense", "mid-rise"})
    (phrase,) = parse_claims("Colourful kiosks everywhere.", LEX)
    assert phrase.concept is None and phrase.kind == "phrase"


def test_matching_counts_synonyms_and_soft_phrases():
    a, b, c = (parse_claims(t, LEX)[0] for t in ("About 12 buildings.", "Around 11 structures.", "About 30 buildings."))
    m = Matcher([a, b, c])
    assert m.score(a, b) == 1.0 and m.score(a, c) == 0.0
    p, q, r = (
        parse_claims(t, LEX)[0] for t in ("Colourful market kiosks.", "Colorful market kiosks.", "Muddy puddles.")
    )
    m = Matcher([p, q, r])
    assert m.score(p, q) > 0.5 and m.score(p, r) == 0.0


def test_lexicon_file_extends_synonyms_and_visibility(tmp_path):
    path = tmp_path / "lex.toml"
    path.write_text(
        '[concepts.kiosk]\nterms = ["kiosk", "kiosks", "stall"]\n[visibility]\nkiosk = 0.5\n[attributes]\nwords = '
        '["colourful"]\n'
    )
    lex = load_lexicon(path)
    (claim,) = parse_claims("Colourful kiosks next to a stall.", lex)  # an attribute stays with its own noun
    assert claim.concept == "kiosk" and claim.attributes == ("colourful",)
    assert lex.max_gsd("kiosk", counted=False) == 0.5
    (tmp_path / "bad.json").write_text('{"visibility": {"unicorn": 1}}')
    with pytest.raises(InputError, match="names no concept"):
        load_lexicon(tmp_path / "bad.json")


def test_fuse_tile_each_step_with_known_output():
    tools = _tools_default()
    caps = {"a": PRECISE, "b": VERBOSE, "c": GENERIC}
    row = fuse_tile("t", caps, 2.0, FuseConfig(), tools)
    dropped = {(d["model"], d["reason"], d["text"]) for d in json.loads(row["dropped"])}
    assert ("b", "boilerplate", "This image shows an aerial view of an area.") in dropped
    assert ("b", "filler", "as can be seen in the image") in dropped
    assert ("a", "too_small", "about 9 cars") in dropped  # 2 m/px: cars are too small
    assert ("a", "head_dropped", "streets") in dropped  # and so is what the sentence said about them
    assert ("b", "too_small", "traffic lights") in dropped
    assert ("b", "unsupported", "railway tracks") in dropped  # no other model saw a railway
    assert ("c", "unsupported", "stadium") in dropped  # "a large oval stand" is the stand's, not the stadium's
    claims = json.loads(row["claims"])
    river = [c for c in claims if c["concept"] == "river"]
    assert {c["model"] for c in river} == {"a", "b", "c"} and all(c["support"] == 1.0 for c in river)  # stream = river
    cands = {c["model"]: c for c in row["candidates"]}
    assert (
        cands["a"]["caption"]
        == "The area is dominated by housing. About 12 buildings stand here, most of them low-rise. A river is visible."
    )
    assert (
        cands["b"]["caption"]
        == "The area is dominated by residential homes. About 11 buildings stand here. A stream winds through the tile."
    )
    assert cands["c"]["caption"] == "There is housing. There are some buildings. A river is visible."
    assert row["model"] == max(cands, key=lambda m: (cands[m]["score"], -ord(m)))
    assert row["caption"] == cands[row["model"]]["caption"] and not row["cut"] and row["n_models"] == 3
    # the short caption is the caption's own sentences, the one naming the main land use (residential) first
    short = split_sentences(row["caption_short"])
    assert short and all(s in split_sentences(row["caption"]) for s in short) and row["short_tokens"] <= 77
    assert any(
        c["concept"] == "residential" and c["sentence"] in cands[row["model"]]["sentences"]
        for c in claims
        if c["model"] == row["model"]
    )
    assert "housing" in row["caption_short"] or "residential" in row["caption_short"]


def test_steps_switch_off_independently():
    tools = _tools_default()
    caps = {"a": PRECISE, "b": VERBOSE, "c": GENERIC}

    def reasons(**kw):
        return {d["reason"] for d in json.loads(fuse_tile("t", caps, 2.0, FuseConfig(**kw), tools)["dropped"])}

    assert reasons() >= {"boilerplate", "filler", "too_small", "unsupported", "head_dropped"}
    assert not reasons(clean=False) & {"boilerplate", "filler"} and {"too_small", "unsupported"} <= reasons(clean=False)
    assert "too_small" not in reasons(visibility=False) and "unsupported" in reasons(visibility=False)
    assert "unsupported" not in reasons(support=False) and "too_small" in reasons(support=False)
    fine = fuse_tile("t", caps, 0.5, FuseConfig(), tools)  # 0.5 m/px: cars are visible, traffic lights never
    texts = {d["text"] for d in json.loads(fine["dropped"]) if d["reason"] == "too_small"}
    assert texts == {"traffic lights"}
    off = fuse_tile("t", caps, 2.0, FuseConfig(consensus=False), tools)
    assert off["score"] is None and all(c["score"] is None for c in off["candidates"])


def test_single_model_keeps_claims_with_undefined_support():
    row = fuse_tile("t", {"a": PRECISE}, 0.5, FuseConfig(), _tools_default())
    claims = json.loads(row["claims"])
    assert claims and all(c["support"] is None for c in claims)
    assert not any(d["reason"] == "unsupported" for d in json.loads(row["dropped"]))
    assert row["score"] is None and row["caption"] == PRECISE


def test_real_vlm_quirks_at_2_4_m():
    """From the UrbanCLIP Beijing captions: glued sentences, airports and airplanes (visible), cars (not)."""
    text = (
        "There are at least 13 airplanes on the tarmac, with some further in the background.The airport is surrounded "
        "by buildings and vehicles. Several cars are parked along the road."
    )
    assert split_sentences(text)[1] == "The airport is surrounded by buildings and vehicles."
    kept, drops = clean_caption("A river port. Overall, the image portrays.")  # a truncated caption's last words
    assert [s.text for s in kept] == ["A river port."] and [(d.reason, d.sentence) for d in drops] == [
        ("boilerplate", 1)
    ]
    row = fuse_tile("t", {"a": text}, 2.4, FuseConfig(), _tools_default())
    kept = {c["concept"] for c in json.loads(row["claims"])}
    dropped = {(d["reason"], d["text"]) for d in json.loads(row["dropped"])}
    assert {"airplane", "airport", "building"} <= kept and "car" not in kept
    assert ("too_small", "vehicles") in dropped and ("head_dropped", "road") in dropped
    assert "The airport is surrounded by buildings." in row["caption"]  # the original sentence without "and vehicles"


def test_captions_without_tiles_take_the_gsd_given(tmp_path):
    captions = write_captions(tmp_path / "captions", [caption_row("x/1", "m", PRECISE)])
    result = fuse(FuseConfig(captions=(captions,), tiles=tmp_path / "no-tiles", gsd=2.0, out=tmp_path / "corpus"))
    row = datasets.load_from_disk(str(result.out))[0]
    assert row["gsd"] == 2.0 and result.counts["dropped_too_small"] == 1 and result.counts["tiles_without_gsd"] == 0
    with pytest.raises(InputError, match="tiles artifact not found"):
        fuse(FuseConfig(captions=(captions,), tiles=tmp_path / "no-tiles", out=tmp_path / "other"))


def test_long_caption_fits_248_clip_tokens_with_the_real_tokenizer():
    import open_clip

    tokenizer = open_clip.get_tokenizer("ViT-B-16")
    sentences = [
        f"About {i} mid-rise residential buildings stand along a 4-lane arterial road near the river."
        for i in range(10, 40)
    ]
    long = " ".join(sentences)
    assert len(tokenizer.encode(long)) + 2 > 248
    row = fuse_tile("t", {"a": long}, 0.5, FuseConfig(), _tools_default())
    assert row["cut"] and row["tokens"] <= 248
    assert len(tokenizer.encode(row["caption"])) + 2 == row["tokens"]
    assert row["caption"].endswith(".") and long.startswith(row["caption"])  # cut at a sentence boundary
    assert any(d["reason"] == "length_cut" for d in json.loads(row["dropped"]))
    assert row["short_tokens"] <= 77
    # the limit is a parameter
    text, cut, n = fit_tokens(long, 40, clip_counter())
    assert cut and n <= 40 and long.startswith(text)


# ---------------------------------------------------------------- the stage


def test_fuse_writes_corpus_with_counts(panel, tmp_path):
    captions, tiles_path, ids = panel
    result = fuse(FuseConfig(captions=(captions,), tiles=tiles_path, out=tmp_path / "corpus"))
    ds, manifest = artifacts.read_dataset(tmp_path / "corpus", "corpus")
    assert ds.num_rows == 2 and ds["tile_id"] == ids
    assert set(ds.column_names) >= {
        "tile_id",
        "caption",
        "caption_short",
        "candidates",
        "claims",
        "dropped",
        "n_models",
        "cut",
        "score",
    }
    counts = manifest["counts"]
    assert counts["rows"] == 2 and counts["failed_captions"] == 1 and counts["single_model"] is False
    assert (
        counts["dropped_boilerplate"] == 4 and counts["dropped_too_small"] == 4 and counts["dropped_unsupported"] == 4
    )
    assert result.counts == counts
    assert datasets.load_from_disk(str(tmp_path / "corpus"))[0]["candidates"][0].keys() >= {"model", "caption", "score"}


def test_fuse_is_deterministic(panel, tmp_path):
    captions, tiles_path, _ = panel
    for name in ("one", "two"):
        fuse(FuseConfig(captions=(captions,), tiles=tiles_path, out=tmp_path / name))
    assert (
        datasets.load_from_disk(str(tmp_path / "one")).to_list()
        == datasets.load_from_disk(str(tmp_path / "two")).to_list()
    )


def test_several_caption_folders_merge(tmp_path, tiles):
    tiles_path, ids = tiles
    a = write_captions(tmp_path / "a", [caption_row(t, "m:precise", PRECISE) for t in ids])
    b = write_captions(
        tmp_path / "b",
        [caption_row(t, "m:verbose", VERBOSE) for t in ids] + [caption_row(ids[0], "m:precise", PRECISE)],
    )
    c = write_captions(tmp_path / "c", [caption_row(ids[1], "m:generic", GENERIC)])
    result = fuse(FuseConfig(captions=(a, b, c), tiles=tiles_path, out=tmp_path / "corpus"))
    ds = datasets.load_from_disk(str(tmp_path / "corpus"))
    assert ds["n_models"] == [2, 3] and result.counts["duplicate_rows"] == 1
    single = fuse(FuseConfig(captions=(a,), tiles=tiles_path, out=tmp_path / "single"))
    assert single.counts["single_model"] is True
    d = write_captions(tmp_path / "d", [caption_row(ids[0], "m:precise", "Something else entirely: a lake.")])
    with pytest.raises(InputError, match="two different captions"):
        fuse(FuseConfig(captions=(a, d), tiles=tiles_path, out=tmp_path / "bad"))


# ---------------------------------------------------------------- CLI


def test_cli_fuse_and_explain(panel, tmp_path, cli):
    captions, tiles_path, ids = panel
    out = tmp_path / "corpus"
    result = cli("fuse", captions, "--tiles", tiles_path, "-o", out)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(out) and "fused captions" in result.stderr
    # explain from the corpus, and computed for one tile: the same fusion
    shown = cli("fuse", out, "--explain", ids[0])
    assert shown.exit_code == 0, shown.stderr
    assert (
        "candidates:" in shown.stdout
        and "unsupported: railway tracks" in shown.stdout
        and "too_small: traffic lights" in shown.stdout
    )
    from_corpus = json.loads(cli("fuse", out, "--explain", ids[0], "--json").stdout)
    computed = json.loads(cli("fuse", captions, "--tiles", tiles_path, "--explain", ids[0], "--json").stdout)
    assert computed["source"] == "computed" and from_corpus["source"] == str(out)
    for key in ("caption", "caption_short", "claims", "dropped", "candidates"):
        assert computed[key] == from_corpus[key], key
    missing = cli("fuse", out, "--explain", "nope")
    assert missing.exit_code == 3 and missing.stdout == "" and "hint:" in missing.stderr


def test_cli_errors_exit_3_with_clean_stdout(panel, tmp_path, cli):
    captions, tiles_path, _ = panel
    wrong = cli("fuse", tiles_path, "--tiles", tiles_path, "-o", tmp_path / "c1")
    assert wrong.exit_code == 3 and wrong.stdout == ""
    assert "error:" in wrong.stderr and "holds tiles" in wrong.stderr and "hint:" in wrong.stderr
    no_tiles = cli("fuse", captions, "--tiles", tmp_path / "nowhere", "-o", tmp_path / "c2")
    assert no_tiles.exit_code == 3 and no_tiles.stdout == "" and "--no-visibility" in no_tiles.stderr
    ok = cli("fuse", captions, "--tiles", tmp_path / "nowhere", "--no-visibility", "-o", tmp_path / "c3", "--json")
    assert ok.exit_code == 0 and json.loads(ok.stdout)["counts"]["dropped_too_small"] == 0
    bad = cli("fuse", captions, "--min-support", "2", "-o", tmp_path / "c4")
    assert bad.exit_code == 2 and bad.stdout == ""


def test_check_clip_keeps_a_disputed_claim_only_when_the_image_confirms_it(panel, tmp_path, cli):
    captions, tiles_path, ids = panel
    base = [
        "fuse",
        captions,
        "--tiles",
        tiles_path,
        "--check",
        "clip",
        "--clip-arch",
        "urbanln-tiny",
        "--clip-pretrained",
        "none",
        "--json",
    ]
    runs = {}
    for name, margin in (("lenient", "-1000"), ("strict", "1000")):
        result = cli(*base, "-o", tmp_path / name, "--clip-margin", margin)
        assert result.exit_code == 0, result.stderr
        runs[name] = json.loads(result.stdout)["counts"]
    plain = fuse(FuseConfig(captions=(captions,), tiles=tiles_path, out=tmp_path / "plain")).counts
    lenient, strict = runs["lenient"], runs["strict"]
    assert (
        lenient["checked"] == strict["checked"] == plain["dropped_unsupported"] > 0
    )  # the disputed claims, each checked once
    assert lenient["confirmed"] == lenient["checked"] and lenient["dropped_unsupported"] == 0
    assert strict["confirmed"] == 0 and strict["dropped_unsupported"] == plain["dropped_unsupported"]
    row = datasets.load_from_disk(str(tmp_path / "lenient"))[0]
    checked = [c for c in json.loads(row["claims"]) if "checked_by" in c]
    assert checked and all(
        c["checked_by"] == "clip" and c["confirmed"] and isinstance(c["check_score"], float) for c in checked
    )
    manifest = artifacts.read_manifest(tmp_path / "strict")
    assert manifest["steps"]["check"]["margin"] == 1000.0 and manifest["steps"]["check"]["checker"] == "clip"
    missing = cli(
        "fuse",
        captions,
        "--tiles",
        tiles_path,
        "-o",
        tmp_path / "none",
        "--check",
        "clip",
        "--clip-model",
        tmp_path / "no-run",
    )
    assert missing.exit_code == 3 and "hint:" in missing.stderr and not (tmp_path / "none").exists()
