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
5. image check (``check``: clip or vlm, optional): a disputed claim (support
   below ``min_support``, or any claim of a single model) stays only when the
   image confirms it (else ``unsupported``, or ``unconfirmed`` when support did
   not drop it);
6. refine (``refine``: an Ollama vision model, optional): quadrant captions, then
   a structured rewrite of each model's candidate, checked again (``refine_new``);
7. consensus: each model's candidate is rebuilt from its surviving sentences;
   the candidate with the highest mean claim-F1 to the others becomes ``caption``;
8-9. ``caption_short`` (at most ``short_tokens`` CLIP tokens) and the long-caption
   cut to ``max_tokens`` CLIP tokens at a sentence boundary.

When a sentence's head claim (what it is about) goes, its other claims go with
it (``head_dropped``). Every kept claim keeps its source (model, sentence index
in the raw caption), so it can be traced back and scored.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from urbanln_cli import artifacts, manifest_fields
from urbanln_cli.captioners import GenerationOptions
from urbanln_cli.captioners.ollama import DEFAULT_HOST
from urbanln_cli.captioners.runner import RetryPolicy
from urbanln_cli.errors import InputError, Interrupted, UsageProblem
from urbanln_cli.image_check import ClaimQuery, Verdict
from urbanln_cli.imagery import max_pixels_of
from urbanln_cli.text.claims import Claim, parse_claims
from urbanln_cli.text.clean import REASONS as CLEAN_REASONS
from urbanln_cli.text.clean import CleanOptions, clean_caption
from urbanln_cli.text.lexicon import Lexicon, load_lexicon
from urbanln_cli.text.match import Matcher, MatchOptions
from urbanln_cli.text.tokens import clip_counter, fit_tokens

STAGE = "corpus"
REASONS = (*CLEAN_REASONS, "too_small", "unsupported", "unconfirmed", "head_dropped", "refine_new", "length_cut")
CHECKS = ("none", "clip", "vlm")
CLIP_CHUNK_TILES = 1024
# objects that characterise a tile in a short caption before generic ones (roads, roofs, buildings)
LANDMARKS = ("river", "lake", "canal", "highway", "railway", "park", "stadium", "sports_field", "bridge", "forest", "farmland", "plaza", "parking")


@dataclass(frozen=True)
class FuseConfig:
    captions: tuple[Path, ...] = (Path("captions"),)
    tiles: Path | None = Path("tiles")  # for each tile's GSD (visibility) and image (check, refine); None: not used
    gsd: float | None = None  # metres per pixel of tiles without one (no tiles artifact, or a tile it lacks)
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
    # step 5, image check
    image_check: str = "none"  # none | clip | vlm (--check)
    check_models: tuple[str, ...] = ()  # vlm: who checks; default the captions' own models
    clip_model: Path | None = None  # clip: a pretrain run folder (default runs/latest)
    clip_arch: str | None = None  # clip: with clip_pretrained
    clip_pretrained: str | None = None  # clip: open_clip weights (tag, file or local-dir:)
    clip_margin: float | None = None  # clip: decision margin; None: the checker's default
    # step 6, refine
    refine: str | None = None  # an Ollama vision model
    # the Ollama client of check vlm and refine (as in `caption`)
    hosts: tuple[str, ...] = (DEFAULT_HOST,)
    concurrency: int = 4
    timeout: float = 300.0
    retries: int = 4
    image_size: int = 672
    seed: int = 0
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
        if self.gsd is not None and not (math.isfinite(self.gsd) and self.gsd > 0):
            raise UsageProblem(f"--gsd {self.gsd} must be a positive number of metres per pixel")
        if self.image_check not in CHECKS:
            raise UsageProblem(f"--check {self.image_check!r} is not one of {', '.join(CHECKS)}")
        if self.concurrency < 1 or self.retries < 0 or not (math.isfinite(self.timeout) and self.timeout > 0) or self.image_size < 32:
            raise UsageProblem("--concurrency must be at least 1, --retries at least 0, --timeout positive and --image-size at least 32")
        if self.check_models and self.image_check != "vlm":
            raise UsageProblem("--check-model is for --check vlm", hint="add --check vlm, or leave it out")
        clip = [n for n, v in (("--clip-model", self.clip_model), ("--clip-arch", self.clip_arch), ("--clip-pretrained", self.clip_pretrained),
                               ("--clip-margin", self.clip_margin)) if v is not None]
        if clip and self.image_check != "clip":
            raise UsageProblem(f"{', '.join(clip)} {'is' if len(clip) == 1 else 'are'} for --check clip", hint="add --check clip, or leave them out")
        if (self.image_check != "none" or self.refine) and self.tiles is None:
            raise UsageProblem("--check and --refine look at the tiles' images", hint="pass --tiles PATH")
        if self.uses_ollama:
            from urbanln_cli.captioners.ollama import check_hosts

            check_hosts(self.hosts)

    @property
    def uses_ollama(self) -> bool:
        return self.image_check == "vlm" or self.refine is not None


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


