"""Resumable stages: finished shards kept in ``<out>.partial/`` until the artifact is complete."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from urbanln_cli.artifacts.outputs import PARTIAL_MARK, remove, remove_leftovers_in, write_json_atomic


def partial_dir(out: Path | str) -> Path:
    """Where a resumable stage keeps finished pieces until the artifact is complete."""
    out = Path(out)
    return out.parent / f"{out.name}.partial"


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
        remove(tmp, "leftover")


# ---------------------------------------------------------------- inspection
