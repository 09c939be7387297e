"""Benchmark `urbanln embed` against a bare encode_image loop over pre-decoded tensors.

Both use the same model, batch size and inference mode. Ours also decodes the
PNG tiles (in DataLoader workers) and writes the safetensors file, so the
ratio shows what the whole stage costs on top of the model itself.

    python bench/embed_bench.py                              # urbanln-tiny and ViT-B-16 on CPU
    python bench/embed_bench.py --arch ViT-B-16 --device cuda --tiles 4096   # images/s on a GPU (bf16)
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_tiles(out: Path, n: int, size: int) -> Path:
    import datasets
    from PIL import Image

    from urbanln_cli import artifacts
    from urbanln_cli.stages.tile import tile_features

    if out.exists():
        return out
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
        rows.append(
            {
                "tile_id": f"b/{i}",
                "image": {"bytes": buf.getvalue(), "path": None},
                "image_sha256": str(i),
                "source": "bench",
                "row_off": 0,
                "col_off": 0,
                "width": size,
                "height": size,
                "crs": "",
                "minx": 0.0,
                "miny": 0.0,
                "maxx": 0.0,
                "maxy": 0.0,
                "lon": 0.0,
                "lat": 0.0,
                "gsd": 1.0,
                "group": "b",
                "valid_fraction": 1.0,
            }
        )
    ds = datasets.Dataset.from_list(rows, features=tile_features())
    return artifacts.write_dataset(
        ds, out, artifacts.new_manifest("tiles", run=artifacts.RunInfo("bench"), inputs=[], rows=n)
    )


def run(arch: str, device_name: str, n: int, batch: int, workers: int, workdir: Path) -> dict:
    import datasets
    import torch
    from PIL import Image

    from urbanln_cli.models import create_model
    from urbanln_cli.stages.embed import EmbedConfig, embed

    device = torch.device(device_name)
    tiles = make_tiles(workdir / f"embed_tiles_{n}", n, 256)
    model, _, preprocess, _ = create_model(arch, "none", device=device_name)
    model.eval()
    ds = datasets.load_from_disk(str(tiles))
    decoded = torch.stack(
        [
            preprocess(Image.open(io.BytesIO(b["bytes"])).convert("RGB"))
            for b in ds.cast_column("image", datasets.Image(decode=False))["image"]
        ]
    )

    def bare():
        with torch.inference_mode():
            for start in range(0, n, batch):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    model.encode_image(decoded[start : start + batch].to(device), normalize=True).float().cpu()
        if device.type == "cuda":
            torch.cuda.synchronize()

    def ours():
        out = workdir / "bench_embeddings.safetensors"
        out.unlink(missing_ok=True)
        embed(
            EmbedConfig(
                tiles=tiles,
                baseline="random",
                arch=arch,
                out=out,
                batch_size=batch,
                workers=workers,
                device=device_name,
            )
        )

    times = {}
    for name, fn in (("bare", bare), ("ours", ours), ("bare", bare), ("ours", ours)):  # alternate; keep the best of two
        start = time.perf_counter()
        fn()
        times[name] = min(times.get(name, 1e9), time.perf_counter() - start)
    return {
        "arch": arch,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "tiles": n,
        "batch": batch,
        "workers": workers,
        "seconds": {k: round(v, 3) for k, v in times.items()},
        "images_per_s": {k: round(n / v, 1) for k, v in times.items()},
        "ratio_ours_vs_bare": round(times["bare"] / times["ours"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", action="append", help="repeatable; default urbanln-tiny and ViT-B-16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tiles", type=int, default=None, help="default: 1024 for tiny, 64 for ViT-B-16 on CPU")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for arch in args.arch or ["urbanln-tiny", "ViT-B-16"]:
        n = args.tiles or (1024 if arch == "urbanln-tiny" or args.device != "cpu" else 64)
        results.append(run(arch, args.device, n, args.batch, args.workers, args.workdir))
    print(json.dumps(results, indent=2))
    shutil.rmtree(args.workdir / "bench_embeddings.safetensors", ignore_errors=True)


if __name__ == "__main__":
    main()
