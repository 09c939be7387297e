"""Short names for the vision models urbanln knows, and their Ollama tags."""

from __future__ import annotations

from urbanln_cli.config import suggest
from urbanln_cli.errors import UsageProblem

ALIASES = {
    "llava": "llava:7b",
    "qwen-vl": "qwen2.5vl:7b",
    "llama3.2-vision": "llama3.2-vision:11b",
    "minicpm-v": "minicpm-v:8b",
    "gemma3": "gemma3:4b",
    "llava-phi3": "llava-phi3:3.8b",
    "moondream": "moondream:1.8b",
    "granite3.2-vision": "granite3.2-vision:2b",
}


def resolve_models(text: str | list[str]) -> list[str]:
    """Aliases or full tags (anything with a ':' or '/') to tags, in order, without duplicates."""
    names = [n.strip() for part in ([text] if isinstance(text, str) else text) for n in part.split(",") if n.strip()]
    if not names:
        raise UsageProblem("no models given", hint=f"e.g. --models llava,qwen-vl (aliases: {', '.join(ALIASES)})")
    tags: list[str] = []
    for name in names:
        if name in ALIASES:
            tag = ALIASES[name]
        elif ":" in name or "/" in name or name in ALIASES.values():
            tag = name
        else:
            raise UsageProblem(
                f"unknown model alias '{name}'{suggest(name, ALIASES)}",
                hint=f"use an alias ({', '.join(ALIASES)}) or a full Ollama tag such as {name}:latest",
            )
        if tag not in tags:
            tags.append(tag)
    return tags
