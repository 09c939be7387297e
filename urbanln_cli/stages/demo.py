"""The whole chain on a synthetic city, ending in the paper's ablation table.

synth → tile → label → caption (the simulated panel) → fuse with the image check
(``--check vlm``) and refinement (``--refine sim:precise``) → pretrain (small,
CPU) → embed → probe on every indicator with a spatial split. Beside UrbanLN it
trains and probes the ablations (no refinement, no stretch, no distillation, one
model's captions without fusion) and the random-weights and pixel baselines, so
every number in the table comes from runs it just did. Each ablation is compared
with UrbanLN fold by fold (``stages/demo_report.py``, ``evaluation/paired.py``);
``seeds`` repeats every training over that many seeds.

Why the demo is shaped the way it is (docs/synthetic-city.md, "The demo"):

- Tiles of 500 m, the cell of the GDP and night-light rasters (carbon's 1 km cell
  holds 2×2 tiles). A tile much smaller than its label's cell only gets a share
  of a value it cannot see: with 128 m tiles the carbon label had 16 distinct
  values over the whole city.
- The city is drawn at 4 m a pixel, so 12 km × 12 km give 576 tiles (a tile is
  125 px, which the model sees at 64 px) in about 25 s.
- Indicators are probed as log(1 + value), as UrbanCLIP's preprocessing does.
  Ridge fitted on log1p and scored in original units (the probe's ``auto``)
  turns spatial extrapolation into exponential errors; ridge on raw values lets
  the few tower tiles of the centre decide each fold's R². The notes still
  compare UrbanLN with the baselines on the raw values.
- Spatial blocks of 1 km: the carbon cell, so tiles sharing a carbon value never
  straddle folds; 144 blocks in 5 folds.
- ``urbanln-small``: the tiny text tower with a 3-layer, 128-wide vision tower
  over 8 px patches. ``urbanln-tiny``'s 16 patches of 16 px learn too little in
  this budget to beat colour statistics.
- Batch 64: the short-caption branch keeps 32 principal components of the batch's
  image features, which a batch of 33 or fewer spans entirely (the branch would
  then contrast unchanged features); 13 epochs, as at batch 32, so every variant
  sees each tile as often for the same compute.
- The refiner is ``sim:precise``, the panel's most accurate persona (fewest wrong
  counts, land uses and invented objects, the fewest wrong "yes" answers, and no
  unchecked quadrant claims carried into its rewrites): a rewrite adds what its
  writer sees, errors included.
- The variants train side by side, one process per core with one torch thread
  each, and no DataLoader processes. A second torch thread makes a step 1.6×
  faster on idle cores but 10–20× slower when other work shares them (OpenMP
  threads spin); two single-thread runs side by side finish 1.5–2× sooner than
  one after the other, busy cores or not.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from urbanln_cli import artifacts
from urbanln_cli.errors import InputError, OutputExistsError, UsageProblem
from urbanln_cli.stages import demo_report

TARGETS = ("population", "carbon", "gdp", "nightlight")
PANEL = ("sim:precise", "sim:verbose", "sim:hallucinating", "sim:generic")
REFINER = "sim:precise"  # the panel's most accurate persona writes the quadrant captions and the rewrites
CHECK = "vlm"  # disputed claims are asked of the panel's own models, as yes/no questions about the tile
SINGLE = "sim:verbose"  # the one model whose raw captions the no-fusion ablation trains on
ARCH = "urbanln-small"
LOG_PREFIX = "log_"  # targets are probed as log(1 + value), in columns named log_<target>

# name in the table -> what differs from UrbanLN
VARIANTS = {
    "UrbanLN": {},
    "w/o refinement": {"corpus": "corpus_unrefined"},
    "w/o stretch (77 tokens)": {"context_length": 77},
    "w/o distillation": {"distill_weight": 0.0},
    "single model, no fusion": {"corpus": "corpus_single"},
}
BASELINES = {"random weights": "random", "pixels": "pixels"}
SEEDED_BASELINES = {"random"}  # a baseline whose embeddings change with the seed (pixels do not)


@dataclass(frozen=True)
class Scale:
    """How big the demo is: the city, its tiles, and the training budget every variant gets."""

    size: int  # city side in pixels
    gsd: float  # metres per pixel
    tile: int  # tile side in pixels
    epochs: int
    batch: int
    warmup: int  # steps
    lr: float = 1e-3
    block_km: float = 1.0  # spatial blocks of the probe's split
    folds: int = 5

    @property
    def tiles(self) -> int:
        return (self.size // self.tile) ** 2

    @property
    def steps(self) -> int:
        return self.tiles // self.batch * self.epochs


# 12 km, 576 tiles, 117 steps a model; 2 km blocks (36), as `probe` defaults to: night light is blurred by 600 m
FULL = Scale(size=3000, gsd=4.0, tile=125, epochs=13, batch=64, warmup=10, block_km=2.0)
QUICK = Scale(size=1000, gsd=4.0, tile=125, epochs=3, batch=16, warmup=3)  # 4 km, 64 tiles, 12 steps a model


@dataclass(frozen=True)
class DemoConfig:
    out: Path = Path("demo")
    quick: bool = False  # a smaller city and fewer epochs: about 40 s
    seed: int = 0
    seeds: int = 1  # every variant trained with seeds seed, seed + 1, …; paired differences pool them
    workers: int = 0  # DataLoader processes; 0 decodes in the training process (a tile decodes in under a millisecond)
    threads: int = 1  # torch threads of each training process
    jobs: int | None = None  # trainings at once, each in its own process; default one per core (at most 5)

    def check(self) -> None:
        if self.seeds < 1:
            raise UsageProblem(f"--seeds {self.seeds} must be at least 1")
        if self.workers < 0 or self.threads < 1 or (self.jobs is not None and self.jobs < 1):
            raise UsageProblem("--workers must be at least 0, and --threads and --jobs at least 1")

    def parallel(self) -> int:
        if self.jobs is not None:
            return max(1, self.jobs)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, min(len(VARIANTS) * self.seeds, cores // max(1, self.threads)))


@dataclass
class DemoResult:
    out: Path
    table: dict[str, dict[str, float]]  # variant -> target -> R² of log(1 + target) (mean over folds and seeds)
    maps: dict[str, str]
    probe: Path
    notes: list[str] = field(default_factory=list)
    std: dict[str, dict[str, float]] = field(default_factory=dict)  # variant -> target -> std over the folds
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall time
    scale: Scale | None = None
    original_units: dict[str, dict[str, float]] = field(
        default_factory=dict
    )  # the same, ridge on raw values, R² in their units (first seed)
    paired: dict[str, dict[str, dict]] = field(default_factory=dict)  # variant -> target -> PairedDifference.as_dict
    seed_std: dict[str, dict[str, float]] = field(default_factory=dict)  # std over seeds of the per-seed mean R²
    tokens: dict[str, dict] = field(default_factory=dict)  # corpus -> its captions' CLIP token lengths
    example: dict[str, str] | None = None  # one tile's refined caption beside its unrefined one
    seeds: int = 1
    report: Path | None = None  # report.json
    fold_scores: dict = field(default_factory=dict)  # variant -> target -> seed index -> fold -> R² of log(1 + target)


DEMO_MARK = ".urbanln-demo"  # marks a folder the demo made: it replaces its own artifacts there, and only there
REPORT = "report.json"
NOISE_RULE = (
    "no detectable difference: |mean paired difference| < t(0.975, folds − 1) × se, se = √(se_folds² + se_seeds²): "
    "se_folds over the folds of each fold's difference averaged over the seeds, se_seeds over the seeds of each "
    "seed's difference averaged over the folds (0 with one seed, where a difference can still be one training run "
    "against another); evaluation/paired.py"
)


def demo(config: DemoConfig, say: Callable[[str], None] = lambda _: None) -> DemoResult:
    import torch

    config.check()
    out = Path(config.out)
    _check_folder(out)
    with artifacts.output_lock(out):
        _check_folder(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / DEMO_MARK).touch()
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, config.threads))
        try:
            return _demo(config, say)
        finally:
            torch.set_num_threads(threads)


DEMO_NAMES = {
    "city",
    "tiles",
    "labels",
    "labels_log",
    "captions",
    "captions_single",
    "corpus",
    "corpus_single",
    "runs",
    "embeddings",
    "probe",
}


def _earlier_demo(out: Path) -> bool:
    """A demo folder of a version before DEMO_MARK: its synthetic city, and nothing but the demo's own names."""
    try:
        manifest = artifacts.read_manifest(out / "city") or {}
    except InputError:
        return False
    city = manifest.get("stage") == "synth" and manifest.get("command") == "python: SynthConfig"  # the demo's own city
    names = {p.name for p in out.iterdir() if not p.name.startswith(".") and not p.name.endswith(".partial")}
    return city and names <= DEMO_NAMES


