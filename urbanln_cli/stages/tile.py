"""Stage ``tile``: cut imagery into region tiles (a ``tiles`` dataset artifact).

Jobs are grouped into shards of ``SHARD_SIZE`` tiles. Each shard is rendered
(in this process or in a worker process) straight into an Arrow file in
``<out>.partial/``; a rerun after a crash or Ctrl-C skips finished shards.
Memory stays flat: a worker holds one window and one small write batch.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from urbanln_cli import __version__, artifacts, imagery
from urbanln_cli.errors import InputError, Interrupted, UsageProblem

SHARD_SIZE = 64
WRITE_BATCH = 16  # rows buffered before an Arrow write; bounds memory per worker

Progress = Callable[[int, int], None]


def tile_features():
    from datasets import Features, Image, Value

    return Features(
        {
            "tile_id": Value("string"),
            "image": Image(),
            "image_sha256": Value("string"),  # identity of the stored bytes, so later stages key work by content
            "source": Value("string"),
            "row_off": Value("int64"),
            "col_off": Value("int64"),
            "width": Value("int32"),
            "height": Value("int32"),
            "crs": Value("string"),
            "minx": Value("float64"),
            "miny": Value("float64"),
            "maxx": Value("float64"),
            "maxy": Value("float64"),
            "lon": Value("float64"),
            "lat": Value("float64"),
            "gsd": Value("float32"),
            "group": Value("string"),
            "valid_fraction": Value("float32"),
        }
    )


@dataclass(frozen=True)
class TileConfig:
    inputs: tuple[Path, ...]
    out: Path = Path("tiles")
    size: int = 256
    stride: int | None = None  # default: size (no overlap)
    resize: int | None = None
    format: str = "png"
    min_valid: float = 0.5
    group: str | None = None
    bands: tuple[int, ...] | None = None
    crop: tuple[int, int, int, int] = (0, 0, 0, 0)
    locations: Path | None = None
    percentiles: tuple[float, float] = (2.0, 98.0)
    workers: int | None = None  # default: all cores, at most 8
    overwrite: bool = False
    max_pixels: int = imagery.DEFAULT_MAX_PIXELS  # image files with more pixels are skipped; tiles may not have more

    def check(self) -> None:
        if not self.inputs:
            raise UsageProblem("no input given", hint="urbanln tile city.tif [more.tif folder/ xyz/]")
        if self.size < 8:
            raise UsageProblem(f"--size {self.size} is too small", hint="tiles are at least 8 pixels; 256 is usual")
        if self.stride is not None and not 1 <= self.stride:
            raise UsageProblem(f"--stride {self.stride} must be at least 1")
        if self.resize is not None and self.resize < 8:
            raise UsageProblem(f"--resize {self.resize} is too small")
        if self.format not in ("png", "jpeg"):
            raise UsageProblem(f"--format {self.format!r} is not png or jpeg")
        if not 0.0 <= self.min_valid <= 1.0:
            raise UsageProblem(f"--min-valid {self.min_valid} is not between 0 and 1")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise UsageProblem(f"percentiles {self.percentiles} must satisfy 0 <= low < high <= 100")
        if self.workers is not None and self.workers < 1:
            raise UsageProblem(f"--workers {self.workers} must be at least 1")
        imagery.check_max_pixels(self.max_pixels)
        for option, side in (("--size", self.size), ("--resize", self.resize)):
            if side is not None and side * side > self.max_pixels:
                raise UsageProblem(
                    f"{option} {side} makes tiles of {side * side:,} pixels, over the limit of {self.max_pixels:,} "
                    "(--max-pixels)",
                    hint="tiles are usually 256 to 1024 pixels a side; raise --max-pixels for larger ones",
                )


@dataclass
class TileResult:
    out: Path
    rows: int
    counts: dict[str, int]
    shards: int
    resumed_shards: int
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)


def tile(config: TileConfig, progress: Progress | None = None, run: artifacts.RunInfo | None = None) -> TileResult:
    """Cut ``config.inputs`` into tiles and write the ``tiles`` artifact at ``config.out``."""
    config.check()
    with artifacts.writing(config.out, "tiles", overwrite=config.overwrite, inputs=config.inputs):
        return _tile(config, progress, run)


def _tile(config: TileConfig, progress: Progress | None, run: artifacts.RunInfo | None) -> TileResult:
    stride = config.stride or config.size
    plan = imagery.discover(
        config.inputs,
        size=config.size,
        stride=stride,
        group=config.group,
        bands=config.bands,
        locations=config.locations,
        percentiles=config.percentiles,
    )
    _check_unique_ids(plan)
    options = imagery.RenderOptions(
        config.size, config.resize, config.format, config.min_valid, config.crop, config.max_pixels
    )
    shards = [plan.jobs[i : i + SHARD_SIZE] for i in range(0, len(plan.jobs), SHARD_SIZE)]
    inputs = [artifacts.fingerprint(p) for p in plan.inputs]
    if config.locations:
        inputs.append(artifacts.fingerprint(config.locations))
    store = artifacts.ShardStore(
        config.out,
        {
            "stage": "tiles",
            "urbanln": __version__,
            "inputs": inputs,
            "options": options,
            "stride": stride,
            "group": config.group,
            "bands": config.bands,
            "percentiles": config.percentiles,
            "jobs": len(plan.jobs),
            "shard_size": SHARD_SIZE,
        },
    )
    todo = [i for i in range(len(shards)) if not store.is_done(i)]
    resumed = len(shards) - len(todo)
    pending = set(todo)
    done_tiles = sum(len(shards[i]) for i in range(len(shards)) if i not in pending)
    report = progress or (lambda done, total: None)
    report(done_tiles, len(plan.jobs))

    def finished(n: int) -> None:
        nonlocal done_tiles
        done_tiles += n
        report(done_tiles, len(plan.jobs))

    # Starting a worker costs about a second, so by default each one needs 4+ shards to be worth it.
    workers = config.workers or min(os.cpu_count() or 1, 8, len(todo) // 4)
    workers = min(workers, len(todo))
    try:
        if workers <= 1:
            _render_in_process(plan, options, shards, todo, store, finished)
        else:
            _render_in_pool(plan, options, shards, todo, store, finished, workers)
    except KeyboardInterrupt:
        finished_now = sum(store.is_done(i) for i in range(len(shards)))
        raise Interrupted(
            f"tiling interrupted: {finished_now} of {len(shards)} shards are kept in {store.dir}"
        ) from None

    counts = dict(plan.counts)
    problems = list(plan.problems)
    finished_shards = []
    for i in range(len(shards)):
        shard_report = store.report(i)
        for key, n in shard_report["counts"].items():
            counts[key] = counts.get(key, 0) + n
        problems.extend(shard_report["problems"])
        finished_shards.append((store.path(i), shard_report["rows"]))
    rows = sum(n for _, n in finished_shards)
    if rows == 0:
        store.remove()
        why = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(counts.items()) if k.startswith("skipped_"))
        first = f"; first problem: {problems[0]}" if problems else ""
        raise InputError(
            f"no tiles kept from {len(plan.jobs)} candidates ({why}){first}",
            hint="lower --min-valid (0 keeps every tile), or check the input's nodata value and bands"
            if counts.get("skipped_below_min_valid")
            else f"raise --max-pixels above {config.max_pixels} to keep them, or tile a large TIFF as its own "
            "input to cut it into windows"
            if counts.get("skipped_oversize")
            else "check that the images are complete and readable",
        )
    counts["tiles"] = rows
    counts = {k: v for k, v in counts.items() if v}
    manifest = artifacts.new_manifest(
        "tiles",
        run=run or artifacts.RunInfo.from_config(config),
        inputs=inputs,
        rows=rows,
        counts=counts,
        extra={
            "problems": problems[:100],
            "max_pixels": config.max_pixels,  # stages that decode these tiles allow what this run allowed
            "rasters": [{"path": r.path, "crs": r.crs, "bands": r.bands, "stretch": r.stretch} for r in plan.rasters],
        },
    )
    artifacts.write_sharded_dataset(finished_shards, tile_features(), config.out, manifest, overwrite=config.overwrite)
    store.remove()
    return TileResult(config.out, rows, counts, len(shards), resumed, manifest)


def _check_unique_ids(plan: imagery.Plan) -> None:
    prefixes = [r.prefix for r in plan.rasters] + [p.tile_id for p in plan.pictures]
    seen: set[str] = set()
    for prefix in prefixes:
        if prefix in seen:
            raise UsageProblem(
                f"two inputs would give the same tile ids ({prefix!r})",
                hint="inputs are named by their file or folder name; rename one, or tile them in separate calls",
            )
        seen.add(prefix)


# ---------------------------------------------------------------- shard rendering

_renderer: imagery.Renderer | None = None


def _init_worker(rasters, pictures, options, parent: int | None = None) -> None:
    global _renderer
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and lets running shards finish
    if parent is not None:
        _die_with_parent(parent)
    _renderer = imagery.Renderer(rasters, pictures, options)


def _die_with_parent(parent: int) -> None:
    """End this worker when its parent dies, even by kill -9: else it waits forever on the task
    queue (its own copy of the queue's write end keeps it open), holding the raster open.

    Linux: the kernel sends SIGKILL (prctl PR_SET_PDEATHSIG). Elsewhere: a daemon thread that
    exits the process once it has been re-parented.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) == 0:  # 1 = PR_SET_PDEATHSIG
                if os.getppid() != parent:  # it died before the call
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="urbanln-parent-watch", daemon=True).start()


