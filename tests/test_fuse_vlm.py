"""``fuse --check vlm`` and ``fuse --refine`` against the loopback Ollama server: answers, failures, resume."""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import pytest

from tests.fakes.captions import caption_row, write_captions
from tests.fakes.ollama_server import FakeOllama, caption_for
from tests.fakes.rasters import make_geotiff
from urbanln_cli import artifacts
from urbanln_cli.captioners import RETRY_TEMPERATURE
from urbanln_cli.captioners.refine import REWRITE_SCHEMA
from urbanln_cli.errors import ServiceUnavailable
from urbanln_cli.image_check import quadrant_crops
from urbanln_cli.image_check.vlm import ANSWER_SCHEMA
from urbanln_cli.stages.fuse import FuseConfig, fuse
from urbanln_cli.stages.tile import TileConfig, tile

LLAVA, QWEN = "llava:7b", "qwen2.5vl:7b"


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    """Four 32 px tiles at 2 m/px, and their image bytes by id."""
    tmp = tmp_path_factory.mktemp("tiles")
    make_geotiff(tmp / "city.tif", width=64, height=64, res=2.0)
    out = tile(TileConfig(inputs=(tmp / "city.tif",), out=tmp / "tiles", size=32, workers=1)).out
    ds = datasets.load_from_disk(str(out))
    return out, {
        r["tile_id"]: r["image"]["bytes"]
        for r in ds.select_columns(["tile_id", "image"]).cast_column("image", datasets.Image(decode=False))
    }


@pytest.fixture
def server():
    with FakeOllama() as srv:
        yield srv


def _panel(tmp_path, images, models=(LLAVA, QWEN)) -> Path:
    """Each model's caption is what the fake server says about the tile, so its answers are predictable."""
    return write_captions(
        tmp_path / "captions", [caption_row(t, m, caption_for(m, image)) for t, image in images.items() for m in models]
    )


def _config(tmp_path, captions, tiles, server, **kw) -> FuseConfig:
    return FuseConfig(captions=(captions,), tiles=tiles, out=tmp_path / "corpus", hosts=(server.url,), timeout=5, **kw)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]{4,}", text.lower()))


def _claims(row) -> list[dict]:
    return json.loads(row["claims"])


def _dropped(row) -> list[dict]:
    return json.loads(row["dropped"])


def test_check_vlm_asks_another_model_and_keeps_only_what_it_confirms(tmp_path, tiles, server):
    tiles_path, images = tiles
    result = fuse(_config(tmp_path, _panel(tmp_path, images), tiles_path, server, image_check="vlm"))
    rows = datasets.load_from_disk(str(result.out)).to_list()
    checked = 0
    for row in rows:
        image = images[row["tile_id"]]
        for item in _claims(row) + _dropped(row):
            if "checked_by" not in item:
                continue
            checked += 1
            checker = QWEN if item["model"] == LLAVA else LLAVA
            assert item["checked_by"] == f"vlm:{checker}"  # never the claim's author
            expected = bool(_words(item["text"]) & _words(caption_for(checker, image)))
            assert item["confirmed"] is expected, item
            assert item["check_answer"] == ("yes" if expected else "no")
            if item in _dropped(row):
                assert not item["confirmed"] and item["reason"] in ("unsupported", "head_dropped")
        for c in _claims(row):
            assert c["support"] >= 0.3 or c.get("confirmed") is True  # a disputed claim stays only when confirmed
    assert checked == result.counts["checked"] > 0
    assert 0 < result.counts["confirmed"] < checked  # the fake's answers are mixed: both branches are exercised
    asked = [r for r in server.requests if r.get("format")]
    assert len(asked) == checked and all(r["format"] == ANSWER_SCHEMA and r["n_images"] == 1 for r in asked)
    assert all(r["options"]["temperature"] == 0.0 for r in asked)
    assert result.manifest["steps"]["check"]["kind"] == "vlm"
    assert not artifacts.partial_dir(result.out).exists()  # the journal goes once the corpus is written


def test_single_model_check_drops_what_the_image_does_not_confirm(tmp_path, tiles, server):
    tiles_path, images = tiles
    captions = _panel(tmp_path, images, models=(LLAVA,))
    result = fuse(_config(tmp_path, captions, tiles_path, server, image_check="vlm", check_models=(QWEN,)))
    rows = datasets.load_from_disk(str(result.out)).to_list()
    reasons = {d["reason"] for r in rows for d in _dropped(r)}
    assert result.counts["single_model"] and result.counts["checked"] > 0
    assert "unconfirmed" in reasons and result.counts["dropped_unconfirmed"] > 0
    for row in rows:
        assert all(c["confirmed"] for c in _claims(row))  # with one model every claim is disputed


