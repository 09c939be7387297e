"""Stage ``fuse``: data-level noise suppression of a captions panel (a ``corpus`` artifact).

For each tile, every model's caption goes through deterministic steps, each of
which can be switched off and records why it dropped what it dropped
(``dropped_<reason>`` counts in the manifest, the phrases per tile in ``dropped``):

1. clean: refusals, boilerplate, filler clauses, repeated sentences, runaway
   repetition, sentences out of the length bounds (``text.clean``);
2. claims: each sentence becomes atomic claims over an urban lexicon (``text.claims``);
3. visibility: claims about objects too small for the tile's GSD go (``too_small``);
4. support: a claim's support is the share of the *other* models that make a
   matching claim; below ``min_support`` it goes (``unsupported``). With one
   model, support is undefined (``None``) and nothing is dropped for it;
5. consensus: each model's candidate is rebuilt from its surviving sentences;
   the candidate with the highest mean claim-F1 to the others becomes ``caption``;
6. ``caption_short`` (at most ``short_tokens`` CLIP tokens) and the long-caption
   cut to ``max_tokens`` CLIP tokens at a sentence boundary.

When a sentence's head claim (what it is about) goes, its other claims go with
it (``head_dropped``). Every kept claim keeps its source (model, sentence index
in the raw caption), so it can be traced back and scored.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from urbanln_cli import artifacts
from urbanln_cli.errors import InputError, UsageProblem
from urbanln_cli.text.claims import Claim, parse_claims
from urbanln_cli.text.clean import REASONS as CLEAN_REASONS
from urbanln_cli.text.clean import CleanOptions, clean_caption
from urbanln_cli.text.lexicon import Lexicon, load_lexicon
from urbanln_cli.text.match import Matcher, MatchOptions
from urbanln_cli.text.tokens import clip_counter, fit_tokens

STAGE = "corpus"
REASONS = (*CLEAN_REASONS, "too_small", "unsupported", "head_dropped", "length_cut")
# objects that characterise a tile in a short caption before generic ones (roads, roofs, buildings)
LANDMARKS = ("river", "lake", "canal", "highway", "railway", "park", "stadium", "sports_field", "bridge", "forest", "farmland", "plaza", "parking")


@dataclass(frozen=True)
class FuseConfig:
    captions: tuple[Path, ...] = (Path("captions"),)
    tiles: Path | None = Path("tiles")  # for each tile's GSD (visibility); None: GSD unknown
    out: Path = Path("corpus")
    lexicon: Path | None = None  # TOML or JSON extending the built-in lexicon
    clean: bool = True
    visibility: bool = True
    support: bool = True
    consensus: bool = True
    # With 4 models a claim needs 1 of the 3 others (1/3 >= 0.3); with 3 models 1 of 2; with 2, the other one.
    min_support: float = 0.3
    soft_threshold: float = 0.5
    count_tolerance: float = 0.25
    min_words: int = 2
    max_words: int = 80
    max_tokens: int = 248  # long caption, Long-CLIP's context
    short_tokens: int = 77  # short caption, CLIP's context
    tokenizer: str = "ViT-B-16"  # open_clip tokenizer that counts tokens
    overwrite: bool = False

    def check(self) -> None:
        if not self.captions:
            raise UsageProblem("no captions folder given", hint="urbanln fuse captions/ [more_captions/ …]")
        if not 0.0 <= self.min_support <= 1.0:
            raise UsageProblem(f"--min-support {self.min_support} is not between 0 and 1")
        if not 0.0 < self.soft_threshold <= 1.0:
            raise UsageProblem(f"--soft-threshold {self.soft_threshold} is not in (0, 1]")
        if self.count_tolerance < 0:
            raise UsageProblem(f"--count-tolerance {self.count_tolerance} must be at least 0")
        if self.min_words < 0 or self.max_words < max(1, self.min_words):
            raise UsageProblem("--min-words must be at least 0 and --max-words at least --min-words")
        if self.max_tokens < 8 or self.short_tokens < 8:
            raise UsageProblem("--max-tokens and --short-tokens must be at least 8")


@dataclass
class FuseResult:
    out: Path
    rows: int
    counts: dict[str, Any]
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass
class _Unit:
    """One sentence of one model's caption on its way through the steps."""

    model: str
    index: int
    text: str
    claims: list[Claim]
    dropped: dict[int, str] = field(default_factory=dict)  # claim position -> reason

    def alive(self) -> list[Claim]:
        return [c for i, c in enumerate(self.claims) if i not in self.dropped]


