"""`urbanln label`: zonal statistics from rasters and joins from tables."""

import json
import math

import datasets
import numpy as np
import pytest

from tests.fakes.rasters import make_geotiff
from urbanln_cli.stages.label import LabelConfig, RasterTarget, label
from urbanln_cli.stages.tile import TileConfig, tile


def _population(tmp_path, **kw):
    rng = np.random.default_rng(1)
    pop = (rng.random((1, 30, 40)) * 100).astype(np.float32)
    pop[0, :5, :7] = -1  # nodata
    make_geotiff(tmp_path / "pop.tif", data=pop, res=10.0, nodata=-1, **kw)
    return np.ma.masked_equal(pop[0], -1)


def _tiles(tmp_path, size=25, res=2.0, width=200, height=150, name="city", **kw):
    make_geotiff(tmp_path / f"{name}.tif", width=width, height=height, res=res, **kw)
    out = tmp_path / f"{name}_tiles"
    tile(TileConfig(inputs=(tmp_path / f"{name}.tif",), out=out, size=size, min_valid=0))
    return out


def _labels(path):
    return datasets.load_from_disk(str(path)).to_pandas().set_index("tile_id")


def test_raster_target_parsing():
    assert RasterTarget.parse("population=pop.tif:sum") == RasterTarget(
        "population", __import__("pathlib").Path("pop.tif"), "sum"
    )
    assert RasterTarget.parse("light=/data/viirs.tif").agg == "mean"
    from urbanln_cli.errors import UsageProblem

    with pytest.raises(UsageProblem, match="unknown aggregation"):
        RasterTarget.parse("light=viirs.tif:avg")
    with pytest.raises(UsageProblem, match="NAME=PATH"):
        RasterTarget.parse("viirs.tif")


def test_zonal_sum_reproduces_raster_total(tmp_path):
    pop = _population(tmp_path)
    # 2 m imagery over the same 400 m × 300 m extent, 50 m tiles: 8 × 6 tiles, 5 × 5 cells each
    tiles = _tiles(tmp_path)
    result = label(
        LabelConfig(
            tiles=tiles,
            out=tmp_path / "labels",
            rasters=(RasterTarget.parse(f"population={tmp_path / 'pop.tif'}:sum"),),
        )
    )
    labels = _labels(tmp_path / "labels")
    assert result.rows == 48
    assert labels["population"].sum() == pytest.approx(float(pop.sum(dtype=np.float64)), rel=1e-9)
    # one tile by hand: rows 5..9, cols 10..14 of the population grid
    assert labels.loc["city/r25_c50", "population"] == pytest.approx(
        float(pop[5:10, 10:15].sum(dtype=np.float64)), rel=1e-9
    )
    assert math.isnan(labels.loc["city/r0_c0", "population"])  # all nodata
    manifest = json.loads((tmp_path / "labels" / "urbanln.json").read_text())
    assert manifest["counts"]["nodata_population"] == 1 and manifest["counts"]["nan_population"] == 1
    assert manifest["targets"]["population"]["agg"] == "sum"


def test_partial_cells_are_weighted_by_cover(tmp_path):
    pop = _population(tmp_path)
    # 15 m tiles do not line up with 10 m cells; the sums must still add up
    tiles = _tiles(tmp_path, size=15, res=1.0, width=400, height=300, name="odd")
    label(
        LabelConfig(
            tiles=tiles, out=tmp_path / "labels", rasters=(RasterTarget("population", tmp_path / "pop.tif", "sum"),)
        )
    )
    labels = _labels(tmp_path / "labels")
    assert labels["population"].sum() == pytest.approx(float(pop.sum(dtype=np.float64)), rel=1e-9)


