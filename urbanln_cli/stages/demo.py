"""The whole chain on a synthetic city, ending in the paper's ablation table.

synth → tile → label → caption (simulated panel) → fuse → pretrain (tiny, CPU) →
embed → probe on every indicator with a spatial split. Beside UrbanLN it trains
and probes the ablations (no stretch, no distillation, one model's captions
without fusion) and the random-weights and pixel baselines, so every number in
the table comes from runs it just did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

TARGETS = ("population", "carbon", "gdp", "nightlight")
PANEL = ("sim:precise", "sim:verbose", "sim:hallucinating", "sim:generic")
SINGLE = "sim:verbose"  # the one model whose raw captions the no-fusion ablation trains on

# name in the table -> what differs from UrbanLN
VARIANTS = {
    "UrbanLN": {},
    "w/o stretch (77 tokens)": {"context_length": 77},
    "w/o distillation": {"distill_weight": 0.0},
    "single model, no fusion": {"corpus": "corpus_single"},
}
BASELINES = {"random weights": "random", "pixels": "pixels"}


@dataclass(frozen=True)
class DemoConfig:
    out: Path = Path("demo")
    quick: bool = False  # a smaller city and fewer epochs: about a minute
    seed: int = 0
    workers: int = 2


@dataclass
class DemoResult:
    out: Path
    table: dict[str, dict[str, float]]  # variant -> target -> R² (mean over spatial folds)
    maps: dict[str, str]
    probe: Path
    notes: list[str] = field(default_factory=list)


def demo(config: DemoConfig, say: Callable[[str], None] = lambda _: None) -> DemoResult:
    from urbanln_cli.stages.caption import CaptionConfig, caption
    from urbanln_cli.stages.embed import EmbedConfig, embed
    from urbanln_cli.stages.fuse import FuseConfig, fuse
    from urbanln_cli.stages.label import LabelConfig, RasterTarget, label
    from urbanln_cli.stages.pretrain import PretrainConfig, pretrain
    from urbanln_cli.stages.probe import ProbeConfig, probe
    from urbanln_cli.stages.tile import TileConfig, tile
    from urbanln_cli.synth import SynthConfig, synth_city

    out = Path(config.out)
    size, epochs, batch = (1024, 3, 16) if config.quick else (2048, 8, 32)
    city = out / "city"

    say(f"synth: a {size}² px city")
    synth_city(SynthConfig(out=city, size=size, seed=config.seed, overwrite=True))
    say("tile")
    tiles = tile(TileConfig(inputs=(city / "imagery.tif",), out=out / "tiles", size=128, min_valid=0, overwrite=True, workers=1)).out
    say("label")
    rasters = (RasterTarget("population", city / "population.tif", "sum"), RasterTarget("carbon", city / "carbon.tif", "sum"),
               RasterTarget("gdp", city / "gdp.tif", "sum"), RasterTarget("nightlight", city / "nightlight.tif", "sum"),
               RasterTarget("landcover", city / "landcover.tif", "fractions"))
    labels = label(LabelConfig(tiles=tiles, out=out / "labels", rasters=rasters, overwrite=True)).out
    say(f"caption: {', '.join(PANEL)}")
    captions = caption(CaptionConfig(tiles=tiles, out=out / "captions", models=PANEL, concurrency=8, overwrite=True)).out
    single = caption(CaptionConfig(tiles=tiles, out=out / "captions_single", models=(SINGLE,), concurrency=8, overwrite=True)).out
    say("fuse")
    corpora = {
        "corpus": fuse(FuseConfig(captions=(captions,), tiles=tiles, out=out / "corpus", overwrite=True)).out,
        "corpus_single": fuse(FuseConfig(captions=(single,), tiles=tiles, out=out / "corpus_single", clean=False, visibility=False,
                                         support=False, consensus=False, overwrite=True)).out,
    }
    embeddings: dict[str, Path] = {}
    for name, change in VARIANTS.items():
        say(f"pretrain: {name}")
        slug = _slug(name)
        settings = dict(tiles=tiles, corpus=corpora[change.get("corpus", "corpus")], out=out / "runs" / slug, arch="urbanln-tiny",
                        pretrained="none", epochs=epochs, batch_size=batch, queue_size=batch * 8, lr=5e-4, warmup_steps=5,
                        workers=config.workers, device="cpu", seed=config.seed, overwrite=True)
        settings.update({k: v for k, v in change.items() if k != "corpus"})
        run = pretrain(PretrainConfig(**settings)).out
        embeddings[name] = embed(EmbedConfig(tiles=tiles, model=run, out=out / "embeddings" / f"{slug}.safetensors",
                                             workers=config.workers, device="cpu", overwrite=True)).out
    for name, baseline in BASELINES.items():
        say(f"embed: {name} baseline")
        embeddings[name] = embed(EmbedConfig(tiles=tiles, baseline=baseline, arch="urbanln-tiny", seed=config.seed,
                                             out=out / "embeddings" / f"{_slug(name)}.safetensors", workers=config.workers,
                                             device="cpu", overwrite=True)).out
    say("probe: ridge, spatial split")
    block_km = size / 1000 / 4  # about 16 spatial blocks over the city
    # carbon comes on 1 km cells: a city of 1 km or less has one cell, so nothing to predict
    targets = [t for t in TARGETS if t != "carbon" or size * 1.0 >= 2000]
    result = probe(ProbeConfig(target=",".join(targets), embeddings=tuple(embeddings.values()), labels=labels, out=out / "probe",
                               split="spatial", block_km=block_km, seed=config.seed, overwrite=True))
    names = dict(zip((str(p) for p in embeddings.values()), embeddings))
    by_file = {}
    for row in result.table:
        by_file.setdefault(row["embeddings"], {})[row["target"]] = row["r2_mean"]
    table = {}
    for path, variant in names.items():
        stem = Path(path).with_suffix("").name
        key = next((k for k in by_file if k == stem or k.endswith("/" + stem)), None)
        table[variant] = by_file.get(key, {})
    maps = {t: str(result.out / files["map"]) for t, files in result.plots.items() if "map" in files}
    return DemoResult(out, table, maps, result.out)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_").replace("__", "_")
