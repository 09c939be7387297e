"""``urbanln probe``: score embeddings on a target with a ridge or MLP head."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from urbanln_cli.commands import _common


class Model(str, Enum):
    ridge = "ridge"
    mlp = "mlp"


class LogTarget(str, Enum):
    auto = "auto"
    yes = "yes"
    no = "no"


def probe(
    ctx: typer.Context,
    target: Annotated[str, typer.Option("--target", "-t", help="Labels column to predict, a comma-separated list, or 'all'.")] = "carbon",
    embeddings: Annotated[
        Optional[List[Path]],
        typer.Option("--embeddings", "-e", help="Embeddings from `urbanln embed`; repeat to compare several side by side. \\[default: embeddings.safetensors]", show_default=False),
    ] = None,
    labels: Annotated[Path, typer.Option(help="Labels dataset from `urbanln label`.")] = Path("labels"),
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder. \\[default: probe/<target>, or probe/all]", show_default=False)] = None,
    model: Annotated[Model, typer.Option(help="ridge: standardised ridge, alpha by inner CV. mlp: D→256→1 head with early stopping.")] = Model.ridge,
    split: Annotated[str, typer.Option(help="random (k-fold), spatial (k-fold over blocks of --block-km), group (leave one group out) or transfer:A->B (train on group A, test on B).")] = "random",
    folds: Annotated[int, typer.Option(help="Folds for random and spatial splits.")] = 5,
    block_km: Annotated[float, typer.Option(help="Side of the spatial blocks in km (spatial split; also the inner CV's units for spatial, group and transfer).")] = 1.0,
    log_target: Annotated[LogTarget, typer.Option(help="Fit log1p(target) and back-transform predictions; auto: when the target is ≥ 0 with skewness > 1.")] = LogTarget.auto,
    drop_zero: Annotated[bool, typer.Option("--drop-zero", help="Leave out tiles whose target is exactly 0.")] = False,
    alphas: Annotated[Optional[str], typer.Option(help="Comma-separated ridge alphas to search. \\[default: 19 values from 1e-3 to 1e6]", show_default=False)] = None,
    seed: Annotated[int, typer.Option(help="Seed for random folds, inner folds and the MLP.")] = 0,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Draw the scatter and map PNGs.")] = True,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics table as JSON on stdout instead of a table.")] = False,
) -> None:
    """Probe embeddings: predict a target (carbon, population, GDP, …) from each tile's vector.

    Embeddings and labels are joined by tile id. Scores are out of fold: R², RMSE and
    MAE in the target's own units, mean ± std over folds. Writes report.json,
    predictions.parquet, a scatter and a map PNG per target, and prints the table.
    """
    from urbanln_cli.errors import UsageProblem
    from urbanln_cli.stages.probe import ProbeConfig, probe as run_probe

    settings = {}
    if alphas is not None:
        try:
            settings["alphas"] = tuple(float(a) for a in alphas.split(",") if a.strip())
        except ValueError:
            raise UsageProblem(f"--alphas {alphas!r} is not a comma-separated list of numbers", hint="e.g. --alphas 0.1,1,10,100") from None
    config = ProbeConfig(
        target=target,
        embeddings=tuple(embeddings or [Path("embeddings.safetensors")]),
        labels=labels,
        out=out,
        model=model.value,
        split=split,
        folds=folds,
        block_km=block_km,
        log_target=log_target.value,
        drop_zero=drop_zero,
        seed=seed,
        plots=plots,
        overwrite=overwrite,
        **settings,
    )
    with _common.progress_bar("probing") as update:
        result = run_probe(config, progress=update, run=_common.run_info(ctx))
    best = max(result.table, key=lambda r: (r["r2_mean"] == r["r2_mean"], r["r2_mean"]))
    skipped = result.report.get("skipped") or {}
    _common.summary(
        f"probed {len(result.report['targets'])} target(s) × {len(result.report['embeddings'])} embeddings "
        f"({config.model}, {result.report['split']['spec']}): best R² {best['r2_mean']:.3f} ({best['embeddings']} on {best['target']}); wrote {result.out}"
        + (f"; skipped {', '.join(skipped)}" if skipped else "")
    )
    for target, files in result.plots.items():
        if "map" in files:
            _common.summary(f"map of {target}: {result.out / files['map']}")
    if as_json:
        _common.emit({"out": str(result.out), "table": result.report["table"], "counts": result.counts, "plots": result.plots}, True)
    else:
        render_table(result.table)


def render_table(table: list[dict]) -> None:
    """The metrics table on stdout (data, so not on the stderr console)."""
    import sys

    from rich.console import Console
    from rich.table import Table

    def pm(row, name, digits):
        mean, std = row[f"{name}_mean"], row[f"{name}_std"]
        return f"{mean:.{digits}f} ± {std:.{digits}f}" if abs(mean) < 1e5 else f"{mean:.3g} ± {std:.2g}"

    out = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("target", "embeddings", "model", "split", "n", "R²", "RMSE", "MAE"):
        out.add_column(column, justify="right" if column in ("n", "R²", "RMSE", "MAE") else "left", no_wrap=True)
    for row in table:
        log = " (log1p)" if row.get("log_target") else ""
        out.add_row(row["target"] + log, row["embeddings"], row["model"], row["split"], str(row["n"]), pm(row, "r2", 3), pm(row, "rmse", 4), pm(row, "mae", 4))
    Console(file=sys.stdout, highlight=False, soft_wrap=True, width=200).print(out)


def register(app: typer.Typer) -> None:
    app.command("probe")(probe)
