"""Step 2 of ``fuse``: split a sentence into atomic claims and normalise each one.

A claim is a concept from the lexicon (``residential``, ``river``, ``car``) with
its attributes (``dense``, ``mid-rise``, ``arterial``), an optional count
(``about 12 buildings``) and quantities (``4-lane``, ``2 storeys``). A sentence
with content but no lexicon concept gives one ``phrase`` claim holding its
content words, which only soft matching can compare. The first claim of a
sentence is its head: the thing the sentence is about.

Attributes stay with their nouns: a claim takes the attribute words directly
before its term (in the same noun phrase: ``two straight freeways``) and those
said of it (``the roads are wide and straight``), never words across another
noun (``two straight freeways … with some cars`` says nothing straight about cars).

Negation is part of a claim: ``no cars``, ``without pedestrians``, ``neither
trees nor buildings``, ``no vehicles are visible``, ``cars are not visible``
are absence claims (``negated``). They match only other absence claims, and a
presence claim of the same concept contradicts them. Each claim keeps where its
term stands in the sentence (``spans``), so ``fuse`` can cut the piece that
carries it and nothing else (``text.clauses``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from urbanln_cli.text.clauses import DETERMINERS, Layout, layout
from urbanln_cli.text.clean import _SCENE_WORDS, _STOP, words
from urbanln_cli.text.lexicon import NUMBER_WORDS, Lexicon

_APPROX = {
    "about",
    "around",
    "roughly",
    "approximately",
    "nearly",
    "almost",
    "over",
    "some",
    "circa",
    "approx",
    "~",
    "up",
}
_LANES = re.compile(r"\b(\d+|" + "|".join(k for k in NUMBER_WORDS if " " not in k) + r")[- ]lanes?\b")
_STOREYS = re.compile(
    r"\b(\d+|"
    + "|".join(k for k in NUMBER_WORDS if " " not in k)
    + r")[- ](?:storeys?|stories|story|floors?|levels?)\b"
)
_RANGE = re.compile(r"\bfrom (\d+) to (\d+) (?:storeys|stories|floors|levels)\b")
_TOKEN = re.compile(r"[a-z0-9~]+(?:[-'][a-z0-9]+)*|[,]")

# words that negate the noun phrase they open ("no cars", "without any trees", "lack of parking")
NEGATORS = frozenset(
    {
        "no",
        "without",
        "zero",
        "neither",
        "nor",
        "lacks",
        "lacking",
        "lack",
        "absence",
        "devoid",
        "free",
        "void",
        "none",
        "never",
        "not",
    }
)
# "not" does not negate these: "not many cars" still says there are cars
_NOT_EXCEPT = frozenset(
    {"much", "many", "very", "only", "just", "all", "too", "so", "quite", "particularly", "entirely", "far", "fully"}
)
# words that may sit between a negator or an attribute and the noun without ending its noun phrase
_PASS = DETERMINERS | {
    "visible",
    "apparent",
    "obvious",
    "discernible",
    "single",
    "signs",
    "sign",
    "traces",
    "trace",
    "evidence",
    "very",
    "densely",
    "sparsely",
    "mostly",
    "relatively",
    "fairly",
    "quite",
    "extremely",
    "highly",
    "mainly",
    "largely",
    "to",
    "be",
    "seen",
    "any",
    "approximately",
    "roughly",
    "about",
    "around",
    "nearly",
    "almost",
    "over",
    "up",
    "circa",
    "~",
}
_ADVERBS = r"(?:(?:mostly|mainly|very|quite|relatively|fairly|largely|predominantly|generally|all|rather)\s+)?"
_COPULA = (
    r"^\s*(?:(?:is|are|was|were|appears?|seems?|looks?)(?:\s+to\s+be)?|[^,;.]*?,\s*(?:most|all|many|some|several)\s+of\s+them"
    r"(?:\s+(?:are|being))?)\s+" + _ADVERBS
)
_ABSENT_AFTER = re.compile(
    r"^\s*(?:(?:(?:is|are|was|were)\s+(?:not|nowhere)|isn't|aren't|wasn't|weren't)\s+(?:(?:clearly|readily|easily|really)\s+)?"
    r"(?:visible|present|seen|shown|apparent|evident|discernible|observed|found|there|to\s+be\s+(?:seen|found)|in\s+(?:the|this)\s+"
    r"(?:image|picture|photo|scene|view|area))"
    r"|(?:cannot|can't|can\s+not|could\s+not|couldn't|do\s+not|don't|does\s+not|doesn't)\s+(?:be\s+)?"
    r"(?:seen|visible|found|spotted|observed|identified|made\s+out|appear|exist)"
    r"|(?:is|are|was|were)\s+(?:absent|missing))\b"
)


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
    negated: bool = False  # an absence claim: "no cars", "without trees", "no vehicles are visible"
    spans: tuple[tuple[int, int], ...] = field(default=(), compare=False)  # where its term(s) stand in the sentence

    @property
    def key(self) -> tuple:
        """The canonical form: (concept or phrase, sorted attributes, count, quantities); an absence claim's concept
        reads 'no:…'."""
        name = self.concept or f"phrase:{self.term}"
        return ("no:" + name if self.negated else name, tuple(sorted(self.attributes)), self.count, self.quantities)

    def render(self) -> str:
        """A short noun phrase for the claim, e.g. 'about 12 low-rise buildings with 2 storeys' or 'no cars'."""
        if self.concept is None:
            return self.term
        q = dict(self.quantities)
        parts = ["no"] if self.negated else []
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
            "concept": self.concept,
            "kind": self.kind,
            "text": self.render(),
            "attributes": list(self.attributes),
            "count": self.count,
            "quantities": dict(self.quantities),
            "head": self.head,
            "negated": self.negated,
            "model": self.model,
            "sentence": self.sentence,
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
    negated: bool = False
    opener: int = -1  # where its noun phrase starts


def _number(token: str) -> int | None:
    if token.isdigit():
        return int(token)
    return NUMBER_WORDS.get(token)


def lower_same_length(text: str) -> str:
    """``text.lower()``, keeping every character's position (a few characters lower-case to two)."""
    low = text.lower()
    return low if len(low) == len(text) else "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


