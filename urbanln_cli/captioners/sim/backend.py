"""The ``sim:<persona>`` backend: captions from a scene, with no server and no GPU, and finding a tiles' scene."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from urbanln_cli.captioners import GenerationOptions, ModelInfo, Reply, TileInfo
from urbanln_cli.captioners.sim.facts import Scene, tile_facts
from urbanln_cli.captioners.sim.grammar import write_caption
from urbanln_cli.captioners.sim.personas import PERSONAS
from urbanln_cli.config import suggest
from urbanln_cli.errors import InputError, UsageProblem

SIM_VERSION = 2  # 2: varied syntax, absence statements, label schema with polarity


# ---------------------------------------------------------------- backend


class SimBackend:
    """The Backend interface over a scene: no server, no GPU, known truth."""

    def __init__(self, scene: Path | str):
        self.scene = Scene(scene)
        self.hosts = ["sim"]

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
        if format is not None:
            raise UsageProblem(
                "the simulated panel only writes captions; it cannot answer structured requests",
                hint="use an Ollama vision model for fuse --refine and --check vlm",
            )
        persona = PERSONAS[model.removeprefix("sim:")]
        seed = int.from_bytes(hashlib.sha256(f"{model}|{tile.tile_id}|{options.seed}".encode()).digest()[:8], "little")
        text, labels = write_caption(persona, tile_facts(self.scene, tile), random.Random(seed))
        return Reply(text, None, len(text.split()), {"sentence_labels": labels})


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
