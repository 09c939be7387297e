"""Facts about this machine: package versions, GPU, and the Ollama server."""

from __future__ import annotations

import contextlib
import platform
from importlib import metadata
from typing import Any

from urbanln_cli import __version__

PACKAGES = {  # distribution -> report key
    "torch": "torch",
    "open_clip_torch": "open_clip_torch",
    "transformers": "transformers",
    "datasets": "datasets",
    "rasterio": "rasterio",
    "ollama": "ollama_client",
}


def report(host: str | None = None, timeout: float = 3.0) -> dict[str, Any]:
    info: dict[str, Any] = {"urbanln": __version__, "python": platform.python_version()}
    # the Python client is "ollama_client": "ollama" is the server's status, set below
    for name, key in PACKAGES.items():
        try:
            info[key] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[key] = "not installed"
    info.update(_gpu())
    info.update(ollama_status(host, timeout))
    return info


def _gpu() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"cuda": "torch not installed"}
    if not torch.cuda.is_available():
        return {
            "cuda": f"not available (torch built for CUDA {torch.version.cuda})"
            if torch.version.cuda
            else "not available (CPU build)"
        }
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"cuda": torch.version.cuda, "gpus": names}


def ollama_status(host: str | None, timeout: float = 3.0) -> dict[str, Any]:
    """Whether an Ollama server answers at ``host``, and which models it has pulled."""
    import httpx

    from urbanln_cli.captioners.ollama import DEFAULT_HOST, host_problem, import_ollama
    from urbanln_cli.redact import public_host, redact

    ollama = import_ollama()

    host = host or DEFAULT_HOST
    problem = host_problem(host)
    if problem is not None:  # shown without credentials: this report is meant to be pasted into issues
        return {"ollama_host": redact(host), "ollama": f"invalid host URL ({problem})"}
    try:
        client = ollama.Client(host=host, timeout=httpx.Timeout(timeout))
    except ValueError as exc:
        return {"ollama_host": redact(host), "ollama": f"invalid host URL ({redact(str(exc))})"}
    host = public_host(host)
    try:
        listed = client.list()
    except (httpx.HTTPError, ConnectionError, ollama.ResponseError) as exc:
        return {"ollama_host": host, "ollama": f"not reachable ({type(exc).__name__}: {redact(str(exc))})"}
    models = [m.model for m in listed.models]
    status: dict[str, Any] = {"ollama_host": host, "ollama": "ok", "ollama_models": models}
    with contextlib.suppress(Exception):
        status["ollama_version"] = httpx.get(f"{host.rstrip('/')}/api/version", timeout=timeout).json().get("version")
    return status