def test_reprojected_footprints(tmp_path):
    from rasterio.warp import transform_bounds

    # a constant-density raster in lon/lat under tiles cut in UTM
    tiles = _tiles(tmp_path, size=50, res=2.0, width=200, height=200)
    west, south, east, north = transform_bounds("EPSG:32633", "EPSG:4326", 500_000, 4_999_600, 500_400, 5_000_000)
    res = 0.0005
    ones = np.ones((1, int((north - south) / res) + 20, int((east - west) / res) + 20), np.float32)
    make_geotiff(tmp_path / "dens.tif", data=ones, crs="EPSG:4326", origin=(west - 10 * res, north + 10 * res), res=res)
    label(
        LabelConfig(
            tiles=tiles,
            out=tmp_path / "l",
            rasters=(
                RasterTarget("cells", tmp_path / "dens.tif", "sum"),
                RasterTarget("one", tmp_path / "dens.tif", "mean"),
            ),
        )
    )
    labels = _labels(tmp_path / "l")
    lat = math.radians(labels["lat"].mean())
    cell_area = (res * math.pi / 180 * 6_371_008.8) ** 2 * math.cos(lat)
    expected = 100.0 * 100.0 / cell_area  # each 100 m tile covers this many cells
    assert np.allclose(labels["cells"], expected, rtol=0.02)
    assert np.allclose(labels["one"], 1.0)


def test_fractions_max_median_and_outside(tmp_path):
    classes = np.zeros((1, 10, 10), np.uint8)
    classes[0, :, 5:] = 3
    classes[0, 8:, :] = 7
    make_geotiff(tmp_path / "lc.tif", data=classes, res=10.0)
    tiles = _tiles(tmp_path, size=50, res=2.0, width=150, height=50)  # the 2nd and 3rd tiles lie east of the raster
    label(
        LabelConfig(
            tiles=tiles,
            out=tmp_path / "l",
            rasters=(
                RasterTarget("lc", tmp_path / "lc.tif", "fractions"),
                RasterTarget("top", tmp_path / "lc.tif", "max"),
                RasterTarget("mid", tmp_path / "lc.tif", "median"),
            ),
        )
    )
    labels = _labels(tmp_path / "l")
    first = labels.loc["city/r0_c0"]  # cells rows 0..9, cols 0..9
    assert (
        first["lc_0"] == pytest.approx(0.4)
        and first["lc_3"] == pytest.approx(0.4)
        and first["lc_7"] == pytest.approx(0.2)
    )
    assert first["top"] == 7 and first["mid"] == 3
    outside = labels.loc["city/r0_c50"]
    assert math.isnan(outside["lc_0"]) and math.isnan(outside["top"])
    manifest = json.loads((tmp_path / "l" / "urbanln.json").read_text())
    assert manifest["counts"]["outside_lc"] == 2


def test_table_join_by_id_with_duplicates(tmp_path):
    tiles = _tiles(tmp_path, size=100, width=200, height=100)
    table = tmp_path / "t.csv"
    table.write_text("tile,carbon,gdp,name\ncity/r0_c0,1.0,5,a\ncity/r0_c0,3.0,7,b\nother,9,9,c\n")
    result = label(LabelConfig(tiles=tiles, out=tmp_path / "l", table=table, id_column="tile"))
    labels = _labels(tmp_path / "l")
    assert result.targets == ["carbon", "gdp"]  # the text column is not a target
    assert labels.loc["city/r0_c0", "carbon"] == 2.0 and labels.loc["city/r0_c0", "gdp"] == 6.0
    assert math.isnan(labels.loc["city/r0_c100", "carbon"])
    assert result.counts["table_duplicate_rows"] == 1 and result.counts["table_unmatched_tiles"] == 1
    label(
        LabelConfig(
            tiles=tiles, out=tmp_path / "first", table=table, id_column="tile", dup="first", columns=("carbon",)
        )
    )
    assert _labels(tmp_path / "first").loc["city/r0_c0", "carbon"] == 1.0


