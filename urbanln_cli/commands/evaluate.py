"""``urbanln evaluate``: how a trained model retrieves."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from urbanln_cli.commands import _common

evaluate_app = typer.Typer(help="Evaluate a trained model beyond probes.", no_args_is_help=True)


@evaluate_app.command("retrieval")
def retrieval(
    tiles: Annotated[Path, typer.Option(help="Tiles dataset.")] = Path("tiles"),
    corpus: Annotated[Path, typer.Option(help="Corpus of held-out tiles; every caption of a tile counts as its positive.")] = Path("corpus"),
    model: Annotated[Optional[Path], typer.Option(help="A pretrain run folder. \\[default: runs/latest]", show_default=False)] = None,
    pretrained: Annotated[Optional[str], typer.Option(help="open_clip weights instead of a run (with --arch).", show_default=False)] = None,
    arch: Annotated[Optional[str], typer.Option(help="Architecture for --pretrained.", show_default=False)] = None,
    device: Annotated[str, typer.Option(help="auto, cuda or cpu.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Image→text and text→image R@1, R@5 and R@10."""
    from urbanln_cli.stages.evaluate import RetrievalConfig, retrieval as run_retrieval

    result = run_retrieval(RetrievalConfig(tiles=tiles, corpus=corpus, model=model, pretrained=pretrained, arch=arch, device=device))
    if as_json:
        _common.emit({"metrics": result.metrics, "images": result.images, "captions": result.captions, "source": result.source}, True)
        return
    typer.echo("\n".join(f"{k:<10} {v:.3f}" for k, v in result.metrics.items()))
    _common.summary(f"{result.images} tiles, {result.captions} captions")


def register(app: typer.Typer) -> None:
    app.add_typer(evaluate_app, name="evaluate")
