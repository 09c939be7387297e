"""``fuse --refine MODEL``: divide and conquer, then rewrite.

The refining VLM first captions the four quadrant crops of the tile briefly
(local detail a whole-tile caption skips). Then, for each model's filtered
caption, it writes one complete caption from that draft, the four local
captions and the claims that survived the checks, as structured output
(``{"caption": "..."}``), so the rewrite can be parsed. ``fuse`` checks the
rewrite again: claims that no surviving claim backs are dropped (``refine_new``),
so a rewrite can reword and reorder but not add unchecked content.

Each request carries its tile (``Ask.tile``); a crop's names its quarter, so the
simulated panel describes that quarter's part of the scene. ``parse_rewrite_prompt``
reads a rewrite prompt back into its draft, quadrant captions and facts (what a
model is given to work from).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from urbanln_cli.captioners import TileInfo, content_problem, gsd_phrase, json_field
from urbanln_cli.captioners.cached import Ask, CachedVlm
from urbanln_cli.imagery import QUADRANTS, quadrant_crops

REWRITE_SCHEMA = {"type": "object", "properties": {"caption": {"type": "string"}}, "required": ["caption"]}


def quadrant_prompt(where: str, gsd: float | None) -> str:
    return (
        f"This is the {where} quarter of a satellite image tile{gsd_phrase(gsd)}. In one or two short sentences, "
        "describe "
        "what is clearly visible: land use, buildings, roads, vegetation, water. Do not mention anything too small "
        "to see."
    )


def rewrite_prompt(draft: str, local: Sequence[str], facts: Sequence[str], gsd: float | None) -> str:
    lines = [
        f"You are improving the caption of a satellite image tile{gsd_phrase(gsd)}.",
        "",
        "Draft caption:",
        draft,
        "",
        "Short descriptions of its four quarters:",
    ]
    lines += [f"- {where}: {text}" for where, text in zip(QUADRANTS, local)]
    lines += ["", "Facts checked against other models and the image:"] + [f"- {f}" for f in facts]
    lines += [
        "",
        "Write one complete, fluent caption of the whole tile in 3 to 8 sentences. Say where things are. Use only the "
        "checked facts and what is clearly visible; leave out anything too small to see at this resolution. "
        'Reply in JSON: {"caption": "..."}.',
    ]
    return "\n".join(lines)


_DRAFT, _LOCAL, _FACTS = "Draft caption:", "Short descriptions of its four quarters:", "Facts checked against"


def parse_rewrite_prompt(prompt: str) -> tuple[str, list[str], list[str]] | None:
    """(draft, the four quadrant captions, facts) of a ``rewrite_prompt``; None for any other prompt."""
    lines = prompt.split("\n")
    try:
        d, q = lines.index(_DRAFT), lines.index(_LOCAL)
        f = next(i for i, line in enumerate(lines) if line.startswith(_FACTS))
    except (ValueError, StopIteration):
        return None
    draft = "\n".join(lines[d + 1 : q]).strip()
    local = []
    for where, line in zip(QUADRANTS, lines[q + 1 : f]):
        prefix = f"- {where}: "
        if not line.startswith(prefix):
            return None
        local.append(line[len(prefix) :])
    facts = []
    for line in lines[f + 1 :]:
        if not line.startswith("- "):
            break
        facts.append(line[2:])
    return (draft, local, facts) if len(local) == len(QUADRANTS) else None


def parse_rewrite(text: str) -> str | None:
    return json_field(text, "caption")


def rewrite_problem(text: str) -> str | None:
    caption = parse_rewrite(text)
    return "bad_json" if caption is None else content_problem(caption)


class Refiner:
    def __init__(self, vlm: CachedVlm, model: str, image_size: int, max_pixels: int | None = None):
        self.vlm, self.model, self.image_size, self.max_pixels = vlm, model, image_size, max_pixels

    def describe(self) -> dict:
        return {"model": self.model, "quadrant_prompt": quadrant_prompt("{quarter}", None), "format": REWRITE_SCHEMA}

    def local_captions(
        self,
        tile_ids: Sequence[str],
        image_of: Callable[[str], bytes],
        image_id_of: Callable[[str], str],
        gsd_of: Callable[[str], float | None],
        progress=None,
        tile_of: Callable[[str], TileInfo | None] = lambda _t: None,
    ) -> dict[str, list[str] | str]:
        """Four quadrant captions per tile, or the error of one that failed.

        ``image_of`` gives the whole tile; ``image_id_of`` must name what is sent (bytes and size).
        """
        crops: dict[str, list[bytes]] = {}

        def crop(tile_id: str, k: int) -> bytes:
            if tile_id not in crops:
                if len(crops) >= 16:  # tiles are asked in order: keep the crops of the last few, not all
                    crops.pop(next(iter(crops)))
                crops[tile_id] = quadrant_crops(image_of(tile_id), self.image_size, self.max_pixels)
            return crops[tile_id][k]

        def quarter(t: str, k: int) -> TileInfo | None:
            whole = tile_of(t)
            return whole.quarter(k) if whole is not None else None

        asks = [
            Ask(
                self.model,
                quadrant_prompt(where, gsd_of(t)),
                lambda t=t, k=k: crop(t, k),
                f"{image_id_of(t)}#q{k}",
                tile=quarter(t, k),
            )
            for t in tile_ids
            for k, where in enumerate(QUADRANTS)
        ]
        answers = self.vlm.run(asks, content_problem, progress)
        out: dict[str, list[str] | str] = {}
        for n, t in enumerate(tile_ids):
            mine = answers[4 * n : 4 * n + 4]
            failed = next((a.error for a in mine if a.error), None)
            out[t] = f"a quadrant caption failed: {failed}" if failed else [a.text for a in mine]
        return out

    def rewrite(
        self,
        jobs: Sequence[tuple[str, str, Sequence[str], Sequence[str]]],
        image_of: Callable[[str], bytes],
        image_id_of: Callable[[str], str],
        gsd_of: Callable[[str], float | None],
        progress=None,
        tile_of: Callable[[str], TileInfo | None] = lambda _t: None,
    ) -> list[tuple[str | None, str | None]]:
        """For each (tile_id, draft, local captions, facts): (rewritten caption, error)."""
        asks = [
            Ask(
                self.model,
                rewrite_prompt(draft, local, facts, gsd_of(t)),
                lambda t=t: image_of(t),
                image_id_of(t),
                REWRITE_SCHEMA,
                tile_of(t),
            )
            for t, draft, local, facts in jobs
        ]
        answers = self.vlm.run(asks, rewrite_problem, progress)
        return [(None, a.error) if a.error else (parse_rewrite(a.text), None) for a in answers]
