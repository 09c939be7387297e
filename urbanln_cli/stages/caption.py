"""Stage ``caption``: caption every tile with several VLMs (a ``captions`` artifact).

Scheduling: one model at a time across all tiles, spread over every host, so
each GPU keeps one model loaded instead of swapping models per tile. Each host
gets ``concurrency`` requests in flight (Ollama's parallel slots). ``hf:`` models
run in this process instead, ``batch_size`` tiles per ``generate``
(captioners.hf_batch); one run may mix Ollama, ``hf:`` and ``sim:`` models.

Every finished (tile, model) record goes to an fsynced journal in
``<out>.partial/`` first, keyed by (tile_id, image hash, model digest, prompt
hash, options hash). A rerun reuses every record whose key still matches, so
after Ctrl-C or ``kill -9`` only the requests in flight are redone, and a
changed prompt or model digest is new work. The dataset is assembled atomically
at the end: one row per (tile, model).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import hashlib
import json
import math
import operator
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from urbanln_cli import artifacts, manifest_fields
from urbanln_cli.captioners import Backend, GenerationOptions, ModelInfo, TileInfo, content_problem, fit_image
from urbanln_cli.captioners.aliases import model_kind
from urbanln_cli.captioners.runner import Outcome, Request, RetryPolicy, run_requests
from urbanln_cli.errors import InputError, Interrupted, OutputExistsError, UsageProblem
from urbanln_cli.imagery import max_pixels_of
from urbanln_cli.journal import Journal, read_records
from urbanln_cli.prompts import Prompt, load_prompt
from urbanln_cli.redact import public_host


@dataclass(frozen=True)
class CaptionConfig:
    tiles: Path | None = Path("tiles")  # None: only with imports (keep the files' ids)
    out: Path = Path("captions")
    models: tuple[str, ...] = ("llava:7b", "qwen2.5vl:7b")  # full tags; see captioners.aliases
    hosts: tuple[str, ...] = ("http://127.0.0.1:11434",)
    concurrency: int = 4  # requests in flight per host
    timeout: float = 300.0  # seconds, per request
    retries: int = 4  # for timeouts, dropped connections, 429, 5xx
    content_retries: int = 2  # for empty output, refusals, runaway repetition
    backoff: float = 0.5  # first retry delay in seconds; doubles, with jitter
    prompt: Path | None = None  # None: the shipped urban-v1 prompt
    options: GenerationOptions = GenerationOptions()
    image_size: int = 672  # longest side sent to the model
    shard: tuple[int, int] = (0, 1)  # (i, n): this machine's part of the tiles
    stream: bool = False
    retry_failed: bool = False
    limit: int | None = None  # caption only the first N tiles of the shard
    overwrite: bool = False
    scene: Path | None = None  # sim: models only; default: scene.json beside the tiles' source raster
    # captions made elsewhere (JSONL, CSV or Parquet files), instead of captioning; see captioners.imported.
    # With imports, tiles=None keeps the files' ids instead of matching them to a tiles artifact.
    imports: tuple[Path, ...] = ()
    trusted: bool = False  # imported captions are human-checked: fuse only cleans them
    batch_size: int = 8  # hf: models only: tiles per generate call
    device: str = "auto"  # hf: models only: auto (this torchrun rank's GPU, or cuda:0, or cpu), cpu, cuda:1, ...

    def uses(self, kind: str) -> bool:
        """Whether any model is of this kind ('ollama', 'hf' or 'sim')."""
        return any(model_kind(m) == kind for m in self.models)

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy(self.concurrency, self.retries, self.content_retries, self.backoff)

    def check(self) -> None:
        if self.trusted and not self.imports:
            raise UsageProblem(
                "--trusted marks imported captions as human-checked: use it with --import",
                hint="e.g. urbanln caption tiles --import captions.jsonl --trusted",
            )
        if self.imports:
            return  # no model, server or request option takes part
        if self.tiles is None:
            raise UsageProblem(
                "captioning needs the tiles artifact", hint="pass the tiles folder made by `urbanln tile`"
            )
        i, n = self.shard
        if not (n >= 1 and 0 <= i < n):
            raise UsageProblem(f"--shard {i}/{n} is not i/n with 0 <= i < n")
        if self.concurrency < 1 or self.retries < 0 or self.content_retries < 0:
            raise UsageProblem("--concurrency must be at least 1, and retries at least 0")
        if self.batch_size < 1:
            raise UsageProblem(f"--batch-size {self.batch_size} must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise UsageProblem(f"--limit {self.limit} must be at least 1")
        if (
            not (math.isfinite(self.timeout) and self.timeout > 0)
            or self.options.num_predict < 1
            or self.image_size < 32
        ):
            raise UsageProblem("--timeout, --num-predict and --image-size must be positive (image size at least 32)")
        if not self.models:
            raise UsageProblem("no models given", hint="e.g. --models llava,qwen-vl")
        if self.uses("ollama"):  # the simulated panel and hf: models need no server
            if not self.hosts:
                raise UsageProblem("no host given", hint="--host http://127.0.0.1:11434")
            from urbanln_cli.captioners.ollama import check_hosts

            check_hosts(self.hosts)


@dataclass
class CaptionResult:
    out: Path
    rows: int
    counts: dict[str, int]
    nothing_to_do: bool = False
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # for people (the CLI prints them on stderr)


def in_shard(tile_id: str, shard: tuple[int, int]) -> bool:
    """Stable across machines and runs: a hash of the tile id, not Python's hash()."""
    i, n = shard
    return n == 1 or int(hashlib.sha256(tile_id.encode()).hexdigest()[:12], 16) % n == i


