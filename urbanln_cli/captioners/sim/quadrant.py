"""Quadrant captions (``fuse --refine``): one or two short sentences about a quarter of a tile, from its objects.

The facts are those of the quadrant's own bounds (``tile_facts`` of the
quadrant), so a road in the top-left quarter is named there and nowhere else.
The persona's error profile applies as in a whole caption: a wrong land use, a
wrong building count, omitted objects, a hallucinated object or one too small
to see. A vague persona says less and counts nothing.
"""

from __future__ import annotations

import random
from typing import Any

from urbanln_cli.captioners.sim.facts import Facts
from urbanln_cli.captioners.sim.personas import Persona
from urbanln_cli.captioners.sim.phrases import (
    _APPROX,
    _BUILDING_NOUNS,
    _LAND_USE,
    _ROAD_NOUNS,
    _SMALL_OBJECTS,
    _USES,
    _a,
    _and,
    _cap,
    _height_words,
    _num,
    _wrong_count,
)

# what a quadrant caption says in place of a hallucinated object of _ABSENT_OBJECTS
_HALLUCINATED_NP = {
    "water": "a small pond",
    "rail": "railway tracks",
    "park": "a park",
    "highway": "a highway",
    "stadium": "a stadium",
}


def _land_phrase(rng: random.Random, use: str) -> str:
    phrase, form = rng.choice(_LAND_USE.get(use, _LAND_USE["open"]))
    return _a(phrase) if form == "c" else phrase


def _buildings_np(rng: random.Random, n: int, facts: Facts, vague: bool) -> str:
    use = facts.building_use or "residential"
    plural, singular = rng.choice(_BUILDING_NOUNS.get(use, _BUILDING_NOUNS["residential"]))
    if n == 1:
        return f"a {_height_words(facts.storeys)} {singular}"
    if vague:
        return f"some {plural}"
    return f"{rng.choice(_APPROX)} {_num(rng, n)} {_height_words(facts.storeys)} {plural}"


def _road_np(rng: random.Random, facts: Facts, vague: bool) -> str:
    order = ["highway", "arterial", "local"]
    main = min(facts.roads, key=lambda c: order.index(c) if c in order else 9)
    noun = rng.choice(_ROAD_NOUNS.get(main, (f"{main} road",)))
    return "a road" if vague else _a(f"{_num(rng, facts.roads[main], 0.2)}-lane {noun}")


def write_quadrant_caption(
    persona: Persona, facts: Facts, rng: random.Random, where: str
) -> tuple[str, dict[str, Any]]:
    """The caption and what it got wrong (``errors``: labels as in whole captions) and left out (``omitted``)."""
    vague = persona.style == "vague"
    errors: list[str] = []
    omitted: list[str] = []
    use = facts.land_use
    if rng.random() < persona.wrong_land_use:
        use = rng.choice([u for u in _USES if u != facts.land_use])
        errors.append("wrong_land_use")
    nps: list[str] = []  # the objects, as noun phrases
    if facts.buildings:
        n = facts.buildings
        if not vague and rng.random() < persona.wrong_count:
            n = _wrong_count(rng, n)
            errors.append("wrong_count")
        if rng.random() < persona.omission and "wrong_count" not in errors:
            omitted.append("building_count")
        else:
            nps.append(_buildings_np(rng, n, facts, vague))
    objects = []
    if facts.roads:
        objects.append(("roads", _road_np(rng, facts, vague)))
    if facts.water:
        kind = facts.water if facts.water in ("river", "lake", "canal", "pond", "reservoir") else "body of water"
        objects.append(("water", _a(kind)))
    if facts.parks:
        objects.append(("parks", "a park"))
    if facts.rail:
        objects.append(("rail", "railway tracks"))
    if facts.trees and not vague:
        objects.append(("trees", f"{rng.choice(_APPROX)} {_num(rng, facts.trees)} trees"))
    for fact, np in objects:
        if rng.random() < persona.omission:
            omitted.append(fact)
        else:
            nps.append(np)
    if rng.random() < persona.hallucinated_object / 2:  # a quarter is a smaller canvas to invent things on
        present = {"water": facts.water is not None, "rail": facts.rail, "park": facts.parks > 0}
        candidates = [k for k in ("water", "rail", "park") if not present[k]]
        if candidates:
            nps.append(_HALLUCINATED_NP[rng.choice(candidates)])
            errors.append("hallucinated_object")
    opener = rng.choice(
        ["This quarter shows", "The quarter is mostly", f"The {where} quarter shows", "This part of the tile is"]
    )
    sentences = [f"{opener} {_land_phrase(rng, use)}"]
    if nps:
        head, rest = nps[:2], nps[2:]
        if vague or not rest or rng.random() < 0.5:
            sentences[0] += f", with {_and(head)}"
            tail = rest
        else:
            tail = nps
        if tail:
            verb = "are" if len(tail) > 1 or tail[0].endswith("s") else "is"
            sentences.append(f"{_cap(_and(tail))} {verb} visible")
    text = " ".join(s + "." for s in sentences[:2])
    if rng.random() < persona.hallucinated_small_object / 2:
        text += " " + rng.choice(_SMALL_OBJECTS)
        errors.append("hallucinated_small_object")
    return text, {"quadrant": where, "errors": errors, "omitted": omitted}
