"""Benchmark the quality of `urbanln fuse` on a synthetic city captioned by the simulated panel.

Every sentence the simulated models write carries its truth label ("true", or the
error it makes), so every claim can be scored. We build the city, tile it and
caption it with sim:precise, sim:verbose, sim:hallucinating and sim:generic, then
report, against the plainest baseline (the raw captions):

- claim precision: share of claims that come from sentences labelled "true"
  and keep their polarity: a claim about a concept the sentence says is absent
  ("there are no cars", "..., without any water bodies") is true only when the
  claim is negated, and a negated claim only when the sentence denies it (each
  kept claim that does not is a negation flip, counted apart);
- sentence precision: the same over sentences (boilerplate counts as not true);
- recall: share of the true facts the panel stated, per tile (the union over
  models of (tile, fact, polarity) with a true sentence or clause), that the
  output still states.

Fuse is scored two ways: "caption" (the chosen consensus caption only) and
"candidates" (all refined candidates: the whole corpus row). Each step is then
switched off in turn (the ablation), and --min-support is varied.

    python bench/fuse_quality.py                  # builds the city in a temporary folder
    python bench/fuse_quality.py --workdir /tmp/fq --size 2048
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
for _k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_k, "1")

PANEL = "sim:precise,sim:verbose,sim:hallucinating,sim:generic"


def build(work: Path, size: int, tile: int) -> None:
    urbanln = [sys.executable, "-m", "urbanln_cli", "-q"]
    if not (work / "city" / "imagery.tif").exists():
        subprocess.run([*urbanln, "synth", "city", str(work / "city"), "--size", str(size)], check=True, cwd=work)
    if not (work / "tiles").exists():
        subprocess.run(
            [*urbanln, "tile", str(work / "city" / "imagery.tif"), "--size", str(tile), "-o", str(work / "tiles")],
            check=True,
            cwd=work,
        )
    if not (work / "captions").exists():
        subprocess.run(
            [*urbanln, "caption", str(work / "tiles"), "--models", PANEL, "-o", str(work / "captions")],
            check=True,
            cwd=work,
        )


def load_labels(captions: Path) -> dict[tuple[str, str], list[dict]]:
    import datasets

    from urbanln_cli.text.clean import split_sentences

    ds = datasets.load_from_disk(str(captions))
    labels, mismatched = {}, 0
    for row in ds.select_columns(["tile_id", "model", "caption", "sentence_labels", "error"]):
        if row["error"]:
            continue
        sentences = json.loads(row["sentence_labels"])["sentences"]
        if [s["text"] for s in sentences] != split_sentences(row["caption"]):
            mismatched += 1
        labels[(row["tile_id"], row["model"])] = sentences
    if mismatched:
        print(f"warning: {mismatched} captions split into other sentences than their labels", file=sys.stderr)
    return labels


def truth_union(labels) -> set[tuple[str, str, str]]:
    """(tile, fact, polarity) for every fact some model stated truthfully, in a sentence or an attached clause."""
    return {
        (tile, a["fact"], a.get("polarity", "present"))
        for (tile, _), sents in labels.items()
        for s in sents
        if s["label"] == "true"
        for a in (s, *s.get("also", ()))
    }


def negated(claim) -> bool:
    """Whether a claim (a Claim or its JSON) says its concept is absent; a parser without negation never does."""
    get = claim.get if isinstance(claim, dict) else lambda k, d=None: getattr(claim, k, d)
    return bool(get("negated", False)) or get("polarity", None) in ("absent", "negative", "negated")


def judge(sentence: dict, concept: str | None, is_negated: bool) -> tuple[bool, bool, list[tuple[str, str]]]:
    """(true, flipped, facts stated) for a claim from ``sentence``: polarity must match what the sentence asserts."""
    denied = set(sentence.get("absent", ()))
    flipped = (concept in denied) != is_negated if concept is not None else (is_negated and not denied)
    ok = sentence["label"] == "true" and not flipped
    if not ok:
        return False, flipped, []
    for a in sentence.get("also", ()):
        if a.get("polarity") == "absent" and concept in a.get("absent", ()):
            return True, False, [(a["fact"], "absent")]
    facts = [(sentence["fact"], sentence.get("polarity", "present"))]
    return (
        True,
        False,
        facts + [(a["fact"], "present") for a in sentence.get("also", ()) if a.get("polarity") != "absent"],
    )


def score_raw(labels, lexicon, models: list[str] | None) -> dict[str, float]:
    from urbanln_cli.text.claims import parse_claims

    claims = Counter()
    sentences = Counter()
    facts = set()
    flips = 0
    for (tile, model), sents in labels.items():
        if models is not None and model not in models:
            continue
        for i, s in enumerate(sents):
            sentences[s["label"] == "true"] += 1
            for c in parse_claims(s["text"], lexicon, model=model, sentence=i):
                ok, flipped, stated = judge(s, c.concept, negated(c))
                claims[ok] += 1
                flips += flipped
                facts.update((tile, f, p) for f, p in stated)
    return {
        "claims": claims[True] + claims[False],
        "claim_precision": claims[True] / max(1, claims[True] + claims[False]),
        "sentence_precision": sentences[True] / max(1, sentences[True] + sentences[False]),
        "facts": facts,
        "flips": flips,
    }


def score_fused(rows, labels, which: str) -> dict[str, float]:
    """which: 'caption' (chosen caption) or 'candidates' (every refined candidate)."""
    claims = Counter()
    sentences = Counter()
    facts = set()
    flips = 0
    for row in rows:
        tile = row["tile_id"]
        for c in json.loads(row["claims"]):
            if which == "caption" and not c["in_caption"]:
                continue
            if which == "candidates" and not c["in_candidate"]:
                continue
            ok, flipped, stated = judge(labels[(tile, c["model"])][c["sentence"]], c.get("concept"), negated(c))
            claims[ok] += 1
            flips += flipped
            facts.update((tile, f, p) for f, p in stated)
        for cand in row["candidates"]:
            if which == "caption" and cand["model"] != row["model"]:
                continue
            for i in cand["sentences"]:
                sentences[labels[(tile, cand["model"])][i]["label"] == "true"] += 1
    return {
        "claims": claims[True] + claims[False],
        "claim_precision": claims[True] / max(1, claims[True] + claims[False]),
        "sentence_precision": sentences[True] / max(1, sentences[True] + sentences[False]),
        "facts": facts,
        "flips": flips,
    }


def run_fuse(config, merged, gsd, tools) -> list[dict]:
    from urbanln_cli.stages.fuse import fuse_tile

    rows = []
    for tile in sorted(merged):
        row = fuse_tile(tile, merged[tile], gsd.get(tile), config, tools)
        if row is not None:
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--workdir", type=Path, help="where to build the city (reused if present); default a temporary folder"
    )
    parser.add_argument("--size", type=int, default=2048, help="city raster size in pixels")
    parser.add_argument("--tile", type=int, default=128, help="tile size in pixels")
    args = parser.parse_args()

    from urbanln_cli.stages.fuse import FuseConfig, _tools, load_captions, load_gsd

    with tempfile.TemporaryDirectory(prefix="fuse-quality-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        build(work, args.size, args.tile)
        print(f"city {args.size}px, tiles {args.tile}px, panel {PANEL} (built in {time.perf_counter() - t0:.1f}s)\n")
        labels = load_labels(work / "captions")
        union = truth_union(labels)
        merged, _, _ = load_captions((work / "captions",))
        gsd, _ = load_gsd(work / "tiles")
        base = FuseConfig(captions=(work / "captions",), tiles=work / "tiles")
        tools = _tools(base)
        models = sorted({m for _, m in labels})
        label_counts = Counter(s["label"] for sents in labels.values() for s in sents)
        print(
            f"{len(merged)} tiles, {len(labels)} captions, {sum(label_counts.values())} sentences: "
            + ", ".join(f"{k} {v}" for k, v in label_counts.most_common())
        )
        absent = sum(
            a.get("polarity") == "absent" for sents in labels.values() for s in sents for a in (s, *s.get("also", ()))
        )
        print(f"true facts stated by the panel (tile, fact, polarity): {len(union)}; absence assertions: {absent}\n")

        header = f"{'output':<44} {'claims':>7} {'claim P':>8} {'sent. P':>8} {'recall':>7} {'flips':>6}"
        print(header)
        print("-" * len(header))

        def line(name, r):
            print(
                f"{name:<44} {r['claims']:>7} {r['claim_precision']:>8.3f} {r['sentence_precision']:>8.3f} "
                f"{len(r['facts'] & union) / len(union):>7.3f} {r['flips']:>6}"
            )

        for m in models:
            line(f"raw {m}", score_raw(labels, tools.lexicon, [m]))
        line("raw panel (all four)", score_raw(labels, tools.lexicon, None))
        print()
        variants = [
            ("fuse: all steps", base),
            ("fuse: --no-clean", replace(base, clean=False)),
            ("fuse: --no-visibility", replace(base, visibility=False)),
            ("fuse: --no-support", replace(base, support=False)),
            ("fuse: --no-consensus", replace(base, consensus=False)),
            ("fuse: every step off", replace(base, clean=False, visibility=False, support=False, consensus=False)),
            ("fuse: --min-support 0.5", replace(base, min_support=0.5)),
            ("fuse: --min-support 0.67", replace(base, min_support=0.67)),
        ]
        for name, config in variants:
            t = time.perf_counter()
            rows = run_fuse(config, merged, gsd, tools)
            elapsed = time.perf_counter() - t
            line(f"{name} [caption]", score_fused(rows, labels, "caption"))
            line(f"{name} [candidates]", score_fused(rows, labels, "candidates"))
            if name == "fuse: all steps":
                cut = sum(r["cut"] for r in rows)
                print(
                    f"{'':<44} ({elapsed:.1f}s for {len(rows)} tiles, {len(merged) / elapsed:.0f} tiles/s; {cut} cut; "
                    f"max tokens {max(r['tokens'] for r in rows)}, max short tokens "
                    f"{max(r['short_tokens'] for r in rows)})"
                )
                errors = Counter()
                for row in rows:
                    for c in json.loads(row["claims"]):
                        s = labels[(row["tile_id"], c["model"])][c["sentence"]]
                        ok, flipped, _ = judge(s, c.get("concept"), negated(c))
                        if c["in_candidate"] and not ok:
                            errors["negation_flip" if flipped else s["label"]] += 1
                print(f"{'':<44} false claims kept, by error: {dict(errors.most_common())}")
        print(
            "\nclaim P: share of output claims from sentences labelled true, with their polarity kept; sent. P: "
            "the same over"
        )
        print(
            "sentences; recall: share of the (tile, fact, polarity) triples some model stated truthfully that the "
            "output still"
        )
        print(
            "states; flips: claims whose polarity is not the sentence's (an absence read as presence, or the reverse)."
        )


if __name__ == "__main__":
    main()
