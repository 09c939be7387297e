"""Every read and write of an artifact: datasets folders, manifests, safetensors, shards.

Dataset artifacts are ``datasets.Dataset.save_to_disk`` folders with an
``urbanln.json`` manifest beside the data. They are built in a hidden staging
sibling and renamed into place, so a crash never leaves a half-written folder
under the final name. Resumable stages keep finished pieces in ``<out>.partial/``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import uuid
from dataclasses import dataclass, field
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any, Iterator, Mapping

from urbanln_cli import __version__
from urbanln_cli.errors import InputError, OutputExistsError, WrongArtifactError
from urbanln_cli.redact import redact

SCHEMA_VERSION = 1
MANIFEST_NAME = "urbanln.json"

# stage name -> the command that writes it (for hints when the wrong artifact is given)
PRODUCERS = {
    "synth": "urbanln synth city OUT/",
    "tiles": "urbanln tile IMAGERY",
    "labels": "urbanln label tiles/ --raster NAME=PATH",
    "captions": "urbanln caption tiles/ --models llava",
    "corpus": "urbanln fuse captions/",
    "run": "urbanln pretrain --corpus corpus/",
    "embeddings": "urbanln embed",
    "probe": "urbanln probe --target NAME",
}

_ENV_PACKAGES = ("datasets", "pyarrow", "numpy", "rasterio", "pillow", "torch", "open_clip_torch", "typer")


@dataclass(frozen=True)
class RunInfo:
    """How a stage was invoked: the command line and each parameter with its source."""

    command: str = ""
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Any) -> "RunInfo":
        """For library calls: every field of a stage config, marked as coming from the API."""
        params = {f.name: {"value": _jsonable(getattr(config, f.name)), "source": "api"} for f in dataclasses.fields(config)}
        return cls(command=f"python: {type(config).__name__}", params=params)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def environment() -> dict[str, str]:
    env = {"python": platform.python_version(), "platform": platform.platform()}
    for name in _ENV_PACKAGES:
        with contextlib.suppress(_metadata.PackageNotFoundError):
            env[name] = _metadata.version(name)
    return env


def new_manifest(
    stage: str,
    *,
    run: RunInfo,
    inputs: list[dict[str, Any]],
    rows: int,
    counts: Mapping[str, int] | None = None,
    models: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "stage": stage,
        "artifact_id": uuid.uuid4().hex,
        "urbanln_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": run.command,
        "params": _jsonable(dict(run.params)),
        "inputs": _jsonable(inputs),
        "models": _jsonable(dict(models or {})),
        "rows": rows,
        "counts": dict(sorted((counts or {}).items())),
        **_jsonable(dict(extra or {})),
        "environment": environment(),
    }
    # Command lines and parameters may hold credentials (http://user:pass@host): never record them.
    return json.loads(redact(json.dumps(manifest, default=str)))


def fingerprint(path: Path | str) -> dict[str, Any]:
    """A cheap identity for an input: an artifact's id, or a file's size and sampled hash."""
    path = Path(path)
    manifest = read_manifest(path)
    if manifest is not None:
        return {"path": str(path), "stage": manifest.get("stage"), "artifact_id": manifest.get("artifact_id")}
    if path.is_file():
        stat = path.stat()
        return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256_head_tail": _head_tail_sha256(path)}
    if path.is_dir():
        h, n, total = hashlib.sha256(), 0, 0
        for p in sorted(q for q in path.rglob("*") if q.is_file()):
            stat = p.stat()
            size = stat.st_size
            h.update(f"{p.relative_to(path).as_posix()}\0{size}\0{stat.st_mtime_ns}\n".encode())
            n, total = n + 1, total + size
        return {"path": str(path), "files": n, "bytes": total, "listing_sha256": h.hexdigest()}
    raise InputError(f"input not found: {path}", hint="check the path")


def _head_tail_sha256(path: Path, span: int = 1 << 20) -> str:
    # Hashing multi-GB rasters in full would dominate small runs; size + first and last MiB
    # catches re-exports and edits in practice.
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(span))
        size = f.seek(0, os.SEEK_END)
        if size > span:
            f.seek(max(span, size - span))
            h.update(f.read(span))
    return h.hexdigest()


# ---------------------------------------------------------------- writing


def check_output(out: Path | str, overwrite: bool, inputs: tuple[Path | str, ...] = ()) -> Path:
    """Fail early, before any work, when ``out`` exists and may not be replaced.

    ``--overwrite`` replaces only an artifact (a folder with a manifest, or a
    .safetensors file), never an input, a folder that holds an input, or ``.``.
    """
    out = Path(out)
    resolved = out.resolve()
    if resolved == Path.cwd().resolve() or out.name in ("", ".", ".."):
        raise OutputExistsError(f"output {out} is the current folder or its parent", hint="name an output folder, e.g. -o tiles")
    for item in inputs:
        source = Path(item).resolve()
        if resolved == source or resolved in source.parents:
            raise OutputExistsError(f"output {out} would replace the input {item}", hint="choose another -o/--out")
    if not out.exists():
        return out
    if not overwrite:
        raise OutputExistsError(f"output already exists: {out}")
    if read_manifest(out) is None:
        raise OutputExistsError(
            f"{out} exists and is not an urbanln artifact, so --overwrite will not replace it",
            hint="choose another -o/--out, or remove it yourself",
        )
    return out


@contextlib.contextmanager
def staged_dir(out: Path | str, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty hidden sibling of ``out``; on success swap it into place.

    On any exception the staging folder is removed and a previous ``out`` is untouched.
    """
    out = check_output(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
        _fsync_dir(staging)
        _swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_into_place(staging: Path, out: Path) -> None:
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out)
    _fsync_dir(out.parent)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_dataset(ds, out: Path | str, manifest: Mapping[str, Any], overwrite: bool = False) -> Path:
    """Save a ``datasets.Dataset`` and its manifest atomically under ``out``."""
    import datasets

    out = Path(out)
    datasets.disable_progress_bars()  # our own progress bar is on stderr already
    if ds.num_rows == 0:
        # save_to_disk writes no data file for 0 rows, and load_from_disk then fails: keep one empty file
        import pyarrow as pa

        out.parent.mkdir(parents=True, exist_ok=True)
        empty = out.parent / f".{out.name}.empty-{uuid.uuid4().hex[:8]}.arrow"
        try:
            with pa.OSFile(str(empty), "wb") as sink, pa.ipc.new_stream(sink, ds.features.arrow_schema):
                pass
            return write_sharded_dataset([(empty, 0)], ds.features, out, manifest, overwrite)
        finally:
            empty.unlink(missing_ok=True)
    with staged_dir(out, overwrite) as staging:
        ds.save_to_disk(str(staging))
        write_json_atomic(staging / MANIFEST_NAME, dict(manifest))
    return out


