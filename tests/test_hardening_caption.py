"""Hardening of caption and fuse (issue 11): bad --host values, dead hosts, unrelated tiles, damaged manifests,
object reprs in what is recorded, and a full disk while the journals are written."""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import datasets
import pytest

from tests.fakes.captions import caption_row, write_captions
from tests.fakes.ollama_server import FakeOllama, caption_for
from tests.fakes.ports import dead_host
from tests.fakes.rasters import make_geotiff
from urbanln_cli import artifacts
from urbanln_cli import journal as journal_module
from urbanln_cli.captioners import GenerationOptions, Reply
from urbanln_cli.captioners.ollama import host_problem
from urbanln_cli.captioners.runner import Request, RetryPolicy, run_requests
from urbanln_cli.journal import Journal, read_records
from urbanln_cli.redact import plain_error
from urbanln_cli.stages.caption import CaptionConfig, caption
from urbanln_cli.stages.tile import TileConfig, tile

MODELS = "llava,qwen-vl"
N_TILES = 4


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    """Four 32 px tiles at 2 m/px, a raster to label them with, and their image bytes by id."""
    folder = tmp_path_factory.mktemp("tiles")
    make_geotiff(folder / "city.tif", width=64, height=64, res=2.0)
    out = tile(TileConfig(inputs=(folder / "city.tif",), out=folder / "tiles", size=32, workers=1)).out
    raw = (
        datasets.load_from_disk(str(out))
        .select_columns(["tile_id", "image"])
        .cast_column("image", datasets.Image(decode=False))
    )
    images = {r["tile_id"]: r["image"]["bytes"] for r in raw}
    assert len(images) == N_TILES
    return out, folder / "city.tif", images


@pytest.fixture
def server():
    with FakeOllama() as srv:
        yield srv


def _failed_cleanly(result, code: int) -> str:
    """One error line and one hint line on stderr, nothing on stdout, no traceback; the stderr text."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert sum(line.startswith("error: ") for line in lines) == 1, result.stderr
    assert sum(line.startswith("hint: ") for line in lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def _panel(path: Path, images: dict[str, bytes], ids=None) -> Path:
    """A captions artifact with two models' captions of ``ids`` (default: every tile)."""
    ids = list(images) if ids is None else ids
    rows = [
        caption_row(t, m, caption_for(m, images.get(t, t.encode()))) for t in ids for m in ("llava:7b", "qwen2.5vl:7b")
    ]
    return write_captions(path, rows)


def _edit_manifest(artifact: Path, change) -> None:
    path = artifact / artifacts.MANIFEST_NAME
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _no_object_reprs(*folders: Path) -> None:
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and path.suffix in (".json", ".arrow", ".jsonl"):
                assert b"object at 0x" not in path.read_bytes(), path


# ---------------------------------------------------------------- 1. --host must be an http(s) URL


