"""Finding imagery in the inputs: rasters, folders of pictures and XYZ folders, turned into a ``Plan`` of jobs."""

from __future__ import annotations

import collections
import csv
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from urbanln_cli import geo
from urbanln_cli.errors import InputError, UsageProblem

RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".jp2", ".img"}
PICTURE_SUFFIXES = {".png", ".jpg", ".jpeg"}
XYZ_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


NAN = float("nan")


@dataclass(frozen=True)
class Raster:
    """A raster cut into windows. ``crs`` is '' when it is not georeferenced."""

    path: str
    prefix: str
    group: str
    width: int
    height: int
    crs: str
    transform: tuple[float, ...] | None
    bands: tuple[int, ...]
    stretch: tuple[tuple[float, float], ...] | None  # per-band (low, high) for non-uint8 data
    # How to tell nodata: None = every pixel is valid; a tuple = per-band nodata values
    # (compared in memory); "gdal" = read GDAL's mask bands (alpha or internal masks).
    nodata: tuple[float, ...] | str | None = None


@dataclass(frozen=True)
class Picture:
    """An image file that becomes one tile."""

    path: str
    tile_id: str
    group: str
    crs: str = ""
    bounds: tuple[float, float, float, float] | None = None
    lon: float = NAN
    lat: float = NAN
    gsd: float = NAN


@dataclass
class Plan:
    rasters: list[Raster] = field(default_factory=list)
    pictures: list[Picture] = field(default_factory=list)
    jobs: list[tuple[int, int, int]] = field(default_factory=list)  # (raster index, row, col) or (-1, picture index, 0)
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    inputs: list[Path] = field(default_factory=list)
    used_locations: set[str] = field(default_factory=set)

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n


# ---------------------------------------------------------------- discovery


def discover(
    inputs: Iterable[Path],
    *,
    size: int,
    stride: int,
    group: str | None = None,
    bands: tuple[int, ...] | None = None,
    locations: Path | None = None,
    percentiles: tuple[float, float] = (2.0, 98.0),
) -> Plan:
    plan = Plan()
    located = _read_locations(locations) if locations else None
    for path in inputs:
        path = Path(path)
        plan.inputs.append(path)
        if not path.exists():
            raise InputError(
                f"input not found: {path}", hint="check the path; tile takes GeoTIFFs, image folders and XYZ folders"
            )
        name = path.resolve().name if path.is_dir() else path.stem
        if path.is_file():
            if path.suffix.lower() in RASTER_SUFFIXES:
                raster = _open_raster(path, name, group or name, bands, percentiles, strict=True)
                _add_raster(plan, raster, size, stride)
            elif path.suffix.lower() in PICTURE_SUFFIXES:
                _add_picture(plan, Picture(str(path), name, group or name), located, path.stem, path.stem)
            else:
                raise InputError(
                    f"unsupported input file: {path}",
                    hint="tile takes rasters (.tif, .vrt, .jp2), pictures (.png, .jpg) and folders of them",
                )
        elif _is_xyz(path):
            _add_xyz(plan, path, name, group or name)
        else:
            _add_folder(plan, path, name, group, bands, percentiles, located, size, stride)
    if located is not None:
        plan.count("locations_unused", len(located) - len(plan.used_locations))
    if not plan.jobs:
        raise InputError(
            "no imagery found in " + ", ".join(str(p) for p in plan.inputs),
            hint="tile takes GeoTIFFs, folders of PNG/JPEG/TIFF images and XYZ folders (z/x/y.png)",
        )
    return plan


def window_offsets(length: int, size: int, stride: int) -> list[int]:
    """Window starts along one axis: every ``stride``, until a window reaches the end.

    The last window may hang over the edge; it is padded and ``--min-valid`` decides.
    """
    offsets = [0]
    while offsets[-1] + size < length and offsets[-1] + stride < length:
        offsets.append(offsets[-1] + stride)
    return offsets


def _add_raster(plan: Plan, raster: Raster, size: int, stride: int) -> None:
    index = len(plan.rasters)
    plan.rasters.append(raster)
    for row in window_offsets(raster.height, size, stride):
        for col in window_offsets(raster.width, size, stride):
            plan.jobs.append((index, row, col))


def _add_picture(plan: Plan, picture: Picture, located: dict | None, rel_key: str, stem: str) -> None:
    if located is not None:
        key = rel_key if rel_key in located else stem if stem in located else None
        hit = located.get(key) if key is not None else None
        if hit is None:
            plan.count("missing_location")
        else:
            plan.used_locations.add(key)
            picture = Picture(
                picture.path,
                picture.tile_id,
                hit.get("group") or picture.group,
                lon=hit["lon"],
                lat=hit["lat"],
                gsd=hit.get("gsd", NAN),
            )
    plan.pictures.append(picture)
    plan.jobs.append((-1, len(plan.pictures) - 1, 0))