# ---------------------------------------------------------------- one tile


@dataclass(frozen=True)
class _Tools:
    lexicon: Lexicon
    count_tokens: Callable[[str], int]


def fuse_tile(tile_id: str, captions: dict[str, str], gsd: float | None, config: FuseConfig, tools: _Tools) -> dict[str, Any] | None:
    """Fuse one tile's captions (model -> text). Returns the corpus row, with ``_drops`` for counting.

    None when no model says anything usable about the tile (every caption cleaned away).
    """
    lex = tools.lexicon
    drops: list[dict[str, Any]] = []
    units: dict[str, list[_Unit]] = {}
    options = CleanOptions(min_words=config.min_words, max_words=config.max_words)
    for model in sorted(captions):
        kept, clean_drops = clean_caption(captions[model], options, enabled=config.clean)
        drops += [_drop(model, d.sentence, d.text, d.reason) for d in clean_drops]
        units[model] = [_Unit(model, s.index, s.text, parse_claims(s.text, lex, model=model, sentence=s.index)) for s in kept]
    voters = [m for m in units if any(u.claims for u in units[m])]

    # 3. visibility
    if config.visibility:
        for model in units:
            for u in units[model]:
                for i, c in enumerate(u.claims):
                    limit = lex.max_gsd(c.concept, c.count is not None) if c.concept else None
                    if limit is not None and (limit == 0 or (gsd is not None and math.isfinite(gsd) and gsd > limit)):
                        u.dropped[i] = "too_small"
        _head_rule(units)

    # 4. cross-model support (against the others' claims that survived visibility)
    every = [c for m in units for u in units[m] for c in u.claims]
    matcher = Matcher(every, MatchOptions(count_tolerance=config.count_tolerance, soft_threshold=config.soft_threshold))
    alive = {m: [c for u in units[m] for c in u.alive()] for m in units}
    support: dict[tuple[str, int, int], tuple[float | None, list[str]]] = {}
    others_n = len(voters) - 1
    for model in units:
        for u in units[model]:
            for i, c in enumerate(u.claims):
                if i in u.dropped:
                    continue
                if others_n < 1:
                    support[(model, u.index, i)] = (None, [])
                    continue
                backers = [o for o in voters if o != model and matcher.best(c, alive[o]) > 0]
                share = len(backers) / others_n
                support[(model, u.index, i)] = (share, backers)
                if config.support and share < config.min_support - 1e-9:
                    u.dropped[i] = "unsupported"
    _head_rule(units)
    for model in units:
        for u in units[model]:
            for i, c in enumerate(u.claims):
                if i in u.dropped:
                    drops.append(_drop(model, u.index, c.render(), u.dropped[i], concept=c.concept))

    # 5. candidates from what survived
    cands: dict[str, list[tuple[int, str, list[Claim]]]] = {}
    for model in units:
        pieces = []
        for u in units[model]:
            live = u.alive()
            if not u.claims:
                pieces.append((u.index, u.text, []))  # nothing to check: kept as written
            elif len(live) == len(u.claims):
                pieces.append((u.index, u.text, live))
            elif live:
                pieces.append((u.index, _sentence_from(live), live))
        if pieces:
            cands[model] = pieces
    if not cands:
        return None
    claims_of = {m: [c for _, _, cs in p for c in cs] for m, p in cands.items()}
    scores: dict[str, float | None] = {m: None for m in cands}
    if config.consensus and len(cands) > 1:
        for m in cands:
            scores[m] = sum(matcher.f1(claims_of[m], claims_of[o]) for o in cands if o != m) / (len(cands) - 1)
        chosen = max(cands, key=lambda m: (scores[m], len(claims_of[m]), _neg(m)))
    else:
        chosen = max(cands, key=lambda m: (len(claims_of[m]), _neg(m)))

    # 6. length: every candidate fits max_tokens, cut at a sentence boundary
    texts: dict[str, str] = {}
    in_text: dict[str, set[int]] = {}
    cut_of: dict[str, bool] = {}
    for m, pieces in cands.items():
        full = " ".join(t for _, t, _ in pieces)
        text, cut, _ = fit_tokens(full, config.max_tokens, tools.count_tokens)
        texts[m], cut_of[m] = text, cut
        kept_idx, used = set(), ""
        for idx, t, _ in pieces:
            trial = f"{used} {t}".strip()
            if text.startswith(trial):
                kept_idx.add(idx)
                used = trial
            else:
                drops.append(_drop(m, idx, t, "length_cut"))
        in_text[m] = kept_idx

    claims_json = []
    for m, pieces in cands.items():
        for idx, _, cs in pieces:
            for c in cs:
                pos = next(i for i, x in enumerate(_unit(units, m, idx).claims) if x is c)
                share, backers = support[(m, idx, pos)]
                claims_json.append(c.to_json() | {"support": share, "supported_by": backers, "in_caption": m == chosen and idx in in_text[m], "in_candidate": idx in in_text[m]})
    short = _short_caption(cands, chosen, claims_json, texts[chosen], config, tools)
    support_values = [c["support"] for c in claims_json if c["in_caption"] and c["support"] is not None]
    row = {
        "tile_id": tile_id,
        "caption": texts[chosen],
        "caption_short": short,
        "model": chosen,
        "candidates": [{"model": m, "caption": texts[m], "score": scores[m], "sentences": sorted(in_text[m])} for m in cands],
        "claims": json.dumps(claims_json, ensure_ascii=False),
        "dropped": json.dumps(drops, ensure_ascii=False),
        "n_models": len(captions),
        "gsd": gsd,
        "cut": cut_of[chosen],
        "score": scores[chosen],
        "support_mean": sum(support_values) / len(support_values) if support_values else None,
        "tokens": tools.count_tokens(texts[chosen]),
        "short_tokens": tools.count_tokens(short),
    }
    return row


