"""Run folders under ``runs/``: which one ``--resume`` continues, what counts as one, and ``runs/latest``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from urbanln_cli import artifacts
from urbanln_cli.errors import InputError

RUNS = Path("runs")
log = logging.getLogger(__name__)


def run_to_resume() -> Path:
    """--resume: the newest unfinished run under runs/, else the one runs/latest names (to go past --max-steps)."""
    unfinished = []
    for folder in RUNS.glob("*") if RUNS.is_dir() else ():
        if folder.is_symlink() or not folder.is_dir():
            continue
        try:
            manifest = artifacts.read_manifest(folder) or {}
        except InputError:
            continue
        if manifest.get("stage") == "run" and manifest.get("status") == "training":
            unfinished.append((str(manifest.get("created", "")), folder.name))
    if unfinished:
        return RUNS / max(unfinished)[1]
    latest = RUNS / "latest"
    if not latest.exists():
        raise InputError(
            "--resume: there is no unfinished run and no runs/latest to resume", hint="name the run with --name or -o"
        )
    return RUNS / latest.resolve().name


def is_run(out: Path) -> bool:
    manifest = artifacts.read_manifest(out)
    if manifest is not None:
        return manifest.get("stage") == "run"
    return (out / "checkpoints" / "plan.json").is_file()  # a run killed before this version wrote manifests first


def point_latest(out: Path) -> None:
    """runs/latest -> this run, so `urbanln embed` finds it (only for runs under runs/), atomically."""
    if out.parent.name != RUNS.name:
        return
    link = out.parent / "latest"
    if link.exists() and not link.is_symlink():
        log.warning("%s is not a link urbanln made; left alone (the model is in %s)", link, out)
        return
    for stale in out.parent.glob(".latest.tmp-*"):  # left by a run killed right here
        if not _alive(stale.name.rpartition("-")[2]):
            artifacts.remove(stale, "leftover")
    with artifacts.atomic_file(link) as tmp:
        tmp.symlink_to(out.name)


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