def test_table_join_nearest_within_distance(tmp_path):
    tiles = _tiles(tmp_path, size=100, width=200, height=100)
    centres = datasets.load_from_disk(str(tiles)).to_pandas()
    table = tmp_path / "t.csv"
    a = centres.iloc[0]
    b = centres.iloc[1]
    # point A ~1 m from tile 0's centre; point B ~150 m north of tile 1's (farther than half a 200 m tile, nearer than
    # A)
    table.write_text(f"lon,lat,carbon\n{a.lon + 1e-5},{a.lat},4.5\n{b.lon},{b.lat + 0.00135},8\n")
    result = label(LabelConfig(tiles=tiles, out=tmp_path / "l", table=table))
    labels = _labels(tmp_path / "l")
    assert labels.loc[a.tile_id, "carbon"] == 4.5
    assert math.isnan(labels.loc[b.tile_id, "carbon"])
    assert result.counts["table_too_far"] == 1
    label(LabelConfig(tiles=tiles, out=tmp_path / "l2", table=table, max_distance=1000))
    assert _labels(tmp_path / "l2").loc[b.tile_id, "carbon"] == 8


def test_cli_label_and_errors(tmp_path, cli):
    _population(tmp_path)
    tiles = _tiles(tmp_path)
    result = cli("label", tiles, "--raster", f"population={tmp_path / 'pop.tif'}:sum", "-o", tmp_path / "labels")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "labels")
    assert "wrote 1 target(s) for 48 tiles" in result.stderr
    # the wrong artifact: labels where tiles are expected
    result = cli("label", tmp_path / "labels", "--raster", f"p={tmp_path / 'pop.tif'}", "-o", tmp_path / "x")
    assert result.exit_code == 3 and result.stdout == ""
    assert "error: " in result.stderr and "holds labels, but tiles is expected" in result.stderr
    assert "hint: create tiles with `urbanln tile" in result.stderr
    # ids that match nothing
    table = tmp_path / "t.csv"
    table.write_text("id,carbon\n1,2\n")
    result = cli("label", tiles, "--table", table, "--id-column", "id", "-o", tmp_path / "y")
    assert result.exit_code == 3 and "no tile id appears" in result.stderr and "hint: " in result.stderr
    # a missing raster
    result = cli("label", tiles, "--raster", "p=nope.tif", "-o", tmp_path / "z")
    assert result.exit_code == 3 and "raster not found: nope.tif" in result.stderr
    # no targets at all
    result = cli("label", tiles, "-o", tmp_path / "z")
    assert result.exit_code == 2 and "no targets given" in result.stderr
    # the output exists
    result = cli("label", tiles, "--raster", f"population={tmp_path / 'pop.tif'}:sum", "-o", tmp_path / "labels")
    assert result.exit_code == 1 and "already exists" in result.stderr and "--overwrite" in result.stderr
    assert not list(tmp_path.glob(".*staging*"))


# ---------------------------------------------------------------- class masks (:mask)


def _mask(labels, tile_id, column="lc_mask"):
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(labels.loc[tile_id, column])))


