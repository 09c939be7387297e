"""Calibrate the simulated panel against real captions: length, and where the target-relevant facts stand.

Compares the fused captions of the sim chain (panel -> fuse, and panel -> check
-> refine -> fuse) on a synthetic city with the real LLaMA-Adapter V2 captions
of 4,592 Beijing tiles (``../shared/data/urbanclip_beijing/captions_sentences.json``,
sentences grouped by image into one caption each, as ``fuse_beijing.py`` does),
as they are and after ``fuse``'s single-model cleaning (``--gsd 2.4``, no tiles:
clean and visibility only), the steps the sim's unrefined chain also goes through:

- token length (CLIP BPE, start and end tokens included: ``text.tokens``):
  percentiles and the share over 77 (what CLIP's context cuts);
- target-relevant facts: claims (``text.claims`` with the built-in lexicon)
  about land use (every ``land_use`` concept), buildings and roofs, roads,
  highways, railways and parking, or carrying a density or height word (dense,
  high-rise, ...), absence claims included. These are what carbon, population
  and GDP follow; cars, people, trees and water are not counted. A fact is
  *past token 77* when its term starts after the first 75 text tokens (CLIP's
  77 minus the start and end tokens), and *new* past 77 when no relevant claim
  of the same concept and polarity came before that point.

The sim settings (persona verbosity, how much a rewrite adds: ``local_detail``)
are chosen from these figures only, never from an ablation table; the rationale
is in docs/fuse.md ("The simulated panel's calibration").

    python bench/sim_calibration.py [--size 3000] [--gsd 4] [--tile 125] [--refiner sim:precise]
        [--local-detail N] [--work DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PANEL = ("sim:precise", "sim:verbose", "sim:hallucinating", "sim:generic")
BEIJING = Path(__file__).resolve().parents[2] / "shared" / "data" / "urbanclip_beijing" / "captions_sentences.json"
CLIP_TEXT_TOKENS = 75  # CLIP's 77 minus the start and end tokens
BUILT = {"building", "roof", "road", "highway", "railway", "railway_station", "parking", "bridge"}
DENSITY_WORDS = {
    "dense", "densely packed", "high-density", "low-density", "medium-density", "mid-density", "sparse",
    "sparsely built", "compact", "high-rise", "low-rise", "mid-rise", "multi-storey", "single-storey", "tall",
}  # fmt: skip


def beijing_captions(path: Path) -> list[str]:
    (sentences,) = json.loads(path.read_text())
    by_tile: dict[str, list[str]] = defaultdict(list)
    for s in sentences:
        text = s["caption"].strip()
        by_tile[s["image"]].append(text if text.endswith((".", "!", "?")) else text + ".")
    return [" ".join(parts) for parts in by_tile.values()]


def relevant(claim, lexicon) -> bool:
    concept = lexicon.concepts.get(claim.concept) if claim.concept else None
    if concept is None:
        return False
    return concept.kind == "land_use" or claim.concept in BUILT or bool(DENSITY_WORDS & set(claim.attributes))


def facts_by_position(caption: str, lexicon, count) -> list[tuple[int, tuple[str, bool]]]:
    """(text tokens before the claim's term, (concept, negated)) of every relevant claim, in order."""
    from urbanln_cli.text.claims import parse_claims
    from urbanln_cli.text.clean import split_sentences

    out, before = [], ""
    for sentence in split_sentences(caption):
        for claim in parse_claims(sentence, lexicon):
            if relevant(claim, lexicon) and claim.spans:
                start = claim.spans[0][0]
                position = count((before + " " + sentence[:start]).strip()) - 2
                out.append((position, (claim.concept, claim.negated)))
        before = (before + " " + sentence).strip()
    return out


def describe(captions: list[str], lexicon, count) -> dict:
    import numpy as np

    lengths = np.array([count(c) for c in captions])
    total = past = new = 0
    captions_with_new = 0
    for c in captions:
        facts = facts_by_position(c, lexicon, count)
        early = {key for pos, key in facts if pos < CLIP_TEXT_TOKENS}
        late = [key for pos, key in facts if pos >= CLIP_TEXT_TOKENS]
        total += len(facts)
        past += len(late)
        fresh = [k for k in late if k not in early]
        new += len(fresh)
        captions_with_new += bool(fresh)
    return {
        "captions": len(captions),
        "tokens_p10_p25_p50_p75_p90": [int(v) for v in np.percentile(lengths, [10, 25, 50, 75, 90])],
        "share_over_77": round(float((lengths > 77).mean()), 3),
        "relevant_facts_per_caption": round(total / max(1, len(captions)), 2),
        "share_relevant_facts_past_77": round(past / max(1, total), 3),
        "share_relevant_facts_new_past_77": round(new / max(1, total), 3),
        "share_captions_with_new_relevant_fact_past_77": round(captions_with_new / max(1, len(captions)), 3),
    }


def fused_beijing(captions: list[str], work: Path) -> list[str]:
    """The real captions through `fuse` as one model (imported with `caption --import`, GSD 2.4 m, no tiles)."""
    import datasets

    from bench.fuse_beijing import write_captions
    from urbanln_cli.stages.fuse import FuseConfig, fuse

    out = work / "beijing"
    corpus = out / "corpus"
    if not corpus.exists():  # the real captions do not change between what-if runs in one --work folder
        out.mkdir(exist_ok=True)
        imported = write_captions({f"t{i}": c for i, c in enumerate(captions)}, out / "captions")
        fuse(FuseConfig(captions=(imported,), tiles=None, gsd=2.4, out=corpus, overwrite=True))
    return datasets.load_from_disk(str(corpus))["caption"]


def sim_chain(work: Path, args) -> dict[str, list[str]]:
    """Fused captions of the sim chain without and with refinement (and the raw panel captions)."""
    import datasets

    from urbanln_cli.captioners.sim import PERSONAS
    from urbanln_cli.stages.caption import CaptionConfig, caption
    from urbanln_cli.stages.fuse import FuseConfig, fuse
    from urbanln_cli.stages.tile import TileConfig, tile
    from urbanln_cli.synth import SynthConfig, synth_city

    for name in list(PERSONAS):  # what-ifs for the choice of settings, not the shipped values
        if args.local_detail is not None:
            PERSONAS[name] = replace(PERSONAS[name], local_detail=args.local_detail)
        if args.detail_scale is not None:
            PERSONAS[name] = replace(PERSONAS[name], detail=max(1, round(PERSONAS[name].detail * args.detail_scale)))
    city = work / "city"
    if not (city / "scene.json").is_file():
        synth_city(SynthConfig(out=city, size=args.size, gsd=args.gsd, seed=args.seed, overwrite=True))
    tiles = work / "tiles"
    if not tiles.exists():
        tile(TileConfig(inputs=(city / "imagery.tif",), out=tiles, size=args.tile, min_valid=0, workers=1))
    captions = caption(
        CaptionConfig(tiles=tiles, out=work / "captions", models=PANEL, concurrency=8, overwrite=True)
    ).out
    plain = fuse(FuseConfig(captions=(captions,), tiles=tiles, out=work / "corpus", overwrite=True)).out
    refined = fuse(
        FuseConfig(
            captions=(captions,),
            tiles=tiles,
            out=work / "corpus_refined",
            image_check="vlm",
            refine=args.refiner,
            overwrite=True,
        )
    ).out
    raw = datasets.load_from_disk(str(captions))
    return {
        "sim raw panel captions": [c for c in raw["caption"] if c],
        "sim fused, w/o refinement": datasets.load_from_disk(str(plain))["caption"],
        f"sim fused, check + refine ({args.refiner})": datasets.load_from_disk(str(refined))["caption"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=BEIJING)
    parser.add_argument("--size", type=int, default=3000, help="city side in pixels (the demo's: 3000)")
    parser.add_argument("--gsd", type=float, default=4.0)
    parser.add_argument("--tile", type=int, default=125)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--refiner", default="sim:precise")
    parser.add_argument("--local-detail", type=int, default=None, help="override every persona's local_detail")
    parser.add_argument("--detail-scale", type=float, default=None, help="scale every persona's detail (verbosity)")
    parser.add_argument("--work", type=Path, default=None, help="keep the city and artifacts here (reused)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from urbanln_cli.text.lexicon import load_lexicon
    from urbanln_cli.text.tokens import clip_counter

    lexicon, count = load_lexicon(), clip_counter("ViT-B-16")
    started = time.time()
    real = beijing_captions(args.data)
    results = {"real LLaMA-Adapter V2, Beijing": describe(real, lexicon, count)}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results["real Beijing, fused (clean + visibility)"] = describe(fused_beijing(real, work), lexicon, count)
        for name, captions in sim_chain(work, args).items():
            results[name] = describe(captions, lexicon, count)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    keys = list(next(iter(results.values())))
    width = max(map(len, results))
    for key in keys:
        print(key)
        for name, row in results.items():
            print(f"  {name:<{width}}  {row[key]}")
    print(f"({time.time() - started:.0f} s; relevant = land use, buildings/roofs, roads/rail/parking, density words)")


if __name__ == "__main__":
    main()