def _neg(model: str) -> tuple:
    # ties go to the alphabetically first model: max() needs a key that is larger for it
    return tuple(-ord(ch) for ch in model)


def _unit(units: dict[str, list[_Unit]], model: str, index: int) -> _Unit:
    return next(u for u in units[model] if u.index == index)


def _head_rule(units: dict[str, list[_Unit]]) -> None:
    for model in units:
        for u in units[model]:
            if u.claims and 0 in u.dropped:
                for i in range(1, len(u.claims)):
                    u.dropped.setdefault(i, "head_dropped")


def _drop(model: str, sentence: int | None, text: str, reason: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "sentence": sentence, "text": text, "reason": reason, **{k: v for k, v in extra.items() if v is not None}}


def _with_article(claim: Claim) -> str:
    text = claim.render()
    if claim.count is not None or claim.term.endswith("s") or claim.kind == "phrase":
        return text
    return ("an " if text[:1] in "aeiou" else "a ") + text


def _sentence_from(claims: list[Claim]) -> str:
    """A plain sentence for the surviving claims of a sentence that lost some."""
    phrases = [_with_article(c) for c in claims]
    body = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    plural = len(phrases) > 1 or claims[0].term.endswith("s") or (claims[0].count or 1) > 1
    return f"There {'are' if plural else 'is'} {body}."


def _short_caption(cands, chosen: str, claims_json: list[dict], long_caption: str, config: FuseConfig, tools: _Tools) -> str:
    """One sentence: the most agreed land use plus one or two agreed features, within short_tokens."""
    models_per: dict[str, set[str]] = {}
    for c in claims_json:
        if c["concept"]:
            models_per.setdefault(c["concept"], set()).add(c["model"])
    order = {c["concept"]: i for i, c in reversed(list(enumerate(claims_json))) if c["concept"]}
    rank = sorted(models_per, key=lambda k: (-len(models_per[k]), order[k]))

    def best_claim(concept: str) -> dict:
        mine = [c for c in claims_json if c["concept"] == concept and c["model"] == chosen]
        return (mine or [c for c in claims_json if c["concept"] == concept])[0]

    lex = tools.lexicon
    land = next((k for k in rank if lex.concepts.get(k) and lex.concepts[k].kind == "land_use"), None)
    features = [k for k in rank if k != land and k in LANDMARKS] + [k for k in rank if k != land and k not in LANDMARKS and k not in ("roof",)]
    phrases = []
    for k in features[:2]:
        c = best_claim(k)
        text = c["text"]
        if c["count"] is None and not text.endswith("s"):
            text = ("an " if text[:1] in "aeiou" else "a ") + text
        phrases.append(text)
    if land is not None:
        c = best_claim(land)
        attrs = [a for a in c["attributes"] if a not in lex.concepts[land].label]
        head = " ".join([*attrs, lex.concepts[land].label])
        head = head[:1].upper() + head[1:]
    elif phrases:
        head, phrases = "An area with " + phrases[0], phrases[1:]
    else:
        first = long_caption.split(". ")[0].rstrip(".")
        return fit_tokens(first + ".", config.short_tokens, tools.count_tokens)[0]
    text = head + (" with " + " and ".join(phrases) if phrases and land is not None else (" and " + phrases[0] if phrases else "")) + "."
    return fit_tokens(text, config.short_tokens, tools.count_tokens)[0]


