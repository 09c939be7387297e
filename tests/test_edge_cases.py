"""Bad input and odd geometry: each gets a clear error or the right numbers (found in review)."""

import json
import math

import datasets
import numpy as np
import pytest

from tests.fakes.rasters import make_geotiff, make_image_folder, make_xyz
from urbanln_cli import imagery
from urbanln_cli.stages.label import LabelConfig, RasterTarget, label
from urbanln_cli.stages.tile import TileConfig, tile


def test_overwrite_never_replaces_inputs_or_foreign_folders(tmp_path, cli, monkeypatch):
    folder = tmp_path / "photos"
    make_image_folder(folder, n=2, corrupt=0)
    result = cli("tile", folder, "-o", folder, "--overwrite")
    assert result.exit_code == 1 and "would replace the input" in result.stderr
    result = cli("tile", folder, "-o", tmp_path, "--overwrite")
    assert result.exit_code == 1 and "would replace the input" in result.stderr
    monkeypatch.chdir(tmp_path)
    result = cli("tile", folder, "-o", ".", "--overwrite")
    assert result.exit_code == 1 and "current folder" in result.stderr
    (tmp_path / "stuff").mkdir()
    result = cli("tile", folder, "-o", tmp_path / "stuff", "--overwrite")
    assert result.exit_code == 1 and "not an urbanln artifact" in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["img00.png", "img01.jpg"]


def test_stride_longer_than_the_raster(tmp_path):
    make_geotiff(tmp_path / "a.tif", width=64, height=64)
    assert imagery.window_offsets(64, 8, 100) == [0]
    assert tile(TileConfig(inputs=(tmp_path / "a.tif",), out=tmp_path / "t", size=8, stride=100)).rows == 1


