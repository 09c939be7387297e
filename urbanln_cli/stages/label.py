"""Stage ``label``: attach targets to tiles from rasters and tables (a ``labels`` artifact).

Raster targets are zonal statistics over each tile's footprint (see ``zonal``),
the ``majority`` class of a class raster, or, with the ``mask`` aggregation, a
class raster resampled (nearest neighbour) onto the tile's own pixel grid and
stored as a lossless PNG per tile in a ``NAME_mask`` column (class ids 0–254;
``MASK_IGNORE`` = 255 for nodata or outside). Table targets join by an id column,
or by the nearest point within a distance (see ``label_table``).

Numeric targets are float64 columns, NaN where missing. Categorical targets
(text columns of a table, ``majority`` classes as the integer code's text, e.g.
"11") are string columns, null where missing; the manifest's ``categorical`` field
lists each one's classes with their tile counts. Every reason for a missing
value is counted in the manifest.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from urbanln_cli import artifacts, geo, manifest_fields
from urbanln_cli.errors import InputError, UsageProblem
from urbanln_cli.stages.label_table import RESERVED, TARGET_NAME, table_targets
from urbanln_cli.zonal import AGGREGATIONS, ZonalRaster, aggregate

TILE_COLUMNS = (
    "tile_id",
    "gsd",
    "width",
    "height",
    "crs",
    "minx",
    "miny",
    "maxx",
    "maxy",
    "lon",
    "lat",
    "group",
)  # what label reads
RASTER_AGGS = (*AGGREGATIONS, "mask")
MASK_IGNORE = 255  # mask pixels with no class: nodata, outside the raster, or a tile without geometry
MAX_NODATA_LISTED = 10_000  # tiles whose nodata pixel count the manifest lists by id


@dataclass(frozen=True)
class RasterTarget:
    name: str
    path: Path
    agg: str = "mean"

    @classmethod
    def parse(cls, text: str) -> RasterTarget:
        """``NAME=PATH[:AGG]``; AGG is one of sum, mean, max, median, fractions, majority, mask."""
        name, sep, rest = text.partition("=")
        if not sep or not name or not rest:
            raise UsageProblem(
                f"--raster {text!r} is not NAME=PATH[:AGG]", hint="e.g. --raster population=worldpop.tif:sum"
            )
        path, agg = rest, "mean"
        head, colon, tail = rest.rpartition(":")
        if colon and tail in RASTER_AGGS:
            path, agg = head, tail
        elif colon and head and "/" not in tail and "\\" not in tail and "." not in tail:
            raise UsageProblem(
                f"--raster {text!r}: unknown aggregation {tail!r}", hint=f"use one of {', '.join(RASTER_AGGS)}"
            )
        return cls(name.strip(), Path(path), agg)


@dataclass(frozen=True)
class LabelConfig:
    tiles: Path = Path("tiles")
    out: Path = Path("labels")
    rasters: tuple[RasterTarget, ...] = ()
    table: Path | None = None
    id_column: str | None = None  # join the table by this column = tile_id; else by nearest lon/lat
    lon_column: str = "lon"
    lat_column: str = "lat"
    max_distance: float | None = None  # metres; default half the tile's width
    dup: str = "mean"
    columns: tuple[str, ...] | None = None  # table columns to take; default every numeric and class column
    categorical: tuple[str, ...] = ()  # table columns that hold classes even when written as numbers (codes)
    mask_size: int | None = None  # mask targets: at most this many pixels a side; default the tile's own size
    overwrite: bool = False

    def check(self) -> None:
        if not self.rasters and self.table is None:
            raise UsageProblem("no targets given", hint="add --raster NAME=PATH[:AGG] and/or --table PATH")
        if self.dup not in ("mean", "first"):
            raise UsageProblem(f"--dup {self.dup!r} is not mean or first")
        if self.max_distance is not None and self.max_distance <= 0:
            raise UsageProblem(f"--max-distance {self.max_distance} must be positive")
        if self.categorical and self.table is None:
            raise UsageProblem("--categorical names table columns, but no --table is given", hint="add --table PATH")
        if self.mask_size is not None and self.mask_size < 1:
            raise UsageProblem(f"--mask-size {self.mask_size} must be at least 1")
        names = [r.name for r in self.rasters]
        for name in names:
            if not TARGET_NAME.match(name) or name in RESERVED:
                raise UsageProblem(
                    f"target name {name!r} is not allowed",
                    hint="use letters, digits and _; not tile_id, lon, lat or group",
                )
        if len(set(names)) != len(names):
            raise UsageProblem("two --raster targets have the same name", hint="give each target its own NAME")


@dataclass
class LabelResult:
    out: Path
    rows: int
    targets: list[str]
    counts: dict[str, int]
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)
    categorical: list[str] = field(default_factory=list)  # targets that hold classes (string columns)
    warnings: list[str] = field(default_factory=list)  # for people (the CLI prints them on stderr)


def label(
    config: LabelConfig, progress: Callable[[int, int], None] | None = None, run: artifacts.RunInfo | None = None
) -> LabelResult:
    config.check()
    inputs = (config.tiles, *(r.path for r in config.rasters)) + ((config.table,) if config.table else ())
    with artifacts.writing(config.out, "labels", overwrite=config.overwrite, inputs=inputs):
        return _label(config, progress, run)


def _label(
    config: LabelConfig, progress: Callable[[int, int], None] | None, run: artifacts.RunInfo | None
) -> LabelResult:
    tiles_ds, tiles_manifest = artifacts.read_dataset(config.tiles, "tiles", columns=TILE_COLUMNS)
    tiles = tiles_ds.remove_columns([c for c in ("image",) if c in tiles_ds.column_names]).to_pandas()
    # gsd is per stored pixel; width/height are source pixels, which --resize may have changed
    resize = manifest_fields.field(tiles_manifest, config.tiles, "params.resize.value", int)
    if resize is not None and resize < 1:
        raise manifest_fields.damaged(
            config.tiles, tiles_manifest, f"'params.resize.value' is {resize}, not a positive number of pixels"
        )
    tiles["ground_w"] = tiles["gsd"].astype("float64") * (resize or tiles["width"])
    tiles["ground_h"] = tiles["gsd"].astype("float64") * (resize or tiles["height"])
    counts: dict[str, int] = {}
    columns: dict[str, np.ndarray] = {}
    sources: dict[str, Any] = {}
    report = progress or (lambda done, total: None)
    total = len(tiles) * len(config.rasters) + (len(tiles) if config.table else 0)
    done = 0

    masks: dict[str, list[bytes]] = {}
    categorical: list[str] = []
    warnings: list[str] = []
    skipped: dict[str, str] = {}
    for target in config.rasters:
        if target.agg == "mask":
            values, target_counts, info = _mask_target(
                tiles, target, config.mask_size, resize, lambda n, done=done: report(done + n, total)
            )
        else:
            values, target_counts, info = _raster_target(tiles, target, lambda n, done=done: report(done + n, total))
            if target.agg == "majority":
                categorical.append(target.name)
        done += len(tiles)
        for name in values:
            if name in columns or name in masks:
                raise UsageProblem(
                    f"two targets produce the column {name!r}", hint="rename one of the --raster targets"
                )
        (masks if target.agg == "mask" else columns).update(values)
        counts.update({f"{k}_{target.name}": v for k, v in target_counts.items() if v})
        sources[target.name] = {
            "from": "raster",
            "path": str(target.path),
            "agg": target.agg,
            "columns": sorted(values),
            **info,
        }
    if config.table is not None:
        found = table_targets(tiles, config)
        for name in found.columns:
            if name in columns or name in masks or name in RESERVED:
                raise UsageProblem(
                    f"table column {name!r} clashes with another target", hint="pick columns with --columns"
                )
        columns.update(found.columns)
        categorical += found.categorical
        warnings += found.warnings
        counts.update({k: v for k, v in found.counts.items() if v})
        join = "id" if config.id_column else "nearest"
        sources.update(
            {
                name: {
                    "from": "table",
                    "path": str(config.table),
                    "join": join,
                    "kind": "categorical" if name in found.categorical else "numeric",
                }
                for name in found.columns
            }
        )
        skipped = found.skipped
        report(total, total)
    for name, col in columns.items():
        missing = _missing(col).sum()
        if missing:
            counts[f"nan_{name}"] = int(missing)

    import datasets

    data = {
        "tile_id": tiles["tile_id"].tolist(),
        "lon": tiles["lon"].astype("float64").tolist(),
        "lat": tiles["lat"].astype("float64").tolist(),
        "group": tiles["group"].tolist(),
        **{name: col.tolist() for name, col in columns.items()},
        **masks,
    }
    features = datasets.Features(
        {
            "tile_id": datasets.Value("string"),
            "lon": datasets.Value("float64"),
            "lat": datasets.Value("float64"),
            "group": datasets.Value("string"),
        }
        | {name: datasets.Value("string" if name in categorical else "float64") for name in columns}
        | {name: datasets.Value("binary") for name in masks}
    )
    ds = datasets.Dataset.from_dict(data, features=features)
    inputs = [artifacts.fingerprint(config.tiles)] + [artifacts.fingerprint(t.path) for t in config.rasters]
    if config.table is not None:
        inputs.append(artifacts.fingerprint(config.table))
    manifest = artifacts.new_manifest(
        "labels",
        run=run or artifacts.RunInfo.from_config(config),
        inputs=inputs,
        rows=ds.num_rows,
        counts=counts,
        extra={
            "targets": sources,
            "tiles_artifact": manifest_fields.field(tiles_manifest, config.tiles, "artifact_id", str),
            "categorical": {name: class_counts(columns[name]) for name in categorical},
            "skipped_table_columns": skipped,
        },
    )
    artifacts.write_dataset(ds, config.out, manifest, overwrite=config.overwrite)
    return LabelResult(config.out, ds.num_rows, [*columns, *masks], counts, manifest, categorical, warnings)


def _missing(col: np.ndarray) -> np.ndarray:
    if col.dtype == object:
        return np.fromiter((not isinstance(v, str) for v in col), bool, len(col))
    return np.isnan(col)


def class_counts(col: np.ndarray) -> dict[str, Any]:
    """A class column's classes (whole-number codes in numeric order, then names) and tiles per class."""
    names, n = np.unique(np.asarray([v for v in col if isinstance(v, str)], dtype=str), return_counts=True)
    order = sorted(range(len(names)), key=lambda i: _class_key(str(names[i])))
    return {
        "classes": [str(names[i]) for i in order],
        "counts": {str(names[i]): int(n[i]) for i in order},
        "missing": int(len(col) - n.sum()),
    }