def write_sharded_dataset(
    shards: list[tuple[Path, int]], features, out: Path | str, manifest: Mapping[str, Any], overwrite: bool = False
) -> Path:
    """Publish finished Arrow shards (path, rows) as a ``save_to_disk`` folder, without copying them.

    Copying through ``save_to_disk`` would re-read and re-write every image: about a
    tenth of tiling time, and memory that grows with the output. Instead datasets
    itself writes the metadata of an empty dataset with these features, the shards
    are hard-linked in as its data files, and ``load_from_disk`` must open the result
    before it is renamed into place.
    """
    import datasets

    out = Path(out)
    datasets.disable_progress_bars()
    with staged_dir(out, overwrite) as staging:
        datasets.Dataset.from_dict({name: [] for name in features}, features=features).save_to_disk(str(staging))
        state = json.loads((staging / "state.json").read_text(encoding="utf-8"))
        # load_from_disk needs at least one data file, so an empty result keeps one empty shard
        full = [(path, rows) for path, rows in shards if rows] or shards[:1]
        if full:
            for entry in state["_data_files"]:
                (staging / entry["filename"]).unlink()
            names = [f"data-{i:05d}-of-{len(full):05d}.arrow" for i in range(len(full))]
            for (path, _), name in zip(full, names):
                _link_or_copy(path, staging / name)
            state["_data_files"] = [{"filename": name} for name in names]
        state["_fingerprint"] = manifest["artifact_id"]
        write_json_atomic(staging / "state.json", state)
        check = datasets.load_from_disk(str(staging))
        expected = sum(rows for _, rows in full)
        if check.num_rows != expected or check.features != features:
            raise RuntimeError(f"sharded dataset check failed: {check.num_rows} rows, expected {expected}")
        del check
        write_json_atomic(staging / MANIFEST_NAME, dict(manifest))
    return out


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not supported
        shutil.copyfile(src, dst)


