"""The simulated VLM panel: captions written from a synthetic city's scene, with known errors.

``sim:<persona>`` describes a tile from the scene objects inside its bounds. Each
persona has its own length, style and error profile (omissions, wrong counts,
wrong land use, hallucinated objects, hallucinated objects too small to see,
false absences, boilerplate). Only tiles of a synthetic city (``urbanln synth
city``) can be described; real imagery needs Ollama models.

The text comes from a small seeded grammar that writes the way real captions
do (LLaMA-Adapter V2 on Beijing tiles, the human UCM-Captions): overview and
land use first, then objects, then details; several surface forms per fact
("About 40 houses stand here, most of them low-rise", "There are roughly 40
two-storey homes with red and beige roofs", "The tile holds around 40
buildings, most of which have 2 storeys"); attribute phrases and relative
clauses; absence statements ("No vehicles are visible on the roads", "...,
without any water bodies"); and some words outside urbanln's lexicon
(thoroughfare, townhouses, watercourse, automobiles, teal, ...). Absence
statements are more frequent than in real captions (about 1 sentence in 100
there) so that parsers meet them often. The same persona, tile and seed always
give the same caption.

The panel also answers ``fuse``'s VLM steps from the scene (``backend``): quadrant
captions (``quadrant``), yes/no checks of claims at each persona's error rates
(``truth``) and structured rewrites that keep only checked claims (``rewrite``).

Every sentence carries its truth label, so ``fuse`` can be scored against the
truth. ``sentence_labels`` is ``{"sentences": [...], "omitted": [facts]}``, one
entry per sentence of ``split_sentences(caption)``:

- ``text``: the sentence, exactly as in the caption;
- ``fact``: what its main assertion is about (``land_use``, ``building_count``,
  ``roads``, ``water``, ``cars``, ...; ``none`` for boilerplate and
  hallucinations);
- ``label``: ``true``, or the error the sentence makes: ``wrong_land_use``,
  ``wrong_count``, ``hallucinated_object``, ``hallucinated_small_object``,
  ``false_absence`` (says something the tile has is not there), ``boilerplate``;
- ``polarity``: ``present`` (says something is there) or ``absent`` ("there are
  no cars"; fact then names the thing said to be missing);
- ``absent``: the lexicon concepts the sentence says are not there, from its main
  assertion and any attached clause (``["car"]`` for "..., with no vehicles
  visible on it"); ``[]`` when it denies nothing;
- ``also``: assertions of attached clauses, each ``{fact, polarity, label,
  absent[, value]}`` ("..., most of which have red roofs", "..., without any
  water bodies"); ``[]`` for most sentences. Clauses are attached only to true
  sentences and are always true themselves, so ``label`` is ``true`` exactly
  when everything the sentence says is true;
- ``value`` (facts with one): what it states, e.g. the land use, the count, or
  ``{"class": "arterial", "lanes": 4}``.

``omitted`` lists the true facts the persona left out. Schema v1 had only
``text``, ``label`` and ``fact``; the added keys keep those meanings.
"""

from __future__ import annotations

from urbanln_cli.captioners.sim.backend import SIM_VERSION, SimBackend, scene_for_tiles
from urbanln_cli.captioners.sim.facts import (
    _KINDS,
    CARS_VISIBLE_BELOW_M,
    CELL_M,
    Facts,
    Scene,
    _bbox,
    _cells,
    _inside,
    _intersects,
    _overlap,
    _point_in,
    _zone_at,
    tile_facts,
)
from urbanln_cli.captioners.sim.grammar import (
    _absence_sentence,
    _has,
    _lacks,
    _noticed_absences,
    _present,
    write_caption,
)
from urbanln_cli.captioners.sim.personas import PERSONAS, Persona
from urbanln_cli.captioners.sim.phrases import (
    _ABSENCE,
    _ABSENT_OBJECTS,
    _APPROX,
    _BOILERPLATE,
    _BUILDING_NOUNS,
    _CLOSING,
    _CROPS,
    _FLOURISH,
    _HALLUCINATED_ABSENCE,
    _LAND_USE,
    _NUMBER_WORDS,
    _PRESENCE_FACTS,
    _ROAD_NOUNS,
    _ROOFING,
    _SALIENCE,
    _SMALL_CARS,
    _SMALL_OBJECTS,
    _USES,
    _ZONE_TEXT,
    _a,
    _and,
    _cap,
    _height_words,
    _num,
    _storey,
    _wrong_count,
)
from urbanln_cli.captioners.sim.sentences import (
    _buildings_body,
    _detail_body,
    _land_use_body,
    _Line,
    _roads_body,
    _roof_colours,
    _water_body,
)

__all__ = [
    "CARS_VISIBLE_BELOW_M",
    "CELL_M",
    "Facts",
    "PERSONAS",
    "Persona",
    "SIM_VERSION",
    "Scene",
    "SimBackend",
    "_ABSENCE",
    "_ABSENT_OBJECTS",
    "_APPROX",
    "_BOILERPLATE",
    "_BUILDING_NOUNS",
    "_CLOSING",
    "_CROPS",
    "_FLOURISH",
    "_HALLUCINATED_ABSENCE",
    "_KINDS",
    "_LAND_USE",
    "_Line",
    "_NUMBER_WORDS",
    "_PRESENCE_FACTS",
    "_ROAD_NOUNS",
    "_ROOFING",
    "_SALIENCE",
    "_SMALL_CARS",
    "_SMALL_OBJECTS",
    "_USES",
    "_ZONE_TEXT",
    "_a",
    "_absence_sentence",
    "_and",
    "_bbox",
    "_buildings_body",
    "_cap",
    "_cells",
    "_detail_body",
    "_has",
    "_height_words",
    "_inside",
    "_intersects",
    "_lacks",
    "_land_use_body",
    "_noticed_absences",
    "_num",
    "_overlap",
    "_point_in",
    "_present",
    "_roads_body",
    "_roof_colours",
    "_storey",
    "_water_body",
    "_wrong_count",
    "_zone_at",
    "scene_for_tiles",
    "tile_facts",
    "write_caption",
]
