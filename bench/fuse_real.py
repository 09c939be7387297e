"""Does `fuse` keep the meaning of real captions? Measured on UC Merced (human) and Beijing (VLM) captions.

UC Merced: the 420 images in ``../shared/data/ucmerced/images`` are tiled with
``urbanln tile``; their five human UCM-Captions each (``captions.jsonl``) are
imported with ``urbanln caption --import`` as five candidates per tile (``ucm#1``
… ``ucm#5``); ``urbanln fuse`` runs with its defaults (plus ``--gsd 0.3`` when the
tiles carry no GSD, as images without georeferencing do). Beijing: the UrbanCLIP
LLaMA-Adapter V2 captions (``../shared/data/urbanclip_beijing/captions_sentences.json``,
one model, each tile's sentences joined) are imported with ``--no-tiles`` (the
images are not redistributable) and fused with ``--gsd 2.4``. Everything goes
through the command line, as a user would run it.

What is measured, per data set, from the captions artifact (what fuse read) and
the corpus (what it wrote); nothing uses fuse's own claim parser except the
Beijing "claims kept" line:

- vanished tiles: in the captions, but without a row (or with an empty caption) in the corpus;
- class word kept (UC Merced): for tiles where some candidate names the tile's land-use class
  (CLASS_WORDS below: the class name and its obvious paraphrases), the share whose
  ``caption`` / ``caption_short`` still names it (a vanished tile counts as lost);
- new words: tiles whose ``caption`` (``caption_short``) holds a lower-cased word that none of the
  tile's candidates wrote, after removing STOP words (and, for ``caption_short`` only, the
  template words SHORT_TEMPLATE); "lenient" also forgives plural/singular changes;
- negation flips: the output asserts (outside any negation) a word that a candidate negated
  ("no cars", "without trees", "cars are not visible", "not busy"), either
  (a) in the sentence it was made from (the best-aligned candidate sentence), which did not
  assert it itself, or (b) at tile level, where no candidate asserted it at all;
- sentence fate: each candidate sentence, against that model's candidate in the corpus:
  verbatim (same words), trimmed (its words with whole spans cut: at most 3 kept spans of
  2+ words, or one span), rebuilt (an output sentence made from it that is neither), dropped;
- Beijing only: share of claims kept (fuse's parser on the raw and the fused caption, the same
  parser on both sides), drop reasons (the manifest's dropped_<reason> counts), and ten random
  before/after examples (seeded).

The numbers describe the code in the working tree when it runs; the report says which commit.

    python bench/fuse_real.py [--data ../shared/data] [--work DIR] [--json summary.json] [--seed 0]
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

UCM_GSD = 0.3  # metres per pixel of the UC Merced images (USGS orthophotos, 1 foot)
BEIJING_GSD = 2.4  # Baidu z16 tiles
BEIJING_MODEL = "llama-adapter-v2"

# ---------------------------------------------------------------- words

WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")
# function and connective words: never "new content"
STOP = frozenset(
    """
