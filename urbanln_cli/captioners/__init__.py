"""Caption backends behind one small interface.

A backend checks its models before any tile (``preflight``) and captions one
image at a time on a host it names (``caption``). It may also check the tiles
up front (``check_tiles``), as the simulated panel does. It raises ``TransientError``
for what a retry may fix and ``ModelMissing`` for what it cannot. The caption
stage owns scheduling, retries, content checks and the journal. A backend with
``batched = True`` (``hf:`` models, captioners.hf) gets whole batches of tiles
through ``generate_batch`` instead (captioners.hf_batch).
"""

from __future__ import annotations

import io
import json
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ModelInfo:
    tag: str  # the full tag, e.g. "qwen2.5vl:7b"
    digest: str  # identical on every host that serves it
    capabilities: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class TileInfo:
    """Where a tile is. VLM backends need only the image; the simulated panel reads the scene here."""

    tile_id: str
    crs: str
    bounds: tuple[float, float, float, float]  # in crs; NaN when unknown
    gsd: float | None
    quadrant: int | None = None  # the image is this quarter of the tile (``imagery.QUADRANTS`` order); None: all

    def quarter(self, k: int) -> TileInfo:
        """The same tile, for an image of its quarter ``k`` (``fuse --refine``'s crops)."""
        from dataclasses import replace

        return replace(self, quadrant=k)


@dataclass(frozen=True)
class Reply:
    text: str
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class TransientError(Exception):
    """A failure worth retrying: timeouts, dropped connections, 429, 5xx, errors mid-stream."""

    def __init__(self, error_class: str, message: str):
        super().__init__(message)
        self.error_class = error_class
        self.message = message


class ModelMissing(Exception):
    """The host does not have the model (404): retrying cannot help."""

    def __init__(self, model: str, host: str):
        super().__init__(f"model {model} is not on {host}")
        self.model, self.host = model, host


RETRY_TEMPERATURE = 0.3


@dataclass(frozen=True)
class GenerationOptions:
    temperature: float = 0.2
    seed: int = 0
    num_predict: int = 512
    num_ctx: int = 4096
    keep_alive: str = "30m"

    def for_attempt(self, attempt: int) -> GenerationOptions:
        """Content retries change the seed, or a deterministic model would say the same again.

        Greedy decoding (temperature 0) ignores the seed, so a retry of it samples a little.
        """
        from dataclasses import replace

        if attempt and self.temperature == 0:
            return replace(self, seed=self.seed + attempt, temperature=RETRY_TEMPERATURE)
        return replace(self, seed=self.seed + attempt)


class Backend(Protocol):
    hosts: Sequence[str]

    async def preflight(self, models: Sequence[str]) -> dict[str, ModelInfo]: ...

    async def caption(
        self,
        host: str,
        model: str,
        image: bytes,
        prompt: str,
        options: GenerationOptions,
        tile: TileInfo | None,
        format: dict | None = None,
    ) -> Reply: ...  # format: a JSON schema for structured output

    async def aclose(self) -> None: ...

    # optional: def check_tiles(self, tiles: Sequence[TileInfo]) -> None, raising an UrbanlnError


def fit_image(raw: bytes, size: int, max_pixels: int | None = None) -> bytes:
    """An image's bytes, shrunk to ``size`` pixels on the longest side (as PNG) when larger; else unchanged.

    ``imagery.ImageTooLarge`` (a ValueError) when the image has more than ``max_pixels`` pixels
    (default ``imagery.DEFAULT_MAX_PIXELS``): it is never decoded.
    """
    from PIL import Image

    from urbanln_cli.imagery import open_image

    with open_image(raw, max_pixels, "it") as img:
        if max(img.size) <= size:
            return raw
        img = img.convert("RGB")
        img.thumbnail((size, size), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, "PNG")
        return buf.getvalue()


_REFUSAL = re.compile(r"^\s*(i'?m sorry|i am sorry|sorry,|i cannot|i can'?t|i am unable|i'?m unable|as an ai)", re.I)


def content_problem(text: str) -> str | None:
    """Why a caption is unusable ('empty', 'refusal', 'repetition'), or None."""
    stripped = text.strip()
    if not stripped:
        return "empty"
    if _REFUSAL.match(stripped):
        return "refusal"
    raw = stripped.encode("utf-8")
    # Natural prose compresses to about half; a model stuck in a loop to a few percent.
    if len(raw) > 300 and len(zlib.compress(raw)) / len(raw) < 0.12:
        return "repetition"
    return None


def json_field(text: str, key: str) -> str | None:
    """The non-empty string ``key`` of a structured (JSON object) reply, stripped; None when the reply has none."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    field_ = value.get(key) if isinstance(value, dict) else None
    return field_.strip() if isinstance(field_, str) and field_.strip() else None


def gsd_phrase(gsd: float | None) -> str:
    """' at about 2.40 m per pixel' for a prompt, or nothing when the GSD is unknown."""
    return f" at about {gsd:.2f} m per pixel" if gsd else ""
