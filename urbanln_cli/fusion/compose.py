"""Steps 7-9 of the per-tile fusion: choose the caption, fit it, and make ``caption_short`` from it.

Nothing here writes a word of its own: the caption is one candidate's kept
sentences, and ``caption_short`` is made of the caption's sentences (the one
that names the tile's main land use first, then the leading ones), cut at a
clause boundary or, as a last resort, at a word boundary when one sentence
alone is longer than the limit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from urbanln_cli.image_check import Verdict
from urbanln_cli.text.claims import Claim
from urbanln_cli.text.clauses import DANGLING, layout
from urbanln_cli.text.lexicon import Lexicon
from urbanln_cli.text.match import Matcher
from urbanln_cli.text.tokens import fit_tokens

Piece = tuple[int, str, list[Claim]]  # (sentence index in the raw caption, kept text, kept claims)


def drop(model: str, sentence: int | None, text: str, reason: str, **extra: Any) -> dict[str, Any]:
    """One dropped phrase or claim, as the corpus row's ``dropped`` lists it."""
    return {
        "model": model,
        "sentence": sentence,
        "text": text,
        "reason": reason,
        **{k: v for k, v in extra.items() if v is not None},
    }


def verdict_json(verdict: Verdict | None) -> dict[str, Any]:
    if verdict is None:
        return {}
    return {
        "checked_by": verdict.by,
        "confirmed": verdict.confirmed,
        **{
            k: v
            for k, v in (
                ("check_score", verdict.score),
                ("check_answer", verdict.answer),
                ("check_error", verdict.error),
            )
            if v is not None
        },
    }


def neg(model: str) -> tuple:
    # ties go to the alphabetically first model: max() needs a key that is larger for it
    return tuple(-ord(ch) for ch in model)


def choose(
    claims_of: dict[str, list[Claim]], matcher: Matcher, consensus: bool, main: str | None = None
) -> tuple[str, dict[str, float | None]]:
    """The candidate that agrees most with the others (mean claim F1), and every candidate's score.

    With ``main`` (the tile's main land use), a candidate that names it comes before
    one that does not: the caption says what the tile is.
    """
    scores: dict[str, float | None] = {m: None for m in claims_of}
    names = (
        {m: any(c.concept == main and not c.negated for c in cs) for m, cs in claims_of.items()}
        if main
        else {m: False for m in claims_of}
    )
    if consensus and len(claims_of) > 1:
        for m in claims_of:
            scores[m] = sum(matcher.f1(claims_of[m], claims_of[o]) for o in claims_of if o != m) / (len(claims_of) - 1)
        return max(claims_of, key=lambda m: (names[m], scores[m], len(claims_of[m]), neg(m))), scores
    return max(claims_of, key=lambda m: (names[m], len(claims_of[m]), neg(m))), scores


def main_concept(claims: Sequence[Claim], lexicon: Lexicon) -> str | None:
    """What the tile is: the land use most models name (present), else the head concept most models name."""
    models: dict[str, set[str]] = {}
    first: dict[str, int] = {}
    heads: set[str] = set()
    for n, c in enumerate(claims):
        if c.concept is None or c.negated:
            continue
        models.setdefault(c.concept, set()).add(c.model)
        first.setdefault(c.concept, n)
        if c.head:
            heads.add(c.concept)
    land = [k for k in models if lexicon.concepts.get(k) is not None and lexicon.concepts[k].kind == "land_use"]
    pool = land or [k for k in models if k in heads] or list(models)
    return max(pool, key=lambda k: (len(models[k]), -first[k])) if pool else None


def short_caption(pieces: list[Piece], main: str | None, limit: int, count: Callable[[str], int]) -> str:
    """At most ``limit`` tokens of the caption's own sentences: the first that names ``main``, with the leading ones
    that fit.

    The sentences keep their order. When the sentence naming ``main`` alone is too
    long, its trailing phrases are cut at clause boundaries (keeping ``main``);
    only a sentence with no boundary that fits is cut at a word boundary.
    """
    if not pieces:
        return ""
    anchor = (
        next((i for i, (_, _, cs) in enumerate(pieces) if any(c.concept == main and not c.negated for c in cs)), 0)
        if main
        else 0
    )
    texts = [t for _, t, _ in pieces]
    anchor_text = _fit_sentence(
        texts[anchor], [c for c in pieces[anchor][2] if c.concept == main and not c.negated], limit, count
    )
    chosen = {anchor: anchor_text}
    for i, text in enumerate(texts):
        if i == anchor:
            continue
        trial = dict(chosen) | {i: text}
        if count(" ".join(trial[k] for k in sorted(trial))) > limit:
            break
        chosen = trial
    return " ".join(chosen[k] for k in sorted(chosen))


def _fit_sentence(text: str, mains: list[Claim], limit: int, count: Callable[[str], int]) -> str:
    if count(text) <= limit:
        return text
    lay = layout(text)
    tail = text[lay.end :] if text[lay.end :].strip() else "."
    keep_from = max((s for c in mains for s, _ in c.spans), default=0)
    for seg in reversed(lay.segments[1:]):
        if seg.start <= keep_from:
            break
        head = text[: seg.start].rstrip(" ,;:")
        words = re.findall(r"[A-Za-z0-9]+(?:[-'][A-Za-z0-9]+)*", head)
        if not words or words[-1].lower() in DANGLING:
            continue
        if count(head + tail) <= limit:
            return head + tail
    return fit_tokens(text, limit, count)[0]


__all__ = ["Piece", "drop", "verdict_json", "choose", "main_concept", "short_caption", "neg"]
