"""Step 2 of ``fuse``: split a sentence into atomic claims and normalise each one.

A claim is a concept from the lexicon (``residential``, ``river``, ``car``) with
its attributes (``dense``, ``mid-rise``, ``arterial``), an optional count
(``about 12 buildings``) and quantities (``4-lane``, ``2 storeys``). A sentence
with content but no lexicon concept gives one ``phrase`` claim holding its
content words, which only soft matching can compare. The first claim of a
sentence is its head: the thing the sentence is about; when the head goes, the
sentence goes (``Traffic lights control the main intersection`` says nothing
trustworthy about the intersection once the traffic lights are gone).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from urbanln_cli.text.clean import _SCENE_WORDS, _STOP, words
from urbanln_cli.text.lexicon import NUMBER_WORDS, Lexicon

_APPROX = {"about", "around", "roughly", "approximately", "nearly", "almost", "over", "some", "circa", "approx", "~", "up"}
_LANES = re.compile(r"\b(\d+|" + "|".join(k for k in NUMBER_WORDS if " " not in k) + r")[- ]lanes?\b")
_STOREYS = re.compile(r"\b(\d+|" + "|".join(k for k in NUMBER_WORDS if " " not in k) + r")[- ](?:storeys?|stories|story|floors?|levels?)\b")
_RANGE = re.compile(r"\bfrom (\d+) to (\d+) (?:storeys|stories|floors|levels)\b")


@dataclass(frozen=True)
class Claim:
    concept: str | None  # canonical concept; None for a phrase claim
    kind: str  # "land_use", "object" or "phrase"
    term: str  # the surface term (or the phrase's content words)
    attributes: tuple[str, ...] = ()
    count: int | None = None
    approx: bool = False
    quantities: tuple[tuple[str, str], ...] = ()  # (("lanes", "4"), ("storeys", "2-3"))
    head: bool = False
    model: str = ""
    sentence: int = -1  # index in split_sentences(raw caption)

    @property
    def key(self) -> tuple:
        """The canonical form: (concept or phrase, sorted attributes, count, quantities)."""
        return (self.concept or f"phrase:{self.term}", tuple(sorted(self.attributes)), self.count, self.quantities)

    def render(self) -> str:
        """A short noun phrase for the claim, e.g. 'about 12 low-rise buildings with 2 storeys'."""
        if self.concept is None:
            return self.term
        q = dict(self.quantities)
        parts = []
        if self.count is not None:
            parts.append(f"about {self.count}" if self.approx else str(self.count))
        if "lanes" in q:
            parts.append(f"{q['lanes']}-lane")
        parts.extend(a for a in self.attributes if a not in self.term)
        parts.append(self.term)
        text = " ".join(parts)
        if "storeys" in q:
            text += f" with {q['storeys']} storeys"
        return text

    def soft_text(self) -> str:
        """What soft matching compares: the canonical concept (so synonyms agree) or the phrase."""
        return " ".join([*(sorted(self.attributes)), self.concept.replace("_", " ") if self.concept else self.term])

    def to_json(self) -> dict[str, Any]:
        return {
            "concept": self.concept, "kind": self.kind, "text": self.render(), "attributes": list(self.attributes),
            "count": self.count, "quantities": dict(self.quantities), "head": self.head, "model": self.model, "sentence": self.sentence,
        }


@dataclass
class _Span:
    concept: str
    term: str
    start: int
    end: int
    attributes: list[str] = field(default_factory=list)
    count: int | None = None
    approx: bool = False


def _number(token: str) -> int | None:
    if token.isdigit():
        return int(token)
    return NUMBER_WORDS.get(token)


def _count_before(pre: str) -> tuple[int | None, bool]:
    """A count in the few words before a concept: 'about 12 (large) buildings'."""
    tokens = re.findall(r"[a-z0-9~]+(?:[-'][a-z0-9]+)*", pre.lower())[-4:]
    for i in range(len(tokens) - 1, -1, -1):
        n = _number(tokens[i])
        if n is not None:
            return n, any(t in _APPROX for t in tokens[max(0, i - 2) : i])
    return None, False


def parse_claims(text: str, lexicon: Lexicon, *, model: str = "", sentence: int = -1) -> list[Claim]:
    """The claims of one (cleaned) sentence, in order; the first is the head."""
    low = text.lower()
    spans: list[_Span] = []
    for m in lexicon.term_pattern.finditer(low):
        concept = lexicon.term_to_concept[m.group(1)]
        prev = spans[-1] if spans else None
        if prev is not None and not low[prev.end : m.start()].strip():
            kinds = (lexicon.concepts[prev.concept].kind, lexicon.concepts[concept].kind)
            if kinds == ("object", "object") or prev.concept == concept:  # "highway road": one thing, named twice
                prev.end = m.end()
                continue
        spans.append(_Span(concept, m.group(1), m.start(), m.end()))
    if not spans:
        content = [w for w in words(text) if w not in _STOP and w not in _SCENE_WORDS]
        if not content:
            return []
        return [Claim(None, "phrase", " ".join(content), head=True, model=model, sentence=sentence)]

    # attributes: the few words before a concept are its own; the rest of a gap belongs to the concept before it
    for i, span in enumerate(spans):
        start = spans[i - 1].end if i else 0
        pre = low[start : span.start]
        pre_words = pre.split()
        own = " ".join(pre_words[-4:]) if i else pre
        rest = " ".join(pre_words[:-4]) if i else ""
        span.attributes += [a.group(1) for a in lexicon.attribute_pattern.finditer(own)]
        if i and rest:
            spans[i - 1].attributes += [a.group(1) for a in lexicon.attribute_pattern.finditer(rest)]
        span.count, span.approx = _count_before(own)
    tail = low[spans[-1].end :]
    spans[-1].attributes += [a.group(1) for a in lexicon.attribute_pattern.finditer(tail)]

    quantities: dict[int, dict[str, str]] = {}

    def owner(pos: int) -> int:
        # a quantity belongs to the nearest concept before it, else the first after it
        before = [i for i, s in enumerate(spans) if s.start <= pos]
        return before[-1] if before else 0

    for m in _RANGE.finditer(low):
        quantities.setdefault(owner(m.start()), {})["storeys"] = f"{m.group(1)}-{m.group(2)}"
    for m in _STOREYS.finditer(low):
        if not any(r.start() <= m.start() < r.end() for r in _RANGE.finditer(low)):
            quantities.setdefault(owner(m.start()), {}).setdefault("storeys", str(_number(m.group(1))))
    for m in _LANES.finditer(low):
        after = [i for i, s in enumerate(spans) if s.start >= m.end()]  # '4-lane road': the concept after it
        quantities.setdefault(after[0] if after else owner(m.start()), {})["lanes"] = str(_number(m.group(1)))

    # one claim per concept per sentence: 'the street network mixes arterial and local roads'
    merged: dict[str, Claim] = {}
    for i, span in enumerate(spans):
        kind = lexicon.concepts[span.concept].kind
        attrs = tuple(dict.fromkeys(a for a in span.attributes if a not in span.term.split()))
        q = tuple(sorted(quantities.get(i, {}).items()))
        old = merged.get(span.concept)
        if old is None:
            merged[span.concept] = Claim(span.concept, kind, span.term, attrs, span.count, span.approx, q, head=not merged, model=model, sentence=sentence)
        else:
            merged[span.concept] = Claim(
                span.concept, kind, old.term, tuple(dict.fromkeys(old.attributes + attrs)),
                old.count if old.count is not None else span.count, old.approx or span.approx,
                tuple(sorted(dict(old.quantities + q).items())), old.head, model, sentence,
            )
    return list(merged.values())
