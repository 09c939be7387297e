"""Seeded generators for test imagery: GeoTIFFs, image folders and XYZ folders.

Binary fixtures stay out of git; these make them on demand (torchgeo style).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_geotiff(
    path: Path,
    *,
    width: int = 300,
    height: int = 200,
    count: int = 3,
    dtype: str = "uint8",
    crs: str = "EPSG:32633",
    origin: tuple[float, float] = (500_000.0, 5_000_000.0),
    res: float = 2.0,
    nodata: float | None = None,
    seed: int = 0,
    data: np.ndarray | None = None,
) -> np.ndarray:
    """Write a north-up GeoTIFF and return its pixels (count, height, width)."""
    import rasterio
    from rasterio.transform import from_origin

    if data is None:
        rng = np.random.default_rng(seed)
        if dtype == "uint8":
            data = rng.integers(1, 255, size=(count, height, width), dtype=np.uint8)
        else:
            data = (rng.random((count, height, width)) * 1000).astype(dtype)
    count, height, width = data.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=count,
        dtype=data.dtype,
        crs=crs,
        transform=from_origin(origin[0], origin[1], res, res),
        nodata=nodata,
    ) as dst:
        dst.write(data)
    return data


def make_image_folder(folder: Path, n: int = 4, size: int = 64, corrupt: int = 1, seed: int = 0) -> list[Path]:
    """PNG and JPEG pictures, plus ``corrupt`` truncated files. Returns the good ones."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    good = []
    for i in range(n):
        arr = rng.integers(1, 255, size=(size, size, 3), dtype=np.uint8)
        path = folder / (f"img{i:02d}.png" if i % 2 == 0 else f"img{i:02d}.jpg")
        Image.fromarray(arr).save(path)
        good.append(path)
    for i in range(corrupt):
        data = good[0].read_bytes()
        (folder / f"broken{i}.png").write_bytes(data[: len(data) // 3])
    return good


def make_xyz(folder: Path, z: int, xs: range, ys: range, size: int = 32, seed: int = 0) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for x in xs:
        for y in ys:
            path = folder / str(z) / str(x) / f"{y}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(1, 255, size=(size, size, 3), dtype=np.uint8)).save(path)
            paths.append(path)
    return paths
