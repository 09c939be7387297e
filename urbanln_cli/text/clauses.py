"""Where a sentence can be cut without rewriting it: clauses, phrases and list items.

``fuse`` never rebuilds a sentence from its claims. When a claim goes, the text
that carries it goes, and only whole pieces go:

- a sentence is split into *clauses* at strong boundaries (``;``, ``, and``,
  ``, but``, ``while`` …), and each clause into *segments* at weak ones (commas,
  prepositions, relative pronouns: ``with``, ``on``, ``surrounded by``, ``which``);
- a claim in a clause's first segment (its core) takes the clause with it, and a
  claim in the first clause's core takes the whole sentence;
- a claim in a later segment cuts the clause from that segment to its end, since
  what follows a phrase usually hangs on it ("… with dense forest on both banks");
- a bare list item (``, roads``) or a last conjunct (``… buildings and vehicles``)
  goes alone;
- a cut that would leave a dangling word (``are``, ``with``, ``surrounded``) takes
  the segment before it too.

So every kept sentence is the original text with whole pieces removed: its words
are a subsequence of the original's, attributes stay with their nouns, and a
negation (``with no cars or pedestrians``) goes whole or stays whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# a clause starts after these; the match is the boundary marker, which goes with the clause after it
_STRONG = re.compile(
    r"\s*;\s*|\s*,\s*(?:and|but|while|whereas|although|though|yet|so|or)\s+|\s+(?:but|whereas|although|though|while)\s+"
    r"|\s+and\s+(?=there\s+(?:is|are|was|were)\b)",
    re.I,
)
# a phrase starts at these (a comma, or the space before a preposition or relative word)
_WEAK_WORDS = (
    "with",
    "without",
    "on",
    "in",
    "at",
    "near",
    "beside",
    "besides",
    "behind",
    "along",
    "alongside",
    "across",
    "around",
    "between",
    "from",
    "into",
    "onto",
    "through",
    "throughout",
    "under",
    "over",
    "next to",
    "close to",
    "surrounded by",
    "surrounded with",
    "including",
    "such as",
    "where",
    "which",
    "that",
    "who",
    "whose",
    "as well as",
    "among",
    "amid",
    "amongst",
    "toward",
    "towards",
    "lined with",
    "lined by",
    "dotted with",
    "covered with",
    "covered by",
    "filled with",
    "located",
    "situated",
    "bordered by",
    "adjacent to",
    "apart from",
    "except",
    "in front of",
    "on top of",
    "indicating",
    "suggesting",
    "possibly",
    "probably",
    "likely",
    "mostly",
    "mainly",
)
_WEAK = re.compile(
    r"\s*,\s*|\s+(?=(?:" + "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in _WEAK_WORDS) + r")\b)", re.I
)
_END = re.compile(r"[\s.!?…\"')\]]*$")

# words a kept piece may not end with: the cut would leave a phrase without its object
DANGLING = frozenset(
    """
is are was were be been being am 's a an the of to with without and or nor but by in on at from into onto near beside
besides
behind along alongside across around between through throughout under over that which where who whose while as such
including indicating suggesting showing surrounded lined dotted covered filled located situated bordered next close
there
it its their some many several few no not any both either neither than like for whether if because so also mostly mainly
primarily likely possibly probably very quite seems appears appear seem looks look has have had can could may might will
would should must goes go passes pass crosses cross contains contain includes include features feature shows show
depicts depict consists consist composed made part piece lots plenty number variety mix
""".split()
)
# words that may stand before a noun in its own noun phrase (with attributes and numbers)
DETERMINERS = frozenset(
    """