@pytest.mark.parametrize(
    "host, why",
    [
        ("", "it is empty"),
        ("ftp://gpu-box:11434", "ftp:// is not http:// or https://"),
        ("not a url", "contains spaces"),
        ("http://user:s3cret@:11434", "names no host"),
        ("http://gpu-box:99999", "port is not a number"),
    ],
)
def test_a_host_that_is_not_a_url_is_a_usage_error_before_any_work(tmp_path, cli, host, why):
    # the tiles do not exist: the host is refused first (exit 2, not 3), and nothing is made
    result = cli("caption", tmp_path / "no-tiles", "--models", MODELS, "--host", host, "-o", tmp_path / "cap")
    err = _failed_cleanly(result, 2)
    assert "is not an Ollama server URL" in err and why in err and "hint: e.g. --host http://" in err
    assert "s3cret" not in err
    result = cli("caption", "--list-models", "--host", host)
    assert "s3cret" not in _failed_cleanly(result, 2)
    result = cli("fuse", tmp_path / "no-captions", "--check", "vlm", "--host", host, "-o", tmp_path / "corpus")
    assert why in _failed_cleanly(result, 2)
    result = cli("fuse", tmp_path / "no-captions", "--refine", "llava", "--host", host, "-o", tmp_path / "corpus")
    assert why in _failed_cleanly(result, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_host_check_names_ollama_host_when_it_came_from_there(tmp_path, cli):
    result = cli(
        "caption",
        tmp_path / "no-tiles",
        "--models",
        MODELS,
        "-o",
        tmp_path / "cap",
        env={"OLLAMA_HOST": "ftp://u:pw@gpu-box"},
    )
    err = _failed_cleanly(result, 2)
    assert "error: OLLAMA_HOST 'ftp://gpu-box' is not an Ollama server URL" in err and "pw" not in err


def test_hosts_ollama_accepts_stay_accepted():
    for host in (
        "http://127.0.0.1:11434",
        "https://gpu-box",
        "gpu-box:11434",
        "10.0.0.7",
        "http://[::1]:11434",
        "[::1]",
        "https://user:p@ss@gpu-box:443/ollama",
        "HTTP://Gpu-Box.lan:8080/",
    ):
        assert host_problem(host) is None, host


def test_fuse_without_ollama_steps_ignores_the_host(tiles, tmp_path, cli):
    tiles_path, _, images = tiles
    # a stray OLLAMA_HOST does not stop a fuse that asks no VLM
    result = cli(
        "fuse",
        _panel(tmp_path / "captions", images),
        "--tiles",
        tiles_path,
        "-o",
        tmp_path / "corpus",
        env={"OLLAMA_HOST": "not a url"},
    )
    assert result.exit_code == 0, result.stderr


def test_credentials_in_a_host_url_still_work_and_are_never_shown(tiles, tmp_path, cli, server):
    tiles_path, _, _ = tiles
    host = server.url.replace("http://", "http://user:s3cret@")
    result = cli("caption", tiles_path, "--models", MODELS, "--host", host, "-o", tmp_path / "cap", "--limit", "1")
    assert result.exit_code == 0, result.stderr
    assert "s3cret" not in result.stderr + result.stdout
    assert "s3cret" not in (tmp_path / "cap" / artifacts.MANIFEST_NAME).read_text()
    assert server.headers_seen and all(h.get("authorization", "").startswith("Basic ") for h in server.headers_seen)
    result = cli("caption", "--list-models", "--host", host)
    assert result.exit_code == 0 and "s3cret" not in result.stdout + result.stderr


# ---------------------------------------------------------------- 2. --list-models against a dead host


def test_list_models_against_a_dead_host_exits_4(cli):
    with dead_host() as dead:
        err = _failed_cleanly(cli("caption", "--list-models", "--host", dead), 4)
        assert f"error: no Ollama server answers at {dead}" in err and "ollama serve" in err and "--host" in err
        _failed_cleanly(cli("caption", "--list-models", "--host", dead, "--json"), 4)


def test_list_models_with_one_host_down_names_it(cli, server):
    with dead_host() as dead:
        err = _failed_cleanly(cli("caption", "--list-models", "--host", server.url, "--host", dead), 4)
    assert dead in err


def test_list_models_lists_a_live_host(cli, server):
    result = cli("caption", "--list-models", "--host", server.url)
    assert result.exit_code == 0, result.stderr
    assert "llava:7b" in result.stdout and "pulled" in result.stdout
    listing = json.loads(cli("caption", "--list-models", "--host", server.url, "--json").stdout)
    assert "llava:7b" in listing["hosts"][server.url]


class _NotOllama:
    """A loopback HTTP server that is not Ollama: /api/tags answers ``status`` with ``body``."""

    def __init__(self, status: int, body: bytes):
        status_, body_ = status, body

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(status_)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body_)))
                self.end_headers()
                self.wfile.write(body_)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(
    "status, body, said",
    [
        (404, b'{"error": "no such page"}', "answered /api/tags with 404"),
        (200, b'{"models": 5}', "did not answer /api/tags as an Ollama server does"),
    ],
)
def test_a_server_that_is_not_ollama_exits_4(cli, tiles, tmp_path, status, body, said):
    with _NotOllama(status, body) as other:
        assert said in _failed_cleanly(cli("caption", "--list-models", "--host", other.url), 4)
        assert said in _failed_cleanly(
            cli("caption", tiles[0], "--models", MODELS, "--host", other.url, "-o", tmp_path / "c"), 4
        )


