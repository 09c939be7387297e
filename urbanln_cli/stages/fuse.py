"""Stage ``fuse``: data-level noise suppression of a captions panel (a ``corpus`` artifact).

The per-tile steps are pure functions in ``urbanln_cli.fusion`` (clean, claims,
visibility, support, consensus, the length cut and ``caption_short``); this
module reads the captions (and the tiles, for each tile's GSD and image), runs
the steps that look at the images over every tile at once, and writes the corpus:

- image check (``check``: clip or vlm, optional): a disputed claim (support
  below ``min_support``, more contradicted than backed, or any claim of a single
  model) stays only when the image confirms it (else ``unsupported``,
  ``contradicted``, or ``unconfirmed`` when support did not drop it);
- refine (``refine``: an Ollama vision model, optional): quadrant captions, then
  a structured rewrite of each model's candidate, checked again (``refine_new``).

Both may use ``sim:<persona>`` models on the tiles of a synthetic city: the
simulated panel answers from the scene (``scene``, default the scene.json beside
the tiles' raster) through the same journaled requests as Ollama models.

Their answers are journaled in ``<out>.partial/``. Every drop is recorded with
its reason and step (``dropped``) and counted (``dropped_<reason>`` in the
manifest); tiles that kept their best cleaned candidate because every candidate
was emptied are flagged (``fallback``) and counted (``fallback_tiles``).
Captions a captions artifact marks ``trusted`` (imported as human-checked) are
only cleaned, unless ``filter_trusted``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from urbanln_cli import artifacts, manifest_fields
from urbanln_cli.captioners.ollama import DEFAULT_HOST
from urbanln_cli.errors import InputError, Interrupted, UsageProblem
from urbanln_cli.fusion import (
    REASONS,
    FusionOptions,
    TileFusion,
    Tools,
    fuse_tile,  # re-exported: a FuseConfig is a FusionOptions
)
from urbanln_cli.stages.fuse_inputs import (
    Panel,
    TileImages,
    _check_images,
    _check_overlap,
    _gsd_of,
    _needs_gsd,
    _tiles_for,
    _tiles_inputs,
    load_captions,
    load_gsd,
    load_panel,
)
from urbanln_cli.stages.fuse_vlm import check_and_refine, vlm_for
from urbanln_cli.text.lexicon import load_lexicon
from urbanln_cli.text.tokens import clip_counter

STAGE = "corpus"
CHECKS = ("none", "clip", "vlm")


@dataclass(frozen=True)
class FuseConfig(FusionOptions):
    """The stage's settings: the per-tile steps' (inherited from ``FusionOptions``), inputs, image steps, client."""

    captions: tuple[Path, ...] = (Path("captions"),)
    tiles: Path | None = Path("tiles")  # for each tile's GSD (visibility) and image (check, refine); None: not used
    gsd: float | None = None  # metres per pixel of tiles without one (no tiles artifact, or a tile it lacks)
    out: Path = Path("corpus")
    lexicon: Path | None = None  # TOML or JSON extending the built-in lexicon
    tokenizer: str = "ViT-B-16"  # open_clip tokenizer that counts tokens
    # step 5, image check
    image_check: str = "none"  # none | clip | vlm (--check)
    check_models: tuple[str, ...] = ()  # vlm: who checks; default the captions' own models
    clip_model: Path | None = None  # clip: a pretrain run folder (default runs/latest)
    clip_arch: str | None = None  # clip: with clip_pretrained
    clip_pretrained: str | None = None  # clip: open_clip weights (tag, file or local-dir:)
    clip_margin: float | None = None  # clip: decision margin; None: the checker's default
    # step 6, refine
    refine: str | None = None  # an Ollama vision model, or sim:<persona> on a synthetic city
    scene: Path | None = None  # sim: models: the city's scene.json (default: beside the tiles' raster)
    # the Ollama client of check vlm and refine (as in `caption`)
    hosts: tuple[str, ...] = (DEFAULT_HOST,)
    concurrency: int = 4
    timeout: float = 300.0
    retries: int = 4
    image_size: int = 672
    seed: int = 0
    overwrite: bool = False

    def fusion(self) -> FusionOptions:
        """The options of the per-tile steps."""
        return FusionOptions.of(self)

    def check(self) -> None:
        if not self.captions:
            raise UsageProblem("no captions folder given", hint="urbanln fuse captions/ [more_captions/ …]")
        if not 0.0 <= self.min_support <= 1.0:
            raise UsageProblem(f"--min-support {self.min_support} is not between 0 and 1")
        if not 0.0 < self.soft_threshold <= 1.0:
            raise UsageProblem(f"--soft-threshold {self.soft_threshold} is not in (0, 1]")
        if self.count_tolerance < 0:
            raise UsageProblem(f"--count-tolerance {self.count_tolerance} must be at least 0")
        if self.min_words < 0 or self.max_words < max(1, self.min_words):
            raise UsageProblem("--min-words must be at least 0 and --max-words at least --min-words")
        if self.max_tokens < 8 or self.short_tokens < 8:
            raise UsageProblem("--max-tokens and --short-tokens must be at least 8")
        if self.gsd is not None and not (math.isfinite(self.gsd) and self.gsd > 0):
            raise UsageProblem(f"--gsd {self.gsd} must be a positive number of metres per pixel")
        if self.image_check not in CHECKS:
            raise UsageProblem(f"--check {self.image_check!r} is not one of {', '.join(CHECKS)}")
        if (
            self.concurrency < 1
            or self.retries < 0
            or not (math.isfinite(self.timeout) and self.timeout > 0)
            or self.image_size < 32
        ):
            raise UsageProblem(
                "--concurrency must be at least 1, --retries at least 0, --timeout positive and --image-size at "
                "least 32"
            )
        if self.check_models and self.image_check != "vlm":
            raise UsageProblem("--check-model is for --check vlm", hint="add --check vlm, or leave it out")
        clip = [
            n
            for n, v in (
                ("--clip-model", self.clip_model),
                ("--clip-arch", self.clip_arch),
                ("--clip-pretrained", self.clip_pretrained),
                ("--clip-margin", self.clip_margin),
            )
            if v is not None
        ]
        if clip and self.image_check != "clip":
            raise UsageProblem(
                f"{', '.join(clip)} {'is' if len(clip) == 1 else 'are'} for --check clip",
                hint="add --check clip, or leave them out",
            )
        if self.scene is not None and not self.uses_ollama:
            raise UsageProblem("--scene is for sim: models in --check vlm or --refine", hint="add one, or leave it out")
        if (self.image_check != "none" or self.refine) and self.tiles is None:
            raise UsageProblem("--check and --refine look at the tiles' images", hint="pass --tiles PATH")
        if self.uses_ollama:
            from urbanln_cli.captioners.ollama import check_hosts

            check_hosts(self.hosts)

    @property
    def uses_ollama(self) -> bool:
        """Whether a step asks VLMs (Ollama models, or sim: models of a synthetic city)."""
        return self.image_check == "vlm" or self.refine is not None


@dataclass
class FuseResult:
    out: Path
    rows: int
    counts: dict[str, Any]
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)


def _tools(config: FuseConfig) -> Tools:
    return Tools(load_lexicon(config.lexicon), clip_counter(config.tokenizer))


def corpus_features():
    from datasets import Features, Value

    return Features(
        {
            "tile_id": Value("string"),
            "caption": Value("string"),
            "caption_short": Value("string"),
            "model": Value("string"),  # whose candidate became the caption
            # each model's caption; sentences: its source sentences (indices into the raw caption, or into the rewrite
            # when refined_by)
            "candidates": [
                {
                    "model": Value("string"),
                    "caption": Value("string"),
                    "score": Value("float64"),
                    "sentences": [Value("int32")],
                    "refined_by": Value("string"),
                    "refine_error": Value("string"),
                    "trusted": Value("bool"),
                }
            ],
            "local_captions": [Value("string")],  # --refine: the refining model's captions of the four quadrants
            "claims": Value("string"),  # JSON: every kept claim with its support and source
            "dropped": Value("string"),  # JSON: every dropped phrase with its reason
            "n_models": Value("int32"),
            "gsd": Value("float64"),
            "cut": Value("bool"),
            "score": Value("float64"),  # consensus: mean claim-F1 of the caption to the other candidates
            "support_mean": Value("float64"),
            "tokens": Value("int32"),
            "short_tokens": Value("int32"),
            "fallback": Value(
                "bool"
            ),  # every candidate was emptied: the caption is the best cleaned candidate, unfiltered
        }
    )


# ---------------------------------------------------------------- the stage


def fuse(
    config: FuseConfig, progress: Callable[..., None] | None = None, run: artifacts.RunInfo | None = None
) -> FuseResult:
    """Fuse the captions folders of ``config`` into the corpus artifact at ``config.out``.

    ``progress(done, total, description=...)`` is called per phase.
    """
    config.check()
    inputs = config.captions + ((config.tiles,) if config.tiles else ())
    with artifacts.writing(config.out, "corpus", overwrite=config.overwrite, inputs=inputs):
        return _fuse(config, progress, run)


def _fuse(config: FuseConfig, progress: Callable[..., None] | None, run: artifacts.RunInfo | None) -> FuseResult:
    panel = load_panel(config.captions)
    merged, counts, manifests = panel.captions, panel.counts, panel.manifests
    tiles = _tiles_for(config, _needs_gsd(panel, config))
    gsd = _gsd_of(tiles, config)
    tools = _tools(config)
    options = config.fusion()
    _check_images(merged, tiles, config)
    not_in_tiles = _check_overlap(
        merged, tiles, config, [_tiles_inputs(m, p) for m, p in zip(manifests, config.captions)]
    )
    report = progress or (lambda done, total, **kw: None)
    ids = sorted(merged)
    tally = Counter()
    rows: list[dict[str, Any]] = []
    looks = config.image_check != "none" or config.refine is not None
    states: dict[str, TileFusion] = {}  # kept for the image steps only: they work on every tile at once
    for n, tile_id in enumerate(ids, 1):
        trusted = panel.trusted.get(tile_id, frozenset())
        if config.visibility and gsd(tile_id) is None and (config.filter_trusted or set(merged[tile_id]) - trusted):
            tally["tiles_without_gsd"] += 1
        state = TileFusion(tile_id, merged[tile_id], gsd(tile_id), options, tools, trusted)
        if looks:
            states[tile_id] = state
        else:
            _add_row(rows, state.row(), tally, state)
        if n % 16 == 0 or n == len(ids):
            report(n, len(ids), description="claims" if looks else "fusing")
    models = sorted({m for caps in merged.values() for m in caps})
    model_info: dict[str, dict[str, Any]] = {m: {"from": "captions"} for m in models}
    steps: dict[str, Any] = {
        "clean": config.clean,
        "visibility": config.visibility,
        "support": config.support,
        "consensus": config.consensus,
        "trusted": {"captions": sum(len(m) for m in panel.trusted.values()), "filtered": config.filter_trusted},
    }
    vlm = vlm_for(config, models, [tiles.tile_info(t) for t in ids] if tiles else []) if config.uses_ollama else None
    if looks:
        try:
            rewrites, local = check_and_refine(states, tiles, config, models, vlm, report, tally, steps)
        except KeyboardInterrupt:
            kept = f"; the VLM answers so far are kept in {vlm.journal_path.parent}" if vlm is not None else ""
            raise Interrupted(f"fuse interrupted{kept}") from None
        for n, tile_id in enumerate(ids, 1):
            state = states.pop(tile_id)
            _add_row(rows, state.row(rewrites.get(tile_id), local.get(tile_id)), tally, state)
            if n % 16 == 0 or n == len(ids):
                report(n, len(ids), description="fusing")
    if vlm is not None:
        tally["vlm_asked"], tally["vlm_reused"] = vlm.asked, vlm.reused
        for tag, digest in vlm.digests.items():
            roles = (["check"] if tag in steps.get("check", {}).get("models", []) else []) + (
                ["refine"] if tag == config.refine else []
            )
            model_info[tag] = model_info.get(tag, {}) | {"digest": digest, "roles": roles}
    import datasets

    features = corpus_features()
    ds = (
        datasets.Dataset.from_list(rows, features=features)
        if rows
        else datasets.Dataset.from_dict({k: [] for k in features}, features=features)
    )
    counts = {
        "rows": len(rows),
        "failed_captions": counts.get("failed_captions", 0),
        "duplicate_rows": counts.get("duplicate_rows", 0),
        **{f"dropped_{r}": tally.get(f"dropped_{r}", 0) for r in REASONS},
        "cut": tally.get("cut", 0),
        "empty_tiles": tally.get("empty_tiles", 0),
        "fallback_tiles": tally.get("fallback_tiles", 0),
        "tiles_without_gsd": tally.get("tiles_without_gsd", 0),
        "not_in_tiles": not_in_tiles,
        "single_model": all(len(caps) <= 1 for caps in merged.values()),
        **{
            k: v for k, v in sorted(tally.items()) if k.startswith(("checked", "confirmed", "check_", "refine", "vlm_"))
        },
    }
    inputs = [artifacts.fingerprint(p) for p in config.captions] + (
        [artifacts.fingerprint(config.tiles)] if tiles else []
    )
    manifest = artifacts.new_manifest(
        STAGE,
        run=run or artifacts.RunInfo.from_config(config),
        inputs=inputs,
        rows=len(rows),
        counts=counts,
        models=model_info,
        extra={
            "steps": steps,
            "lexicon": tools.lexicon.describe(),
            "captions_artifacts": [
                manifest_fields.field(m, p, "artifact_id", str) for m, p in zip(manifests, config.captions)
            ],
            "tiles_artifact": tiles.artifact_id if tiles else None,
        },
    )
    artifacts.write_dataset(ds, config.out, manifest, overwrite=config.overwrite)
    failures = counts.get("check_errors", 0) + counts.get("refine_errors", 0)
    if vlm is not None and vlm.journal_path is not None and not failures:
        artifacts.remove(vlm.journal_path.parent, "partial")  # the corpus holds every answer that counted
    return FuseResult(config.out, len(rows), counts, manifest)


def _add_row(rows: list[dict[str, Any]], row: dict[str, Any] | None, tally: Counter, state: TileFusion) -> None:
    if row is None:  # cleaning left no sentence: its drops still count
        tally["empty_tiles"] += 1
        for d in state.drops:
            tally[f"dropped_{d['reason']}"] += 1
        return
    tally["fallback_tiles"] += int(row["fallback"])
    for d in json.loads(row["dropped"]):
        tally[f"dropped_{d['reason']}"] += 1
    tally["cut"] += int(row["cut"])
    for c in row["candidates"]:
        tally["refined"] += c["refined_by"] is not None
        tally["refine_not_used"] += c["refine_error"] is not None  # the draft stayed; the row says why
    rows.append(row)


def explain(config: FuseConfig, tile_id: str) -> dict[str, Any]:
    """One tile's fusion: from a corpus given among the inputs, else computed for that tile alone."""
    for path in config.captions:
        manifest = artifacts.read_manifest(path) if Path(path).exists() else None
        if manifest and manifest.get("stage") == STAGE:
            ds, _ = artifacts.read_dataset(path, STAGE)
            ids = ds.data.column("tile_id").to_pylist()
            if tile_id not in ids:
                raise InputError(f"tile {tile_id} is not in {path}", hint=_ids_hint(ids[:3]))
            return _decode(ds[ids.index(tile_id)]) | {"source": str(path)}
    config.check()
    panel = load_panel(config.captions)
    merged = panel.captions
    if tile_id not in merged:
        raise InputError(
            f"tile {tile_id} has no usable caption in {', '.join(map(str, config.captions))}",
            hint=_ids_hint(sorted(merged)[:3]),
        )
    trusted = panel.trusted.get(tile_id, frozenset())
    tiles = _tiles_for(config, _needs_gsd(Panel({tile_id: merged[tile_id]}, {tile_id: trusted}, {}, []), config))
    _check_images({tile_id: None}, tiles, config)
    state = TileFusion(
        tile_id, merged[tile_id], _gsd_of(tiles, config)(tile_id), config.fusion(), _tools(config), trusted
    )
    models = sorted(merged[tile_id])
    vlm = (
        vlm_for(config, models, [tiles.tile_info(tile_id)] if tiles else [], journal=False)
        if config.uses_ollama
        else None
    )
    rewrites, local = check_and_refine(
        {tile_id: state}, tiles, config, models, vlm, lambda *a, **k: None, Counter(), {}
    )
    row = state.row(rewrites.get(tile_id), local.get(tile_id))
    if row is None:
        why = Counter(d["reason"] for d in state.drops)
        note = (
            "cleaning removed every sentence of every caption ("
            + ", ".join(f"{n} {r}" for r, n in sorted(why.items()))
            + ")"
        )
        return {
            "tile_id": tile_id,
            "source": "computed",
            "caption": None,
            "inputs": merged[tile_id],
            "note": note,
            "dropped": state.drops,
        }
    return _decode(row) | {"source": "computed", "inputs": merged[tile_id]}


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    return dict(row) | {"claims": json.loads(row["claims"]), "dropped": json.loads(row["dropped"])}


def _ids_hint(ids: list[str]) -> str:
    return f"tile ids look like {', '.join(ids)}" if ids else "the input has no tiles"


__all__ = [
    "FuseConfig",
    "FuseResult",
    "Panel",
    "TileImages",
    "fuse",
    "fuse_tile",
    "explain",
    "load_captions",
    "load_gsd",
    "load_panel",
    "corpus_features",
    "REASONS",
]
