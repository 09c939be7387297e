"""Benchmark `urbanln tile` against the plainest loop over the same windows.

The baseline is what anyone would write first: a rasterio windowed read, PIL
PNG encode, and a file write per 256-pixel window. Ours does the same work plus
nodata masks, geometry, lon/lat, GSD, Arrow shards and the final dataset.

    python bench/tile_bench.py                 # 8192² raster; RSS also on 16384² (4× the pixels)
    python bench/tile_bench.py --size 4096 --big 8192 --repeats 1   # quicker

Prints seconds, tiles/s and the ratios; peak RSS is measured in fresh processes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_raster(path: Path, size: int) -> Path:
    """A deflate-compressed, tiled RGB GeoTIFF with smooth structure plus noise, written in strips."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=3,
        dtype="uint8",
        crs="EPSG:32650",
        transform=from_origin(440_000, 4_420_000, 0.5, 0.5),
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    )
    tmp = path.with_suffix(".tmp.tif")
    cols = np.arange(size, dtype=np.float32)
    with rasterio.open(tmp, "w", **profile) as dst:
        for row in range(0, size, 512):
            rows = np.arange(row, min(size, row + 512), dtype=np.float32)[:, None]
            base = 110 + 60 * np.sin(cols / 97.0) * np.cos(rows / 131.0) + 30 * np.sin((cols + rows) / 23.0)
            strip = np.stack([base + 10 * c for c in range(3)]) + rng.normal(0, 6, (3, len(rows), size))
            dst.write(np.clip(strip, 0, 255).astype(np.uint8), window=Window(0, row, size, len(rows)))
    os.replace(tmp, path)
    return path


def baseline(raster: Path, out: Path, tile: int = 256) -> int:
    import rasterio
    from PIL import Image
    from rasterio.windows import Window

    out.mkdir(parents=True, exist_ok=True)
    n = 0
    with rasterio.open(raster) as ds:
        for row in range(0, ds.height, tile):
            for col in range(0, ds.width, tile):
                data = ds.read(window=Window(col, row, tile, tile))
                buf = io.BytesIO()
                Image.fromarray(np.ascontiguousarray(data.transpose(1, 2, 0))).save(buf, "PNG")
                (out / f"r{row}_c{col}.png").write_bytes(buf.getvalue())
                n += 1
    return n


def ours(raster: Path, out: Path, workers: int) -> int:
    from urbanln_cli.stages.tile import TileConfig, tile

    return tile(TileConfig(inputs=(raster,), out=out, size=256, workers=workers, overwrite=True)).rows


def timed(fn, *args) -> tuple[float, int]:
    start = time.perf_counter()
    n = fn(*args)
    return time.perf_counter() - start, n


def peak_rss_mb(code: str) -> float:
    """Peak RSS (MiB) of a fresh Python process running ``code``.

    Read from VmHWM in /proc: unlike getrusage's ru_maxrss it is not inherited
    from the parent across fork and exec.
    """
    script = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n{code}\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
        "print(int(hwm.split()[1]) / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=8192, help="raster side for the timings")
    parser.add_argument("--big", type=int, default=16384, help="raster side for the RSS check (0 to skip)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each; the best is kept")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args()

    raster = make_raster(args.workdir / f"bench_{args.size}.tif", args.size)
    raster.read_bytes()  # warm the page cache so neither side pays the first read
    results: dict[str, list[float]] = {"baseline": [], "ours_1": [], "ours_2": []}
    tiles = 0
    for _ in range(args.repeats):
        for name, fn, extra in (("baseline", baseline, ()), ("ours_1", ours, (1,)), ("ours_2", ours, (2,))):
            out = args.workdir / f"out_{name}"
            shutil.rmtree(out, ignore_errors=True)
            seconds, n = timed(fn, raster, out, *extra)
            results[name].append(seconds)
            tiles = n
            shutil.rmtree(out, ignore_errors=True)
    best = {k: min(v) for k, v in results.items()}
    report = {
        "raster": f"{args.size}x{args.size} RGB uint8, deflate, 256 px tiles",
        "tiles": tiles,
        "cpus": os.cpu_count(),
        "seconds": {k: round(v, 2) for k, v in best.items()},
        "tiles_per_s": {k: round(tiles / v, 1) for k, v in best.items()},
        "throughput_ratio_1_worker_vs_baseline": round(best["baseline"] / best["ours_1"], 3),
        "speedup_2_workers_vs_1": round(best["ours_1"] / best["ours_2"], 3),
    }
    if args.big:
        rss = {}
        for side in (args.size, args.big):
            path = make_raster(args.workdir / f"bench_{side}.tif", side)
            out = args.workdir / f"rss_{side}"
            rss[f"ours_{side}"] = peak_rss_mb(
                f"from bench.tile_bench import ours; from pathlib import Path; ours(Path({str(path)!r}), "
                f"Path({str(out)!r}), 1)"
            )
            shutil.rmtree(out, ignore_errors=True)
            rss[f"baseline_{side}"] = peak_rss_mb(
                f"from bench.tile_bench import baseline; from pathlib import Path; baseline(Path({str(path)!r}), "
                f"Path({str(out)!r}))"
            )
            shutil.rmtree(out, ignore_errors=True)
        report["peak_rss_mib"] = {k: round(v, 1) for k, v in rss.items()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
