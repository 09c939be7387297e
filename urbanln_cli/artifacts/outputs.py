"""Writing outputs safely: the path guard, the lock, staged folders, atomic files and deletion."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from urbanln_cli.artifacts.manifests import read_manifest
from urbanln_cli.errors import InputError, OutputExistsError, OutputLocked


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


_LEFTOVER = re.compile(r"^\.?(?P<name>.+)\.(?P<kind>staging|old|tmp|empty)-[0-9a-f-]+(?:\.arrow)?$")
_LOCK = re.compile(r"^\..+\.lock$")


def remove(path: Path | str, stage: str) -> None:
    """The one way urbanln deletes anything.

    ``stage`` says what ``path`` must be: an artifact of that stage, checked by its
    manifest (``"checkpoint"`` too), or one of the things urbanln makes for itself:

    - ``"partial"``: a ``<out>.partial`` folder of resumable work (marked, or empty);
    - ``"leftover"``: a staging, old, temporary or empty-shard file or folder that
      urbanln names ``.<out>.staging-…``, ``.<file>.tmp-<pid>``;
    - ``"staged"``: a file inside one of its staging folders;
    - ``"lock"``: a ``.<out>.lock`` file (a regular file, never a link);
    - ``"empty"``: an empty folder (removed with rmdir, so never with anything in it).

    Anything else is refused, as are the current folder, the folders above it, home and ``/``.
    A path that does not exist is nothing to do.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    _refuse_protected(path, "delete")
    check = _OWN_KINDS.get(stage)
    if check is None:
        _check_ours(path, stage)
    elif not check(path):
        raise OutputExistsError(
            f"refusing to delete {path}: not {_KIND_NAMES[stage]}", hint="remove it yourself if it is yours"
        )
    if stage == "empty":
        path.rmdir()
    elif path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _is_partial(path: Path) -> bool:
    ours = path.is_dir() and (not any(path.iterdir()) or any((path / name).exists() for name in _PARTIAL_MARKS))
    return path.name.endswith(".partial") and ours


def _is_staged(path: Path) -> bool:
    match = _LEFTOVER.match(path.parent.name)
    return bool(match) and match["kind"] == "staging"


_OWN_KINDS = {
    "leftover": lambda p: bool(_LEFTOVER.match(p.name)),
    "partial": _is_partial,
    "staged": _is_staged,
    "lock": lambda p: bool(_LOCK.match(p.name)) and p.is_file() and not p.is_symlink(),
    "empty": lambda p: p.is_dir() and not p.is_symlink() and not any(p.iterdir()),
}
_KIND_NAMES = {
    "leftover": "an urbanln staging leftover",
    "partial": "an urbanln .partial folder",
    "staged": "a file in an urbanln staging folder",
    "lock": "an urbanln lock file",
    "empty": "an empty folder",
}


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
            remove(lock_path, "lock")
        os.close(fd)
        for folder in created:  # nearest first: a folder made only for the lock, that nothing else filled
            with contextlib.suppress(OSError, OutputExistsError):
                remove(folder, "empty")


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


@contextlib.contextmanager
def atomic_file(path: Path | str) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; then fsync it and rename it over ``path``.

    On any failure (a full disk) the temporary file is removed at once and ``path`` is untouched.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    remove(tmp, "leftover")  # one this process left before (pids are reused)
    try:
        yield tmp
        if not tmp.is_symlink():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        remove(tmp, "leftover")  # nothing left after the rename; the half-written file after a failure


def write_json_atomic(path: Path, obj: Any) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")