a an the and or but nor of in on at to for from by with without into onto over under near next beside besides between
among
around along across through within behind above below is are was were be been being am it its this that these those
there here
their they them he she his her we our you your some many several few any each every other another both either neither
no not
also as such than then so very too while which who whose whom where when what how s also just only all most more much
one's
has have had do does did can could may might will would shall should must
""".split()
)
# template words caption_short may add (for the short caption only)
SHORT_TEMPLATE = frozenset({"area", "scene", "image", "view"})

# UC Merced's 21 classes -> the words that name them (whole words, plural allowed). A tile "keeps its class"
# when its caption holds one of them.
CLASS_WORDS = {
    "agricultural": ["agricultural", "agriculture", "farmland", "cropland", "farm", "crop", "crops", "field"],
    "airplane": ["airplane", "aeroplane", "plane", "aircraft", "jet", "airliner", "airport"],
    "baseballdiamond": ["baseball", "diamond", "ballpark", "ball field"],
    "beach": ["beach", "shore", "shoreline", "coast", "seaside", "seashore"],
    "buildings": ["building", "buildings"],
    "chaparral": ["chaparral", "shrubland", "scrubland", "scrub", "shrub", "shrubs", "bushes", "brush"],
    "denseresidential": ["residential", "house", "houses", "home", "homes", "housing", "neighborhood", "neighbourhood"],
    "forest": ["forest", "woods", "woodland", "trees"],
    "freeway": ["freeway", "highway", "motorway", "expressway"],
    "golfcourse": ["golf"],
    "harbor": ["harbor", "harbour", "port", "marina", "dock", "docks", "pier", "wharf"],
    "intersection": ["intersection", "crossroad", "crossroads", "junction", "crossing"],
    "mediumresidential": [
        "residential",
        "house",
        "houses",
        "home",
        "homes",
        "housing",
        "neighborhood",
        "neighbourhood",
    ],
    "mobilehomepark": ["mobile home", "mobile homes", "trailer", "trailers", "trailer park", "manufactured home"],
    "overpass": ["overpass", "flyover", "interchange", "viaduct", "bridge"],
    "parkinglot": ["parking", "car park"],
    "river": ["river", "stream", "creek", "waterway"],
    "runway": ["runway", "airstrip", "landing strip"],
    "sparseresidential": ["residential", "house", "houses", "home", "homes", "housing", "villa", "villas"],
    "storagetanks": ["storage tank", "tank", "tanks", "silo", "silos"],
    "tenniscourt": ["tennis"],
}
_CLASS_RE = {
    c: re.compile(r"\b(?:" + "|".join(re.escape(w) + r"(?:s|es)?" for w in words) + r")\b")
    for c, words in CLASS_WORDS.items()
}

IRREGULAR = {"people": "person", "men": "man", "women": "woman", "children": "child", "buses": "bus", "leaves": "leaf"}


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def canon(word: str) -> str:
    """Plural and singular as one word (for the lenient count and negation matching)."""
    w = IRREGULAR.get(word, word)
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 4 and w.endswith(("ches", "shes", "xes", "sses", "zes")):
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


def sentences(text: str | None) -> list[str]:
    """Sentences of a caption; a full stop followed by a capital without a space ends one too."""
    if not text:
        return []
    parts = re.split(r"(?<=[.!?])\s+|(?<=[a-z][.!?])(?=[A-Z])", text.strip())
    return [p.strip() for p in parts if words(p)]


def has_class(text: str | None, cls: str) -> bool:
    return bool(text) and bool(_CLASS_RE[cls].search(text.lower()))


# ---------------------------------------------------------------- negation

TOKEN = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?|[,;:.!?]")
# words that end a negation's scope (a new clause, a verb, a preposition)
BOUNDARY = frozenset(
    """
, ; : . ! ? but while whereas although though which that who where when so because is are was were be been being can
could
may might will would seem seems appear appears in on at near around along across beside next between under over from
to for by as
than indicating suggesting making creating except with within behind above below into onto through has have had there it
""".split()
)
CONTINUE = frozenset({"and", "or", "nor"})
SKIP_AFTER_CUE = frozenset(
    {
        "any",
        "a",
        "an",
        "single",
        "the",
        "other",
        "such",
        "more",
        "much",
        "many",
        "visible",
        "signs",
        "sign",
        "trace",
        "traces",
        "evidence",
        "presence",
        "kind",
        "kinds",
        "type",
        "types",
        "of",
    }
)
VISIBILITY = frozenset(
    {
        "visible",
        "present",
        "seen",
        "shown",
        "observed",
        "apparent",
        "evident",
        "found",
        "detected",
        "spotted",
        "there",
        "see",
        "noticeable",
        "discernible",
        "identifiable",
    }
)
COPULA = frozenset(
    {"is", "are", "was", "were", "can", "could", "do", "does", "be", "appear", "appears", "seem", "seems"}
)
DETERMINERS = frozenset({"a", "an", "the", "any", "some", "there", "these", "those", "this", "that", "its", "their"})


def _scope_after(tokens: list[str], start: int) -> list[str]:
    """The words a negation cue governs, from ``start`` to the next boundary."""
    i = start
    while i < len(tokens) and tokens[i] in SKIP_AFTER_CUE:
        i += 1
    scope = []
    while i < len(tokens) and tokens[i] not in BOUNDARY:
        if tokens[i] in CONTINUE and i + 1 < len(tokens) and tokens[i + 1] in DETERMINERS:
            break  # "no buildings and the road is empty": a new clause
        scope.append(tokens[i])
        i += 1
    return scope


def _subject_before(tokens: list[str], cue: int) -> list[str]:
    """'cars are not visible': the words before the copula, back to the clause's start."""
    j = cue - 1
    while j >= 0 and tokens[j] in COPULA:
        j -= 1
    scope = []
    while j >= 0 and tokens[j] not in BOUNDARY and tokens[j] not in CONTINUE | {"and"} | DETERMINERS:
        scope.insert(0, tokens[j])
        j -= 1
    return scope


