"""Writing a whole caption: facts in order, the persona's errors and absence statements, each sentence labelled."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict
from typing import Any

from urbanln_cli.captioners.sim.facts import CARS_VISIBLE_BELOW_M, Facts
from urbanln_cli.captioners.sim.personas import Persona
from urbanln_cli.captioners.sim.phrases import (
    _ABSENCE,
    _ABSENT_OBJECTS,
    _BOILERPLATE,
    _CLOSING,
    _HALLUCINATED_ABSENCE,
    _PRESENCE_FACTS,
    _SALIENCE,
    _SMALL_CARS,
    _SMALL_OBJECTS,
    _USES,
    _ZONE_TEXT,
    _wrong_count,
)
from urbanln_cli.captioners.sim.sentences import (
    _buildings_body,
    _detail_body,
    _land_use_body,
    _Line,
    _roads_body,
    _water_body,
)


def _lacks(thing: str, facts: Facts) -> bool:
    """The tile truly has none of it, so saying so is true."""
    return {
        "water": facts.water is None,
        "rail": not facts.rail,
        "parks": facts.parks == 0,
        "highway": "highway" not in facts.roads,
        "sports_fields": facts.sports_fields == 0,
        "cars": facts.vehicles == 0,
        "trees": facts.trees == 0,
        "buildings": facts.buildings_touching == 0,
        "roads": not facts.roads,
        "fields": not facts.crops,
        "parking": facts.parking == 0,
    }[thing]


def _has(thing: str, facts: Facts) -> bool:
    """The tile visibly has it, so denying it is an error (cars only where the GSD shows them)."""
    return {
        "water": facts.water is not None,
        "rail": facts.rail,
        "parks": facts.parks > 0,
        "highway": "highway" in facts.roads,
        "sports_fields": facts.sports_fields > 0,
        "cars": facts.cars > 0 and facts.gsd <= CARS_VISIBLE_BELOW_M,
        "trees": facts.trees > 0,
        "buildings": facts.buildings > 0,
        "roads": bool(facts.roads),
        "fields": bool(facts.crops),
        "parking": facts.parking > 0,
    }[thing]


def _noticed_absences(facts: Facts) -> list[str]:
    """What the tile lacks, most noticeable first: one order per tile, shared by every persona (models tend to remark
    on the same missing things, so absences find support), drawn by salience from the facts themselves."""
    order = random.Random(hashlib.sha256(json.dumps(asdict(facts), sort_keys=True).encode()).digest())
    lacking = [k for k in _ABSENCE if _lacks(k, facts)]
    return sorted(lacking, key=lambda k: order.random() ** (1 / _SALIENCE[k]), reverse=True)


def _absence_sentence(rng: random.Random, thing: str, facts: Facts) -> str:
    forms = list(_ABSENCE[thing][1])
    if thing == "cars" and not facts.roads:
        forms.remove("No vehicles are visible on the roads")
    return rng.choice(forms)


def write_caption(persona: Persona, facts: Facts, rng: random.Random) -> tuple[str, dict[str, Any]]:
    """The caption and its labels: every sentence with what it asserts and 'true' or the error it makes."""
    style = persona.style
    florid, vague = style == "florid", style == "vague"
    omitted: list[str] = []

    def kept(fact: str) -> bool:  # the omission draw for a true fact
        if rng.random() < persona.omission:
            omitted.append(fact)
            return False
        return True

    # 1. what to say, with its errors (every random error and omission is drawn here)
    opening = rng.random() < persona.boilerplate
    use, use_label = facts.land_use, "true"
    if rng.random() < persona.wrong_land_use:
        use, use_label = rng.choice([u for u in _USES if u != facts.land_use]), "wrong_land_use"
    buildings = None
    if facts.buildings:
        n, label = facts.buildings, "true"
        if not vague and rng.random() < persona.wrong_count:  # a vague persona states no count to get wrong
            n, label = _wrong_count(rng, facts.buildings), "wrong_count"
        if label != "true" or kept("building_count"):
            buildings = (n, label)
    objects = [
        fact
        for fact, present in (
            ("roads", bool(facts.roads)),
            ("water", facts.water is not None),
            ("parks", facts.parks > 0),
            ("rail", facts.rail),
        )
        if present and kept(fact)
    ]
    details: list[tuple[str, str, int | None]] = []  # (fact, label, count)
    if facts.zone in _ZONE_TEXT:
        details.append(("zone", "true", None))
    if facts.buildings > 1 and facts.storey_range[1] > facts.storey_range[0]:
        details.append(("storey_range", "true", None))
    if len(facts.roads) > 1:
        details.append(("road_classes", "true", None))
    if facts.parking:
        details.append(("parking", "true", None))
    if facts.crops:
        details.append(("fields", "true", None))
    if facts.roofs:
        details.append(("roofs", "true", None))
    if facts.materials:
        details.append(("materials", "true", None))
    if facts.trees:
        n, label = facts.trees, "true"
        if rng.random() < persona.wrong_count:
            n, label = _wrong_count(rng, facts.trees), "wrong_count"
        details.append(("tree_count", label, n))
    if facts.sports_fields:
        details.append(("sports_fields", "true", None))
    if facts.cars and facts.gsd <= CARS_VISIBLE_BELOW_M:
        details.append(("cars", "true", facts.cars))
    details = [d for d in details[: persona.detail] if d[1] != "true" or kept(d[0])]
    hallucinated = None
    if rng.random() < persona.hallucinated_object:
        candidates = [k for k in _ABSENT_OBJECTS if not _present(k, facts)]
        hallucinated = rng.choice(candidates) if candidates else None
    lacking = [k for k in _noticed_absences(facts) if hallucinated is None or _HALLUCINATED_ABSENCE[hallucinated] != k]
    absences: list[str] = []
    for _ in range(2):
        if rng.random() < persona.absence and lacking:
            # most often the absence any captioner of this tile would remark on first, else any
            thing = (
                lacking[0] if rng.random() < 0.75 else rng.choices(lacking, weights=[_SALIENCE[k] for k in lacking])[0]
            )
            lacking.remove(thing)
            absences.append(thing)
    false_absence = None
    if rng.random() < persona.false_absence:
        stated = {"building_count"} if buildings else set()
        stated |= set(objects) | {d[0] for d in details} | {f"use:{use}"}
        deniable = [k for k in _ABSENCE if _has(k, facts)]
        unstated = [k for k in deniable if not _PRESENCE_FACTS[k] & stated]
        pool = unstated or deniable
        false_absence = rng.choice(pool) if pool else None
    small = rng.random() < persona.hallucinated_small_object
    closing = florid and rng.random() < persona.boilerplate

    # 2. how to say it: which facts share a sentence, in which words and order
    land = _Line("land_use", use_label, _land_use_body(rng, style, use, facts), value=use)
    if florid and facts.buildings > 20 and rng.random() < 0.3:
        land.body += ", densely packed"
    detail_facts = [d[0] for d in details]
    lines_overview: list[_Line] = []
    if "zone" in detail_facts:
        detail_facts.remove("zone")
        if use_label == "true" and not vague and rng.random() < 0.35:
            land.attach(
                rng.choice([", part of {}", ", in what appears to be {}", " in {}"]).format(_ZONE_TEXT[facts.zone]),
                "zone",
                value=facts.zone,
            )
        else:
            body, value = _detail_body(rng, style, "zone", facts)
            lines_overview.append(_Line("zone", "true", body, value=value))
    object_lines: list[_Line] = []
    if buildings:
        n, label = buildings
        roofs = label == "true" and not vague and "roofs" in detail_facts and rng.random() < 0.5
        line = _Line("building_count", label, _buildings_body(rng, style, n, facts, roofs), value=None if vague else n)
        if roofs:
            detail_facts.remove("roofs")
            line.clauses.append(
                (
                    "",
                    {"fact": "roofs", "polarity": "present", "label": "true", "absent": [], "value": list(facts.roofs)},
                )
            )
        object_lines.append(line)
    roads_line = None
    for fact in objects:
        if fact == "roads":
            body, value = _roads_body(rng, style, facts)
            roads_line = _Line("roads", "true", body, value=value)
            object_lines.append(roads_line)
        elif fact == "water":
            object_lines.append(_Line("water", "true", _water_body(rng, style, facts.water), value=facts.water))
        elif fact == "parks":
            object_lines.append(
                _Line(
                    "parks",
                    "true",
                    rng.choice(
                        ["There is a park", "There is some green space"]
                        if vague
                        else [
                            "Green space with lawns and trees covers part of the tile",
                            "There is a park with open lawns",
                            "A park occupies part of the tile",
                            "Part of the area is given over to a landscaped park",
                        ]
                    ),
                )
            )
        elif fact == "rail":
            object_lines.append(
                _Line(
                    "rail",
                    "true",
                    rng.choice(
                        ["There is a railway"]
                        if vague
                        else [
                            "Railway tracks cross the area",
                            "A railway line runs through the tile",
                            "Train tracks pass through the area",
                            "A railway corridor cuts across the tile",
                        ]
                    ),
                )
            )
    if len(object_lines) > 2:  # buildings and roads first, the rest in any order
        head, rest = object_lines[:2], object_lines[2:]
        rng.shuffle(rest)
        object_lines = head + rest
    if hallucinated:
        object_lines.insert(
            rng.randint(0, len(object_lines)),
            _Line("none", "hallucinated_object", rng.choice(_ABSENT_OBJECTS[hallucinated]), pad=False),
        )
    detail_lines = []
    by_fact = {d[0]: d for d in details}
    for fact in detail_facts:
        _, label, count = by_fact[fact]
        body, value = _detail_body(rng, style, fact, facts, count)
        detail_lines.append(_Line(fact, label, body, value=value))
    # absences: a clause on a true host sentence, or a sentence among the details
    hosts = {"water": land, "buildings": land, "roads": land, "trees": land, "cars": roads_line}
    for thing in absences:
        concepts, _, clauses = _ABSENCE[thing]
        host = hosts.get(thing)
        if host is not None and clauses and host.label == "true" and not host.clauses and rng.random() < 0.5:
            host.attach(rng.choice(clauses), thing, "absent", concepts)
        else:
            detail_lines.insert(
                rng.randint(0, len(detail_lines)),
                _Line(thing, "true", _absence_sentence(rng, thing, facts), "absent", concepts, pad=False),
            )
    if false_absence:
        detail_lines.insert(
            rng.randint(0, len(detail_lines)),
            _Line(
                false_absence,
                "false_absence",
                _absence_sentence(rng, false_absence, facts),
                "absent",
                _ABSENCE[false_absence][0],
                pad=False,
            ),
        )
    lines = [land, *lines_overview, *object_lines, *detail_lines]
    sentences = (
        [
            {
                "text": rng.choice(_BOILERPLATE[:2] if not florid else _BOILERPLATE),
                "label": "boilerplate",
                "fact": "none",
                "polarity": "present",
                "absent": [],
                "also": [],
            }
        ]
        if opening
        else []
    )
    sentences += [line.write(rng, florid) for line in lines]
    if small:
        options = list(_SMALL_OBJECTS) + (list(_SMALL_CARS) if facts.gsd > CARS_VISIBLE_BELOW_M else [])
        sentences.append(
            {
                "text": rng.choice(options),
                "label": "hallucinated_small_object",
                "fact": "none",
                "polarity": "present",
                "absent": [],
                "also": [],
            }
        )
    if closing:
        sentences.append(
            {
                "text": rng.choice(_CLOSING),
                "label": "boilerplate",
                "fact": "none",
                "polarity": "present",
                "absent": [],
                "also": [],
            }
        )
    text = " ".join(s["text"] for s in sentences)
    return text, {"sentences": sentences, "omitted": omitted}


def _present(key: str, facts: Facts) -> bool:
    return {
        "water": facts.water is not None,
        "rail": facts.rail,
        "park": facts.parks > 0,
        "highway": "highway" in facts.roads,
        "stadium": facts.sports_fields > 0,
    }[key]
