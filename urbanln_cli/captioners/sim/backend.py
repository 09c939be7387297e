"""The ``sim:<persona>`` backend: captions from a scene, with no server and no GPU, and finding a tiles' scene.

It answers the same requests an Ollama model gets, through the same runner:

- a caption (no ``format``) of a whole tile or of one quarter of it (``fuse
  --refine``: the request's ``TileInfo`` names the quarter);
- a structured request, recognised by its JSON schema's required field:
  ``answer`` is a yes/no check (``fuse --check vlm``; the claim is the phrase in
  double quotes), ``caption`` a
  rewrite (``fuse --refine``; what it works from is read back from the prompt
  with ``refine.parse_rewrite_prompt``).

A request it cannot place (no tile where one is needed, an unknown schema) is
a usage error: the sim never guesses.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from urbanln_cli.captioners import GenerationOptions, ModelInfo, Reply, TileInfo
from urbanln_cli.captioners.refine import parse_rewrite_prompt
from urbanln_cli.captioners.sim.facts import Scene, tile_facts
from urbanln_cli.captioners.sim.grammar import write_caption
from urbanln_cli.captioners.sim.personas import PERSONAS
from urbanln_cli.captioners.sim.quadrant import write_quadrant_caption
from urbanln_cli.captioners.sim.rewrite import write_rewrite
from urbanln_cli.captioners.sim.truth import answer, phrase_true
from urbanln_cli.config import suggest
from urbanln_cli.errors import InputError, UsageProblem
from urbanln_cli.imagery import QUADRANTS, quadrant_bounds

SIM_VERSION = 3  # 3: quadrant captions, yes/no checks and rewrites (fuse --refine, --check vlm); 2: varied syntax
_QUESTION = re.compile(r'Is there "(.+?)" in this image\?', re.S)  # image_check.vlm.question's claim


def request_kind(format: dict | None) -> str:
    """'caption', 'check' (a yes/no answer) or 'rewrite' (a caption in JSON), from the request's JSON schema."""
    if format is None:
        return "caption"
    required = format.get("required") if isinstance(format, dict) else None
    if required == ["answer"]:
        return "check"
    if required == ["caption"]:
        return "rewrite"
    raise UsageProblem(
        f"the simulated panel cannot answer a request with the schema {format}",
        hint="sim: models answer captions, yes/no checks (fuse --check vlm) and rewrites (fuse --refine)",
    )


def _seed(*parts) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little"))


# ---------------------------------------------------------------- backend


class SimBackend:
    """The Backend interface over a scene: no server, no GPU, known truth."""

    def __init__(self, scene: Path | str | Scene):
        self.scene = scene if isinstance(scene, Scene) else Scene(scene)
        self.hosts = ["sim"]
        self._lexicon = None
        self._facts: dict[TileInfo, object] = {}

    async def aclose(self) -> None:
        return None

    async def preflight(self, models: Sequence[str]) -> dict[str, ModelInfo]:
        infos = {}
        for model in models:
            persona = model.removeprefix("sim:")
            if not model.startswith("sim:") or persona not in PERSONAS:
                raise UsageProblem(
                    f"unknown simulated model '{model}'{suggest(persona, PERSONAS)}",
                    hint=f"the panel has {', '.join('sim:' + p for p in PERSONAS)}",
                )
            spec = json.dumps(
                {"persona": asdict(PERSONAS[persona]), "version": SIM_VERSION, "scene": self.scene.sha256},
                sort_keys=True,
            )
            infos[model] = ModelInfo(
                model, "sha256:" + hashlib.sha256(spec.encode()).hexdigest(), ("vision",), ("sim",)
            )
        return infos

    def check_tiles(self, tiles: Sequence[TileInfo]) -> None:
        for tile in tiles:
            if not self.scene.contains(tile):
                raise InputError(
                    f"tile {tile.tile_id} is not part of the synthetic city in {self.scene.path}",
                    hint="sim: models describe only tiles of `urbanln synth city` imagery; for real imagery use "
                    "Ollama models, e.g. --models llava,qwen-vl",
                )

    async def caption(
        self,
        host: str,
        model: str,
        image: bytes,
        prompt: str,
        options: GenerationOptions,
        tile: TileInfo,
        format: dict | None = None,
    ) -> Reply:
        persona = PERSONAS[model.removeprefix("sim:")]
        kind = request_kind(format)
        where = tile
        if kind == "rewrite":
            parts = parse_rewrite_prompt(prompt)
            if parts is None:
                raise UsageProblem("the simulated panel got a rewrite request whose prompt it cannot read")
            _, local, facts = parts
            rng = _seed(model, "rewrite", prompt, options.seed)
            text, info = write_rewrite(persona, local, facts, rng, self.lexicon())
            return Reply(json.dumps({"caption": text}), None, len(text.split()), {"rewrite": info})
        if where is None:
            raise UsageProblem(
                "the simulated panel was not told which tile this request is about",
                hint="sim: models answer only requests that carry the tile (urbanln caption, fuse)",
            )
        if kind == "check":
            asked = _QUESTION.search(prompt)
            if asked is None:
                raise UsageProblem("the simulated panel got a yes/no request with no claim in double quotes")
            truth = phrase_true(asked.group(1), self.facts(where), self.lexicon())
            reply, wrong = answer(persona, truth, _seed(model, "check", where.tile_id, asked.group(1), options.seed))
            return Reply(json.dumps({"answer": reply}), None, 1, {"truth": truth, "wrong": wrong})
        if where.quadrant is not None:
            k = where.quadrant
            part = TileInfo(f"{where.tile_id}#q{k}", where.crs, quadrant_bounds(where.bounds, k), where.gsd)
            rng = _seed(model, part.tile_id, options.seed)
            text, labels = write_quadrant_caption(persona, tile_facts(self.scene, part), rng, QUADRANTS[k])
            return Reply(text, None, len(text.split()), {"quadrant_labels": labels})
        seed = int.from_bytes(hashlib.sha256(f"{model}|{where.tile_id}|{options.seed}".encode()).digest()[:8], "little")
        text, labels = write_caption(persona, tile_facts(self.scene, where), random.Random(seed))
        return Reply(text, None, len(text.split()), {"sentence_labels": labels})

    def facts(self, tile: TileInfo):
        """The tile's facts, kept for the last tiles asked about (a tile's checks come one after another)."""
        if tile not in self._facts:
            if len(self._facts) >= 256:
                self._facts.pop(next(iter(self._facts)))
            self._facts[tile] = tile_facts(self.scene, tile)
        return self._facts[tile]

    def lexicon(self):
        if self._lexicon is None:
            from urbanln_cli.text.lexicon import load_lexicon

            self._lexicon = load_lexicon()
        return self._lexicon


def scene_for_tiles(tiles_path: Path) -> Path | None:
    """The scene.json beside the raster the tiles were cut from, if there is one."""
    import datasets

    ds = datasets.load_from_disk(str(tiles_path))
    if not ds.num_rows or "source" not in ds.column_names:
        return None
    source = ds.data.column("source")[0].as_py()
    if not isinstance(source, str) or not source:
        return None
    candidate = Path(source).parent / "scene.json"
    return candidate if candidate.is_file() else None
