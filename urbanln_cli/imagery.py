"""Finding imagery in the inputs and rendering tiles from it.

Three kinds of input, mixed freely:
- rasters (GeoTIFF and friends), cut into ``size`` windows that are streamed from disk;
- folders of pictures (PNG/JPEG, and TIFFs without georeferencing), one tile each;
- XYZ folders (``z/x/y.png``), one tile each, with Web-Mercator bounds.

``discover`` turns the inputs into a ``Plan`` of small picklable jobs; a
``Renderer`` (one per worker process) turns each job into a tile row.

Image files with more than ``max_pixels`` pixels are skipped (``skipped_oversize``) without
being decoded; stages that read tiles decode them through ``open_image`` too, with the limit
the tiles were made with (``max_pixels_of``). NaN pixels count as nodata. Two files of one folder that differ only by
extension (a.png, a.jpg) keep the extension in their tile ids.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import hashlib
import io
import re
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from urbanln_cli import geo
from urbanln_cli.errors import InputError, UsageProblem

RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".jp2", ".img"}
PICTURE_SUFFIXES = {".png", ".jpg", ".jpeg"}
XYZ_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
JPEG_QUALITY = 90
GDAL_CACHE_BYTES = 64 << 20
NAN = float("nan")

# Image size limits. Every image urbanln decodes whole (a picture in a folder, a tile of a tiles
# artifact in embed, caption, fuse, segment, evaluate) is measured from its header first, and one
# over the limit is never decoded; raster windows are bounded by --size² instead. The default is
# Pillow's own warning threshold, about 9459 x 9459 pixels (some 270 MB as RGB).
DEFAULT_MAX_PIXELS = 89_478_485
MAX_PIXELS_CEILING = 1 << 31  # the most --max-pixels accepts: 46341² px, 6.4 GB as RGB
_PIL_LOCK = threading.Lock()


class ImageTooLarge(ValueError):
    """An image whose header says it has more pixels than the limit (never decoded).

    A ValueError, so code that treats undecodable images as bad ones treats these the same.
    """

    def __init__(self, width: int, height: int, limit: int, what: str = "the image", message: str | None = None):
        self.width, self.height, self.limit = width, height, limit
        super().__init__(
            message or f"{what} is {width}×{height} px ({width * height:,} pixels), over the limit of {limit:,} pixels"
        )


OVERSIZE_HINT = (
    "re-create the tiles with `urbanln tile` (it skips images over --max-pixels), or with a higher "
    "--max-pixels to keep them"
)


def decode_tile(data: bytes, max_pixels: int | None, name: str):
    """A tile's image as RGB, or an InputError naming the tile (oversize: never decoded; garbage: what PIL said)."""
    from urbanln_cli.redact import plain_error

    try:
        with open_image(data, max_pixels, f"{name}: its image") as img:
            return img.convert("RGB")
    except ImageTooLarge as exc:
        raise InputError(str(exc), hint=OVERSIZE_HINT) from None
    except (OSError, ValueError) as exc:  # PIL raises UnidentifiedImageError (an OSError) for garbage
        raise InputError(
            f"{name}: cannot decode its image ({plain_error(exc)})", hint="re-create the tiles with `urbanln tile`"
        ) from None


