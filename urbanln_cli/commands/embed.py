"""``urbanln embed``: one vector per tile."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from urbanln_cli.commands import _common


def embed(
    ctx: typer.Context,
    tiles: Annotated[Path, typer.Option(help="Tiles dataset.")] = Path("tiles"),
    model: Annotated[
        Path | None,
        typer.Option(
            help="A `urbanln pretrain` run folder; with --baseline random, the run whose architecture to copy. "
            "\\[default: runs/latest]",
            show_default=False,
        ),
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option(
            help="open_clip architecture for --pretrained, or for --baseline random (which needs it or --model).",
            show_default=False,
        ),
    ] = None,
    pretrained: Annotated[
        str | None,
        typer.Option(
            help="Weights instead of a run: an open_clip tag, a checkpoint file or local-dir:FOLDER.",
            show_default=False,
        ),
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(help="pixels (colour and texture statistics) or random (random weights).", show_default=False),
    ] = None,
    corpus: Annotated[
        Path | None, typer.Option(help="Also embed these captions with the text tower.", show_default=False)
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output safetensors file.")] = Path("embeddings.safetensors"),
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 256,
    workers: Annotated[int, typer.Option(help="DataLoader processes decoding images.")] = 2,
    device: Annotated[str, typer.Option(help="auto, cuda or cpu.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the random-weights baseline.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON summary on stdout instead of the output path.")
    ] = False,
) -> None:
    """Embed every tile with a trained model, open_clip weights, or a baseline, into a safetensors file."""
    from urbanln_cli.stages.embed import EmbedConfig
    from urbanln_cli.stages.embed import embed as run_embed

    config = EmbedConfig(
        tiles=tiles,
        model=model,
        arch=arch,
        pretrained=pretrained,
        baseline=baseline,
        corpus=corpus,
        out=out,
        batch_size=batch_size,
        workers=workers,
        device=device,
        seed=seed,
        overwrite=overwrite,
    )
    with _common.progress_bar("embedding") as update:
        result = run_embed(config, progress=update, run=_common.run_info(ctx))
    _common.summary(f"wrote {result.rows} × {result.dim} embeddings{_describe(result.source)} to {result.out}")
    _common.emit(
        {"out": str(result.out), "rows": result.rows, "dim": result.dim, "source": result.source}
        if as_json
        else result.out,
        as_json,
    )


def _describe(source: dict) -> str:
    """' (random weights of urbanln-tiny from run runs/x, seed 0)': which model made the vectors."""
    if source.get("baseline") == "random":
        return f" (random weights of {source['arch']} from {source['arch_from']}, seed {source['seed']})"
    if source.get("baseline") == "pixels":
        return " (pixel statistics)"
    if "pretrained" in source:
        return f" ({source['arch']}, {source['pretrained']} weights)"
    return f" (run {source['run']})" if "run" in source else ""


def register(app: typer.Typer) -> None:
    app.command("embed")(embed)