# ---------------------------------------------------------------- inputs


def load_captions(paths: tuple[Path, ...]) -> tuple[dict[str, dict[str, str]], dict[str, int], list[dict[str, Any]]]:
    """Merge captions folders: tile_id -> model -> caption, plus counts and the input manifests.

    Failed rows (non-null ``error``) are skipped and counted. The same (tile, model)
    twice is fine when the captions agree; when they differ, it is an error.
    """
    merged: dict[str, dict[str, str]] = {}
    where: dict[tuple[str, str], Path] = {}
    counts = Counter()
    manifests = []
    for path in paths:
        ds, manifest = artifacts.read_dataset(path, "captions")
        manifests.append(manifest)
        missing = {"tile_id", "model", "caption", "error"} - set(ds.column_names)
        if missing:
            raise InputError(f"{path} lacks the column(s) {', '.join(sorted(missing))} of a captions dataset", hint="re-create it with `urbanln caption`")
        table = ds.select_columns(["tile_id", "model", "caption", "error"]).to_dict()
        for tile_id, model, caption, error in zip(table["tile_id"], table["model"], table["caption"], table["error"]):
            if error or caption is None:
                counts["failed_captions"] += 1
                continue
            key = (tile_id, model)
            old = merged.get(tile_id, {}).get(model)
            if old is not None:
                if old != caption:
                    raise InputError(
                        f"tile {tile_id} has two different captions by {model}: in {where[key]} and in {path}",
                        hint="pass each model's captions once (shards of one run, or runs with different models)",
                    )
                counts["duplicate_rows"] += 1
                continue
            merged.setdefault(tile_id, {})[model] = caption
            where[key] = path
    return merged, dict(counts), manifests


def load_gsd(tiles: Path) -> tuple[dict[str, float], dict[str, Any]]:
    ds, manifest = artifacts.read_dataset(tiles, "tiles")
    if "gsd" not in ds.column_names:
        raise InputError(f"{tiles} has no gsd column", hint="re-create it with `urbanln tile`")
    table = ds.select_columns(["tile_id", "gsd"]).to_dict()
    return {t: (float(g) if g is not None else None) for t, g in zip(table["tile_id"], table["gsd"])}, manifest


def _tools(config: FuseConfig) -> _Tools:
    return _Tools(load_lexicon(config.lexicon), clip_counter(config.tokenizer))


def corpus_features():
    from datasets import Features, Value

    return Features(
        {
            "tile_id": Value("string"),
            "caption": Value("string"),
            "caption_short": Value("string"),
            "model": Value("string"),  # whose candidate became the caption
            # each model's refined caption; sentences: its source sentences (indices into the raw caption)
            "candidates": [{"model": Value("string"), "caption": Value("string"), "score": Value("float64"), "sentences": [Value("int32")]}],
            "claims": Value("string"),  # JSON: every kept claim with its support and source
            "dropped": Value("string"),  # JSON: every dropped phrase with its reason
            "n_models": Value("int32"),
            "gsd": Value("float64"),
            "cut": Value("bool"),
            "score": Value("float64"),  # consensus: mean claim-F1 of the caption to the other candidates
            "support_mean": Value("float64"),
            "tokens": Value("int32"),
            "short_tokens": Value("int32"),
        }
    )


# ---------------------------------------------------------------- the stage