def test_truncated_raster_is_an_input_error(tmp_path, cli):
    make_geotiff(tmp_path / "a.tif", width=256, height=256, dtype="uint16")
    data = (tmp_path / "a.tif").read_bytes()
    (tmp_path / "bad.tif").write_bytes(data[: len(data) // 2])
    result = cli("tile", tmp_path / "bad.tif", "-o", tmp_path / "t")
    assert result.exit_code == 3 and result.stderr.startswith("error: ") and result.stdout == ""


@pytest.mark.parametrize(
    "content, message",
    [
        ("\ufeffid,lon,lat\nimg00,10,50\n", None),  # Excel's byte-order mark is fine
        ("id,lon,lat\nimg00,10\n", "must be numbers"),
        ("id,lon,lat\nimg00,500000,4000000\n", "not a WGS84 position"),
        ("name,x,y\nimg00,10,50\n", "lacks column"),
    ],
)
def test_locations_csv(tmp_path, content, message):
    folder = tmp_path / "photos"
    make_image_folder(folder, n=2, corrupt=0)
    csv = tmp_path / "where.csv"
    csv.write_text(content, encoding="utf-8")
    config = TileConfig(inputs=(folder,), out=tmp_path / "t", locations=csv)
    if message is None:
        assert tile(config).rows == 2
    else:
        from urbanln_cli.errors import InputError

        with pytest.raises(InputError, match=message):
            tile(config)


def test_ambiguous_location_ids(tmp_path):
    from urbanln_cli.errors import InputError

    make_image_folder(tmp_path / "photos" / "x", n=1, corrupt=0)
    make_image_folder(tmp_path / "photos" / "y", n=1, corrupt=0)
    csv = tmp_path / "where.csv"
    csv.write_text("id,lon,lat\nimg00,10,50\n")
    with pytest.raises(InputError, match="matches 2 files"):
        tile(TileConfig(inputs=(tmp_path / "photos",), out=tmp_path / "t", locations=csv))
    csv.write_text("id,lon,lat\nx/img00,10,50\ny/img00.png,11,51\n")
    result = tile(TileConfig(inputs=(tmp_path / "photos",), out=tmp_path / "t", locations=csv))
    rows = datasets.load_from_disk(str(tmp_path / "t")).to_pandas().set_index("tile_id")
    assert rows.loc["photos/y/img00", "lon"] == 11 and "locations_unused" not in result.counts


def test_rotated_raster_gsd(tmp_path):
    import rasterio
    from affine import Affine

    transform = Affine.translation(500_000, 5_000_000) @ Affine.rotation(45) @ Affine.scale(10, -10)
    with rasterio.open(
        tmp_path / "rot.tif",
        "w",
        driver="GTiff",
        width=64,
        height=64,
        count=3,
        dtype="uint8",
        crs="EPSG:32633",
        transform=transform,
    ) as dst:
        dst.write(np.full((3, 64, 64), 100, np.uint8))
    tile(TileConfig(inputs=(tmp_path / "rot.tif",), out=tmp_path / "t", size=32))
    assert datasets.load_from_disk(str(tmp_path / "t"))["gsd"] == pytest.approx([10.0] * 4, rel=5e-3)


def test_cropped_xyz_tile_recentres(tmp_path):
    make_xyz(tmp_path / "xyz", z=4, xs=range(8, 9), ys=range(5, 6), size=256)
    tile(TileConfig(inputs=(tmp_path / "xyz",), out=tmp_path / "t", crop=(0, 0, 128, 0)))
    row = datasets.load_from_disk(str(tmp_path / "t"))[0]
    from urbanln_cli.geo import mercator_to_lonlat

    lon, lat = mercator_to_lonlat((row["minx"] + row["maxx"]) / 2, (row["miny"] + row["maxy"]) / 2)
    assert row["lat"] == pytest.approx(lat) and row["lon"] == pytest.approx(lon)
    assert row["height"] == 128


def test_resized_located_pictures_keep_their_ground_footprint(tmp_path):
    folder = tmp_path / "photos"
    make_image_folder(folder, n=1, size=32, corrupt=0)
    csv = tmp_path / "where.csv"
    csv.write_text("id,lon,lat,gsd\nimg00,15.0,45.0,10\n")  # 320 m square around the point
    tile(TileConfig(inputs=(folder,), out=tmp_path / "t", locations=csv, resize=16))
    res = 0.0005
    ones = np.ones((1, 100, 100), np.float32)
    make_geotiff(tmp_path / "d.tif", data=ones, crs="EPSG:4326", origin=(15.0 - 50 * res, 45.0 + 50 * res), res=res)
    label(
        LabelConfig(
            tiles=tmp_path / "t", out=tmp_path / "l", rasters=(RasterTarget("cells", tmp_path / "d.tif", "sum"),)
        )
    )
    cells = datasets.load_from_disk(str(tmp_path / "l"))["cells"][0]
    cell_area = (res * math.pi / 180 * 6_371_008.8) ** 2 * math.cos(math.radians(45))
    assert cells == pytest.approx(320 * 320 / cell_area, rel=0.03)


def test_env_with_a_malformed_host(cli):
    result = cli("env", "--json", "--host", "notaurl:99999")
    assert result.exit_code == 0 and "invalid host" in json.loads(result.stdout)["ollama"]


def test_config_keys_are_option_names(tmp_path, cli):
    config = tmp_path / "c.toml"
    config.write_text("[inspect]\njson = true\n")
    make_geotiff(tmp_path / "a.tif", width=16, height=16)
    tile(TileConfig(inputs=(tmp_path / "a.tif",), out=tmp_path / "t", size=16))
    result = cli("--config", config, "inspect", tmp_path / "t")
    assert result.exit_code == 0 and json.loads(result.stdout)["rows"] == 1


def test_table_group_column_is_not_a_target(tmp_path):
    make_geotiff(tmp_path / "a.tif", width=32, height=16)
    tile(TileConfig(inputs=(tmp_path / "a.tif",), out=tmp_path / "t", size=16))
    table = tmp_path / "x.csv"
    table.write_text("tile_id,group,carbon\na/r0_c0,3,1.5\n")
    result = label(LabelConfig(tiles=tmp_path / "t", out=tmp_path / "l", table=table, id_column="tile_id"))
    assert result.targets == ["carbon"]
