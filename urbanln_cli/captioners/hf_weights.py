"""Where an ``hf:`` model's files are, and its digest: a hash of those files, cached so big weights are hashed once.

A model is a local folder or a Hugging Face hub id. A hub id is read from the
Hugging Face cache only: ``caption`` never downloads (a multi-GB download in the
middle of a GPU job is the user's call, as ``ollama pull`` is), so a model that
is not there stops the run with exit 4 and the ``hf download`` command.

The digest covers every file that decides the output: weights, configs, the
tokenizer and the chat template. A file in the hub cache is a link to a blob
named by its sha256 (for weights, which are LFS files), so that name is used as
is. Any other file over ``CACHE_OVER`` bytes is hashed once and its sha256 kept
in ``$HF_HOME/urbanln-weights-sha256.json``, keyed by (path, size, mtime_ns,
ctime_ns, inode): rewriting a file changes its ctime, so a changed file is
hashed again. Small files are hashed every time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

from urbanln_cli.errors import InputError, ServiceUnavailable, UsageProblem

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
OTHER_SUFFIXES = (".json", ".jinja", ".model", ".txt", ".tiktoken", ".py")
log = logging.getLogger(__name__)

CACHE_OVER = 8 << 20  # bytes: smaller files are hashed every run
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def download_hint(repo: str) -> str:
    return f"hf download {repo}   (or: huggingface-cli download {repo}), then run the same command again"


def model_folder(spec: str) -> Path:
    """The folder holding the model ``spec`` (a local folder or a hub id in the Hugging Face cache).

    InputError (exit 3) for a path that is not a folder; ServiceUnavailable (exit 4) for a hub id that is
    not (wholly) in the cache; UsageProblem (exit 2) for anything that is neither.
    """
    local = Path(spec).expanduser()
    if local.is_dir():
        _check_complete(local, spec, local=True)
        return local.resolve()
    if spec.startswith(("/", ".", "~")) or local.exists():
        raise InputError(f"hf:{spec} is not a model folder", hint="pass a folder written by save_pretrained")
    if not _REPO_ID.match(spec):
        from urbanln_cli.captioners.aliases import HF_ALIASES
        from urbanln_cli.config import suggest

        raise UsageProblem(
            f"hf:{spec} is neither a model folder nor a Hugging Face repo id{suggest('hf:' + spec, HF_ALIASES)}",
            hint="e.g. --models hf:Qwen/Qwen2.5-VL-7B-Instruct or hf:/path/to/model "
            f"(aliases: {', '.join(HF_ALIASES)})",
        )
    from transformers.utils.hub import is_offline_mode, try_to_load_from_cache

    config = try_to_load_from_cache(spec, "config.json")
    if not isinstance(config, str):
        where = "offline (HF_HUB_OFFLINE=1), and " if is_offline_mode() else ""
        raise ServiceUnavailable(
            f"{where}{spec} is not in the Hugging Face cache; caption does not download weights",
            hint=download_hint(spec),
        )
    folder = Path(config).parent
    _check_complete(folder, spec, local=False)
    return folder


def _check_complete(folder: Path, spec: str, *, local: bool) -> None:
    """Every weights file the model names is there (an interrupted download is not a model)."""
    fix = "pass a complete folder written by save_pretrained" if local else download_hint(spec)
    if not (folder / "config.json").is_file():
        raise (InputError if local else ServiceUnavailable)(f"hf:{spec} has no config.json", hint=fix)
    for index in folder.glob("*.index.json"):
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, TypeError, OSError):
            raise InputError(f"hf:{spec}: {index.name} is not a weights index", hint=fix) from None
        missing = sorted(s for s in shards if not (folder / s).is_file())
        if missing:
            raise (InputError if local else ServiceUnavailable)(
                f"hf:{spec} lacks {len(missing)} weights file(s), e.g. {missing[0]}", hint=fix
            )
    if not any(p.name.endswith(WEIGHT_SUFFIXES) and p.is_file() for p in folder.iterdir()):
        raise (InputError if local else ServiceUnavailable)(f"hf:{spec} has no weights file", hint=fix)


def model_files(folder: Path) -> list[Path]:
    """The files that decide a model's output, sorted by name (READMEs, images and hidden files are left out)."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.name.endswith(WEIGHT_SUFFIXES + OTHER_SUFFIXES)
    )


def cache_path() -> Path:
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(home) / "urbanln-weights-sha256.json"


def folder_digest(folder: Path) -> str:
    """``sha256:<hex>`` over (relative name, file sha256) of every file of ``model_files``."""
    cache_file = cache_path()
    try:
        cache = json.loads(cache_file.read_text())
        cache = cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        cache = {}
    changed = False
    lines = []
    for path in model_files(folder):
        real = path.resolve()
        if _SHA256.match(real.name) and real.parent.name == "blobs":
            sha = real.name  # the hub cache names a weights blob by its sha256
        elif real.stat().st_size <= CACHE_OVER:
            sha = _sha256(real)
        else:
            st = real.stat()
            key = f"{real}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"
            sha = cache.get(key)
            if not isinstance(sha, str):
                if st.st_size > 1 << 30:  # a minute or so of reading: say why nothing moves
                    log.warning("hashing %s (%.1f GB) once for the model digest", path.name, st.st_size / 1e9)
                sha = cache[key] = _sha256(real)
                changed = True
        lines.append(f"{path.relative_to(folder).as_posix()} {sha}")
    if changed:
        _save(cache_file, cache)
    return "sha256:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _save(cache_file: Path, cache: dict) -> None:
    """Best effort: a cache that cannot be written only means hashing again next time."""
    from urbanln_cli import artifacts

    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        artifacts.write_json_atomic(cache_file, cache)
    except OSError:
        pass