def _attribute_ranges(low: str, lexicon: Lexicon) -> dict[int, tuple[int, str]]:
    """Start of each attribute word(s) in the sentence -> (end, attribute)."""
    return {m.start(1): (m.end(1), m.group(1)) for m in lexicon.attribute_pattern.finditer(low)}


def _modifiers(low: str, floor: int, span: _Span, attrs: dict[int, tuple[int, str]]) -> None:
    """The noun phrase before ``span``, read backwards from its term: attributes, count, negation."""
    tokens = [(m.start(), m.end(), m.group(0)) for m in _TOKEN.finditer(low, floor, span.start)]
    by_end = {end: (start, word) for start, (end, word) in attrs.items() if start >= floor and end <= span.start}
    i, pos, passed = len(tokens) - 1, span.start, []
    span.opener = span.start
    while i >= 0:
        start, end, word = tokens[i]
        if low[end:pos].strip():
            break  # something that is not a word or comma between: the phrase ends here
        attr = next(((s, a) for e, (s, a) in by_end.items() if e == end), None)
        if attr is not None:
            span.attributes.insert(0, attr[1])
            while i >= 0 and tokens[i][0] >= attr[0]:
                i -= 1
            pos = attr[0]
            passed.append("<attr>")
            span.opener = pos
            continue
        n = _number(word)
        if word in (",", "and", "or"):
            if not (i > 0 and tokens[i - 1][1] in by_end):
                break  # only between attributes: "large, white buildings", "arterial and local roads"
        elif n is not None or re.fullmatch(r"\d+-\w+", word):
            if n is not None and span.count is None:
                span.count = n
                span.approx = any(t[2] in _APPROX for t in tokens[max(0, i - 2) : i])
        elif word in NEGATORS:
            if word == "not" and passed and passed[-1] in _NOT_EXCEPT:
                break
            if word in ("free", "void", "devoid", "absence", "lack") and (not passed or passed[-1] != "of"):
                break
            span.negated = True
        elif word not in _PASS:
            break
        passed.append(word)
        pos = start
        span.opener = start
        i -= 1


