"""Stage ``pretrain``: long-text CLIP with momentum self-distillation (a ``run`` model folder).

The model comes from ``urbanln_cli.models``: an open_clip CLIP stretched to 248
text positions, an EMA teacher with feature queues, and the UrbanLN loss. This
module is the loop around it: data, schedule, checkpoints, exact resume, DDP.

Multi-GPU and multi-node runs go through torchrun, which sets RANK/WORLD_SIZE:
``torchrun --nproc_per_node 8 -m urbanln_cli pretrain …``. ``--batch-size`` is
the global batch; each rank takes its share, and only rank 0 writes.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from urbanln_cli import artifacts
from urbanln_cli.errors import InputError, Interrupted, OutputExistsError, UrbanlnError, UsageProblem
from urbanln_cli.training.loop_state import cosine_with_warmup, get_rng_state, set_rng_state, truncate_metrics
from urbanln_cli.training.run_folders import RUNS, is_run, point_latest, run_to_resume

log = logging.getLogger(__name__)


class TrainingDiverged(UrbanlnError):
    """The loss or the gradients became NaN or infinite: exit code 1, nothing exported."""


@dataclass(frozen=True)
class PretrainConfig:
    tiles: Path = Path("tiles")
    corpus: Path = Path("corpus")
    out: Path | None = None  # default runs/<name>
    name: str | None = None  # default: the start time
    arch: str = "ViT-B-16"
    pretrained: str = "openai"
    epochs: int = 20
    batch_size: int = 64  # global, over all ranks
    lr: float = 1e-5
    weight_decay: float = 0.1
    warmup_steps: int = 100
    grad_clip: float = 1.0
    context_length: int = 248  # 77 trains without the stretch (an ablation)
    keep: int = 20
    short_weight: float = 0.1
    distill_weight: float = 0.5
    momentum: float = 0.995
    queue_size: int = 4096
    stage1_epochs: int = 1
    consensus_prob: float = 0.7
    workers: int = 2
    device: str = "auto"
    seed: int = 0
    save_every: int = 500
    log_every: int = 10
    export: str = "student"
    max_steps: int | None = None  # stop early (tests, smoke runs); the schedule still spans all epochs
    resume: bool = False  # with no --name/-o: continue runs/latest (a named folder always resumes)
    overwrite: bool = False

    def check(self) -> None:
        numbers = {
            k: getattr(self, k)
            for k in ("lr", "weight_decay", "grad_clip", "short_weight", "distill_weight", "momentum", "consensus_prob")
        }
        bad = [k for k, v in numbers.items() if not math.isfinite(v)]
        if bad:
            raise UsageProblem(f"--{bad[0].replace('_', '-')} must be a finite number, not {numbers[bad[0]]}")
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0:
            raise UsageProblem("--epochs must be at least 1, --batch-size at least 2, --lr positive")
        if self.max_steps is not None and self.max_steps < 1:
            raise UsageProblem("--max-steps must be at least 1")
        if self.name is not None and (self.name in ("", ".", "..") or "/" in self.name or os.sep in self.name):
            raise UsageProblem(
                f"--name {self.name!r} must be one folder name, without '/' or '..'",
                hint="the run goes to runs/NAME; use -o PATH for another place",
            )
        if self.name == "latest":
            raise UsageProblem(
                "--name latest is taken: runs/latest names the last finished run", hint="choose another --name"
            )
        if self.resume and self.overwrite:
            raise UsageProblem("--resume continues a run and --overwrite starts one again: pass one of them")
        if self.queue_size % self.batch_size:
            raise UsageProblem(
                f"--queue-size {self.queue_size} must be a multiple of --batch-size {self.batch_size}",
                hint="the queue is refilled one global batch at a time",
            )
        if not 0 <= self.consensus_prob <= 1 or not 0 <= self.distill_weight <= 1:
            raise UsageProblem("--consensus-prob and --distill-weight are between 0 and 1")
        if self.export not in ("student", "teacher"):
            raise UsageProblem(f"--export {self.export!r} is not student or teacher")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise UsageProblem(f"--device {self.device!r} is not auto, cpu or cuda")


@dataclass
class PretrainResult:
    out: Path
    steps: int
    resumed_from: int
    nothing_to_do: bool = False
    final: dict[str, float] = field(default_factory=dict)
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)


def run_folder(config: PretrainConfig) -> Path:
    if config.out is not None:
        return Path(config.out)
    if config.resume and config.name is None:
        return run_to_resume()
    name = config.name or _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return RUNS / name


def pretrain(
    config: PretrainConfig, progress: Callable[..., None] | None = None, run: artifacts.RunInfo | None = None
) -> PretrainResult:
    """Train (or resume) the run in ``run_folder(config)``; rank 0 holds the folder's lock."""
    config.check()
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and config.out is None and config.name is None and not config.resume:
        raise UsageProblem(
            "under torchrun every process must write the same run folder, and a name from the clock may differ",
            hint="name the run with --name or -o",
        )
    out = run_folder(config)
    if int(os.environ.get("RANK", 0)) != 0:
        return _pretrain(config, progress, run)
    _guard(out, config)
    with artifacts.output_lock(out):
        _guard(out, config)
        artifacts.remove_leftovers(out)
        return _pretrain(config, progress, run)