def partial_dir(out: Path | str) -> Path:
    """Where a resumable stage keeps finished pieces until the artifact is complete."""
    out = Path(out)
    return out.parent / f"{out.name}.partial"


# ---------------------------------------------------------------- reading


def read_manifest(path: Path | str) -> dict[str, Any] | None:
    """The manifest of an artifact folder or safetensors file, or None if it has none."""
    path = Path(path)
    if path.is_dir() and (path / MANIFEST_NAME).is_file():
        try:
            return json.loads((path / MANIFEST_NAME).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"corrupt manifest {path / MANIFEST_NAME}: {exc}", hint="re-create the artifact") from None
    if path.is_file() and path.suffix == ".safetensors":
        meta = _safetensors_metadata(path)
        if "urbanln_manifest" in meta:
            return json.loads(meta["urbanln_manifest"])
    return None


def check_artifact(path: Path | str, expect: str) -> dict[str, Any]:
    """Return the manifest of ``path`` if it is a ``expect`` artifact; else a clear InputError."""
    path = Path(path)
    make = PRODUCERS.get(expect, "the stage that makes it")
    if not path.exists():
        raise InputError(f"{expect} artifact not found: {path}", hint=f"create it with `{make}`, or pass its path")
    manifest = read_manifest(path)
    if manifest is None:
        raise WrongArtifactError(
            f"{path} is not an urbanln artifact (no {MANIFEST_NAME}); expected {expect}",
            hint=f"create it with `{make}`",
        )
    got = manifest.get("stage")
    if got != expect:
        raise WrongArtifactError(
            f"{path} holds {got}, but {expect} is expected here", hint=f"create {expect} with `{make}`"
        )
    version = manifest.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise WrongArtifactError(
            f"{path} has schema version {version}; this urbanln reads up to {SCHEMA_VERSION}",
            hint="upgrade urbanln, or re-create the artifact with this version",
        )
    return manifest


def read_dataset(path: Path | str, expect: str):
    """Open a dataset artifact after checking it is the stage we expect. Returns (dataset, manifest)."""
    manifest = check_artifact(path, expect)
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises several types for damaged folders
        raise InputError(f"cannot open {expect} dataset {path}: {exc}", hint="re-create the artifact") from None
    if not isinstance(ds, datasets.Dataset):
        raise WrongArtifactError(f"{path} is a DatasetDict, not a {expect} dataset")
    return ds, manifest


# ---------------------------------------------------------------- tensors