def _heads(scope: list[str]) -> set[str]:
    """The last content word of each conjoined noun phrase of a scope ('cars or pedestrians' -> car, pedestrian)."""
    heads, group = set(), []
    for tok in scope + ["or"]:
        if tok in CONTINUE or tok == ",":
            content = [w for w in group if w not in STOP and not w.isdigit()]
            if content:
                heads.add(canon(content[-1]))
            group = []
        else:
            group.append(tok)
    return heads


def negation(sentence: str) -> tuple[set[str], set[str]]:
    """(negated heads, asserted words) of one sentence, both canonical.

    Asserted words are the content words outside every negation's scope.
    """
    tokens = TOKEN.findall(sentence.lower().replace("’", "'"))
    negated, in_scope = set(), set()
    for i, tok in enumerate(tokens):
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        scope: list[str] = []
        if tok in ("no", "without", "nor", "neither", "lacking"):
            scope = _scope_after(tokens, i + 1)
        elif tok in ("none", "free", "devoid", "lack", "absence") and nxt == "of":
            scope = _scope_after(tokens, i + 2)
        elif tok in ("not", "never", "cannot") or tok.endswith("n't"):
            if nxt == "only":
                continue
            ahead = tokens[i + 1 : i + 4]
            if nxt in ("any", "a", "an", "single", "many", "much"):
                scope = _scope_after(tokens, i + 1)
            elif any(w in VISIBILITY for w in ahead[:2]) or ahead[:2] == ["be", "seen"]:
                scope = _subject_before(tokens, i)
            else:
                scope = _scope_after(tokens, i + 1)
        if scope:
            negated |= _heads(scope)
            in_scope |= {canon(w) for w in scope}
    asserted = {
        canon(w) for w in tokens if w not in STOP and w not in BOUNDARY and WORD.fullmatch(w) and not w.isdigit()
    }
    return negated, asserted - in_scope - negated


# ---------------------------------------------------------------- alignment


def _align(out_words: list[str], raw_words: list[str]) -> tuple[int, list[int]]:
    """(words of the output sentence found in order in the raw one, sizes of the kept spans)."""
    blocks = difflib.SequenceMatcher(None, raw_words, out_words, autojunk=False).get_matching_blocks()
    sizes = [b.size for b in blocks if b.size]
    return sum(sizes), sizes


def fate(raw_sents: list[str], out_sents: list[str]) -> tuple[list[str], list[int | None]]:
    """The fate of each raw sentence (verbatim, trimmed, rebuilt, dropped) and each output sentence's source."""
    raw_w = [words(s) for s in raw_sents]
    out_w = [words(s) for s in out_sents]
    raw_content = [{canon(w) for w in r if w not in STOP} for r in raw_w]
    source: list[int | None] = []
    for o in out_w:
        # the source: the raw sentence holding most of its content words (then most of its words in order)
        content = {canon(w) for w in o if w not in STOP}
        best, best_key = None, (0.0, 0)
        for k, r in enumerate(raw_w):
            share = len(content & raw_content[k]) / len(content) if content else 0.0
            key = (share, _align(o, r)[0])
            if key > best_key:
                best, best_key = k, key
        source.append(best if best_key[0] >= 0.5 or (not content and best_key[1] == len(o) > 0) else None)
    fates = []
    for k, r in enumerate(raw_w):
        mine = [o for o, s in zip(out_w, source) if s == k]
        if not mine:
            fates.append("dropped")
        elif any(o == r for o in mine):
            fates.append("verbatim")
        elif all(_trimmed(o, r) for o in mine):
            fates.append("trimmed")
        else:
            fates.append("rebuilt")
    return fates, source


