"""Rendering tiles: a ``Renderer`` turns each job of a ``Plan`` (a raster window or a picture) into a tile row."""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from urbanln_cli import geo
from urbanln_cli.errors import UsageProblem
from urbanln_cli.imagery.discovery import NAN, RASTER_SUFFIXES, Picture, Raster, _choose_bands, _percentile_stretch
from urbanln_cli.imagery.limits import DEFAULT_MAX_PIXELS, ImageTooLarge, check_pixels, open_image

JPEG_QUALITY = 90
GDAL_CACHE_BYTES = 64 << 20


@dataclass(frozen=True)
class RenderOptions:
    size: int = 256
    resize: int | None = None
    format: str = "png"
    min_valid: float = 0.5
    crop: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, right, bottom, left; pictures only
    max_pixels: int = DEFAULT_MAX_PIXELS  # image files with more pixels are skipped (counted as skipped_oversize)


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
