"""``urbanln pretrain``: long-text CLIP with momentum self-distillation."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from urbanln_cli.commands import _common


class Export(str, Enum):
    student = "student"
    teacher = "teacher"


def pretrain(
    ctx: typer.Context,
    tiles: Annotated[Path, typer.Option(help="Tiles dataset.")] = Path("tiles"),
    corpus: Annotated[Path, typer.Option(help="Corpus dataset from `urbanln fuse`.")] = Path("corpus"),
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run folder. \\[default: runs/NAME]", show_default=False)
    ] = None,
    name: Annotated[str | None, typer.Option(help="Run name. \\[default: the start time]", show_default=False)] = None,
    arch: Annotated[str, typer.Option(help="open_clip architecture, or urbanln-tiny.")] = "ViT-B-16",
    pretrained: Annotated[
        str,
        typer.Option(
            help="Initial weights: an open_clip tag (openai, …), a checkpoint file, local-dir:FOLDER, or none."
        ),
    ] = "openai",
    epochs: Annotated[int, typer.Option(help="Passes over the corpus.")] = 20,
    batch_size: Annotated[int, typer.Option(help="Global batch, over all GPUs.")] = 64,
    lr: Annotated[float, typer.Option(help="Peak learning rate (cosine schedule after warm-up).")] = 1e-5,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay (not on gains, biases, positions).")] = 0.1,
    warmup_steps: Annotated[int, typer.Option(help="Linear warm-up steps.")] = 100,
    context_length: Annotated[int, typer.Option(help="Text positions after the stretch.")] = 248,
    keep: Annotated[int, typer.Option(help="Leading positions kept (and frozen) by the stretch.")] = 20,
    short_weight: Annotated[
        float, typer.Option(help="Weight of the short-caption (principal-component) branch.")
    ] = 0.1,
    distill_weight: Annotated[
        float, typer.Option(help="μ: weight of momentum distillation against the contrastive loss.")
    ] = 0.5,
    momentum: Annotated[float, typer.Option(help="EMA momentum of the teacher.")] = 0.995,
    queue_size: Annotated[int, typer.Option(help="Feature queue length (a multiple of the batch).")] = 4096,
    stage1_epochs: Annotated[int, typer.Option(help="Epochs without distillation while the teacher warms up.")] = 1,
    consensus_prob: Annotated[
        float, typer.Option(help="Chance of the consensus caption; otherwise another model's, as augmentation.")
    ] = 0.7,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 2,
    device: Annotated[str, typer.Option(help="auto, cuda or cpu.")] = "auto",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    save_every: Annotated[int, typer.Option(help="Checkpoint every N steps (and at each epoch end).")] = 500,
    export: Annotated[Export, typer.Option(help="Which weights the model folder holds.")] = Export.student,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N steps (a smoke run).", show_default=False)] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue runs/latest (rerunning into a named folder always resumes it).")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Start a run folder again that holds another run.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON summary on stdout instead of the run folder.")
    ] = False,
) -> None:
    """Pretrain a 248-token CLIP on tiles and their fused captions, with momentum self-distillation.

    Rerunning into the same folder resumes from its last checkpoint (model, teacher,
    queues, optimizer, schedule, RNG and data position). Several GPUs: torchrun
    --nproc_per_node N -m urbanln_cli pretrain …
    """
    from urbanln_cli.stages.pretrain import PretrainConfig
    from urbanln_cli.stages.pretrain import pretrain as run_pretrain

    config = PretrainConfig(
        tiles=tiles,
        corpus=corpus,
        out=out,
        name=name,
        arch=arch,
        pretrained=pretrained,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        warmup_steps=warmup_steps,
        context_length=context_length,
        keep=keep,
        short_weight=short_weight,
        distill_weight=distill_weight,
        momentum=momentum,
        queue_size=queue_size,
        stage1_epochs=stage1_epochs,
        consensus_prob=consensus_prob,
        workers=workers,
        device=device,
        seed=seed,
        save_every=save_every,
        export=export.value,
        max_steps=max_steps,
        resume=resume,
        overwrite=overwrite,
    )
    with _common.progress_bar("pretraining") as update:
        result = run_pretrain(config, progress=update, run=_common.run_info(ctx))
    if result.nothing_to_do:
        _common.summary(f"{result.out} is finished ({result.steps} steps): nothing to do")
    else:
        resumed = f", resumed from step {result.resumed_from}" if result.resumed_from else ""
        loss = result.final.get("loss")
        _common.summary(
            f"trained {result.steps} steps{resumed}; loss {loss:.4f}; model in {result.out}"
            if loss is not None
            else f"trained {result.steps} steps{resumed}; model in {result.out}"
        )
    _common.emit(
        {"out": str(result.out), "steps": result.steps, "resumed_from": result.resumed_from, "final": result.final}
        if as_json
        else result.out,
        as_json,
    )


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain)
