"""The Ollama backend: the real ``ollama`` async client, one per host, with explicit timeouts."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

from urbanln_cli.captioners import GenerationOptions, ModelInfo, ModelMissing, Reply, TileInfo, TransientError
from urbanln_cli.errors import ServiceUnavailable, UsageProblem
from urbanln_cli.redact import credentials, public_host, redact

DEFAULT_HOST = "http://127.0.0.1:11434"
CONNECT_TIMEOUT = 10.0
HOST_HINT = (
    "e.g. --host http://127.0.0.1:11434 or --host https://user:password@gpu-box:11434 (http or https, a "
    "host name, an optional port)"
)
_HOSTNAME = re.compile(r"^[A-Za-z0-9._~%-]+$")


def host_problem(raw: str) -> str | None:
    """Why ``raw`` is not an Ollama server URL (http or https, a host part, a valid port), or None.

    The scheme may be left out (``gpu-box:11434``, as OLLAMA_HOST often is): http is meant.
    """
    if not raw.strip():
        return "it is empty"
    if any(c.isspace() for c in raw):
        return "it contains spaces"
    scheme = raw.split("://", 1)[0].lower() if "://" in raw else "http"
    if scheme not in ("http", "https"):
        return f"the scheme {scheme}:// is not http:// or https://"
    try:
        parts = urlsplit(raw if "://" in raw else f"http://{raw}")
        port = parts.port  # a ValueError for a port that is not a number in 0-65535
    except ValueError:
        return "it is not a URL" if "[" in raw else "the port is not a number from 1 to 65535"
    if port == 0:
        return "the port is not a number from 1 to 65535"
    host = parts.hostname or ""
    if not host:
        return "it names no host"
    if ":" not in host and not _HOSTNAME.match(host):  # IPv6 addresses come out of [brackets] with colons
        return f"{host!r} is not a host name"
    return None


def check_hosts(hosts: Sequence[str], what: str = "--host") -> None:
    """A usage error (exit 2) for the first host that is not a URL, before any work; credentials are never shown."""
    for raw in hosts:
        problem = host_problem(raw)
        if problem is not None:
            shown = f" {redact(raw)!r}" if raw.strip() else ""
            raise UsageProblem(f"{what}{shown} is not an Ollama server URL: {problem}", hint=HOST_HINT)


def import_ollama():
    """Import the ollama package with OLLAMA_HOST hidden.

    ollama builds a default client at import time from OLLAMA_HOST, and fails on a
    value that is fine for us: several space-separated hosts (one per --host).
    """
    if "ollama" in sys.modules:
        return sys.modules["ollama"]
    saved = os.environ.pop("OLLAMA_HOST", None)
    try:
        import ollama
    finally:
        if saved is not None:
            os.environ["OLLAMA_HOST"] = saved
    return ollama


class OllamaBackend:
    def __init__(self, hosts: Sequence[str], *, timeout: float = 300.0, stream: bool = False):
        import httpx

        ollama = import_ollama()

        self.stream = stream
        # One explicit timeout on every request: connect fast, but let a long generation finish.
        self._timeout = httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT, timeout))
        self._clients = {}
        for raw in hosts:
            try:
                user = credentials(raw)  # ollama drops user:password from the URL; send it as basic auth
                auth = httpx.BasicAuth(*user) if user else None
                self._clients[public_host(raw)] = ollama.AsyncClient(host=raw, timeout=self._timeout, auth=auth)
            except ValueError as exc:  # e.g. a port out of range
                raise UsageProblem(
                    f"--host {redact(raw)} is not a valid URL ({redact(str(exc))})",
                    hint="e.g. --host http://gpu-box:11434",
                ) from None
        self.hosts = list(self._clients)

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client._client.aclose()

    # ------------------------------------------------------------ preflight

    async def preflight(self, models: Sequence[str]) -> dict[str, ModelInfo]:
        """Each host answers; each model is pulled everywhere, sees images, and has one digest."""
        import httpx

        ollama = import_ollama()

        digests: dict[str, dict[str, str]] = {m: {} for m in models}
        for host in self._clients:
            pulled = {m.model: (m.digest or "") for m in await self._list(host)}
            for model in models:
                digest = pulled.get(model)
                if digest is None:
                    prefix = "" if len(self.hosts) == 1 else f"OLLAMA_HOST={host} "
                    raise ServiceUnavailable(
                        f"model {model} is not pulled on {host}", hint=f"{prefix}ollama pull {model}"
                    )
                digests[model][host] = digest
        infos = {}
        for model in models:
            if len(set(digests[model].values())) > 1:
                raise ServiceUnavailable(
                    f"hosts have different versions of {model}: "
                    + ", ".join(f"{h}={d[:12]}" for h, d in digests[model].items()),
                    hint=f"run `ollama pull {model}` on every host, so all captions come from one model",
                )
            host = self.hosts[0]
            try:
                shown = await self._clients[host].show(model)
            except (ConnectionError, httpx.HTTPError, ollama.ResponseError) as exc:
                raise ServiceUnavailable(
                    f"cannot inspect {model} on {host}: {redact(str(exc))}",
                    hint=f"check `ollama show {model}` on that host",
                ) from None
            capabilities = tuple(shown.capabilities or ())
            if "vision" not in capabilities:
                raise ServiceUnavailable(
                    f"model {model} cannot see images (capabilities: {', '.join(capabilities) or 'none listed'})",
                    hint="pick a vision model, e.g. --models llava,qwen-vl (see `urbanln caption --list-models`)",
                )
            digest = next(iter(digests[model].values()))
            infos[model] = ModelInfo(
                model, digest if digest.startswith("sha256:") else f"sha256:{digest}", capabilities, tuple(self.hosts)
            )
        return infos

    async def pulled(self) -> dict[str, list[str]]:
        """What each host has pulled (for --list-models); ServiceUnavailable when a host does not answer as Ollama
        does."""
        return {host: sorted(m.model for m in await self._list(host)) for host in self._clients}

    async def _list(self, host: str) -> list:
        """The models a host has pulled (/api/tags); ServiceUnavailable when it does not answer, or not as Ollama."""
        import httpx

        ollama = import_ollama()
        try:
            listed = await self._clients[host].list()
        except (ConnectionError, httpx.HTTPError) as exc:
            raise ServiceUnavailable(
                f"no Ollama server answers at {host} ({redact(str(exc)) or type(exc).__name__})",
                hint="start it with `ollama serve`, or point --host / OLLAMA_HOST at a running server",
            ) from None
        except ollama.ResponseError as exc:
            raise ServiceUnavailable(
                f"{host} answered /api/tags with {exc.status_code}: {redact(exc.error)}",
                hint="check that the URL points at an Ollama server",
            ) from None
        except ValueError as exc:  # a body that is not Ollama's JSON (pydantic or JSON errors)
            raise ServiceUnavailable(
                f"{host} did not answer /api/tags as an Ollama server does ({redact(str(exc)[:200])})",
                hint="check that the URL points at an Ollama server",
            ) from None
        return list(listed.models or [])

    # ------------------------------------------------------------ captions

    async def caption(
        self,
        host: str,
        model: str,
        image: bytes,
        prompt: str,
        options: GenerationOptions,
        tile: TileInfo | None = None,
        format: dict | None = None,
    ) -> Reply:
        """One chat request with one image; ``format`` (a JSON schema) asks for structured output."""
        import httpx

        ollama = import_ollama()

        client = self._clients[host]
        request = dict(
            model=model,
            messages=[{"role": "user", "content": prompt, "images": [image]}],
            options={
                "temperature": options.temperature,
                "seed": options.seed,
                "num_predict": options.num_predict,
                "num_ctx": options.num_ctx,
            },
            keep_alive=options.keep_alive,
        )
        if format is not None:
            request["format"] = format
        try:
            if not self.stream:
                response = await client.chat(**request, stream=False)
                return Reply(_content(response), response.prompt_eval_count, response.eval_count)
            parts, final = [], None
            async for part in await client.chat(**request, stream=True):
                parts.append(_content(part))
                if part.done:
                    final = part
            if final is None:
                raise TransientError("stream_error", "the stream ended before the model was done")
            return Reply("".join(parts), final.prompt_eval_count, final.eval_count)
        except ollama.ResponseError as exc:
            status = exc.status_code
            if status == 404 and "not found" in exc.error.lower():
                raise ModelMissing(model, host) from None
            kind = {429: "rate_limited", 503: "busy"}.get(
                status, "server_error" if status and status >= 500 else "stream_error"
            )
            if status and 400 <= status < 500 and status not in (408, 429):
                kind = "bad_request"
            raise TransientError(kind, f"{status}: {redact(exc.error)}") from None
        except httpx.TimeoutException as exc:
            raise TransientError("timeout", f"no answer within the timeout ({type(exc).__name__})") from None
        except (ConnectionError, httpx.TransportError, asyncio.IncompleteReadError) as exc:
            raise TransientError("connection", redact(f"{type(exc).__name__}: {exc}")) from None
        except ValueError as exc:  # a garbled body: JSON or pydantic validation errors
            raise TransientError("bad_response", redact(str(exc)[:200])) from None


def _content(response) -> str:
    message = getattr(response, "message", None)
    return (getattr(message, "content", None) or "") if message is not None else ""
