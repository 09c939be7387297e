"""``urbanln synth city``: write a synthetic city with known causes for every pixel and indicator."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from urbanln_cli.commands import _common


class Style(str, Enum):
    radial = "radial"
    grid = "grid"
    linear = "linear"


synth_app = typer.Typer(
    name="synth",
    help="Synthetic data with a known ground truth, for tests, demos and benchmarks.",
    no_args_is_help=True,
)


@synth_app.command("city", no_args_is_help=True)
def city(
    ctx: typer.Context,
    out: Annotated[
        Path,
        typer.Argument(
            help="Output folder: imagery.tif, landcover.tif, indicator rasters, scene.json.", show_default=False
        ),
    ],
    size: Annotated[int, typer.Option(help="Image width and height in pixels.")] = 4096,
    gsd: Annotated[float, typer.Option(help="Ground sample distance: metres per pixel.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives byte-identical files.")] = 0,
    style: Annotated[
        Style, typer.Option(help="Major road layout: ring roads and spokes, a grid, or a linear spine.")
    ] = Style.radial,
    workers: Annotated[
        int | None,
        typer.Option(help="Worker processes drawing blocks. \\[default: all cores, at most 8]", show_default=False),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON summary on stdout instead of the output path.")
    ] = False,
) -> None:
    """Draw a synthetic city: a dense centre, residential rings, industry by the river or
    rail, parks, a lake, villages and farmland; imagery, land cover, and population, carbon,
    GDP and night-light rasters caused by the scene through documented formulas.

    See docs/synthetic-city.md for the classes and formulas.
    """
    from urbanln_cli.synth import SynthConfig, synth_city

    config = SynthConfig(
        out=out, size=size, gsd=gsd, seed=seed, style=style.value, workers=workers, overwrite=overwrite
    )
    with _common.progress_bar("drawing blocks") as update:
        result = synth_city(config, progress=update, run=_common.run_info(ctx))
    c = result.counts
    _common.summary(
        f"wrote a {size}px {style.value} city (seed {seed}) to {result.out}: {c['buildings']} buildings, "
        f"{c['roads']} roads, "
        f"{c['trees']} trees, {c['vehicles']} vehicles; population {result.totals['population']:,.0f}"
    )
    _common.emit({"out": str(result.out), "counts": c, "totals": result.totals} if as_json else result.out, as_json)


def register(app: typer.Typer) -> None:
    app.add_typer(synth_app, name="synth")
