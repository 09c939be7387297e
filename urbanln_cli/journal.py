"""An append-only JSON-lines journal: every finished record is on disk before it counts.

Lines are appended by one writer thread, which fsyncs after each batch it drains
(group commit), so the event loop never waits on the disk. After a crash the
last line may be torn; ``load`` skips it.
"""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path
from typing import Any, Iterator

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
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="urbanln-journal", daemon=True)
        self._thread.start()

    def _drop_torn_tail(self) -> None:
        # A line cut by kill -9 would glue itself to the next record; cut it off first.
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as f:
            data = f.read()
            if not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)

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
            try:
                if lines:
                    os.write(self._fd, b"".join(lines))
                    os.fsync(self._fd)
            except OSError as exc:
                self._error = exc
            if stop:
                return

    def close(self) -> None:
        """Flush and fsync everything appended so far."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        os.close(self._fd)
        if self._error is not None:
            raise self._error