def _render_shard(index: int, jobs: list, tmp: str, final: str, report_path: str, on_tile=None) -> int:
    """Render one shard into an Arrow stream file and commit it. Returns the number of jobs done.

    Rows go straight to pyarrow in small batches (the schema carries the datasets
    features), which is several times cheaper per row than datasets' ArrowWriter.
    """
    import pyarrow as pa

    assert _renderer is not None
    schema = tile_features().arrow_schema
    counts: dict[str, int] = {}
    problems: list[str] = []
    batch: list[dict] = []
    rows = 0
    try:
        with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for row in _renderer.render_all(jobs):
                if isinstance(row, imagery.Skip):
                    counts[f"skipped_{row.reason}"] = counts.get(f"skipped_{row.reason}", 0) + 1
                    if row.detail:
                        problems.append(row.detail)
                else:
                    batch.append(row)
                    rows += 1
                    if len(batch) >= WRITE_BATCH:
                        writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
                        batch.clear()
                if on_tile:
                    on_tile(1)
            if batch:
                writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
    except BaseException:  # a failed shard (a full disk) is garbage: free its space now, not on the next run
        artifacts.remove(tmp, "leftover")
        raise
    report = {"index": index, "rows": rows, "counts": counts, "problems": problems}
    artifacts.commit_shard(Path(tmp), Path(final), Path(report_path), report)
    return len(jobs)


def _shard_args(store: artifacts.ShardStore, shards, i: int) -> tuple:
    final = store.path(i)
    return i, shards[i], str(final.with_name(final.name + f".tmp-{os.getpid()}")), str(final), str(store.report_path(i))


def _render_in_process(plan, options, shards, todo, store, finished) -> None:
    global _renderer
    _renderer = imagery.Renderer(plan.rasters, plan.pictures, options)
    try:
        for i in todo:
            _render_shard(*_shard_args(store, shards, i), on_tile=finished)
    finally:
        _renderer.close()
        _renderer = None


def _render_in_pool(plan, options, shards, todo, store, finished, workers: int) -> None:
    # spawn, not fork: the parent may hold threads (rich's progress refresh) whose locks fork would copy.
    context = multiprocessing.get_context("spawn")
    pool = cf.ProcessPoolExecutor(
        workers, context, initializer=_init_worker, initargs=(plan.rasters, plan.pictures, options, os.getpid())
    )
    try:
        futures = [pool.submit(_render_shard, *_shard_args(store, shards, i)) for i in todo]
        for future in cf.as_completed(futures):
            finished(future.result())
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
