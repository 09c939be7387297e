"""`urbanln export`: GeoParquet 1.1 and a Cloud-Optimized GeoTIFF from embeddings or a probe's predictions."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
from rasterio.crs import CRS

from tests.fakes.rasters import make_geotiff
from urbanln_cli import artifacts
from urbanln_cli.stages.embed import EmbedConfig, embed
from urbanln_cli.stages.export import ExportConfig, export
from urbanln_cli.stages.tile import TileConfig, tile

RES, ORIGIN = 2.0, (500_000.0, 5_000_000.0)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A 168×160 px GeoTIFF cut into 8 px tiles (a 21×20 grid), and the pixel baseline's embeddings."""
    folder = tmp_path_factory.mktemp("export")
    make_geotiff(folder / "city.tif", width=168, height=160, res=RES, origin=ORIGIN, seed=3)
    tiles = tile(TileConfig(inputs=(folder / "city.tif",), out=folder / "tiles", size=8, workers=1)).out
    emb = embed(EmbedConfig(tiles=tiles, baseline="pixels", out=folder / "e.safetensors", workers=0)).out
    arrays, meta, _ = artifacts.read_tensors(emb, "embeddings")
    vectors = dict(zip(meta["tile_ids"], arrays["embeddings"]))
    return folder, tiles, emb, vectors, _tiles_by_id(tiles)


def _tiles_by_id(tiles):
    import datasets

    ds = datasets.load_from_disk(str(tiles)).remove_columns("image")
    return {row["tile_id"]: row for row in ds.to_list()}


def _read(path):
    table = pq.read_table(path)
    return table, json.loads(table.schema.metadata[b"geo"])