@dataclass(frozen=True)
class Rewrite:
    """What ``--refine`` returned for one candidate: the rewritten text, or why there is none."""

    text: str | None
    error: str | None = None
    by: str = ""


ClaimRef = tuple[str, int, int]  # (model, sentence index in the raw caption, claim position in the sentence)


class TileFusion:
    """One tile's captions on their way through the steps.

    Construction runs steps 1-4 (clean, claims, visibility, support). Then the
    stage may confirm disputed claims with an image check (``disputed`` and
    ``apply_verdicts``) and rewrite the drafts (``drafts``, ``facts``); ``row``
    finishes with consensus, the short caption and the length cut.
    """

    def __init__(self, tile_id: str, captions: dict[str, str], gsd: float | None, config: FuseConfig, tools: _Tools):
        self.tile_id, self.captions, self.gsd, self.config, self.tools = tile_id, captions, gsd, config, tools
        lex = tools.lexicon
        self.drops: list[dict[str, Any]] = []
        self.units: dict[str, list[_Unit]] = {}
        for model in sorted(captions):
            kept, clean_drops = clean_caption(captions[model], self._clean_options(), enabled=config.clean)
            self.drops += [_drop(model, d.sentence, d.text, d.reason) for d in clean_drops]
            self.units[model] = [_Unit(model, s.index, s.text, parse_claims(s.text, lex, model=model, sentence=s.index)) for s in kept]
        self.voters = [m for m in self.units if any(u.claims for u in self.units[m])]

        # 3. visibility
        if config.visibility:
            for u in self._all_units():
                for i, c in enumerate(u.claims):
                    if self._too_small(c):
                        u.dropped[i] = "too_small"
            _head_rule(self.units)

        # 4. cross-model support (against the others' claims that survived visibility)
        self.every = [c for u in self._all_units() for c in u.claims]
        self.matcher = Matcher(self.every, self._match_options())
        alive = {m: [c for u in self.units[m] for c in u.alive()] for m in self.units}
        self.support: dict[ClaimRef, tuple[float | None, list[str]]] = {}
        self.verdicts: dict[ClaimRef, Verdict] = {}
        others_n = len(self.voters) - 1
        for u in self._all_units():
            for i, c in enumerate(u.claims):
                if i in u.dropped:
                    continue
                if others_n < 1:
                    self.support[(u.model, u.index, i)] = (None, [])
                    continue
                backers = [o for o in self.voters if o != u.model and self.matcher.best(c, alive[o]) > 0]
                share = len(backers) / others_n
                self.support[(u.model, u.index, i)] = (share, backers)
                if config.support and share < config.min_support - 1e-9:
                    u.dropped[i] = "unsupported"
        _head_rule(self.units)

    def _clean_options(self) -> CleanOptions:
        return CleanOptions(min_words=self.config.min_words, max_words=self.config.max_words)

    def _match_options(self) -> MatchOptions:
        return MatchOptions(count_tolerance=self.config.count_tolerance, soft_threshold=self.config.soft_threshold)

    def _too_small(self, c: Claim) -> bool:
        limit = self.tools.lexicon.max_gsd(c.concept, c.count is not None) if c.concept else None
        gsd = self.gsd
        return limit is not None and (limit == 0 or (gsd is not None and math.isfinite(gsd) and gsd > limit))

    def _all_units(self) -> list[_Unit]:
        return [u for m in self.units for u in self.units[m]]

    # ------------------------------------------------------------ step 5: image check

    def disputed(self) -> list[tuple[ClaimRef, Claim]]:
        """Claims too few other models back (all of them with a single model), which only the image can save."""
        out = []
        for u in self._all_units():
            for i, c in enumerate(u.claims):
                ref = (u.model, u.index, i)
                if ref not in self.support or u.dropped.get(i) not in (None, "unsupported", "head_dropped"):
                    continue
                share = self.support[ref][0]
                if share is None or share < self.config.min_support - 1e-9:
                    out.append((ref, c))
        return out

    def apply_verdicts(self, verdicts: dict[ClaimRef, Verdict]) -> None:
        """A disputed claim stays only when its image check confirms it."""
        self.verdicts.update(verdicts)
        for u in self._all_units():
            for i in [i for i, why in u.dropped.items() if why == "head_dropped"]:
                del u.dropped[i]  # recomputed below, once the heads are settled
        for (model, index, pos), verdict in verdicts.items():
            u = _unit(self.units, model, index)
            if verdict.error is not None:
                continue  # no answer is not a "no": the claim stays as support left it (the error is recorded)
            if verdict.confirmed:
                u.dropped.pop(pos, None)
            else:
                u.dropped.setdefault(pos, "unconfirmed")
        _head_rule(self.units)

    # ------------------------------------------------------------ step 6: refine

    def drafts(self) -> dict[str, list[tuple[int, str, list[Claim]]]]:
        """Each model's candidate from what survived: (sentence index, text, kept claims)."""
        cands = {}
        for model in self.units:
            pieces = []
            for u in self.units[model]:
                live = u.alive()
                if not u.claims:
                    pieces.append((u.index, u.text, []))  # nothing to check: kept as written
                elif len(live) == len(u.claims):
                    pieces.append((u.index, u.text, live))
                elif live:
                    pieces.append((u.index, _sentence_from(live), live))
            if pieces:
                cands[model] = pieces
        return cands

    def facts(self) -> list[str]:
        """The surviving claims of every model, once each: what a rewrite may say."""
        seen, out = set(), []
        for u in self._all_units():
            for c in u.alive():
                if c.key not in seen:
                    seen.add(c.key)
                    out.append(c.render())
        return out

    def _refined(self, model: str, rewrite: Rewrite, drops: list[dict[str, Any]]) -> list[tuple[int, str, list[Claim]]]:
        """The rewrite's sentences, cleaned; claims no surviving claim backs go (``refine_new``, added to ``drops``)."""
        lex = self.tools.lexicon
        kept, clean_drops = clean_caption(rewrite.text or "", self._clean_options(), enabled=self.config.clean)
        drops += [_drop(model, d.sentence, d.text, d.reason, stage="refine") for d in clean_drops]
        surviving = [c for u in self._all_units() for c in u.alive()]
        units = [_Unit(model, s.index, s.text, parse_claims(s.text, lex, model=model, sentence=s.index)) for s in kept]
        matcher = Matcher(surviving + [c for u in units for c in u.claims], self._match_options())
        for u in units:
            for i, c in enumerate(u.claims):
                if self.config.visibility and self._too_small(c):
                    u.dropped[i] = "too_small"
                elif matcher.best(c, surviving) <= 0:
                    u.dropped[i] = "refine_new"
        _head_rule({model: units})
        pieces = []
        for u in units:
            for i, c in enumerate(u.claims):
                if i in u.dropped:
                    drops.append(_drop(model, u.index, c.render(), u.dropped[i], concept=c.concept, stage="refine"))
            live = u.alive()
            if not u.claims:
                continue  # a rewrite sentence that asserts nothing checkable adds nothing
            if len(live) == len(u.claims):
                pieces.append((u.index, u.text, live))
            elif live:
                pieces.append((u.index, _sentence_from(live), live))
        return pieces

    # ------------------------------------------------------------ steps 7-9

    def row(self, rewrites: dict[str, Rewrite] | None = None, local_captions: list[str] | None = None) -> dict[str, Any] | None:
        """The corpus row, or None when no model says anything usable about the tile."""
        config, tools = self.config, self.tools
        drops = list(self.drops)
        for u in self._all_units():
            for i, c in enumerate(u.claims):
                if i in u.dropped:
                    verdict = self.verdicts.get((u.model, u.index, i))
                    drops.append(_drop(u.model, u.index, c.render(), u.dropped[i], concept=c.concept, **_verdict_json(verdict)))
        cands = self.drafts()
        refined_by: dict[str, str | None] = {m: None for m in cands}
        refine_errors: dict[str, str] = {}
        for m, rewrite in (rewrites or {}).items():
            if m not in cands:
                continue
            pieces = self._refined(m, rewrite, drops) if rewrite.text else []
            if pieces:
                cands[m], refined_by[m] = pieces, rewrite.by
            else:
                refine_errors[m] = rewrite.error or "the rewrite kept no checkable claim"
        if not cands:
            return None
        new = [c for m, p in cands.items() if refined_by[m] for _, _, cs in p for c in cs]
        matcher = Matcher(self.every + new, self._match_options()) if new else self.matcher
        claims_of = {m: [c for _, _, cs in p for c in cs] for m, p in cands.items()}
        scores: dict[str, float | None] = {m: None for m in cands}
        if config.consensus and len(cands) > 1:
            for m in cands:
                scores[m] = sum(matcher.f1(claims_of[m], claims_of[o]) for o in cands if o != m) / (len(cands) - 1)
            chosen = max(cands, key=lambda m: (scores[m], len(claims_of[m]), _neg(m)))
        else:
            chosen = max(cands, key=lambda m: (len(claims_of[m]), _neg(m)))

        # every candidate fits max_tokens, cut at a sentence boundary
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
                    drops.append(_drop(m, idx, t, "length_cut", **({"stage": "refine"} if refined_by[m] else {})))
            in_text[m] = kept_idx

        surviving = [c for u in self._all_units() for c in u.alive()]
        claims_json = []
        for m, pieces in cands.items():
            for idx, _, cs in pieces:
                for c in cs:
                    if refined_by[m]:
                        # a rewrite claim restates surviving claims: it carries their support
                        backers = [s for s in surviving if matcher.score(c, s) > 0 or s.key == c.key]
                        supports = [self.support[_ref(self.units, s)] for s in backers]
                        known = [x for x, _ in supports if x is not None]
                        share = max(known) if known else None
                        supported_by = sorted({o for _, others in supports for o in others})
                        extra = {"stage": "refine", "restates": [[s.model, s.sentence] for s in backers]}
                    else:
                        ref = (m, idx, _position(self.units, m, idx, c))
                        share, supported_by = self.support[ref]
                        extra = _verdict_json(self.verdicts.get(ref))
                    claims_json.append(c.to_json() | {"support": share, "supported_by": supported_by, "in_caption": m == chosen and idx in in_text[m],
                                                       "in_candidate": idx in in_text[m]} | extra)
        short = _short_caption(cands, chosen, claims_json, texts[chosen], config, tools)
        support_values = [c["support"] for c in claims_json if c["in_caption"] and c["support"] is not None]
        return {
            "tile_id": self.tile_id,
            "caption": texts[chosen],
            "caption_short": short,
            "model": chosen,
            "candidates": [{"model": m, "caption": texts[m], "score": scores[m], "sentences": sorted(in_text[m]), "refined_by": refined_by[m],
                            "refine_error": refine_errors.get(m)} for m in cands],
            "local_captions": list(local_captions or []),
            "claims": json.dumps(claims_json, ensure_ascii=False),
            "dropped": json.dumps(drops, ensure_ascii=False),
            "n_models": len(self.captions),
            "gsd": self.gsd,
            "cut": cut_of[chosen],
            "score": scores[chosen],
            "support_mean": sum(support_values) / len(support_values) if support_values else None,
            "tokens": tools.count_tokens(texts[chosen]),
            "short_tokens": tools.count_tokens(short),
        }