def _add_folder(plan, folder: Path, name, group, bands, percentiles, located, size, stride) -> None:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    stems = collections.Counter(p.stem for p in files)
    if located is not None:
        ambiguous = sorted(k for k in located if stems.get(k, 0) > 1)
        if ambiguous:
            raise InputError(
                f"locations id {ambiguous[0]!r} matches {stems[ambiguous[0]]} files in {folder}",
                hint="use the path relative to the folder as id, e.g. subdir/name",
            )
    # a.png and a.jpg side by side: each keeps its extension in its tile id (photos/a.png, photos/a.jpg)
    tiled = collections.Counter(
        p.relative_to(folder).with_suffix("").as_posix()
        for p in files
        if p.suffix.lower() in RASTER_SUFFIXES | PICTURE_SUFFIXES
    )
    for path in files:
        rel = path.relative_to(folder).with_suffix("").as_posix()
        suffix = path.suffix.lower()
        name_rel = path.relative_to(folder).as_posix() if tiled[rel] > 1 else rel
        if suffix in RASTER_SUFFIXES:
            try:
                raster = _open_raster(path, f"{name}/{name_rel}", group or name, bands, percentiles, strict=False)
            except InputError as exc:
                plan.count("unreadable")
                plan.problems.append(exc.message)
                continue
            if raster.crs:
                _add_raster(plan, raster, size, stride)
                continue
        elif suffix not in PICTURE_SUFFIXES:
            plan.count("ignored_files")
            continue
        _add_picture(plan, Picture(str(path), f"{name}/{name_rel}", group or name), located, rel, path.stem)


_INT = re.compile(r"^\d+$")


def _is_xyz(folder: Path) -> bool:
    """A folder whose children are zoom levels holding x folders holding y files."""
    zooms = [p for p in folder.iterdir() if p.is_dir()]
    if not zooms or not all(_INT.match(p.name) for p in zooms):
        return False
    for z in zooms:
        for x in z.iterdir():
            if x.is_dir() and _INT.match(x.name):
                return any(_INT.match(y.stem) and y.suffix.lower() in XYZ_SUFFIXES for y in x.iterdir())
    return False


