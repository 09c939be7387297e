"""Safetensors artifacts: arrays with JSON metadata and a manifest, written atomically."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from urbanln_cli.artifacts.manifests import PRODUCERS, check_artifact
from urbanln_cli.artifacts.outputs import atomic_file, check_output
from urbanln_cli.artifacts.safetensors_header import _safetensors_metadata
from urbanln_cli.errors import InputError

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
    with atomic_file(path) as tmp, safetensors_os_errors(tmp):
        save_file(tensors, str(tmp), metadata=meta)
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
