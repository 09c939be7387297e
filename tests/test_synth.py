"""The synthetic city: determinism, land cover that matches the scene, indicators that match
their formulas, the CLI, and the tile → label chain on its output."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from urbanln_cli.synth import SynthConfig, indicators, synth_city

SIZE = 1000  # a whole number of 100/500/1000 m cells at 1 m, so tiles cover every indicator cell exactly


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "city"
    synth_city(SynthConfig(out=out, size=SIZE, seed=3, workers=2))
    return out


@pytest.fixture(scope="module")
def scene(city):
    return json.loads((city / "scene.json").read_text())


def _read(path):
    import rasterio

    with rasterio.open(path) as src:
        return src.read(), src.profile, src.transform, src.crs


def test_files_and_georeferencing(city, scene):
    rgb, profile, transform, crs = _read(city / "imagery.tif")
    assert rgb.shape == (3, SIZE, SIZE) and rgb.dtype == np.uint8
    assert profile["tiled"] and profile["blockxsize"] == 256 and profile["compress"] == "deflate"
    assert crs.to_epsg() == 32650 and scene["crs"] == "EPSG:32650"
    assert list(transform)[:6] == scene["transform"]
    lc, _, lc_transform, _ = _read(city / "landcover.tif")
    assert lc.shape == (1, SIZE, SIZE) and lc_transform == transform
    assert set(np.unique(lc)) <= set(range(10))
    for name, cell in indicators.GRIDS_M.items():
        grid, p, t, c = _read(city / f"{name}.tif")
        assert grid.dtype == np.float32 and c == crs
        assert (t.a, t.c, t.f) == (cell, transform.c, transform.f)  # same origin, coarser cells
        assert grid.shape[1:] == (math.ceil(SIZE / cell),) * 2
    assert {
        "version",
        "seed",
        "style",
        "size",
        "gsd",
        "classes",
        "formulas",
        "buildings",
        "roads",
        "rail",
        "parks",
        "water",
        "sports_fields",
        "trees",
        "vehicles",
        "zones",
    } <= set(scene)
    assert {z["name"] for z in scene["zones"]} >= {"centre", "residential_high"}
    b = scene["buildings"][0]
    assert {
        "id",
        "use",
        "zone",
        "footprint",
        "bbox",
        "height_m",
        "storeys",
        "roof_colour",
        "roof_material",
        "floor_area_m2",
        "population",
        "carbon",
        "gdp",
    } <= set(b)


def test_same_seed_same_bytes_different_seed_different_city(city, tmp_path):
    again = tmp_path / "again"
    synth_city(SynthConfig(out=again, size=SIZE, seed=3, workers=1))  # one process vs two: order must not matter
    for name in ("imagery.tif", "landcover.tif", "scene.json", "population.tif", "nightlight.tif"):
        assert _digest(city / name) == _digest(again / name), name
    other = tmp_path / "other"
    synth_city(SynthConfig(out=other, size=SIZE, seed=4, workers=1))
    for name in ("imagery.tif", "landcover.tif", "scene.json"):
        assert _digest(city / name) != _digest(other / name), name


def test_styles_differ(tmp_path):
    a = synth_city(SynthConfig(out=tmp_path / "grid", size=512, seed=1, style="grid", workers=1))
    b = synth_city(SynthConfig(out=tmp_path / "linear", size=512, seed=1, style="linear", workers=1))
    assert _digest(a.out / "imagery.tif") != _digest(b.out / "imagery.tif")
    assert json.loads((a.out / "scene.json").read_text())["style"] == "grid"


def _pixel(scene, x, y):
    a, _, c, _, e, f = scene["transform"]
    return (np.asarray(x) - c) / a, (np.asarray(y) - f) / e


def _seg_dist(p, line):
    a, b = line[:-1], line[1:]
    ab = b - a
    t = np.clip(((p[:, None] - a[None]) * ab[None]).sum(2) / np.maximum((ab * ab).sum(1), 1e-12)[None], 0, 1)
    return np.hypot(*(p[:, None] - (a[None] + t[..., None] * ab[None])).transpose(2, 0, 1)).min(axis=1)


def _in_poly(p, poly):
    from urbanln_cli.synth.geometry import points_in_polygon

    return points_in_polygon(p, poly)


def test_landcover_building_area_matches_footprints(city, scene):
    # Buildings never overlap each other or leave the image, and nothing is drawn over them
    # in the land cover, so pixel counts must equal footprint areas up to edge pixels; the
    # renderer insets outlines by 0.3 px to cancel PIL's outline fill, which leaves ~1% noise.
    lc = _read(city / "landcover.tif")[0][0]
    gsd2 = scene["gsd"] ** 2
    for use, cls in (("residential", 3), ("commercial", 4), ("industrial", 5)):
        area = sum(b["footprint_m2"] for b in scene["buildings"] if b["use"] == use)
        if area < 2000:
            continue
        assert (lc == cls).sum() * gsd2 == pytest.approx(area, rel=0.03), use


def test_landcover_agrees_with_scene_geometry(city, scene):
    # Classify random pixel centres from scene.json alone (buildings over trees over roads over
    # rail over water, as drawn) and compare with the raster. Disagreement comes only from pixels
    # cut by an edge, a few percent of them at 1 m with many 4-10 m trees; class shares must agree
    # to within 1.5 points.
    lc = _read(city / "landcover.tif")[0][0]
    rng = np.random.default_rng(0)
    n = 6000
    col, row = rng.integers(0, SIZE, n), rng.integers(0, SIZE, n)
    a, _, c, _, e, f = scene["transform"]
    pts = np.stack([c + (col + 0.5) * a, f + (row + 0.5) * e], axis=1)
    label = np.full(n, "ground", dtype=object)
    for w in scene["water"]:
        label[_in_poly(pts, np.asarray(w["polygon"]))] = "water"
    for r in scene["rail"]:
        label[_seg_dist(pts, np.asarray(r["line"])) < r["width_m"] / 2] = "rail"
    for r in scene["roads"]:
        x0, y0, x1, y1 = r["bbox"]
        near = (pts[:, 0] > x0 - 40) & (pts[:, 0] < x1 + 40) & (pts[:, 1] > y0 - 40) & (pts[:, 1] < y1 + 40)
        if near.any():
            hit = _seg_dist(pts[near], np.asarray(r["line"])) < r["width_m"] / 2
            idx = np.flatnonzero(near)[hit]
            label[idx] = "road"
    trees = np.array([(t["x"], t["y"], t["crown_m"]) for t in scene["trees"]]).reshape(-1, 3)
    for x, y, crown in trees:
        label[np.hypot(pts[:, 0] - x, pts[:, 1] - y) < crown / 2] = "tree"
    for b in scene["buildings"]:
        x0, y0, x1, y1 = b["bbox"]
        near = (pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)
        if near.any():
            idx = np.flatnonzero(near)[_in_poly(pts[near], np.asarray(b["footprint"]))]
            label[idx] = b["use"]
    names = {0: "water", 2: "road", 3: "residential", 4: "commercial", 5: "industrial", 8: "tree", 9: "rail"}
    raster = np.array([names.get(int(v), "ground") for v in lc[row, col]], dtype=object)
    agreement = (raster == label).mean()
    assert agreement > 0.95, agreement
    for name in ("water", "road", "tree", "residential", "ground"):
        assert abs((raster == name).mean() - (label == name).mean()) < 0.015, name
    assert (label == "road").mean() > 0.05 and (label == "residential").mean() > 0.01  # the check has teeth


def test_indicator_totals_equal_their_formulas(city, scene):
    f = scene["formulas"]
    occupancy = f["population"]["occupancy_per_m2"]
    expected = {"population": 0.0, "carbon": 0.0, "gdp": 0.0, "nightlight": 0.0}
    for b in scene["buildings"]:
        from urbanln_cli.synth.geometry import polygon_area

        ring = np.asarray(b["footprint"])
        # corners are stored to the centimetre, which moves the area by up to perimeter × 1 cm
        area = polygon_area(ring - ring.mean(axis=0))
        perimeter = float(np.hypot(*np.diff(np.vstack([ring, ring[:1]]), axis=0).T).sum())
        assert abs(area - b["footprint_m2"]) <= 0.01 * perimeter
        assert b["floor_area_m2"] == pytest.approx(b["footprint_m2"] * b["storeys"], rel=1e-6, abs=0.01)
        noise = b["noise"]
        pop = b["floor_area_m2"] * (occupancy[b["zone"]] if b["use"] == "residential" else 0.0) * noise["population"]
        carbon = b["floor_area_m2"] * f["carbon"]["carbon_per_m2"][b["use"]] * noise["carbon"]
        gdp = b["floor_area_m2"] * f["gdp"]["gdp_per_m2"][b["use"]] * noise["gdp"]
        light = b["footprint_m2"] * f["nightlight"]["light_per_m2"][b["use"]] * noise["nightlight"]
        assert b["population"] == pytest.approx(pop, abs=2e-3) and b["carbon"] == pytest.approx(carbon, abs=2e-3)
        assert b["gdp"] == pytest.approx(gdp, abs=0.2) and b["nightlight"] == pytest.approx(light, abs=2e-3)
        for k, v in (("population", pop), ("carbon", carbon), ("gdp", gdp), ("nightlight", light)):
            expected[k] += v
    for r in scene["roads"]:
        length = float(np.hypot(*np.diff(np.asarray(r["line"]), axis=0).T).sum())
        assert length == pytest.approx(r["length_m"], abs=0.05)
        expected["carbon"] += (
            r["length_m"] * r["lanes"] * f["carbon"]["traffic_per_lane_m"][r["class"]] * r["noise"]["carbon"]
        )
        expected["nightlight"] += (
            r["length_m"] * r["width_m"] * f["nightlight"]["road_light_per_m2"][r["class"]] * r["noise"]["nightlight"]
        )
    for name, total in expected.items():
        raster = _read(city / f"{name}.tif")[0].astype(np.float64).sum()
        assert total > 0, name
        # per-object rounding in scene.json (1e-3) and float32 cells are the only differences
        assert raster == pytest.approx(total, rel=1e-5), name
    # the noise is mean-one multiplicative: it moves objects, not the city total, much
    noise = np.array([b["noise"]["population"] for b in scene["buildings"]])
    assert abs(np.log(noise).std() - indicators.NOISE_SIGMA) < 0.08


def test_a_coarse_gsd_draws_crowns_under_a_pixel(tmp_path):
    """At 4 m a pixel the smallest crowns (3.5 m) are under a pixel wide: a dot each, not a PIL error (the demo draws
    at 4 m)."""
    res = synth_city(SynthConfig(out=tmp_path / "coarse", size=256, gsd=4.0, seed=0, workers=1))
    assert res.counts["trees"] > 0 and (tmp_path / "coarse" / "imagery.tif").is_file()


def test_roof_colour_is_independent_of_use(tmp_path):
    res = synth_city(SynthConfig(out=tmp_path / "c", size=2048, seed=5, workers=2))
    buildings = json.loads((res.out / "scene.json").read_text())["buildings"]
    uses = sorted({b["use"] for b in buildings})
    colours = sorted({b["roof_colour"] for b in buildings})
    table = np.array(
        [[sum(1 for b in buildings if b["use"] == u and b["roof_colour"] == c) for c in colours] for u in uses], float
    )
    from scipy.stats import chi2_contingency

    assert chi2_contingency(table[table.sum(1) > 0][:, table.sum(0) > 0]).pvalue > 0.001


def test_cli_writes_city_and_refuses_to_overwrite(cli, tmp_path):
    out = tmp_path / "c"
    result = cli("synth", "city", out, "--size", "512", "--seed", "2", "--style", "grid")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert (out / "imagery.tif").is_file() and (out / "scene.json").is_file()
    again = cli("synth", "city", out, "--size", "512")
    assert again.exit_code == 1
    assert again.stdout == ""
    assert "error:" in again.stderr and "hint:" in again.stderr
    assert cli("synth", "city", out, "--size", "512", "--overwrite").exit_code == 0
    bad = cli("synth", "city", tmp_path / "x", "--size", "100")
    assert bad.exit_code == 2 and bad.stdout == "" and "hint:" in bad.stderr


def test_tile_and_label_on_the_city(city, tmp_path):
    import datasets

    from urbanln_cli.stages.label import LabelConfig, RasterTarget, label
    from urbanln_cli.stages.tile import TileConfig, tile

    tiles = tmp_path / "tiles"
    result = tile(TileConfig(inputs=(city / "imagery.tif",), out=tiles, size=250, workers=1))
    assert result.rows == 16
    labels = tmp_path / "labels"
    label(
        LabelConfig(
            tiles=tiles,
            out=labels,
            rasters=(
                RasterTarget("population", city / "population.tif", "sum"),
                RasterTarget("lc", city / "landcover.tif", "fractions"),
            ),
        )
    )
    ds = datasets.load_from_disk(str(labels))
    total = _read(city / "population.tif")[0].astype(np.float64).sum()
    assert sum(ds["population"]) == pytest.approx(total, rel=1e-6)
    assert np.allclose(np.nansum([ds[c] for c in ds.column_names if c.startswith("lc_")], axis=0), 1.0)
