"""Keep secrets out of everything urbanln writes or prints: manifests, journals, logs, errors."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

# user[:password]@ before a host, with or without a scheme; the password may itself hold '@'
_USERINFO = re.compile(r"(?:(?<=://)|(?<![^\s'\"=(]))[^\s/'\"=()]*@(?=[^\s/'\"@]+)")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\"]+")


def credentials(host: str) -> tuple[str, str] | None:
    """(user, password) written into a host URL, for HTTP basic auth; None when there are none."""
    parts = urlsplit(host if "://" in host else f"http://{host}")
    if parts.username is None and parts.password is None:
        return None
    from urllib.parse import unquote

    return unquote(parts.username or ""), unquote(parts.password or "")


def public_host(host: str) -> str:
    """A host URL without credentials, query or fragment, safe to log and record."""
    parts = urlsplit(host if "://" in host else f"http://{host}")
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def redact(text: str) -> str:
    """Drop user:password@ from URLs, bearer tokens, and the value of OLLAMA_API_KEY."""
    text = _USERINFO.sub("", text)
    text = _BEARER.sub(r"\1[redacted]", text)
    key = os.environ.get("OLLAMA_API_KEY")
    if key:
        text = text.replace(key, "[redacted]")
    return text


_OBJECT_REPR = re.compile(r"<(?:[\w.]+\.)?(\w+) object at 0x[0-9a-fA-F]+>")


def plain_error(exc: BaseException) -> str:
    """An exception's message fit to record: no ``<_io.BytesIO object at 0x…>`` (PIL names the buffer it could not
    read).

    PIL's "cannot identify image file <_io.BytesIO …>" becomes "not an image file PIL can read";
    other object reprs become the object's type in angle brackets. Credentials are redacted.
    """
    text = str(exc) or type(exc).__name__
    if type(exc).__name__ == "UnidentifiedImageError":
        text = "not an image file PIL can read (PNG, JPEG, TIFF, WebP, …)"
    return redact(_OBJECT_REPR.sub(lambda m: f"<{m.group(1)}>", text))
