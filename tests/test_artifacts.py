"""The artifact contract: atomic writes, manifests, stage checks, tensors, shards."""

import json

import datasets
import numpy as np
import pytest

from urbanln_cli import artifacts
from urbanln_cli.errors import InputError, OutputExistsError, WrongArtifactError


def _manifest(stage="labels", rows=2):
    return artifacts.new_manifest(
        stage, run=artifacts.RunInfo("urbanln test"), inputs=[], rows=rows, counts={"b": 1, "a": 2}
    )


def _ds(values=(1, 2)):
    return datasets.Dataset.from_dict({"tile_id": [f"t{v}" for v in values], "x": list(values)})


def test_round_trip_and_manifest(tmp_path):
    out = artifacts.write_dataset(_ds(), tmp_path / "labels", _manifest())
    ds, manifest = artifacts.read_dataset(out, "labels")
    assert ds["x"] == [1, 2]
    assert manifest["stage"] == "labels"
    assert manifest["schema_version"] == artifacts.SCHEMA_VERSION
    assert list(manifest["counts"]) == ["a", "b"]
    assert {"python", "datasets"} <= set(manifest["environment"])
    # still a plain datasets folder for notebooks
    assert datasets.load_from_disk(str(out))["tile_id"] == ["t1", "t2"]
    # nothing but the artifact is left in the parent folder
    assert [p.name for p in tmp_path.iterdir()] == ["labels"]


def test_existing_output_needs_overwrite(tmp_path):
    out = artifacts.write_dataset(_ds(), tmp_path / "labels", _manifest())
    with pytest.raises(OutputExistsError):
        artifacts.write_dataset(_ds((3,)), out, _manifest())
    artifacts.write_dataset(_ds((3,)), out, _manifest(rows=1), overwrite=True)
    assert artifacts.read_dataset(out, "labels")[0]["x"] == [3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels"]


def test_failed_write_keeps_previous_output(tmp_path, monkeypatch):
    out = artifacts.write_dataset(_ds(), tmp_path / "labels", _manifest())
    before = artifacts.read_manifest(out)["artifact_id"]

    def boom(path, obj):
        raise RuntimeError("disk full")

    monkeypatch.setattr(artifacts.outputs, "write_json_atomic", boom)  # fails after the data is written
    with pytest.raises(RuntimeError):
        artifacts.write_dataset(_ds((7, 8, 9)), out, _manifest(rows=3), overwrite=True)
    ds, manifest = artifacts.read_dataset(out, "labels")
    assert ds["x"] == [1, 2] and manifest["artifact_id"] == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels"]  # no staging folder left behind


def test_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.Dataset, "save_to_disk", lambda self, path: (_ for _ in ()).throw(OSError("boom")))
    with pytest.raises(OSError):
        artifacts.write_dataset(_ds(), tmp_path / "tiles", _manifest("tiles"))
    assert list(tmp_path.iterdir()) == []


def test_reader_checks_stage_and_presence(tmp_path):
    out = artifacts.write_dataset(_ds(), tmp_path / "labels", _manifest("labels"))
    with pytest.raises(WrongArtifactError, match="holds labels, but tiles is expected") as err:
        artifacts.read_dataset(out, "tiles")
    assert "urbanln tile" in err.value.hint
    assert err.value.exit_code == 3
    with pytest.raises(InputError, match="not found"):
        artifacts.read_dataset(tmp_path / "missing", "tiles")
    plain = tmp_path / "plain"
    _ds().save_to_disk(str(plain))
    with pytest.raises(WrongArtifactError, match="not an urbanln artifact"):
        artifacts.read_dataset(plain, "tiles")


def test_reader_rejects_newer_schema(tmp_path):
    manifest = _manifest("tiles")
    manifest["schema_version"] = artifacts.SCHEMA_VERSION + 1
    out = artifacts.write_dataset(_ds(), tmp_path / "tiles", manifest)
    with pytest.raises(WrongArtifactError, match="schema version"):
        artifacts.read_dataset(out, "tiles")


def test_tensors_round_trip(tmp_path):
    emb = np.arange(12, dtype=np.float32).reshape(3, 4)
    path = artifacts.write_tensors(
        tmp_path / "embeddings.safetensors",
        {"embeddings": emb},
        _manifest("embeddings", 3),
        metadata={"tile_ids": ["a", "b", "c"], "model": "m"},
    )
    arrays, meta, manifest = artifacts.read_tensors(path, "embeddings")
    np.testing.assert_array_equal(arrays["embeddings"], emb)
    assert meta == {"tile_ids": ["a", "b", "c"], "model": "m"}
    assert manifest["stage"] == "embeddings"
    with pytest.raises(OutputExistsError):
        artifacts.write_tensors(path, {"embeddings": emb}, _manifest("embeddings"))
    with pytest.raises(WrongArtifactError):
        artifacts.read_tensors(path, "tiles")
    assert [p.name for p in tmp_path.iterdir()] == ["embeddings.safetensors"]