def options_that_change_output(config: CaptionConfig) -> dict[str, Any]:
    """The options hashed into every record key (keep_alive only changes how long a model stays loaded)."""
    return {k: v for k, v in asdict(config.options).items() if k != "keep_alive"} | {"image_size": config.image_size}


KEY_FIELDS = ("tile_id", "image_sha256", "model", "model_digest", "prompt_sha256", "options_sha256")


def record_key(record: dict[str, Any]) -> tuple[str, ...]:
    """What identifies a caption's work: the tile, its image bytes, the model (tag and version), prompt and options.

    The tag counts as well as the digest: llava:7b and llava:latest are often one blob, but two rows.
    """
    return tuple(record[f] for f in KEY_FIELDS)


def caption(
    config: CaptionConfig,
    progress: Callable[..., None] | None = None,
    run: artifacts.RunInfo | None = None,
    backend: Backend | None = None,
) -> CaptionResult:
    """Caption the tiles of ``config.tiles`` with every model; write the captions artifact."""
    config.check()
    inputs = (*((config.tiles,) if config.tiles is not None else ()), *config.imports)
    # overwrite=True here: an existing captions artifact is extended or, with --overwrite, replaced (see _run)
    with artifacts.writing(config.out, "captions", overwrite=True, inputs=inputs):
        if config.imports:
            from urbanln_cli.stages.caption_import import import_captions  # it imports this module

            return import_captions(config, progress or (lambda *a, **k: None), run)
        return _caption(config, progress, run, backend)


def _caption(
    config: CaptionConfig, progress: Callable[..., None] | None, run: artifacts.RunInfo | None, backend: Backend | None
) -> CaptionResult:
    tiles_ds, tiles_manifest = artifacts.read_dataset(config.tiles, "tiles")
    prompt = load_prompt(config.prompt)
    backends = {kind: backend for kind in ("ollama", "hf", "sim")} if backend is not None else _backends_for(config)
    job = _Job(config, tiles_ds, tiles_manifest, prompt, backends, progress or (lambda *a, **k: None), run)
    try:
        return asyncio.run(job.run())
    except KeyboardInterrupt:
        raise Interrupted(
            f"captioning interrupted; {job.finished} captions are kept in {artifacts.partial_dir(config.out)}"
        ) from None


def _backends_for(config: CaptionConfig) -> dict[str, Backend]:
    """A backend for each kind of model in the run: Ollama servers, hf: models in this process, the simulated panel."""
    backends: dict[str, Backend] = {}
    if config.uses("sim"):
        backends["sim"] = _sim_backend(config)
    if config.uses("hf"):
        from urbanln_cli.captioners.hf import HfBackend

        backends["hf"] = HfBackend(config.device, config.batch_size)
    if config.uses("ollama"):
        from urbanln_cli.captioners.ollama import OllamaBackend

        backends["ollama"] = OllamaBackend(config.hosts, timeout=config.timeout, stream=config.stream)
    return backends