def _trimmed(out_words: list[str], raw_words: list[str]) -> bool:
    matched, sizes = _align(out_words, raw_words)
    return matched == len(out_words) and (len(sizes) == 1 or (len(sizes) <= 3 and min(sizes) >= 2))


# ---------------------------------------------------------------- measuring one corpus


def measure(
    candidates: dict[str, dict[str, str]],
    corpus: dict[str, dict[str, Any]],
    classes: dict[str, str] | None,
    examples: int = 5,
) -> dict[str, Any]:
    """Everything above but the Beijing-only lines; ``candidates``: tile -> model -> raw caption (what fuse read)."""
    vanished = sorted(t for t in candidates if not (corpus.get(t) or {}).get("caption"))
    out: dict[str, Any] = {
        "tiles": len(candidates),
        "corpus_rows": len(corpus),
        "vanished": len(vanished),
        "vanished_examples": vanished[:examples],
    }
    if classes is not None:
        by_class = Counter(classes.get(t, "?") for t in vanished)
        out["vanished_by_class"] = dict(by_class.most_common())
        had = kept = kept_short = 0
        lost, lost_short = Counter(), Counter()
        lost_examples = []
        for t, caps in candidates.items():
            cls = classes.get(t)
            if cls is None or not any(has_class(c, cls) for c in caps.values()):
                continue
            had += 1
            row = corpus.get(t) or {}
            if has_class(row.get("caption"), cls):
                kept += 1
            else:
                lost[cls] += 1
            if has_class(row.get("caption_short"), cls):
                kept_short += 1
            else:
                lost_short[cls] += 1
                if len(lost_examples) < examples and row:
                    lost_examples.append({"tile": t, "class": cls, "caption_short": row.get("caption_short")})
        out["class_word"] = {
            "tiles_with_it": had,
            "kept_caption": kept,
            "kept_short": kept_short,
            "share_caption": kept / had if had else None,
            "share_short": kept_short / had if had else None,
            "lost_caption_by_class": dict(lost.most_common()),
            "lost_short_by_class": dict(lost_short.most_common()),
            "lost_short_examples": lost_examples,
        }

    new = {"caption": Counter(), "caption_short": Counter()}
    new_lenient = {"caption": 0, "caption_short": 0}
    new_tiles = {"caption": 0, "caption_short": 0}
    new_examples: dict[str, list] = {"caption": [], "caption_short": []}
    flips = {
        "caption": {"sentence": 0, "tile": 0, "tiles": set()},
        "caption_short": {"sentence": 0, "tile": 0, "tiles": set()},
    }
    flip_examples: list[dict[str, Any]] = []
    fates = Counter()
    for t, caps in candidates.items():
        row = corpus.get(t)
        written = set()
        cand_sents = []  # (model, sentence, negated, asserted)
        for m, text in caps.items():
            written |= set(words(text))
            for s in sentences(text):
                neg, asserted = negation(s)
                cand_sents.append((m, s, neg, asserted))
        cand_neg = set().union(*(n for _, _, n, _ in cand_sents)) if cand_sents else set()
        cand_asserted = set().union(*(a for _, _, _, a in cand_sents)) if cand_sents else set()
        # sentence fate: each model's raw sentences against its candidate in the corpus
        out_cands = {c["model"]: c.get("caption") for c in (row or {}).get("candidates") or []}
        for m, text in caps.items():
            f, _ = fate(sentences(text), sentences(out_cands.get(m)))
            fates.update(f)
        if not row:
            continue
        written_lenient = {canon(w) for w in written}
        for field in ("caption", "caption_short"):
            text = row.get(field) or ""
            allowed = STOP | (SHORT_TEMPLATE if field == "caption_short" else frozenset())
            extra = {w for w in words(text) if w not in written and w not in allowed}
            if extra:
                new_tiles[field] += 1
                new[field].update(extra)
                if len(new_examples[field]) < examples:
                    new_examples[field].append({"tile": t, "new": sorted(extra), field: text})
                if {canon(w) for w in extra} - written_lenient:
                    new_lenient[field] += 1
            # negation flips
            out_s = sentences(text)
            raw_s = [s for _, s, _, _ in cand_sents]
            _, source = fate(raw_s, out_s)
            tile_flip = False
            for o, src in zip(out_s, source):
                _, o_asserted = negation(o)
                if src is not None:
                    _, s, s_neg, s_asserted = cand_sents[src]
                    flipped = (s_neg - s_asserted) & o_asserted
                    if flipped:
                        flips[field]["sentence"] += 1
                        flips[field]["tiles"].add(t)
                        if len(flip_examples) < examples:
                            flip_examples.append(
                                {
                                    "tile": t,
                                    "field": field,
                                    "kind": "sentence",
                                    "words": sorted(flipped),
                                    "candidate": s,
                                    "output": o,
                                }
                            )
                only_negated = (cand_neg - cand_asserted) & o_asserted
                if only_negated:
                    tile_flip = True
                    flips[field]["tiles"].add(t)
                    if len(flip_examples) < examples and not any(e["tile"] == t for e in flip_examples):
                        flip_examples.append(
                            {
                                "tile": t,
                                "field": field,
                                "kind": "tile",
                                "words": sorted(only_negated),
                                "candidate": next(s for _, s, n, _ in cand_sents if n & only_negated),
                                "output": o,
                            }
                        )
            flips[field]["tile"] += tile_flip
    total = sum(fates.values())
    out["new_words"] = {
        field: {
            "tiles": new_tiles[field],
            "tiles_lenient": new_lenient[field],
            "top": [f"{w} {n}" for w, n in new[field].most_common(12)],
            "examples": new_examples[field],
        }
        for field in new
    }
    out["negation_flips"] = {
        field: {"sentences": v["sentence"], "tiles_asserting_only_negated": v["tile"], "tiles": len(v["tiles"])}
        for field, v in flips.items()
    }
    out["negation_flip_examples"] = flip_examples
    out["sentences"] = {
        "candidate_sentences": total,
        **{k: fates.get(k, 0) for k in ("verbatim", "trimmed", "rebuilt", "dropped")},
        **{
            f"share_{k}": fates.get(k, 0) / total if total else None
            for k in ("verbatim", "trimmed", "rebuilt", "dropped")
        },
    }
    return out