def fuse(config: FuseConfig, progress: Callable[[int, int], None] | None = None, run: artifacts.RunInfo | None = None) -> FuseResult:
    """Fuse the captions folders of ``config`` into the corpus artifact at ``config.out``."""
    config.check()
    artifacts.check_output(config.out, config.overwrite, inputs=config.captions + ((config.tiles,) if config.tiles else ()))
    merged, counts, manifests = load_captions(config.captions)
    gsd, tiles_manifest = _gsd_for(config)
    tools = _tools(config)
    report = progress or (lambda done, total: None)
    rows, tally = [], Counter()
    ids = sorted(merged)
    for n, tile_id in enumerate(ids, 1):
        if config.visibility and tile_id not in gsd:
            tally["tiles_without_gsd"] += 1
        row = fuse_tile(tile_id, merged[tile_id], gsd.get(tile_id), config, tools)
        if row is None:
            tally["empty_tiles"] += 1
        else:
            for d in json.loads(row["dropped"]):
                tally[f"dropped_{d['reason']}"] += 1
            tally["cut"] += int(row["cut"])
            rows.append(row)
        if n % 16 == 0 or n == len(ids):
            report(n, len(ids))
    import datasets

    features = corpus_features()
    ds = datasets.Dataset.from_list(rows, features=features) if rows else datasets.Dataset.from_dict({k: [] for k in features}, features=features)
    models = sorted({m for caps in merged.values() for m in caps})
    counts = {
        "rows": len(rows),
        "failed_captions": counts.get("failed_captions", 0),
        "duplicate_rows": counts.get("duplicate_rows", 0),
        **{f"dropped_{r}": tally.get(f"dropped_{r}", 0) for r in REASONS},
        "cut": tally.get("cut", 0),
        "empty_tiles": tally.get("empty_tiles", 0),
        "tiles_without_gsd": tally.get("tiles_without_gsd", 0),
        "single_model": all(len(caps) <= 1 for caps in merged.values()),
    }
    inputs = [artifacts.fingerprint(p) for p in config.captions] + ([artifacts.fingerprint(config.tiles)] if tiles_manifest else [])
    manifest = artifacts.new_manifest(
        STAGE,
        run=run or artifacts.RunInfo.from_config(config),
        inputs=inputs,
        rows=len(rows),
        counts=counts,
        models={m: {"from": "captions"} for m in models},
        extra={
            "steps": {"clean": config.clean, "visibility": config.visibility, "support": config.support, "consensus": config.consensus},
            "lexicon": tools.lexicon.describe(),
            "captions_artifacts": [m.get("artifact_id") for m in manifests],
            "tiles_artifact": tiles_manifest.get("artifact_id") if tiles_manifest else None,
        },
    )
    artifacts.write_dataset(ds, config.out, manifest, overwrite=config.overwrite)
    return FuseResult(config.out, len(rows), counts, manifest)


def _gsd_for(config: FuseConfig) -> tuple[dict[str, float], dict[str, Any] | None]:
    if not config.visibility or config.tiles is None:
        return {}, None
    if not Path(config.tiles).exists():
        raise InputError(
            f"tiles artifact not found: {config.tiles} (needed for each tile's GSD)",
            hint="pass --tiles PATH, or --no-visibility to skip the visibility step",
        )
    return load_gsd(config.tiles)


def explain(config: FuseConfig, tile_id: str) -> dict[str, Any]:
    """One tile's fusion: from a corpus given among the inputs, else computed for that tile alone."""
    for path in config.captions:
        manifest = artifacts.read_manifest(path) if Path(path).exists() else None
        if manifest and manifest.get("stage") == STAGE:
            ds, _ = artifacts.read_dataset(path, STAGE)
            hit = ds.filter(lambda t: t == tile_id, input_columns="tile_id")
            if not hit.num_rows:
                raise InputError(f"tile {tile_id} is not in {path}", hint=_ids_hint(ds["tile_id"][:3]))
            return _decode(hit[0]) | {"source": str(path)}
    config.check()
    merged, counts, _ = load_captions(config.captions)
    if tile_id not in merged:
        raise InputError(f"tile {tile_id} has no usable caption in {', '.join(map(str, config.captions))}", hint=_ids_hint(sorted(merged)[:3]))
    gsd, _ = _gsd_for(config)
    row = fuse_tile(tile_id, merged[tile_id], gsd.get(tile_id), config, _tools(config))
    if row is None:
        return {"tile_id": tile_id, "source": "computed", "caption": None, "inputs": merged[tile_id], "note": "every caption was cleaned away"}
    return _decode(row) | {"source": "computed", "inputs": merged[tile_id]}


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    return dict(row) | {"claims": json.loads(row["claims"]), "dropped": json.loads(row["dropped"])}


def _ids_hint(ids: list[str]) -> str:
    return f"tile ids look like {', '.join(ids)}" if ids else "the input has no tiles"


__all__ = ["FuseConfig", "FuseResult", "fuse", "fuse_tile", "explain", "load_captions", "corpus_features", "REASONS"]
