"""Issue 11, imagery: size limits on every decode path, absurd sizes, workers that die with
their parent, NaN pixels, a.png beside a.jpg, and lon/lat of a world raster's edge windows."""

import io
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from tests.fakes.rasters import make_geotiff
from urbanln_cli import artifacts, imagery
from urbanln_cli.stages.tile import TileConfig, tile


def _load(out):
    ds = datasets.load_from_disk(str(out)).cast_column("image", datasets.Image(decode=False))
    return {r["tile_id"]: r for r in ds}


def _one_error(result, code):
    """The error contract: exit code, one error: line, one hint: line, no traceback, clean stdout."""
    assert result.exit_code == code, (result.exit_code, result.stderr)
    lines = result.stderr.splitlines()
    assert sum(line.startswith("error: ") for line in lines) == 1, result.stderr
    assert sum(line.startswith("hint: ") for line in lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "DecompressionBomb" not in result.stderr
    assert result.stdout == ""
    return result.stderr


# ---------------------------------------------------------------- workers die with their parent


def _children(pid):
    """{pid: cmdline} of the live (not zombie) processes whose parent is ``pid``."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, ...
        if int(fields[1]) == pid and fields[0] != "Z":
            out[int(entry.name)] = cmdline
    return out


def _alive(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"  # a zombie has exited (its new parent may never reap it)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_tile_workers_die_when_the_parent_is_killed(tmp_path):
    make_geotiff(
        tmp_path / "big.tif", width=2048, height=2048
    )  # 65536 tiles of 8 px: far more than the workers do before the kill
    out = tmp_path / "tiles"
    log = open(tmp_path / "stderr.txt", "wb")
    workers, others = {}, {}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "urbanln_cli",
            "tile",
            str(tmp_path / "big.tif"),
            "--size",
            "8",
            "--min-valid",
            "0",
            "--workers",
            "2",
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            children = _children(proc.pid)
            workers = {p: c for p, c in children.items() if "spawn_main" in c}
            others = {p: c for p, c in children.items() if "spawn_main" not in c}  # the resource tracker
            rendering = any(artifacts.partial_dir(out).glob("shard-*"))  # a worker has started a shard
            if len(workers) == 2 and rendering:
                break
            assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
            time.sleep(0.05)
        else:
            pytest.fail(f"the workers never started: {(tmp_path / 'stderr.txt').read_text()}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(_alive(p) for p in {**workers, **others}):
            time.sleep(0.1)
        left = {p: c for p, c in {**workers, **others}.items() if _alive(p)}
        assert not left, f"still running after the parent was killed: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in {
            **workers,
            **others,
            **_children(proc.pid),
        }:  # whatever outlived the test (only ours: spawned by proc)
            try:
                if _alive(pid) and b"multiprocessing" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        log.close()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_the_portable_fallback_also_ends_an_orphaned_worker(tmp_path):
    """Where prctl is missing, a thread notices the new parent: run a child that takes that path."""
    ready = tmp_path / "ready"
    child = (
        "import os, sys, time; sys.platform = 'darwin'\n"
        "from urbanln_cli.stages.tile import _die_with_parent\n"
        f"_die_with_parent(os.getppid()); open({str(ready)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    )
    parent = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(600)"
    proc = subprocess.Popen([sys.executable, "-c", parent])
    pid = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (ready.exists() and ready.read_text()):
            assert proc.poll() is None
            time.sleep(0.05)
        pid = int(ready.read_text())  # the child is up and watching its parent
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        assert not _alive(pid)
    finally:
        proc.kill()
        proc.wait()
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------- size limits


def _png_header(width, height):
    """A PNG whose header says width×height: a few dozen bytes, like a decompression bomb (never decodable)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def _picture(path, width, height, seed=0):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(1, 255, size=(height, width, 3), dtype=np.uint8)).save(path)
    return path


class _NoBombWarnings:
    """Records warnings (pytest would hide them from stderr) and fails on Pillow's bomb warning."""

    def __enter__(self):
        self._cm = warnings.catch_warnings(record=True)
        self.caught = self._cm.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)
        bombs = [w for w in self.caught if issubclass(w.category, Image.DecompressionBombWarning)]
        assert not bombs, [str(w.message) for w in bombs]