# ---------------------------------------------------------------- running the commands


def urbanln(args: list[str], cwd: Path) -> str:
    """Run an urbanln command as a user would; its stderr is shown when it fails, warnings always."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("URBANLN_")
    }  # the defaults, not this shell's settings
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", NO_COLOR="1")
    cmd = [sys.executable, "-m", "urbanln_cli", *map(str, args)]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    shown = " ".join(cmd[2:])
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"fuse_real: `{shown}` failed with exit code {done.returncode}")
    for line in done.stderr.splitlines():
        if line.startswith("warning:"):
            print(f"  ({args[0]}) {line}", file=sys.stderr)
    return done.stdout


def read_artifact(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import datasets

    ds = datasets.load_from_disk(str(path))
    drop = [c for c in ("image",) if c in ds.column_names]
    return ds.remove_columns(drop).to_list(), json.loads((path / "urbanln.json").read_text())


def captions_by_tile(path: Path) -> dict[str, dict[str, str]]:
    rows, _ = read_artifact(path)
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for r in rows:
        if r["error"] is None and r["caption"]:
            out[r["tile_id"]][r["model"]] = r["caption"]
    return dict(out)


def gsd_known(tiles: Path) -> bool:
    import math

    import datasets

    gsd = datasets.load_from_disk(str(tiles)).data.column("gsd").to_pylist()
    return any(g is not None and math.isfinite(g) and g > 0 for g in gsd)


def fused_gsd(corpus: dict[str, dict[str, Any]]) -> Counter:
    """The GSD fuse recorded per tile (None or NaN: unknown, so no visibility step there)."""
    import math

    return Counter(
        "unknown" if r.get("gsd") is None or not math.isfinite(r["gsd"]) else f"{r['gsd']:g}" for r in corpus.values()
    )


def run_ucm(data: Path, work: Path, examples: int) -> dict[str, Any]:
    rows = [json.loads(line) for line in (data / "captions.jsonl").read_text().splitlines() if line.strip()]
    source = work / "ucm.jsonl"  # one row per caption: the five of an image become ucm#1 … ucm#5
    with open(source, "w", encoding="utf-8") as f:
        for r in rows:
            for text in r["captions"]:
                f.write(json.dumps({"image": r["image"], "caption": text}) + "\n")
    classes_by_stem = {Path(r["image"]).stem: r["class"] for r in rows}
    t0 = time.perf_counter()
    urbanln(["tile", data / "images", "-o", "tiles"], work)
    urbanln(["caption", "tiles", "--import", source.name, "-o", "captions"], work)
    gsd_args = [] if gsd_known(work / "tiles") else ["--gsd", UCM_GSD]
    t1 = time.perf_counter()
    urbanln(["fuse", "captions", "--tiles", "tiles", *gsd_args, "-o", "corpus"], work)
    fuse_s = time.perf_counter() - t1
    candidates = captions_by_tile(work / "captions")
    corpus_rows, manifest = read_artifact(work / "corpus")
    corpus = {r["tile_id"]: r for r in corpus_rows}
    classes = {t: classes_by_stem.get(t.rsplit("/", 1)[-1]) for t in candidates}
    result = measure(candidates, corpus, classes, examples)
    result.update(
        images=len(rows),
        captions=sum(len(c) for c in candidates.values()),
        fuse_args=[str(a) for a in gsd_args],
        gsd_used_by_fuse=dict(fused_gsd(corpus)),
        fuse_seconds=round(fuse_s, 1),
        seconds=round(time.perf_counter() - t0, 1),
        drops={
            k.removeprefix("dropped_"): v
            for k, v in manifest.get("counts", {}).items()
            if k.startswith("dropped_") and v
        },
    )
    return result


def run_beijing(data: Path, work: Path, examples: int, seed: int) -> dict[str, Any]:
    from bench.fuse_beijing import load_panel

    panel = load_panel(data / "captions_sentences.json")  # image path -> its sentences joined
    source = work / f"{BEIJING_MODEL}.jsonl"
    with open(source, "w", encoding="utf-8") as f:
        for image, text in sorted(panel.items()):
            f.write(json.dumps({"image": image, "caption": text}, ensure_ascii=False) + "\n")
    t0 = time.perf_counter()
    urbanln(["caption", "--import", source.name, "--no-tiles", "-o", "captions"], work)
    t1 = time.perf_counter()
    urbanln(["fuse", "captions", "--gsd", BEIJING_GSD, "-o", "corpus"], work)  # no tiles/ here: every tile takes --gsd
    fuse_s = time.perf_counter() - t1
    candidates = captions_by_tile(work / "captions")
    corpus_rows, manifest = read_artifact(work / "corpus")
    corpus = {r["tile_id"]: r for r in corpus_rows}
    result = measure(candidates, corpus, None, examples)
    result.update(
        captions=sum(len(c) for c in candidates.values()),
        gsd_used_by_fuse=dict(fused_gsd(corpus)),
        fuse_seconds=round(fuse_s, 1),
        seconds=round(time.perf_counter() - t0, 1),
    )
    result["drops"] = {
        k.removeprefix("dropped_"): v for k, v in manifest.get("counts", {}).items() if k.startswith("dropped_") and v
    }
    result["claims"] = claims_kept(candidates, corpus)
    ids = sorted(candidates)
    picked = random.Random(seed).sample(ids, min(examples, len(ids)))
    result["examples"] = [
        {
            "tile": t,
            "before": next(iter(candidates[t].values())),
            "after": (corpus.get(t) or {}).get("caption"),
            "short": (corpus.get(t) or {}).get("caption_short"),
            "dropped": _drop_reasons((corpus.get(t) or {}).get("dropped")),
        }
        for t in picked
    ]
    return result


def _drop_reasons(dropped: Any) -> list[str]:
    try:
        items = json.loads(dropped) if isinstance(dropped, str) else (dropped or [])
        return [f"{d.get('reason')}: {d.get('text')}" for d in items if isinstance(d, dict)]
    except (TypeError, ValueError):
        return []


def claims_kept(candidates: dict[str, dict[str, str]], corpus: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Claims in the fused caption over claims in the raw one, both parsed by fuse's own parser (as a multiset of
    concepts)."""
    try:
        from urbanln_cli.text.claims import parse_claims
        from urbanln_cli.text.lexicon import load_lexicon

        lexicon = load_lexicon()

        def claims(text: str | None) -> Counter:
            found = Counter()
            for s in sentences(text):
                for c in parse_claims(s, lexicon):
                    found[
                        (getattr(c, "concept", None) or getattr(c, "term", "?"), bool(getattr(c, "negated", False)))
                    ] += 1
            return found

        raw = kept = 0
        by_concept_raw, by_concept_kept = Counter(), Counter()
        for t, caps in candidates.items():
            before = sum((claims(c) for c in caps.values()), Counter())
            after = claims((corpus.get(t) or {}).get("caption"))
            both = before & after
            raw += sum(before.values())
            kept += sum(both.values())
            for (concept, _), n in before.items():
                by_concept_raw[concept] += n
            for (concept, _), n in both.items():
                by_concept_kept[concept] += n
        least = sorted(by_concept_raw, key=lambda c: (by_concept_kept[c] / by_concept_raw[c], -by_concept_raw[c]))
        return {
            "raw": raw,
            "kept": kept,
            "share": kept / raw if raw else None,
            "least_kept": [f"{c} {by_concept_kept[c]}/{by_concept_raw[c]}" for c in least if by_concept_raw[c] >= 20][
                :8
            ],
        }
    except Exception as exc:  # fuse's parser is being rewritten: say so rather than stop
        return {"error": f"fuse's claim parser could not be used: {type(exc).__name__}: {exc}"}


