"""The whole chain on a synthetic city, ending in the paper's ablation table.

synth → tile → label → caption (simulated panel) → fuse → pretrain (small, CPU) →
embed → probe on every indicator with a spatial split. Beside UrbanLN it trains
and probes the ablations (no stretch, no distillation, one model's captions
without fusion) and the random-weights and pixel baselines, so every number in
the table comes from runs it just did.

Why the demo is shaped the way it is (docs/synthetic-city.md, "The demo"):

- Tiles of 500 m, the cell of the GDP and night-light rasters (carbon's 1 km cell
  holds 2×2 tiles). A tile much smaller than its label's cell only gets a share
  of a value it cannot see: with 128 m tiles the carbon label had 16 distinct
  values over the whole city.
- The city is drawn at 4 m a pixel, so 12 km × 12 km give 576 tiles (a tile is
  125 px, which the model sees at 64 px) in about 25 s.
- Indicators are probed as log(1 + value), as UrbanCLIP's preprocessing does.
  Ridge fitted on log1p and scored in original units (the probe's ``auto``)
  turns spatial extrapolation into exponential errors (the pixel baseline's
  GDP R² is -1.75 ± 1.34 that way); ridge on raw values lets the few tower
  tiles of the centre decide each fold's R² (-13 ± 12 with 2 km blocks). The
  notes still compare UrbanLN with the baselines on the raw values.
- Spatial blocks of 1 km: the carbon cell, so tiles sharing a carbon value never
  straddle folds; 144 blocks in 5 folds.
- ``urbanln-small``: the tiny text tower with a 3-layer, 128-wide vision tower
  over 8 px patches. ``urbanln-tiny``'s 16 patches of 16 px learn too little in
  this budget to beat colour statistics.
- The four variants train side by side, one process per core with one torch
  thread each, and no DataLoader processes. A second torch thread makes a step
  1.6× faster on idle cores but 10–20× slower when other work shares them
  (OpenMP threads spin); two single-thread runs side by side finish 1.5–2×
  sooner than one after the other, busy cores or not.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from urbanln_cli import artifacts
from urbanln_cli.errors import InputError, OutputExistsError

TARGETS = ("population", "carbon", "gdp", "nightlight")
PANEL = ("sim:precise", "sim:verbose", "sim:hallucinating", "sim:generic")
SINGLE = "sim:verbose"  # the one model whose raw captions the no-fusion ablation trains on
ARCH = "urbanln-small"
LOG_PREFIX = "log_"  # targets are probed as log(1 + value), in columns named log_<target>

# name in the table -> what differs from UrbanLN
VARIANTS = {
    "UrbanLN": {},
    "w/o stretch (77 tokens)": {"context_length": 77},
    "w/o distillation": {"distill_weight": 0.0},
    "single model, no fusion": {"corpus": "corpus_single"},
}
BASELINES = {"random weights": "random", "pixels": "pixels"}


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


FULL = Scale(size=3000, gsd=4.0, tile=125, epochs=13, batch=32, warmup=20)  # 12 km, 576 tiles, 234 steps a model
QUICK = Scale(size=1000, gsd=4.0, tile=125, epochs=3, batch=16, warmup=3)  # 4 km, 64 tiles, 12 steps a model


@dataclass(frozen=True)
class DemoConfig:
    out: Path = Path("demo")
    quick: bool = False  # a smaller city and fewer epochs: about a minute
    seed: int = 0
    workers: int = 0  # DataLoader processes; 0 decodes in the training process (a tile decodes in under a millisecond)
    threads: int = 1  # torch threads of each training process
    jobs: int | None = None  # variants trained at once, each in its own process; default one per core (at most 4)

    def parallel(self) -> int:
        if self.jobs is not None:
            return max(1, self.jobs)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, min(len(VARIANTS), cores // max(1, self.threads)))


@dataclass
class DemoResult:
    out: Path
    table: dict[str, dict[str, float]]  # variant -> target -> R² of log(1 + target) (mean over spatial folds)
    maps: dict[str, str]
    probe: Path
    notes: list[str] = field(default_factory=list)
    std: dict[str, dict[str, float]] = field(default_factory=dict)  # variant -> target -> std of R² over the folds
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall time
    scale: Scale | None = None
    original_units: dict[str, dict[str, float]] = field(
        default_factory=dict
    )  # the same, ridge on raw values, R² in their units


DEMO_MARK = ".urbanln-demo"  # marks a folder the demo made: it replaces its own artifacts there, and only there


def demo(config: DemoConfig, say: Callable[[str], None] = lambda _: None) -> DemoResult:
    import torch

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
    from urbanln_cli.stages.embed import EmbedConfig, embed
    from urbanln_cli.stages.fuse import FuseConfig, fuse
    from urbanln_cli.stages.label import LabelConfig, RasterTarget, label
    from urbanln_cli.stages.probe import ProbeConfig, probe, probe_metrics
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
    say("fuse")
    corpora = {
        "corpus": fuse(FuseConfig(captions=(captions,), tiles=tiles, out=out / "corpus", overwrite=True)).out,
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
    lap("fuse")
    jobs = config.parallel()
    say(
        f"pretrain + embed: {', '.join(VARIANTS)}: {scale.steps} steps of {scale.batch} each"
        + (f", {jobs} at a time" if jobs > 1 else "")
    )
    tasks = {}
    for name, change in VARIANTS.items():
        slug = _slug(name)
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
            seed=config.seed,
            overwrite=True,
        )
        settings.update({k: v for k, v in change.items() if k != "corpus"})
        tasks[name] = (settings, out / "embeddings" / f"{slug}.safetensors")
    done = _train_all(tasks, jobs, config.threads, lambda name: say(f"trained and embedded: {name}"))
    embeddings: dict[str, Path] = {name: done[name] for name in VARIANTS}
    lap("pretrain + embed")
    for name, baseline in BASELINES.items():
        say(f"embed: {name} baseline")
        embeddings[name] = embed(
            EmbedConfig(
                tiles=tiles,
                baseline=baseline,
                arch=ARCH,
                seed=config.seed,
                out=out / "embeddings" / f"{_slug(name)}.safetensors",
                workers=config.workers,
                device="cpu",
                overwrite=True,
            )
        ).out
        lap("embed")
    say(f"probe: ridge on log(1 + target), spatial blocks of {scale.block_km:g} km in {scale.folds} folds")
    result = probe(
        ProbeConfig(
            target=",".join(LOG_PREFIX + t for t in targets),
            embeddings=tuple(embeddings.values()),
            labels=log_labels,
            out=out / "probe",
            split="spatial",
            block_km=scale.block_km,
            folds=scale.folds,
            log_target="no",
            seed=config.seed,
            overwrite=True,
        )
    )
    # the same folds on the raw values (ridge on raw values, R² in their units), for the notes: it weighs the few
    # dense tiles of the centre far more, and can rank the representations differently
    raw = probe_metrics(
        list(embeddings.values()),
        labels,
        target=targets,
        split="spatial",
        block_km=scale.block_km,
        folds=scale.folds,
        log_target="no",
        seed=config.seed,
    )
    lap("probe")
    table, std = _by_variant(result.table, embeddings)
    original_units, _ = _by_variant(raw, embeddings)
    maps = {
        t.removeprefix(LOG_PREFIX): str(result.out / files["map"])
        for t, files in result.plots.items()
        if "map" in files
    }
    notes = _verdicts(table, targets, "R² of log(1 + target)") + _verdicts(
        original_units, targets, "R² in original units"
    )
    return DemoResult(out, table, maps, result.out, notes, std, seconds, scale, original_units)


def _by_variant(
    rows: list[dict], embeddings: dict[str, Path]
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """The probe's rows as variant -> target -> mean R², and variant -> target -> its std over the folds."""
    by_file: dict[str, dict[str, tuple[float, float]]] = {}
    for row in rows:
        by_file.setdefault(row["embeddings"], {})[row["target"].removeprefix(LOG_PREFIX)] = (
            row["r2_mean"],
            row["r2_std"],
        )
    table, std = {}, {}
    for variant, path in embeddings.items():
        stem = Path(path).with_suffix("").name
        key = next((k for k in by_file if k == stem or k.endswith("/" + stem)), None)
        scores = by_file.get(key, {})
        table[variant] = {t: mean for t, (mean, _) in scores.items()}
        std[variant] = {t: spread for t, (_, spread) in scores.items()}
    return table, std


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


def _verdicts(table: dict[str, dict[str, float]], targets: list[str], what: str) -> list[str]:
    """One line per baseline: the targets on which UrbanLN's mean R² is higher, and those where it is not."""
    ours = table.get("UrbanLN", {})
    notes = []
    for baseline in BASELINES:
        theirs = table.get(baseline, {})
        scored = [t for t in targets if _finite(ours.get(t)) and _finite(theirs.get(t))]
        better = [t for t in scored if ours[t] > theirs[t]]
        worse = [t for t in scored if t not in better]
        notes.append(
            f"{what}, UrbanLN vs {baseline}: higher on {', '.join(better) or 'no target'}"
            + (f"; not on {', '.join(worse)}" if worse else "")
        )
    return notes


def _finite(value) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_").replace("__", "_")
