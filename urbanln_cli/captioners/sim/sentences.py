"""Sentence bodies of the caption grammar: the surface forms of each fact, picked by a persona's style."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from urbanln_cli.captioners.sim.facts import Facts
from urbanln_cli.captioners.sim.phrases import (
    _APPROX,
    _BUILDING_NOUNS,
    _CROPS,
    _FLOURISH,
    _LAND_USE,
    _ROAD_NOUNS,
    _ROOFING,
    _ZONE_TEXT,
    _a,
    _and,
    _cap,
    _height_words,
    _num,
    _storey,
)


@dataclass
class _Line:
    """One sentence before it is written out: its body (no full stop), attached clauses and labels."""

    fact: str
    label: str
    body: str = ""
    polarity: str = "present"
    absent: tuple[str, ...] = ()
    value: Any = None
    clauses: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (text, assertion)
    pad: bool = True  # a florid persona may pad it

    def attach(
        self, text: str, fact: str, polarity: str = "present", absent: tuple[str, ...] = (), value: Any = None
    ) -> None:
        assertion: dict[str, Any] = {"fact": fact, "polarity": polarity, "label": "true", "absent": list(absent)}
        if value is not None:
            assertion["value"] = value
        self.clauses.append((text, assertion))

    def write(self, rng: random.Random, florid: bool) -> dict[str, Any]:
        text = self.body + "".join(t for t, _ in self.clauses)
        if florid and self.pad and not any(a["polarity"] == "absent" for _, a in self.clauses) and rng.random() < 0.6:
            text += rng.choice(_FLOURISH)
        absent = list(self.absent) + [c for _, a in self.clauses for c in a["absent"]]
        out: dict[str, Any] = {
            "text": _cap(text) + ".",
            "label": self.label,
            "fact": self.fact,
            "polarity": self.polarity,
            "absent": list(dict.fromkeys(absent)),
            "also": [a for _, a in self.clauses],
        }
        if self.value is not None:
            out["value"] = self.value
        return out


def _land_use_body(rng: random.Random, style: str, use: str, facts: Facts) -> str:
    phrase, form = rng.choice(_LAND_USE[use])
    if (
        form == "c"
        and use in ("residential", "commercial", "industrial")
        and facts.buildings > 20
        and rng.random() < 0.4
    ):
        phrase = "dense " + phrase
    x = _a(phrase) if form == "c" else phrase
    if style == "vague":
        forms = [f"There {'are' if form == 'p' else 'is'} {x}"]
        if form == "c":
            forms += [f"Here is {x}", f"It is {x}"]
        elif form == "m" and use in ("farmland", "open"):
            forms.append(f"There is a piece of {x}")
        return rng.choice(forms)
    forms = [
        f"The area is dominated by {x}",
        f"The image shows {x}",
        f"The image depicts {x}",
        f"Most of the tile is taken up by {x}",
        f"The tile is mostly {x}",
    ]
    if form == "c":
        forms.append(f"{x} fills most of the tile")
    if style == "florid":
        forms += [f"The image is a bird's eye view of {x}", f"The image is an aerial view of {x}"]
    return rng.choice(forms)


def _roof_colours(facts: Facts, word: str = "and") -> str:
    return _and(facts.roofs, word)


def _buildings_body(rng: random.Random, style: str, n: int, facts: Facts, roofs: bool) -> str:
    """The count and the height of the buildings (and their roof colours when ``roofs``)."""
    use = facts.building_use or "residential"
    if use == "residential" and facts.storeys > 4:
        use = "residential_high" if facts.storeys > 8 else "residential_tall"
    nouns = _BUILDING_NOUNS.get(use, _BUILDING_NOUNS["residential"])
    plural, singular = rng.choice(nouns)
    if use == "residential" and facts.storeys <= 3 and rng.random() < 0.2:
        plural, singular = (
            "townhouses" if facts.storeys >= 2 else "bungalows",
            "townhouse" if facts.storeys >= 2 else "bungalow",
        )
    h, s = _height_words(facts.storeys), round(facts.storeys)
    with_roofs = f" with {_roof_colours(facts)} roofs" if roofs else ""
    if style == "vague":
        if n == 1:
            return f"There is a {singular}{with_roofs}"
        return rng.choice(
            [
                f"There are some {plural}{with_roofs}",
                f"Some {plural}{with_roofs} can be seen",
                f"There are a number of {plural}{with_roofs}",
            ]
        )
    S = _num(rng, s, 0.4)
    if n == 1:
        return rng.choice(
            [
                f"A single {h} {singular}{with_roofs} with {S} storey{'s' if s != 1 else ''} stands here",
                f"There is one {_storey(s)} {singular}{with_roofs}",
            ]
        )
    N = _num(rng, n)
    approx = rng.choice(_APPROX)
    forms = [
        f"{approx} {N} {plural}{with_roofs} stand here, most of them {h} with around {S} storeys",
        f"The tile holds {approx} {N} {plural}{with_roofs}, mostly {h} ({S} storeys)",
        f"{approx} {N} {_storey(s)} {plural}{with_roofs} can be seen",
    ]
    if roofs:
        forms.append(
            f"There are {approx} {N} {_storey(s)} {plural}, most of which have {_roof_colours(facts, 'or')} roofs"
        )
    else:
        forms.append(f"There are {approx} {N} {h} {plural}, most of which have {S} storeys")
    return rng.choice(forms)


def _roads_body(rng: random.Random, style: str, facts: Facts) -> tuple[str, dict[str, Any]]:
    order = ["highway", "arterial", "local"]
    main = min(facts.roads, key=lambda c: order.index(c) if c in order else 9)
    lanes = facts.roads[main]
    value = {"class": main, "lanes": lanes}
    if style == "vague":
        return rng.choice(["There are some roads", "A road passes through", "Roads cross the area"]), value
    noun = rng.choice(_ROAD_NOUNS.get(main, (f"{main} road",)))
    L = _num(rng, lanes, 0.2)
    forms = [
        f"{_a(f'{L}-lane {noun}')} runs through the tile",
        f"The tile is crossed by {_a(f'{L}-lane {noun}')}",
        f"{_a(noun)} with {L} lane{'s' if lanes != 1 else ''} cuts across the area",
        f"There is {_a(f'{L}-lane {noun}')}, which crosses the tile",
    ]
    return rng.choice(forms), value


def _water_body(rng: random.Random, style: str, kind: str) -> str:
    if kind not in ("river", "lake", "canal", "pond", "reservoir", "stream"):
        kind = "body of water"
    if style == "vague":
        return rng.choice([f"There is {_a(kind)}", "There is some water"])
    forms = [f"{_a(kind)} is visible", f"There is {_a(kind)} in the tile", f"Part of the tile is covered by {_a(kind)}"]
    forms += {
        "river": ["A river flows through the area", "A watercourse runs through the tile"],
        "lake": ["A lake occupies part of the tile", "A stretch of still water, probably a lake, lies within the tile"],
    }.get(kind, [])
    if style == "florid":
        forms.append(f"The shimmering surface of {_a(kind)} catches the light")
    return rng.choice(forms)


def _detail_body(rng: random.Random, style: str, fact: str, facts: Facts, n: int | None = None) -> tuple[str, Any]:
    """A detail sentence (zone, heights, roads, parking, fields, roofs, materials, trees, sports fields, cars)."""
    if fact == "zone":
        z = _ZONE_TEXT[facts.zone]
        return rng.choice(
            [
                f"This part of the city is {z}",
                f"The tile lies in {z}",
                f"It appears to be part of {z}",
                f"The setting is {z}",
            ]
        ), facts.zone
    if fact == "storey_range":
        a, b = facts.storey_range
        return rng.choice(
            [
                f"Building heights range from {a} to {b} storeys",
                f"The buildings vary from {a} to {b} floors in height",
                f"Heights vary between {a} and {b} storeys",
                f"The lowest buildings have {a} storeys and the tallest {b}",
            ]
        ), [a, b]
    if fact == "road_classes":
        classes = sorted(facts.roads)
        forms = [
            f"The street network mixes {_and(classes)} roads",
            f"There is a mix of {_and(classes)} roads",
            f"The roads include {_and(classes)} streets",
        ]
        if len(classes) == 2:
            forms.append(f"Both {classes[0]} and {classes[1]} roads can be seen")
        return rng.choice(forms), classes
    if fact == "parking":
        p = facts.parking
        if p == 1:
            return rng.choice(
                ["There is a parking lot", "A car park is visible", "A paved parking area can be seen"]
            ), p
        P = _num(rng, p, 0.5)
        return rng.choice([f"There are {P} parking lots", f"The tile has {P} car parks"]), p
    if fact == "fields":
        crops = [_CROPS.get(c, c) for c in facts.crops]
        return rng.choice(
            [
                f"Fields of {_and(crops)} are visible",
                f"There are fields of {_and(crops)}",
                f"The farmland is a patchwork of {_and(crops)}",
                f"The fields show {_and(crops)}",
            ]
        ), list(facts.crops)
    if fact == "roofs":
        c = facts.roofs
        forms = [
            f"Roofs are mostly {_and(c)}",
            f"The roofs are predominantly {_and(c)}",
            f"Most of the buildings have {_and(c, 'or')} roofs",
        ]
        if len(c) == 2:
            forms.append(f"Most rooftops are {c[0]}, with some {c[1]} ones")
        return rng.choice(forms), list(c)
    if fact == "materials":
        m = [_ROOFING.get(x, x) for x in facts.materials]
        return rng.choice(
            [
                f"Roofing looks like {_and(facts.materials)}",
                f"The roofs appear to be made of {_and(m)}",
                f"Roof materials include {_and(m)}",
                f"Most roofs are covered in {_and(m, 'or')}",
            ]
        ), list(facts.materials)
    if fact == "tree_count":
        if n == 1:
            return rng.choice(["There is a single tree", "One tree can be seen"]), n
        N = _num(rng, n)
        return rng.choice(
            [
                f"Roughly {N} trees are scattered around",
                f"There are about {N} trees",
                f"Around {N} trees dot the tile",
                f"The tile has some {N} trees",
            ]
        ), n
    if fact == "sports_fields":
        return rng.choice(["A sports field is visible", "There is a playing field", "A sports pitch can be seen"]), None
    if fact == "cars":
        if facts.cars == 1:
            return rng.choice(["A single car can be seen on the street", "There is one car on the road"]), 1
        N = _num(rng, facts.cars)
        return rng.choice(
            [
                f"Around {N} cars are parked or moving on the streets",
                f"There are about {N} cars on the roads",
                f"Roughly {N} cars can be seen",
                f"About {N} automobiles are visible on the streets",
            ]
        ), facts.cars
    raise ValueError(fact)
