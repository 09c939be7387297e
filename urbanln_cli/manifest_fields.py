"""Typed reads of fields inside an artifact's manifest: a damaged value is an InputError (exit 3), never a traceback.

``artifacts.read_manifest`` checks the manifest is a JSON object and the types of its
top-level sections; a stage that reads deeper (``params.resize.value``, ``counts.failed``,
the ``inputs`` entries) asks for each value with the type it needs here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_MISSING = object()
_JSON_NAMES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "a whole number",
    float: "a number",
    bool: "true or false",
}


def json_type(value: Any) -> str:
    """How JSON names the type of ``value``: 'an object', 'a string', 'null', …"""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    return _JSON_NAMES.get(type(value), f"a {type(value).__name__}")


def _fits(value: Any, kind: type | tuple[type, ...]) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):
        return bool in kinds
    if float in kinds and isinstance(value, int):
        return True
    return isinstance(value, kinds)


def _expected(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(_JSON_NAMES.get(k, k.__name__) for k in kinds)


def manifest_file(artifact: Path | str) -> str:
    """The file that holds an artifact's manifest, for messages."""
    from urbanln_cli.artifacts import MANIFEST_NAME

    artifact = Path(artifact)
    return str(artifact / MANIFEST_NAME) if artifact.is_dir() else str(artifact)


def damaged(artifact: Path | str, manifest: Mapping[str, Any] | None, what: str):
    """The InputError for a manifest with a wrong value (``what`` says which and why)."""
    from urbanln_cli.artifacts import PRODUCERS
    from urbanln_cli.errors import InputError

    stage = manifest.get("stage") if isinstance(manifest, Mapping) else None
    make = PRODUCERS.get(stage) if isinstance(stage, str) else None
    return InputError(
        f"corrupt manifest in {manifest_file(artifact)}: {what}",
        hint=f"re-create the artifact with `{make}`" if make else "re-create the artifact",
    )


def field(
    manifest: Mapping[str, Any],
    artifact: Path | str,
    path: str,
    kind: type | tuple[type, ...],
    default: Any = None,
    *,
    required: bool = False,
) -> Any:
    """``manifest[a][b]…`` for ``path`` 'a.b…', checked to be ``kind`` (an int is a float; a bool is neither).

    A missing key or a JSON null gives ``default`` (an InputError when ``required``); a
    value of another type, or a section on the way that is not an object, an InputError
    naming the manifest file, the field and what it holds. Floats must be finite.
    """
    value: Any = manifest
    walked: list[str] = []
    for key in path.split("."):
        if not isinstance(value, Mapping):
            raise damaged(artifact, manifest, f"'{'.'.join(walked)}' is {json_type(value)}, not an object")
        walked.append(key)
        value = value.get(key, _MISSING)
        if value is _MISSING or value is None:
            if required:
                raise damaged(artifact, manifest, f"'{path}' is missing")
            return default
    if not _fits(value, kind):
        raise damaged(artifact, manifest, f"'{path}' is {json_type(value)}, not {_expected(kind)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise damaged(artifact, manifest, f"'{path}' is {value}, not a finite number")
    return value
