"""The header of a safetensors file, read without loading its tensors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from urbanln_cli.errors import InputError


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