def test_open_image_reads_the_size_from_the_header_only():
    with _NoBombWarnings():
        for width, height in [(20000, 20000), (10000, 9500)]:  # past Pillow's error, and between its warning and error
            with pytest.raises(imagery.ImageTooLarge, match=f"{width}×{height} px"):
                with imagery.open_image(_png_header(width, height), what="x"):
                    pass
        with imagery.open_image(
            _png_header(10000, 9500), max_pixels=100_000_000
        ) as img:  # a raised limit: opened, not decoded
            assert img.size == (10000, 9500)
        with pytest.raises(imagery.ImageTooLarge):  # a bomb Pillow finds while decoding (a GIF frame, a TIFF tile)
            with imagery.open_image(_png_header(64, 64)):
                raise Image.DecompressionBombError("frame too large")
    assert issubclass(imagery.ImageTooLarge, ValueError)  # treated like an undecodable image by every reader
    from urbanln_cli.captioners import fit_image
    from urbanln_cli.image_check import quadrant_crops

    with pytest.raises(imagery.ImageTooLarge):
        fit_image(_png_header(20000, 20000), 512)
    with pytest.raises(imagery.ImageTooLarge):
        quadrant_crops(_png_header(20000, 20000), 256)
    assert imagery.max_pixels_of({"max_pixels": 400_000_000}) == 400_000_000
    assert imagery.max_pixels_of({"max_pixels": 10}) == imagery.DEFAULT_MAX_PIXELS  # never below the default
    assert imagery.max_pixels_of({"max_pixels": "lots"}) == imagery.DEFAULT_MAX_PIXELS
    assert imagery.max_pixels_of(None) == imagery.DEFAULT_MAX_PIXELS


def test_oversize_folder_images_are_skipped_counted_and_named(tmp_path, cli):
    import rasterio

    folder = tmp_path / "photos"
    _picture(folder / "ok.png", 64, 64)
    (folder / "bomb.png").write_bytes(_png_header(20000, 20000))
    (folder / "big.png").write_bytes(_png_header(10000, 9500))
    with warnings.catch_warnings():  # rasterio warns that the TIFF has no georeferencing, as intended
        warnings.simplefilter("ignore")
        with rasterio.open(
            folder / "huge.tif",
            "w",
            driver="GTiff",
            width=20000,
            height=20000,
            count=1,
            dtype="uint8",
            tiled=True,
            sparse_ok=True,
        ):  # 400 Mpx, a few KB on disk, never written
            pass
    with _NoBombWarnings():
        result = cli("tile", folder, "-o", tmp_path / "tiles", "--json")
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr and "DecompressionBomb" not in result.stderr
    summary = json.loads(result.stdout)
    assert summary["counts"] == {"skipped_oversize": 3, "tiles": 1}
    warned = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    for name in ("bomb.png", "big.png", "huge.tif"):
        assert sum(name in line and "over the limit" in line for line in warned) == 1, result.stderr
    manifest = json.loads((tmp_path / "tiles" / "urbanln.json").read_text())
    assert manifest["counts"]["skipped_oversize"] == 3 and manifest["max_pixels"] == imagery.DEFAULT_MAX_PIXELS
    assert list(_load(tmp_path / "tiles")) == ["photos/ok"]


def test_max_pixels_raises_or_lowers_the_limit(tmp_path, cli):
    import inspect

    from urbanln_cli.commands import tile as tile_command

    assert inspect.signature(tile_command.tile).parameters["max_pixels"].default == imagery.DEFAULT_MAX_PIXELS
    folder = tmp_path / "photos"
    _picture(folder / "wide.png", 200, 100)
    _picture(folder / "small.png", 50, 50)
    result = cli(
        "tile", folder, "-o", tmp_path / "a", "--max-pixels", "10000", "--size", "64", "--json"
    )  # --size² must fit too
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["counts"] == {"skipped_oversize": 1, "tiles": 1}
    assert "wide.png is 200×100 px" in result.stderr
    result = cli("tile", folder, "-o", tmp_path / "b", "--max-pixels", "20000", "--size", "128", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["counts"] == {"tiles": 2}
    assert json.loads((tmp_path / "b" / "urbanln.json").read_text())["max_pixels"] == 20000
    # nothing left: an input error that says how to keep them
    stderr = _one_error(
        cli("tile", folder / "wide.png", "-o", tmp_path / "c", "--max-pixels", "10000", "--size", "64"), 3
    )
    assert "1 skipped oversize" in stderr and "--max-pixels" in stderr.splitlines()[-1]
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--size", "100000000"], "--size 100000000 makes tiles of 10,000,000,000,000,000 pixels"),
        (["--size", "10000"], "over the limit of 89,478,485"),
        (["--resize", "20000"], "--resize 20000"),
        (["--max-pixels", "0"], "--max-pixels 0 must be"),
        (["--max-pixels", "-5"], "--max-pixels -5 must be"),
        (["--max-pixels", "99999999999999999999"], "between 1 and"),
        (["--size", "4096", "--max-pixels", "1000000"], "over the limit of 1,000,000"),
    ],
)
def test_absurd_sizes_are_usage_errors_before_any_work(tmp_path, cli, args, message):
    make_geotiff(tmp_path / "city.tif", width=64, height=64)
    stderr = _one_error(cli("tile", tmp_path / "city.tif", "-o", tmp_path / "tiles", *args), 2)
    assert message in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["city.tif"]  # no output, no .partial