def fuse_tile(tile_id: str, captions: dict[str, str], gsd: float | None, config: FuseConfig, tools: _Tools) -> dict[str, Any] | None:
    """Fuse one tile's captions (model -> text) with the deterministic steps only; None when nothing usable is left."""
    return TileFusion(tile_id, captions, gsd, config, tools).row()


def _verdict_json(verdict: Verdict | None) -> dict[str, Any]:
    if verdict is None:
        return {}
    return {"checked_by": verdict.by, "confirmed": verdict.confirmed,
            **{k: v for k, v in (("check_score", verdict.score), ("check_answer", verdict.answer), ("check_error", verdict.error)) if v is not None}}


def _position(units: dict[str, list[_Unit]], model: str, index: int, claim: Claim) -> int:
    return next(i for i, x in enumerate(_unit(units, model, index).claims) if x is claim)


def _ref(units: dict[str, list[_Unit]], claim: Claim) -> ClaimRef:
    return (claim.model, claim.sentence, _position(units, claim.model, claim.sentence, claim))


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
    plural = claims[0].term.endswith("s") or (claims[0].count or 1) > 1  # "there is" agrees with the first item, as people write it
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
        text = c["text"] if lex.concepts.get(k) is None or lex.concepts[k].kind != "land_use" else lex.concepts[k].label
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