# ---------------------------------------------------------------- report


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def report(name: str, r: dict[str, Any]) -> list[str]:
    s = r["sentences"]
    lines = [
        f"== {name}: {r['tiles']} tiles, {r['captions']} captions; fuse {r['fuse_seconds']} s "
        f"(GSD used by fuse: {', '.join(f'{k} x{v}' for k, v in r['gsd_used_by_fuse'].items())})"
    ]
    vanished = f"vanished tiles: {r['vanished']}"
    if r.get("vanished_by_class"):
        vanished += " (" + ", ".join(f"{k} {v}" for k, v in r["vanished_by_class"].items()) + ")"
    lines.append(vanished)
    if "class_word" in r:
        cw = r["class_word"]
        lines.append(
            f"class word kept: caption {_pct(cw['share_caption'])}, caption_short {_pct(cw['share_short'])} "
            f"of {cw['tiles_with_it']} tiles whose candidates name it"
        )
        if cw["lost_short_by_class"]:
            lines.append(
                "  lost in caption_short: "
                + ", ".join(f"{k} {v}" for k, v in list(cw["lost_short_by_class"].items())[:8])
            )
        for e in cw["lost_short_examples"][:3]:
            lines.append(f"    {e['class']}: {e['caption_short']!r}")
    for field, v in r["new_words"].items():
        lines.append(
            f"tiles whose {field} has a word no candidate wrote: {v['tiles']} ({v['tiles_lenient']} after "
            "forgiving plurals)" + (f"; top: {', '.join(v['top'][:8])}" if v["top"] else "")
        )
    for field, v in r["negation_flips"].items():
        lines.append(
            f"negation flips in {field}: {v['tiles']} tiles ({v['sentences']} sentences asserting what their source "
            f"sentence negated; {v['tiles_asserting_only_negated']} tiles asserting what candidates only negated)"
        )
    for e in r["negation_flip_examples"][:3]:
        lines.append(f"    {e['candidate']!r} -> {e['output']!r}  [{', '.join(e['words'])}]")
    lines.append(
        f"candidate sentences: {s['candidate_sentences']}: verbatim {_pct(s['share_verbatim'])}, trimmed "
        f"{_pct(s['share_trimmed'])}, "
        f"rebuilt {_pct(s['share_rebuilt'])}, dropped {_pct(s['share_dropped'])}"
    )
    if r.get("drops"):
        lines.append(
            "drop reasons (manifest): "
            + ", ".join(f"{k} {v}" for k, v in sorted(r["drops"].items(), key=lambda kv: -kv[1]))
        )
    if "claims" in r:
        c = r["claims"]
        lines.append(
            f"claims kept (fuse's parser, raw vs fused caption): {c['kept']} of {c['raw']} ({_pct(c['share'])})"
            + (f"; least kept: {', '.join(c['least_kept'])}" if c.get("least_kept") else "")
            if "error" not in c
            else c["error"]
        )
    if r.get("examples"):
        lines.append(f"{len(r['examples'])} random before/after examples:")
        for e in r["examples"]:
            lines += [
                f"  --- {e['tile']}",
                f"  before: {e['before']}",
                f"  after:  {e['after']}",
                f"  short:  {e['short']}",
            ]
    return lines


