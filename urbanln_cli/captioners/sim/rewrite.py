"""Rewrites (``fuse --refine``): one caption from the checked facts and the quadrant captions, as a model writes it.

The sim reads what a model is given (``refine.parse_rewrite_prompt``): the
draft, the four quadrant captions and the checked facts. Like a real model it
states each concept once (the most specific fact about it; where facts disagree,
"river" against "no river", the quadrant captions settle it) and writes:

1. an overview: the land use (with the building count when a fact has one);
2. the facts the quadrant captions place, one sentence per place: what is
   everywhere first, then in reading order ("In the bottom-left and
   bottom-right quarters, there is a 4-lane road"); a count is the whole
   tile's, so it is never said of a part;
3. local detail: up to ``persona.local_detail`` sentences on something already
   stated, in a quarter's own attribute words ("The top-left quarter has
   low-rise houses");
4. the facts no quadrant places, in one sentence, then the checked absences in
   one ("There are no cars and no lake anywhere in the tile").

It keeps to the prompt's ``MAX_SENTENCES``; local detail gets what the facts
leave. Every sentence restates a checked fact, reworded. Like a real model, a
persona sometimes drops a fact (``omission`` / 2) and carries over a quadrant
claim that no fact backs (``rewrite_leak``); ``fuse`` drops those
(``refine_new``).
"""

from __future__ import annotations

import random
from typing import Any

from urbanln_cli.captioners.sim.personas import Persona
from urbanln_cli.captioners.sim.phrases import _a, _and, _cap
from urbanln_cli.imagery import QUADRANTS
from urbanln_cli.text.claims import Claim, parse_claims
from urbanln_cli.text.clean import split_sentences
from urbanln_cli.text.lexicon import Lexicon

MAX_SENTENCES = 8  # refine.rewrite_prompt asks for 3 to 8 sentences; a model mostly keeps to that
_MASS = {"farmland", "housing", "parkland", "green space", "open land", "cropland", "agricultural land", "open water"}


def _plural(claim: Claim) -> bool:
    if claim.count is not None:
        return claim.count != 1
    last = claim.term.split()[-1]
    return last.endswith("s") and not last.endswith(("ss", "us"))


def _np(claim: Claim, text: str | None = None) -> str:
    """The claim as a noun phrase with its article where it needs one."""
    text = text or claim.render()
    mass = claim.term in _MASS or claim.term.endswith(("land", "space", "water"))
    if claim.negated or claim.count is not None or _plural(claim) or mass:
        return text
    return _a(text)


def _be(claim: Claim) -> str:
    return "are" if _plural(claim) else "is"


def _same(a: Claim, b: Claim) -> bool:
    return a.concept is not None and a.concept == b.concept and a.negated == b.negated


def _rank(claim: Claim) -> tuple:
    """Which of several facts about one concept a rewrite states: a real noun with a count and numbers first."""
    return (claim.term not in ("lane", "lanes"), claim.count is not None, len(claim.quantities), len(claim.attributes))


def _place(quadrants: list[int]) -> str | None:
    """Where in the tile, as an adverbial ("in the top-left quarter"); None when everywhere or nowhere said."""
    if not quadrants or len(quadrants) == len(QUADRANTS):
        return None
    if len(quadrants) == len(QUADRANTS) - 1:
        (missing,) = set(range(len(QUADRANTS))) - set(quadrants)
        return f"everywhere but in the {QUADRANTS[missing]} quarter"
    names = [QUADRANTS[k] for k in quadrants]
    return f"in the {_and(names)} quarter{'s' if len(names) > 1 else ''}"


def _facts_by_concept(
    facts: list[str], local_claims: list[list[Claim]], lexicon: Lexicon
) -> dict[tuple[str, bool], list[tuple[str, Claim]]]:
    """The facts by concept and polarity; where facts disagree, the quadrant captions decide."""
    groups: dict[tuple[str, bool], list[tuple[str, Claim]]] = {}
    for phrase in facts:
        parsed = parse_claims(phrase, lexicon)
        if parsed and parsed[0].concept is not None and all(_same(parsed[0], c) for c in parsed[1:]):
            groups.setdefault((parsed[0].concept, parsed[0].negated), []).append((phrase, parsed[0]))
    seen_locally = {(c.concept, c.negated) for cs in local_claims for c in cs}
    for concept, negated in list(groups):
        if negated and (concept, False) in groups:
            del groups[(concept, (concept, False) in seen_locally)]
    return groups