class TileImages:
    """A tiles artifact's GSD and images by tile id; images are read only when a check or rewrite needs them."""

    def __init__(self, tiles: Path):
        ds, self.manifest = artifacts.read_dataset(tiles, "tiles", columns=("gsd",))
        self.artifact_id = manifest_fields.field(self.manifest, tiles, "artifact_id", str)
        ids = ds.data.column("tile_id").to_pylist()
        self.index = {t: i for i, t in enumerate(ids)}
        self.gsd = {t: (float(g) if g is not None else None) for t, g in zip(ids, ds.data.column("gsd").to_pylist())}
        self._images = ds.data.column("image")
        self._sha = ds.data.column("image_sha256").to_pylist() if "image_sha256" in ds.column_names else None
        self.max_pixels = max_pixels_of(self.manifest)  # a larger tile is a bad image for the checks and refine, never decoded

    def image(self, tile_id: str) -> bytes:
        return self._images[self.index[tile_id]]["bytes"].as_py()

    def image_id(self, tile_id: str) -> str:
        if self._sha is not None:
            return self._sha[self.index[tile_id]]
        return hashlib.sha256(self.image(tile_id)).hexdigest()


def load_gsd(tiles: Path) -> tuple[dict[str, float], dict[str, Any]]:
    images = TileImages(tiles)
    return images.gsd, images.manifest


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
            # each model's caption; sentences: its source sentences (indices into the raw caption, or into the rewrite when refined_by)
            "candidates": [{"model": Value("string"), "caption": Value("string"), "score": Value("float64"), "sentences": [Value("int32")],
                            "refined_by": Value("string"), "refine_error": Value("string")}],
            "local_captions": [Value("string")],  # --refine: the refining model's captions of the four quadrants
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


