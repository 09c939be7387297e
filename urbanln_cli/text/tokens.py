"""CLIP token counts with the real open_clip tokenizer (a BPE shipped in the package; works offline)."""

from __future__ import annotations

import functools
from typing import Callable

from urbanln_cli.text.clean import split_sentences


@functools.lru_cache(maxsize=2)
def _tokenizer(name: str):
    import open_clip

    return open_clip.get_tokenizer(name)


def clip_counter(name: str = "ViT-B-16") -> Callable[[str], int]:
    """A function giving the number of CLIP tokens of a text, start and end tokens included."""
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