def _class_key(name: str) -> tuple[int, int, str]:
    return (0, int(name), name) if re.fullmatch(r"-?\d+", name) else (1, 0, name)


# ---------------------------------------------------------------- rasters


def _footprint(tile) -> tuple[str, tuple[float, float, float, float]] | None:
    """(crs, bounds) of a tile; from lon/lat and ground size when it has no CRS."""
    if tile.crs and all(math.isfinite(v) for v in (tile.minx, tile.miny, tile.maxx, tile.maxy)):
        return tile.crs, (tile.minx, tile.miny, tile.maxx, tile.maxy)
    if math.isfinite(tile.lon) and math.isfinite(tile.lat) and math.isfinite(tile.ground_w) and tile.ground_w > 0:
        dlat = math.degrees(tile.ground_h / 2 / geo.EARTH_RADIUS_M)
        dlon = math.degrees(tile.ground_w / 2 / geo.EARTH_RADIUS_M) / max(1e-6, math.cos(math.radians(tile.lat)))
        return geo.WGS84, (tile.lon - dlon, tile.lat - dlat, tile.lon + dlon, tile.lat + dlat)
    return None


def _raster_target(tiles, target: RasterTarget, on_progress):
    """A zonal statistic per tile: ({column: values}, counts, manifest info)."""
    raster = ZonalRaster(target.path)
    counts = {"outside": 0, "nodata": 0, "partial": 0, "some_nodata": 0, "no_geometry": 0}
    results: list[Any] = []
    info: dict[str, Any] = {}
    try:
        if target.agg == "majority":
            names = raster.class_names()
            info = {"rule": "the class covering most of the tile; ties go to the smallest code"}
            info |= {"names": {str(k): v for k, v in sorted(names.items())}} if names else {}
        for i, tile in enumerate(tiles.itertuples(index=False)):
            footprint = _footprint(tile)
            if footprint is None:
                counts["no_geometry"] += 1
                results.append({} if target.agg == "fractions" else math.nan)
            else:
                zone = raster.zone(*footprint)
                if zone.status != "ok":
                    counts[zone.status] += 1
                if target.agg == "majority":
                    _check_class_codes(zone.values, target, tile.tile_id)
                results.append(aggregate(zone, target.agg))
            if i % 64 == 63:
                on_progress(i + 1)
    finally:
        raster.close()
    on_progress(len(tiles))
    if target.agg == "majority":  # the code's text, so that "11" stays a class and not a quantity
        codes = [None if math.isnan(r) else str(int(r)) for r in results]
        return {target.name: np.asarray(codes, dtype=object)}, counts, info
    if target.agg != "fractions":
        return {target.name: np.asarray(results, np.float64)}, counts, info
    classes = sorted({c for r in results for c in r})
    columns = {}
    for c in classes:
        label = f"{target.name}_{int(c) if float(c).is_integer() else c}"
        columns[label] = np.asarray([r.get(c, 0.0) if r else math.nan for r in results], np.float64)
    return columns, counts, info