def test_refine_writes_quadrant_captions_and_checked_rewrites(tmp_path, tiles, server):
    tiles_path, images = tiles
    result = fuse(_config(tmp_path, _panel(tmp_path, images), tiles_path, server, refine=LLAVA))
    rows = datasets.load_from_disk(str(result.out)).to_list()
    assert result.counts["refined"] == 2 * len(images) and result.counts.get("refine_errors", 0) == 0
    for row in rows:
        crops = quadrant_crops(images[row["tile_id"]])
        assert row["local_captions"] == [caption_for(LLAVA, c) for c in crops]
        assert {c["refined_by"] for c in row["candidates"]} == {LLAVA}
        refined = [c for c in _claims(row) if c.get("stage") == "refine"]
        assert refined and all(c["restates"] for c in refined)  # every kept rewrite claim restates a surviving claim
    new = [d for r in rows for d in _dropped(r) if d["reason"] == "refine_new"]
    assert new and result.counts["dropped_refine_new"] == len(new)
    rewrites = [r for r in server.requests if r.get("format")]
    assert len(rewrites) == 2 * len(images) and all(r["format"] == REWRITE_SCHEMA for r in rewrites)
    assert all("Facts checked" in r["prompt"] and "top-left:" in r["prompt"] for r in rewrites)
    quadrants = [r for r in server.requests if not r.get("format")]
    assert len(quadrants) == 4 * len(images)


def test_transient_failures_and_bad_json_are_retried(tmp_path, tiles, server):
    tiles_path, images = tiles
    captions = _panel(tmp_path, images)
    clean = fuse(_config(tmp_path / "a", captions, tiles_path, server, image_check="vlm", refine=LLAVA))
    server.inject("500", "503", "drop", "bad_json", "bad_json", "429")
    again = fuse(_config(tmp_path / "b", captions, tiles_path, server, image_check="vlm", refine=LLAVA, retries=6))
    assert datasets.load_from_disk(str(again.out)).to_list() == datasets.load_from_disk(str(clean.out)).to_list()
    # greedy decoding ignores the seed: a content retry samples a little instead of asking the same again
    assert {r["options"]["temperature"] for r in server.requests} == {0.0, RETRY_TEMPERATURE}


def test_answers_that_stay_broken_are_recorded_not_invented(tmp_path, tiles, server):
    tiles_path, images = tiles
    captions = _panel(tmp_path, images, models=(LLAVA,))
    unchecked = fuse(_config(tmp_path / "plain", captions, tiles_path, server))
    server.inject(*["bad_json"] * 3 * 100, model=QWEN)  # every answer qwen gives is prose, more than the retries
    result = fuse(_config(tmp_path, captions, tiles_path, server, image_check="vlm", check_models=(QWEN,)))
    rows = datasets.load_from_disk(str(result.out)).to_list()
    checked = [i for r in rows for i in _claims(r) + _dropped(r) if "checked_by" in i]
    assert checked and all(not i["confirmed"] and "bad_json" in i["check_error"] for i in checked)
    assert result.counts["check_errors"] == result.counts["checked"] == len(checked)
    # no answer is not a "no": the corpus is what it would be without the check, bar the recorded errors
    assert [r["caption"] for r in rows] == [r["caption"] for r in datasets.load_from_disk(str(unchecked.out))]
    assert result.counts["dropped_unconfirmed"] == 0
    assert (artifacts.partial_dir(result.out) / "vlm.jsonl").exists()  # kept, so a rerun asks only what failed


def test_a_lost_server_stops_with_exit_4_and_a_rerun_asks_only_the_rest(tmp_path, tiles):
    tiles_path, images = tiles
    captions = _panel(tmp_path, images)
    with FakeOllama() as first:
        port = int(first.url.rsplit(":", 1)[1])
        first.stop_after(6)
        with pytest.raises(ServiceUnavailable, match="finished answers are kept"):
            fuse(_config(tmp_path, captions, tiles_path, first, refine=LLAVA, retries=1, concurrency=1))
    journal = artifacts.partial_dir(tmp_path / "corpus") / "vlm.jsonl"
    kept = len(journal.read_text().splitlines())
    assert kept >= 4 and not (tmp_path / "corpus").exists()
    with FakeOllama(port=port) as second:
        result = fuse(_config(tmp_path, captions, tiles_path, second, refine=LLAVA))
        assert second.chats == 6 * len(images) - kept  # 4 quadrants + 2 rewrites per tile, minus what was journaled
    with FakeOllama() as fresh:
        reference = fuse(_config(tmp_path / "ref", captions, tiles_path, fresh, refine=LLAVA))
    assert datasets.load_from_disk(str(result.out)).to_list() == datasets.load_from_disk(str(reference.out)).to_list()


def test_answers_are_keyed_by_what_was_sent(tmp_path, tiles, server):
    tiles_path, images = tiles
    captions = _panel(tmp_path, images)
    with FakeOllama() as first:
        port = int(first.url.rsplit(":", 1)[1])
        first.stop_after(8)
        with pytest.raises(ServiceUnavailable):
            fuse(_config(tmp_path, captions, tiles_path, first, refine=LLAVA, retries=1, concurrency=1))
    with FakeOllama(port=port) as second:  # another --image-size: no journaled answer may be reused
        fuse(_config(tmp_path, captions, tiles_path, second, refine=LLAVA, image_size=32))
        assert second.chats == 6 * len(images)


