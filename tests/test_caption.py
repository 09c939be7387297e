"""`urbanln caption` against the loopback Ollama server: happy path, every failure, resume, shards."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import datasets
import pytest

from tests.fakes.ollama_server import VISION, FakeOllama, caption_for
from tests.fakes.rasters import make_geotiff
from urbanln_cli.captioners.aliases import resolve_models
from urbanln_cli.errors import OutputExistsError, ServiceUnavailable, UsageProblem
from urbanln_cli.journal import Journal, read_records
from urbanln_cli.stages.caption import CaptionConfig, caption, content_problem, in_shard
from urbanln_cli.stages.tile import TileConfig, tile

MODELS = ("llava:7b", "qwen2.5vl:7b")


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiles")
    make_geotiff(folder / "city.tif", width=64, height=32, res=2.0)
    return tile(TileConfig(inputs=(folder / "city.tif",), out=folder / "tiles", size=16, workers=1)).out  # 8 tiles


@pytest.fixture
def server():
    with FakeOllama() as srv:
        yield srv


def _config(tiles, out, server, **kw):
    kw = {"hosts": (server.url,), "backoff": 0.01, "timeout": 5, "models": MODELS} | kw
    return CaptionConfig(tiles=tiles, out=out, **kw)


def _rows(out):
    return datasets.load_from_disk(str(out)).to_list()


def test_aliases():
    assert resolve_models("llava,qwen-vl") == ["llava:7b", "qwen2.5vl:7b"]
    assert resolve_models("llava, llava:7b ,moondream:latest") == ["llava:7b", "moondream:latest"]
    with pytest.raises(UsageProblem, match="did you mean 'llava'"):
        resolve_models("lava")


def test_content_problems():
    assert content_problem("  ") == "empty"
    assert content_problem("I'm sorry, but I can't help with that.") == "refusal"
    assert content_problem("The image shows a road. " + "and a road " * 100) == "repetition"
    assert content_problem(caption_for("m", b"x")) is None


def test_shards_partition_the_tiles():
    ids = [f"city/r{r}_c{c}" for r in range(0, 4000, 16) for c in range(0, 160, 16)]
    parts = [{t for t in ids if in_shard(t, (i, 3))} for i in range(3)]
    assert set().union(*parts) == set(ids)
    assert sum(len(p) for p in parts) == len(ids)
    assert all(len(p) > len(ids) / 5 for p in parts)


def test_captions_every_tile_with_every_model(tiles, tmp_path, server, cli):
    result = cli("caption", tiles, "--models", "llava,qwen-vl", "--host", server.url, "-o", tmp_path / "cap", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["rows"] == 16
    rows = _rows(tmp_path / "cap")
    tiles_ds = datasets.load_from_disk(str(tiles))
    assert [(r["tile_id"], r["model"]) for r in rows] == [(t, m) for t in tiles_ds["tile_id"] for m in MODELS]
    raw = datasets.load_from_disk(str(tiles)).cast_column("image", datasets.Image(decode=False))
    png = {r["tile_id"]: r["image"]["bytes"] for r in raw}
    for row in rows:
        assert row["error"] is None and row["attempts"] == 1
        assert row["caption"] == caption_for(row["model"], png[row["tile_id"]])  # the model saw this tile's bytes
        assert row["model_digest"] == server.digest(row["model"])
        assert row["prompt_id"] == "urban-v1" and len(row["prompt_sha256"]) == 64
    manifest = json.loads((tmp_path / "cap" / "urbanln.json").read_text())
    assert manifest["models"]["qwen2.5vl:7b"]["digest"] == server.digest("qwen2.5vl:7b")
    assert manifest["prompt"]["id"] == "urban-v1"
    assert manifest["counts"]["captions"] == 16 and manifest["counts"]["failed"] == 0
    request = server.requests[0]
    assert "about 2 metres" in request["prompt"] and "cars" in request["prompt"]  # GSD and what is too small to see
    assert request["stream"] is False and request["n_images"] == 1
    assert request["options"] == {"temperature": 0.2, "seed": 0, "num_predict": 512, "num_ctx": 4096}
    assert request["keep_alive"] == "30m"
    # one model at a time: every llava request comes before every qwen request
    models = [r["model"] for r in server.requests]
    assert models == sorted(models, key=MODELS.index)
    # a finished run does nothing when run again
    before = server.chats
    result = cli("caption", tiles, "--models", "llava,qwen-vl", "--host", server.url, "-o", tmp_path / "cap")
    assert result.exit_code == 0 and "nothing to do" in result.stderr and server.chats == before


def test_preflight_errors(tiles, tmp_path, server, cli):
    from tests.fakes.ports import dead_host

    with dead_host() as dead:
        result = cli("caption", tiles, "--models", "llava", "--host", dead, "-o", tmp_path / "c")
    assert result.exit_code == 4 and result.stdout == ""
    assert "error: no Ollama server answers" in result.stderr and "hint: start it with `ollama serve`" in result.stderr
    result = cli("caption", tiles, "--models", "llava,minicpm-v", "--host", server.url, "-o", tmp_path / "c")
    assert result.exit_code == 4 and "hint: ollama pull minicpm-v:8b" in result.stderr
    result = cli("caption", tiles, "--models", "llama3.2:3b", "--host", server.url, "-o", tmp_path / "c")
    assert result.exit_code == 4 and "cannot see images" in result.stderr
    result = cli("caption", tiles, "--models", "lava", "--host", server.url, "-o", tmp_path / "c")
    assert result.exit_code == 2 and "did you mean 'llava'" in result.stderr
    assert server.chats == 0 and not (tmp_path / "c").exists()


@pytest.mark.parametrize("stream", [False, True])
def test_transient_failures_are_retried(tiles, tmp_path, server, stream):
    faults = ["500", "503", "429", "drop", "error_line", "slow:1.5"]
    server.inject(*faults, model="llava:7b")
    result = caption(_config(tiles, tmp_path / "cap", server, stream=stream, timeout=0.5, concurrency=1))
    rows = _rows(tmp_path / "cap")
    assert result.counts["failed"] == 0 and len(rows) == 16
    # every fault was served and retried; a loaded machine may time out a healthy request too, so at least
    assert not server.faults["llava:7b"] and sum(r["attempts"] - 1 for r in rows) >= len(faults)
    raw = datasets.load_from_disk(str(tiles)).cast_column("image", datasets.Image(decode=False))
    png = {r["tile_id"]: r["image"]["bytes"] for r in raw}
    assert all(r["caption"] == caption_for(r["model"], png[r["tile_id"]]) for r in rows)  # retried, not garbled


def test_retries_run_out_then_retry_failed(tiles, tmp_path, server, cli):
    server.inject(*["500"] * 24, model="qwen2.5vl:7b")  # 8 tiles × 3 attempts
    result = caption(_config(tiles, tmp_path / "cap", server, retries=2, concurrency=1))
    assert result.counts["failed"] == 8 and result.counts["failed_server_error"] == 8
    failed = [r for r in _rows(tmp_path / "cap") if r["error"]]
    assert {r["model"] for r in failed} == {"qwen2.5vl:7b"} and all(r["attempts"] == 3 for r in failed)
    assert "500" in failed[0]["error"]
    before = server.chats
    result = cli(
        "caption", tiles, "--models", "llava,qwen-vl", "--host", server.url, "-o", tmp_path / "cap", "--retry-failed"
    )
    assert result.exit_code == 0, result.stderr
    assert server.chats == before + 8  # only the failed rows
    assert all(r["error"] is None for r in _rows(tmp_path / "cap"))


def test_content_failures_have_their_own_budget(tiles, tmp_path, server):
    server.inject("empty", "repeat", model="llava:7b")  # the first tile: two bad answers, then a good one
    server.inject("refusal", "refusal", "refusal", model="qwen2.5vl:7b")  # the first tile: past the budget
    result = caption(_config(tiles, tmp_path / "cap", server, content_retries=2, concurrency=1, retries=0))
    rows = _rows(tmp_path / "cap")
    llava, qwen = rows[0], rows[1]
    assert llava["error"] is None and llava["attempts"] == 3 and llava["caption"]
    assert qwen["error_class"] == "refusal" and qwen["attempts"] == 3
    assert qwen["caption"].startswith("I'm sorry")  # kept, so fuse can see what was refused
    assert result.counts["failed"] == 1 and result.counts["failed_refusal"] == 1
    seeds = [r["options"]["seed"] for r in server.requests if r["model"] == "qwen2.5vl:7b"][:3]
    assert seeds == [0, 1, 2]  # a new seed on every content retry


def test_model_missing_mid_run_stops_with_exit_4_and_keeps_work(tiles, tmp_path, server, cli):
    server.inject(*["ok"] * 3, "404", model="llava:7b")
    args = (
        "caption",
        tiles,
        "--models",
        "llava,qwen-vl",
        "--host",
        server.url,
        "-o",
        tmp_path / "cap",
        "--concurrency",
        "1",
    )
    result = cli(*args)
    assert result.exit_code == 4 and result.stdout == ""
    assert "disappeared" in result.stderr and "hint: ollama pull llava:7b" in result.stderr
    kept = list(read_records(tmp_path / "cap.partial" / "journal.jsonl"))
    assert len(kept) == 3
    before = server.chats
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["counts"]["reused"] == 3
    assert server.chats == before + 13
    assert not (tmp_path / "cap.partial").exists()


def test_two_hosts_one_dies_mid_run(tiles, tmp_path):
    with FakeOllama(latency=0.02) as a, FakeOllama(latency=0.02) as b:
        b.stop_after(3)
        result = caption(_config(tiles, tmp_path / "cap", a, hosts=(a.url, b.url), concurrency=2, retries=6))
        rows = _rows(tmp_path / "cap")
    assert result.counts["failed"] == 0 and len(rows) == 16
    assert {r["host"] for r in rows if r["model"] == MODELS[1]} == {a.url}  # the second model ran after b died
    assert a.chats > 0 and b.chats > 0


def test_all_hosts_down_stops_resumably(tiles, tmp_path):
    with FakeOllama(latency=0.02) as a:
        a.stop_after(4)
        with pytest.raises(ServiceUnavailable, match="every host failed"):
            caption(_config(tiles, tmp_path / "cap", a, concurrency=1, retries=50))
    assert (tmp_path / "cap.partial" / "journal.jsonl").is_file()
    assert not (tmp_path / "cap").exists()


def test_shards_cover_the_tiles_once(tiles, tmp_path, server):
    outs = [caption(_config(tiles, tmp_path / f"cap{i}", server, shard=(i, 3))).out for i in range(3)]
    seen = [r["tile_id"] for out in outs for r in _rows(out) if r["model"] == MODELS[0]]
    assert sorted(seen) == sorted(datasets.load_from_disk(str(tiles))["tile_id"])


def test_changed_prompt_is_new_work(tiles, tmp_path, server):
    caption(_config(tiles, tmp_path / "cap", server))
    custom = tmp_path / "p.txt"
    custom.write_text("Describe this {gsd} m/px tile.")
    with pytest.raises(OutputExistsError):
        caption(_config(tiles, tmp_path / "cap", server, prompt=custom))
    before = server.chats
    result = caption(_config(tiles, tmp_path / "cap", server, prompt=custom, overwrite=True))
    assert server.chats == before + 16 and result.counts["reused"] == 0
    rows = _rows(tmp_path / "cap")
    assert {r["prompt_id"] for r in rows} == {"file:p.txt"}
    assert server.requests[-1]["prompt"] == "Describe this 2 m/px tile."
    # adding a model reuses what is there
    before = server.chats
    result = caption(
        replace(_config(tiles, tmp_path / "cap", server, prompt=custom, overwrite=True), models=("llava:7b",))
    )
    assert server.chats == before and result.counts["reused"] == 8


def test_secrets_stay_secret(tiles, tmp_path, server, monkeypatch, cli):
    import base64

    monkeypatch.setenv("OLLAMA_API_KEY", "sk-very-secret")
    server.inject("500", model="llava:7b")
    caption(_config(tiles, tmp_path / "cap", server))
    assert server.headers_seen[0].get("authorization") == "Bearer sk-very-secret"  # the server did get the key
    monkeypatch.delenv("OLLAMA_API_KEY")
    for host in (
        server.url.replace("http://", "http://alice:hunter2@"),
        server.url.replace("http://", "alice:hunter2@"),
    ):
        result = cli("caption", tiles, "--models", "llava", "--host", host, "-o", tmp_path / "cap2", "--overwrite")
        assert result.exit_code == 0, result.stderr
        assert server.headers_seen[-1].get("authorization") == "Basic " + base64.b64encode(b"alice:hunter2").decode()
        text = (tmp_path / "cap2" / "urbanln.json").read_text() + json.dumps(_rows(tmp_path / "cap2")) + result.stderr
        for secret in ("sk-very-secret", "hunter2", "alice"):
            assert secret not in text
    text = (tmp_path / "cap" / "urbanln.json").read_text() + json.dumps(_rows(tmp_path / "cap"))
    assert "sk-very-secret" not in text
    result = cli("caption", tiles, "--models", "llava", "--host", "alice:hunter2@127.0.0.1:99999", "-o", tmp_path / "x")
    assert result.exit_code == 2 and "hunter2" not in result.stderr


def test_several_hosts_in_ollama_host(tiles, tmp_path, cli):
    with FakeOllama() as a, FakeOllama() as b:
        result = cli(
            "caption", tiles, "--models", "llava", "-o", tmp_path / "cap", env={"OLLAMA_HOST": f"{a.url} {b.url}"}
        )
        assert result.exit_code == 0, result.stderr
        assert a.chats > 0 and b.chats > 0


def test_same_blob_under_two_tags_gives_two_rows(tiles, tmp_path):
    with FakeOllama({"llava:7b": VISION, "llava:latest": VISION}) as srv:
        srv.digest = lambda model: "sha256:" + "1" * 64  # one blob, two names
        caption(_config(tiles, tmp_path / "cap", srv, models=("llava:7b", "llava:latest")))
    rows = _rows(tmp_path / "cap")
    assert [r["model"] for r in rows[:2]] == ["llava:7b", "llava:latest"] and len(rows) == 16


def test_an_outage_is_redone_not_recorded_as_failures(tiles, tmp_path):
    with FakeOllama(latency=0.01) as srv:
        srv.stop_after(3)
        with pytest.raises(ServiceUnavailable):
            caption(_config(tiles, tmp_path / "cap", srv, retries=0, concurrency=1))
    records = list(read_records(tmp_path / "cap.partial" / "journal.jsonl"))
    assert records and all(r["error"] is None for r in records)
    with FakeOllama(latency=0.01) as srv:
        result = caption(_config(tiles, tmp_path / "cap", srv, retries=0))
    assert result.counts["failed"] == 0 and result.counts["reused"] == len(records)


def test_journal_survives_a_torn_line(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    journal.append({"tile_id": "a"})
    journal.close()
    with open(path, "ab") as f:
        f.write(b'{"tile_id": "b", "capt')  # kill -9 mid-write
    assert [r["tile_id"] for r in read_records(path)] == ["a"]
    journal = Journal(path)
    journal.append({"tile_id": "c"})
    journal.close()
    assert [r["tile_id"] for r in read_records(path)] == ["a", "c"]


def _stable(rows):
    return sorted(
        (r["tile_id"], r["model"], r["caption"], r["model_digest"], r["prompt_sha256"], r["error"]) for r in rows
    )


def test_kill_9_and_rerun_equals_an_uninterrupted_run(tmp_path):
    folder = tmp_path / "in"
    make_geotiff(folder / "city.tif", width=128, height=64, res=2.0)
    tiles_out = tile(
        TileConfig(inputs=(folder / "city.tif",), out=tmp_path / "tiles", size=16, workers=1)
    ).out  # 32 tiles
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.ollama_server", "--latency", "0.05", "--slots", "2"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    try:
        url = server.stdout.readline().strip()
        cmd = [
            sys.executable,
            "-m",
            "urbanln_cli",
            "caption",
            str(tiles_out),
            "--models",
            "llava,qwen-vl",
            "--host",
            url,
            "--concurrency",
            "2",
        ]
        env = {**os.environ, "NO_COLOR": "1"}
        victim = subprocess.Popen(
            [*cmd, "-o", str(tmp_path / "cap")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        journal = tmp_path / "cap.partial" / "journal.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(read_records(journal))) < 20:
            time.sleep(0.02)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        done_before = len(list(read_records(journal)))
        assert 20 <= done_before < 64
        rerun = subprocess.run([*cmd, "-o", str(tmp_path / "cap"), "--json"], env=env, capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stderr
        assert json.loads(rerun.stdout)["counts"]["reused"] == done_before
        clean = subprocess.run([*cmd, "-o", str(tmp_path / "clean")], env=env, capture_output=True, text=True)
        assert clean.returncode == 0, clean.stderr
    finally:
        server.kill()
        server.wait()
    resumed, uninterrupted = _rows(tmp_path / "cap"), _rows(tmp_path / "clean")
    assert len(resumed) == 64 and len({(r["tile_id"], r["model"]) for r in resumed}) == 64
    assert _stable(resumed) == _stable(uninterrupted)


@pytest.mark.ollama
@pytest.mark.skipif(not os.environ.get("OLLAMA_HOST"), reason="needs a real Ollama server in OLLAMA_HOST")
def test_against_a_real_server(tiles, tmp_path, cli):
    model = os.environ.get("URBANLN_TEST_MODEL", "llava")
    result = cli("caption", tiles, "--models", model, "--limit", "2", "-o", tmp_path / "cap", "--json")
    assert result.exit_code == 0, result.stderr
    rows = _rows(tmp_path / "cap")
    assert len(rows) == 2 and all(r["caption"] and r["error"] is None for r in rows)


@pytest.mark.parametrize(
    "bad", [{"limit": 0}, {"limit": -1}, {"timeout": float("nan")}, {"concurrency": 0}, {"shard": (3, 3)}]
)
def test_bad_options_are_usage_errors(tiles, tmp_path, bad):
    with pytest.raises(UsageProblem):
        CaptionConfig(tiles=tiles, out=tmp_path / "c", **bad).check()
