"""Artifact manifests: what a run records beside its output, and checking what an input holds."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import platform
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any

from urbanln_cli import __version__
from urbanln_cli.artifacts.safetensors_header import _safetensors_metadata
from urbanln_cli.errors import InputError, WrongArtifactError
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
    "export": "urbanln export --embeddings embeddings.safetensors",
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
