"""Versioned caption prompts. The shipped prompt is ``urban-v1``; ``--prompt FILE`` uses another.

A prompt is text with an optional ``{gsd}`` field (metres per pixel) and
``{visibility}`` (a sentence on what is too small to see at that resolution).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from urbanln_cli.errors import InputError

DEFAULT_PROMPT = "urban-v1"


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def render(self, gsd: float | None) -> str:
        return self.text.replace("{gsd}", _gsd_text(gsd)).replace("{visibility}", visibility_note(gsd)).strip()


def load_prompt(path: Path | str | None = None) -> Prompt:
    if path is None:
        text = resources.files(__package__).joinpath(f"{DEFAULT_PROMPT}.txt").read_text(encoding="utf-8")
        return Prompt(DEFAULT_PROMPT, text)
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read prompt file {path}: {exc}", hint="pass a UTF-8 text file to --prompt") from None
    if not text.strip():
        raise InputError(f"prompt file {path} is empty", hint="write the instruction for the model in it")
    return Prompt(f"file:{path.name}", text)


def _gsd_text(gsd: float | None) -> str:
    if gsd is None or not math.isfinite(gsd) or gsd <= 0:
        return "an unknown number of"
    return f"{gsd:.2g}" if gsd < 10 else f"{gsd:.0f}"


def visibility_note(gsd: float | None) -> str:
    """What cannot be seen at this resolution, so the model does not invent it."""
    if gsd is None or not math.isfinite(gsd) or gsd <= 0:
        return "Do not describe objects you cannot clearly see."
    hidden = ["people", "traffic lights", "road signs"]
    if gsd > 0.6:
        hidden += ["bicycles", "road markings"]
    if gsd > 1.5:
        hidden += ["cars", "individual trees"]
    if gsd > 5:
        hidden += ["individual small buildings", "narrow paths"]
    return f"At this resolution {', '.join(hidden[:-1])} and {hidden[-1]} are too small to see: do not mention them."
