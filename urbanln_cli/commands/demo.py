"""``urbanln demo``: the whole chain on a synthetic city, and the ablation table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from urbanln_cli.commands import _common


def demo(
    out: Annotated[Path, typer.Argument(help="Folder for every artifact of the demo.")] = Path("demo"),
    quick: Annotated[bool, typer.Option("--quick", help="A 1024² city and 3 epochs: about a minute.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the city, the captions and the training.")] = 0,
    workers: Annotated[int, typer.Option(help="DataLoader processes.")] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
) -> None:
    """synth → tile → label → caption (simulated panel) → fuse → pretrain → embed → probe, offline on CPU.

    Ends with R² per target (ridge, spatial 5-fold) for UrbanLN, its ablations
    (no stretch, no distillation, one model's captions without fusion) and the
    random-weights and pixel baselines, all from the runs it just did.
    """
    import time

    from urbanln_cli.stages.demo import TARGETS, DemoConfig, demo as run_demo

    started = time.perf_counter()
    result = run_demo(DemoConfig(out=out, quick=quick, seed=seed, workers=workers), say=lambda text: _common.summary(f"· {text}"))
    if as_json:
        _common.emit({"table": result.table, "maps": result.maps, "probe": str(result.probe)}, True)
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"R² by target (ridge probe, spatial 5-fold CV) on the synthetic city in {out}")
        table.add_column("representation")
        for target in TARGETS:
            table.add_column(target, justify="right")
        for variant, scores in result.table.items():
            table.add_row(variant, *(f"{scores[t]:.3f}" if t in scores and scores[t] is not None else "–" for t in TARGETS))
        Console(highlight=False, soft_wrap=True).print(table)
    for target, path in result.maps.items():
        _common.summary(f"map of {target}: {path}")
    _common.summary(f"demo finished in {time.perf_counter() - started:.0f} s; artifacts in {out}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