def test_windows_outside_the_projection_domain_get_nan_not_a_traceback(tmp_path, cli):
    from urbanln_cli import geo

    # UTM coordinates a million times too large: no point of the raster can be reprojected
    make_geotiff(tmp_path / "far.tif", width=64, height=64, origin=(1e12, 1e12))
    result = cli("tile", tmp_path / "far.tif", "--size", "32", "-o", tmp_path / "tiles")
    assert result.exit_code == 0, result.stderr
    rows = _load(tmp_path / "tiles").values()
    assert len(rows) == 4 and all(np.isnan(r["lon"]) and np.isnan(r["lat"]) and np.isnan(r["gsd"]) for r in rows)
    # one window off the domain spoils only its own centre
    centres, gsds = geo.window_centres_and_gsd(
        "EPSG:32633", (2.0, 0, 500_000.0, 0, -2.0, 5_000_000.0), [(0, 0), (0, 10**12), (0, 64)], 32
    )
    assert np.isnan(centres[1]).all() and np.isnan(gsds[1])
    assert all(np.isfinite(centres[i]).all() and gsds[i] == pytest.approx(2.0, rel=1e-2) for i in (0, 2))


# ---------------------------------------------------------------- oversize tiles in a tiles artifact


@pytest.fixture(scope="module")
def bomb_tiles(tmp_path_factory):
    """Four 32 px tiles, two of them replaced by header-only PNGs: 20000² (Pillow's error range), 10000×9500 (its
    warning range)."""
    import hashlib

    from urbanln_cli.stages.tile import tile_features

    folder = tmp_path_factory.mktemp("bombs")
    make_geotiff(folder / "city.tif", width=64, height=64, res=2.0)
    good = tile(TileConfig(inputs=(folder / "city.tif",), out=folder / "good", size=32, workers=1)).out
    rows = datasets.load_from_disk(str(good)).cast_column("image", datasets.Image(decode=False)).to_list()
    for row, (w, h) in zip(rows[1:3], [(20000, 20000), (10000, 9500)]):
        row["image"] = {"bytes": _png_header(w, h), "path": None}
        row["image_sha256"] = hashlib.sha256(row["image"]["bytes"]).hexdigest()
    out = artifacts.write_dataset(
        datasets.Dataset.from_list(rows, features=tile_features()),
        folder / "tiles",
        artifacts.new_manifest("tiles", run=artifacts.RunInfo("t"), inputs=[], rows=len(rows)),
    )
    return out, [r["tile_id"] for r in rows]


def test_embed_stops_on_an_oversize_tile_naming_it(bomb_tiles, tmp_path, cli):
    tiles, ids = bomb_tiles
    with _NoBombWarnings():
        result = cli(
            "embed",
            "--tiles",
            tiles,
            "--baseline",
            "pixels",
            "--workers",
            "0",
            "--batch-size",
            "1",
            "-o",
            tmp_path / "e.safetensors",
        )
    stderr = _one_error(result, 3)
    assert f"tile {ids[1]}: its image is 20000×20000 px" in stderr and "over the limit of 89,478,485" in stderr
    assert not (tmp_path / "e.safetensors").exists()