def test_mask_is_the_class_cell_under_each_pixel(tmp_path):
    # 10 m classes under 2 m imagery; the raster stops at x = 330 m, so tiles at 300-350 m are partly outside and
    # 350-400 m outside
    rng = np.random.default_rng(4)
    classes = rng.integers(0, 6, size=(1, 30, 33), dtype=np.uint8)
    classes[0, 0, :3] = 255  # nodata
    make_geotiff(tmp_path / "lc.tif", data=classes, res=10.0, nodata=255)
    tiles = _tiles(tmp_path)  # 25 px (50 m) tiles over 400 m × 300 m
    assert RasterTarget.parse(f"lc={tmp_path / 'lc.tif'}:mask").agg == "mask"
    result = label(
        LabelConfig(tiles=tiles, out=tmp_path / "l", rasters=(RasterTarget.parse(f"lc={tmp_path / 'lc.tif'}:mask"),))
    )
    assert result.targets == ["lc_mask"]
    labels = _labels(tmp_path / "l")
    for tile_id in ("city/r0_c0", "city/r50_c100", "city/r125_c125", "city/r25_c150"):
        row, col = (int(p[1:]) for p in tile_id.split("/")[1].split("_"))
        r, c = np.meshgrid(np.arange(25), np.arange(25), indexing="ij")
        # pixel (r, c) has its centre at ((col + c + 0.5) × 2 m, (row + r + 0.5) × 2 m) from the top-left corner
        cell_r, cell_c = ((row + r + 0.5) * 2 // 10).astype(int), ((col + c + 0.5) * 2 // 10).astype(int)
        inside = cell_c < 33
        expected = np.full((25, 25), 255, np.uint8)
        expected[inside] = classes[0, cell_r[inside], cell_c[inside]]
        np.testing.assert_array_equal(_mask(labels, tile_id), expected)
    assert (_mask(labels, "city/r0_c0")[:5, :15] == 255).all()  # the nodata cells
    assert (_mask(labels, "city/r0_c175") == 255).all()  # outside the raster
    manifest = json.loads((tmp_path / "l" / "urbanln.json").read_text())
    info = manifest["targets"]["lc"]
    assert info["agg"] == "mask" and info["columns"] == ["lc_mask"] and info["ignore"] == 255
    stored = np.concatenate([_mask(labels, t).ravel() for t in labels.index])
    assert info["classes"] == {str(k): int((stored == k).sum()) for k in range(6) if (stored == k).any()}
    assert info["nodata_pixels"] == int((stored == 255).sum())
    assert info["nodata_per_tile"]["city/r0_c175"] == 625 and info["nodata_per_tile"]["city/r0_c0"] == 75
    assert info["tiles_with_nodata"] == len(info["nodata_per_tile"]) and info["nodata_per_tile_complete"]
    counts = manifest["counts"]
    assert counts["outside_lc"] == 6 and counts["partial_lc"] == 6 and counts["some_nodata_lc"] == 1


def test_mask_size_and_reprojection(tmp_path):
    from rasterio.warp import transform_bounds

    tiles = _tiles(tmp_path, size=100, res=1.0, width=200, height=100)
    west, south, east, north = transform_bounds("EPSG:32633", "EPSG:4326", 500_000, 4_999_900, 500_200, 5_000_000)
    res = 0.0001
    shape = (1, int((north - south) / res) + 10, int((east - west) / res) + 10)
    make_geotiff(
        tmp_path / "geo.tif",
        data=np.full(shape, 3, np.uint8),
        crs="EPSG:4326",
        origin=(west - 5 * res, north + 5 * res),
        res=res,
    )
    label(
        LabelConfig(
            tiles=tiles,
            out=tmp_path / "l",
            rasters=(RasterTarget.parse(f"lc={tmp_path / 'geo.tif'}:mask"),),
            mask_size=40,
        )
    )
    labels = _labels(tmp_path / "l")
    for tile_id in labels.index:
        mask = _mask(labels, tile_id)
        assert mask.shape == (40, 40) and (mask == 3).all()


def test_mask_refuses_values_that_are_not_class_ids(tmp_path, cli):
    tiles = _tiles(tmp_path, size=50, width=100, height=100)
    make_geotiff(tmp_path / "frac.tif", data=np.full((1, 10, 10), 2.5, np.float32), res=20.0)
    make_geotiff(tmp_path / "big.tif", data=np.full((1, 10, 10), 300, np.uint16), res=20.0)
    make_geotiff(tmp_path / "full.tif", data=np.full((1, 10, 10), 255, np.uint8), res=20.0)  # 255 without nodata set
    for name, words in (("frac", "value 2.5"), ("big", "value 300"), ("full", "value 255")):
        result = cli("label", tiles, "--raster", f"lc={tmp_path / name}.tif:mask", "-o", tmp_path / name)
        assert result.exit_code == 3 and result.stdout == "", result.output
        assert result.stderr.startswith("error: ") and words in result.stderr and "not a class id" in result.stderr
        assert result.stderr.count("\n") == 2 and "hint: " in result.stderr and "nodata" in result.stderr
        assert not (tmp_path / name).exists()
    from urbanln_cli.errors import UsageProblem

    with pytest.raises(UsageProblem, match="--mask-size"):
        LabelConfig(tiles=tiles, rasters=(RasterTarget.parse("lc=x.tif:mask"),), mask_size=0).check()


# ---------------------------------------------------------------- categorical targets


def _manifest(path):
    return json.loads((path / "urbanln.json").read_text())


def test_table_text_column_is_a_categorical_target(tmp_path):
    tiles = _tiles(tmp_path, size=50, width=200, height=100)  # 8 tiles, 100 m a side
    table = tmp_path / "t.csv"
    table.write_text(
        "tile,landuse,price,note\n"
        "city/r0_c0, forest ,1.5,a\n"
        "city/r0_c0,forest,2.5,b\n"  # a duplicate that agrees once the spaces are gone
        "city/r0_c50,water,-,c\n"  # "-" is a missing price, not text
        "city/r0_c100,NA,3,d\n"
        "city/r0_c150,,4,e\n"
        "city/r50_c0,  NA ,5,f\n"
        "city/r50_c50,water,6,g\n"
        "city/r50_c100,forest,7,h\n"
        "city/r50_c100,water,8,i\n"
        "city/r50_c100,water,9,j\n"  # duplicates that disagree: the most common class wins
    )
    result = label(LabelConfig(tiles=tiles, out=tmp_path / "l", table=table, id_column="tile"))
    assert result.targets == ["landuse", "price"] and result.categorical == ["landuse"]
    assert len(result.warnings) == 1 and "'note'" in result.warnings[0] and "--columns" in result.warnings[0]
    ds = datasets.load_from_disk(str(tmp_path / "l"))
    assert ds.features["landuse"] == datasets.Value("string") and ds.features["price"] == datasets.Value("float64")
    got = dict(zip(ds["tile_id"], ds["landuse"]))
    assert got == {
        "city/r0_c0": "forest",
        "city/r0_c50": "water",
        "city/r0_c100": None,
        "city/r0_c150": None,
        "city/r50_c0": None,
        "city/r50_c50": "water",
        "city/r50_c100": "water",
        "city/r50_c150": None,  # not in the table
    }
    price = dict(zip(ds["tile_id"], ds["price"]))
    assert price["city/r0_c0"] == 2.0 and price["city/r50_c100"] == 8.0 and math.isnan(price["city/r0_c50"])
    manifest = _manifest(tmp_path / "l")
    assert manifest["categorical"] == {
        "landuse": {"classes": ["forest", "water"], "counts": {"forest": 1, "water": 3}, "missing": 4}
    }
    assert manifest["targets"]["landuse"]["kind"] == "categorical" and manifest["targets"]["price"]["kind"] == "numeric"
    assert "note" in manifest["skipped_table_columns"]
    counts = manifest["counts"]
    assert counts["nan_landuse"] == 4 and counts["nan_price"] == 2 and counts["table_conflicts_landuse"] == 1
    # --dup first takes the first class given; naming the id-like column takes it
    label(
        LabelConfig(
            tiles=tiles, out=tmp_path / "f", table=table, id_column="tile", dup="first", columns=("landuse", "note")
        )
    )
    first = _labels(tmp_path / "f")
    assert first.loc["city/r50_c100", "landuse"] == "forest" and first.loc["city/r0_c0", "note"] == "a"
    assert _manifest(tmp_path / "f")["categorical"]["note"]["counts"]["a"] == 1


def test_categorical_join_by_nearest_point_and_parquet(tmp_path):
    import pandas as pd

    tiles = _tiles(tmp_path, size=100, width=200, height=100)
    centres = datasets.load_from_disk(str(tiles)).to_pandas()
    a, b = centres.iloc[0], centres.iloc[1]
    table = tmp_path / "t.parquet"
    pd.DataFrame(
        {
            "lon": [a.lon, a.lon, b.lon, b.lon],
            "lat": [a.lat, a.lat, b.lat + 0.01, b.lat + 0.01],  # b's point is ~1 km away, farther than half a tile
            "zone": pd.Categorical(["park", "park", "port", "port"]),
        }
    ).to_parquet(table)
    result = label(LabelConfig(tiles=tiles, out=tmp_path / "l", table=table))
    labels = _labels(tmp_path / "l")
    assert result.categorical == ["zone"] and labels.loc[a.tile_id, "zone"] == "park"
    assert pd.isna(labels.loc[b.tile_id, "zone"]) and result.counts["table_too_far"] == 1
    assert result.counts["table_duplicate_rows"] == 2


def test_cli_table_mixing_numbers_and_text_is_an_error(tmp_path, cli):
    tiles = _tiles(tmp_path, size=100, width=200, height=100)
    table = tmp_path / "t.csv"
    table.write_text("tile,carbon,zone\ncity/r0_c0,1,3\ncity/r0_c100,2,  residential\ncity/r0_c100,2,NA\n")
    result = cli("label", tiles, "--table", table, "--id-column", "tile", "-o", tmp_path / "l")
    assert result.exit_code == 3 and result.stdout == "", result.output
    assert result.stderr.startswith("error: ") and "column 'zone'" in result.stderr
    assert "'3' (line 2)" in result.stderr and "'residential' (line 3)" in result.stderr
    assert "hint: " in result.stderr and not (tmp_path / "l").exists()
    # leaving it out works, and --json names the categorical targets (none here)
    result = cli("label", tiles, "--table", table, "--id-column", "tile", "--columns", "carbon", "-o", tmp_path / "l")
    assert result.exit_code == 0, result.output
    assert (
        json.loads(
            cli(
                "label",
                tiles,
                "--table",
                table,
                "--id-column",
                "tile",
                "--columns",
                "carbon",
                "-o",
                tmp_path / "j",
                "--json",
            ).stdout
        )["categorical"]
        == []
    )


def test_cli_table_warns_about_an_id_like_text_column(tmp_path, cli):
    tiles = _tiles(tmp_path, size=100, width=200, height=100)
    table = tmp_path / "t.csv"
    table.write_text("tile,kind,name\ncity/r0_c0,shop,Ann\ncity/r0_c100,shop,Bob\nother,home,Cy\nx,home,Di\n")
    result = cli("label", tiles, "--table", table, "--id-column", "tile", "-o", tmp_path / "l", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["targets"] == ["kind"] and summary["categorical"] == ["kind"]
    assert "warning: text column 'name'" in result.stderr and "4 distinct values in 4 rows" in result.stderr


# ---------------------------------------------------------------- majority class of a raster


def test_majority_class_per_tile(tmp_path):
    # 10 m classes under 50 m tiles (5 × 5 cells each); 255 is nodata; the raster is 19 cells wide, so the
    # right-hand tiles (cells 15..19) lose one column of cells
    classes = np.full((1, 10, 19), 1, np.uint8)
    t = classes[0]
    t[0:5, 0:5] = 3
    t[0:5, 0:5].flat[:13] = 11  # 13 × 11 beat 12 × 3
    t[0:5, 5:10].flat[:10] = 7
    t[0:5, 5:10].flat[10:20] = 5
    t[0:5, 5:10].flat[20:] = 255  # a tie between 5 and 7 beside nodata: the smaller code
    t[0:5, 10:15] = 255  # no valid cell
    t[0:5, 15:19] = 10
    t[0:5, 15:19].flat[:10] = 2  # 10 × 2 and 10 × 10 tie: 2, smaller as a number though "10" < "2" as text
    t[5:10, 5:10] = 255
    t[5:10, 5:10].flat[:5] = 9  # nodata covers most of the tile, but is not a class
    make_geotiff(tmp_path / "lc.tif", data=classes, res=10.0, nodata=255)
    tiles = _tiles(tmp_path, size=25, res=2.0, width=100, height=50)
    result = label(
        LabelConfig(
            tiles=tiles,
            out=tmp_path / "l",
            rasters=(RasterTarget.parse(f"lc={tmp_path / 'lc.tif'}:majority"),),
        )
    )
    assert result.targets == ["lc"] and result.categorical == ["lc"]
    ds = datasets.load_from_disk(str(tmp_path / "l"))
    assert ds.features["lc"] == datasets.Value("string")
    assert dict(zip(ds["tile_id"], ds["lc"])) == {
        "city/r0_c0": "11",
        "city/r0_c25": "5",
        "city/r0_c50": None,
        "city/r0_c75": "2",
        "city/r25_c0": "1",
        "city/r25_c25": "9",
        "city/r25_c50": "1",
        "city/r25_c75": "1",
    }
    manifest = _manifest(tmp_path / "l")
    assert manifest["categorical"]["lc"] == {
        "classes": ["1", "2", "5", "9", "11"],
        "counts": {"1": 3, "2": 1, "5": 1, "9": 1, "11": 1},
        "missing": 1,
    }
    assert manifest["targets"]["lc"]["agg"] == "majority"
    counts = manifest["counts"]
    assert counts["nodata_lc"] == 1 and counts["nan_lc"] == 1 and counts["partial_lc"] == 2
    assert counts["some_nodata_lc"] == 2


def test_majority_is_the_largest_fraction_under_reprojection(tmp_path):
    from rasterio.warp import transform_bounds

    # classes on a lon/lat grid under tiles cut in UTM: footprints are sampled, not aligned
    tiles = _tiles(tmp_path, size=30, res=2.0, width=180, height=120)
    west, south, east, north = transform_bounds("EPSG:32633", "EPSG:4326", 500_000, 4_999_760, 500_360, 5_000_000)
    res = 0.0004
    rng = np.random.default_rng(3)
    shape = (1, int((north - south) / res) + 4, int((east - west) / res) + 4)
    make_geotiff(
        tmp_path / "lc.tif",
        data=rng.integers(0, 4, size=shape, dtype=np.uint8),
        crs="EPSG:4326",
        origin=(west - 2 * res, north + 2 * res),
        res=res,
    )
    label(
        LabelConfig(
            tiles=tiles,
            out=tmp_path / "l",
            rasters=(
                RasterTarget("top", tmp_path / "lc.tif", "majority"),
                RasterTarget("lc", tmp_path / "lc.tif", "fractions"),
            ),
        )
    )
    labels = _labels(tmp_path / "l")
    shares = labels[[f"lc_{k}" for k in range(4)]].fillna(0).to_numpy()
    expected = [str(int(np.argmax(row))) for row in shares]
    assert labels["top"].tolist() == expected and len(set(expected)) > 1


def test_majority_refuses_a_continuous_raster(tmp_path, cli):
    tiles = _tiles(tmp_path, size=50, width=100, height=100)
    make_geotiff(tmp_path / "frac.tif", data=np.full((1, 10, 10), 2.5, np.float32), res=20.0)
    result = cli("label", tiles, "--raster", f"lc={tmp_path / 'frac.tif'}:majority", "-o", tmp_path / "l")
    assert result.exit_code == 3 and result.stdout == "", result.output
    assert "value 2.5" in result.stderr and "not a class code" in result.stderr and ":mean" in result.stderr
    assert not (tmp_path / "l").exists()


def test_cli_categorical_forces_codes_to_classes(tmp_path, cli):
    tiles = _tiles(tmp_path, size=50, width=200, height=100)
    table = tmp_path / "t.csv"
    rows = ["city/r0_c0,11,1", "city/r0_c50, 11 ,2", "city/r0_c100,021,3", "city/r0_c150,21,4", "city/r50_c0,NA,5"]
    table.write_text("tile,nlcd,price\n" + "\n".join(rows) + "\n")
    # without --categorical the codes are a number target
    result = cli("label", tiles, "--table", table, "--id-column", "tile", "-o", tmp_path / "n", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["categorical"] == [], result.output
    result = cli("label", tiles, "--table", table, "--id-column", "tile", "--categorical", "nlcd", "-o", tmp_path / "c")
    assert result.exit_code == 0, result.output
    ds = datasets.load_from_disk(str(tmp_path / "c"))
    assert ds.features["nlcd"] == datasets.Value("string") and ds.features["price"] == datasets.Value("float64")
    assert _manifest(tmp_path / "c")["categorical"]["nlcd"] == {
        "classes": ["11", "021", "21"],  # whole-number codes in numeric order; "021" is a class as written
        "counts": {"11": 2, "21": 1, "021": 1},
        "missing": 4,
    }
    result = cli("label", tiles, "--raster", f"x={table}", "--categorical", "nlcd", "-o", tmp_path / "x")
    assert result.exit_code == 2 and "no --table" in result.stderr
    result = cli("label", tiles, "--table", table, "--id-column", "tile", "--categorical", "zone", "-o", tmp_path / "z")
    assert result.exit_code == 3 and "no column 'zone'" in result.stderr
