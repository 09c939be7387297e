"""Stage ``synth city``: write a synthetic city whose every pixel and indicator has a known cause.

Output folder (built in a staging sibling and renamed into place):

- ``imagery.tif``   RGB uint8, tiled 256, deflate, UTM zone 50N, --gsd metres per pixel
- ``landcover.tif`` uint8 classes (see ``CLASSES``) on the same grid
- ``population.tif`` (100 m), ``carbon.tif`` (1000 m), ``gdp.tif`` (500 m),
  ``nightlight.tif`` (500 m): float32 sums per cell, grids aligned to the imagery origin
- ``scene.json``    every object with CRS geometry, the class table and the formulas
- ``urbanln.json``  the manifest

The vector scene is made first; imagery and land cover are then drawn in
blocks (``render``), so memory holds a few blocks of raster at a time.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from urbanln_cli import artifacts
from urbanln_cli.errors import UsageProblem
from urbanln_cli.synth import indicators, render
from urbanln_cli.synth.scene import CLASSES, STYLES, generate, write_scene_json

BLOCK = 512
LANDCOVER_COLOURS = {
    0: (40, 90, 160),
    1: (110, 180, 90),
    2: (60, 60, 60),
    3: (230, 160, 60),
    4: (220, 60, 60),
    5: (140, 80, 160),
    6: (200, 180, 120),
    7: (170, 170, 170),
    8: (30, 110, 40),
    9: (120, 70, 40),
}

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SynthConfig:
    out: Path
    size: int = 4096
    gsd: float = 1.0
    seed: int = 0
    style: str = "radial"
    workers: int | None = None  # default: all cores, at most 8; 1 draws in this process
    overwrite: bool = False

    def check(self) -> None:
        if not 256 <= self.size <= 65536:
            raise UsageProblem(
                f"--size {self.size} is out of range", hint="use 256 to 65536 pixels; 4096 is the default"
            )
        if not 0.1 <= self.gsd <= 10:
            raise UsageProblem(
                f"--gsd {self.gsd} is out of range",
                hint="use 0.1 to 10 metres per pixel; the city is drawn for about 1 m",
            )
        if self.seed < 0:
            raise UsageProblem(f"--seed {self.seed} must be 0 or more")
        if self.style not in STYLES:
            raise UsageProblem(f"--style {self.style!r} is not one of {', '.join(STYLES)}")
        if self.workers is not None and self.workers < 1:
            raise UsageProblem(f"--workers {self.workers} must be at least 1")


@dataclass
class SynthResult:
    out: Path
    counts: dict[str, int]
    totals: dict[str, float]
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)


def synth_city(
    config: SynthConfig, progress: Progress | None = None, run: artifacts.RunInfo | None = None
) -> SynthResult:
    """Generate the scene, draw it and write every file of the city into ``config.out``."""
    config.check()
    with artifacts.writing(config.out, "synth", overwrite=config.overwrite):
        return _synth_city(config, progress, run)


def _synth_city(config: SynthConfig, progress: Progress | None, run: artifacts.RunInfo | None) -> SynthResult:
    report = progress or (lambda done, total: None)
    scene = generate(config.size, config.gsd, config.seed, config.style)
    indicators.attach(scene)
    grids = indicators.rasters(scene)
    totals = indicators.totals(scene)
    data = render.prepare(scene, BLOCK)
    counts = {
        "buildings": len(scene.buildings["cx"]),
        "roads": len(scene.roads),
        "trees": len(scene.trees["x"]),
        "vehicles": len(scene.vehicles["x"]),
        "parks": len(scene.parks),
        "water": len(scene.water),
        "fields": len(scene.fields),
        "zones": len(scene.zones),
    }
    with artifacts.staged_dir(config.out, config.overwrite) as staging:
        _write_rasters(staging, scene, data, config, report)
        for name, grid in grids.items():
            _write_indicator(staging / f"{name}.tif", grid, indicators.GRIDS_M[name], scene)
        write_scene_json(
            scene,
            staging / "scene.json",
            CLASSES,
            indicators.formulas(),
            {"totals": {k: round(v, 3) for k, v in totals.items()}, "counts": counts},
        )
        manifest = artifacts.new_manifest(
            "synth",
            run=run or artifacts.RunInfo.from_config(config),
            inputs=[],
            rows=counts["buildings"],
            counts=counts,
            extra={
                "crs": scene.crs,
                "transform": list(scene.transform),
                "totals": totals,
                "files": sorted(p.name for p in staging.iterdir()),
            },
        )
        artifacts.write_json_atomic(staging / artifacts.MANIFEST_NAME, manifest)
    return SynthResult(config.out, counts, totals, manifest)


def _profile(scene, count: int, dtype: str, transform, width: int, height: int) -> dict:
    from rasterio.transform import Affine

    return {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": dtype,
        "crs": scene.crs,
        "transform": Affine(*transform),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
    }


def _write_rasters(staging: Path, scene, data: render.RenderData, config: SynthConfig, report: Progress) -> None:
    import rasterio
    from rasterio.enums import ColorInterp
    from rasterio.windows import Window

    size = scene.size
    rgb_profile = _profile(scene, 3, "uint8", scene.transform, size, size) | {
        "photometric": "RGB",
        "interleave": "pixel",
    }
    lc_profile = _profile(scene, 1, "uint8", scene.transform, size, size)
    nb = data.blocks
    total = nb * nb
    with (
        rasterio.open(staging / "imagery.tif", "w", **rgb_profile) as rgb,
        rasterio.open(staging / "landcover.tif", "w", **lc_profile) as lc,
    ):
        rgb.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
        lc.write_colormap(1, {k: (*v, 255) for k, v in LANDCOVER_COLOURS.items()})
        lc.update_tags(1, **{f"class_{k}": v for k, v in CLASSES.items()})
        report(0, total)
        # written in block order whatever finishes first, so the files' bytes never depend on timing
        for done, (bx, by, image, classes) in enumerate(_blocks(data, config.workers), start=1):
            window = Window(bx * BLOCK, by * BLOCK, image.shape[1], image.shape[0])
            rgb.write(np.moveaxis(image, 2, 0), window=window)
            lc.write(classes, 1, window=window)
            report(done, total)


_DATA: render.RenderData | None = None  # shared with forked workers, never pickled


def _draw(job: tuple[int, int]):
    bx, by = job
    image, classes = render.render_block(_DATA, bx, by)
    return bx, by, image, classes


def _blocks(data: render.RenderData, workers: int | None):
    global _DATA
    nb = data.blocks
    jobs = [(bx, by) for by in range(nb) for bx in range(nb)]
    workers = workers or min(os.cpu_count() or 1, 8)
    workers = min(workers, len(jobs))
    _DATA = data
    try:
        if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
            for job in jobs:
                yield _draw(job)
            return
        # fork shares the prepared draw lists without copying; a bounded window of jobs keeps memory flat
        with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            pending: list = []
            it = iter(jobs)
            for job in it:
                pending.append(pool.submit(_draw, job))
                if len(pending) >= 2 * workers:
                    break
            while pending:
                yield pending.pop(0).result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(pool.submit(_draw, nxt))
    finally:
        _DATA = None


def _write_indicator(path: Path, grid: np.ndarray, cell: float, scene) -> None:
    import rasterio

    ox, oy = scene.origin
    profile = _profile(scene, 1, "float32", (cell, 0.0, ox, 0.0, -cell, oy), grid.shape[1], grid.shape[0])
    if grid.shape[0] < 256:  # GeoTIFF tiles must not be larger than needed for tiny grids
        profile.update(tiled=False)
        profile.pop("blockxsize")
        profile.pop("blockysize")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(grid.astype(np.float32), 1)