def test_geoparquet_round_trips_with_its_geo_metadata(grid, tmp_path, cli):
    folder, tiles, emb, vectors, by_id = grid
    out = tmp_path / "ex"
    result = cli("export", "-e", emb, "--tiles", tiles, "-o", out)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(out) and "wrote 420 tiles' embeddings (EPSG:32633)" in result.stderr
    table, geo = _read(out / "embeddings.parquet")
    assert table.num_rows == 420 == len(set(table["tile_id"].to_pylist()))
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    column = geo["columns"]["geometry"]
    assert column["encoding"] == "WKB" and column["geometry_types"] == ["Polygon"]
    assert CRS.from_dict(column["crs"]) == CRS.from_epsg(32633) and column["crs"]["id"]["code"] == 32633
    width, height = 168 * RES, 160 * RES
    assert column["bbox"] == [ORIGIN[0], ORIGIN[1] - height, ORIGIN[0] + width, ORIGIN[1]]
    assert column["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]

    rows = table.to_pylist()
    for row in rows:
        tile_row = by_id[row["tile_id"]]
        polygon = shapely.from_wkb(row["geometry"])
        expected = (tile_row["minx"], tile_row["miny"], tile_row["maxx"], tile_row["maxy"])
        assert polygon.geom_type == "Polygon" and polygon.exterior.is_ccw
        assert polygon.bounds == pytest.approx(expected) and polygon.area == pytest.approx((8 * RES) ** 2)
        assert tuple(row["bbox"].values()) == pytest.approx(expected)
        assert (row["lon"], row["lat"]) == (tile_row["lon"], tile_row["lat"])
        assert np.array_equal(np.asarray(row["embedding"], np.float32), vectors[row["tile_id"]])
    assert shapely.union_all([shapely.from_wkb(r["geometry"]) for r in rows]).area == pytest.approx(width * height)

    manifest = json.loads((out / "urbanln.json").read_text())
    embedded = json.loads(table.schema.metadata[b"urbanln"])
    assert (
        manifest["stage"] == "export"
        and manifest["rows"] == 420
        and manifest["files"] == {"geoparquet": "embeddings.parquet"}
    )
    assert embedded["artifact_id"] == manifest["artifact_id"] and manifest["models"]["source"] == {"baseline": "pixels"}
    assert artifacts.describe(out)["kind"] == "export"


@pytest.mark.parametrize("layout", ["fixed", "columns"])
def test_vector_layouts(grid, tmp_path, layout):
    _, tiles, emb, vectors, _ = grid
    export(ExportConfig(embeddings=emb, tiles=tiles, out=tmp_path / "ex", vector=layout))
    table = pq.read_table(tmp_path / "ex" / "embeddings.parquet")
    ids = table["tile_id"].to_pylist()
    expected = np.stack([vectors[t] for t in ids])
    if layout == "fixed":
        assert table.schema.field("embedding").type.list_size == 34
        got = np.stack(table["embedding"].to_numpy(zero_copy_only=False))
    else:
        names = [f"embedding_{i:02d}" for i in range(34)]
        assert [n for n in table.column_names if n.startswith("embedding")] == names
        got = np.stack([table[n].to_numpy() for n in names], axis=1)
    assert got.dtype == np.float32 and np.array_equal(got, expected)


def test_cog_has_one_pixel_per_tile(grid, tmp_path):
    """Two tiles without embeddings are nodata; the grid is the tiles' (8 px × 2 m), overviews made by GDAL."""
    _, tiles, emb, vectors, _ = grid
    dropped = ["city/r0_c8", "city/r152_c160"]
    ids = [t for t in vectors if t not in dropped]
    subset = tmp_path / "subset.safetensors"
    manifest = artifacts.new_manifest(
        "embeddings", run=artifacts.RunInfo("t"), inputs=[], rows=len(ids), extra={"tiles_artifact": "another"}
    )
    artifacts.write_tensors(
        subset, {"embeddings": np.stack([vectors[t] for t in ids])}, manifest, ids={"tile_ids": ids}
    )
    result = export(ExportConfig(embeddings=subset, tiles=tiles, out=tmp_path / "ex", cog=True, blocksize=16))
    assert result.files == {"geoparquet": "embeddings.parquet", "cog": "embeddings.tif"}
    assert result.warnings == [f"{subset} was made from another tiles artifact than {tiles}; joined by tile id"]
    with rasterio.open(tmp_path / "ex" / "embeddings.tif") as ds:
        assert (ds.count, ds.width, ds.height, ds.dtypes[0]) == (34, 21, 20, "float32")
        assert ds.crs == CRS.from_epsg(32633) and np.isnan(ds.nodata)
        assert tuple(ds.transform)[:6] == (8 * RES, 0.0, ORIGIN[0], 0.0, -8 * RES, ORIGIN[1])
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and ds.block_shapes[0] == (16, 16)
        assert ds.overviews(1) == [2]  # 21×20 pixels in 16-pixel blocks: one overview level
        assert ds.descriptions[0] == "embedding_00" and json.loads(ds.tags()["urbanln_manifest"])["stage"] == "export"
        data = ds.read()
    assert np.array_equal(data[:, 3, 5], vectors["city/r24_c40"])  # row 24 / 8 px, col 40 / 8 px
    assert np.isnan(data[:, 19, 20]).all() and np.isnan(data[:, 0, 1]).all() and np.isfinite(data[:, 0, 0]).all()
    assert int(np.isnan(data[0]).sum()) == 2


def test_cog_of_overlapping_tiles_centres_each_pixel_on_its_tile(tmp_path):
    make_geotiff(tmp_path / "o.tif", width=96, height=96, res=RES, origin=ORIGIN, seed=1)
    tiles = tile(TileConfig(inputs=(tmp_path / "o.tif",), out=tmp_path / "tiles", size=32, stride=16, workers=1)).out
    emb = embed(EmbedConfig(tiles=tiles, baseline="pixels", out=tmp_path / "e.safetensors", workers=0)).out
    result = export(ExportConfig(embeddings=emb, tiles=tiles, out=tmp_path / "ex", cog=True))
    assert result.grid["stride_px"] == 16 and (result.grid["width"], result.grid["height"]) == (5, 5)
    with rasterio.open(tmp_path / "ex" / "embeddings.tif") as ds:
        by_id = _tiles_by_id(tiles)
        centre = by_id["o/r16_c32"]
        x, y = (centre["minx"] + centre["maxx"]) / 2, (centre["miny"] + centre["maxy"]) / 2
        assert ds.index(x, y) == (1, 2) and ds.xy(1, 2) == pytest.approx((x, y))
        assert ds.res == (16 * RES, 16 * RES)


def test_predictions_export(grid, tmp_path, cli):
    """A probe's regression and classification predictions, joined to the tiles, as GeoParquet and a COG."""
    import pandas as pd

    folder, tiles, emb, vectors, by_id = grid
    ids = sorted(by_id)
    rng = np.random.default_rng(0)
    classes = np.where(
        np.array([by_id[t]["lon"] for t in ids]) > np.median([by_id[t]["lon"] for t in ids]), "east", "west"
    )
    pd.DataFrame({"tile_id": ids, "value": rng.normal(size=len(ids)), "side": classes}).to_csv(
        tmp_path / "t.csv", index=False
    )
    labels = tmp_path / "labels"
    assert cli("label", tiles, "--table", tmp_path / "t.csv", "--id-column", "tile_id", "-o", labels).exit_code == 0
    probe = tmp_path / "probe"
    result = cli(
        "probe",
        "--target",
        "value,side",
        "-e",
        emb,
        "--labels",
        labels,
        "--split",
        "random",
        "--folds",
        "3",
        "--no-plots",
        "-o",
        probe,
    )
    assert result.exit_code == 0, result.stderr
    predictions = pd.read_parquet(probe / "predictions.parquet")

    several = cli("export", "--predictions", probe, "--tiles", tiles, "-o", tmp_path / "p")
    assert several.exit_code == 2 and "2 target values" in several.stderr and "--target" in several.stderr
    wrong = cli("export", "-e", probe, "--tiles", tiles, "-o", tmp_path / "p")
    assert wrong.exit_code == 3 and f"hint: export its predictions with --predictions {probe}" in wrong.stderr
    both = cli("export", "-e", emb, "--predictions", probe, "--tiles", tiles, "-o", tmp_path / "p")
    assert both.exit_code == 2 and "not both" in both.stderr
    name = emb.name.removesuffix(".safetensors")
    unknown = cli(
        "export", "--predictions", probe, "--target", "value", "--embeddings-name", "nope", "-o", tmp_path / "p"
    )
    assert unknown.exit_code == 2 and "--embeddings-name 'nope' is not in" in unknown.stderr and name in unknown.stderr
    result = cli(
        "export",
        "--predictions",
        probe / "predictions.parquet",
        "--tiles",
        tiles,
        "--target",
        "value",
        "-o",
        tmp_path / "p",
        "--cog",
    )
    assert result.exit_code == 0, result.stderr
    table, geo = _read(tmp_path / "p" / "predictions.parquet")
    expected = predictions[predictions.target == "value"].set_index("tile_id")
    got = table.to_pandas().set_index("tile_id")
    assert len(got) == len(expected) == 420 and "embedding" not in got.columns
    assert np.allclose(got.loc[expected.index, "y_pred"], expected["y_pred"])
    assert (got.loc[expected.index, "fold"] == expected["fold"]).all() and set(got["target"]) == {"value"}
    with rasterio.open(tmp_path / "p" / "predictions.tif") as ds:
        assert ds.count == 2 and ds.descriptions == ("y_pred", "y_true")
        row, col = ds.index(*_centre(by_id["city/r24_c40"]))
        assert ds.read(1)[row, col] == pytest.approx(expected.loc["city/r24_c40", "y_pred"], rel=1e-6)

    result = cli("export", "--predictions", probe, "--tiles", tiles, "--target", "side", "-o", tmp_path / "c", "--cog")
    assert result.exit_code == 0, result.stderr
    classified = predictions[predictions.target == "side"].set_index("tile_id")
    with rasterio.open(tmp_path / "c" / "predictions.tif") as ds:
        names = json.loads(ds.tags()["classes"])
        assert names == ["east", "west"] and ds.descriptions == ("class_pred", "class_true")
        row, col = ds.index(*_centre(by_id["city/r24_c40"]))
        assert names[int(ds.read(1)[row, col])] == classified.loc["city/r24_c40", "class_pred"]
        assert names[int(ds.read(2)[row, col])] == classified.loc["city/r24_c40", "class_true"] == "west"
    table = pq.read_table(tmp_path / "c" / "predictions.parquet")
    assert set(table["class_true"].to_pylist()) == {"east", "west"}


def _centre(row):
    return (row["minx"] + row["maxx"]) / 2, (row["miny"] + row["maxy"]) / 2


def test_tiles_in_several_crss(tmp_path, cli):
    """Refused with a hint, unless --crs reprojects every footprint; never a COG."""
    make_geotiff(tmp_path / "a" / "west.tif", width=64, height=64, crs="EPSG:32633", seed=1)
    make_geotiff(tmp_path / "a" / "east.tif", width=64, height=64, crs="EPSG:32634", origin=(300_000.0, 5_000_000.0))
    tiles = tile(TileConfig(inputs=(tmp_path / "a",), out=tmp_path / "tiles", size=32, workers=1)).out
    emb = embed(EmbedConfig(tiles=tiles, baseline="pixels", out=tmp_path / "e.safetensors", workers=0)).out
    result = cli("export", "-e", emb, "--tiles", tiles, "-o", tmp_path / "ex")
    assert result.exit_code == 2 and result.stdout == "" and not (tmp_path / "ex").exists()
    assert "the tiles are in 2 CRSs" in result.stderr and "hint: pass --crs EPSG:4326" in result.stderr
    result = cli("export", "-e", emb, "--tiles", tiles, "-o", tmp_path / "ex", "--crs", "EPSG:4326", "--cog")
    assert result.exit_code == 2 and "needs tiles cut from one raster; these come from 2" in result.stderr
    result = cli("export", "-e", emb, "--tiles", tiles, "-o", tmp_path / "ex", "--crs", "EPSG:4326", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["crs"] == "EPSG:4326" and summary["counts"] == {"tiles": 8, "reprojected": 8}
    table, geo = _read(tmp_path / "ex" / "embeddings.parquet")
    assert CRS.from_dict(geo["columns"]["geometry"]["crs"]) == CRS.from_epsg(4326)
    for row in table.to_pylist():
        polygon = shapely.from_wkb(row["geometry"])
        assert polygon.is_valid and polygon.exterior.is_ccw and len(polygon.exterior.coords) == 33
        assert polygon.contains(shapely.Point(row["lon"], row["lat"]))  # the footprint holds the tile's centre
        assert 14 < row["lon"] < 22 and 44 < row["lat"] < 46  # UTM 33N and 34N at 45°N, lon/lat order
    bbox = geo["columns"]["geometry"]["bbox"]
    assert bbox[0] == pytest.approx(min(r["bbox"]["xmin"] for r in table.to_pylist()))


def test_errors(grid, tmp_path, cli):
    folder, tiles, emb, vectors, _ = grid
    result = cli("export", "-e", tiles, "--tiles", tiles, "-o", tmp_path / "x")
    assert result.exit_code == 3 and "holds tiles, but embeddings is expected" in result.stderr
    assert result.stdout == ""
    result = cli("export", "--predictions", emb, "--tiles", tiles, "-o", tmp_path / "x")
    assert result.exit_code == 3 and "holds embeddings, but probe is expected" in result.stderr
    result = cli("export", "-e", tmp_path / "missing.safetensors", "--tiles", tiles, "-o", tmp_path / "x")
    assert result.exit_code == 3 and "not found" in result.stderr
    result = cli("export", "-e", emb, "--tiles", tiles, "-o", tmp_path / "x", "--target", "carbon")
    assert result.exit_code == 2 and "no --predictions is given" in result.stderr
    result = cli("export", "-e", emb, "--tiles", tiles, "-o", tmp_path / "x", "--crs", "EPSG:nope")
    assert result.exit_code == 2 and "is not a CRS" in result.stderr

    manifest = artifacts.new_manifest("embeddings", run=artifacts.RunInfo("t"), inputs=[], rows=2)
    other = tmp_path / "other.safetensors"
    artifacts.write_tensors(
        other,
        {"embeddings": np.zeros((2, 3), np.float32)},
        manifest,
        ids={"tile_ids": ["city/r0_c0", "elsewhere/r0_c0"]},
    )
    result = cli("export", "-e", other, "--tiles", tiles, "-o", tmp_path / "x")
    assert result.exit_code == 3 and "1 of 2 tile ids" in result.stderr and "elsewhere/r0_c0" in result.stderr

    empty = tmp_path / "empty.safetensors"
    manifest = artifacts.new_manifest("embeddings", run=artifacts.RunInfo("t"), inputs=[], rows=0)
    artifacts.write_tensors(empty, {"embeddings": np.zeros((0, 3), np.float32)}, manifest, ids={"tile_ids": []})
    result = cli("export", "-e", empty, "--tiles", tiles, "-o", tmp_path / "x")
    assert result.exit_code == 3 and "has no rows to export" in result.stderr

    assert cli("export", "-e", emb, "--tiles", tiles, "-o", tmp_path / "x").exit_code == 0
    again = cli("export", "-e", emb, "--tiles", tiles, "-o", tmp_path / "x")
    assert again.exit_code == 1 and "already exists" in again.stderr
    replaced = cli("export", "-e", emb, "--tiles", tiles, "-o", tmp_path / "x", "--overwrite", "--vector", "fixed")
    assert replaced.exit_code == 0
    assert pq.read_schema(tmp_path / "x" / "embeddings.parquet").field("embedding").type.list_size == 34
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging or lock left
    inside = cli("export", "-e", emb, "--tiles", tiles, "-o", tiles / "ex")
    assert inside.exit_code == 1 and "inside the input" in inside.stderr


def test_tiles_without_footprints_are_refused(tmp_path, cli):
    """Pictures without georeference have no footprint: nothing to put on a map, and the error says so."""
    from tests.fakes.rasters import make_image_folder

    make_image_folder(tmp_path / "photos", n=3, corrupt=0)
    tiles = tile(TileConfig(inputs=(tmp_path / "photos",), out=tmp_path / "tiles", workers=1)).out
    emb = embed(EmbedConfig(tiles=tiles, baseline="pixels", out=tmp_path / "e.safetensors", workers=0)).out
    result = cli("export", "-e", emb, "--tiles", tiles, "-o", tmp_path / "ex")
    assert result.exit_code == 3 and "none of the 3 tiles has a footprint" in result.stderr and result.stdout == ""

    make_geotiff(tmp_path / "photos" / "city.tif", width=64, height=32, res=RES, origin=ORIGIN)  # beside them
    tiles = tile(TileConfig(inputs=(tmp_path / "photos",), out=tmp_path / "mixed", size=32, workers=1)).out
    emb = embed(EmbedConfig(tiles=tiles, baseline="pixels", out=tmp_path / "m.safetensors", workers=0)).out
    result = cli("export", "-e", emb, "--tiles", tiles, "-o", tmp_path / "ex", "--json")
    assert result.exit_code == 0 and "warning: 3 tiles have no footprint" in result.stderr
    assert json.loads(result.stdout)["counts"] == {"tiles": 5, "no_footprint": 3}
    table, geo = _read(tmp_path / "ex" / "embeddings.parquet")
    located = {r["tile_id"]: r["geometry"] is not None for r in table.to_pylist()}
    assert located == {
        "photos/city/r0_c0": True,
        "photos/city/r0_c32": True,
        **{f"photos/img0{i}": False for i in range(3)},
    }
    assert geo["columns"]["geometry"]["bbox"] == [ORIGIN[0], ORIGIN[1] - 64, ORIGIN[0] + 128, ORIGIN[1]]
    assert table["bbox"].null_count == 3
    cog = cli("export", "-e", emb, "--tiles", tiles, "-o", tmp_path / "ex2", "--cog")
    assert cog.exit_code == 2 and "needs tiles cut from one raster" in cog.stderr


def _columns(rows, cols, size=8, res=2.0, x0=0.0, y0=100.0, rotate=0.0):
    """Tile columns as ``urbanln tile`` writes them for windows at (rows, cols) of a north-up raster."""
    rows, cols = np.asarray(rows), np.asarray(cols)
    minx = x0 + res * cols + rotate * rows
    maxy = y0 - res * rows
    return {
        "source": np.array(["a.tif"] * len(rows), object),
        "crs": np.array(["EPSG:32633"] * len(rows), object),
        "row_off": rows,
        "col_off": cols,
        "height": np.full(len(rows), size),
        "width": np.full(len(rows), size),
        "minx": minx,
        "maxx": minx + res * size,
        "miny": maxy - res * size,
        "maxy": maxy,
    }


def test_tile_grid_checks_the_grid():
    from urbanln_cli.errors import UsageProblem
    from urbanln_cli.stages.export_grid import tile_grid

    grid = tile_grid(_columns([8, 8, 24], [0, 16, 16]), stride=8)  # gaps: skipped tiles
    assert (grid.width, grid.height) == (3, 3) and grid.rows.tolist() == [0, 0, 2] and grid.cols.tolist() == [0, 2, 2]
    assert grid.transform == pytest.approx((16.0, 0.0, 0.0, 0.0, -16.0, 100.0 - 16.0))
    assert tile_grid(_columns([0, 16], [0, 32])).stride == 8  # no stride known: the window size, as tile uses
    with pytest.raises(UsageProblem, match="not on a 8-pixel stride"):
        tile_grid(_columns([0, 4], [0, 0]), stride=8)
    with pytest.raises(UsageProblem, match="do not follow one north-up pixel grid"):
        tile_grid(_columns([0, 8, 16], [0, 0, 0], rotate=0.5), stride=8)
    mixed = _columns([0, 8], [0, 0])
    mixed["width"] = np.array([8, 16])
    with pytest.raises(UsageProblem, match="windows of one size"):
        tile_grid(mixed, stride=8)
