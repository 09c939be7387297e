"""`urbanln embed`: trained runs, open_clip weights and baselines, aligned with tile ids."""

import datasets
import numpy as np
import pytest

from urbanln_cli import artifacts
from urbanln_cli.stages.embed import EmbedConfig, embed


def _load(path):
    arrays, meta, manifest = artifacts.read_tensors(path, "embeddings")
    return arrays, meta, manifest


def test_embed_a_trained_run(trained, tmp_path, cli):
    folder, tiles, run, ids = trained
    result = cli(
        "embed",
        "--tiles",
        tiles,
        "--model",
        run,
        "--corpus",
        folder / "corpus",
        "-o",
        tmp_path / "e.safetensors",
        "--workers",
        "0",
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "e.safetensors")
    arrays, meta, manifest = _load(tmp_path / "e.safetensors")
    assert arrays["embeddings"].shape == (16, 64) and meta["tile_ids"] == ids
    assert np.allclose(np.linalg.norm(arrays["embeddings"], axis=1), 1, atol=1e-4)
    assert arrays["text_embeddings"].shape == (16, 64) and meta["text_tile_ids"] == ids
    assert len(meta["model"]["weights_sha256"]) == 64 and manifest["stage"] == "embeddings"


def test_workers_give_the_same_vectors(trained, tmp_path):
    _, tiles, run, _ = trained
    a = embed(EmbedConfig(tiles=tiles, model=run, out=tmp_path / "a.safetensors", workers=0, batch_size=5))
    b = embed(EmbedConfig(tiles=tiles, model=run, out=tmp_path / "b.safetensors", workers=2, batch_size=7))
    assert np.allclose(_load(a.out)[0]["embeddings"], _load(b.out)[0]["embeddings"], atol=1e-5)


def test_baselines(trained, tmp_path):
    _, tiles, _, ids = trained
    pixels = embed(EmbedConfig(tiles=tiles, baseline="pixels", out=tmp_path / "p.safetensors", workers=0))
    assert pixels.dim == 34 and _load(pixels.out)[1]["model"] == {"baseline": "pixels"}
    r1 = embed(
        EmbedConfig(tiles=tiles, baseline="random", arch="urbanln-tiny", out=tmp_path / "r1.safetensors", workers=0)
    )
    r2 = embed(
        EmbedConfig(tiles=tiles, baseline="random", arch="urbanln-tiny", out=tmp_path / "r2.safetensors", workers=0)
    )
    assert r1.dim == 64 and np.array_equal(_load(r1.out)[0]["embeddings"], _load(r2.out)[0]["embeddings"])


def test_errors(trained, tmp_path, cli, monkeypatch):
    folder, tiles, run, _ = trained
    monkeypatch.chdir(tmp_path)
    result = cli("embed", "--tiles", tiles)
    assert result.exit_code == 3 and "no trained model in runs/latest" in result.stderr and "hint: " in result.stderr
    result = cli("embed", "--tiles", folder / "corpus", "--model", run)
    assert result.exit_code == 3 and "holds corpus, but tiles is expected" in result.stderr
    result = cli("embed", "--tiles", tiles, "--baseline", "noise")
    assert result.exit_code == 2 and result.stdout == ""
    assert cli("embed", "--tiles", tiles, "--baseline", "pixels", "--workers", "0").exit_code == 0
    result = cli("embed", "--tiles", tiles, "--baseline", "pixels")
    assert result.exit_code == 1 and "already exists" in result.stderr


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupt_tile_is_an_input_error(trained, tmp_path, cli, workers):
    _, tiles, _, _ = trained
    ds = datasets.load_from_disk(str(tiles)).cast_column("image", datasets.Image(decode=False)).to_list()
    ds[3]["image"] = {"bytes": b"garbage", "path": None}
    from urbanln_cli.stages.tile import tile_features

    bad = artifacts.write_dataset(
        datasets.Dataset.from_list(ds, features=tile_features()),
        tmp_path / "bad",
        artifacts.new_manifest("tiles", run=artifacts.RunInfo("t"), inputs=[], rows=len(ds)),
    )
    result = cli(
        "embed", "--tiles", bad, "--baseline", "pixels", "--workers", workers, "-o", tmp_path / "e.safetensors"
    )
    assert result.exit_code == 3 and result.stdout == ""
    assert result.stderr.count("\n") == 2 and f"tile {ds[3]['tile_id']}: cannot decode its image" in result.stderr
    assert " at 0x" not in result.stderr  # no memory addresses


def test_random_baseline_copies_the_run_architecture(trained, tmp_path, monkeypatch):
    _, tiles, run, _ = trained
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "latest").symlink_to(run)
    monkeypatch.chdir(tmp_path)
    result = embed(EmbedConfig(tiles=tiles, baseline="random", out=tmp_path / "r.safetensors", workers=0))
    assert result.dim == 64 and result.source["arch"] == "urbanln-tiny"
