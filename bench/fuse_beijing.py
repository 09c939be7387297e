"""`fuse` in single-model mode over real VLM captions: the UrbanCLIP Beijing set.

The captions are LLaMA-Adapter V2's, of 4,592 Baidu z16 tiles of Beijing, split
into sentences (``../shared/data/urbanclip_beijing/captions_sentences.json``).
This script joins each tile's sentences into one caption, writes them to a JSONL
file and imports it as a ``captions`` artifact (model ``llama-adapter-v2``) the way
a user would, with ``caption --import FILE --no-tiles``, runs ``fuse`` with the
tiles' GSD given by ``--gsd`` (there are no tiles: the images are not redistributable),
and prints how many sentences and claims each step drops, with before/after
examples. With one model there is no cross-model support; the image checks need
the images, so they are off.

    python bench/fuse_beijing.py [--data ../shared/data/urbanclip_beijing] [--gsd 2.4] [--examples 10]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODEL = "llama-adapter-v2"


def load_panel(path: Path) -> dict[str, str]:
    """tile id -> the tile's caption (its sentences joined, in order)."""
    (sentences,) = json.loads(path.read_text())
    by_tile: dict[str, list[str]] = defaultdict(list)
    for s in sentences:
        text = s["caption"].strip()
        by_tile[s["image"]].append(text if text.endswith((".", "!", "?")) else text + ".")
    return {tile: " ".join(parts) for tile, parts in by_tile.items()}


def write_captions(panel: dict[str, str], out: Path) -> Path:
    """The panel as a captions artifact, through `caption --import` (the library call of it), with no tiles."""
    from urbanln_cli.stages.caption import CaptionConfig, caption

    source = out.parent / f"{MODEL}.jsonl"  # one row per tile; the model is the file's stem
    with open(source, "w", encoding="utf-8") as f:
        for tile_id, text in sorted(panel.items()):
            f.write(json.dumps({"tile_id": tile_id, "caption": text}, ensure_ascii=False) + "\n")
    return caption(CaptionConfig(tiles=None, out=out, imports=(source,))).out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/urbanclip_beijing"
    )
    parser.add_argument("--gsd", type=float, default=2.4, help="metres per pixel of the z16 tiles")
    parser.add_argument("--examples", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="which tiles are shown as examples")
    args = parser.parse_args()

    from urbanln_cli.stages.fuse import REASONS, FuseConfig, fuse
    from urbanln_cli.text.claims import parse_claims
    from urbanln_cli.text.clean import split_sentences
    from urbanln_cli.text.lexicon import load_lexicon

    panel = load_panel(args.data / "captions_sentences.json")
    lex = load_lexicon()
    raw_sentences = sum(len(split_sentences(c)) for c in panel.values())
    raw_claims = Counter()
    for caption in panel.values():
        for s in split_sentences(caption):
            for c in parse_claims(s, lex):
                raw_claims[c.concept or "(phrase)"] += 1
    with tempfile.TemporaryDirectory(prefix="fuse-beijing-") as tmp:
        captions = write_captions(panel, Path(tmp) / "captions")
        t0 = time.perf_counter()
        result = fuse(FuseConfig(captions=(captions,), tiles=None, gsd=args.gsd, out=Path(tmp) / "corpus"))
        seconds = time.perf_counter() - t0
        import datasets

        rows = datasets.load_from_disk(str(result.out)).to_list()
    kept_claims = Counter()
    dropped_concepts: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        for c in json.loads(row["claims"]):
            if c["in_caption"]:
                kept_claims[c["concept"] or "(phrase)"] += 1
        for d in json.loads(row["dropped"]):
            kind = (
                "(clause)"
                if d["reason"] == "filler"
                else "(sentence)"
                if d["reason"] not in ("too_small", "head_dropped")
                else "(phrase)"
            )
            dropped_concepts[d["reason"]][d.get("concept") or kind] += 1

    print(
        f"{len(panel)} tiles, {raw_sentences} sentences, {sum(raw_claims.values())} claims in the raw captions; "
        f"fused in {seconds:.1f} s at GSD {args.gsd} m/px (single model: no support step)\n"
    )
    print(f"{'step: reason':<28} {'dropped':>8}  most dropped")
    for reason in REASONS:
        n = result.counts.get(f"dropped_{reason}", 0)
        if n:
            top = ", ".join(f"{k} {v}" for k, v in dropped_concepts[reason].most_common(5))
            print(f"{reason:<28} {n:>8}  {top}")
    total_kept = sum(kept_claims.values())
    print(
        f"\nclaims kept in the captions: {total_kept} of {sum(raw_claims.values())} "
        f"({total_kept / max(1, sum(raw_claims.values())):.1%}); tiles with a caption: {len(rows)} of {len(panel)}"
    )
    for concept in ("car", "bus", "truck", "traffic_light", "person", "road_sign", "pedestrian"):
        if raw_claims.get(concept):
            print(f"  {concept:<14} raw {raw_claims[concept]:>6}  kept {kept_claims.get(concept, 0):>6}")

    by_id = {r["tile_id"]: r for r in rows}
    changed = [t for t in sorted(by_id) if json.loads(by_id[t]["dropped"])]
    random.Random(args.seed).shuffle(changed)
    print(f"\n{min(args.examples, len(changed))} before/after examples (random tiles with a drop, seed {args.seed}):")
    for t in changed[: args.examples]:
        row = by_id[t]
        print(f"\n--- {t}\nbefore: {panel[t]}\nafter:  {row['caption']}\nshort:  {row['caption_short']}")
        for d in json.loads(row["dropped"]):
            print(f"  dropped ({d['reason']}): {d['text']}")


if __name__ == "__main__":
    main()