def check_max_pixels(value: int, option: str = "--max-pixels") -> int:
    """A usage error unless ``value`` is a whole number of pixels between 1 and ``MAX_PIXELS_CEILING``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PIXELS_CEILING:
        raise UsageProblem(
            f"{option} {value} must be a number of pixels between 1 and {MAX_PIXELS_CEILING}",
            hint=f"the default is {DEFAULT_MAX_PIXELS} (about 9459² px); raise it for larger single images",
        )
    return value


def max_pixels_of(manifest: dict[str, Any] | None) -> int:
    """The limit for decoding a tiles artifact's images: the one it was made with, never below the default."""
    value = manifest.get("max_pixels") if isinstance(manifest, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PIXELS_CEILING:
        return DEFAULT_MAX_PIXELS
    return max(value, DEFAULT_MAX_PIXELS)


def check_pixels(width: int, height: int, max_pixels: int | None = None, what: str = "the image") -> None:
    """Raise ``ImageTooLarge`` when a ``width``×``height`` image is over the limit."""
    limit = max_pixels or DEFAULT_MAX_PIXELS
    if int(width) * int(height) > limit:
        raise ImageTooLarge(int(width), int(height), limit, what)


@contextlib.contextmanager
def open_image(data: bytes, max_pixels: int | None = None, what: str = "the image") -> Iterator[Any]:
    """A PIL image from encoded bytes, opened after its header size is checked against the limit.

    Use as ``with open_image(raw, limit) as img: rgb = img.convert("RGB")``; the decode inside the
    block runs with Pillow's DecompressionBombWarning silenced (the limit here replaces it) and a
    DecompressionBombError there (a GIF frame or TIFF tile larger than the header said) becomes
    ``ImageTooLarge``. Pillow's own errors for undecodable bytes (OSError, ValueError) pass through.
    """
    from PIL import Image, UnidentifiedImageError

    limit = max_pixels or DEFAULT_MAX_PIXELS
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit  # a limit raised on purpose: Pillow's later checks (crops, frames) follow it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with _PIL_LOCK:  # the header only, without Pillow's check, so an image of any size reports its size
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                img = Image.open(io.BytesIO(data))
            except UnidentifiedImageError:  # Pillow's message names the BytesIO object by its memory address
                raise UnidentifiedImageError("cannot identify image file (not an image format Pillow reads)") from None
            finally:
                Image.MAX_IMAGE_PIXELS = saved
        with img:
            check_pixels(*img.size, limit, what)
            try:
                yield img
            except Image.DecompressionBombError:
                raise ImageTooLarge(
                    *img.size, limit, what, f"{what} holds a frame or tile larger than the limit of {limit:,} pixels"
                ) from None


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


@dataclass(frozen=True)
class RenderOptions:
    size: int = 256
    resize: int | None = None
    format: str = "png"
    min_valid: float = 0.5
    crop: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, right, bottom, left; pictures only
    max_pixels: int = DEFAULT_MAX_PIXELS  # image files with more pixels are skipped (counted as skipped_oversize)


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


# ---------------------------------------------------------------- rendering


class Unreadable(Exception):
    pass


@dataclass(frozen=True)
class Skip:
    """A job that gave no tile: why (a count key), and a line for the user when it matters."""

    reason: str
    detail: str = ""


class Renderer:
    """Turns jobs into tile rows. Keeps the last raster open, since jobs come in raster order."""

    def __init__(self, rasters: list[Raster], pictures: list[Picture], options: RenderOptions):
        self.rasters, self.pictures, self.opt = rasters, pictures, options
        self._open_index: int | None = None
        self._open_ds = None
        self._env = None

    def close(self) -> None:
        if self._open_ds is not None:
            self._open_ds.close()
            self._env.__exit__(None, None, None)
            self._open_ds, self._open_index, self._env = None, None, None

    def render_all(self, jobs: list[tuple[int, int, int]]) -> Iterator[dict[str, Any] | Skip]:
        """A tile row, or a Skip, for each job in order."""
        geometry = self._window_geometry(jobs)
        for job in jobs:
            index, a, b = job
            try:
                yield self._window(index, a, b, geometry[job]) if index >= 0 else self._picture(self.pictures[a])
            except Unreadable as exc:
                yield Skip("unreadable", str(exc))
            except ImageTooLarge as exc:
                yield Skip(
                    "oversize",
                    f"{exc}; skipped (raise --max-pixels to keep it, or tile a large TIFF as its own input to cut "
                    "it into windows)",
                )

    def _window_geometry(self, jobs) -> dict[tuple[int, int, int], tuple]:
        """Bounds, lon/lat and GSD of every raster window, reprojected in one call per raster."""
        size, out = self.opt.size, {}
        by_raster: dict[int, list[tuple[int, int, int]]] = {}
        for job in jobs:
            if job[0] >= 0:
                by_raster.setdefault(job[0], []).append(job)
        for index, group in by_raster.items():
            src = self.rasters[index]
            if not src.crs:
                out.update({job: ((NAN,) * 4, NAN, NAN, NAN) for job in group})
                continue
            bounds = [geo.window_bounds(src.transform, row, col, size, size) for _, row, col in group]
            # the centre of the part inside the raster: a padded edge window's centre may be off the globe
            inside = [(row, col, min(size, src.height - row), min(size, src.width - col)) for _, row, col in group]
            centres, gsds = geo.window_centres_and_gsd(src.crs, src.transform, inside, size)
            for job, b, (lon, lat), gsd in zip(group, bounds, centres, gsds):
                out[job] = (b, lon, lat, gsd)
        return out

    def _dataset(self, index: int):
        if self._open_index != index:
            import rasterio

            self.close()
            # GDAL caches decoded blocks (5% of RAM by default); each block is read once here,
            # so a small cache keeps memory flat whatever the raster's size.
            self._env = rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES)
            self._env.__enter__()
            self._open_ds, self._open_index = rasterio.open(self.rasters[index].path), index
        return self._open_ds

    def _window(self, index: int, row: int, col: int, geometry: tuple) -> dict[str, Any] | Skip:
        from rasterio.windows import Window

        src, size = self.rasters[index], self.opt.size
        ds = self._dataset(index)
        h, w = min(size, src.height - row), min(size, src.width - col)
        window = Window(col, row, w, h)
        try:
            data = ds.read(list(src.bands), window=window)
            if src.nodata is None:
                valid = np.ones((h, w), bool)
            elif src.nodata == "gdal":
                valid = ds.read_masks(list(src.bands), window=window).any(axis=0)
            else:
                valid = ~_all_nodata(data, src.nodata)
            valid &= _finite(data)  # NaN (or inf) is no value, whatever the nodata tag says
        except Exception as exc:  # rasterio raises RasterioIOError and CPLE_* for damaged blocks
            raise Unreadable(f"{src.path}: window at row {row}, col {col}: {exc}") from None
        fraction = float((valid & ~_blank(data)).sum()) / (size * size)  # padding counts as invalid
        if fraction < self.opt.min_valid:
            return Skip("below_min_valid")
        rgb = _to_uint8(data, src.stretch, valid)
        if h < size or w < size:  # an edge window: pad with nodata
            padded = np.zeros((rgb.shape[0], size, size), np.uint8)
            padded[:, :h, :w] = rgb
            rgb = padded
        image = rgb.transpose(1, 2, 0)
        bounds, lon, lat, gsd = geometry
        out_px = self.opt.resize or size
        return self._row(
            tile_id=f"{src.prefix}/r{row}_c{col}",
            image=self._encode(image, None),
            source=src.path,
            window=(row, col, size, size),
            crs=src.crs,
            bounds=bounds,
            lon=lon,
            lat=lat,
            gsd=gsd * size / out_px,
            group=src.group,
            valid_fraction=fraction,
        )

    def _picture(self, pic: Picture) -> dict[str, Any] | Skip:
        rgb, valid, original = _read_picture(Path(pic.path), self.opt.max_pixels)
        top, right, bottom, left = self.opt.crop
        height, width = valid.shape
        if top + bottom >= height or left + right >= width:
            return Skip("smaller_than_crop", f"{pic.path}: smaller than --crop")
        cropped = any(self.opt.crop)
        if cropped:
            rgb, valid = (
                rgb[top : height - bottom, left : width - right],
                valid[top : height - bottom, left : width - right],
            )
        fraction = float((valid & ~_blank(rgb.transpose(2, 0, 1))).mean())
        if fraction < self.opt.min_valid:
            return Skip("below_min_valid")
        h, w = valid.shape
        bounds = pic.bounds
        if bounds is not None and cropped:
            minx, miny, maxx, maxy = bounds
            sx, sy = (maxx - minx) / width, (maxy - miny) / height
            bounds = (minx + left * sx, miny + bottom * sy, maxx - right * sx, maxy - top * sy)
        gsd, lon, lat = pic.gsd, pic.lon, pic.lat
        if bounds is not None and pic.crs:
            ((lon, lat),), (gsd,) = geo.centres_and_gsd(pic.crs, [bounds], w, h)
        keep = original if not cropped and not self.opt.resize else None
        return self._row(
            tile_id=pic.tile_id,
            image=self._encode(rgb, keep),
            source=pic.path,
            window=(top if cropped else 0, left if cropped else 0, h, w),
            crs=pic.crs,
            bounds=bounds or (NAN,) * 4,
            lon=lon,
            lat=lat,
            gsd=gsd * w / self.opt.resize if self.opt.resize else gsd,
            group=pic.group,
            valid_fraction=fraction,
        )

    def _encode(self, image: np.ndarray, original: tuple[str, bytes] | None) -> bytes:
        """PNG or JPEG bytes; an untouched RGB file already in the wanted format is kept as is."""
        fmt = self.opt.format.upper()
        if original is not None and original[0] == fmt:
            return original[1]
        from PIL import Image

        img = Image.fromarray(np.ascontiguousarray(image), "RGB")
        if self.opt.resize and img.size != (self.opt.resize, self.opt.resize):
            img = img.resize((self.opt.resize, self.opt.resize), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        if fmt == "PNG":
            img.save(buf, "PNG")
        else:
            img.save(buf, "JPEG", quality=JPEG_QUALITY)
        return buf.getvalue()

    @staticmethod
    def _row(*, tile_id, image, source, window, crs, bounds, lon, lat, gsd, group, valid_fraction) -> dict[str, Any]:
        row_off, col_off, height, width = window
        minx, miny, maxx, maxy = bounds
        return {
            "tile_id": tile_id,
            "image": {"bytes": image, "path": None},
            "image_sha256": hashlib.sha256(image).hexdigest(),
            "source": source,
            "row_off": row_off,
            "col_off": col_off,
            "width": width,
            "height": height,
            "crs": crs,
            "minx": minx,
            "miny": miny,
            "maxx": maxx,
            "maxy": maxy,
            "lon": lon,
            "lat": lat,
            "gsd": gsd,
            "group": group,
            "valid_fraction": valid_fraction,
        }


def _to_uint8(data: np.ndarray, stretch, valid: np.ndarray) -> np.ndarray:
    if stretch is None:
        out = data.astype(np.uint8, copy=False)
    else:
        out = np.empty(data.shape, np.uint8)
        for i, (lo, hi) in enumerate(stretch):
            band = np.where(valid, data[i], lo).astype(np.float64)  # nodata values (e.g. -3.4e38) must not overflow
            band = (band - lo) * (255.0 / (hi - lo))
            out[i] = np.clip(np.nan_to_num(band, nan=0.0), 0, 255).round().astype(np.uint8)
    if out.shape[0] == 1:
        out = np.repeat(out, 3, axis=0)
    if not valid.all():
        out = out.copy() if out is data else out
        out[:, ~valid] = 0  # nodata becomes black, whatever value marked it
    return out


def _finite(data: np.ndarray) -> np.ndarray:
    """Pixels where every band holds a finite value (always true for integer data)."""
    if not np.issubdtype(data.dtype, np.floating) and not np.issubdtype(data.dtype, np.complexfloating):
        return np.ones(data.shape[1:], bool)
    return np.isfinite(data).all(axis=0)


def _all_nodata(data: np.ndarray, nodata: tuple[float, ...]) -> np.ndarray:
    """Pixels where every band holds its nodata value (GDAL's rule for per-band nodata)."""
    out = np.ones(data.shape[1:], bool)
    for band, value in zip(data, nodata):
        out &= np.isnan(band) if np.isnan(value) else band == value
    return out


def _blank(data: np.ndarray) -> np.ndarray:
    """Pixels that look like fill rather than data: 0 in every band (or 255, for 8-bit data).

    Judged on the source values, so a stretch that saturates dark pixels does not count.
    """
    blank = (data == 0).all(axis=0)
    if data.dtype == np.uint8:
        blank |= (data == 255).all(axis=0)
    return blank


def _read_picture(
    path: Path, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, np.ndarray, tuple[str, bytes] | None]:
    """(H×W×3 uint8, H×W valid mask, (format, bytes) when the file is plain RGB PNG/JPEG).

    ``ImageTooLarge`` when the header says the image has more than ``max_pixels`` pixels.
    """
    if path.suffix.lower() in RASTER_SUFFIXES:
        return _read_plain_tiff(path, max_pixels)
    from PIL import Image, UnidentifiedImageError

    try:
        raw = path.read_bytes()
        with open_image(raw, max_pixels, str(path)) as img:
            img.load()  # decode now, so a truncated file fails here
            fmt = img.format
            if img.mode == "RGB":
                return np.asarray(img), np.ones(img.size[::-1], bool), (fmt, raw)
            if img.mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")
            if img.mode in ("RGBA", "LA", "PA"):
                rgba = np.asarray(img.convert("RGBA"))
                return np.ascontiguousarray(rgba[..., :3]), rgba[..., 3] > 0, None
            return np.asarray(img.convert("RGB")), np.ones(img.size[::-1], bool), None
    except ImageTooLarge:
        raise
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise Unreadable(f"{path}: {exc}") from None


def _read_plain_tiff(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS):
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                check_pixels(ds.width, ds.height, max_pixels, str(path))  # from the header, before any pixel is read
                bands = _choose_bands(ds, None, path)
                data = ds.read(list(bands))
                valid = ds.read_masks(list(bands)).any(axis=0) & _finite(data)
                stretch = None
                if data.dtype != np.uint8:
                    stretch = _percentile_stretch(ds, bands, (2.0, 98.0), path)
    except ImageTooLarge:
        raise
    except Exception as exc:
        raise Unreadable(f"{path}: {exc}") from None
    return np.ascontiguousarray(_to_uint8(data, stretch, valid).transpose(1, 2, 0)), valid, None


def parse_crop(text: str | None) -> tuple[int, int, int, int]:
    """'N' (every side) or 'TOP,RIGHT,BOTTOM,LEFT', in pixels."""
    if not text:
        return (0, 0, 0, 0)
    try:
        values = [int(v) for v in str(text).split(",")]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 4
    if len(values) != 4 or min(values) < 0:
        raise UsageProblem(
            f"--crop {text!r} is not N or TOP,RIGHT,BOTTOM,LEFT pixels", hint="e.g. --crop 16 or --crop 0,0,24,0"
        )
    return tuple(values)  # type: ignore[return-value]


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


# ---------------------------------------------------------------- quadrants

QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")


def quadrant_boxes(w: int, h: int) -> list[tuple[int, int, int, int]]:
    """PIL crop boxes of the four quadrants of a w×h image, in ``QUADRANTS`` order."""
    return [(0, 0, w // 2, h // 2), (w // 2, 0, w, h // 2), (0, h // 2, w // 2, h), (w // 2, h // 2, w, h)]


def quadrant_crops(image: bytes, size: int | None = None, max_pixels: int | None = None) -> list[bytes]:
    """The four quadrant crops of a tile as PNG bytes, in ``QUADRANTS`` order (each at most ``size`` px a side).

    ``imagery.ImageTooLarge`` when the tile has more than ``max_pixels`` pixels (never decoded).
    """
    from PIL import Image

    with open_image(image, max_pixels, "it") as img:
        img = img.convert("RGB")
        out = []
        for box in quadrant_boxes(*img.size):
            buf = io.BytesIO()
            crop = img.crop(box)
            if size is not None and max(crop.size) > size:
                crop.thumbnail((size, size), Image.Resampling.LANCZOS)
            crop.save(buf, "PNG")
            out.append(buf.getvalue())
    return out
