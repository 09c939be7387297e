"""PNG figures drawn with matplotlib's Agg canvas: scatter, map, confusion matrix and segmentation examples."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from urbanln_cli.evaluation import plots


def _png(path, min_w=300, min_h=200) -> np.ndarray:
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.verify()
    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB"))
    assert rgb.shape[1] >= min_w and rgb.shape[0] >= min_h, rgb.shape
    assert rgb.shape[1] <= 6000 and rgb.shape[0] <= 6000, rgb.shape
    assert rgb.std() > 10  # not blank
    return rgb


def _count(rgb: np.ndarray, colour, tol: int = 3) -> int:
    return int((np.abs(rgb.astype(int) - np.array(colour)).max(axis=2) <= tol).sum())


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def _grid_tiles(nx=30, ny=20, seed=0):
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.arange(nx), np.arange(ny))
    lon, lat = -122.3 + gx.ravel() * 0.01, 47.6 + gy.ravel() * 0.007
    y_true = np.exp(rng.normal(3, 1.2, lon.size))
    return lon, lat, y_true, y_true * np.exp(rng.normal(0, 0.4, lon.size))


def test_scatter_is_a_png_per_panel(tmp_path, no_warnings):
    _, _, y, p = _grid_tiles()
    one = _png(plots.scatter_figure(tmp_path / "one.png", [("good", y, p, "R2 0.80 ± 0.02")], "carbon"))
    two = _png(
        plots.scatter_figure(tmp_path / "two.png", [("good", y, p, "R2 0.8"), ("bad", y, p[::-1], "R2 0")], "carbon")
    )
    assert two.shape[1] > 1.6 * one.shape[1]  # one panel each


def test_scatter_on_log_axes_with_zeros_negatives_and_nan(tmp_path, no_warnings):
    """symlog axes: zero and negative predictions, NaN and inf pairs must not break the figure or warn."""
    _, _, y, p = _grid_tiles()
    y[:5], p[5:10], p[10:15], y[15:20] = 0.0, -3.0, np.nan, np.inf
    _png(plots.scatter_figure(tmp_path / "log.png", [("m", y, p, "R2 0.7")], "population", log_scale=True))
    empty = np.full(10, np.nan)
    _png(plots.scatter_figure(tmp_path / "empty.png", [("nothing", empty, empty, "n/a")], "population", log_scale=True))


def test_scatter_of_100k_points_is_quick(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.normal(size=100_000)
    _png(plots.scatter_figure(tmp_path / "big.png", [("big", y, y + rng.normal(size=y.size), "R2 0.5")], "x"))


def test_map_colours_tiles_and_greys_missing_values(tmp_path, no_warnings):
    lon, lat, y, p = _grid_tiles()
    full = _png(plots.map_figure(tmp_path / "map.png", lon, lat, [("a", y, p), ("b", y, y)], "carbon"), 800, 400)
    assert len(np.unique(full.reshape(-1, 3), axis=0)) > 100  # viridis and RdBu, not a few flat colours
    grey = tuple(int(plots.NAN_GREY[i : i + 2], 16) for i in (1, 3, 5))
    holes = p.copy()
    holes[: p.size // 2] = np.nan
    gappy = _png(plots.map_figure(tmp_path / "gappy.png", lon, lat, [("a", y, holes)], "carbon", log_scale=True))
    # the predicted and residual panels show half the tiles grey; without NaN there is (next to) no such grey
    assert _count(gappy, grey, 0) > 20 * (_count(full, grey, 0) + 100)


def test_map_edge_cases(tmp_path, no_warnings):
    lon, lat, y, p = _grid_tiles(3, 1)
    _png(plots.map_figure(tmp_path / "one.png", lon[:1], lat[:1], [("a", y[:1], p[:1])], "x"), 300, 150)
    lon = lon.copy()
    lon[1] = np.nan  # a tile without coordinates is left out
    _png(plots.map_figure(tmp_path / "some.png", lon, lat, [("a", y, p)], "x"), 300, 150)
    nowhere = np.full(3, np.nan)
    _png(plots.map_figure(tmp_path / "none.png", nowhere, nowhere, [("a", y, p)], "x"), 300, 150)


def test_confusion_is_row_normalised(tmp_path, no_warnings):
    darkest = (8, 48, 107)  # the top of matplotlib's Blues
    # the rare class (1 tile) is all right: row-normalised it is as dark as the common one
    both, half = tmp_path / "both.png", tmp_path / "half.png"
    plots.confusion_figure(both, np.array([[1000, 0], [0, 1]]), ["common", "rare"], "t")
    plots.confusion_figure(half, np.array([[1000, 0], [1, 1]]), ["common", "rare"], "t")
    assert _count(_png(both), darkest, 6) > 1.6 * _count(_png(half), darkest, 6)


@pytest.mark.parametrize("n", [2, 12, 30])
def test_confusion_for_many_classes(tmp_path, n, no_warnings):
    rng = np.random.default_rng(n)
    matrix = rng.integers(0, 20, (n, n)) + np.diag(rng.integers(20, 80, n))
    matrix[0] = 0  # a class never in the truth: its row stays white, no division by zero
    names = [f"land use class {i}" for i in range(n)]
    plots.confusion_figure(tmp_path / "c.png", matrix, names, f"{n} classes")
    rgb = _png(tmp_path / "c.png", 400, 400)
    assert rgb.shape[0] > 40 * n and rgb.shape[1] > 40 * n  # cells stay readable as classes grow


def test_confusion_rejects_a_matrix_of_the_wrong_shape(tmp_path):
    with pytest.raises(ValueError, match="expected \\(3, 3\\)"):
        plots.confusion_figure(tmp_path / "x.png", np.ones((2, 2), int), ["a", "b", "c"], "t")


def test_segmentation_uses_the_raster_palette_and_greys_ignored(tmp_path, no_warnings):
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, (16, 16))
    truth[:4] = 255
    tiles = [("t0", rng.integers(0, 255, (64, 64, 3)), truth, rng.integers(0, 3, (16, 16)))]
    path = plots.segmentation_figure(
        tmp_path / "seg.png",
        tiles,
        [0, 1, 2],
        {0: 0.5, 1: 0.25, 2: float("nan")},
        "landcover (mIoU 0.38)",
        palette={1: (255, 0, 0)},
        names={0: "water", 1: "built"},
    )
    rgb = _png(path)
    assert _count(rgb, (255, 0, 0), 0) > 500  # class 1 in its own colour
    assert _count(rgb, plots.IGNORED, 0) > 300  # class 255
    assert plots.class_colours([0, 1, 2], {1: (255, 0, 0)})[1].tolist() == [255, 0, 0]
    lut = plots.class_colours(list(range(12)))
    assert len({tuple(c) for c in lut[:12].tolist()}) == 12  # distinct defaults


def test_no_pyplot_no_global_backend_and_a_lazy_import(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "from urbanln_cli.evaluation import plots\n"
        "assert 'matplotlib' not in sys.modules, 'imported at module level'\n"
        f"plots.confusion_figure({str(tmp_path / 'c.png')!r}, np.eye(2, dtype=int), ['a', 'b'], 't')\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
