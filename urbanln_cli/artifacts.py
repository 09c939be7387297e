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
import re
import shutil
import stat
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any

from urbanln_cli import __version__
from urbanln_cli.errors import InputError, OutputExistsError, OutputLocked, WrongArtifactError
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

# Columns a reader cannot do without, per stage (readers may ask for more).
REQUIRED_COLUMNS = {
    "tiles": ("tile_id", "image"),
    "labels": ("tile_id",),
    "captions": ("tile_id", "model", "caption"),
    "corpus": ("tile_id", "caption"),
}

_ENV_PACKAGES = ("datasets", "pyarrow", "numpy", "rasterio", "pillow", "torch", "open_clip_torch", "typer")


@dataclass(frozen=True)
class RunInfo:
    """How a stage was invoked: the command line and each parameter with its source."""

    command: str = ""
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Any) -> RunInfo:
        """For library calls: every field of a stage config, marked as coming from the API."""
        params = {
            f.name: {"value": _jsonable(getattr(config, f.name)), "source": "api"} for f in dataclasses.fields(config)
        }
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
    return json.loads(redact(json.dumps(manifest, default=_json_default)))


def _json_default(value: Any) -> str:
    """What a manifest records of a value JSON has no type for: never ``<X object at 0x…>``."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    text = str(value)
    return f"<{type(value).__name__}>" if " object at 0x" in text else text


def fingerprint(path: Path | str) -> dict[str, Any]:
    """A cheap identity for an input: an artifact's id, or a file's size and sampled hash."""
    path = Path(path)
    manifest = read_manifest(path)
    if manifest is not None:
        return {"path": str(path), "stage": manifest.get("stage"), "artifact_id": manifest.get("artifact_id")}
    if path.is_file():
        stat = path.stat()
        return {
            "path": str(path),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "sha256_head_tail": _head_tail_sha256(path),
        }
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


def check_output(
    out: Path | str, overwrite: bool, inputs: tuple[Path | str, ...] = (), stage: str | None = None
) -> Path:
    """Fail early, before any work, when ``out`` exists and may not be replaced.

    ``--overwrite`` replaces only an urbanln artifact of ``stage`` (any stage when
    None), never an input, a folder that holds an input or the current folder,
    home or ``/``, and never something urbanln did not make.
    """
    out = guard_path(out, inputs)
    if not out.exists():
        return out
    if not overwrite:
        raise OutputExistsError(f"output already exists: {out}")
    _check_ours(out, stage)
    return out


def guard_path(out: Path | str, inputs: tuple[Path | str, ...] = ()) -> Path:
    """``out`` may be written: not ``.``, a folder above it, home, ``/``, an input or a folder holding one."""
    out = Path(out)
    _refuse_protected(out, "write to")
    if out.is_symlink():  # replacing it would replace the link, not what it names
        raise OutputExistsError(f"output {out} is a symbolic link", hint="name the folder itself, or another -o/--out")
    resolved = out.resolve()
    for item in inputs:
        source = Path(item).resolve()
        if resolved == source or resolved in source.parents:
            raise OutputExistsError(f"output {out} would replace the input {item}", hint="choose another -o/--out")
        if source in resolved.parents and source.is_dir():  # a later --overwrite of the input would take it along
            raise OutputExistsError(
                f"output {out} is inside the input {item}", hint="write it beside the input, not inside it"
            )
    return out


def _refuse_protected(path: Path, verb: str) -> None:
    """The current folder, a folder above it, home and / are never outputs."""
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if path.name in ("", ".", "..") or resolved == cwd or resolved in cwd.parents:
        raise OutputExistsError(
            f"refusing to {verb} {path}: it is the current folder or holds it",
            hint="name an output folder inside this one, e.g. -o tiles",
        )
    if resolved in {Path("/"), Path.home().resolve()}:
        raise OutputExistsError(
            f"refusing to {verb} {path}: it is {resolved}", hint="name an output folder, e.g. -o tiles"
        )


def _check_ours(path: Path, stage: str | None) -> dict[str, Any]:
    """``path`` must be an urbanln artifact (of ``stage``, when given) to be replaced or removed."""
    try:
        manifest = read_manifest(path)
    except InputError:
        manifest = None
    if manifest is None:
        raise OutputExistsError(
            f"{path} exists and is not an urbanln artifact, so urbanln will not replace it",
            hint="choose another -o/--out, or remove it yourself",
        )
    if stage is not None and manifest.get("stage") != stage:
        raise OutputExistsError(
            f"{path} holds {manifest.get('stage')}, not {stage}, so --overwrite will not replace it",
            hint="choose another -o/--out, or remove it yourself",
        )
    return manifest


_LEFTOVER = re.compile(r"^\.?(?P<name>.+)\.(?:staging|old|tmp|empty)-[0-9a-f-]+(?:\.arrow)?$")


def remove(path: Path | str, stage: str) -> None:
    """The one way urbanln deletes anything.

    ``stage`` says what ``path`` must be: an artifact of that stage (checked by its
    manifest), ``"partial"`` (a ``<out>.partial`` folder of resumable work),
    ``"leftover"`` (a staging, old or temporary sibling that urbanln names
    ``.<out>.staging-…``) or ``"checkpoint"``. Anything else is refused, as are
    the current folder, the folders above it, home and ``/``.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    _refuse_protected(path, "delete")
    if stage == "leftover":
        if not _LEFTOVER.match(path.name):
            raise OutputExistsError(f"refusing to delete {path}: not an urbanln staging leftover")
    elif stage == "partial":
        ours = path.is_dir() and (not any(path.iterdir()) or any((path / name).exists() for name in _PARTIAL_MARKS))
        if not path.name.endswith(".partial") or not ours:
            raise OutputExistsError(
                f"refusing to delete {path}: not an urbanln .partial folder", hint="remove it yourself if it is yours"
            )
    else:
        _check_ours(path, stage)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


