"""``urbanln evaluate``: how a trained model retrieves, and how its patch tokens segment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from urbanln_cli.commands import _common
from urbanln_cli.commands import segment as segment_cli

evaluate_app = typer.Typer(help="Evaluate a trained model beyond probes.", no_args_is_help=True)


@evaluate_app.command("retrieval")
def retrieval(
    tiles: Annotated[Path, typer.Option(help="Tiles dataset.")] = Path("tiles"),
    corpus: Annotated[
        Path, typer.Option(help="Corpus of held-out tiles; every caption of a tile counts as its positive.")
    ] = Path("corpus"),
    model: Annotated[
        Path | None, typer.Option(help="A pretrain run folder. \\[default: runs/latest]", show_default=False)
    ] = None,
    pretrained: Annotated[
        str | None, typer.Option(help="open_clip weights instead of a run (with --arch).", show_default=False)
    ] = None,
    arch: Annotated[str | None, typer.Option(help="Architecture for --pretrained.", show_default=False)] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            help="random: rank captions and images at random (seeded by --seed), no model.", show_default=False
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of --baseline random.")] = 0,
    dedupe: Annotated[
        bool,
        typer.Option("--dedupe", help="Count a caption that a tile has twice once (default: every caption counts)."),
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cuda or cpu.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Image→text and text→image R@1, R@5 and R@10, and mR (their mean)."""
    from urbanln_cli.stages.evaluate import RetrievalConfig
    from urbanln_cli.stages.evaluate import retrieval as run_retrieval

    config = RetrievalConfig(
        tiles=tiles,
        corpus=corpus,
        model=model,
        pretrained=pretrained,
        arch=arch,
        baseline=baseline,
        seed=seed,
        dedupe=dedupe,
        device=device,
    )
    with _common.progress_bar("encoding") as update:
        result = run_retrieval(config, progress=update)
    if as_json:
        _common.emit(
            {
                "metrics": result.metrics,
                "images": result.images,
                "captions": result.captions,
                "duplicates": result.duplicates,
                "dedupe": dedupe,
                "source": result.source,
            },
            True,
        )
        return
    typer.echo("\n".join(f"{k:<10} {v:.3f}" for k, v in result.metrics.items()))
    repeats = f"{result.duplicates} repeats dropped" if dedupe else f"{result.duplicates} of them repeats"
    src = result.source
    what = (
        f"random ranking, seed {seed}" if baseline else src.get("run") or f"{src.get('arch')} {src.get('pretrained')}"
    )
    _common.summary(f"{result.images} tiles, {result.captions} captions ({repeats}); {what}")


SEGMENT = segment_cli.Options()


@evaluate_app.command("segmentation")
def segmentation(
    ctx: typer.Context,
    mask: SEGMENT.mask = "landcover",
    tiles: SEGMENT.tiles = Path("tiles"),
    labels: Annotated[Path, typer.Option(help="Labels dataset with the NAME_mask column.")] = Path("labels"),
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output folder. \\[default: probe/<mask>-segmentation]", show_default=False),
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="A pretrain run folder. \\[default: runs/latest]", show_default=False)
    ] = None,
    arch: SEGMENT.arch = None,
    pretrained: SEGMENT.pretrained = None,
    baseline: SEGMENT.baseline = None,
    split: Annotated[
        str,
        typer.Option(
            help="random, spatial (k-fold over blocks of --block-km), group (grouped k-fold over --folds), "
            "logo (leave one group out) or transfer:A->B."
        ),
    ] = "spatial",
    folds: Annotated[int, typer.Option(help="Folds for random, spatial and group splits.")] = 5,
    block_km: Annotated[float, typer.Option(help="Side of the spatial blocks in km.")] = 1.0,
    epochs: SEGMENT.epochs = 30,
    lr: Annotated[float, typer.Option(help="Learning rate of the head (AdamW).")] = 1e-2,
    weight_decay: Annotated[float, typer.Option(help="Weight decay of the head (AdamW).")] = 1e-4,
    batch_size: SEGMENT.batch_size = 64,
    device: SEGMENT.device = "auto",
    seed: Annotated[int, typer.Option(help="Seed for folds, the head and random weights.")] = 0,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Draw examples.png.")] = True,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of a table.")] = False,
) -> None:
    """Per-class IoU, mIoU and pixel accuracy of a linear head on the model's frozen patch tokens.

    Writes report.json and examples.png (held-out tiles: image, truth, prediction)
    and prints the table.
    """
    from urbanln_cli.stages.segment import SegmentConfig

    config = SegmentConfig(
        mask=mask,
        tiles=tiles,
        labels=labels,
        out=out,
        model=model,
        arch=arch,
        pretrained=pretrained,
        baseline=baseline,
        split=split,
        folds=folds,
        block_km=block_km,
        epochs=epochs,
        lr=lr,
        weight_decay=weight_decay,
        batch_size=batch_size,
        device=device,
        seed=seed,
        plots=plots,
        overwrite=overwrite,
    )
    segment_cli.run(ctx, config, as_json)


def register(app: typer.Typer) -> None:
    app.add_typer(evaluate_app, name="evaluate")
