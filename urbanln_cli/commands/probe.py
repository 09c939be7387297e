"""``urbanln probe``: score embeddings on a target with a linear or MLP head (regression or classification)."""

from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from urbanln_cli.commands import _common

logger = logging.getLogger(__name__)


class LogTarget(str, Enum):
    auto = "auto"
    yes = "yes"
    no = "no"


MLP_ONLY = ("hidden", "max_epochs", "patience", "lr", "weight_decay")
LINEAR_ONLY = ("alphas", "cs")


def probe(
    ctx: typer.Context,
    target: Annotated[
        str,
        typer.Option(
            "--target",
            "-t",
            help="Labels column to predict, a comma-separated list, or 'all'. A numeric column is regression, a "
            "string column (a class) classification.",
        ),
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
        typer.Option("--out", "-o", help="Output folder. \\[default: probe/<target> or probe/all]", show_default=False),
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            help="The head: linear (standardised ridge for a numeric target, logistic regression for a class; the "
            "penalty by inner CV) or mlp (D→256→1 or →classes, early stopping). ridge and logistic mean linear."
        ),
    ] = "linear",
    split: Annotated[
        str,
        typer.Option(
            help="auto (spatial where tiles have lon/lat, else group, else random), random (k-fold; warns: it leaks "
            "spatial autocorrelation), spatial (k-fold over blocks of --block-km), group (grouped k-fold), logo "
            "(leave one group out) or transfer:A->B (train on group A, test on B)."
        ),
    ] = "auto",
    folds: Annotated[int, typer.Option(help="Folds for random, spatial and group splits.")] = 5,
    block_km: Annotated[
        float,
        typer.Option(help="Side of the spatial blocks in km (also the inner CV's units for every split but random)."),
    ] = 2.0,
    buffer_km: Annotated[
        float,
        typer.Option(help="Leave training tiles within this many km of a fold's test tiles out of its training."),
    ] = 0.0,
    log_target: Annotated[
        LogTarget,
        typer.Option(
            help="Regression: fit log1p(target), back-transform with a smearing correction; auto: in each fold whose "
            "training rows are ≥ 0 with skewness > 1."
        ),
    ] = LogTarget.auto,
    drop_zero: Annotated[bool, typer.Option("--drop-zero", help="Leave out tiles whose target is exactly 0.")] = False,
    alphas: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated ridge alphas to search. \\[default: 19 values from 1e-3 to 1e6]", show_default=False
        ),
    ] = None,
    cs: Annotated[
        str | None,
        typer.Option(
            "--cs",
            help="Comma-separated logistic C values (inverse penalty) to search. \\[default: 7 values from 1e-4 to "
            "1e2]",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for random folds, inner folds and the MLP.")] = 0,
    hidden: Annotated[int, typer.Option(help="--model mlp: hidden units.")] = 256,
    max_epochs: Annotated[
        int, typer.Option(help="--model mlp: most epochs; early stopping on a validation part of each training fold.")
    ] = 200,
    patience: Annotated[
        int, typer.Option(help="--model mlp: epochs without a better validation loss before stopping.")
    ] = 10,
    lr: Annotated[float, typer.Option(help="--model mlp: learning rate of Adam.")] = 1e-3,
    weight_decay: Annotated[float, typer.Option(help="--model mlp: weight decay (L2) of Adam.")] = 1e-4,
    plots: Annotated[
        bool, typer.Option("--plots/--no-plots", help="Draw the scatter and map PNGs, or the confusion matrix.")
    ] = True,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the metrics table as JSON on stdout instead of a table.")
    ] = False,
) -> None:
    """Probe embeddings: predict a target (carbon, population, land use, …) from each tile's vector.

    Embeddings and labels are joined by tile id. Scores are out of fold: R², RMSE and MAE
    in the target's own units, or accuracy, balanced accuracy and macro-F1 for a class
    target; pooled over all folds, with the mean ± std over folds beside. Writes
    report.json, predictions.parquet and the plots, and prints the table. Segmentation
    is `urbanln evaluate segmentation`.
    """
    from urbanln_cli.stages.probe import MODEL_ALIASES, ProbeConfig
    from urbanln_cli.stages.probe import probe as run_probe

    mlp = MODEL_ALIASES.get(model, model) == "mlp"
    _only_for(ctx, LINEAR_ONLY if mlp else MLP_ONLY, "--model linear" if mlp else "--model mlp")
    settings = {}
    if alphas is not None:
        settings["alphas"] = _numbers(alphas, "--alphas", "e.g. --alphas 0.1,1,10,100")
    if cs is not None:
        settings["cs"] = _numbers(cs, "--cs", "e.g. --cs 0.01,0.1,1,10")
    config = ProbeConfig(
        target=target,
        embeddings=tuple(embeddings or [Path("embeddings.safetensors")]),
        labels=labels,
        out=out,
        model=model,
        split=split,
        folds=folds,
        block_km=block_km,
        buffer_km=buffer_km,
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
        result = run_probe(
            config, progress=update, run=_common.run_info(ctx, config, drop=LINEAR_ONLY if mlp else MLP_ONLY)
        )
    _common.summary(_summary(result, config))
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


def _numbers(text: str, flag: str, example: str) -> tuple[float, ...]:
    from urbanln_cli.errors import UsageProblem

    try:
        return tuple(float(a) for a in text.split(",") if a.strip())
    except ValueError:
        raise UsageProblem(f"{flag} {text!r} is not a comma-separated list of numbers", hint=example) from None


def _summary(result, config) -> str:
    """One line: what ran on which split, the best headline per task, where it went."""
    split = result.report["split"]
    where = split["spec"] + (f", {split['block_km']:g} km blocks" if split["kind"] == "spatial" else "")
    if split["buffer_km"]:
        where += f", {split['buffer_km']:g} km buffer"
    parts = []
    for metric, label in (("r2", "R²"), ("accuracy", "accuracy")):
        rows = [r for r in result.table if f"{metric}_pooled" in r and r[f"{metric}_pooled"] == r[f"{metric}_pooled"]]
        if rows:
            best = max(rows, key=lambda r: r[f"{metric}_pooled"])
            parts.append(f"best {label} {best[f'{metric}_pooled']:.3f} ({best['embeddings']} on {best['target']})")
    skipped = result.report.get("skipped") or {}
    return (
        f"probed {len(result.report['targets'])} target(s) × {len(result.report['embeddings'])} embeddings "
        f"({config.head()}, {where}): {'; '.join(parts) or 'no score'}; wrote {result.out}"
        + (f"; skipped {', '.join(skipped)}" if skipped else "")
    )


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
    """The metrics table on stdout (data, so not on the stderr console): pooled, then mean ± std over folds."""
    import sys

    from rich.console import Console
    from rich.table import Table

    def num(value: float, digits: int) -> str:
        return f"{value:.{digits}f}" if abs(value) < 1e5 else f"{value:.3g}"

    def pm(row, name, digits):
        if f"{name}_mean" not in row:
            return ""
        mean, std = row[f"{name}_mean"], row[f"{name}_std"]
        return f"{num(row[f'{name}_pooled'], digits)} ({num(mean, digits)} ± {num(std, digits)})"

    regression = any(r.get("task", "regression") == "regression" for r in table)
    classification = any(r.get("task") == "classification" for r in table)
    metrics = ([("R²", "r2", 3), ("RMSE", "rmse", 4), ("MAE", "mae", 4)] if regression else []) + (
        [("accuracy", "accuracy", 3), ("balanced acc.", "balanced_accuracy", 3), ("macro-F1", "macro_f1", 3)]
        if classification
        else []
    )
    out = Table(box=None, pad_edge=False, header_style="bold", caption="pooled (fold mean ± std)")
    for column in ("target", "embeddings", "model", "split", "n"):
        out.add_column(column, justify="right" if column == "n" else "left", no_wrap=True)
    for label, _, _ in metrics:
        out.add_column(label, justify="right", no_wrap=True)
    for row in table:
        log = " (log1p)" if row.get("log_target") else ""
        out.add_row(
            row["target"] + log,
            row["embeddings"],
            row["model"],
            row["split"],
            str(row["n"]),
            *(pm(row, name, digits) for _, name, digits in metrics),
        )
    Console(file=sys.stdout, highlight=False, soft_wrap=True, width=240).print(out)


def register(app: typer.Typer) -> None:
    app.command("probe")(probe)