# ---------------------------------------------------------------- 3. fuse --tiles that are not the captions' tiles


def test_fuse_refuses_tiles_the_captions_were_not_made_from(tiles, tmp_path, cli):
    tiles_path, _, images = tiles
    captions = _panel(tmp_path / "captions", images, ids=[f"elsewhere/r{i}_c0" for i in range(5)])
    err = _failed_cleanly(cli("fuse", captions, "--tiles", tiles_path, "-o", tmp_path / "corpus"), 3)
    assert f"none of the 5 captioned tiles is in {tiles_path}" in err and "'elsewhere/r0_c0'" in err
    assert "hint: pass with --tiles the tiles the captions were made from" in err
    assert not (tmp_path / "corpus").exists()


def test_fuse_refuses_tiles_that_lack_most_captioned_tiles(tiles, tmp_path, cli):
    tiles_path, _, images = tiles
    ids = list(images)[:1] + [f"elsewhere/r{i}_c0" for i in range(3)]
    err = _failed_cleanly(
        cli("fuse", _panel(tmp_path / "captions", images, ids=ids), "--tiles", tiles_path, "-o", tmp_path / "corpus"), 3
    )
    assert "3 of the 4 captioned tiles are not in" in err and "'elsewhere/r0_c0'" in err


def test_fuse_warns_when_a_few_captioned_tiles_are_missing(tiles, tmp_path, cli):
    tiles_path, _, images = tiles
    captions = _panel(tmp_path / "captions", images, ids=[*images, "elsewhere/r0_c0"])
    result = cli("fuse", captions, "--tiles", tiles_path, "-o", tmp_path / "corpus", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["counts"]["not_in_tiles"] == 1
    assert "warning: 1 captioned tile is not in" in result.stderr and "GSD is unknown" in result.stderr
    result = cli("fuse", captions, "--tiles", tiles_path, "-o", tmp_path / "corpus2", "--gsd", "2")
    assert result.exit_code == 0 and "they take --gsd 2.0" in result.stderr


# ---------------------------------------------------------------- 4. no object reprs in what is recorded


def test_an_unreadable_tile_image_is_recorded_in_words(tiles, tmp_path, server):
    tiles_path, _, _ = tiles
    ds = datasets.load_from_disk(str(tiles_path)).cast_column("image", datasets.Image(decode=False))
    broken_id = ds[0]["tile_id"]
    ds = ds.map(
        lambda row: {
            "image": {"bytes": b"not an image" if row["tile_id"] == broken_id else row["image"]["bytes"], "path": None},
            "image_sha256": "x" + row["image_sha256"],
        }
    )
    bad_tiles = artifacts.write_dataset(
        ds, tmp_path / "tiles", artifacts.new_manifest("tiles", run=artifacts.RunInfo("t"), inputs=[], rows=len(ds))
    )
    result = caption(
        CaptionConfig(
            tiles=bad_tiles, out=tmp_path / "cap", models=("llava:7b",), hosts=(server.url,), timeout=5, backoff=0.01
        )
    )
    assert result.counts["failed"] == 1 and result.counts["failed_bad_image"] == 1
    row = next(r for r in datasets.load_from_disk(str(tmp_path / "cap")).to_list() if r["tile_id"] == broken_id)
    assert row["error"] == "cannot read the tile's image: not an image file PIL can read (PNG, JPEG, TIFF, WebP, …)"
    _no_object_reprs(tmp_path / "cap")


def test_plain_error_drops_object_reprs():
    assert plain_error(ValueError("bad <_io.BytesIO object at 0x7f00ab12> here")) == "bad <BytesIO> here"
    assert plain_error(ValueError("http://u:pw@host failed")) == "http://host failed"


# ---------------------------------------------------------------- 5. damaged manifests: exit 3, never a traceback


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize(
    "change, said",
    [
        (lambda m: m.update(params="resize"), "'params' is"),  # the top level: artifacts.read_manifest
        (lambda m: m["params"].update(resize=[256]), "'params.resize' is an array, not an object"),
        (
            lambda m: m["params"].update(resize={"value": "256"}),
            "'params.resize.value' is a string, not a whole number",
        ),
        (lambda m: m["params"].update(resize={"value": 0}), "not a positive number of pixels"),
        (lambda m: m.update(artifact_id=5), "'artifact_id' is a number, not a string"),
    ],
)
def test_label_with_a_damaged_tiles_manifest_exits_3(tiles, tmp_path, cli, change, said):
    tiles_path, raster, _ = tiles
    damaged = _copy(tiles_path, tmp_path / "tiles")
    _edit_manifest(damaged, change)
    err = _failed_cleanly(cli("label", damaged, "--raster", f"value={raster}:mean", "-o", tmp_path / "labels"), 3)
    assert str(damaged / artifacts.MANIFEST_NAME) in err and said in err
    assert not (tmp_path / "labels").exists()


def test_label_with_a_missing_tiles_column_exits_3(tiles, tmp_path, cli):
    tiles_path, raster, _ = tiles
    ds = datasets.load_from_disk(str(tiles_path)).remove_columns(["gsd"])
    damaged = artifacts.write_dataset(
        ds, tmp_path / "tiles", artifacts.new_manifest("tiles", run=artifacts.RunInfo("t"), inputs=[], rows=len(ds))
    )
    err = _failed_cleanly(cli("label", damaged, "--raster", f"value={raster}:mean", "-o", tmp_path / "labels"), 3)
    assert "lacks the column gsd" in err
    err = _failed_cleanly(
        cli("fuse", _panel(tmp_path / "captions", tiles[2]), "--tiles", damaged, "-o", tmp_path / "corpus"), 3
    )
    assert "lacks the column gsd" in err


def test_caption_with_damaged_manifests_exits_3(tiles, tmp_path, cli, server):
    tiles_path, _, _ = tiles
    args = ("--models", MODELS, "--host", server.url, "-o", tmp_path / "cap")
    damaged = _copy(tiles_path, tmp_path / "tiles")
    _edit_manifest(damaged, lambda m: m.update(artifact_id=["x"]))
    err = _failed_cleanly(cli("caption", damaged, *args), 3)
    assert "'artifact_id' is an array, not a string" in err and str(damaged) in err
    assert cli("caption", tiles_path, *args).exit_code == 0
    chats = server.chats
    for change, said in [
        (lambda m: m.update(rows="8"), "'rows' is a string, not a whole number"),
        (lambda m: m["counts"].update(failed=[]), "'counts.failed' is an array"),
        (lambda m: m.update(plan_sha256={}), "'plan_sha256' is an object"),
    ]:
        saved = (tmp_path / "cap" / artifacts.MANIFEST_NAME).read_bytes()
        _edit_manifest(tmp_path / "cap", change)
        err = _failed_cleanly(cli("caption", tiles_path, *args, "--retry-failed"), 3)
        assert (
            said in err and str(tmp_path / "cap" / artifacts.MANIFEST_NAME) in err and "hint: pass --overwrite" in err
        )
        (tmp_path / "cap" / artifacts.MANIFEST_NAME).write_bytes(saved)
    _edit_manifest(tmp_path / "cap", lambda m: m.update(rows="8"))
    result = cli("caption", tiles_path, *args, "--overwrite", "--json")  # replaced, reusing every caption in it
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["counts"]["reused"] == 2 * N_TILES
    assert server.chats == chats


def test_caption_sim_with_a_scene_that_is_not_one_exits_3(tiles, tmp_path, cli):
    tiles_path, _, _ = tiles
    (tmp_path / "scene.json").write_text('{"crs": "EPSG:32633", "transform": 5}')
    err = _failed_cleanly(
        cli(
            "caption", tiles_path, "--models", "sim:precise", "--scene", tmp_path / "scene.json", "-o", tmp_path / "cap"
        ),
        3,
    )
    assert "is not a scene of `urbanln synth city`" in err


@pytest.mark.parametrize(
    "target, change, said",
    [
        ("captions", lambda m: m.update(inputs=[5]), "'inputs[0]' is a number, not an object"),
        ("captions", lambda m: m.update(artifact_id=[1]), "'artifact_id' is an array"),
        ("tiles", lambda m: m.update(artifact_id={"a": 1}), "'artifact_id' is an object"),
    ],
)
def test_fuse_with_damaged_manifests_exits_3(tiles, tmp_path, cli, target, change, said):
    tiles_path, _, images = tiles
    inputs = {"captions": _panel(tmp_path / "captions", images), "tiles": _copy(tiles_path, tmp_path / "tiles")}
    _edit_manifest(inputs[target], change)
    err = _failed_cleanly(cli("fuse", inputs["captions"], "--tiles", inputs["tiles"], "-o", tmp_path / "corpus"), 3)
    assert said in err and str(inputs[target] / artifacts.MANIFEST_NAME) in err
    assert not (tmp_path / "corpus").exists()


def test_caption_and_fuse_need_the_image_column(tiles, tmp_path, cli, server):
    tiles_path, _, images = tiles
    ds = datasets.load_from_disk(str(tiles_path)).remove_columns(["image"])
    no_images = artifacts.write_dataset(
        ds, tmp_path / "tiles", artifacts.new_manifest("tiles", run=artifacts.RunInfo("t"), inputs=[], rows=len(ds))
    )
    captions = _panel(tmp_path / "captions", images)
    err = _failed_cleanly(
        cli("fuse", captions, "--tiles", no_images, "--refine", "llava", "--host", server.url, "-o", tmp_path / "c2"), 3
    )
    assert "lacks the column image" in err
    err = _failed_cleanly(
        cli("caption", no_images, "--models", MODELS, "--host", server.url, "-o", tmp_path / "cap"), 3
    )
    assert "lacks the column image" in err and server.chats == 0


# ---------------------------------------------------------------- 6. a full disk while journaling


class _DiskFillsUp:
    """Stands in for the journal module's ``os``: the first ``free_writes`` writes succeed whatever their size, the
    next ones until ``budget`` more bytes; then one short write (a line cut in the middle), then ENOSPC."""

    def __init__(self, budget: int, free_writes: int = 0):
        self.budget, self.free_writes = budget, free_writes
        self.failed = 0

    def __getattr__(self, name):
        return getattr(os, name)

    def write(self, fd, data):
        if self.free_writes > 0:
            self.free_writes -= 1
            return os.write(fd, data)
        if self.budget <= 0:
            self.failed += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = min(len(data), self.budget)
        self.budget -= n
        return os.write(fd, bytes(data[:n]))


def _line(i: int) -> bytes:
    return json.dumps({"i": i, "text": "x" * 40}, separators=(",", ":")).encode() + b"\n"


def test_a_full_disk_stops_the_journal_and_keeps_it_whole(tmp_path, monkeypatch):
    path = tmp_path / "j.jsonl"
    first = Journal(path)
    for i in range(2):
        first.append(json.loads(_line(i)))
    first.close()
    kept = path.read_bytes()
    disk = _DiskFillsUp(budget=len(_line(2)) // 2)  # the next line is cut in the middle, then the disk is full
    monkeypatch.setattr(journal_module, "os", disk)
    second = Journal(path)
    second.append(json.loads(_line(2)))
    with pytest.raises(OSError) as caught:
        second.close()
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert path.read_bytes() == kept  # the half-written line was cut off again: no torn record
    with pytest.raises(OSError):
        second.append({"i": 3})  # a journal that failed takes nothing more
    assert disk.failed == 1
    monkeypatch.undo()
    third = Journal(path)  # once there is space again, it resumes after the records it kept
    third.append(json.loads(_line(2)))
    third.close()
    assert [r["i"] for r in read_records(path)] == [0, 1, 2]


class _Backend:
    hosts = ["h"]

    def __init__(self):
        self.requests = 0

    async def caption(self, host, model, image, prompt, options, tile, format=None):
        self.requests += 1
        return Reply(f"reply {self.requests}")


def test_an_oserror_in_finish_stops_the_requests_and_is_not_a_failed_row():
    import asyncio

    backend, finished = _Backend(), []

    def finish(item, outcome):
        if len(finished) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", "journal.jsonl")
        finished.append((item, outcome.error))

    with pytest.raises(OSError) as caught:
        asyncio.run(
            run_requests(
                backend,
                "m",
                list(range(10)),
                lambda i: Request(lambda: b"png", "prompt"),
                finish,
                policy=RetryPolicy(1, 2, 0, 0.0),
                options=GenerationOptions(),
                content_problem=lambda t: None,
            )
        )
    assert caught.value.errno == errno.ENOSPC
    assert backend.requests == 4  # stopped at once: not retried, nothing more asked
    assert all(error is None for _, error in finished)


def _journal_after_a_full_disk(path: Path) -> list[dict]:
    assert path.read_bytes().endswith(b"\n")  # whole lines only
    records = list(read_records(path))
    assert records and len(records) == len(path.read_bytes().splitlines())
    assert all(r["error"] is None for r in records)  # the disk failure is no failed answer
    return records


def test_caption_on_a_full_disk_exits_1_and_a_rerun_asks_only_the_rest(tiles, tmp_path, cli, server, monkeypatch):
    tiles_path, _, _ = tiles
    args = (
        "caption",
        tiles_path,
        "--models",
        MODELS,
        "--host",
        server.url,
        "-o",
        tmp_path / "cap",
        "--concurrency",
        "1",
    )
    journal = artifacts.partial_dir(tmp_path / "cap") / "journal.jsonl"
    monkeypatch.setattr(
        journal_module, "os", _DiskFillsUp(budget=1500, free_writes=1)
    )  # room for a few of the 8 records
    err = _failed_cleanly(cli(*args), 1)
    assert "No space left on device" in err and "journal.jsonl" in err
    monkeypatch.undo()
    assert not (tmp_path / "cap").exists()
    kept = len(_journal_after_a_full_disk(journal))
    before = server.chats
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["counts"]["reused"] == kept
    assert server.chats - before == 2 * N_TILES - kept
    rows = datasets.load_from_disk(str(tmp_path / "cap")).to_list()
    assert len(rows) == 2 * N_TILES and all(r["error"] is None for r in rows)
    assert not journal.parent.exists()


def test_fuse_on_a_full_disk_exits_1_and_a_rerun_asks_only_the_rest(tiles, tmp_path, cli, server, monkeypatch):
    tiles_path, _, images = tiles
    captions = _panel(tmp_path / "captions", images)
    journal = artifacts.partial_dir(tmp_path / "corpus") / "vlm.jsonl"
    args = (
        "fuse",
        captions,
        "--tiles",
        tiles_path,
        "--refine",
        "llava",
        "--concurrency",
        "1",
        "--host",
        server.url,
        "-o",
        tmp_path / "corpus",
    )
    monkeypatch.setattr(
        journal_module, "os", _DiskFillsUp(budget=1500, free_writes=1)
    )  # room for a few of the 24 answers
    err = _failed_cleanly(cli(*args), 1)
    monkeypatch.undo()
    assert "No space left on device" in err and "vlm.jsonl" in err
    assert not (tmp_path / "corpus").exists()
    kept = len(_journal_after_a_full_disk(journal))
    before = server.chats
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    assert server.chats - before == 6 * N_TILES - kept  # 4 quadrants + 2 rewrites per tile, minus what was journaled
    _no_object_reprs(tmp_path / "corpus")