def _add_xyz(plan: Plan, folder: Path, name: str, group: str) -> None:
    same = collections.Counter(p.with_suffix("") for p in folder.glob("*/*/*") if p.suffix.lower() in XYZ_SUFFIXES)
    for path in sorted(
        folder.glob("*/*/*"),
        key=lambda p: (tuple(int(s) if s.isdigit() else 0 for s in p.with_suffix("").parts[-3:]), p.name),
    ):
        z, x, y = path.with_suffix("").parts[-3:]
        if not (
            path.is_file() and _INT.match(z) and _INT.match(x) and _INT.match(y) and path.suffix.lower() in XYZ_SUFFIXES
        ):
            plan.count("ignored_files")
            continue
        z, x, y = int(z), int(x), int(y)
        if not (0 <= x < (1 << z) and 0 <= y < (1 << z)):
            plan.count("ignored_files")
            plan.problems.append(f"{path}: x/y outside zoom {z}")
            continue
        bounds = geo.xyz_bounds(z, x, y)
        lon, lat = geo.mercator_to_lonlat((bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2)
        tile_id = f"{name}/{z}/{x}/{y}" + (
            path.suffix if same[path.with_suffix("")] > 1 else ""
        )  # 0.png and 0.jpg: both kept
        plan.pictures.append(Picture(str(path), tile_id, group, "EPSG:3857", bounds, lon, lat))
        plan.jobs.append((-1, len(plan.pictures) - 1, 0))


def _read_locations(path: Path) -> dict[str, dict[str, Any]]:
    """A CSV with columns id, lon, lat and optionally gsd and group."""
    if not Path(path).is_file():
        raise InputError(f"locations file not found: {path}", hint="pass a CSV with columns id,lon,lat")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel writes a byte-order mark
            reader = csv.DictReader(f)
            missing = {"id", "lon", "lat"} - set(reader.fieldnames or [])
            if missing:
                raise InputError(
                    f"{path} lacks column(s) {', '.join(sorted(missing))}",
                    hint="the locations CSV needs columns id,lon,lat (optional: gsd, group)",
                )
            out = {}
            for line, row in enumerate(reader, start=2):
                try:
                    entry: dict[str, Any] = {"lon": float(row["lon"]), "lat": float(row["lat"])}
                    if row.get("gsd"):
                        entry["gsd"] = float(row["gsd"])
                except (TypeError, ValueError):
                    raise InputError(
                        f"{path}:{line}: lon, lat and gsd must be numbers", hint="fix or remove that row"
                    ) from None
                if not (-180 <= entry["lon"] <= 180 and -90 <= entry["lat"] <= 90):
                    raise InputError(
                        f"{path}:{line}: lon {entry['lon']}, lat {entry['lat']} is not a WGS84 position",
                        hint="give longitude and latitude in degrees (EPSG:4326)",
                    )
                if row.get("group"):
                    entry["group"] = row["group"]
                key = (row["id"] or "").strip()
                if Path(key).suffix.lower() in PICTURE_SUFFIXES | RASTER_SUFFIXES:
                    key = Path(key).with_suffix("").as_posix()
                out[key] = entry
            return out
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text", hint="save the CSV as UTF-8") from None


def _open_raster(path: Path, prefix: str, group: str, bands, percentiles, strict: bool) -> Raster:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(path)
    except RasterioIOError as exc:
        raise InputError(
            f"cannot read raster {path}: {exc}", hint="check that the file is a complete, valid GeoTIFF"
        ) from None
    with ds:
        chosen = _choose_bands(ds, bands, path)
        georeferenced = ds.crs is not None and not ds.transform.is_identity
        stretch = None
        if any(ds.dtypes[b - 1] != "uint8" for b in chosen):
            stretch = _percentile_stretch(ds, chosen, percentiles, path)
        return Raster(
            path=str(path),
            prefix=prefix,
            group=group,
            width=ds.width,
            height=ds.height,
            crs=_crs_string(ds.crs) if georeferenced else "",
            transform=tuple(ds.transform)[:6] if georeferenced else None,
            bands=chosen,
            stretch=stretch,
            nodata=_nodata_rule(ds, chosen),
        )


def _nodata_rule(ds, bands) -> tuple[float, ...] | str | None:
    """Per-band nodata values when that is all GDAL would mask, so windows need no second read."""
    flags = [ds.mask_flag_enums[b - 1] for b in bands]
    names = [{f.name for f in band} for band in flags]
    if all(n == {"all_valid"} for n in names):
        return None
    if all(n == {"nodata"} for n in names):
        return tuple(float(ds.nodatavals[b - 1]) for b in bands)
    return "gdal"


def _crs_string(crs) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def _choose_bands(ds, bands, path) -> tuple[int, ...]:
    if bands:
        bad = [b for b in bands if not 1 <= b <= ds.count]
        if bad:
            raise UsageProblem(
                f"--bands {','.join(map(str, bands))} does not fit {path}, which has {ds.count} band(s)",
                hint="bands are numbered from 1; pick one or three",
            )
        return tuple(bands)
    if ds.count >= 3:
        interp = [c.name for c in ds.colorinterp]
        if {"red", "green", "blue"} <= set(interp):
            return tuple(interp.index(c) + 1 for c in ("red", "green", "blue"))
        return (1, 2, 3)
    return (1,)


def _percentile_stretch(ds, bands, percentiles, path) -> tuple[tuple[float, float], ...]:
    """Per-band (low, high) percentiles from a decimated read, so memory stays bounded."""
    scale = max(1.0, max(ds.width, ds.height) / 1024)
    shape = (len(bands), max(1, int(ds.height / scale)), max(1, int(ds.width / scale)))
    try:
        data = ds.read(list(bands), out_shape=shape, masked=True)
    except Exception as exc:  # damaged blocks: rasterio raises RasterioIOError and CPLE_* errors
        raise InputError(
            f"cannot read raster {path}: {exc}", hint="check that the file is a complete, valid GeoTIFF"
        ) from None
    out = []
    for band in data:
        values = band.compressed().astype("float64")
        values = values[np.isfinite(values)]
        if values.size == 0:
            out.append((0.0, 1.0))
            continue
        lo, hi = np.percentile(values, percentiles)
        out.append((float(lo), float(hi) if hi > lo else float(lo) + 1.0))
    return tuple(out)


def parse_bands(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        values = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        values = ()
    if len(values) not in (1, 3):
        raise UsageProblem(
            f"--bands {text!r} must name one or three bands", hint="e.g. --bands 4,3,2 (numbered from 1)"
        )
    return values