def _check_class_codes(values: np.ndarray, target: RasterTarget, tile_id: str) -> None:
    """A majority needs whole-number class codes; a fraction means a continuous raster."""
    bad = values[values != np.round(values)]
    if bad.size:
        raise InputError(
            f"{target.path}: value {bad[0]:g} under tile {tile_id} is not a class code (a whole number)",
            hint=f"majority needs a categorical raster such as land cover; use :mean or :median for {target.name}",
        )


def _mask_target(tiles, target: RasterTarget, mask_size: int | None, resize: int | None, on_progress):
    """One PNG class mask per tile on the tile's pixel grid: ({NAME_mask: [png bytes]}, counts, manifest info)."""
    import io

    from PIL import Image

    raster = ZonalRaster(target.path)
    counts = {"outside": 0, "nodata": 0, "partial": 0, "some_nodata": 0, "no_geometry": 0}
    pixels = np.zeros(256, np.int64)
    nodata_per_tile: dict[str, int] = {}
    pngs: list[bytes] = []
    try:
        palette, names = raster.colormap(), raster.class_names()
        for i, tile in enumerate(tiles.itertuples(index=False)):
            height, width = _mask_shape(tile, resize, mask_size)
            footprint = _footprint(tile)
            if footprint is None:
                counts["no_geometry"] += 1
                mask = np.full((height, width), MASK_IGNORE, np.uint8)
            else:
                values, status = raster.grid(*footprint, height, width)
                if status != "ok":
                    counts[status] += 1
                mask = _class_ids(values, target, tile.tile_id)
            pixels += np.bincount(mask.ravel(), minlength=256)
            ignored = int((mask == MASK_IGNORE).sum())
            if ignored:
                nodata_per_tile[str(tile.tile_id)] = ignored
            buf = io.BytesIO()
            Image.fromarray(mask, "L").save(buf, "PNG")
            pngs.append(buf.getvalue())
            if i % 64 == 63:
                on_progress(i + 1)
    finally:
        raster.close()
    on_progress(len(tiles))
    classes = {str(c): int(pixels[c]) for c in np.flatnonzero(pixels[:MASK_IGNORE])}
    listed = dict(sorted(nodata_per_tile.items())[:MAX_NODATA_LISTED])
    info = {
        "encoding": "PNG, one 8-bit channel, a class id per pixel",
        "ignore": MASK_IGNORE,
        "grid": "the tile's pixels" if mask_size is None else f"the tile's pixels, at most {mask_size} a side",
        "classes": classes,
        "palette": {c: list(palette[int(c)]) for c in classes} if palette else None,
        "names": {c: names[int(c)] for c in classes if int(c) in names} or None,
        "nodata_pixels": int(pixels[MASK_IGNORE]),
        "tiles_with_nodata": len(nodata_per_tile),
        "nodata_per_tile": listed,
        "nodata_per_tile_complete": len(listed) == len(nodata_per_tile),
    }
    return {f"{target.name}_mask": pngs}, counts, info