def fuse(config: FuseConfig, progress: Callable[..., None] | None = None, run: artifacts.RunInfo | None = None) -> FuseResult:
    """Fuse the captions folders of ``config`` into the corpus artifact at ``config.out``.

    ``progress(done, total, description=...)`` is called per phase.
    """
    config.check()
    inputs = config.captions + ((config.tiles,) if config.tiles else ())
    with artifacts.writing(config.out, "corpus", overwrite=config.overwrite, inputs=inputs):
        return _fuse(config, progress, run)


def _fuse(config: FuseConfig, progress: Callable[..., None] | None, run: artifacts.RunInfo | None) -> FuseResult:
    merged, counts, manifests = load_captions(config.captions)
    tiles = _tiles_for(config)
    gsd = _gsd_of(tiles, config)
    tools = _tools(config)
    _check_images(merged, tiles, config)
    not_in_tiles = _check_overlap(merged, tiles, config, [_tiles_inputs(m, p) for m, p in zip(manifests, config.captions)])
    report = progress or (lambda done, total, **kw: None)
    ids = sorted(merged)
    tally = Counter()
    rows: list[dict[str, Any]] = []
    looks = config.image_check != "none" or config.refine is not None
    states: dict[str, TileFusion] = {}  # kept for the image steps only: they work on every tile at once
    for n, tile_id in enumerate(ids, 1):
        if config.visibility and gsd(tile_id) is None:
            tally["tiles_without_gsd"] += 1
        state = TileFusion(tile_id, merged[tile_id], gsd(tile_id), config, tools)
        if looks:
            states[tile_id] = state
        else:
            _add_row(rows, state.row(), tally)
        if n % 16 == 0 or n == len(ids):
            report(n, len(ids), description="claims" if looks else "fusing")
    models = sorted({m for caps in merged.values() for m in caps})
    model_info: dict[str, dict[str, Any]] = {m: {"from": "captions"} for m in models}
    steps: dict[str, Any] = {"clean": config.clean, "visibility": config.visibility, "support": config.support, "consensus": config.consensus}
    vlm = _vlm_for(config) if config.uses_ollama else None
    if looks:
        try:
            rewrites, local = _check_and_refine(states, tiles, config, models, vlm, report, tally, steps)
        except KeyboardInterrupt:
            kept = f"; the VLM answers so far are kept in {vlm.journal_path.parent}" if vlm is not None else ""
            raise Interrupted(f"fuse interrupted{kept}") from None
        for n, tile_id in enumerate(ids, 1):
            _add_row(rows, states.pop(tile_id).row(rewrites.get(tile_id), local.get(tile_id)), tally)
            if n % 16 == 0 or n == len(ids):
                report(n, len(ids), description="fusing")
    if vlm is not None:
        tally["vlm_asked"], tally["vlm_reused"] = vlm.asked, vlm.reused
        for tag, digest in vlm.digests.items():
            roles = (["check"] if tag in steps.get("check", {}).get("models", []) else []) + (["refine"] if tag == config.refine else [])
            model_info[tag] = model_info.get(tag, {}) | {"digest": digest, "roles": roles}
    import datasets

    features = corpus_features()
    ds = datasets.Dataset.from_list(rows, features=features) if rows else datasets.Dataset.from_dict({k: [] for k in features}, features=features)
    counts = {
        "rows": len(rows),
        "failed_captions": counts.get("failed_captions", 0),
        "duplicate_rows": counts.get("duplicate_rows", 0),
        **{f"dropped_{r}": tally.get(f"dropped_{r}", 0) for r in REASONS},
        "cut": tally.get("cut", 0),
        "empty_tiles": tally.get("empty_tiles", 0),
        "tiles_without_gsd": tally.get("tiles_without_gsd", 0),
        "not_in_tiles": not_in_tiles,
        "single_model": all(len(caps) <= 1 for caps in merged.values()),
        **{k: v for k, v in sorted(tally.items()) if k.startswith(("checked", "confirmed", "check_", "refine", "vlm_"))},
    }
    inputs = [artifacts.fingerprint(p) for p in config.captions] + ([artifacts.fingerprint(config.tiles)] if tiles else [])
    manifest = artifacts.new_manifest(
        STAGE,
        run=run or artifacts.RunInfo.from_config(config),
        inputs=inputs,
        rows=len(rows),
        counts=counts,
        models=model_info,
        extra={
            "steps": steps,
            "lexicon": tools.lexicon.describe(),
            "captions_artifacts": [manifest_fields.field(m, p, "artifact_id", str) for m, p in zip(manifests, config.captions)],
            "tiles_artifact": tiles.artifact_id if tiles else None,
        },
    )
    artifacts.write_dataset(ds, config.out, manifest, overwrite=config.overwrite)
    failures = counts.get("check_errors", 0) + counts.get("refine_errors", 0)
    if vlm is not None and vlm.journal_path is not None and not failures:
        artifacts.remove(vlm.journal_path.parent, "partial")  # the corpus holds every answer that counted
    return FuseResult(config.out, len(rows), counts, manifest)