def test_corrupt_safetensors_is_an_input_error(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(InputError, match="not a readable safetensors"):
        artifacts.read_tensors(bad, "embeddings")


def test_shard_store_resumes_only_the_same_plan(tmp_path):
    out = tmp_path / "tiles"
    store = artifacts.ShardStore(out, {"size": 256})
    assert not store.resumed
    (store.dir / "shard-000000.arrow.tmp-1").write_bytes(b"half")
    store.report_path(0).write_text(json.dumps({"counts": {}}))
    store.path(0).write_bytes(b"done")
    again = artifacts.ShardStore(out, {"size": 256})
    assert again.resumed and again.is_done(0)
    assert not list(again.dir.glob("*.tmp-*"))  # a half-written shard is dropped
    other = artifacts.ShardStore(out, {"size": 512})
    assert not other.resumed and not other.is_done(0)


def test_fingerprint_kinds(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"x" * 10)
    assert artifacts.fingerprint(f)["size"] == 10
    out = artifacts.write_dataset(_ds(), tmp_path / "tiles", _manifest("tiles"))
    fp = artifacts.fingerprint(out)
    assert fp["stage"] == "tiles" and fp["artifact_id"] == artifacts.read_manifest(out)["artifact_id"]
    with pytest.raises(InputError):
        artifacts.fingerprint(tmp_path / "nope")


def _arrow_shard(path, features, rows):
    import pyarrow as pa

    schema = features.arrow_schema
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        if rows:
            writer.write_batch(pa.RecordBatch.from_pylist(rows, schema=schema))
    return path, len(rows)


def test_sharded_dataset_is_published_without_copying(tmp_path):
    features = datasets.Features({"tile_id": datasets.Value("string"), "x": datasets.Value("int64")})
    shards = [
        _arrow_shard(tmp_path / "a.arrow", features, [{"tile_id": "a", "x": 1}, {"tile_id": "b", "x": 2}]),
        _arrow_shard(tmp_path / "b.arrow", features, []),
        _arrow_shard(tmp_path / "c.arrow", features, [{"tile_id": "c", "x": 3}]),
    ]
    out = artifacts.write_sharded_dataset(shards, features, tmp_path / "tiles", _manifest(rows=3))
    ds = datasets.load_from_disk(str(out))
    assert ds["tile_id"] == ["a", "b", "c"] and ds.features == features
    assert artifacts.read_manifest(out)["rows"] == 3
    assert (tmp_path / "a.arrow").stat().st_nlink == 2  # hard-linked, not copied
    empty = artifacts.write_sharded_dataset([shards[1]], features, tmp_path / "empty", _manifest(rows=0))
    assert datasets.load_from_disk(str(empty)).num_rows == 0


def test_an_empty_dataset_round_trips(tmp_path):
    empty = datasets.Dataset.from_dict(
        {"tile_id": [], "x": []},
        features=datasets.Features({"tile_id": datasets.Value("string"), "x": datasets.Value("int64")}),
    )
    out = artifacts.write_dataset(empty, tmp_path / "labels", _manifest("labels", rows=0))
    ds, manifest = artifacts.read_dataset(out, "labels")
    assert ds.num_rows == 0 and list(ds.features) == ["tile_id", "x"] and manifest["rows"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels"]


def test_ten_million_tile_ids_fit_beside_the_tensor(tmp_path):
    """More ids than a safetensors header holds (about 4.5M) are stored as a uint8 tensor and read back."""
    n = 10_000_000
    ids = [f"z16/{i}/{i % 65536}" for i in range(n)]
    vectors = np.zeros((n, 1), np.float16)
    path = artifacts.write_tensors(
        tmp_path / "e.safetensors",
        {"embeddings": vectors},
        _manifest("embeddings", rows=n),
        metadata={"model": {"run": "x"}},
        ids={"tile_ids": ids},
    )
    arrays, meta, manifest = artifacts.read_tensors(path, "embeddings")
    assert list(arrays) == ["embeddings"] and arrays["embeddings"].shape == (n, 1)
    assert meta["tile_ids"] == ids and meta["model"] == {"run": "x"} and manifest["rows"] == n


def test_remove_refuses_what_urbanln_did_not_make(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = artifacts.write_dataset(_ds(), tmp_path / "labels", _manifest("labels"))
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "a.png").write_bytes(b"x")
    (tmp_path / ".photos.lock").symlink_to(foreign / "a.png")  # a lock name that is a link
    (tmp_path / "notes.lock").write_text("mine")
    for path, stage in [
        (foreign, "labels"),
        (out, "tiles"),
        (tmp_path, "labels"),
        (foreign, "partial"),
        (foreign, "leftover"),
        (tmp_path / "..", "labels"),
        (foreign / "a.png", "staged"),  # not inside a staging folder
        (foreign, "empty"),  # not empty
        (tmp_path / ".photos.lock", "lock"),
        (tmp_path / "notes.lock", "lock"),
        (tmp_path / "..", "empty"),
    ]:
        with pytest.raises(OutputExistsError):
            artifacts.remove(path, stage)
    assert (foreign / "a.png").read_bytes() == b"x" and out.is_dir() and (tmp_path / "notes.lock").exists()
    artifacts.remove(out, "labels")
    assert not out.exists()
    staging = tmp_path / ".labels.staging-123-0123abcd"
    staging.mkdir()
    (staging / "data.arrow").write_bytes(b"x")
    (tmp_path / "made").mkdir()
    (tmp_path / ".labels.lock").write_text("123\n")
    for path, stage in [
        (staging / "data.arrow", "staged"),
        (tmp_path / "made", "empty"),
        (tmp_path / ".labels.lock", "lock"),
        (staging, "leftover"),
    ]:
        artifacts.remove(path, stage)
        assert not path.exists()


def test_atomic_file_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(OSError), artifacts.atomic_file(target) as tmp:
        tmp.write_text("half")
        raise OSError(28, "No space left on device")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.json"]
    with artifacts.atomic_file(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["report.json"]
