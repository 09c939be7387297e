"""``urbanln probe``: score embeddings on a target with a ridge or MLP head, or a model's patch tokens on a mask (``--task segmentation``)."""  # noqa: E501

from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from urbanln_cli.commands import _common
from urbanln_cli.commands import segment as segment_cli

logger = logging.getLogger(__name__)


class Task(str, Enum):
    regression = "regression"
    segmentation = "segmentation"


class LogTarget(str, Enum):
    auto = "auto"
    yes = "yes"
    no = "no"


SEGMENT = segment_cli.Options("Segmentation: ")
MLP_OPTIONS = (
    "hidden",
    "max_epochs",
    "patience",
    "lr",
    "weight_decay",
)  # lr and weight_decay also set the segmentation head
RIDGE_OPTIONS = ("alphas",)
REGRESSION_ONLY = ("embeddings", "target", "log_target", "drop_zero", "alphas", "hidden", "max_epochs", "patience")


def probe(
    ctx: typer.Context,
    task: Annotated[
        Task,
        typer.Option(
            help="regression: predict labels columns from embeddings. segmentation: a linear head on a model's "
            "frozen patch tokens predicts a --mask per pixel."
        ),
    ] = Task.regression,
    target: Annotated[
        str, typer.Option("--target", "-t", help="Labels column to predict, a comma-separated list, or 'all'.")
    ] = "carbon",
    embeddings: Annotated[
        list[Path] | None,
        typer.Option(
            "--embeddings",
            "-e",
            help="Embeddings from `urbanln embed`; repeat to compare several side by side. \\[default: "
            "embeddings.safetensors]",
            show_default=False,
        ),
    ] = None,
    labels: Annotated[Path, typer.Option(help="Labels dataset from `urbanln label`.")] = Path("labels"),
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Output folder. \\[default: probe/<target>, probe/all, or probe/<mask>-segmentation]",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Regression: the head, ridge (standardised ridge, alpha by inner CV) or mlp (D→256→1 with early "
            "stopping) \\[default: ridge]. "
            "Segmentation: a `urbanln pretrain` run folder \\[default: runs/latest].",
            show_default=False,
        ),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(
            help="random (k-fold), spatial (k-fold over blocks of --block-km), group (leave one group out) or "
            "transfer:A->B (train on group A, test on B). "
            "\\[default: random; spatial for segmentation]",
            show_default=False,
        ),
    ] = None,
    folds: Annotated[int, typer.Option(help="Folds for random and spatial splits.")] = 5,
    block_km: Annotated[
        float,
        typer.Option(
            help="Side of the spatial blocks in km (spatial split; also the inner CV's units for spatial, group "
            "and transfer)."
        ),
    ] = 1.0,
    log_target: Annotated[
        LogTarget,
        typer.Option(
            help="Fit log1p(target) and back-transform predictions; auto: when the target is ≥ 0 with skewness > 1."
        ),
    ] = LogTarget.auto,
    drop_zero: Annotated[bool, typer.Option("--drop-zero", help="Leave out tiles whose target is exactly 0.")] = False,
    alphas: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated ridge alphas to search. \\[default: 19 values from 1e-3 to 1e6]", show_default=False
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for random folds, inner folds and the MLP.")] = 0,
    hidden: Annotated[int, typer.Option(help="--model mlp: hidden units.")] = 256,
    max_epochs: Annotated[
        int, typer.Option(help="--model mlp: most epochs; early stopping on a validation part of each training fold.")
    ] = 200,
    patience: Annotated[
        int, typer.Option(help="--model mlp: epochs without a better validation MSE before stopping.")
    ] = 10,
    lr: Annotated[
        float | None,
        typer.Option(
            help="Learning rate: of the MLP's Adam with --model mlp \\[default: 1e-3], of the linear head's AdamW "
            "with --task segmentation \\[default: 1e-2].",
            show_default=False,
        ),
    ] = None,
    weight_decay: Annotated[
        float | None,
        typer.Option(
            help="Weight decay (L2): of the MLP's Adam with --model mlp \\[default: 1e-4], of the linear head's "
            "AdamW with --task segmentation \\[default: 1e-4].",
            show_default=False,
        ),
    ] = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Draw the scatter and map PNGs.")] = True,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the metrics table as JSON on stdout instead of a table.")
    ] = False,
    mask: SEGMENT.mask = "landcover",
    tiles: SEGMENT.tiles = Path("tiles"),
    arch: SEGMENT.arch = None,
    pretrained: SEGMENT.pretrained = None,
    baseline: SEGMENT.baseline = None,
    epochs: SEGMENT.epochs = 30,
    batch_size: SEGMENT.batch_size = 64,
    device: SEGMENT.device = "auto",
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
    from urbanln_cli.stages.probe import MODELS, ProbeConfig
    from urbanln_cli.stages.probe import probe as run_probe

    # None for --lr/--weight-decay means the default of the task (or head) that runs: its config's
    given = {k: v for k, v in {"lr": lr, "weight_decay": weight_decay}.items() if v is not None}
    if task is Task.segmentation:
        from urbanln_cli.stages.segment import SegmentConfig

        _only_for(ctx, REGRESSION_ONLY, "--task regression")
        if (
            model in MODELS and _source(ctx, "model") == "DEFAULT_MAP"
        ):  # a [probe] table's regression head: not for this task
            logger.debug(
                "config [probe] model = %r left out: a regression head, and --task segmentation takes a run folder",
                model,
            )
            model = None
            source_enum = type(ctx.get_parameter_source("model"))  # typer's own enum, not click's
            ctx.set_parameter_source("model", source_enum.DEFAULT)  # so the manifest says so
        if model in MODELS:
            raise UsageProblem(
                f"--model {model} is a regression head; with --task segmentation --model takes a `urbanln "
                "pretrain` run folder",
                hint="pass --model runs/NAME, or leave it out for runs/latest",
            )
        config = SegmentConfig(
            mask=mask,
            tiles=tiles,
            labels=labels,
            out=out,
            model=Path(model) if model else None,
            arch=arch,
            pretrained=pretrained,
            baseline=baseline,
            split=split or "spatial",
            folds=folds,
            block_km=block_km,
            epochs=epochs,
            batch_size=batch_size,
            device=device,
            seed=seed,
            plots=plots,
            overwrite=overwrite,
            **given,
        )
        segment_cli.run(ctx, config, as_json, drop=REGRESSION_ONLY)
        return
    _only_for(ctx, segment_cli.ONLY, "--task segmentation")
    mlp = (model or "ridge") == "mlp"
    if mlp:
        _only_for(ctx, RIDGE_OPTIONS, "--model ridge")
    else:
        _only_for(ctx, MLP_OPTIONS, "--model mlp")
    settings = {}
    if alphas is not None and not mlp:
        try:
            settings["alphas"] = tuple(float(a) for a in alphas.split(",") if a.strip())
        except ValueError:
            raise UsageProblem(
                f"--alphas {alphas!r} is not a comma-separated list of numbers", hint="e.g. --alphas 0.1,1,10,100"
            ) from None
    if mlp:
        settings.update(hidden=hidden, max_epochs=max_epochs, patience=patience, **given)
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
        plots=plots,
        overwrite=overwrite,
        **settings,
    )
    drop = segment_cli.ONLY + (RIDGE_OPTIONS if mlp else MLP_OPTIONS)
    with _common.progress_bar("probing") as update:
        result = run_probe(config, progress=update, run=_common.run_info(ctx, config, drop=drop))
    best = max(result.table, key=lambda r: (r["r2_mean"] == r["r2_mean"], r["r2_mean"]))
    skipped = result.report.get("skipped") or {}
    _common.summary(
        f"probed {len(result.report['targets'])} target(s) × {len(result.report['embeddings'])} embeddings "
        f"({config.model}, {result.report['split']['spec']}): best R² {best['r2_mean']:.3f} ({best['embeddings']} "
        f"on {best['target']}); wrote {result.out}" + (f"; skipped {', '.join(skipped)}" if skipped else "")
    )
    for target, files in result.plots.items():
        if "map" in files:
            _common.summary(f"map of {target}: {result.out / files['map']}")
    if as_json:
        _common.emit(
            {"out": str(result.out), "table": result.report["table"], "counts": result.counts, "plots": result.plots},
            True,
        )
    else:
        render_table(result.table)