def _check_folder(out: Path) -> None:
    """The demo replaces the artifacts in its folder: only a new, empty or earlier demo folder will do."""
    artifacts.guard_path(out)
    if not out.exists():
        return
    if not out.is_dir() or (any(out.iterdir()) and not ((out / DEMO_MARK).exists() or _earlier_demo(out))):
        raise OutputExistsError(
            f"{out} exists and is not a folder urbanln demo made, so the demo will not write into it",
            hint="name a new folder: urbanln demo DIR",
        )


def _demo(config: DemoConfig, say: Callable[[str], None]) -> DemoResult:
    from urbanln_cli.stages.caption import CaptionConfig, caption
    from urbanln_cli.stages.label import LabelConfig, RasterTarget, label
    from urbanln_cli.stages.tile import TileConfig, tile
    from urbanln_cli.synth import SynthConfig, synth_city
    from urbanln_cli.synth.indicators import GRIDS_M

    out = Path(config.out)
    scale = QUICK if config.quick else FULL
    city = out / "city"
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = round(seconds.get(stage, 0.0) + now - clock, 1)
        clock = now

    side_km = scale.size * scale.gsd / 1000
    say(f"synth: a {side_km:g} km city ({scale.size}² px at {scale.gsd:g} m)")
    synth_city(SynthConfig(out=city, size=scale.size, gsd=scale.gsd, seed=config.seed, overwrite=True))
    lap("synth")
    say(f"tile: {scale.tiles} tiles of {scale.tile * scale.gsd:g} m")
    tiles = tile(
        TileConfig(
            inputs=(city / "imagery.tif",), out=out / "tiles", size=scale.tile, min_valid=0, overwrite=True, workers=1
        )
    ).out
    lap("tile")
    say("label")
    rasters = tuple(RasterTarget(t, city / f"{t}.tif", "sum") for t in TARGETS) + (
        RasterTarget("landcover", city / "landcover.tif", "fractions"),
    )
    labels = label(LabelConfig(tiles=tiles, out=out / "labels", rasters=rasters, overwrite=True)).out
    # a target whose cells are more than half the city has too few distinct values to predict
    targets = [t for t in TARGETS if 2 * GRIDS_M[t] <= scale.size * scale.gsd]
    log_labels = _log_labels(labels, out / "labels_log", targets)
    lap("label")
    say(f"caption: {', '.join(PANEL)}")
    captions = caption(
        CaptionConfig(tiles=tiles, out=out / "captions", models=PANEL, concurrency=8, overwrite=True)
    ).out
    single = caption(
        CaptionConfig(tiles=tiles, out=out / "captions_single", models=(SINGLE,), concurrency=8, overwrite=True)
    ).out
    lap("caption")
    corpora = _corpora(out, captions, single, tiles, say)
    lap("fuse")
    embeddings = _train_and_embed(config, scale, out, tiles, corpora, say, lap)
    say(f"probe: ridge on log(1 + target), spatial blocks of {scale.block_km:g} km in {scale.folds} folds")
    probed = _probe_all(config, scale, out, embeddings, labels, log_labels, targets)
    lap("probe")
    scores = demo_report.fold_scores(probed["runs"], probed["owners"], LOG_PREFIX)
    table, std, seed_std = demo_report.summary(scores)
    order = [*VARIANTS, *BASELINES]
    table, std, seed_std, original_units = (
        {v: t[v] for v in order if v in t} for t in (table, std, seed_std, probed["original_units"])
    )
    differences = demo_report.paired(scores, targets)
    differences = {v: differences[v] for v in order if v in differences}
    notes = demo_report.paired_notes(differences, "R² of log(1 + target)") + demo_report.verdicts(
        original_units, targets, "R² in original units", list(BASELINES)
    )
    from urbanln_cli.stages.fuse import FuseConfig
    from urbanln_cli.text.tokens import clip_counter

    count = clip_counter(FuseConfig().tokenizer)
    tokens = {name: demo_report.token_lengths(path, count) for name, path in corpora.items()}
    example = demo_report.caption_pair(corpora["corpus"], corpora["corpus_unrefined"])
    lap("report")
    result = DemoResult(
        out,
        table,
        probed["maps"],
        probed["probe"],
        notes,
        std,
        seconds,
        scale,
        original_units,
        paired={v: {t: d.as_dict() for t, d in by_target.items()} for v, by_target in differences.items()},
        seed_std=seed_std,
        tokens=tokens,
        example=example,
        seeds=config.seeds,
        fold_scores={v: scores[v] for v in order if v in scores},
    )
    result.report = demo_report.write_report(out / REPORT, report_dict(result, config))
    return result