def _sim_backend(config: CaptionConfig) -> Backend:
    """The simulated panel for sim:<persona> models of a synthetic city."""
    from urbanln_cli.captioners.sim import SimBackend, scene_for_tiles

    scene = config.scene or scene_for_tiles(config.tiles)
    if scene is None:
        raise UsageProblem(
            "sim: models need the scene of a synthetic city",
            hint="pass --scene city/scene.json (written by `urbanln synth city`), "
            "or use Ollama or hf: models for real imagery",
        )
    return SimBackend(scene)


class _Job:
    def __init__(
        self,
        config: CaptionConfig,
        tiles_ds,
        tiles_manifest,
        prompt: Prompt,
        backends: dict[str, Backend],
        progress,
        run,
    ):
        self.config, self.prompt, self.backends, self.progress, self.run_info = config, prompt, backends, progress, run
        self.tiles_manifest = tiles_manifest
        self.max_pixels = max_pixels_of(tiles_manifest)  # a tile over it fails its request (bad_image), never decoded
        columns = tiles_ds.column_names
        self.tile_ids: list[str] = tiles_ds.data.column("tile_id").to_pylist()
        self.gsd: list[float | None] = (
            tiles_ds.data.column("gsd").to_pylist() if "gsd" in columns else [None] * len(self.tile_ids)
        )
        self.images = tiles_ds.data.column("image")
        geometry = [
            tiles_ds.data.column(c).to_pylist() if c in columns else [None] * len(self.tile_ids)
            for c in ("crs", "minx", "miny", "maxx", "maxy")
        ]
        self.geometry = list(zip(*geometry))
        self.image_sha = (
            tiles_ds.data.column("image_sha256").to_pylist()
            if "image_sha256" in columns
            else [hashlib.sha256(self._raw_image(i)).hexdigest() for i in range(len(self.tile_ids))]
        )
        self.indices = [i for i, t in enumerate(self.tile_ids) if in_shard(t, config.shard)][: config.limit]
        self.options_json = options_that_change_output(config)
        self.options_sha = hashlib.sha256(json.dumps(self.options_json, sort_keys=True).encode()).hexdigest()
        self.records: dict[str, dict[str, Any]] = {}
        self.finished = 0
        self.failed = 0
        self.reused = 0

    def _raw_image(self, i: int) -> bytes:
        return self.images[i]["bytes"].as_py()

    def image(self, i: int) -> bytes:
        """The tile's bytes, shrunk to ``image_size`` on the longest side when larger."""
        return fit_image(self._raw_image(i), self.config.image_size, self.max_pixels)

    def tile_info(self, i: int) -> TileInfo:
        crs, *bounds = self.geometry[i]
        return TileInfo(self.tile_ids[i], crs or "", tuple(math.nan if b is None else b for b in bounds), self.gsd[i])

    def key(self, i: int, info: ModelInfo) -> tuple[str, ...]:
        return (self.tile_ids[i], self.image_sha[i], info.tag, info.digest, self.prompt.sha256, self.options_sha)

    def backend(self, model: str) -> Backend:
        return self.backends[model_kind(model)]

    async def run(self) -> CaptionResult:
        config = self.config
        distinct = list({id(b): b for b in self.backends.values()}.values())
        try:
            infos: dict[str, ModelInfo] = {}
            for backend in distinct:  # every model is checked before any tile
                mine = [m for m in config.models if self.backend(m) is backend]
                if mine:
                    infos |= await backend.preflight(mine)
                check_tiles = getattr(backend, "check_tiles", None)
                if mine and check_tiles is not None:
                    check_tiles([self.tile_info(i) for i in self.indices])
            return await self._run(infos)
        finally:
            for backend in distinct:
                await backend.aclose()

    async def _run(self, infos: dict[str, ModelInfo]) -> CaptionResult:
        config = self.config
        prompt_sha, options_sha, ids, shas = self.prompt.sha256, self.options_sha, self.tile_ids, self.image_sha
        digests = [(m, infos[m].digest) for m in config.models]
        keys = [(i, m, (ids[i], shas[i], m, d, prompt_sha, options_sha)) for i in self.indices for m, d in digests]
        plan_sha = hashlib.sha256("\n".join("|".join(k) for _, _, k in keys).encode()).hexdigest()
        existing = artifacts.read_manifest(config.out) if config.out.exists() else None
        if config.out.exists():
            artifacts.check_artifact(config.out, "captions")
            try:
                same = manifest_fields.field(existing, config.out, "plan_sha256", str) == plan_sha
                failed = manifest_fields.field(existing, config.out, "counts.failed", int, 0)
                rows = manifest_fields.field(existing, config.out, "rows", int, required=True)
                counts = manifest_fields.field(existing, config.out, "counts", dict, {})
            except InputError as exc:
                if not config.overwrite:
                    raise InputError(
                        exc.message, hint="pass --overwrite to replace it (the captions in it are reused)"
                    ) from None
                same = False  # replaced; its rows still count below, keyed by what made them
            if same and not (config.retry_failed and failed):
                return CaptionResult(config.out, rows, counts, True, existing)
            if not same and not config.overwrite:
                raise OutputExistsError(f"{config.out} holds captions of other tiles, models, prompt or options")
            self._seed_from_output(config.out)
        journal_path = artifacts.partial_dir(config.out) / "journal.jsonl"
        with _no_gc():  # 100k small dicts would trigger many full collections for nothing
            names = list(caption_features())
            name_set = set(names)
            for record in read_records(journal_path):
                if record.keys() != name_set:  # written by an older urbanln (or garbled): fill the missing columns
                    record = {name: record.get(name) for name in names}
                self.records[record_key(record)] = record
        todo: dict[str, list[int]] = {model: [] for model in config.models}
        for i, model, key in keys:
            if self._done(key):
                self.reused += 1
            else:
                todo[model].append(i)
        total = sum(len(v) for v in todo.values())
        self.progress(0, total, failed=0)
        journal = Journal(journal_path)
        try:
            for model in config.models:
                if todo[model]:
                    await self._caption_model(infos[model], todo[model], journal, total)
        finally:
            journal.close()
        with _no_gc():
            return self._assemble(infos, keys, plan_sha)

    def _hf_settings(self) -> dict[str, Any] | None:
        """How hf: models ran (device, dtype, batch size, out-of-memory halvings), or None without them."""
        backend = self.backends.get("hf")
        if not self.config.uses("hf") or backend is None:
            return None
        return {
            "device": getattr(backend, "device", None),
            "dtype": getattr(backend, "dtype_name", None),
            "batch_size": self.config.batch_size,
            "oom_halvings": getattr(backend, "oom_halvings", 0),
        }

    def _done(self, key: str) -> bool:
        record = self.records.get(key)
        return record is not None and (
            record.get("error") is None or not self.config.retry_failed or record.get("_this_run")
        )

    def _seed_from_output(self, out: Path) -> None:
        ds, _ = artifacts.read_dataset(out, "captions", columns=KEY_FIELDS)
        for row in ds.to_list():
            self.records[record_key(row)] = row

    # ------------------------------------------------------------ the work

    async def _caption_model(self, info: ModelInfo, todo: list[int], journal: Journal, total: int) -> None:
        config = self.config

        def request_for(i: int) -> Request:
            return Request(lambda: self.image(i), self.prompt.render(self.gsd[i]), self.tile_info(i))

        def finish(i: int, outcome: Outcome) -> None:
            reply = outcome.reply
            record = {
                "tile_id": self.tile_ids[i],
                "model": info.tag,
                "model_digest": info.digest,
                "prompt_id": self.prompt.id,
                "prompt_sha256": self.prompt.sha256,
                "options_sha256": self.options_sha,
                "image_sha256": self.image_sha[i],
                "caption": outcome.text,
                "error": outcome.error[1] if outcome.error else None,
                "error_class": outcome.error[0] if outcome.error else None,
                "attempts": outcome.requests,
                "latency_s": outcome.latency_s,
                "prompt_tokens": getattr(reply, "prompt_tokens", None),
                "output_tokens": getattr(reply, "output_tokens", None),
                "host": outcome.host,
                "sentence_labels": _labels_json(reply),
            }
            journal.append(record)
            self.records[record_key(record)] = {**record, "_this_run": True}
            self.finished += 1
            self.failed += outcome.error is not None
            self.progress(self.finished, total, failed=self.failed)

        backend = self.backend(info.tag)
        for other in self.backends.values():  # one model in memory: an hf: model done with leaves the GPU
            if other is not backend and hasattr(other, "unload"):
                other.unload()
        work = (backend, info.tag, todo, request_for, finish)
        shared = {"policy": config.policy, "options": config.options, "content_problem": content_problem}
        if getattr(backend, "batched", False):  # hf: models: whole batches in this process
            from urbanln_cli.captioners.hf_batch import run_batches

            run_batches(*work, **shared, batch_size=config.batch_size)
        else:
            await run_requests(*work, **shared, what="captions")

    # ------------------------------------------------------------ output

    def _assemble(self, infos: dict[str, ModelInfo], keys, plan_sha: str) -> CaptionResult:
        import datasets
        import pyarrow as pa

        config = self.config
        features = caption_features()
        # Columns straight to Arrow in one C-level pass: Dataset.from_list infers and hashes row by row.
        pick = operator.itemgetter(*features)
        columns = list(zip(*(pick(self.records[k]) for _, _, k in keys))) or [[] for _ in features]
        table = pa.Table.from_arrays(
            [pa.array(c, type=f.type) for c, f in zip(columns, features.arrow_schema)], schema=features.arrow_schema
        )
        error_classes = (
            collections.Counter(columns[list(features).index("error_class")]) if keys else collections.Counter()
        )
        failed = len(keys) - error_classes.pop(None, 0)
        counts = {
            "captions": len(keys) - failed,
            "failed": failed,
            "reused": self.reused,
            "captioned_now": self.finished,
        }
        counts |= {f"failed_{c}": n for c, n in error_classes.items()}
        counts = {k: v for k, v in counts.items() if v or k in ("captions", "failed", "reused")}
        ds = datasets.Dataset(table)
        manifest = artifacts.new_manifest(
            "captions",
            run=self.run_info or artifacts.RunInfo.from_config(config),
            inputs=[
                {
                    "path": str(config.tiles),
                    "stage": "tiles",
                    "artifact_id": manifest_fields.field(self.tiles_manifest, config.tiles, "artifact_id", str),
                }
            ],
            rows=len(keys),
            counts=counts,
            models={m: {"digest": infos[m].digest, "capabilities": list(infos[m].capabilities)} for m in config.models},
            extra={
                "hosts": [public_host(h) for h in config.hosts] if config.uses("ollama") else [],
                "hf": self._hf_settings(),
                "prompt": {"id": self.prompt.id, "sha256": self.prompt.sha256, "text": self.prompt.text},
                "options": self.options_json | {"keep_alive": config.options.keep_alive},
                "shard": f"{config.shard[0]}/{config.shard[1]}",
                "tiles": len(self.indices),
                "plan_sha256": plan_sha,
                "scheduling": "one model at a time across all tiles; each host gets --concurrency requests in flight; "
                "hf: models run --batch-size tiles per generate in this process",
                "scene": str(config.scene) if config.scene else None,
            },
        )
        artifacts.write_dataset(ds, config.out, manifest, overwrite=True)  # the plan check above guards real overwrites
        artifacts.remove(artifacts.partial_dir(config.out), "partial")  # the artifact holds every record now
        return CaptionResult(config.out, len(keys), counts, False, manifest)


