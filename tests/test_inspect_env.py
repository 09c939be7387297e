"""`urbanln inspect` on every kind of artifact, and `urbanln env`."""

import json
from importlib import metadata

import numpy as np

from tests.fakes.ollama_server import VISION, FakeOllama
from tests.fakes.ports import dead_host
from tests.fakes.rasters import make_geotiff
from urbanln_cli import artifacts
from urbanln_cli.stages.tile import TileConfig, tile


def test_inspect_tiles_text_and_json(tmp_path, cli):
    make_geotiff(tmp_path / "city.tif", width=64, height=64)
    tile(TileConfig(inputs=(tmp_path / "city.tif",), out=tmp_path / "tiles", size=32))
    result = cli("inspect", tmp_path / "tiles")
    assert result.exit_code == 0, result.stderr
    assert "stage     tiles" in result.stdout and "rows      4" in result.stdout
    assert "image: <image PNG 32x32 RGB>" in result.stdout
    info = json.loads(cli("inspect", tmp_path / "tiles", "--json").stdout)
    assert info["kind"] == "dataset" and info["rows"] == 4
    assert info["manifest"]["stage"] == "tiles"
    assert info["sample"]["tile_id"] == "city/r0_c0"
    assert info["columns"]["lon"] == "Value(float64)"


def test_inspect_safetensors(tmp_path, cli):
    manifest = artifacts.new_manifest("embeddings", run=artifacts.RunInfo("x"), inputs=[], rows=2)
    path = artifacts.write_tensors(
        tmp_path / "e.safetensors", {"embeddings": np.zeros((2, 8), np.float32)}, manifest, {"tile_ids": ["a", "b"]}
    )
    info = json.loads(cli("inspect", path, "--json").stdout)
    assert info["kind"] == "safetensors"
    assert info["tensors"] == {"embeddings": {"dtype": "F32", "shape": [2, 8]}}
    assert info["metadata"]["tile_ids"] == '["a", "b"]'
    assert info["manifest"]["stage"] == "embeddings"


def test_inspect_errors(tmp_path, cli):
    result = cli("inspect", tmp_path / "nothing")
    assert result.exit_code == 3 and result.stdout == "" and "error: not found" in result.stderr
    (tmp_path / "folder").mkdir()
    result = cli("inspect", tmp_path / "folder")
    assert result.exit_code == 3 and "not an urbanln artifact" in result.stderr and "hint: " in result.stderr


def test_env_reports_versions_and_ollama_down(cli):
    with dead_host() as dead:
        result = cli("env", "--json", "--host", dead)
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    for key in ("urbanln", "python", "torch", "open_clip_torch", "datasets", "rasterio", "cuda"):
        assert key in info
    assert info["ollama"].startswith("not reachable")
    # the client's version is reported beside the server's status, not overwritten by it
    assert info["ollama_client"] == metadata.version("ollama")


def test_env_lists_ollama_models(cli):
    with FakeOllama({"llava:7b": VISION, "qwen2.5vl:7b": VISION}, version="0.12.0") as server:
        host = server.url
        result = cli("env", "--json", env={"OLLAMA_HOST": host})
        info = json.loads(result.stdout)
        assert info["ollama"] == "ok" and info["ollama_host"] == host
        assert info["ollama_models"] == ["llava:7b", "qwen2.5vl:7b"]
        assert info["ollama_version"] == "0.12.0"
        text = cli("env", "--host", host).stdout
        assert "ollama_models" in text and "llava:7b" in text
