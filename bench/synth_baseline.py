"""How hard is the synthetic city? A colour-and-texture ridge probe, with spatial-block CV.

Builds a 4096² city (`urbanln synth city`), cuts 128-px tiles, labels them with
every indicator and the land-cover fractions, and predicts each target from
per-tile colour histograms and simple texture statistics with ridge regression
under 5-fold cross-validation over spatial blocks (so neighbouring tiles never
sit on both sides of a split). If colour alone predicted population or land use
with R² near 1, the city would be too easy to show what learning adds.

    python bench/synth_baseline.py [--size 4096] [--tile 128] [--seed 0]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def features(png: bytes) -> np.ndarray:
    from PIL import Image

    from urbanln_cli.pixel_features import pixel_features

    return pixel_features(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args()

    import datasets
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from urbanln_cli.stages.label import LabelConfig, RasterTarget, label
    from urbanln_cli.stages.tile import TileConfig, tile

    city = args.workdir / f"synth_{args.size}_{args.seed}"
    if not (city / "scene.json").is_file():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "urbanln_cli",
                "synth",
                "city",
                str(city),
                "--size",
                str(args.size),
                "--seed",
                str(args.seed),
                "--overwrite",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    tiles = tile(
        TileConfig(
            inputs=(city / "imagery.tif",),
            out=city / f"tiles_{args.tile}",
            size=args.tile,
            min_valid=0,
            overwrite=True,
            workers=1,
        )
    ).out
    targets = [
        RasterTarget("population", city / "population.tif", "sum"),
        RasterTarget("carbon", city / "carbon.tif", "sum"),
        RasterTarget("gdp", city / "gdp.tif", "sum"),
        RasterTarget("nightlight", city / "nightlight.tif", "mean"),
        RasterTarget("landcover", city / "landcover.tif", "fractions"),
    ]
    labels_out = label(
        LabelConfig(tiles=tiles, out=city / f"labels_{args.tile}", rasters=tuple(targets), overwrite=True)
    ).out

    ds = datasets.load_from_disk(str(tiles)).cast_column("image", datasets.Image(decode=False))
    X = np.stack([features(img["bytes"]) for img in ds["image"]])
    rows, cols = np.asarray(ds["row_off"]) // args.tile, np.asarray(ds["col_off"]) // args.tile
    block = max(1, int(np.sqrt(len(ds)) // 4))  # about 4 × 4 spatial blocks
    groups = (rows // block) * 1000 + cols // block
    labels = datasets.load_from_disk(str(labels_out)).to_pandas()
    report = {
        "city": f"{args.size}² px, seed {args.seed}",
        "tiles": len(ds),
        "features": X.shape[1],
        "cv": "5-fold GroupKFold over spatial blocks",
        "r2": {},
    }
    names = ["population", "carbon", "gdp", "nightlight"] + [c for c in labels.columns if c.startswith("landcover_")]
    for name in names:
        y = labels[name].to_numpy(np.float64)
        ok = np.isfinite(y)
        if name in ("population", "carbon", "gdp"):
            y = np.log1p(np.clip(y, 0, None))
        if ok.sum() < 20 or np.nanstd(y[ok]) == 0:
            continue
        pred = np.full(ok.sum(), np.nan)
        for train, test in GroupKFold(n_splits=5).split(X[ok], y[ok], groups[ok]):
            model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
            model.fit(X[ok][train], y[ok][train])
            pred[test] = model.predict(X[ok][test])
        ss_res = ((y[ok] - pred) ** 2).sum()
        ss_tot = ((y[ok] - y[ok].mean()) ** 2).sum()
        report["r2"][name] = round(1 - ss_res / ss_tot, 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