def report_dict(result: DemoResult, config: DemoConfig) -> dict:
    """What ``report.json`` (and ``urbanln demo --json``) holds."""
    scale = result.scale
    return {
        "table": result.table,
        "std": result.std,
        "seed_std": result.seed_std,
        "original_units": result.original_units,
        "paired": result.paired,
        "noise_rule": NOISE_RULE,
        "fold_scores": result.fold_scores,
        "notes": result.notes,
        "tokens": result.tokens,
        "example": result.example,
        "maps": result.maps,
        "probe": str(result.probe),
        "seconds": result.seconds,
        "settings": {
            "seed": config.seed,
            "seeds": config.seeds,
            "panel": list(PANEL),
            "check": CHECK,
            "refine": REFINER,
            "single": SINGLE,
            "arch": ARCH,
            "scale": {
                "tiles": scale.tiles,
                "tile_m": scale.tile * scale.gsd,
                "epochs": scale.epochs,
                "batch": scale.batch,
                "steps": scale.steps,
                "folds": scale.folds,
                "block_km": scale.block_km,
            }
            if scale
            else None,
        },
    }


def _corpora(out: Path, captions: Path, single: Path, tiles: Path, say: Callable[[str], None]) -> dict[str, Path]:
    """The fused corpora: the paper's chain (check, then refine), the same without refinement, and one model's raw
    captions."""
    from urbanln_cli.stages.fuse import FuseConfig, fuse

    say(f"fuse: --check {CHECK} --refine {REFINER}, and without --refine")
    checked = dict(captions=(captions,), tiles=tiles, image_check=CHECK, overwrite=True)
    return {
        "corpus": fuse(FuseConfig(out=out / "corpus", refine=REFINER, **checked)).out,
        "corpus_unrefined": fuse(FuseConfig(out=out / "corpus_unrefined", **checked)).out,
        "corpus_single": fuse(
            FuseConfig(
                captions=(single,),
                tiles=tiles,
                out=out / "corpus_single",
                clean=False,
                visibility=False,
                support=False,
                consensus=False,
                overwrite=True,
            )
        ).out,
    }