def _predicate(low: str, span: _Span, limit: int, attribute_pattern: re.Pattern) -> bool:
    """What the sentence says of the thing after naming it: 'the roads are wide and straight', 'cars are not visible'
    (True)."""
    after = low[span.end : limit]
    if _ABSENT_AFTER.match(after):
        span.negated = True
        return True
    m = re.match(_COPULA, after)
    if m is None:
        return False
    rest = after[m.end() :]
    while True:
        a = attribute_pattern.match(rest)
        if a is None:
            return False
        span.attributes.append(a.group(1))
        rest = rest[a.end() :]
        joint = re.match(r"\s*(?:,\s*)?(?:and\s+|or\s+)?", rest)
        if not joint or not joint.group(0):
            return False
        rest = rest[joint.end() :]


def _coordinated(low: str, prev: _Span, span: _Span, lay: Layout) -> bool:
    """``no cars or pedestrians``: the negation of the first noun phrase covers the next one."""
    if lay.segment_at(prev.start) != lay.segment_at(span.start):
        return False
    gap = low[prev.end : span.opener if span.opener >= prev.end else span.start]
    return re.fullmatch(r"\s*(?:,\s*)?(?:or|nor|and)?\s*(?:,\s*)?", gap) is not None and (
        span.opener == span.start
        or not re.search(r"\b(?:a|an|the|some|several|many|lots|plenty)\b", low[span.opener : span.start])
    )


def parse_claims(text: str, lexicon: Lexicon, *, model: str = "", sentence: int = -1) -> list[Claim]:
    """The claims of one (cleaned) sentence, in order; the first is the head."""
    low = lower_same_length(text)
    lay = layout(text)
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
        return [
            Claim(None, "phrase", " ".join(content), head=True, model=model, sentence=sentence, spans=((0, len(text)),))
        ]

    attrs = _attribute_ranges(low, lexicon)
    for i, span in enumerate(spans):
        seg = lay.segments[lay.segment_at(span.start)]
        floor = max(spans[i - 1].end if i else 0, seg.body)
        _modifiers(low, floor, span, attrs)
    for i, span in enumerate(spans):
        nxt = spans[i + 1].opener if i + 1 < len(spans) else lay.end
        seg_end = lay.segments[lay.segment_at(span.start)].end
        absent = _predicate(low, span, min(nxt, lay.end) if nxt > span.end else seg_end, lexicon.attribute_pattern)
        if i and not span.negated and spans[i - 1].negated and _coordinated(low, spans[i - 1], span, lay):
            span.negated = True
        # "cars and pedestrians are not visible": the absence said after the last noun covers those coordinated before
        # it
        j = i
        while absent and j > 0 and not spans[j - 1].negated and _coordinated(low, spans[j - 1], spans[j], lay):
            spans[j - 1].negated = True
            j -= 1

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

    # one claim per concept (and polarity) per sentence: 'the street network mixes arterial and local roads'
    merged: dict[tuple[str, bool], Claim] = {}
    for i, span in enumerate(spans):
        kind = lexicon.concepts[span.concept].kind
        attrs_ = tuple(dict.fromkeys(a for a in span.attributes if a not in span.term.split()))
        q = tuple(sorted(quantities.get(i, {}).items()))
        key = (span.concept, span.negated)
        old = merged.get(key)
        where = ((span.start, span.end),)
        if old is None:
            merged[key] = Claim(
                span.concept,
                kind,
                span.term,
                attrs_,
                span.count,
                span.approx,
                q,
                head=not merged,
                model=model,
                sentence=sentence,
                negated=span.negated,
                spans=where,
            )
        else:
            merged[key] = Claim(
                span.concept,
                kind,
                span.term if old.count is None and span.count is not None else old.term,
                tuple(dict.fromkeys(old.attributes + attrs_)),
                old.count if old.count is not None else span.count,
                old.approx or span.approx,
                tuple(sorted(dict(old.quantities + q).items())),
                old.head,
                model,
                sentence,
                span.negated,
                old.spans + where,
            )
    return list(merged.values())