def _add_row(rows: list[dict[str, Any]], row: dict[str, Any] | None, tally: Counter) -> None:
    if row is None:
        tally["empty_tiles"] += 1
        return
    for d in json.loads(row["dropped"]):
        tally[f"dropped_{d['reason']}"] += 1
    tally["cut"] += int(row["cut"])
    for c in row["candidates"]:
        tally["refined"] += c["refined_by"] is not None
        tally["refine_not_used"] += c["refine_error"] is not None  # the draft stayed; the row says why
    rows.append(row)


def _check_and_refine(states, tiles, config, models, vlm, report, tally, steps) -> tuple[dict[str, dict[str, Rewrite]], dict[str, list[str]]]:
    """Steps 5 and 6 (each when switched on); records what they used in ``steps``."""
    rewrites: dict[str, dict[str, Rewrite]] = {}
    local: dict[str, list[str]] = {}
    if config.image_check != "none":
        steps["check"] = _image_check(states, tiles, config, models, vlm, report, tally)
    if config.refine:
        steps["refine"] = _refine(states, tiles, config, vlm, report, tally, rewrites, local)
    return rewrites, local


def _vlm_for(config: FuseConfig, journal: bool = True):
    from urbanln_cli.captioners.cached import CachedVlm
    from urbanln_cli.captioners.ollama import OllamaBackend

    return CachedVlm(
        lambda: OllamaBackend(config.hosts, timeout=config.timeout),
        artifacts.partial_dir(config.out) / "vlm.jsonl" if journal else None,  # the folder appears with the first answer
        policy=RetryPolicy(config.concurrency, config.retries, content_retries=2),
        options=GenerationOptions(temperature=0.0, seed=config.seed, num_predict=512),
    )


def _sent_id(tiles: TileImages, config: FuseConfig) -> Callable[[str], str]:
    """What a VLM is sent, by name: the tile's bytes and the size they are shrunk to (the answer cache's key)."""
    return lambda t: f"{tiles.image_id(t)}@{config.image_size}"


