"""``urbanln probe``: score embeddings on a target with a ridge or MLP head, or a model's patch tokens on a mask (``--task segmentation``)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from urbanln_cli.commands import _common


class Task(str, Enum):
    regression = "regression"
    segmentation = "segmentation"


class LogTarget(str, Enum):
    auto = "auto"
    yes = "yes"
    no = "no"


def probe(
    ctx: typer.Context,
    task: Annotated[Task, typer.Option(help="regression: predict labels columns from embeddings. segmentation: a linear head on a model's frozen patch tokens predicts a --mask per pixel.")] = Task.regression,
    target: Annotated[str, typer.Option("--target", "-t", help="Labels column to predict, a comma-separated list, or 'all'.")] = "carbon",
    embeddings: Annotated[
        Optional[List[Path]],
        typer.Option("--embeddings", "-e", help="Embeddings from `urbanln embed`; repeat to compare several side by side. \\[default: embeddings.safetensors]", show_default=False),
    ] = None,
    labels: Annotated[Path, typer.Option(help="Labels dataset from `urbanln label`.")] = Path("labels"),
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder. \\[default: probe/<target>, probe/all, or probe/<mask>-segmentation]", show_default=False)] = None,
    model: Annotated[
        Optional[str],
        typer.Option(help="Regression: the head, ridge (standardised ridge, alpha by inner CV) or mlp (D→256→1 with early stopping) \\[default: ridge]. "
                     "Segmentation: a `urbanln pretrain` run folder \\[default: runs/latest].", show_default=False),
    ] = None,
    split: Annotated[
        Optional[str],
        typer.Option(help="random (k-fold), spatial (k-fold over blocks of --block-km), group (leave one group out) or transfer:A->B (train on group A, test on B). "
                     "\\[default: random; spatial for segmentation]", show_default=False),
    ] = None,
    folds: Annotated[int, typer.Option(help="Folds for random and spatial splits.")] = 5,
    block_km: Annotated[float, typer.Option(help="Side of the spatial blocks in km (spatial split; also the inner CV's units for spatial, group and transfer).")] = 1.0,
    log_target: Annotated[LogTarget, typer.Option(help="Fit log1p(target) and back-transform predictions; auto: when the target is ≥ 0 with skewness > 1.")] = LogTarget.auto,
    drop_zero: Annotated[bool, typer.Option("--drop-zero", help="Leave out tiles whose target is exactly 0.")] = False,
    alphas: Annotated[Optional[str], typer.Option(help="Comma-separated ridge alphas to search. \\[default: 19 values from 1e-3 to 1e6]", show_default=False)] = None,
    seed: Annotated[int, typer.Option(help="Seed for random folds, inner folds and the MLP.")] = 0,
    hidden: Annotated[int, typer.Option(help="--model mlp: hidden units.")] = 256,
    max_epochs: Annotated[int, typer.Option(help="--model mlp: most epochs; early stopping on a validation part of each training fold.")] = 200,
    patience: Annotated[int, typer.Option(help="--model mlp: epochs without a better validation MSE before stopping.")] = 10,
    lr: Annotated[float, typer.Option(help="--model mlp: Adam learning rate.")] = 1e-3,
    weight_decay: Annotated[float, typer.Option(help="--model mlp: Adam weight decay (L2).")] = 1e-4,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Draw the scatter and map PNGs.")] = True,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics table as JSON on stdout instead of a table.")] = False,
    mask: Annotated[str, typer.Option(help="Segmentation: the mask target of the labels (`urbanln label --raster NAME=PATH:mask`).")] = "landcover",
    tiles: Annotated[Path, typer.Option(help="Segmentation: the tiles dataset.")] = Path("tiles"),
    arch: Annotated[Optional[str], typer.Option(help="Segmentation: open_clip architecture for --pretrained or --baseline random.", show_default=False)] = None,
    pretrained: Annotated[Optional[str], typer.Option(help="Segmentation: weights instead of a run (an open_clip tag, a checkpoint file or local-dir:FOLDER).", show_default=False)] = None,
    baseline: Annotated[Optional[str], typer.Option(help="Segmentation: random (the same architecture with random weights).", show_default=False)] = None,
    epochs: Annotated[int, typer.Option(help="Segmentation: epochs of the linear head.")] = 30,
    batch_size: Annotated[int, typer.Option(help="Segmentation: tiles per forward pass of the image tower.")] = 64,
    device: Annotated[str, typer.Option(help="Segmentation: auto, cuda or cpu.")] = "auto",
) -> None:
    """Probe embeddings: predict a target (carbon, population, GDP, …) from each tile's vector.

    Embeddings and labels are joined by tile id. Scores are out of fold: R², RMSE and
    MAE in the target's own units, mean ± std over folds. Writes report.json,
    predictions.parquet, a scatter and a map PNG per target, and prints the table.

    With --task segmentation (also `urbanln evaluate segmentation`), a linear head on
    the frozen patch tokens of a model predicts the --mask classes per pixel; it
    reports per-class IoU, mIoU and pixel accuracy over spatial folds, and writes
    report.json and examples.png.
    """
    from urbanln_cli.errors import UsageProblem
    from urbanln_cli.stages.probe import MODELS, ProbeConfig, probe as run_probe

    if task is Task.segmentation:
        from urbanln_cli.commands import segment as segment_cli
        from urbanln_cli.stages.segment import SegmentConfig

        _only_for(ctx, ("embeddings", "target", "log_target", "drop_zero", "alphas", *MLP_OPTIONS), "--task regression")
        if model in MODELS:
            raise UsageProblem(f"--model {model} is a regression head; with --task segmentation --model takes a `urbanln pretrain` run folder",
                               hint="pass --model runs/NAME, or leave it out for runs/latest")
        config = SegmentConfig(mask=mask, tiles=tiles, labels=labels, out=out, model=Path(model) if model else None, arch=arch,
                               pretrained=pretrained, baseline=baseline, split=split or "spatial", folds=folds, block_km=block_km,
                               epochs=epochs, batch_size=batch_size, device=device, seed=seed, plots=plots, overwrite=overwrite)
        segment_cli.run(ctx, config, as_json)
        return
    _only_for(ctx, ("mask", "tiles", "arch", "pretrained", "baseline", "epochs", "batch_size", "device"), "--task segmentation")
    if (model or "ridge") != "mlp":
        _only_for(ctx, MLP_OPTIONS, "--model mlp")
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
        model=model or "ridge",
        split=split or "random",
        folds=folds,
        block_km=block_km,
        log_target=log_target.value,
        drop_zero=drop_zero,
        seed=seed,
        hidden=hidden,
        max_epochs=max_epochs,
        patience=patience,
        lr=lr,
        weight_decay=weight_decay,
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


MLP_OPTIONS = ("hidden", "max_epochs", "patience", "lr", "weight_decay")


def _only_for(ctx: typer.Context, names: tuple[str, ...], flag: str) -> None:
    """Options of another task (or head) given on the command line are a usage error, not silently ignored."""
    from urbanln_cli.errors import UsageProblem

    given = [f"--{n.replace('_', '-')}" for n in names if (source := ctx.get_parameter_source(n)) is not None and source.name == "COMMANDLINE"]
    if given:
        raise UsageProblem(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for {flag}",
                           hint=f"add {flag}, or leave {'it' if len(given) == 1 else 'them'} out")


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
