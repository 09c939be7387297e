"""Checkpoints without pickle: tensors in a safetensors file, everything else in JSON.

A nested state (dicts, lists, tensors, numpy arrays, numbers, strings) is
flattened: each tensor is stored under its path, and the JSON tree keeps a
``{"__tensor__": path}`` marker in its place. A checkpoint is a folder written
in a staging sibling and renamed into place; ``LATEST`` names the newest.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from urbanln_cli import artifacts
from urbanln_cli.errors import InputError, OutputExistsError

log = logging.getLogger(__name__)

KEEP = 2  # checkpoints kept on disk besides the newest


def flatten(state: Any, tensors: dict[str, torch.Tensor], path: str = "") -> Any:
    if isinstance(state, torch.Tensor):
        key = path or "root"
        tensors[key] = state.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(state, np.ndarray):
        key = path or "root"
        tensors[key] = torch.from_numpy(np.ascontiguousarray(state).copy())
        return {"__ndarray__": key}
    if isinstance(state, dict):
        return {"__dict__": [[_key(k), flatten(v, tensors, f"{path}/{k}")] for k, v in state.items()]}
    if isinstance(state, (list, tuple)):
        return {
            "__list__" if isinstance(state, list) else "__tuple__": [
                flatten(v, tensors, f"{path}/{i}") for i, v in enumerate(state)
            ]
        }
    if isinstance(state, (np.integer, np.floating)):
        return state.item()
    return state


def _key(k: Any) -> Any:
    return {"__int__": k} if isinstance(k, int) else k


def unflatten(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(tree, dict):
        if "__tensor__" in tree:
            return tensors[tree["__tensor__"]]
        if "__ndarray__" in tree:
            return tensors[tree["__ndarray__"]].numpy()
        if "__dict__" in tree:
            return {(k["__int__"] if isinstance(k, dict) else k): unflatten(v, tensors) for k, v in tree["__dict__"]}
        if "__list__" in tree:
            return [unflatten(v, tensors) for v in tree["__list__"]]
        if "__tuple__" in tree:
            return tuple(unflatten(v, tensors) for v in tree["__tuple__"])
    return tree


def save(folder: Path, step: int, state: dict[str, Any]) -> Path:
    """Write ``checkpoints/step-N`` atomically, point LATEST at it, and prune old ones."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step:08d}"
    tensors: dict[str, torch.Tensor] = {}
    tree = flatten(state, tensors)
    with artifacts.staged_dir(final, overwrite=True, stage="checkpoint") as staging:
        with artifacts.safetensors_os_errors(staging / "state.safetensors"):
            save_file(tensors, str(staging / "state.safetensors"))
        artifacts.write_json_atomic(staging / "state.json", tree)
        artifacts.write_json_atomic(
            staging / artifacts.MANIFEST_NAME,
            {"schema_version": artifacts.SCHEMA_VERSION, "stage": "checkpoint", "step": step},
        )
    with artifacts.atomic_file(folder / "LATEST") as tmp:
        tmp.write_text(final.name)
    for old in sorted(p for p in folder.glob("step-*") if p.is_dir() and p != final)[:-KEEP]:
        try:
            artifacts.remove(old, "checkpoint")
        except OutputExistsError:  # a folder urbanln did not write there: left alone
            log.warning("%s is not a checkpoint urbanln wrote; left alone", old)
    return final


def latest(folder: Path) -> Path | None:
    """The checkpoint LATEST names; else (LATEST missing, damaged, or naming a removed folder) the newest one."""
    pointer = folder / "LATEST"
    name = pointer.read_text(errors="replace").strip() if pointer.is_file() else ""
    if re.fullmatch(r"step-\d+", name) and (folder / name / "state.safetensors").is_file():
        return folder / name
    steps = sorted(
        p for p in folder.glob("step-*") if re.fullmatch(r"step-\d+", p.name) and (p / "state.safetensors").is_file()
    )
    if steps and pointer.is_file():
        log.warning("%s names %r; resuming from %s, the newest checkpoint", pointer, name[:80], steps[-1].name)
    return steps[-1] if steps else None


def load(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path / "state.safetensors"))
        return unflatten(json.loads((path / "state.json").read_text()), tensors)
    except Exception as exc:  # safetensors raises its own SafetensorError for a damaged file
        raise InputError(
            f"cannot read checkpoint {path}: {exc}", hint="remove that checkpoint folder to resume from the one before"
        ) from None