def write_tensors(
    path: Path | str,
    tensors: Mapping[str, Any],
    manifest: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write numpy arrays to a safetensors file atomically; metadata values are JSON-encoded."""
    from safetensors.numpy import save_file

    path = check_output(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    meta["urbanln_manifest"] = json.dumps(dict(manifest), default=str)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(dict(tensors), str(tmp), metadata=meta)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_tensors(path: Path | str, expect: str) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """Read a safetensors artifact: (arrays, metadata with JSON values decoded, manifest)."""
    from safetensors.numpy import load_file

    manifest = check_artifact(path, expect)
    meta = {k: _maybe_json(v) for k, v in _safetensors_metadata(Path(path)).items() if k != "urbanln_manifest"}
    return load_file(str(path)), meta, manifest


def _maybe_json(value: str) -> Any:
    try:
        return json.loads(value)
    except (json.JSONDecodeError, TypeError):
        return value


def _safetensors_metadata(path: Path) -> dict[str, str]:
    # The header is an 8-byte little-endian length followed by JSON; read it without loading tensors.
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n <= 0 or n > 100_000_000:
                raise ValueError("bad header length")
            header = json.loads(f.read(n))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not a readable safetensors file: {exc}", hint="re-create it") from None
    return dict(header.get("__metadata__") or {})


def safetensors_summary(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    return {k: {"dtype": v["dtype"], "shape": v["shape"]} for k, v in header.items() if k != "__metadata__"}


# ---------------------------------------------------------------- resumable shards


class ShardStore:
    """Finished pieces of a long stage in ``<out>.partial/``, so a rerun skips them.

    A shard is committed by renaming its Arrow file into place (after its report),
    so a shard file that exists is complete. ``plan`` describes everything that
    decides the shards' content; a partial folder from a different plan is discarded.
    """

    def __init__(self, out: Path | str, plan: Mapping[str, Any]):
        self.dir = partial_dir(out)
        self.plan = json.loads(json.dumps(plan, default=str))
        self.resumed = False
        plan_file = self.dir / "plan.json"
        if plan_file.is_file():
            try:
                old = json.loads(plan_file.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                old = None
            if old == self.plan:
                self.resumed = True
            else:
                shutil.rmtree(self.dir)
        elif self.dir.exists():
            shutil.rmtree(self.dir)
        if not self.resumed:
            self.dir.mkdir(parents=True)
            write_json_atomic(plan_file, self.plan)
        for stale in self.dir.glob("*.tmp-*"):  # a shard that was being written when the last run died
            stale.unlink(missing_ok=True)

    def path(self, index: int) -> Path:
        return self.dir / f"shard-{index:06d}.arrow"

    def report_path(self, index: int) -> Path:
        return self.dir / f"shard-{index:06d}.json"

    def is_done(self, index: int) -> bool:
        return self.path(index).is_file() and self.report_path(index).is_file()

    def report(self, index: int) -> dict[str, Any]:
        return json.loads(self.report_path(index).read_text(encoding="utf-8"))

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def commit_shard(tmp: Path, final: Path, report_path: Path, report: Mapping[str, Any]) -> None:
    """Write the shard's report, then rename its Arrow file into place (the commit point)."""
    write_json_atomic(report_path, dict(report))
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


# ---------------------------------------------------------------- inspection


def describe(path: Path | str, sample: bool = True) -> dict[str, Any]:
    """What an artifact holds: kind, manifest, rows, columns and a sample row."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"not found: {path}", hint="pass the path of an artifact folder or .safetensors file")
    info: dict[str, Any] = {"path": str(path), "manifest": read_manifest(path)}
    if path.is_file() and path.suffix == ".safetensors":
        info["kind"] = "safetensors"
        info["tensors"] = safetensors_summary(path)
        info["metadata"] = {
            k: (v if len(v) < 200 else v[:200] + "…")
            for k, v in _safetensors_metadata(path).items()
            if k != "urbanln_manifest"
        }
        return info
    if path.is_dir() and (path / "open_clip_config.json").is_file():
        info["kind"] = "model"
        info["config"] = json.loads((path / "open_clip_config.json").read_text())
        return info
    if path.is_dir() and (path / "state.json").is_file():
        import datasets

        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as exc:
            raise InputError(f"cannot open dataset {path}: {exc}", hint="re-create the artifact") from None
        info["kind"] = "dataset"
        info["rows"] = ds.num_rows
        info["columns"] = {name: _feature_name(feat) for name, feat in ds.features.items()}
        if sample and ds.num_rows:
            info["sample"] = {k: _summarise(v) for k, v in ds.select_columns(list(ds.features))[0].items()}
        return info
    raise WrongArtifactError(
        f"{path} is not an urbanln artifact",
        hint="inspect takes a dataset folder (tiles/, labels/, …), a model folder or a .safetensors file",
    )


def _feature_name(feature: Any) -> str:
    dtype = getattr(feature, "dtype", None)
    return f"{type(feature).__name__}({dtype})" if dtype and type(feature).__name__ == "Value" else type(feature).__name__


def _summarise(value: Any) -> Any:
    if hasattr(value, "size") and hasattr(value, "mode") and hasattr(value, "format"):  # a PIL image
        return f"<image {value.format or ''} {value.size[0]}x{value.size[1]} {value.mode}>"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, str) and len(value) > 300:
        return value[:300] + "…"
    if isinstance(value, list) and len(value) > 20:
        return [_summarise(v) for v in value[:20]] + [f"… {len(value) - 20} more"]
    return value
