"""A loopback server that speaks enough of the Ollama HTTP API for tests.

It answers ``/api/tags``, ``/api/version`` and ``/api/show`` for the models it
is given. It binds 127.0.0.1 on a free port and stops with the context manager.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator


@contextmanager
def fake_ollama(models: dict[str, dict] | None = None, version: str = "0.12.0") -> Iterator[str]:
    """Serve ``models`` ({name: {"capabilities": [...], "digest": ...}}); yield the base URL."""
    models = models or {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/api/tags":
                self._send(200, {"models": [
                    {"name": n, "model": n, "digest": m.get("digest", "sha256:" + "0" * 64), "size": 1, "modified_at": "2026-01-01T00:00:00Z"}
                    for n, m in models.items()
                ]})
            elif self.path == "/api/version":
                self._send(200, {"version": version})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path == "/api/show":
                name = body.get("model") or body.get("name")
                if name not in models:
                    self._send(404, {"error": f"model '{name}' not found"})
                else:
                    self._send(200, {"capabilities": models[name].get("capabilities", ["completion"]), "details": {}, "model_info": {}})
            else:
                self._send(404, {"error": "not found"})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
