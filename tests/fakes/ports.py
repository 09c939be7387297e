"""A loopback URL where nothing answers, for "server down" tests."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator


@contextlib.contextmanager
def dead_host() -> Iterator[str]:
    """http://127.0.0.1:PORT with PORT bound but not listening: connections are refused.

    The port stays bound while the test uses it, so no other process can take it meanwhile
    (a port found free and released at once could be reused by anyone).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}"
