"""A loopback server that speaks the Ollama HTTP API the way the ``ollama`` 0.6 client expects.

Endpoints: ``GET /api/tags``, ``GET /api/version``, ``POST /api/show`` (with
capabilities) and ``POST /api/chat`` (streaming NDJSON and not). Captions are
deterministic: they depend only on the model and the image bytes. ``slots``
requests are served at once (the rest wait, as in Ollama's queue), each taking
``latency`` seconds.

Faults are queued with ``inject`` and consumed by the next chat requests (for
one model, or any): ``404``, ``429``, ``500``, ``503``, ``slow`` (sleep past the
client's timeout), ``drop`` (close the connection mid-response), ``empty``,
``refusal``, ``repeat`` (runaway repetition), ``error_line`` (an ``{"error": …}``
line mid-stream), ``bad_json`` (prose where a ``format`` asked for JSON).

Structured output: a request with a ``format`` schema gets JSON. A schema with an
``answer`` property is a yes/no question about the phrase in double quotes in the
prompt: "yes" when one of its words (4+ letters) is in the model's own caption of
the image, else "no". A schema with a ``caption`` property gets that caption.

Run standalone for benchmarks and kill tests:
    python -m tests.fakes.ollama_server --slots 4 --latency 0.1 --models llava:7b
which prints its URL on the first line of stdout and serves until killed.
"""

from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VISION = ["completion", "vision"]
DEFAULT_MODELS = {"llava:7b": VISION, "qwen2.5vl:7b": VISION, "llama3.2:3b": ["completion", "tools"]}

_WORDS = {
    "use": [
        "dense residential blocks",
        "low-rise housing",
        "a commercial district",
        "industrial sheds",
        "farmland",
        "a mixed-use neighbourhood",
    ],
    "road": [
        "a wide arterial road",
        "narrow local streets",
        "a highway interchange",
        "a grid of avenues",
        "a rail corridor",
    ],
    "green": ["a small park", "tree-lined streets", "a sports field", "scattered trees", "no visible green space"],
    "water": ["a river bend", "a pond", "a canal", "no water"],
    "height": ["mid-rise buildings", "high-rise towers", "one- and two-storey houses", "large flat roofs"],
}


def caption_for(model: str, image: bytes) -> str:
    """The deterministic caption of an image by a model."""
    h = hashlib.sha256(model.encode() + b"\0" + image).digest()
    pick = {k: v[h[i] % len(v)] for i, (k, v) in enumerate(_WORDS.items())}
    return (
        f"This aerial image shows {pick['use']} with {pick['height']}. "
        f"The area is crossed by {pick['road']}, and there is {pick['green']}. "
        f"Water: {pick['water']}. Overall the tile has a {['compact', 'sprawling', 'orderly', 'mixed'][h[9] % 4]} "
        "urban character "
        f"(signature {h[10:14].hex()})."
    )


def structured_reply(schema: dict, prompt: str, own_caption: str) -> str:
    """The JSON a ``format`` request gets (see the module docstring)."""
    properties = schema.get("properties") or {}
    if "answer" in properties:
        phrase = prompt.split('"')[1] if prompt.count('"') >= 2 else ""
        seen = set(re.findall(r"[a-z]{4,}", own_caption.lower()))
        return json.dumps({"answer": "yes" if seen & set(re.findall(r"[a-z]{4,}", phrase.lower())) else "no"})
    if "caption" in properties:
        return json.dumps({"caption": own_caption})
    return json.dumps({})