def _source(ctx: typer.Context, name: str) -> str | None:
    source = ctx.get_parameter_source(name)
    return source.name if source is not None else None


def _only_for(ctx: typer.Context, names: tuple[str, ...], flag: str) -> None:
    """Options of another task (or head) are a usage error, not silently ignored; except from the config file.

    Refused when given as a flag or through the environment (URBANLN_PROBE_*): both are set
    for this command, so an ignored one would be a silent surprise. A ``[probe]`` table of
    the config file is left alone (noted in the debug log): it holds defaults for every
    run of ``probe``, and may well set ``epochs`` for segmentation and ``hidden`` for the
    MLP in one file; refusing would force a config file per task. Either way the manifest
    records only the options that took part (``run_info``'s ``drop``).
    """
    from urbanln_cli.errors import UsageProblem

    given, env = [], []
    for name in names:
        source = _source(ctx, name)
        if source == "COMMANDLINE":
            given.append(f"--{name.replace('_', '-')}")
        elif source == "ENVIRONMENT":
            variable = _envvar(ctx, name)
            given.append(f"{variable} (--{name.replace('_', '-')})")
            env.append(variable)
        elif source == "DEFAULT_MAP":
            logger.debug("config [probe] %s left out: it is for %s", name.replace("_", "-"), flag)
    if given:
        one = len(given) == 1
        leave = f"leave {'it' if one else 'them'} out" + (f" (unset {', '.join(env)})" if env else "")
        raise UsageProblem(f"{', '.join(given)} {'is' if one else 'are'} for {flag}", hint=f"add {flag}, or {leave}")


def _envvar(ctx: typer.Context, name: str) -> str:
    """The environment variable click read the option ``name`` from."""
    import os

    param = next(p for p in ctx.command.params if p.name == name)
    names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
    if ctx.auto_envvar_prefix and getattr(param, "allow_from_autoenv", True):
        names.append(f"{ctx.auto_envvar_prefix}_{name.upper()}")
    return next((n for n in names if os.environ.get(n)), names[-1] if names else name.upper())


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
        out.add_row(
            row["target"] + log,
            row["embeddings"],
            row["model"],
            row["split"],
            str(row["n"]),
            pm(row, "r2", 3),
            pm(row, "rmse", 4),
            pm(row, "mae", 4),
        )
    Console(file=sys.stdout, highlight=False, soft_wrap=True, width=200).print(out)


def register(app: typer.Typer) -> None:
    app.command("probe")(probe)