def _train_and_embed(config, scale, out, tiles, corpora, say, lap) -> dict[tuple[str, int], Path]:
    """(variant or baseline, seed index) -> its embeddings file: every variant trained once per seed."""
    from urbanln_cli.stages.embed import EmbedConfig, embed

    jobs = config.parallel()
    seeds = f" × {config.seeds} seeds" if config.seeds > 1 else ""
    say(
        f"pretrain + embed: {', '.join(VARIANTS)}{seeds}: {scale.steps} steps of {scale.batch} each"
        + (f", {jobs} at a time" if jobs > 1 else "")
    )
    tasks, owner = {}, {}
    for k in range(config.seeds):
        for name, change in VARIANTS.items():
            slug = _slug(name) + _seed_suffix(k)
            settings = dict(
                tiles=tiles,
                corpus=corpora[change.get("corpus", "corpus")],
                out=out / "runs" / slug,
                arch=ARCH,
                pretrained="none",
                epochs=scale.epochs,
                batch_size=scale.batch,
                queue_size=scale.batch * 8,
                lr=scale.lr,
                warmup_steps=scale.warmup,
                workers=config.workers,
                device="cpu",
                seed=config.seed + k,
                overwrite=True,
            )
            settings.update({key: v for key, v in change.items() if key != "corpus"})
            task = name + (f" (seed {config.seed + k})" if k else "")
            tasks[task] = (settings, out / "embeddings" / f"{slug}.safetensors")
            owner[task] = (name, k)
    done = _train_all(tasks, jobs, config.threads, lambda task: say(f"trained and embedded: {task}"))
    embeddings = {owner[task]: path for task, path in done.items()}
    lap("pretrain + embed")
    for name, baseline in BASELINES.items():
        for k in range(config.seeds if baseline in SEEDED_BASELINES else 1):
            say(f"embed: {name} baseline" + (f" (seed {config.seed + k})" if k else ""))
            embeddings[(name, k)] = embed(
                EmbedConfig(
                    tiles=tiles,
                    baseline=baseline,
                    arch=ARCH,
                    seed=config.seed + k,
                    out=out / "embeddings" / f"{_slug(name)}{_seed_suffix(k)}.safetensors",
                    workers=config.workers,
                    device="cpu",
                    overwrite=True,
                )
            ).out
    lap("embed")
    return embeddings