def _image_check(states: dict[str, TileFusion], tiles: TileImages, config: FuseConfig, models: list[str], vlm, report, tally) -> dict[str, Any]:
    """Step 5 over every tile at once (batched for CLIP, concurrent for VLMs)."""
    refs, queries = [], []
    for tile_id, state in states.items():
        for ref, claim in state.disputed():
            refs.append((tile_id, ref))
            queries.append(ClaimQuery(tile_id, claim.render(), claim.concept, ref[0]))
    if config.image_check == "clip":
        from urbanln_cli.image_check.clip import ClipCheckConfig, ClipChecker, reference_sample

        checker = ClipChecker(ClipCheckConfig(model=config.clip_model, arch=config.clip_arch, pretrained=config.clip_pretrained,
                                              max_pixels=tiles.max_pixels,
                                              **({"margin": config.clip_margin} if config.clip_margin is not None else {})),
                              lexicon=states[next(iter(states))].tools.lexicon if states else None)
        # one fixed reference set of tiles, so a claim's verdict does not depend on the chunk it is checked in
        reference = reference_sample(sorted(tiles.index))
        verdicts = []
        for chunk in _chunks_by_tile(queries, CLIP_CHUNK_TILES):  # memory grows with the tiles of one call
            verdicts += checker.check(chunk, tiles.image, lambda done, total: report(done, total, description="checking claims (clip)"),
                                      reference=reference)
    else:
        from urbanln_cli.image_check.vlm import VlmChecker

        checkers = list(config.check_models) or models
        if any(m.startswith("sim:") for m in checkers):
            raise UsageProblem("the simulated panel cannot answer questions about claims",
                               hint="pass --check-model with an Ollama vision model, e.g. --check-model qwen-vl")
        checker = VlmChecker(vlm, checkers)
        verdicts = checker.check(queries, lambda t: _fit(tiles.image(t), config, tiles.max_pixels), _sent_id(tiles, config), lambda t: states[t].gsd,
                                 lambda done, total: report(done, total, description="checking claims (vlm)"))
    by_tile: dict[str, dict[ClaimRef, Verdict]] = {}
    for (tile_id, ref), verdict in zip(refs, verdicts):
        by_tile.setdefault(tile_id, {})[ref] = verdict
        tally["checked"] += 1
        tally["confirmed"] += verdict.confirmed
        tally["check_errors"] += verdict.error is not None
    for tile_id, verdicts_of in by_tile.items():
        states[tile_id].apply_verdicts(verdicts_of)
    return checker.describe()


def _chunks_by_tile(queries: list[ClaimQuery], tiles_per_chunk: int) -> list[list[ClaimQuery]]:
    """Consecutive queries, split so no chunk holds more than ``tiles_per_chunk`` tiles (queries come tile by tile)."""
    chunks: list[list[ClaimQuery]] = []
    seen: set[str] = set()
    for q in queries:
        if q.tile_id not in seen and len(seen) == tiles_per_chunk:
            seen = set()
        if not seen:
            chunks.append([])
        seen.add(q.tile_id)
        chunks[-1].append(q)
    return chunks


def _refine(states: dict[str, TileFusion], tiles: TileImages, config: FuseConfig, vlm, report, tally, rewrites, local) -> dict[str, Any]:
    """Step 6: quadrant captions per tile, then a rewrite of each model's draft."""
    from urbanln_cli.captioners.refine import Refiner

    refiner = Refiner(vlm, config.refine, config.image_size, tiles.max_pixels)
    sent_id = _sent_id(tiles, config)
    ids = [t for t, state in states.items() if state.drafts()]
    locals_ = refiner.local_captions(ids, tiles.image, sent_id, lambda t: states[t].gsd,
                                     lambda done, total: report(done, total, description="quadrant captions"))
    jobs, owners = [], []
    for t in ids:
        drafts = states[t].drafts()
        if isinstance(locals_[t], str):  # a quadrant caption failed: no rewrite, and each candidate says why
            rewrites[t] = {model: Rewrite(None, locals_[t], by=config.refine) for model in drafts}
            tally["refine_errors"] += len(drafts)
            continue
        local[t] = locals_[t]
        facts = states[t].facts()
        for model, pieces in drafts.items():
            jobs.append((t, " ".join(text for _, text, _ in pieces), locals_[t], facts))
            owners.append((t, model))
    results = refiner.rewrite(jobs, lambda t: _fit(tiles.image(t), config, tiles.max_pixels), sent_id, lambda t: states[t].gsd,
                              lambda done, total: report(done, total, description="rewriting"))
    for (t, model), (text, error) in zip(owners, results):
        rewrites.setdefault(t, {})[model] = Rewrite(text, error, by=config.refine)
        tally["refine_errors"] += error is not None
    return refiner.describe() | {"digest": vlm.digests.get(config.refine)}


def _fit(image: bytes, config: FuseConfig, max_pixels: int | None = None) -> bytes:
    from urbanln_cli.captioners import fit_image

    return fit_image(image, config.image_size, max_pixels)


def _tiles_for(config: FuseConfig) -> TileImages | None:
    needs_images = config.image_check != "none" or config.refine is not None
    if config.tiles is None or not (config.visibility or needs_images):
        return None
    if not Path(config.tiles).exists():
        if config.gsd is not None and not needs_images:
            return None  # captions without tiles (e.g. imported): every tile has the --gsd given
        raise InputError(
            f"tiles artifact not found: {config.tiles} (needed for each tile's GSD and image)",
            hint="pass --tiles PATH" + ("" if needs_images else ", --gsd M for captions without tiles, or --no-visibility"),
        )
    return TileImages(config.tiles)


