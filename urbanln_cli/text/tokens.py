"""CLIP token counts, without torch: open_clip's BPE read straight from its vocabulary file.

``fuse`` only needs to know how many tokens a caption takes (to fit it into 77
or 248). open_clip's own tokenizer lives in a module that imports torch (about
1 GB and several seconds before the first caption), so for the tokenizers that
are open_clip's ``SimpleTokenizer`` (every OpenAI-style CLIP: ViT-B-16,
ViT-L-14, our urbanln-* architectures…) this module runs the same byte-level
BPE in pure Python over the same file, ``bpe_simple_vocab_16e6.txt.gz``
shipped inside the open_clip package, found without importing it. Text
cleaning is the same too (ftfy, HTML unescape, whitespace, lower case or
canonicalize), so the counts are exactly open_clip's; ``tests/test_tokens.py``
checks that. Any other tokenizer (an HF one, SigLIP, a reduction mask) still
goes through ``open_clip.get_tokenizer``.
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.util
import json
import string
from collections.abc import Callable
from pathlib import Path

from urbanln_cli.text.clean import split_sentences

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
_CLEAN_MODES = ("lower", "whitespace", "canonicalize")
_OUR_CONFIGS = Path(__file__).resolve().parents[1] / "models" / "model_configs"


@functools.lru_cache(maxsize=2)
def _tokenizer(name: str):
    """open_clip's own tokenizer for ``name`` (imports torch): the fallback."""
    import open_clip

    return open_clip.get_tokenizer(name)


def open_clip_dir() -> Path | None:
    """The installed open_clip package folder, found without importing it (its ``__init__`` imports torch)."""
    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def bpe_path() -> Path | None:
    """open_clip's BPE vocabulary file, or None when open_clip is not installed."""
    folder = open_clip_dir()
    path = folder / BPE_FILE if folder else None
    return path if path is not None and path.is_file() else None


def _model_config(name: str) -> dict | None:
    """The open_clip model config of ``name`` as ``open_clip.get_model_config`` would see it, read from the JSON
    files."""
    if name.startswith("local-dir:"):
        path = Path(name[len("local-dir:") :]) / "open_clip_config.json"
        try:
            return json.loads(path.read_text(encoding="utf-8")).get("model_cfg")
        except (OSError, ValueError, AttributeError):
            return None
    folder = open_clip_dir()
    # ours after open_clip's: register_model_configs() appends our folder, so a clash resolves the same way
    for base in ([folder / "model_configs"] if folder else []) + [_OUR_CONFIGS]:
        path = base / f"{name}.json"
        if path.is_file():
            try:
                cfg = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(cfg, dict) and all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
                return cfg
    return None


def simple_clean_mode(name: str) -> str | None:
    """The clean mode of ``name``'s tokenizer when it is open_clip's plain ``SimpleTokenizer``, else None.

    Mirrors ``open_clip.get_tokenizer``: an unknown name gets the default
    SimpleTokenizer; a config naming an HF tokenizer, a SigLIP name, an
    ``hf-hub:`` model or tokenizer options other than ``clean`` are not ours.
    """
    if name.startswith("hf-hub:"):
        return None
    cfg = _model_config(name)
    if name.startswith("local-dir:") and cfg is None:
        return None  # open_clip would raise; let it say why
    text_cfg = (cfg or {}).get("text_cfg") or {}
    if text_cfg.get("hf_tokenizer_name") or (not name.startswith("local-dir:") and "siglip" in name.lower()):
        return None
    kwargs = text_cfg.get("tokenizer_kwargs") or {}
    if set(kwargs) - {"clean"}:
        return None
    mode = kwargs.get("clean", "lower")
    return mode if mode in _CLEAN_MODES else None