def _seed_suffix(k: int) -> str:
    return f"_seed{k}" if k else ""


def _probe_all(config, scale, out, embeddings, labels, log_labels, targets) -> dict:
    """Per-fold R² of every embeddings file on log(1 + target); the probe folder (maps) and the raw-value scores of
    the first seed's."""
    from urbanln_cli.stages.probe import ProbeConfig, evaluate, probe, probe_metrics

    first = {name: path for (name, k), path in embeddings.items() if k == 0}
    settings = dict(
        split="spatial", block_km=scale.block_km, folds=scale.folds, log_target="no", seed=config.seed
    )  # one probe seed: every variant and training seed is scored on the same folds
    log_targets = ",".join(LOG_PREFIX + t for t in targets)
    result = probe(
        ProbeConfig(
            target=log_targets,
            embeddings=tuple(first.values()),
            labels=log_labels,
            out=out / "probe",
            overwrite=True,
            **settings,
        )
    )
    # the other seeds' files on the same folds (the folds depend on the labels and the probe seed only)
    rest = sorted(set(embeddings.values()) - set(first.values()))
    runs = result.runs + (
        evaluate(ProbeConfig(target=log_targets, embeddings=tuple(rest), labels=log_labels, **settings)).runs
        if rest
        else []
    )
    # the probe names a file by its stem (unique here: every file is in embeddings/)
    owners: dict[str, list[tuple[str, int]]] = {}
    for (name, k), path in embeddings.items():
        owners.setdefault(Path(path).with_suffix("").name, []).append((name, k))
    pixels_seeds = [
        (name, k)
        for name, baseline in BASELINES.items()
        if baseline not in SEEDED_BASELINES
        for k in range(1, config.seeds)
    ]
    for name, k in pixels_seeds:  # an unseeded baseline is the same file for every seed: pair it with each
        owners[Path(embeddings[(name, 0)]).with_suffix("").name].append((name, k))
    # the same folds on the raw values (ridge on raw values, R² in their units), for the notes: it weighs the few
    # dense tiles of the centre far more, and can rank the representations differently
    raw = probe_metrics(list(first.values()), labels, target=targets, **settings)
    maps = {
        t.removeprefix(LOG_PREFIX): str(result.out / files["map"])
        for t, files in result.plots.items()
        if "map" in files
    }
    return {
        "runs": runs,
        "owners": owners,
        "maps": maps,
        "probe": result.out,
        "original_units": demo_report.by_variant(raw, first, LOG_PREFIX),
    }


