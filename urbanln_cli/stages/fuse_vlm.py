"""The VLM steps of ``fuse`` over every tile at once: step 5 (image check) and step 6 (refine).

Which backend answers: Ollama for real models; the simulated panel for
``sim:<persona>`` models of a synthetic city (one scene, loaded once, checked
against the tiles up front). Every request carries its tile (``Ask.tile``), so
the sim answers from the scene through the same journaled requests
(``CachedVlm``) as an Ollama model, which ignores it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from urbanln_cli import artifacts
from urbanln_cli.captioners import GenerationOptions
from urbanln_cli.captioners.runner import RetryPolicy
from urbanln_cli.errors import UsageProblem
from urbanln_cli.fusion import ClaimRef, Rewrite, TileFusion
from urbanln_cli.image_check import ClaimQuery, Verdict
from urbanln_cli.stages.fuse_inputs import TileImages

if TYPE_CHECKING:
    from urbanln_cli.stages.fuse import FuseConfig

CLIP_CHUNK_TILES = 1024


def check_and_refine(
    states, tiles, config, models, vlm, report, tally, steps
) -> tuple[dict[str, dict[str, Rewrite]], dict[str, list[str]]]:
    """Steps 5 and 6 (each when switched on); records what they used in ``steps``."""
    rewrites: dict[str, dict[str, Rewrite]] = {}
    local: dict[str, list[str]] = {}
    if config.image_check != "none":
        steps["check"] = _image_check(states, tiles, config, models, vlm, report, tally)
    if config.refine:
        steps["refine"] = _refine(states, tiles, config, vlm, report, tally, rewrites, local)
    return rewrites, local


def _vlm_models(config: FuseConfig, models: list[str]) -> list[str]:
    """Every model a VLM step asks: the checkers (default the captions' models) and the refining model."""
    checkers = (list(config.check_models) or models) if config.image_check == "vlm" else []
    return sorted(set(checkers) | ({config.refine} if config.refine else set()))


def _backend_maker(config: FuseConfig, models: list[str], tile_infos) -> Callable[[], Any]:
    """Ollama for real models; the simulated panel (one scene, checked against the tiles) for sim: models."""
    asked = _vlm_models(config, models)
    local = [m for m in asked if m.startswith("hf:")]
    if local:  # checks and rewrites are JSON replies: Ollama constrains the decoding, our transformers path does not
        raise UsageProblem(
            f"hf: models cannot answer fuse's yes/no checks or rewrites yet ({', '.join(local)})",
            hint="name Ollama (or, for a synthetic city, sim:) models with --check-model and --refine",
        )
    sim = [m.startswith("sim:") for m in asked]
    if not any(sim):
        if config.scene is not None:
            raise UsageProblem("--scene is for sim: models", hint="leave it out with Ollama models")
        from urbanln_cli.captioners.ollama import OllamaBackend

        return lambda: OllamaBackend(config.hosts, timeout=config.timeout)
    if not all(sim):
        raise UsageProblem(
            f"sim: models and Ollama models cannot share the VLM steps of one run ({', '.join(asked)})",
            hint="check and refine a synthetic city's captions with sim: models (--check-model, --refine), "
            "real imagery with Ollama models",
        )
    from urbanln_cli.captioners.sim import SimBackend, scene_for_tiles
    from urbanln_cli.captioners.sim.facts import Scene

    path = config.scene or (scene_for_tiles(config.tiles) if config.tiles else None)
    if path is None:
        raise UsageProblem(
            "sim: models need the scene of a synthetic city",
            hint="pass --scene city/scene.json (written by `urbanln synth city`), or use Ollama models",
        )
    scene = Scene(path)
    SimBackend(scene).check_tiles(tile_infos)
    return lambda: SimBackend(scene)


def vlm_for(config: FuseConfig, models: list[str], tile_infos, journal: bool = True):
    from urbanln_cli.captioners.cached import CachedVlm

    return CachedVlm(
        _backend_maker(config, models, tile_infos),
        artifacts.partial_dir(config.out) / "vlm.jsonl"
        if journal
        else None,  # the folder appears with the first answer
        policy=RetryPolicy(config.concurrency, config.retries, content_retries=2),
        options=GenerationOptions(temperature=0.0, seed=config.seed, num_predict=512),
    )


def _sent_id(tiles: TileImages, config: FuseConfig) -> Callable[[str], str]:
    """What a VLM is sent, by name: the tile's bytes and the size they are shrunk to (the answer cache's key)."""
    return lambda t: f"{tiles.image_id(t)}@{config.image_size}"


def _image_check(
    states: dict[str, TileFusion], tiles: TileImages, config: FuseConfig, models: list[str], vlm, report, tally
) -> dict[str, Any]:
    """Step 5 over every tile at once (batched for CLIP, concurrent for VLMs)."""
    refs, queries = [], []
    for tile_id, state in states.items():
        for ref, claim in state.disputed():
            refs.append((tile_id, ref))
            queries.append(ClaimQuery(tile_id, claim.render(), claim.concept, ref[0]))
    if config.image_check == "clip":
        from urbanln_cli.image_check.clip import ClipCheckConfig, ClipChecker, reference_sample

        checker = ClipChecker(
            ClipCheckConfig(
                model=config.clip_model,
                arch=config.clip_arch,
                pretrained=config.clip_pretrained,
                max_pixels=tiles.max_pixels,
                **({"margin": config.clip_margin} if config.clip_margin is not None else {}),
            ),
            lexicon=states[next(iter(states))].tools.lexicon if states else None,
        )
        # one fixed reference set of tiles, so a claim's verdict does not depend on the chunk it is checked in
        reference = reference_sample(sorted(tiles.index))
        verdicts = []
        for chunk in _chunks_by_tile(queries, CLIP_CHUNK_TILES):  # memory grows with the tiles of one call
            verdicts += checker.check(
                chunk,
                tiles.image,
                lambda done, total: report(done, total, description="checking claims (clip)"),
                reference=reference,
            )
    else:
        from urbanln_cli.image_check.vlm import VlmChecker

        checker = VlmChecker(vlm, list(config.check_models) or models)
        verdicts = checker.check(
            queries,
            lambda t: _sent(tiles, t, config),
            _sent_id(tiles, config),
            lambda t: states[t].gsd,
            lambda done, total: report(done, total, description="checking claims (vlm)"),
            tiles.tile_info,
        )
    by_tile: dict[str, dict[ClaimRef, Verdict]] = {}
    for (tile_id, ref), verdict in zip(refs, verdicts):
        by_tile.setdefault(tile_id, {})[ref] = verdict
        tally["checked"] += 1
        tally["confirmed"] += verdict.confirmed
        tally["check_errors"] += verdict.error is not None
    for tile_id, verdicts_of in by_tile.items():
        states[tile_id].apply_verdicts(verdicts_of)
    return checker.describe()


def _chunks_by_tile(queries: list[ClaimQuery], tiles_per_chunk: int) -> list[list[ClaimQuery]]:
    """Consecutive queries, split so no chunk holds more than ``tiles_per_chunk`` tiles (queries come tile by tile)."""
    chunks: list[list[ClaimQuery]] = []
    seen: set[str] = set()
    for q in queries:
        if q.tile_id not in seen and len(seen) == tiles_per_chunk:
            seen = set()
        if not seen:
            chunks.append([])
        seen.add(q.tile_id)
        chunks[-1].append(q)
    return chunks


def _refine(
    states: dict[str, TileFusion], tiles: TileImages, config: FuseConfig, vlm, report, tally, rewrites, local
) -> dict[str, Any]:
    """Step 6: quadrant captions per tile, then a rewrite of each model's draft."""
    from urbanln_cli.captioners.refine import Refiner

    refiner = Refiner(vlm, config.refine, config.image_size, tiles.max_pixels)
    sent_id = _sent_id(tiles, config)
    ids = [t for t, state in states.items() if state.drafts()]
    locals_ = refiner.local_captions(
        ids,
        tiles.image,
        sent_id,
        lambda t: states[t].gsd,
        lambda done, total: report(done, total, description="quadrant captions"),
        tiles.tile_info,
    )
    jobs, owners = [], []
    for t in ids:
        drafts = states[t].drafts()
        if isinstance(locals_[t], str):  # a quadrant caption failed: no rewrite, and each candidate says why
            rewrites[t] = {model: Rewrite(None, locals_[t], by=config.refine) for model in drafts}
            tally["refine_errors"] += len(drafts)
            continue
        local[t] = locals_[t]
        facts = states[t].facts()
        for model, pieces in drafts.items():
            jobs.append((t, " ".join(text for _, text, _ in pieces), locals_[t], facts))
            owners.append((t, model))
    results = refiner.rewrite(
        jobs,
        lambda t: _sent(tiles, t, config),
        sent_id,
        lambda t: states[t].gsd,
        lambda done, total: report(done, total, description="rewriting"),
        tiles.tile_info,
    )
    for (t, model), (text, error) in zip(owners, results):
        rewrites.setdefault(t, {})[model] = Rewrite(text, error, by=config.refine)
        tally["refine_errors"] += error is not None
    return refiner.describe() | {"digest": vlm.digests.get(config.refine)}


def _sent(tiles: TileImages, tile_id: str, config: FuseConfig) -> bytes:
    """The tile's image as a VLM gets it: shrunk to --image-size."""
    from urbanln_cli.captioners import fit_image

    return fit_image(tiles.image(tile_id), config.image_size, tiles.max_pixels)
