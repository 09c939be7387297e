"""The segmentation probe's CLI side (``urbanln evaluate segmentation``): its options, the run and the table."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer

from urbanln_cli.commands import _common


class Options:
    """The types (with help) of the options only the segmentation probe has, for the command's signature.

    ``prefix`` starts each help text (and lowercases its first letter). The defaults stay in the
    signature (typer wants them there); tests check they equal ``SegmentConfig``'s.
    """

    def __init__(self, prefix: str = ""):
        def h(text: str) -> str:
            return prefix + text[:1].lower() + text[1:] if prefix else text

        self.mask = Annotated[
            str, typer.Option(help=h("The mask target of the labels (`urbanln label --raster NAME=PATH:mask`)."))
        ]
        self.tiles = Annotated[Path, typer.Option(help=h("Tiles dataset."))]
        self.arch = Annotated[
            str | None,
            typer.Option(help=h("open_clip architecture for --pretrained or --baseline random."), show_default=False),
        ]
        self.pretrained = Annotated[
            str | None,
            typer.Option(
                help=h("Weights instead of a run (an open_clip tag, a checkpoint file or local-dir:FOLDER)."),
                show_default=False,
            ),
        ]
        self.baseline = Annotated[
            str | None,
            typer.Option(help=h("random (the same architecture with random weights)."), show_default=False),
        ]
        self.epochs = Annotated[int, typer.Option(help=h("Epochs of the linear head."))]
        self.batch_size = Annotated[int, typer.Option(help=h("Tiles per forward pass of the image tower."))]
        self.device = Annotated[str, typer.Option(help=h("auto, cuda or cpu."))]


ONLY = (
    "mask",
    "tiles",
    "arch",
    "pretrained",
    "baseline",
    "epochs",
    "batch_size",
    "device",
)  # the names of Options' fields


def run(ctx: typer.Context, config, as_json: bool, drop: Iterable[str] = ()) -> None:
    """Run the stage with a progress bar, then print the summary (stderr) and the table or JSON (stdout).

    The manifest records the config's (resolved) values; the parameters in ``drop`` (another task's) are left out.
    """
    from urbanln_cli.stages.segment import segment

    with _common.progress_bar("segmentation probe") as update:
        result = segment(config, progress=update, run=_common.run_info(ctx, config, drop=drop))
    report = result.report
    miou, acc = report["metrics"]["miou"], report["metrics"]["pixel_accuracy"]
    _common.summary(
        f"segmented {report['mask']} on {report['n']} tiles ({len(report['classes'])} classes, "
        f"{report['split']['spec']}, "
        f"{len(report['folds'])} folds): mIoU {miou['mean']:.3f} ± {miou['std']:.3f}, pixel accuracy "
        f"{acc['mean']:.3f}; wrote {result.out}"
    )
    if "examples" in report["files"]:
        _common.summary(f"examples: {result.out / report['files']['examples']}")
    if as_json:
        _common.emit(
            {
                "out": str(result.out),
                "metrics": report["metrics"],
                "iou": report["iou"],
                "pooled": report["pooled"],
                "counts": result.counts,
                "files": report["files"],
            },
            True,
        )
    else:
        render_table(report)


def render_table(report: dict) -> None:
    """Per-class IoU, then mIoU and pixel accuracy, mean ± std over folds, on stdout."""
    import sys

    from rich.console import Console
    from rich.table import Table

    def pm(stat) -> str:
        mean, std = stat["mean"], stat["std"]
        return "n/a" if mean is None else f"{mean:.3f} ± {std:.3f}"

    out = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("class", "IoU", "folds", "pixels"):
        out.add_column(column, justify="left" if column == "class" else "right", no_wrap=True)
    pixels = report["pooled"]["class_pixels"]
    for c in report["classes"]:
        stat = report["iou"][str(c)]
        out.add_row(
            f"{c} {report['class_names'].get(str(c), '')}".strip(),
            pm(stat),
            str(stat["folds"]),
            str(pixels.get(str(c), 0)),
        )
    out.add_row(
        "mIoU",
        pm(report["metrics"]["miou"]),
        str(report["metrics"]["miou"]["folds"]),
        str(report["pooled"]["pixels"]),
        style="bold",
    )
    out.add_row(
        "pixel accuracy",
        pm(report["metrics"]["pixel_accuracy"]),
        str(report["metrics"]["pixel_accuracy"]["folds"]),
        "",
        style="bold",
    )
    Console(file=sys.stdout, highlight=False, soft_wrap=True, width=200).print(out)