def _train_variant(settings: dict, embeddings: Path, threads: int) -> Path:
    """Pretrain one variant and embed the tiles with it (in a worker process, or in this one)."""
    import torch

    from urbanln_cli.stages.embed import EmbedConfig, embed
    from urbanln_cli.stages.pretrain import PretrainConfig, pretrain

    torch.set_num_threads(max(1, threads))
    run = pretrain(PretrainConfig(**settings)).out
    return embed(
        EmbedConfig(
            tiles=settings["tiles"],
            model=run,
            out=embeddings,
            workers=settings["workers"],
            device="cpu",
            overwrite=True,
        )
    ).out


def _train_in_worker(settings: dict, embeddings: Path, threads: int):
    """``_train_variant`` whose errors cross the process boundary with their class, message and hint."""
    import logging

    from urbanln_cli.errors import UrbanlnError

    # A spawned worker has no CLI logging: keep library and training log lines off the demo's stderr
    # (the parent says what the demo trains; the short-caption note is in docs/synthetic-city.md).
    logging.getLogger().handlers[:] = [logging.NullHandler()]
    logging.getLogger("urbanln_cli").handlers[:] = [logging.NullHandler()]  # (no handler at all: lastResort prints)
    logging.getLogger("urbanln_cli").propagate = False
    try:
        return "ok", _train_variant(settings, embeddings, threads)
    except UrbanlnError as exc:
        return "error", (type(exc).__name__, exc.message, exc.hint)


def _train_all(
    tasks: dict[str, tuple[dict, Path]], jobs: int, threads: int, finished: Callable[[str], None]
) -> dict[str, Path]:
    """Every variant trained and embedded, ``jobs`` at a time: independent runs scale with the cores, unlike one tiny
    model's threads."""
    if jobs <= 1:
        done = {}
        for name, (settings, path) in tasks.items():
            done[name] = _train_variant(settings, path, threads)
            finished(name)
        return done
    import concurrent.futures as cf
    import multiprocessing

    from urbanln_cli import errors

    # the costliest first (the single model's captions are the longest), so the last ones to finish end together
    order = sorted(tasks, key=lambda n: (tasks[n][0].get("context_length", 248), "single" in n), reverse=True)
    done = {}
    # spawn, not fork: the parent holds torch's thread pools, which a forked child must not inherit
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_train_in_worker, *tasks[name], threads): name for name in order}
        try:
            for future in cf.as_completed(futures):
                status, value = future.result()
                if status == "error":
                    kind, message, hint = value
                    raise getattr(errors, kind, errors.UrbanlnError)(message, hint)
                done[futures[future]] = value
                finished(futures[future])
        except BaseException:  # an error or Ctrl-C: start no other variant (the running ones got the Ctrl-C too)
            for future in futures:
                future.cancel()
            raise
    return done


def _log_labels(labels: Path, out: Path, targets: list[str]) -> Path:
    """The labels with log(1 + value) of each target as ``log_<target>``: what the demo probes."""
    import numpy as np

    ds, manifest = artifacts.read_dataset(labels, "labels")
    keep = ["tile_id", "lon", "lat", "group"]
    ds = ds.select_columns([c for c in keep if c in ds.column_names] + targets)
    columns = {LOG_PREFIX + t: np.log1p(np.clip(np.asarray(ds[t], np.float64), 0, None)) for t in targets}
    for name, values in columns.items():
        ds = ds.add_column(name, values.tolist())
    ds = ds.remove_columns(targets)
    new = artifacts.new_manifest(
        "labels",
        run=artifacts.RunInfo(
            command="python: urbanln_cli.stages.demo", params={"transform": {"value": "log1p", "source": "api"}}
        ),
        inputs=[artifacts.fingerprint(labels)],
        rows=ds.num_rows,
        extra={
            "transform": {LOG_PREFIX + t: f"log1p({t})" for t in targets},
            "labels_artifact": manifest.get("artifact_id"),
        },
    )
    return artifacts.write_dataset(ds, out, new, overwrite=True)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_").replace("__", "_")