# ---------------------------------------------------------------- imported captions (see caption_import)

IMPORT_PROMPT_ID = "imported"
MOST_UNMATCHED = 0.5  # a file with more than this share of rows matching no tile is not about these tiles


@contextlib.contextmanager
def _no_gc():
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _labels_json(reply) -> str | None:
    """The simulated panel's per-sentence truth labels, as JSON; None for real models."""
    labels = getattr(reply, "extra", {}).get("sentence_labels") if reply is not None else None
    return json.dumps(labels) if labels is not None else None


def caption_features(trusted: bool = False):
    """The captions columns; ``trusted`` adds the boolean ``trusted`` column of imported captions (human-checked)."""
    from datasets import Features, Value

    extra = {"trusted": Value("bool")} if trusted else {}
    return Features(
        {
            "tile_id": Value("string"),
            "model": Value("string"),
            "model_digest": Value("string"),
            "prompt_id": Value("string"),
            "prompt_sha256": Value("string"),
            "options_sha256": Value("string"),
            "image_sha256": Value("string"),
            "caption": Value("string"),
            "error": Value("string"),
            "error_class": Value("string"),
            "attempts": Value("int32"),
            "latency_s": Value("float32"),
            "prompt_tokens": Value("int32"),
            "output_tokens": Value("int32"),
            "host": Value("string"),
            # sim: models only: [{"text", "label"}] per sentence, label "true" or the error made. Never a training
            # input.
            "sentence_labels": Value("string"),
            **extra,
        }
    )