a an the some several many few numerous multiple various other more most all both each every any no lots plenty of
its their this that these those one single
""".split()
)
_WORD = re.compile(r"[A-Za-z0-9~]+(?:[-'][A-Za-z0-9]+)*")


@dataclass(frozen=True)
class Segment:
    start: int  # where its boundary marker starts (the marker goes with the segment)
    body: int  # where its words start
    end: int
    clause: int  # index of its clause
    first: bool  # the clause's core (its first segment)
    marker: str  # the boundary marker, stripped and lower-cased ("" for a sentence's first segment)


@dataclass(frozen=True)
class Layout:
    text: str
    end: int  # where the sentence's final punctuation starts
    segments: tuple[Segment, ...]

    def segment_at(self, pos: int) -> int:
        """The segment holding ``pos`` (a position in a boundary marker belongs to the segment it starts)."""
        return max((i for i, s in enumerate(self.segments) if s.start <= pos), default=0)

    def clause_range(self, clause: int) -> tuple[int, int]:
        segs = [s for s in self.segments if s.clause == clause]
        return segs[0].start, segs[-1].end


def layout(text: str) -> Layout:
    """The clauses and segments of one sentence."""
    end = _END.search(text).start() if text else 0
    body = text[:end]
    strong = [(m.start(), m.end()) for m in _STRONG.finditer(body) if 0 < m.start() and m.end() < len(body)]
    weak = [(m.start(), m.end()) for m in _WEAK.finditer(body) if 0 < m.start() and m.end() < len(body)]
    marks: list[tuple[int, int, bool]] = [(s, e, True) for s, e in strong]
    for s, e in weak:
        if not any(a <= s < b or a < e <= b for a, b in strong):
            marks.append((s, e, False))
    marks.sort()
    segments: list[Segment] = []
    clause, start, body_start, first, marker = 0, 0, 0, True, ""
    for s, e, is_strong in marks:
        if s <= start:
            continue
        segments.append(Segment(start, body_start, s, clause, first, marker))
        clause += is_strong
        start, body_start, first, marker = s, e, is_strong, text[s:e].strip().lower()
    segments.append(Segment(start, body_start, end, clause, first, marker))
    opening = _WORD.search(text, 0, segments[0].end)
    if (
        len(segments) > 1
        and segments[1].clause == 0
        and opening is not None
        and _opens_phrase(opening.group(0).lower())
    ):
        # "In the background, there are cars": the sentence's core is the phrase and what follows it
        segments[:2] = [Segment(0, 0, segments[1].end, 0, True, "")]
    return Layout(text, end, tuple(segments))


def _opens_phrase(word: str) -> bool:
    """A sentence that opens with a preposition, an adverb or a participle: its first piece has no subject."""
    return word in _OPENERS or (len(word) > 4 and word.endswith(("ing", "ed", "ly")))


_OPENERS = frozenset(w for w in _WEAK_WORDS if " " not in w) | frozenset(
    "in on at of for to by from near along across behind beyond above below beside amid among around "
    "overall additionally also furthermore moreover however meanwhile besides then".split()
)


@dataclass
class Cut:
    text: str | None  # the kept sentence, or None when the whole sentence goes
    removed: list[tuple[int, int]] = field(default_factory=list)  # character ranges removed
    cause: dict[int, int] = field(default_factory=dict)  # a claim that went with another -> that other claim
    removed_by: dict[int, str] = field(default_factory=dict)  # a dropped claim -> the text its drop removed


def cut(lay: Layout, spans: list[tuple[tuple[int, int], ...]], dropped: set[int], is_modifier=None) -> Cut:
    """Remove the pieces that carry the ``dropped`` claims (positions into ``spans``).

    ``is_modifier(word)`` says whether a word may stand inside a noun phrase before
    its noun (an attribute); determiners and numbers always may.
    """
    if not dropped:
        return Cut(lay.text)
    text = lay.text
    modifier = is_modifier or (lambda w: False)
    ranges: list[tuple[int, int, int]] = []  # (start, end, claim)
    whole: int | None = None
    for pos in sorted(dropped):
        if not spans[pos]:  # a claim that does not say where it stands: only the whole sentence is safe to drop
            whole = pos
            break
        for start, end in spans[pos]:
            r = _piece(lay, start, end, modifier)
            if r is None:
                whole = pos if whole is None else whole
                break
            ranges.append((*r, pos))
        if whole is not None:
            break
    if whole is None:
        ranges = _settle(lay, ranges)
        if ranges is None:
            whole = min(dropped)
    if whole is not None:
        gone = Cut(None, [(0, len(text))], {}, {whole: text})
        gone.cause = {i: whole for i in range(len(spans)) if i not in dropped}
        return gone
    merged = _merge([(s, e) for s, e, _ in ranges])
    out = Cut(_assemble(text, lay.end, merged), merged)
    for pos in dropped:
        out.removed_by[pos] = " ".join(
            text[s:e].strip(" ,;") for s, e in _merge([(s, e) for s, e, p in ranges if p == pos])
        ).strip()
    for i, sp in enumerate(spans):
        if i in dropped or not sp:
            continue
        if all(any(s <= a and b <= e for s, e in merged) for a, b in sp):
            owner = next((p for s, e, p in ranges if s <= sp[0][0] < e), min(dropped))
            out.cause[i] = owner
    return out


def _piece(lay: Layout, start: int, end: int, modifier) -> tuple[int, int] | None:
    """The range removed to take out the claim at [start, end); None: the whole sentence."""
    i = lay.segment_at(start)
    seg = lay.segments[i]
    conj = _last_conjunct(lay.text, seg, start, end, modifier)
    if conj is not None:
        return conj
    if not seg.first and _bare_item(lay.text, seg, start, end, modifier):
        return seg.start, seg.end  # ", roads": a list item alone
    inner = _inner_phrase(lay.text, seg, end)
    if inner is not None:
        return inner
    if seg.first:
        if seg.clause == 0:
            return None
        return lay.clause_range(seg.clause)
    return seg.start, lay.clause_range(seg.clause)[1]


def _settle(lay: Layout, ranges: list[tuple[int, int, int]]) -> list[tuple[int, int, int]] | None:
    """Extend each cut that would leave a dangling word back over the segment before it; None: the sentence goes."""
    text = lay.text
    while True:
        merged = _merge([(s, e) for s, e, _ in ranges])
        for s, e in merged:
            kept = [w for w in _WORD.finditer(text, 0, s) if not any(a <= w.start() < b for a, b in merged)]
            if not kept:
                return None
            if kept[-1].group(0).lower() not in DANGLING:
                continue
            seg = lay.segments[lay.segment_at(kept[-1].start())]
            if seg.first and seg.clause == 0:
                return None
            owner = next(p for a, b, p in ranges if s <= a < e)
            ranges = ranges + [(lay.clause_range(seg.clause)[0] if seg.first else seg.start, s, owner)]
            break
        else:
            return ranges


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(ranges):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _assemble(text: str, end: int, removed: list[tuple[int, int]]) -> str:
    body, last = [], 0
    for s, e in removed:
        body.append(text[last : min(s, end)])
        last = max(last, e)
    body.append(text[last:end])
    kept = "".join(body)
    kept = re.sub(r"\s+([,;:])", r"\1", kept)
    kept = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", kept)
    kept = re.sub(r"\s{2,}", " ", kept).rstrip(" ,;:")
    tail = text[end:]
    return kept + (tail if tail.strip() else ".")


def _np_start(text: str, floor: int, start: int, modifier) -> int:
    """Where the noun phrase ending in the noun at ``start`` begins (its determiners, numbers, attributes)."""
    words = list(_WORD.finditer(text, floor, start))
    begin = start
    for w in reversed(words):
        if text[w.end() : begin].strip(" "):  # punctuation between: the phrase ends there
            break
        low = w.group(0).lower()
        if low in DETERMINERS or low.isdigit() or modifier(low) or re.fullmatch(r"\d+(?:-\w+)?", low):
            begin = w.start()
            continue
        break
    return begin


def _last_conjunct(text: str, seg: Segment, start: int, end: int, modifier) -> tuple[int, int] | None:
    """``and vehicles`` at the end of a segment, after another noun phrase: removable alone."""
    if _WORD.search(text, end, seg.end):
        return None
    np = _np_start(text, seg.body, start, modifier)
    m = re.search(r"(\s*,)?\s+(?:and|or|nor|as well as)\s+$|\s*,\s*$", text[seg.body : np], re.I)
    if m is None:
        return None
    cut_at = seg.body + m.start()
    before = text[seg.body : cut_at]
    if not _WORD.search(before) or re.search(r"\b(?:between|both|neither|either|from)\b", before, re.I):
        return None
    last = _WORD.findall(before)[-1].lower()
    if last in DANGLING:
        return None
    return cut_at, end


_VERB_AFTER = re.compile(r"\s+(?:is|are|was|were|has|have|stands?|lies|lie|sits?)\b", re.I)


def _inner_phrase(text: str, seg: Segment, end: int) -> tuple[int, int] | None:
    """``A villa with orange roofs is …``: a with-phrase inside the subject, before its verb, goes alone."""
    if seg.first:
        return None
    first = _WORD.search(text, seg.body, seg.end)
    if first is None or first.group(0).lower() not in ("with", "without"):
        return None
    verb = _VERB_AFTER.search(text, end, seg.end)
    return (seg.start, verb.start()) if verb is not None else None


def _bare_item(text: str, seg: Segment, start: int, end: int, modifier) -> bool:
    """A segment that is only a noun phrase (``, roads``, ``, and some trees``): a list item."""
    if seg.marker not in (",", ", and", ", or", "and", "or"):
        return False
    first = _WORD.search(text, seg.body, seg.end)
    if first is None or _WORD.search(text, end, seg.end):
        return False
    return _np_start(text, seg.body, start, modifier) <= first.start()


__all__ = ["Layout", "Segment", "Cut", "layout", "cut", "DANGLING", "DETERMINERS"]
