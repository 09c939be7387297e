"""Short names for the vision models urbanln knows: Ollama tags, and ``hf:`` models of the paper's panel.

The ``hf:`` aliases cover the UrbanLN panel where transformers has the family as an
image-text-to-text model (Qwen2.5-VL, InternVL3 in its ``-hf`` conversion). LLaMA-Adapter
V2, ShareGPT4V-7B (original LLaVA repo format) and DeepSeek-VL2 (remote code only; the
``deepseek_vl`` family in transformers is DeepSeek-VL 1) are not loadable this way.
"""

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

HF_ALIASES = {
    "hf:qwen2.5-vl-7b": "hf:Qwen/Qwen2.5-VL-7B-Instruct",
    "hf:qwen2.5-vl-3b": "hf:Qwen/Qwen2.5-VL-3B-Instruct",
    "hf:internvl3-8b": "hf:OpenGVLab/InternVL3-8B-hf",
    "hf:internvl3-1b": "hf:OpenGVLab/InternVL3-1B-hf",
    "hf:llava-1.5-7b": "hf:llava-hf/llava-1.5-7b-hf",
}


def model_kind(tag: str) -> str:
    """'sim', 'hf' or 'ollama': which backend captions with ``tag``."""
    return "sim" if tag.startswith("sim:") else "hf" if tag.startswith("hf:") else "ollama"


def resolve_models(text: str | list[str]) -> list[str]:
    """Aliases or full tags (anything with a ':' or '/') to tags, in order, without duplicates."""
    names = [n.strip() for part in ([text] if isinstance(text, str) else text) for n in part.split(",") if n.strip()]
    if not names:
        raise UsageProblem("no models given", hint=f"e.g. --models llava,qwen-vl (aliases: {', '.join(ALIASES)})")
    tags: list[str] = []
    for name in names:
        if name in ALIASES:
            tag = ALIASES[name]
        elif name in HF_ALIASES:
            tag = HF_ALIASES[name]
        elif name.startswith("hf:") and len(name) > 3:
            tag = name  # a folder or a hub id; checked before any tile
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
