"""An append-only JSON-lines journal: every finished record is on disk before it counts.

Lines are appended by one writer thread, which fsyncs after each batch it drains
(group commit), so the event loop never waits on the disk. After a crash the
last line may be torn; ``load`` skips it.

A failed write (disk full, a permission or I/O error) stops the journal: the file
is cut back to its last whole line, nothing more is written, and the ``OSError``
(naming the journal) is raised by the next ``append`` and by ``close``, so the run
stops instead of going on with answers it cannot keep. What was journaled before
stays valid, and the next run resumes from it.
"""

from __future__ import annotations

import errno
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson  # 3-5x faster than json here: resuming reads every record of a long run

_STOP = object()


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every intact record in order; a torn or garbled line (from a crash) is skipped."""
    if not path.is_file():
        return
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                return  # torn last line
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield record


class Journal:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_torn_tail()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._good = os.fstat(self._fd).st_size  # bytes of whole, fsynced lines
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="urbanln-journal", daemon=True)
        self._thread.start()

    def _drop_torn_tail(self) -> None:
        # A line cut by kill -9 would glue itself to the next record; cut it off first.
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as f:
            end = f.seek(0, os.SEEK_END)
            f.seek(end - 1)
            if f.read(1) == b"\n":
                return
            while end > 0:  # back from the end, a block at a time, to the last whole line
                start = max(0, end - (1 << 16))
                f.seek(start)
                cut = f.read(end - start).rfind(b"\n")
                if cut >= 0:
                    f.truncate(start + cut + 1)
                    return
                end = start
            f.truncate(0)

    def append(self, record: dict[str, Any]) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(orjson.dumps(record) + b"\n")

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            lines, stop = [], item is _STOP
            if not stop:
                lines.append(item)
            while not stop:  # drain what is waiting, then one fsync for all of it
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                else:
                    lines.append(item)
            if lines and self._error is None:  # after a failure nothing more is written
                try:
                    self._write(b"".join(lines))
                except OSError as exc:
                    self._fail(exc)
            if stop:
                return

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:  # os.write may write less than asked (a nearly full disk): the rest follows, or raises
            written = os.write(self._fd, view)
            if written <= 0:
                raise OSError(errno.EIO, "the journal write made no progress")
            view = view[written:]
        os.fsync(self._fd)
        self._good += len(data)

    def _fail(self, exc: OSError) -> None:
        """Keep the journal whole (cut a partly written batch off) and remember the error, naming the file."""
        try:
            os.ftruncate(self._fd, self._good)  # frees space, so it works on a full disk too
        except OSError:
            pass  # the torn tail is dropped when the journal is next opened
        if exc.filename is None:
            exc = type(exc)(exc.errno, exc.strerror, str(self.path)) if exc.errno is not None else exc
        self._error = exc

    def close(self) -> None:
        """Flush and fsync everything appended so far."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        os.close(self._fd)
        if self._error is not None:
            raise self._error