def _git() -> str:
    """The commit, whether the tree differs from it, and a hash of the code fuse runs (stage, text/, fusion/)."""
    import hashlib

    code = hashlib.sha256()
    package = ROOT / "urbanln_cli"
    for path in sorted([package / "stages" / "fuse.py", *package.glob("text/*.py"), *package.glob("fusion/**/*.py")]):
        if path.is_file():
            code.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        head, dirty = "", ""
    return f"{head or 'no git'}{' + uncommitted changes' if dirty else ''}; fuse code sha256 {code.hexdigest()[:12]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="the reference data folder")
    parser.add_argument(
        "--work", type=Path, help="keep the tiles, captions and corpora here (default: a temporary folder)"
    )
    parser.add_argument("--json", type=Path, help="also write the JSON summary to this file")
    parser.add_argument("--examples", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="which Beijing tiles are shown as examples")
    parser.add_argument("--only", choices=("ucm", "beijing"))
    args = parser.parse_args()

    ucm, beijing = args.data / "ucmerced", args.data / "urbanclip_beijing"
    have_ucm = (ucm / "captions.jsonl").is_file() and (ucm / "images").is_dir()
    have_bj = (beijing / "captions_sentences.json").is_file()
    if not (have_ucm or have_bj):
        sys.exit(
            f"fuse_real: the reference data is absent: {args.data} holds neither ucmerced/ (images/ + captions.jsonl) "
            "nor urbanclip_beijing/captions_sentences.json. This benchmark measures nothing without it; "
            "pass --data DIR if it lives elsewhere."
        )
    summary: dict[str, Any] = {"code": f"current code ({_git()})"}
    with tempfile.TemporaryDirectory(prefix="fuse-real-") as tmp:
        work = args.work or Path(tmp)
        lines = [f"fuse_real on the {summary['code']}"]
        for key, present, run in (
            ("ucm", have_ucm, lambda w: run_ucm(ucm, w, args.examples)),
            ("beijing", have_bj, lambda w: run_beijing(beijing, w, args.examples, args.seed)),
        ):
            if args.only and args.only != key:
                continue
            if not present:
                summary[key] = {"skipped": f"data absent under {args.data}"}
                lines.append(f"== {key}: skipped, its data is absent under {args.data}")
                continue
            folder = work / key
            folder.mkdir(parents=True, exist_ok=True)
            print(f"running {key} in {folder} …", file=sys.stderr)
            summary[key] = run(folder)
            lines += report(
                "UC Merced (human UCM-Captions, 5 per image)"
                if key == "ucm"
                else f"Beijing ({BEIJING_MODEL}, single model, --gsd {BEIJING_GSD})",
                summary[key],
            )
    print("\n".join(lines))
    text = json.dumps(summary, indent=1, ensure_ascii=False, default=str)
    if args.json:
        args.json.write_text(text)
    print("\nJSON summary:")
    print(json.dumps(_compact(summary), ensure_ascii=False, default=str))


def _compact(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary without its long example lists (the --json file keeps them)."""
    drop = ("examples", "negation_flip_examples", "vanished_examples")
    out = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in drop}
            if "new_words" in value:
                value["new_words"] = {
                    f: {k: v for k, v in d.items() if k != "examples"} for f, d in value["new_words"].items()
                }
            if "class_word" in value:
                value["class_word"] = {k: v for k, v in value["class_word"].items() if k != "lost_short_examples"}
        out[key] = value
    return out


if __name__ == "__main__":
    main()