def write_rewrite(
    persona: Persona, local: list[str], facts: list[str], rng: random.Random, lexicon: Lexicon
) -> tuple[str, dict[str, Any]]:
    """The rewritten caption and what it did (``places``: stated fact -> quadrants, ``omitted``, ``leaked``)."""
    local_claims = [[c for s in split_sentences(text) for c in parse_claims(s, lexicon)] for text in local]
    groups = _facts_by_concept(facts, local_claims, lexicon)
    chosen = [max(group, key=lambda pc: _rank(pc[1])) for group in groups.values()]  # the most specific of each
    places = {p: [k for k, cs in enumerate(local_claims) if any(_same(c, x) for x in cs)] for p, c in chosen}
    for p, c in chosen:  # a count is the whole tile's: said of the tile wherever the quarters mention the thing
        if c.count is not None and places[p]:
            places[p] = list(range(len(QUADRANTS)))
    omitted = [p for i, (p, _) in enumerate(chosen) if i and rng.random() < persona.omission / 2]
    kept = [(p, c) for p, c in chosen if p not in omitted]

    sentences: list[str] = []
    said: set[str] = set()
    land = next((pc for pc in kept if pc[1].kind == "land_use" and not pc[1].negated), None)
    if land is not None:  # 1. the overview
        p, c = land
        where = _place(places[p])
        if c.count is not None:  # "a residential area, with about 40 houses": the land use, then its count
            area = next((pc for pc in groups[(c.concept, False)] if pc[1].count is None), None)
            if area is not None:
                p, c = area
        np = _np(c, p) + (f", with {land[0]}" if land[0] != p else "")
        if where is None:
            cover = "cover" if _plural(c) else "covers"
            sentences.append(
                rng.choice([f"{_cap(np)} {cover} most of the tile", f"Most of the tile is taken up by {np}"])
            )
        else:
            sentences.append(f"Much of the tile is {np}, {where}")
        said |= {p, land[0]}
    located = sorted(  # 2. what the quadrant captions place: what is everywhere first, then in reading order
        (pc for pc in kept if pc[0] not in said and not pc[1].negated and places[pc[0]]),
        key=lambda pc: (_place(places[pc[0]]) is not None, places[pc[0]]),
    )
    by_place: dict[tuple[int, ...], list[tuple[str, Claim]]] = {}
    for p, c in located:  # one sentence per place
        by_place.setdefault(tuple(places[p]), []).append((p, c))
        said.add(p)
    for quadrants, items in by_place.items():
        np, where = _and([_np(c, p) for p, c in items]), _place(list(quadrants))
        be = "are" if len(items) > 1 or _plural(items[0][1]) else "is"
        if where is None:
            forms = [f"{_cap(np)} {be} seen across the tile", f"Throughout the tile there {be} {np}"]
        else:
            forms = [f"{_cap(where)}, there {be} {np}", f"{_cap(np)} {be} visible {where}"]
        sentences.append(rng.choice(forms))
    rest = [(p, c) for p, c in kept if p not in said and not c.negated]
    absent = [(p, c) for p, c in kept if c.negated]
    # the prompt asks for at most MAX_SENTENCES: local detail gets what the facts leave
    budget = min(persona.local_detail, MAX_SENTENCES - len(sentences) - bool(rest) - bool(absent))
    leaked: list[str] = []
    detail = 0
    stated = {c.concept for _, c in chosen}
    for k, where in enumerate(QUADRANTS):  # 3. local detail, and (a slip) what no checked fact backs
        for lc in local_claims[k]:
            if detail >= budget or not any(_same(c, lc) and k in places[p] for p, c in kept):
                continue
            words = [a for a in lc.attributes if a not in lc.term]
            if words and rng.random() < 0.8:  # the quarter's own words for something already stated
                plain = Claim(lc.concept, lc.kind, lc.term, lc.attributes)
                sentences.append(f"The {where} quarter has {_np(plain, ' '.join(words + [lc.term]))}")
                detail += 1
        for lc in local_claims[k]:
            if lc.concept is not None and lc.concept not in stated and rng.random() < persona.rewrite_leak:
                sentences.append(f"In the {where} quarter, there {_be(lc)} {_np(lc)}")
                leaked.append(lc.render())
    if rest:  # 4. what no quadrant caption places, then the absences
        np = _and([_np(c, p) for p, c in rest])
        sentences.append(
            rng.choice(
                [
                    f"The tile also has {np}",
                    f"There {'are' if len(rest) > 1 or _plural(rest[0][1]) else 'is'} also {np}",
                ]
            )
        )
    if absent:
        verb = "are" if _plural(absent[0][1]) else "is"
        sentences.append(f"There {verb} {_and([p for p, _ in absent])} anywhere in the tile")
    text = " ".join(_cap(s) + "." for s in sentences)
    return text, {"places": {p: places[p] for p, _ in kept}, "omitted": omitted, "leaked": leaked}
