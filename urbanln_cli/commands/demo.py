"""``urbanln demo``: the whole chain on a synthetic city, and the ablation table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from urbanln_cli.commands import _common


def demo(
    out: Annotated[Path, typer.Argument(help="Folder for every artifact of the demo.")] = Path("demo"),
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="A 4 km city (64 tiles) and 12 training steps a model, to check the chain: about 40 s."
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the city, the captions and the training.")] = 0,
    seeds: Annotated[
        int,
        typer.Option(
            help="Train every variant with this many seeds (seed, seed + 1, …); the paired differences pool them."
        ),
    ] = 1,
    workers: Annotated[int, typer.Option(help="DataLoader processes; 0 decodes tiles in the training process.")] = 0,
    jobs: Annotated[
        int | None, typer.Option(help="Trainings at once, one process each (default: one per core).")
    ] = None,
    threads: Annotated[
        int, typer.Option(help="torch threads per training process; more than 1 helps only on otherwise idle cores.")
    ] = 1,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report (table, paired differences) as JSON.")
    ] = False,
) -> None:
    """synth → tile → label → caption (simulated panel) → fuse (check, refine) → pretrain → embed → probe, on CPU.

    Ends with R² of log(1 + target) per target (ridge, spatial 5-fold CV over
    1 km blocks; mean ± std over the folds) for UrbanLN, its ablations (no
    refinement, no stretch, no distillation, one model's captions without
    fusion) and the random-weights and pixel baselines, all from the runs it
    just did, then each one's paired difference from UrbanLN on the same folds.
    Everything also goes to OUT/report.json. The full demo (a 12 km city, 576
    tiles of 500 m, 117 steps of 64 a model) takes about 4.5 minutes on 2
    idle cores at --seeds 1.
    """
    import time

    from urbanln_cli.stages.demo import TARGETS, DemoConfig, report_dict
    from urbanln_cli.stages.demo import demo as run_demo
    from urbanln_cli.stages.demo_report import finite

    started = time.perf_counter()
    config = DemoConfig(out=out, quick=quick, seed=seed, seeds=seeds, workers=workers, threads=threads, jobs=jobs)
    result = run_demo(config, say=lambda text: _common.summary(f"· {text}"))
    if as_json:
        _common.emit({**finite(report_dict(result, config)), "report": str(result.report)}, True)
    else:
        from rich.console import Console
        from rich.table import Table

        scale = result.scale
        split = f"spatial {scale.folds}-fold CV over {scale.block_km:g} km blocks" if scale else "spatial CV"
        where = f"{scale.tiles} tiles of {scale.tile * scale.gsd:g} m" if scale else "the synthetic city"
        over = f"folds and {result.seeds} seeds" if result.seeds > 1 else "folds"
        table = Table(title=f"R² of log(1 + target), ridge probe, {split}, mean ± std over {over} ({where}, {out})")
        table.add_column("representation")
        shown = [t for t in TARGETS if any(t in scores for scores in result.table.values())]
        for target in shown:
            table.add_column(target, justify="right")
        for variant, scores in result.table.items():
            spread = result.std.get(variant, {})
            table.add_row(variant, *(_cell(scores.get(t), spread.get(t)) for t in shown))
        paired = Table(
            title="paired difference from UrbanLN on the same folds (and seeds): mean ± std, pairs where UrbanLN is "
            "higher; * detectable (paired t-test over the folds, 5 %"
            + (", and the seeds' spread)" if result.seeds > 1 else "; one seed: training-run noise not measured)")
        )
        paired.add_column("representation")
        for target in shown:
            paired.add_column(target, justify="right")
        for variant, by_target in result.paired.items():
            paired.add_row(variant, *(_paired_cell(by_target.get(t)) for t in shown))
        import sys

        # a pipe or a log file gets the whole table on one line per row; a terminal its own width
        console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 120)
        console.print(table)
        console.print(paired)
    for note in result.notes:
        _common.summary(note)
    for name, lengths in result.tokens.items():
        if lengths.get("captions"):
            _common.summary(
                f"{name}: CLIP tokens p10/p50/p90 {lengths['p10']:.0f}/{lengths['p50']:.0f}/{lengths['p90']:.0f}, "
                f"{lengths['share_over_77']:.0%} past 77"
            )
    for target, path in result.maps.items():
        _common.summary(f"map of {target}: {path}")
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    _common.summary(f"report: {result.report}")
    _common.summary(f"demo finished in {time.perf_counter() - started:.0f} s ({stages}); artifacts in {out}")


def _cell(mean, std) -> str:
    if mean is None:
        return "–"
    return f"{mean:.3f} ± {std:.3f}" if std is not None else f"{mean:.3f}"


def _paired_cell(d: dict | None) -> str:
    if not d or not d.get("pairs") or d.get("mean") is None:
        return "–"
    std = f" ± {d['std']:.3f}" if d.get("std") is not None else ""
    mark = "*" if d["detectable"] else ""
    return f"{d['mean']:+.3f}{std} {d['favour_reference']}/{d['pairs']}{mark}"


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