def test_embed_in_dataloader_workers_as_a_real_process(bomb_tiles, tmp_path):
    """The same through DataLoader worker processes, on a real stderr (pytest would swallow warnings in-process)."""
    tiles, ids = bomb_tiles
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "urbanln_cli",
            "embed",
            "--tiles",
            str(tiles),
            "--baseline",
            "pixels",
            "--workers",
            "2",
            "--batch-size",
            "1",
            "-o",
            str(tmp_path / "e.safetensors"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.splitlines()
    assert [line.split(":")[0] for line in lines] == ["error", "hint"], (
        proc.stderr
    )  # nothing else: no warning, no traceback
    assert (
        f"tile {ids[1]}: its image is 20000×20000 px" in lines[0]
        or f"tile {ids[2]}: its image is 10000×9500 px" in lines[0]
    )
    assert proc.stdout == "" and not (tmp_path / "e.safetensors").exists()


def test_caption_records_oversize_tiles_as_failed_rows(bomb_tiles, tmp_path, cli):
    from tests.fakes.ollama_server import FakeOllama

    tiles, ids = bomb_tiles
    with FakeOllama() as server, _NoBombWarnings():
        result = cli("caption", tiles, "--models", "llava", "--host", server.url, "-o", tmp_path / "cap", "--json")
        asked = server.chats
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr and "DecompressionBomb" not in result.stderr
    rows = {r["tile_id"]: r for r in datasets.load_from_disk(str(tmp_path / "cap")).to_list()}
    for tile_id in ids[1:3]:
        assert rows[tile_id]["error_class"] == "bad_image" and "over the limit" in rows[tile_id]["error"]
    assert all(rows[t]["error"] is None for t in (ids[0], ids[3]))
    assert asked == 2  # the oversize tiles were never sent
    counts = json.loads(result.stdout)["counts"]
    assert counts["failed"] == 2 and counts["failed_bad_image"] == 2


def test_fuse_checks_and_refine_treat_oversize_tiles_as_bad_images(bomb_tiles, tmp_path):
    from tests.fakes.captions import caption_row, write_captions
    from tests.fakes.ollama_server import FakeOllama, caption_for
    from urbanln_cli.stages.fuse import FuseConfig, fuse

    tiles, ids = bomb_tiles
    models = ("llava:7b", "qwen2.5vl:7b")
    captions = write_captions(
        tmp_path / "captions", [caption_row(t, m, caption_for(m, t.encode())) for t in ids for m in models]
    )
    with FakeOllama() as server, _NoBombWarnings():
        result = fuse(
            FuseConfig(
                captions=(captions,),
                tiles=tiles,
                out=tmp_path / "corpus",
                hosts=(server.url,),
                timeout=5,
                image_check="vlm",
                refine="llava:7b",
            )
        )
    rows = {r["tile_id"]: r for r in datasets.load_from_disk(str(result.out)).to_list()}
    assert set(rows) == set(ids)
    for tile_id in ids[1:3]:  # every check and rewrite of these failed, saying why; the others went ahead
        text = json.dumps(rows[tile_id])
        assert "over the limit" in text, text[:2000]
    assert "over the limit" not in json.dumps(rows[ids[0]])


def test_the_clip_check_gives_oversize_tiles_an_error_verdict(bomb_tiles):
    from urbanln_cli.image_check.clip import ClipCheckConfig, ClipChecker, _BadImage

    checker = ClipChecker(ClipCheckConfig(arch="urbanln-tiny", pretrained="none", device="cpu"))
    with _NoBombWarnings():
        with pytest.raises(_BadImage, match="over the limit"):
            checker._views(_png_header(20000, 20000))
        raised = ClipChecker.__new__(ClipChecker)  # the limit the tiles were made with is honoured
        raised.config = ClipCheckConfig(max_pixels=100_000_000)
        with pytest.raises(_BadImage, match="cannot decode"):  # opened (within the limit), then found truncated
            raised._views(_png_header(10000, 9500))


# ---------------------------------------------------------------- NaN pixels, twin names, world rasters


def test_nan_pixels_are_invalid_without_a_nodata_tag(tmp_path, cli):
    make_geotiff(tmp_path / "empty.tif", data=np.full((1, 64, 64), np.nan, np.float32))
    stderr = _one_error(cli("tile", tmp_path / "empty.tif", "--size", "32", "-o", tmp_path / "t0"), 3)
    assert "4 skipped below min valid" in stderr
    data = np.arange(64 * 64, dtype=np.float32).reshape(1, 64, 64) + 1000
    data[:, :, :40] = np.nan  # no nodata tag: NaN alone marks the left 40 columns
    make_geotiff(tmp_path / "half.tif", data=data)
    result = tile(TileConfig(inputs=(tmp_path / "half.tif",), out=tmp_path / "t1", size=64, min_valid=0.3))
    (row,) = _load(result.out).values()
    assert row["valid_fraction"] == pytest.approx(24 / 64)
    pixels = np.asarray(Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB"))
    assert (pixels[:, :40] == 0).all() and pixels[:, 40:].any()
    # a non-georeferenced float TIFF in a folder (one tile) follows the same rule
    import rasterio

    folder = tmp_path / "plain"
    folder.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(folder / "p.tif", "w", driver="GTiff", width=64, height=64, count=1, dtype="float32") as dst:
            dst.write(data)
    result = tile(TileConfig(inputs=(folder,), out=tmp_path / "t3", min_valid=0.3))
    (row,) = _load(result.out).values()
    assert 0.3 < row["valid_fraction"] <= 24 / 64  # (this path also counts pixels the stretch saturates as fill)
    pixels = np.asarray(Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB"))
    assert (pixels[:, :40] == 0).all()
    stderr = _one_error(cli("tile", folder, "-o", tmp_path / "t4"), 3)  # 0.37 < the default --min-valid 0.5
    assert "1 skipped below min valid" in stderr


def test_a_png_and_a_jpg_of_one_name_keep_their_extensions(tmp_path, cli):
    folder = tmp_path / "photos"
    _picture(folder / "a.png", 32, 32, seed=1)
    _picture(folder / "a.jpg", 32, 32, seed=2)
    _picture(folder / "b.png", 32, 32, seed=3)
    _picture(folder / "sub" / "a.png", 32, 32, seed=4)  # another folder: no clash
    (folder / "b.txt").write_text("notes")  # not imagery: no clash either
    result = cli("tile", folder, "-o", tmp_path / "tiles")
    assert result.exit_code == 0, result.stderr
    rows = _load(tmp_path / "tiles")
    assert sorted(rows) == ["photos/a.jpg", "photos/a.png", "photos/b", "photos/sub/a"]
    assert rows["photos/a.jpg"]["source"].endswith("a.jpg") and rows["photos/a.png"]["source"].endswith("a.png")
    # the same twins in an XYZ folder
    from tests.fakes.rasters import make_xyz

    xyz = tmp_path / "xyz"
    make_xyz(xyz, 1, range(2), range(1))
    _picture(xyz / "1" / "0" / "0.jpg", 32, 32)
    result = cli("tile", xyz, "-o", tmp_path / "xyz_tiles")
    assert result.exit_code == 0, result.stderr
    assert sorted(_load(tmp_path / "xyz_tiles")) == ["xyz/1/0/0.jpg", "xyz/1/0/0.png", "xyz/1/1/0"]


def test_edge_windows_of_a_world_raster_stay_on_the_globe(tmp_path):
    # 1° pixels from -180..180, 90..-90: 256 px windows hang far over the east and south edges
    make_geotiff(tmp_path / "world.tif", width=360, height=180, crs="EPSG:4326", origin=(-180.0, 90.0), res=1.0)
    rows = _load(tile(TileConfig(inputs=(tmp_path / "world.tif",), out=tmp_path / "t", size=256, min_valid=0)).out)
    assert sorted(rows) == ["world/r0_c0", "world/r0_c256"]
    for row in rows.values():
        assert -180 <= row["lon"] <= 180 and -90 <= row["lat"] <= 90, row
        assert np.isfinite(row["gsd"]) and row["gsd"] > 0
    # the centre of the part inside the raster: columns 256..360 and rows 0..180
    assert (rows["world/r0_c256"]["lon"], rows["world/r0_c256"]["lat"]) == pytest.approx((128.0, 0.0))
    assert (rows["world/r0_c0"]["lon"], rows["world/r0_c0"]["lat"]) == pytest.approx((-52.0, 0.0))
    # the window's pixel geometry is unchanged: bounds cover the whole (padded) window
    assert rows["world/r0_c256"]["maxx"] == pytest.approx(332.0) and rows["world/r0_c256"]["miny"] == pytest.approx(
        -166.0
    )