def _guard(out: Path, config: PretrainConfig) -> None:
    """Write only into a new or empty folder or a run folder; never an input, ``.``, home or ``/``."""
    artifacts.guard_path(out, inputs=(config.tiles, config.corpus))
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not is_run(out))):
        raise OutputExistsError(
            f"{out} exists and is not an urbanln run folder, so pretrain will not write into it",
            hint="choose another --name/-o, or remove it yourself",
        )


def _pretrain(
    config: PretrainConfig, progress: Callable[..., None] | None, run: artifacts.RunInfo | None
) -> PretrainResult:
    import torch.distributed as dist

    rank, world, local_rank = (
        int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0))
    )
    from urbanln_cli.models.step import pick_device

    device = pick_device(config.device, local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if config.batch_size % world:
        raise UsageProblem(f"--batch-size {config.batch_size} must be divisible by the {world} processes")
    from urbanln_cli.training.data import worker_errors

    try:
        with worker_errors():  # a damaged tile decoded in a DataLoader worker: its one line, not the worker's traceback
            return _Trainer(config, device, rank, world, progress or (lambda *a, **k: None), run).run()
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


class _Trainer:
    def __init__(self, config: PretrainConfig, device, rank: int, world: int, progress, run_info):
        self.config, self.device, self.rank, self.world = config, device, rank, world
        self.progress, self.run_info = progress, run_info
        self.out = run_folder(config)
        self.checkpoints = self.out / "checkpoints"

    # ------------------------------------------------------------ setup

    def _data(self):
        tiles, tiles_manifest = artifacts.read_dataset(self.config.tiles, "tiles")
        corpus, corpus_manifest = artifacts.read_dataset(self.config.corpus, "corpus")
        if corpus.num_rows == 0:
            raise InputError(
                f"{self.config.corpus} is empty", hint="check the fuse step's counts with `urbanln inspect`"
            )
        rows = {t: i for i, t in enumerate(tiles.data.column("tile_id").to_pylist())}
        corpus_ids = corpus.data.column("tile_id").to_pylist()
        missing = [t for t in corpus_ids if t not in rows]
        if missing:
            raise InputError(
                f"{len(missing)} of {len(corpus_ids)} corpus tiles are not in {self.config.tiles} "
                f"(e.g. {missing[0]!r})",
                hint="pass the tiles the corpus was captioned from with --tiles",
            )
        if corpus.num_rows < self.config.batch_size:
            raise UsageProblem(
                f"the corpus has {corpus.num_rows} tiles, fewer than --batch-size {self.config.batch_size}",
                hint="lower --batch-size",
            )
        columns = corpus.column_names
        shorts = (
            corpus.data.column("caption_short").to_pylist() if "caption_short" in columns else [None] * corpus.num_rows
        )
        candidates = (
            corpus.data.column("candidates").to_pylist() if "candidates" in columns else [None] * corpus.num_rows
        )
        from urbanln_cli.training.data import candidates_of

        parsed = []
        for tile_id, value in zip(corpus_ids, candidates):
            try:
                parsed.append(candidates_of(value))
            except ValueError as exc:
                raise InputError(
                    f"corpus row {tile_id!r}: cannot read its candidates ({exc})",
                    hint="candidates are a list of {model, caption, score}, or its JSON",
                ) from None
        return (
            tiles,
            [rows[t] for t in corpus_ids],
            corpus.data.column("caption").to_pylist(),
            shorts,
            parsed,
            tiles_manifest,
            corpus_manifest,
        )

    def _plan(self, tiles_manifest, corpus_manifest, arch_config) -> dict[str, Any]:
        """What must not change under a resume: the data and the architecture."""
        keep = (
            "arch",
            "context_length",
            "keep",
            "batch_size",
            "queue_size",
            "seed",
            "epochs",
            "lr",
            "warmup_steps",
            "weight_decay",
            "stage1_epochs",
            "distill_weight",
            "short_weight",
            "momentum",
            "consensus_prob",
        )
        return {
            "tiles": tiles_manifest.get("artifact_id"),
            "corpus": corpus_manifest.get("artifact_id"),
            "arch_config": arch_config,
            **{k: getattr(self.config, k) for k in keep},
        }

    # ------------------------------------------------------------ the loop

    def run(self) -> PretrainResult:
        import torch
        import torch.distributed as dist
        from torch.utils.data import DataLoader

        from urbanln_cli.imagery import max_pixels_of
        from urbanln_cli.models import (
            UrbanLNStep,
            create_model,
            export_open_clip,
            parameter_groups,
            stretch_text_positions,
        )
        from urbanln_cli.models.longclip import long_tokenizer as long_tokenizer_for
        from urbanln_cli.models.step import distill_alpha
        from urbanln_cli.training import checkpoint
        from urbanln_cli.training.data import CaptionedTiles, EpochSampler

        config = self.config
        tiles, image_rows, captions, shorts, candidates, tiles_manifest, corpus_manifest = self._data()
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        model, preprocess_train, _, _ = create_model(config.arch, config.pretrained, device=str(self.device))
        arch_config = getattr(model, "urbanln_model_cfg", {})
        plan = self._plan(tiles_manifest, corpus_manifest, arch_config)
        steps_per_epoch = len(captions) // config.batch_size
        total_steps = steps_per_epoch * config.epochs
        stop_at = min(total_steps, config.max_steps or total_steps)
        existing = self._check_existing(plan, stop_at)
        if isinstance(existing, PretrainResult):
            return existing
        if self.rank == 0:
            if existing == "restart":
                artifacts.remove(self.out, "run")
            self._start_folder(plan)
        self._barrier()  # the other ranks read the checkpoints only once rank 0 has set the folder up
        if config.context_length != model.context_length:  # 77 keeps CLIP's own table: the no-stretch ablation
            stretch_text_positions(model, config.context_length, config.keep)
        model.to(self.device).train()
        cuda = self.device.type == "cuda"
        step_module = UrbanLNStep(
            model,
            batch_size=config.batch_size,
            queue_size=config.queue_size,
            momentum=config.momentum,
            distill_weight=config.distill_weight,
            short_weight=config.short_weight,
            device=self.device,
            dtype=torch.bfloat16 if cuda else None,
        ).to(self.device)
        trainable = step_module
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            # teacher and queues are buffers or frozen: no gradient sync, and ranks keep them identical themselves
            trainable = DistributedDataParallel(
                step_module, device_ids=[self.device.index] if cuda else None, broadcast_buffers=False
            )
        optimizer = torch.optim.AdamW(
            parameter_groups(model, config.weight_decay), lr=config.lr, betas=(0.9, 0.98), eps=1e-6, fused=cuda
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(config.warmup_steps, total_steps))

        step, resumed_from = 0, 0
        last = checkpoint.latest(self.checkpoints)
        if last is not None:
            state = checkpoint.load(last)
            try:
                step_module.load_state_dict(state["step_module"])
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
                set_rng_state(state["rng"], cuda)
                step = resumed_from = int(state["progress"]["step"])
            except (KeyError, TypeError, ValueError, RuntimeError) as exc:
                raise InputError(
                    f"checkpoint {last} does not fit this run: {str(exc).splitlines()[0][:200]}",
                    hint="remove that checkpoint folder to resume from the one before",
                ) from None
            if self.rank == 0:
                truncate_metrics(self.out / "metrics.jsonl", step)  # steps after the checkpoint are run again

        long_tokenizer = long_tokenizer_for(config.arch, config.context_length)
        short_tokenizer = long_tokenizer_for(config.arch, 77)  # short captions at their own length: a cheaper branch
        dataset = CaptionedTiles(
            tiles.data.column("image"),
            image_rows,
            captions,
            shorts,
            candidates,
            preprocess_train,
            long_tokenizer,
            short_tokenizer,
            config.consensus_prob,
            config.seed,
            max_pixels_of(tiles_manifest),
        )
        local_batch = config.batch_size // self.world
        if config.short_weight > 0 and local_batch <= step_module.short_caption.components + 1:
            log.warning(
                "the short-caption branch keeps %d principal components over each process's batch; with %d "
                "tiles per process it reconstructs the features unchanged (use --batch-size of at least %d)",
                step_module.short_caption.components,
                local_batch,
                (step_module.short_caption.components + 2) * self.world,
            )
        self.progress(step, stop_at, loss=None)
        metrics = self.out / "metrics.jsonl"
        last_terms: dict[str, float] = {}
        nonfinite = torch.zeros(
            (), dtype=torch.bool, device=self.device
        )  # any non-finite loss or gradient since the last check

        def check_finite() -> None:
            """Collective under DDP: every rank stops together."""
            flag = nonfinite.to(torch.float32)
            if self.world > 1:
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag.item():
                last_good = checkpoint.latest(self.checkpoints)
                kept = (
                    f"the last good checkpoint ({last_good.name}) is kept" if last_good else "no checkpoint was written"
                )
                raise TrainingDiverged(
                    f"the loss became NaN or infinite before step {step}; nothing was exported, and {kept}",
                    hint=f"lower --lr (now {config.lr:g}) and start again with --overwrite, or check the corpus",
                )

        def save() -> None:
            check_finite()  # never a checkpoint of broken weights
            if self.rank == 0:
                checkpoint.save(
                    self.checkpoints,
                    step,
                    {
                        "step_module": step_module.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "rng": get_rng_state(cuda),
                        "progress": {"step": step, "epoch": step // steps_per_epoch},
                    },
                )

        in_step = False  # a Ctrl-C inside a step leaves teacher/queues ahead of the optimizer: keep the last checkpoint
        try:
            while step < stop_at:
                epoch, in_epoch = divmod(step, steps_per_epoch)
                dataset.set_epoch(epoch)
                sampler = EpochSampler(
                    len(dataset),
                    config.batch_size,
                    config.seed,
                    epoch,
                    in_epoch * config.batch_size,
                    self.rank,
                    self.world,
                )
                loader = DataLoader(
                    dataset,
                    batch_size=local_batch,
                    sampler=sampler,
                    num_workers=config.workers,
                    drop_last=True,
                    pin_memory=cuda,
                )
                started = time.perf_counter()
                for images, long_tokens, short_tokens, ids in loader:
                    if epoch < config.stage1_epochs:
                        alpha = 0.0  # stage 1: align long and short captions while the teacher warms up
                    else:
                        alpha = distill_alpha(
                            config.distill_weight, epoch - config.stage1_epochs, step % steps_per_epoch, steps_per_epoch
                        )
                    in_step = True
                    terms = trainable(images, long_tokens, short_tokens, ids, alpha=alpha)
                    optimizer.zero_grad(set_to_none=True)
                    terms["loss"].backward()
                    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                    nonfinite |= ~(torch.isfinite(terms["loss"].detach()) & torch.isfinite(grad_norm))
                    optimizer.step()
                    scheduler.step()
                    step += 1
                    in_step = False
                    if step % config.log_every == 0 or step == stop_at:
                        check_finite()
                        last_terms = self._log(
                            metrics, terms, step, epoch, scheduler.get_last_lr()[0], local_batch, started
                        )
                        started = time.perf_counter()
                    self.progress(step, stop_at, loss=last_terms.get("loss"))
                    if step % config.save_every == 0:
                        save()
                    if step >= stop_at or step % steps_per_epoch == 0:
                        break
                if step % steps_per_epoch == 0 and step % config.save_every:
                    save()  # every epoch ends with a checkpoint
        except KeyboardInterrupt:
            if not in_step:
                save()
            raise Interrupted(
                f"pretraining stopped at step {step}; the last checkpoint is in {self.checkpoints}",
                hint=f"continue it with the same options and -o {self.out} (or --resume)",
            ) from None
        if step % config.save_every and step % steps_per_epoch:
            save()
        check_finite()
        return self._finish(
            step_module,
            model,
            arch_config,
            plan,
            step,
            resumed_from,
            last_terms,
            tiles_manifest,
            corpus_manifest,
            export_open_clip,
        )

    # ------------------------------------------------------------ output

    def _log(
        self, path: Path, terms, step: int, epoch: int, lr: float, local_batch: int, started: float
    ) -> dict[str, float]:
        import torch
        import torch.distributed as dist

        values = {k: float(v.detach().float().mean()) for k, v in terms.items() if isinstance(v, torch.Tensor)}
        if self.world > 1:  # the mean over ranks is the loss of the global batch
            packed = torch.tensor([values[k] for k in sorted(values)], device=self.device)
            dist.all_reduce(packed)
            values = {k: float(v) / self.world for k, v in zip(sorted(values), packed.tolist())}
        if self.rank == 0:
            seconds = max(1e-9, time.perf_counter() - started)
            record = {
                "step": step,
                "epoch": epoch,
                "lr": lr,
                **values,
                "samples_per_s": round(self.config.log_every * local_batch * self.world / seconds, 2),
            }
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        return values

    def _check_existing(self, plan, stop_at: int) -> PretrainResult | str | None:
        """What to do with the run folder, without touching it.

        A finished run with the same plan that reached ``stop_at``: a result, nothing to do.
        Another plan: "restart" with --overwrite, else refuse. Otherwise None: start or resume.
        """
        manifest = artifacts.read_manifest(self.out) if self.out.exists() else None
        old_plan_file = self.checkpoints / "plan.json"
        try:
            old_plan = json.loads(old_plan_file.read_text()) if old_plan_file.is_file() else None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"corrupt {old_plan_file}: {exc}", hint="start the run again with --overwrite") from None
        if old_plan is not None and old_plan != json.loads(json.dumps(plan, default=str)):
            if not self.config.overwrite:
                changed = sorted(
                    k
                    for k in plan
                    if not isinstance(old_plan, dict) or old_plan.get(k) != json.loads(json.dumps(plan[k], default=str))
                )
                raise InputError(
                    f"{self.out} holds a run with other {', '.join(changed)}; it cannot be resumed with these",
                    hint="choose another --name/-o, or pass --overwrite to start it again",
                )
            return "restart"
        exported = (self.out / "open_clip_model.safetensors").is_file() and (manifest or {}).get(
            "status", "finished"
        ) == "finished"
        if manifest is not None and old_plan is not None and exported:
            same_export = manifest.get("models", {}).get("export") == self.config.export
            steps = manifest.get("steps", 0)
            if same_export and isinstance(steps, int) and steps >= stop_at:
                return PretrainResult(self.out, steps, steps, True, manifest.get("final", {}), manifest)
        return None

    def _start_folder(self, plan) -> None:
        """Rank 0: the folder, its plan and, for a new run, a manifest that says it is training."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        artifacts.write_json_atomic(self.checkpoints / "plan.json", plan)
        if artifacts.read_manifest(self.out) is None:
            manifest = self._manifest(plan, steps=0, resumed_from=0, final={}, status="training")
            artifacts.write_json_atomic(self.out / artifacts.MANIFEST_NAME, manifest)
        for folder in (self.out, self.checkpoints):  # what a killed run left half-written: we hold the folder's lock
            artifacts.remove_leftovers_in(folder)

    def _barrier(self) -> None:
        import torch.distributed as dist

        if self.world > 1 and dist.is_initialized():
            dist.barrier()

    def _manifest(self, plan, *, steps: int, resumed_from: int, final: dict[str, float], status: str) -> dict[str, Any]:
        return artifacts.new_manifest(
            "run",
            run=self.run_info or artifacts.RunInfo.from_config(self.config),
            inputs=[artifacts.fingerprint(self.config.tiles), artifacts.fingerprint(self.config.corpus)],
            rows=steps,
            models={"arch": self.config.arch, "pretrained": self.config.pretrained, "export": self.config.export},
            extra={
                "status": status,
                "steps": steps,
                "resumed_from": resumed_from,
                "final": final,
                "plan": plan,
                "open_clip": f"open_clip.create_model_and_transforms('local-dir:{self.out}')",
            },
        )

    def _finish(
        self,
        step_module,
        model,
        arch_config,
        plan,
        step,
        resumed_from,
        final,
        tiles_manifest,
        corpus_manifest,
        export_open_clip,
    ):
        if self.rank != 0:
            return PretrainResult(self.out, step, resumed_from, False, final)
        exported = step_module.teacher.model if self.config.export == "teacher" else model
        export_open_clip(exported, arch_config or self.config.arch, self.out)
        manifest = self._manifest(plan, steps=step, resumed_from=resumed_from, final=final, status="finished")
        artifacts.write_json_atomic(self.out / artifacts.MANIFEST_NAME, manifest)
        point_latest(self.out)  # only now: runs/latest always names a finished, exported model
        return PretrainResult(self.out, step, resumed_from, False, final, manifest)