def _mask_shape(tile, resize: int | None, mask_size: int | None) -> tuple[int, int]:
    """(height, width) of a tile's stored image, shrunk to at most ``mask_size`` a side."""
    width, height = (resize, resize) if resize else (int(tile.width), int(tile.height))
    if mask_size is not None and max(width, height) > mask_size:
        scale = mask_size / max(width, height)
        width, height = max(1, round(width * scale)), max(1, round(height * scale))
    return height, width


def _class_ids(values: np.ma.MaskedArray, target: RasterTarget, tile_id: str) -> np.ndarray:
    """uint8 class ids, MASK_IGNORE where masked; a value that is not a class id 0–254 is an error."""
    valid = ~np.ma.getmaskarray(values)
    data = np.asarray(values.data)
    if valid.any():
        seen = data[valid]
        lo, hi = seen.min(), seen.max()
        whole = not np.issubdtype(seen.dtype, np.floating) or bool((seen == np.round(seen)).all())
        if lo < 0 or hi >= MASK_IGNORE or not whole:
            bad = seen[(seen < 0) | (seen >= MASK_IGNORE) | (seen != np.round(seen))][0]
            raise InputError(
                f"{target.path}: value {bad:g} under tile {tile_id} is not a class id that fits a mask (whole "
                "numbers 0–254; 255 marks nodata)",
                hint="a mask needs a categorical raster; set its nodata (e.g. gdal_edit.py -a_nodata 255), "
                f"or use :mean or :fractions for {target.name}",
            )
    return np.where(valid, data, MASK_IGNORE).astype(np.uint8)
