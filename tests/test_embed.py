"""`urbanln embed`: trained runs, open_clip weights and baselines, aligned with tile ids."""

import datasets
import numpy as np
import pytest

from urbanln_cli import artifacts
from urbanln_cli.errors import InputError
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


def test_random_baseline_copies_the_run_architecture(trained, tmp_path, cli):
    _, tiles, run, _ = trained
    result = cli(
        "embed",
        "--tiles",
        tiles,
        "--baseline",
        "random",
        "--model",
        run,
        "--workers",
        "0",
        "-o",
        tmp_path / "r.safetensors",
    )
    assert result.exit_code == 0, result.stderr
    assert f"random weights of urbanln-tiny from run {run}, seed 0" in result.stderr
    arrays, meta, manifest = _load(tmp_path / "r.safetensors")
    assert arrays["embeddings"].shape[1] == 64
    assert meta["model"] == {"baseline": "random", "arch": "urbanln-tiny", "seed": 0, "arch_from": f"run {run}"}
    assert manifest["models"]["source"] == meta["model"]


def test_random_baseline_needs_an_architecture(trained, tmp_path, cli, monkeypatch):
    """No silent ViT-B-16: without --arch or --model it stops, even where runs/latest exists."""
    _, tiles, run, _ = trained
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "latest").symlink_to(run)
    monkeypatch.chdir(tmp_path)
    result = cli("embed", "--tiles", tiles, "--baseline", "random", "--workers", "0")
    assert result.exit_code == 2 and result.stdout == ""
    assert (
        "--baseline random needs an architecture" in result.stderr and "hint: e.g. --model runs/latest" in result.stderr
    )
    assert not (tmp_path / "embeddings.safetensors").exists()
    both = cli("embed", "--tiles", tiles, "--baseline", "random", "--arch", "urbanln-tiny", "--model", run)
    assert both.exit_code == 2 and "not both" in both.stderr
    weights = cli("embed", "--tiles", tiles, "--baseline", "random", "--arch", "urbanln-tiny", "--pretrained", "openai")
    assert weights.exit_code == 2 and "no --pretrained" in weights.stderr
    unknown = cli("embed", "--tiles", tiles, "--baseline", "random", "--arch", "ViT-Q-99", "--workers", "0")
    assert unknown.exit_code == 2 and unknown.stdout == ""
    result = cli("embed", "--tiles", tiles, "--baseline", "random", "--arch", "urbanln-tiny", "--workers", "0")
    assert result.exit_code == 0 and "random weights of urbanln-tiny from --arch, seed 0" in result.stderr
    assert _load(tmp_path / "embeddings.safetensors")[1]["model"]["arch_from"] == "--arch"


def test_random_baseline_from_a_run_that_does_not_record_its_architecture(trained, tmp_path):
    _, tiles, run, _ = trained
    import json
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("checkpoints"))
    manifest = json.loads((copy / "urbanln.json").read_text())
    manifest["models"].pop("arch")
    (copy / "urbanln.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="does not record its architecture"):
        embed(EmbedConfig(tiles=tiles, baseline="random", model=copy, out=tmp_path / "r.safetensors", workers=0))