class FakeOllama:
    """Start with ``with FakeOllama(...) as server:``; ``server.url`` is the base URL."""

    def __init__(
        self,
        models: dict[str, list[str]] | None = None,
        *,
        slots: int = 4,
        latency: float = 0.0,
        version: str = "0.12.6",
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self.models = dict(DEFAULT_MODELS if models is None else models)
        self.latency = latency
        self.version = version
        self.slots = threading.BoundedSemaphore(slots)
        self.lock = threading.Lock()
        self.faults: dict[str | None, collections.deque] = collections.defaultdict(collections.deque)
        self.chats = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests: list[dict] = []  # chat request bodies without images, for assertions
        self.headers_seen: list[dict] = []
        ThreadingHTTPServer.request_queue_size = 128  # a listen backlog like a real server's
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self._stop_after: int | None = None
        self._stopped = threading.Event()

    def stop_after(self, chats: int) -> None:
        """Die (stop listening) once this many chat requests have arrived: a host lost mid-run."""
        self._stop_after = chats

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def digest(self, model: str) -> str:
        return "sha256:" + hashlib.sha256(f"{model}|{self.models.get(model)}".encode()).hexdigest()

    def inject(self, *faults: str, model: str | None = None) -> None:
        with self.lock:
            self.faults[model].extend(faults)

    def _next_fault(self, model: str) -> str | None:
        with self.lock:
            for key in (model, None):
                if self.faults[key]:
                    return self.faults[key].popleft()
        return None

    def start(self) -> FakeOllama:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeOllama:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------ HTTP

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Ollama does

            def setup(self):
                super().setup()
                # Go servers (Ollama) set TCP_NODELAY; without it Nagle + delayed ACKs add ~40 ms per response.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args):
                pass

            def handle(self):
                try:
                    super().handle()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test): nothing to report

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _dead(self) -> bool:
                """After stop(), kept-alive connections die too, as they would with the process."""
                if fake._stopped.is_set():
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return True
                return False

            def do_GET(self):
                if self._dead():
                    return
                if self.path == "/api/tags":
                    self._json(
                        200,
                        {
                            "models": [
                                {
                                    "name": m,
                                    "model": m,
                                    "modified_at": "2026-01-01T00:00:00Z",
                                    "size": 4_000_000_000,
                                    "digest": fake.digest(m).removeprefix("sha256:"),
                                    "details": {"family": m.split(":")[0]},
                                }
                                for m in fake.models
                            ]
                        },
                    )
                elif self.path == "/api/version":
                    self._json(200, {"version": fake.version})
                elif self.path == "/_stats":  # not Ollama's: for benchmarks
                    with fake.lock:
                        self._json(200, {"chats": fake.chats, "max_in_flight": fake.max_in_flight})
                else:
                    self._json(404, {"error": "not found"})

            def do_POST(self):
                if self._dead():
                    return
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    return self._json(400, {"error": "invalid JSON"})
                if self.path == "/api/show":
                    name = body.get("model") or body.get("name")
                    if name not in fake.models:
                        return self._json(404, {"error": f"model '{name}' not found"})
                    return self._json(
                        200,
                        {
                            "capabilities": fake.models[name],
                            "details": {"family": name.split(":")[0]},
                            "model_info": {},
                            "modified_at": "2026-01-01T00:00:00Z",
                        },
                    )
                if self.path == "/api/chat":
                    return self._chat(body)
                self._json(404, {"error": "not found"})

            def _chat(self, body: dict) -> None:
                model = body.get("model", "")
                with fake.lock:
                    fake.chats += 1
                    if fake._stop_after is not None and fake.chats >= fake._stop_after:
                        fake._stop_after = None
                        threading.Thread(target=fake.stop, daemon=True).start()
                    fake.requests.append(
                        {k: v for k, v in body.items() if k != "messages"}
                        | {
                            "prompt": body["messages"][-1].get("content", ""),
                            "n_images": len(body["messages"][-1].get("images") or []),
                        }
                    )
                    fake.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
                if model not in fake.models:
                    return self._json(404, {"error": f"model '{model}' not found, try pulling it first"})
                fault = fake._next_fault(model)
                if fault in ("404", "429", "500", "503"):
                    messages = {
                        "404": f"model '{model}' not found, try pulling it first",
                        "429": "too many requests",
                        "500": "llama runner process has terminated",
                        "503": "server busy, please try again",
                    }
                    return self._json(int(fault), {"error": messages[fault]})
                images = body["messages"][-1].get("images") or []
                image = base64.b64decode(images[0]) if images else b""
                text = caption_for(model, image)
                if isinstance(body.get("format"), dict):
                    text = structured_reply(body["format"], body["messages"][-1].get("content", ""), text)
                if fault == "bad_json":
                    text = "Sure! Here is what I see: " + caption_for(model, image)
                if fault == "empty":
                    text = ""
                elif fault == "refusal":
                    text = "I'm sorry, but I can't help with identifying details in this image."
                elif fault == "repeat":
                    text = "The image shows a road. " + "and a road " * 200
                with fake.slots:
                    with fake.lock:
                        fake.in_flight += 1
                        fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                    try:
                        time.sleep(fake.latency)
                        if fault and fault.startswith("slow"):
                            time.sleep(float(fault.partition(":")[2] or 5))
                        if body.get("stream", True):
                            self._stream(model, text, fault)
                        else:
                            self._whole(model, text, fault)
                    finally:
                        with fake.lock:
                            fake.in_flight -= 1

            def _final(self, model: str, text: str) -> dict:
                return {
                    "model": model,
                    "created_at": "2026-01-01T00:00:00Z",
                    "message": {"role": "assistant", "content": text},
                    "done": True,
                    "done_reason": "stop",
                    "total_duration": int(fake.latency * 1e9),
                    "load_duration": 0,
                    "prompt_eval_count": 600,
                    "prompt_eval_duration": 1,
                    "eval_count": max(1, len(text.split())),
                    "eval_duration": 1,
                }

            def _whole(self, model: str, text: str, fault: str | None) -> None:
                if fault == "error_line":
                    return self._json(500, {"error": "an error was encountered while running the model"})
                data = json.dumps(self._final(model, text)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if fault == "drop":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(data)

            def _stream(self, model: str, text: str, fault: str | None) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Connection", "close")  # no chunked encoding here: the end of the body is the close
                self.end_headers()
                self.close_connection = True
                words = text.split(" ")
                chunks = (
                    [" ".join(words[i : i + 8]) + (" " if i + 8 < len(words) else "") for i in range(0, len(words), 8)]
                    if text
                    else []
                )
                for i, chunk in enumerate(chunks):
                    if fault == "drop" and i == len(chunks) // 2:
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if fault == "error_line" and i == len(chunks) // 2:
                        self.wfile.write(
                            json.dumps({"error": "an error was encountered while running the model"}).encode() + b"\n"
                        )
                        return
                    line = {
                        "model": model,
                        "created_at": "2026-01-01T00:00:00Z",
                        "message": {"role": "assistant", "content": chunk},
                        "done": False,
                    }
                    self.wfile.write(json.dumps(line).encode() + b"\n")
                final = self._final(model, "")
                final["eval_count"] = max(1, len(text.split()))
                self.wfile.write(json.dumps(final).encode() + b"\n")

        return Handler


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a fake Ollama API on loopback.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--models", default=",".join(m for m, caps in DEFAULT_MODELS.items() if "vision" in caps))
    args = parser.parse_args(list(argv) if argv is not None else None)
    server = FakeOllama(
        {m: VISION for m in args.models.split(",")}, slots=args.slots, latency=args.latency, port=args.port
    )
    server.start()
    print(server.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