def _check_images(merged: dict[str, Any], tiles: TileImages | None, config: FuseConfig) -> None:
    if tiles is None or not (config.image_check != "none" or config.refine):
        return
    missing = [t for t in merged if t not in tiles.index]
    if missing:
        raise InputError(f"{len(missing)} of {len(merged)} captioned tiles are not in {config.tiles} (e.g. {missing[0]}); "
                         "--check and --refine need their images", hint="pass with --tiles the tiles the captions were made from")


def _tiles_inputs(manifest: dict[str, Any], path: Path) -> list[str]:
    """The tiles artifact(s) a captions manifest says its captions were made from (for hints)."""
    found = []
    for i, entry in enumerate(manifest_fields.field(manifest, path, "inputs", list, [])):
        if not isinstance(entry, dict):
            raise manifest_fields.damaged(path, manifest, f"'inputs[{i}]' is {manifest_fields.json_type(entry)}, not an object")
        if entry.get("stage") == "tiles" and isinstance(entry.get("path"), str):
            found.append(entry["path"])
    return found


MOST_MISSING = 0.5  # more than this share of the captioned tiles not in --tiles: they are not the captions' tiles


def _check_overlap(merged: dict[str, Any], tiles: TileImages | None, config: FuseConfig, made_from: list[list[str]]) -> int:
    """How many captioned tiles ``tiles`` lacks (a few: counted, and the command warns).

    When none or most of them are there, the tiles are not the ones the captions were
    made from, and every GSD (so the visibility step) would be wrong or missing: refused.
    """
    if tiles is None or not merged:
        return 0
    missing = [t for t in merged if t not in tiles.index]
    if len(missing) > MOST_MISSING * len(merged):
        n = len(merged)
        which = f"none of the {n} captioned tiles is in" if len(missing) == n else f"{len(missing)} of the {n} captioned tiles are not in"
        example = next(iter(tiles.index), None)
        theirs = f"; it holds tiles like {example!r}" if example is not None else "; it holds no tiles"
        sources = sorted({p for m in made_from for p in m})
        where = f" ({', '.join(sources)})" if sources else ""
        raise InputError(
            f"{which} {config.tiles} (e.g. {missing[0]!r}{theirs}): not the tiles the captions were made from",
            hint=f"pass with --tiles the tiles the captions were made from{where}, or --no-visibility to fuse without tiles",
        )
    return len(missing)


def _gsd_of(tiles: TileImages | None, config: FuseConfig) -> Callable[[str], float | None]:
    known = tiles.gsd if tiles else {}
    return lambda tile_id: known.get(tile_id) if known.get(tile_id) is not None else config.gsd


def explain(config: FuseConfig, tile_id: str) -> dict[str, Any]:
    """One tile's fusion: from a corpus given among the inputs, else computed for that tile alone."""
    for path in config.captions:
        manifest = artifacts.read_manifest(path) if Path(path).exists() else None
        if manifest and manifest.get("stage") == STAGE:
            ds, _ = artifacts.read_dataset(path, STAGE)
            ids = ds.data.column("tile_id").to_pylist()
            if tile_id not in ids:
                raise InputError(f"tile {tile_id} is not in {path}", hint=_ids_hint(ids[:3]))
            return _decode(ds[ids.index(tile_id)]) | {"source": str(path)}
    config.check()
    merged, counts, _ = load_captions(config.captions)
    if tile_id not in merged:
        raise InputError(f"tile {tile_id} has no usable caption in {', '.join(map(str, config.captions))}", hint=_ids_hint(sorted(merged)[:3]))
    tiles = _tiles_for(config)
    _check_images({tile_id: None}, tiles, config)
    state = TileFusion(tile_id, merged[tile_id], _gsd_of(tiles, config)(tile_id), config, _tools(config))
    vlm = _vlm_for(config, journal=False) if config.uses_ollama else None
    rewrites, local = _check_and_refine({tile_id: state}, tiles, config, sorted(merged[tile_id]), vlm, lambda *a, **k: None, Counter(), {})
    row = state.row(rewrites.get(tile_id), local.get(tile_id))
    if row is None:
        return {"tile_id": tile_id, "source": "computed", "caption": None, "inputs": merged[tile_id], "note": "every caption was cleaned away"}
    return _decode(row) | {"source": "computed", "inputs": merged[tile_id]}


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    return dict(row) | {"claims": json.loads(row["claims"]), "dropped": json.loads(row["dropped"])}


def _ids_hint(ids: list[str]) -> str:
    return f"tile ids look like {', '.join(ids)}" if ids else "the input has no tiles"


__all__ = ["FuseConfig", "FuseResult", "fuse", "fuse_tile", "explain", "load_captions", "corpus_features", "REASONS"]
