"""The segmentation probe's CLI side, shared by ``urbanln probe --task segmentation`` and ``urbanln evaluate segmentation``."""

from __future__ import annotations

import typer

from urbanln_cli.commands import _common


def run(ctx: typer.Context, config, as_json: bool) -> None:
    """Run the stage with a progress bar, then print the summary (stderr) and the table or JSON (stdout)."""
    from urbanln_cli.stages.segment import segment

    with _common.progress_bar("segmentation probe") as update:
        result = segment(config, progress=update, run=_common.run_info(ctx))
    report = result.report
    miou, acc = report["metrics"]["miou"], report["metrics"]["pixel_accuracy"]
    _common.summary(
        f"segmented {report['mask']} on {report['n']} tiles ({len(report['classes'])} classes, {report['split']['spec']}, "
        f"{len(report['folds'])} folds): mIoU {miou['mean']:.3f} ± {miou['std']:.3f}, pixel accuracy {acc['mean']:.3f}; wrote {result.out}"
    )
    if "examples" in report["files"]:
        _common.summary(f"examples: {result.out / report['files']['examples']}")
    if as_json:
        _common.emit({"out": str(result.out), "metrics": report["metrics"], "iou": report["iou"], "pooled": report["pooled"],
                      "counts": result.counts, "files": report["files"]}, True)
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
        out.add_row(f"{c} {report['class_names'].get(str(c), '')}".strip(), pm(stat), str(stat["folds"]), str(pixels.get(str(c), 0)))
    out.add_row("mIoU", pm(report["metrics"]["miou"]), str(report["metrics"]["miou"]["folds"]), str(report["pooled"]["pixels"]), style="bold")
    out.add_row("pixel accuracy", pm(report["metrics"]["pixel_accuracy"]), str(report["metrics"]["pixel_accuracy"]["folds"]), "", style="bold")
    Console(file=sys.stdout, highlight=False, soft_wrap=True, width=200).print(out)
