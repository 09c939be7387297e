"""What an artifact holds, for ``urbanln inspect``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from urbanln_cli.artifacts.manifests import read_manifest
from urbanln_cli.artifacts.safetensors_header import _safetensors_metadata, safetensors_summary
from urbanln_cli.errors import InputError, WrongArtifactError


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
