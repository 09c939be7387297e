"""Yes/no checks (``fuse --check vlm``): is a claim about a tile true of its scene, and the persona's answer.

The question names the claim as a short phrase ("about 12 low-rise buildings
with 2 storeys", "4-lane road", "no cars"). The phrase is parsed with the
lexicon (``text.claims``) and each claim is judged against the tile's facts:

- land uses: the tile's land use or the commonest use of its buildings (parks,
  farmland, water and open land also by what the tile holds);
- objects: present in the tile (buildings, roads by class, water by kind,
  parks, rail, trees, parking, sports fields), cars only where the GSD shows
  them (as the prompt's visibility note says);
- counts agree within ``COUNT_TOLERANCE`` (a VLM judges counts roughly, but a
  count three times too high is wrong), lanes within one, storeys within the
  tile's range;
- absence claims ("no cars") are true when the tile has none of it;
- anything else (people, traffic lights, phrases with no lexicon concept) is not
  clearly visible: false.

The persona then answers wrongly at its rates: ``check_false_yes`` for a false
claim, ``check_false_no`` for a true one.
"""

from __future__ import annotations

import random

from urbanln_cli.captioners.sim.facts import CARS_VISIBLE_BELOW_M, Facts
from urbanln_cli.captioners.sim.personas import Persona
from urbanln_cli.text.claims import Claim, parse_claims
from urbanln_cli.text.lexicon import Lexicon
from urbanln_cli.text.match import counts_agree

COUNT_TOLERANCE = 0.35
_WATER = {"river": "river", "stream": "river", "lake": "lake", "pond": "lake", "reservoir": "lake", "canal": "canal"}
_BUILT_USES = ("residential", "commercial", "industrial")


def _count_of(concept: str, facts: Facts) -> int | None:
    if concept in ("building", "roof", *_BUILT_USES):
        return facts.buildings
    return {"tree": facts.trees, "car": facts.cars, "parking": facts.parking, "park": facts.parks}.get(concept)


def _present(concept: str, facts: Facts) -> bool:
    """Whether the tile visibly holds ``concept`` (for a land use: whether the tile is, or mostly holds, it)."""
    water = _WATER.get(facts.water or "", "water_body" if facts.water else None)
    return {
        "residential": "residential" in (facts.land_use, facts.building_use),
        "commercial": "commercial" in (facts.land_use, facts.building_use),
        "industrial": "industrial" in (facts.land_use, facts.building_use),
        "downtown": facts.zone == "centre",
        "village": facts.zone == "village" or facts.land_use == "village",
        "farmland": facts.land_use == "farmland" or bool(facts.crops),
        "park": facts.land_use == "park" or facts.parks > 0,
        "open_land": facts.land_use == "open",
        "water_body": facts.land_use == "water" or facts.water is not None,
        "river": water == "river",
        "lake": water == "lake",
        "canal": water == "canal",
        "building": facts.buildings_touching > 0,
        "roof": facts.buildings_touching > 0,
        "road": bool(facts.roads),
        "highway": "highway" in facts.roads,
        "railway": facts.rail,
        "train": False,  # trains are not part of the scene
        "tree": facts.trees > 0,
        "car": facts.cars > 0 and facts.gsd <= CARS_VISIBLE_BELOW_M,
        "parking": facts.parking > 0,
        "sports_field": facts.sports_fields > 0,
        "stadium": False,
    }.get(concept, False)


def claim_true(claim: Claim, facts: Facts) -> bool:
    """Whether one parsed claim is true of the tile."""
    if claim.concept is None:
        return False  # no lexicon concept: nothing the image clearly shows
    if claim.negated:
        if claim.concept == "car":  # "no cars" is borne out where none can be seen
            return not _present("car", facts)
        return not _present(claim.concept, facts) and not (claim.concept == "building" and facts.buildings_touching)
    if not _present(claim.concept, facts):
        return False
    truth = _count_of(claim.concept, facts)
    if claim.count is not None and truth is not None and not counts_agree(claim.count, truth, COUNT_TOLERANCE):
        return False
    q = dict(claim.quantities)
    if "lanes" in q:
        lanes = _bounds(q["lanes"])
        if not any(lanes[0] - 1 <= n <= lanes[1] + 1 for n in facts.roads.values()):
            return False
    if "storeys" in q and facts.buildings:
        lo, hi = _bounds(q["storeys"])
        a, b = facts.storey_range
        if not (lo <= b + 1 and a <= hi + 1):
            return False
    classes = {"arterial", "local", "highway"} & set(claim.attributes)
    if claim.concept == "road" and classes and not classes & set(facts.roads):
        return False
    colours = set(claim.attributes) & {"red", "grey", "gray", "white", "blue", "green", "brown", "beige", "black"}
    if claim.concept in ("roof", "building") and colours and facts.roofs:
        grey = {c.replace("gray", "grey") for c in colours}
        return bool(grey & {c.replace("gray", "grey") for c in facts.roofs})
    return True


def _bounds(value: str) -> tuple[int, int]:
    parts = [int(v) for v in value.split("-") if v.isdigit()] or [0]
    return parts[0], parts[-1]


def phrase_true(phrase: str, facts: Facts, lexicon: Lexicon) -> bool:
    """Whether everything the phrase claims is true of the tile (a phrase with no claim: false)."""
    claims = parse_claims(phrase, lexicon)
    return bool(claims) and all(claim_true(c, facts) for c in claims)


def answer(persona: Persona, truth: bool, rng: random.Random) -> tuple[str, bool]:
    """The persona's answer ('yes' or 'no') and whether it is wrong."""
    wrong = rng.random() < (persona.check_false_no if truth else persona.check_false_yes)
    return ("yes" if truth != wrong else "no"), wrong