def test_a_failed_quadrant_caption_leaves_the_draft_and_says_why(tmp_path, tiles, server):
    tiles_path, images = tiles
    captions = _panel(tmp_path, images)
    server.inject("404")  # the model vanishing mid-run stops the run (exit 4), keeping what was answered
    with pytest.raises(ServiceUnavailable, match="disappeared"):
        fuse(_config(tmp_path / "gone", captions, tiles_path, server, refine=LLAVA))
    server.inject(*["empty"] * 3)  # one quadrant caption stays empty through its content retries
    result = fuse(_config(tmp_path, captions, tiles_path, server, refine=LLAVA, concurrency=1))
    rows = datasets.load_from_disk(str(result.out)).to_list()
    failed = [c for r in rows for c in r["candidates"] if c["refine_error"]]
    assert len(failed) == 2 and all(
        "quadrant caption failed" in c["refine_error"] and c["refined_by"] is None for c in failed
    )
    assert result.counts["refine_errors"] == 2 and result.counts["refined"] == 2 * len(images) - 2
    assert sum(1 for r in rows if not r["local_captions"]) == 1


def test_cli_errors_for_servers_and_models(tmp_path, tiles, server, cli):
    tiles_path, images = tiles
    captions = _panel(tmp_path, images)
    base = ["fuse", captions, "--tiles", tiles_path, "-o", tmp_path / "corpus", "--timeout", "2"]
    down = cli(*base, "--check", "vlm", "--host", "http://127.0.0.1:9")
    assert (
        down.exit_code == 4
        and down.stderr.startswith("error: no Ollama server answers")
        and "hint: start it with `ollama serve`" in down.stderr
    )
    missing = cli(*base, "--refine", "moondream", "--host", server.url)
    assert (
        missing.exit_code == 4
        and "moondream:1.8b is not pulled" in missing.stderr
        and "ollama pull moondream:1.8b" in missing.stderr
    )
    bad = cli(*base, "--check", "owl")
    assert bad.exit_code == 2 and "--check 'owl' is not one of none, clip, vlm" in bad.stderr
    stray = cli(*base, "--check-model", "qwen-vl")
    assert stray.exit_code == 2 and "--check-model is for --check vlm" in stray.stderr
    two = cli(*base, "--refine", "llava,qwen-vl")
    assert two.exit_code == 2 and "--refine takes one vision model" in two.stderr
    no_scene = cli(*base, "--refine", "sim:precise")  # real tiles: no synthetic city to answer from
    assert no_scene.exit_code == 2 and "sim: models need the scene of a synthetic city" in no_scene.stderr
    mixed = cli(*base, "--check", "vlm", "--check-model", "sim:precise", "--refine", "llava", "--host", server.url)
    assert mixed.exit_code == 2 and "sim: models and Ollama models cannot share" in mixed.stderr
    local = cli(*base, "--refine", "hf:/models/qwen", "--host", server.url)  # transformers: no JSON-constrained replies
    assert local.exit_code == 2 and "hf: models cannot answer fuse's yes/no checks or rewrites" in local.stderr
    stranger = write_captions(tmp_path / "stranger", [caption_row("elsewhere/1", LLAVA, "A river.")])
    lost = cli(
        "fuse", stranger, "--tiles", tiles_path, "-o", tmp_path / "corpus", "--check", "vlm", "--host", server.url
    )
    assert lost.exit_code == 3 and "1 of 1 captioned tiles are not in" in lost.stderr and "hint:" in lost.stderr
    assert not (tmp_path / "corpus").exists() and down.stdout == missing.stdout == lost.stdout == ""


def test_cli_refine_and_explain(tmp_path, tiles, server, cli):
    tiles_path, images = tiles
    captions = _panel(tmp_path, images)
    ok = cli(
        "fuse",
        captions,
        "--tiles",
        tiles_path,
        "-o",
        tmp_path / "corpus",
        "--check",
        "vlm",
        "--refine",
        "llava",
        "--host",
        server.url,
        "--json",
    )
    assert ok.exit_code == 0, ok.stderr
    summary = json.loads(ok.stdout)
    assert summary["counts"]["refined"] == 2 * len(images) and summary["counts"]["checked"] > 0
    tile_id = sorted(images)[0]
    shown = cli("fuse", tmp_path / "corpus", "--explain", tile_id)
    assert shown.exit_code == 0
    assert "quadrant captions (--refine):" in shown.stdout and f"refined by {LLAVA}" in shown.stdout
    assert re.search(r"(not )?confirmed by vlm:", shown.stdout)
    # computed for one tile straight from the captions: the same answers, no journal left behind
    computed = cli(
        "fuse",
        captions,
        "--tiles",
        tiles_path,
        "--check",
        "vlm",
        "--refine",
        "llava",
        "--host",
        server.url,
        "--explain",
        tile_id,
        "--json",
    )
    record = json.loads(computed.stdout)
    stored = datasets.load_from_disk(str(tmp_path / "corpus")).filter(lambda t: t == tile_id, input_columns="tile_id")[
        0
    ]
    assert record["caption"] == stored["caption"] and record["local_captions"] == stored["local_captions"]