@functools.lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class ClipBPE:
    """open_clip's ``SimpleTokenizer.encode`` (the CLIP byte-level BPE) without torch; same ids, same counts."""

    _CACHE_LIMIT = 200_000

    def __init__(self, path: Path | str | None = None, clean: str = "lower") -> None:
        import ftfy  # both come with open_clip_torch (and neither imports torch)
        import regex

        path = Path(path) if path is not None else bpe_path()
        if path is None:
            raise FileNotFoundError(f"open_clip's {BPE_FILE} was not found (is open_clip_torch installed?)")
        if clean not in _CLEAN_MODES:
            raise ValueError(f"clean must be one of {', '.join(_CLEAN_MODES)}, not {clean!r}")
        self._fix_text = ftfy.fix_text
        self.clean = clean
        self.byte_encoder = _bytes_to_unicode()
        with gzip.open(path) as f:
            lines = f.read().decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
        vocab = list(self.byte_encoder.values())
        vocab += [v + "</w>" for v in vocab]
        vocab += ["".join(m) for m in merges]
        special = ["<start_of_text>", "<end_of_text>"]
        vocab += special
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}
        self.sot_token_id, self.eot_token_id = self.encoder[special[0]], self.encoder[special[1]]
        self._special = {t: t for t in special}
        self._cache: dict[str, str] = dict(self._special)
        self.pat = regex.compile(
            "|".join(special) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE
        )
        self._punct = str.maketrans("", "", string.punctuation)

    def _clean(self, text: str) -> str:
        text = html.unescape(html.unescape(self._fix_text(text))).strip()
        if self.clean == "canonicalize":
            text = text.replace("_", " ").translate(self._punct).lower()
            return " ".join(text.split()).strip()
        text = " ".join(text.split()).strip()
        return text.lower() if self.clean == "lower" else text

    def bpe(self, token: str) -> str:
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = set(zip(word, word[1:]))
        if not pairs:
            return token + "</w>"
        ranks = self.bpe_ranks
        while True:
            bigram = min(pairs, key=lambda pair: ranks.get(pair, float("inf")))
            if bigram not in ranks:
                break
            first, second = bigram
            new_word: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = set(zip(word, word[1:]))
        out = " ".join(word)
        if len(self._cache) >= self._CACHE_LIMIT:
            self._cache = dict(self._special)
        self._cache[token] = out
        return out

    def encode(self, text: str) -> list[int]:
        """Token ids, without the start and end tokens (as open_clip's ``encode``)."""
        ids: list[int] = []
        for token in self.pat.findall(self._clean(text)):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(token).split(" "))
        return ids

    def count(self, text: str) -> int:
        """Tokens of ``text`` with the start and end tokens, before any truncation."""
        n = 2
        for token in self.pat.findall(self._clean(text)):
            n += self.bpe("".join(self.byte_encoder[b] for b in token.encode("utf-8"))).count(" ") + 1
        return n


@functools.lru_cache(maxsize=3)
def bpe_tokenizer(clean: str = "lower") -> ClipBPE:
    """The shared torch-free CLIP BPE (one per clean mode)."""
    return ClipBPE(clean=clean)


def clip_counter(name: str = "ViT-B-16") -> Callable[[str], int]:
    """A function giving the number of CLIP tokens of a text, start and end tokens included.

    Torch-free for open_clip's SimpleTokenizer architectures; any other
    tokenizer is open_clip's own (which imports torch).
    """
    mode = simple_clean_mode(name)
    if mode is not None and bpe_path() is not None:
        return bpe_tokenizer(mode).count
    tok = _tokenizer(name)
    return lambda text: len(tok.encode(text)) + 2


def fit_tokens(text: str, limit: int, count: Callable[[str], int]) -> tuple[str, bool, int]:
    """(text cut at a sentence boundary to at most ``limit`` tokens, whether it was cut, its token count).

    A first sentence that alone is too long is cut at a word boundary instead.
    """
    n = count(text)
    if n <= limit:
        return text, False, n
    kept: list[str] = []
    for sentence in split_sentences(text):
        trial = " ".join([*kept, sentence])
        if count(trial) > limit:
            break
        kept.append(sentence)
    if not kept:
        words = text.split()
        lo, hi = 0, len(words)
        while lo < hi:  # longest word prefix that fits
            mid = (lo + hi + 1) // 2
            if count(" ".join(words[:mid])) <= limit:
                lo = mid
            else:
                hi = mid - 1
        kept = [" ".join(words[:lo])]
    out = " ".join(kept)
    return out, True, count(out)