# What marks a <out>.partial folder as ours: resumable stages write one of these first.
PARTIAL_MARK = ".urbanln-partial"
_PARTIAL_MARKS = (PARTIAL_MARK, "plan.json", "journal.jsonl", "vlm.jsonl")


def remove_leftovers(out: Path | str) -> int:
    """Delete staging, old and temporary siblings of ``out`` left by a killed run.

    Only call this while holding ``out``'s lock: then no live writer owns them.
    """
    out = Path(out)
    removed = 0
    if not out.parent.is_dir():
        return 0
    for entry in out.parent.iterdir():
        match = _LEFTOVER.match(entry.name)
        if match and match["name"] == out.name:
            remove(entry, "leftover")
            removed += 1
    return removed


def remove_leftovers_in(folder: Path | str) -> int:
    """Delete every staging, old or temporary file urbanln left in ``folder`` (hold the lock of what owns it)."""
    folder = Path(folder)
    stale = [entry for entry in folder.iterdir() if _LEFTOVER.match(entry.name)] if folder.is_dir() else []
    for entry in stale:
        remove(entry, "leftover")
    return len(stale)


@contextlib.contextmanager
def output_lock(out: Path | str) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` while writing it; a second writer gets OutputLocked.

    An flock on ``.<out>.lock``: the OS releases it when the process dies, so a
    kill -9 leaves no stale lock. The file is removed on release.
    """
    import fcntl

    out = Path(out)
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]  # removed again if left empty
    out.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out.parent / f".{out.name}.lock"
    while True:
        try:  # never through a link: the pid is written into the file
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            raise OutputExistsError(
                f"{lock_path} is not a lock file urbanln can use ({exc.strerror})",
                hint="remove it yourself if it is yours, or write to another -o/--out",
            ) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OutputExistsError(f"{lock_path} is not a lock file urbanln can use", hint="write to another -o/--out")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise OutputLocked(
                f"another urbanln (pid {holder}) is writing {out}",
                hint="wait for it to finish, or write to another -o/--out",
            ) from None
        try:  # the previous holder may have removed the file between our open and flock
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
        os.close(fd)
        for folder in created:  # nearest first: a folder made only for the lock, that nothing else filled
            with contextlib.suppress(OSError):
                folder.rmdir()


@contextlib.contextmanager
def writing(out: Path | str, stage: str, *, overwrite: bool, inputs: tuple[Path | str, ...] = ()) -> Iterator[Path]:
    """Everything a stage does before writing ``out``: the guard, the lock, and cleaning leftovers.

    Stages wrap their whole run in this, so two writers of one output never interleave.
    """
    out = check_output(out, overwrite, inputs, stage)
    with output_lock(out):
        check_output(out, overwrite, inputs, stage)  # again: another writer may have finished meanwhile
        remove_leftovers(out)
        yield out


@contextlib.contextmanager
def staged_dir(out: Path | str, overwrite: bool = False, stage: str | None = None) -> Iterator[Path]:
    """Yield an empty hidden sibling of ``out``; on success swap it into place.

    On any exception the staging folder is removed and a previous ``out`` is untouched.
    """
    out = check_output(out, overwrite, stage=stage)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
        _fsync_dir(staging)
        _swap_into_place(staging, out, stage)
    except BaseException:
        with contextlib.suppress(OSError):
            remove(staging, "leftover")
        raise


def _swap_into_place(staging: Path, out: Path, stage: str | None) -> None:
    if out.exists():
        _check_ours(out, stage)
        old = out.parent / f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
        os.replace(staging, out)
        with contextlib.suppress(OSError):  # the new output is in place; a failed cleanup is a leftover
            remove(old, "leftover")
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
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
    with staged_dir(out, overwrite, manifest.get("stage")) as staging:
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
    with staged_dir(out, overwrite, manifest.get("stage")) as staging:
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
        where, text = path / MANIFEST_NAME, None
        try:
            text = (path / MANIFEST_NAME).read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"corrupt manifest {where}: {exc}", hint="re-create the artifact") from None
    elif path.is_file() and path.suffix == ".safetensors":
        where, text = path, _safetensors_metadata(path).get("urbanln_manifest")
        if text is None:
            return None
    else:
        return None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"corrupt manifest in {where}: {exc}", hint="re-create the artifact") from None
    if not isinstance(manifest, dict):
        raise InputError(
            f"corrupt manifest in {where}: a JSON {type(manifest).__name__}, not an object",
            hint="re-create the artifact",
        )
    for key, kind in (("params", dict), ("inputs", list), ("counts", dict), ("models", dict)):
        if key in manifest and not isinstance(manifest[key], kind):
            raise InputError(
                f"corrupt manifest in {where}: '{key}' is a JSON {type(manifest[key]).__name__}, "
                f"not {'an object' if kind is dict else 'a list'}",
                hint="re-create the artifact",
            )
    return manifest


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
    if not isinstance(version, int) or isinstance(version, bool):
        raise WrongArtifactError(
            f"{path}: the manifest's schema_version is {version!r}, not a whole number",
            hint=f"re-create it with `{make}`",
        )
    if version > SCHEMA_VERSION:
        raise WrongArtifactError(
            f"{path} has schema version {version}; this urbanln reads up to {SCHEMA_VERSION}",
            hint="upgrade urbanln, or re-create the artifact with this version",
        )
    return manifest


def read_dataset(path: Path | str, expect: str, columns: tuple[str, ...] = ()):
    """Open a dataset artifact after checking it is the stage we expect. Returns (dataset, manifest).

    ``columns`` are needed beyond the stage's ``REQUIRED_COLUMNS``; a missing one is an InputError.
    """
    manifest = check_artifact(path, expect)
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises several types for damaged folders
        raise InputError(f"cannot open {expect} dataset {path}: {exc}", hint="re-create the artifact") from None
    if not isinstance(ds, datasets.Dataset):
        raise WrongArtifactError(f"{path} is a DatasetDict, not a {expect} dataset")
    missing = [c for c in (*REQUIRED_COLUMNS.get(expect, ()), *columns) if c not in ds.column_names]
    if missing:
        raise InputError(
            f"{path} lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)} that {expect} have",
            hint=f"re-create it with `{PRODUCERS.get(expect, 'its stage')}`",
        )
    return ds, manifest


# ---------------------------------------------------------------- tensors


# Metadata holding many strings (one tile id per row) goes into a uint8 tensor of NUL-separated
# UTF-8 instead: the safetensors header is capped at 100 MB, about 4.5M tile ids.
IDS_IN_TENSORS = "urbanln_ids_in_tensors"


def write_tensors(
    path: Path | str,
    tensors: Mapping[str, Any],
    manifest: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    ids: Mapping[str, list[str]] | None = None,
) -> Path:
    """Write numpy arrays to a safetensors file atomically; metadata values are JSON-encoded.

    ``ids`` (name -> list of strings, e.g. ``tile_ids``) are stored as uint8 tensors of
    that name; ``read_tensors`` returns them in the metadata again.
    """
    import numpy as np
    from safetensors.numpy import save_file

    path = check_output(path, overwrite, stage=manifest.get("stage"))
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    meta["urbanln_manifest"] = json.dumps(dict(manifest), default=str)
    tensors = dict(tensors)
    for name, values in (ids or {}).items():
        if any("\0" in v for v in values):
            raise ValueError(f"{name}: ids may not contain NUL characters")
        tensors[name] = np.frombuffer("\0".join(values).encode("utf-8"), dtype=np.uint8)
    meta[IDS_IN_TENSORS] = json.dumps({name: len(values) for name, values in (ids or {}).items()})
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with safetensors_os_errors(tmp):
            save_file(tensors, str(tmp), metadata=meta)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def safetensors_os_errors(path: Path | str) -> Iterator[None]:
    """safetensors reports a failed write (a full disk) as SafetensorError; make it the OSError it is."""
    try:
        yield
    except Exception as exc:
        code = re.search(r"(?:code: |os error )(\d+)", str(exc)) if type(exc).__name__ == "SafetensorError" else None
        if code:
            raise OSError(int(code[1]), os.strerror(int(code[1])), str(path)) from None
        raise


def read_tensors(path: Path | str, expect: str) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """Read a safetensors artifact: (arrays, metadata with JSON values decoded, manifest)."""
    from safetensors.numpy import load_file

    manifest = check_artifact(path, expect)
    meta = {k: _maybe_json(v) for k, v in _safetensors_metadata(Path(path)).items() if k != "urbanln_manifest"}
    try:
        arrays = load_file(str(path))
    except Exception as exc:  # a truncated or damaged file: SafetensorError, OSError
        raise InputError(
            f"{path} is damaged: {exc}", hint=f"re-create it with `{PRODUCERS.get(expect, 'its stage')}`"
        ) from None
    id_counts = meta.pop(IDS_IN_TENSORS, {})
    if not isinstance(id_counts, dict):
        raise InputError(f"{path}: corrupt {IDS_IN_TENSORS} metadata", hint="re-create it")
    for name, count in id_counts.items():
        data = arrays.pop(name, None)
        values = data.tobytes().decode("utf-8", errors="replace").split("\0") if data is not None and count else []
        if data is None or len(values) != count:
            raise InputError(
                f"{path}: the {name} tensor holds {len(values)} ids, the metadata says {count}", hint="re-create it"
            )
        meta[name] = values
    return arrays, meta, manifest


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
            raw = f.read(n)
            if len(raw) < n:
                raise ValueError("the header is cut short")
            header = json.loads(raw)
        if not isinstance(header, dict) or not isinstance(header.get("__metadata__") or {}, dict):
            raise ValueError("the header is not a JSON object")
        ends = [
            v["data_offsets"][1]
            for k, v in header.items()
            if k != "__metadata__"
            and isinstance(v, dict)
            and isinstance(v.get("data_offsets"), list)
            and len(v["data_offsets"]) == 2
        ]
        size, expected = path.stat().st_size, 8 + n + max(ends, default=0)
        if size < expected:
            raise ValueError(f"the file is cut short ({size} of {expected} bytes)")
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not a readable safetensors file: {exc}", hint="re-create it") from None
    return dict(header.get("__metadata__") or {})


def safetensors_summary(path: Path) -> dict[str, Any]:
    _safetensors_metadata(path)  # checks the header
    with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    try:
        return {k: {"dtype": v["dtype"], "shape": v["shape"]} for k, v in header.items() if k != "__metadata__"}
    except (TypeError, KeyError) as exc:
        raise InputError(
            f"{path} is not a readable safetensors file: bad tensor entry ({exc})", hint="re-create it"
        ) from None


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
                remove(self.dir, "partial")
        elif self.dir.exists():
            remove(self.dir, "partial")
        if not self.resumed:
            self.dir.mkdir(parents=True)
            (self.dir / PARTIAL_MARK).touch()  # first, so even a folder whose plan never got written is known as ours
            write_json_atomic(plan_file, self.plan)
        remove_leftovers_in(self.dir)  # a shard that was being written when the last run died

    def path(self, index: int) -> Path:
        return self.dir / f"shard-{index:06d}.arrow"

    def report_path(self, index: int) -> Path:
        return self.dir / f"shard-{index:06d}.json"

    def is_done(self, index: int) -> bool:
        return self.path(index).is_file() and self.report_path(index).is_file()

    def report(self, index: int) -> dict[str, Any]:
        return json.loads(self.report_path(index).read_text(encoding="utf-8"))

    def remove(self) -> None:
        with contextlib.suppress(OSError):  # the artifact is in place; a failed cleanup only costs space
            remove(self.dir, "partial")


def commit_shard(tmp: Path, final: Path, report_path: Path, report: Mapping[str, Any]) -> None:
    """Write the shard's report, then rename its Arrow file into place (the commit point)."""
    try:
        write_json_atomic(report_path, dict(report))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:  # a shard that could not be committed (a full disk) frees its space at once
        tmp.unlink(missing_ok=True)


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
        try:
            info["config"] = json.loads((path / "open_clip_config.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(
                f"corrupt {path / 'open_clip_config.json'}: {exc}", hint="re-create the model folder"
            ) from None
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
    if info["manifest"] is not None:  # e.g. a run folder that is still training: its manifest is what there is
        info["kind"] = str(info["manifest"].get("stage"))
        return info
    raise WrongArtifactError(
        f"{path} is not an urbanln artifact",
        hint="inspect takes a dataset folder (tiles/, labels/, …), a model folder or a .safetensors file",
    )


def _feature_name(feature: Any) -> str:
    dtype = getattr(feature, "dtype", None)
    return (
        f"{type(feature).__name__}({dtype})" if dtype and type(feature).__name__ == "Value" else type(feature).__name__
    )


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
