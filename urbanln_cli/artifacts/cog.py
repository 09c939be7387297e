"""Cloud-Optimized GeoTIFFs: float32 bands written band by band, then laid out by GDAL's COG driver.

The COG driver only copies a finished dataset, so the bands go into a plain tiled
GeoTIFF beside the output first (one band in memory at a time), and GDAL copies that
into the COG layout: tiles, overviews and the header up front. The temporary file is
an urbanln leftover name, removed on success and failure alike.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from urbanln_cli.artifacts.outputs import atomic_file, remove

BLOCK_BYTES = 16 << 20  # a pixel-interleaved block holds every band: keep one under ~16 MB uncompressed


def cog_blocksize(bands: int) -> int:
    """The block side for ``bands`` float32 bands: a power of two from 16 to 512 under ``BLOCK_BYTES``."""
    side = math.isqrt(max(1, BLOCK_BYTES // (4 * max(1, bands))))
    return int(min(512, max(16, 1 << (side.bit_length() - 1))))


def write_cog(
    path: Path | str,
    band: Callable[[int], np.ndarray],
    *,
    count: int,
    height: int,
    width: int,
    transform: Sequence[float],
    crs: str,
    descriptions: Sequence[str],
    tags: Mapping[str, Any] | None = None,
    resampling: str = "AVERAGE",
    blocksize: int | None = None,
) -> Path:
    """Write ``count`` float32 bands (``band(i)`` gives band i, 0-based, shape (height, width)) as a COG.

    NaN is the nodata value. ``transform`` is the affine (a, b, c, d, e, f); ``crs`` is EPSG:N or WKT.
    ``resampling`` is how overviews are made: AVERAGE for continuous values, NEAREST for classes.
    """
    import rasterio
    from rasterio.shutil import copy as gdal_copy
    from rasterio.transform import Affine

    path = Path(path)
    blocksize = blocksize or cog_blocksize(count)
    plain = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": "float32",
        "crs": crs,
        "transform": Affine(*transform[:6]),
        "nodata": float("nan"),
        "tiled": True,
        "blockxsize": blocksize,
        "blockysize": blocksize,
        "BIGTIFF": "IF_SAFER",
    }
    try:
        with rasterio.open(plain, "w", **profile) as dst:
            for i in range(count):
                dst.write(np.asarray(band(i), np.float32), i + 1)
            dst.descriptions = tuple(descriptions)
            dst.update_tags(
                **{k: v if isinstance(v, str) else json.dumps(v, default=str) for k, v in (tags or {}).items()}
            )
        with atomic_file(path) as tmp:
            gdal_copy(
                plain,
                tmp,
                driver="COG",
                BLOCKSIZE=blocksize,
                COMPRESS="DEFLATE",
                PREDICTOR="YES",  # the floating-point predictor: smooth fields compress several times better
                RESAMPLING=resampling,
                BIGTIFF="IF_SAFER",
            )
    finally:
        remove(plain, "leftover")
    return path
