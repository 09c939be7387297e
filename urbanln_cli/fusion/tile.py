"""One tile's captions through the deterministic steps of ``fuse``: pure functions, no I/O.

1. clean: refusals, boilerplate, filler clauses, repeats, length bounds (``text.clean``);
2. claims: each sentence becomes claims, absence claims included (``text.claims``);
3. visibility: claims about objects too small for the tile's GSD go (``too_small``);
4. support: a claim's support is the share of the *other* models that make a
   matching claim (same concept and polarity); below ``min_support`` it goes
   (``unsupported``), and when more other models say the opposite ("no cars"
   against "cars") than back it, it goes too (``contradicted``). With one
   model, support is undefined (``None``) and nothing is dropped for it;
5. (the stage) an image check may confirm disputed claims (``apply_verdicts``);
6. (the stage) a rewrite may replace a draft (``row(rewrites=…)``, ``refine_new``);
7-9. consensus, the length cut and ``caption_short`` (``fusion.compose``).

A dropped claim takes out the piece of its sentence that carries it, never a
word more or less (``text.clauses``): the clause, the phrase from it to the end
of its clause, or the list item; a claim in the sentence's main clause takes
the sentence. The claims that go along are ``head_dropped`` (the sentence went)
or ``clause_dropped``, each naming the claim and step that took it (``cause``).
So every candidate is made of its model's own sentences, some trimmed.

Captions marked trusted (imported as human-checked) are cleaned only, unless
``filter_trusted``. When every candidate is emptied, the tile keeps its best
cleaned candidate, flagged ``fallback``; only a tile whose every sentence was
cleaned away (refusals, boilerplate) has no row.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from urbanln_cli.fusion.compose import Piece, choose, drop, main_concept, short_caption, verdict_json
from urbanln_cli.fusion.options import STEP_OF, FusionOptions, Tools
from urbanln_cli.image_check import Verdict
from urbanln_cli.text.claims import Claim, parse_claims
from urbanln_cli.text.clauses import Cut, Layout, cut, layout
from urbanln_cli.text.clean import CleanOptions, clean_caption
from urbanln_cli.text.match import Matcher, MatchOptions
from urbanln_cli.text.tokens import fit_tokens

ClaimRef = tuple[str, int, int]  # (model, sentence index in the raw caption, claim position in the sentence)


@dataclass(frozen=True)
class Rewrite:
    """What ``--refine`` returned for one candidate: the rewritten text, or why there is none."""

    text: str | None
    error: str | None = None
    by: str = ""


@dataclass
class Unit:
    """One sentence of one model's caption on its way through the steps."""

    model: str
    index: int
    text: str
    claims: list[Claim]
    is_modifier: Callable[[str], bool]
    trusted: bool = False
    primary: dict[int, str] = field(default_factory=dict)  # claim position -> the reason a step dropped it
    _layout: Layout | None = None
    _cut: tuple[frozenset, Cut] | None = None

    def cut(self) -> Cut:
        """The sentence without the pieces its dropped claims stood in."""
        key = frozenset(self.primary)
        if self._cut is None or self._cut[0] != key:
            if self._layout is None:
                self._layout = layout(self.text)
            self._cut = (key, cut(self._layout, [c.spans for c in self.claims], set(self.primary), self.is_modifier))
        return self._cut[1]

    def dropped(self) -> dict[int, str]:
        """Every dropped claim: those a step dropped, and those that went with them."""
        c = self.cut()
        along = "head_dropped" if c.text is None else "clause_dropped"
        return self.primary | {i: along for i in c.cause if i not in self.primary}

    def alive(self) -> list[Claim]:
        gone = self.dropped()
        return [c for i, c in enumerate(self.claims) if i not in gone]


class TileFusion:
    """One tile's captions on their way through the steps.

    Construction runs steps 1-4 (clean, claims, visibility, support). Then the
    stage may confirm disputed claims with an image check (``disputed`` and
    ``apply_verdicts``) and rewrite the drafts (``drafts``, ``facts``); ``row``
    finishes with consensus, the short caption and the length cut.
    """

    def __init__(
        self,
        tile_id: str,
        captions: dict[str, str],
        gsd: float | None,
        options: FusionOptions,
        tools: Tools,
        trusted: frozenset[str] | set[str] = frozenset(),
    ):
        self.tile_id, self.captions, self.gsd, self.options, self.tools = tile_id, captions, gsd, options, tools
        self.trusted = frozenset(trusted)
        self.drops: list[dict[str, Any]] = []
        self.units: dict[str, list[Unit]] = {}
        for model in sorted(captions):
            kept, clean_drops = clean_caption(captions[model], self._clean_options(), enabled=options.clean)
            self.drops += [drop(model, d.sentence, d.text, d.reason, step="clean") for d in clean_drops]
            self.units[model] = [self._unit(model, s.index, s.text, trusted=model in self.trusted) for s in kept]
        self.voters = [m for m in self.units if any(u.claims for u in self.units[m])]

        # 3. visibility
        if options.visibility:
            for u in self._filtered():
                for i, c in enumerate(u.claims):
                    if self._too_small(c):
                        u.primary[i] = "too_small"

        # 4. cross-model support (against the others' claims that survived visibility)
        self.every = [c for u in self._all_units() for c in u.claims]
        self.matcher = Matcher(self.every, self._match_options())
        alive = {m: [c for u in self.units[m] for c in u.alive()] for m in self.units}
        self.support: dict[ClaimRef, tuple[float | None, list[str]]] = {}
        self.against: dict[ClaimRef, list[str]] = {}
        self.verdicts: dict[ClaimRef, Verdict] = {}
        others_n = len(self.voters) - 1
        names_land = {m for m in self.units if any(self._is_land(c) for c in alive[m])}
        self.uncontested: set[ClaimRef] = set()
        for u in self._all_units():
            gone = u.dropped()
            for i, c in enumerate(u.claims):
                if i in gone:
                    continue
                ref = (u.model, u.index, i)
                if others_n < 1:
                    self.support[ref] = (None, [])
                    continue
                backers = [o for o in self.voters if o != u.model and self.matcher.best(c, alive[o]) > 0]
                against = [
                    o
                    for o in self.voters
                    if o != u.model and o not in backers and any(Matcher.contradicts(c, x) for x in alive[o])
                ]
                share = len(backers) / others_n
                self.support[ref] = (share, backers)
                if against:
                    self.against[ref] = against
                if share < options.min_support - 1e-9 and self._is_land(c) and not names_land - {u.model}:
                    self.uncontested.add(ref)  # the only land use named: nothing says otherwise
                if options.support and self._filters(u):
                    if share < options.min_support - 1e-9 and ref not in self.uncontested:
                        u.primary[i] = "unsupported"
                    elif len(against) > len(backers):
                        u.primary[i] = "contradicted"

    def _unit(self, model: str, index: int, text: str, trusted: bool = False) -> Unit:
        claims = parse_claims(text, self.tools.lexicon, model=model, sentence=index)
        return Unit(model, index, text, claims, self.tools.is_attribute, trusted)

    def _clean_options(self) -> CleanOptions:
        return CleanOptions(min_words=self.options.min_words, max_words=self.options.max_words)

    def _match_options(self) -> MatchOptions:
        return MatchOptions(count_tolerance=self.options.count_tolerance, soft_threshold=self.options.soft_threshold)

    def _too_small(self, c: Claim) -> bool:
        limit = self.tools.lexicon.max_gsd(c.concept, c.count is not None) if c.concept else None
        gsd = self.gsd
        return limit is not None and (limit == 0 or (gsd is not None and math.isfinite(gsd) and gsd > limit))

    def _is_land(self, c: Claim) -> bool:
        concept = self.tools.lexicon.concepts.get(c.concept) if c.concept else None
        return concept is not None and concept.kind == "land_use" and not c.negated

    def _filters(self, u: Unit) -> bool:
        """Whether visibility, support and the image check may drop this sentence's claims (trusted captions: only if
        asked)."""
        return not u.trusted or self.options.filter_trusted

    def _all_units(self) -> list[Unit]:
        return [u for m in self.units for u in self.units[m]]

    def _filtered(self) -> list[Unit]:
        return [u for u in self._all_units() if self._filters(u)]

    # ------------------------------------------------------------ step 5: image check

    def disputed(self) -> list[tuple[ClaimRef, Claim]]:
        """Claims too few other models back, or more contradict (all claims with a single model), which only the image
        can save."""
        out = []
        for u in self._filtered():
            for i, c in enumerate(u.claims):
                ref = (u.model, u.index, i)
                why = u.primary.get(i)
                if ref not in self.support or why not in (None, "unsupported", "contradicted"):
                    continue
                share = self.support[ref][0]
                if share is None or share < self.options.min_support - 1e-9 or why == "contradicted":
                    out.append((ref, c))
        return out

    def apply_verdicts(self, verdicts: dict[ClaimRef, Verdict]) -> None:
        """A disputed claim stays only when its image check confirms it."""
        self.verdicts.update(verdicts)
        for (model, index, pos), verdict in verdicts.items():
            u = _unit(self.units, model, index)
            if verdict.error is not None:
                continue  # no answer is not a "no": the claim stays as support left it (the error is recorded)
            if verdict.confirmed:
                u.primary.pop(pos, None)
            else:
                u.primary.setdefault(pos, "unconfirmed")

    # ------------------------------------------------------------ step 6: refine

    def drafts(self) -> dict[str, list[Piece]]:
        """Each model's candidate from what survived: (sentence index, kept text, kept claims)."""
        cands = {}
        for model in self.units:
            pieces = [p for u in self.units[model] if (p := _piece(u)) is not None]
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

    def _refined(self, model: str, rewrite: Rewrite, drops: list[dict[str, Any]]) -> list[Piece]:
        """The rewrite's sentences, cleaned; claims no surviving claim backs go (``refine_new``, added to ``drops``)."""
        kept, clean_drops = clean_caption(rewrite.text or "", self._clean_options(), enabled=self.options.clean)
        drops += [drop(model, d.sentence, d.text, d.reason, step="clean", stage="refine") for d in clean_drops]
        surviving = [c for u in self._all_units() for c in u.alive()]
        units = [self._unit(model, s.index, s.text) for s in kept]
        matcher = Matcher(surviving + [c for u in units for c in u.claims], self._match_options())
        for u in units:
            for i, c in enumerate(u.claims):
                if self.options.visibility and self._too_small(c):
                    u.primary[i] = "too_small"
                elif matcher.best(c, surviving) <= 0:
                    u.primary[i] = "refine_new"
        pieces = []
        for u in units:
            drops += _claim_drops(u, {}, stage="refine")
            if u.claims:  # a rewrite sentence that asserts nothing checkable adds nothing
                p = _piece(u)
                if p is not None:
                    pieces.append(p)
        return pieces

    # ------------------------------------------------------------ steps 7-9

    def row(
        self, rewrites: dict[str, Rewrite] | None = None, local_captions: list[str] | None = None
    ) -> dict[str, Any] | None:
        """The corpus row, or None when cleaning left no sentence of any model."""
        options, tools = self.options, self.tools
        drops = list(self.drops)
        for u in self._all_units():
            drops += _claim_drops(u, self.verdicts)
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
        fallback = not cands
        if fallback:
            cands = self._fallback()
            if not cands:
                return None
            refined_by = {m: None for m in cands}
            (only,) = cands
            for d in drops:
                if d["model"] == only and d.get("step") != "clean" and d.get("stage") != "refine":
                    d["kept_by_fallback"] = True
        new = [c for m, p in cands.items() if refined_by[m] for _, _, cs in p for c in cs]
        matcher = Matcher(self.every + new, self._match_options()) if new else self.matcher
        claims_of = {m: [c for _, _, cs in p for c in cs] for m, p in cands.items()}
        alive = [c for u in self._all_units() for c in u.alive()] or [c for cs in claims_of.values() for c in cs]
        main = main_concept(alive, tools.lexicon)
        chosen, scores = choose(claims_of, matcher, options.consensus, main)

        # every candidate fits max_tokens, cut at a sentence boundary
        texts: dict[str, str] = {}
        in_text: dict[str, set[int]] = {}
        cut_of: dict[str, bool] = {}
        for m, pieces in cands.items():
            full = " ".join(t for _, t, _ in pieces)
            text, was_cut, _ = fit_tokens(full, options.max_tokens, tools.count_tokens)
            texts[m], cut_of[m] = text, was_cut
            kept_idx, used = set(), ""
            for idx, t, _ in pieces:
                trial = f"{used} {t}".strip()
                if text.startswith(trial):
                    kept_idx.add(idx)
                    used = trial
                else:
                    drops.append(
                        drop(m, idx, t, "length_cut", step="length", **({"stage": "refine"} if refined_by[m] else {}))
                    )
            in_text[m] = kept_idx

        claims_json = self._claims_json(cands, refined_by, matcher, chosen, in_text)
        kept = [p for p in cands[chosen] if p[0] in in_text[chosen]]
        short = short_caption(kept, main, options.short_tokens, tools.count_tokens) or texts[chosen]
        short = fit_tokens(short, options.short_tokens, tools.count_tokens)[0]
        support_values = [c["support"] for c in claims_json if c["in_caption"] and c["support"] is not None]
        return {
            "tile_id": self.tile_id,
            "caption": texts[chosen],
            "caption_short": short,
            "model": chosen,
            "candidates": [
                {
                    "model": m,
                    "caption": texts[m],
                    "score": scores[m],
                    "sentences": sorted(in_text[m]),
                    "refined_by": refined_by[m],
                    "refine_error": refine_errors.get(m),
                    "trusted": m in self.trusted,
                }
                for m in cands
            ],
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
            "fallback": fallback,
        }

    def _fallback(self) -> dict[str, list[Piece]]:
        """Every candidate was emptied: the best cleaned one, whole (its claims unfiltered)."""
        pool = {m: [(u.index, u.text, list(u.claims)) for u in units] for m, units in self.units.items() if units}
        if not pool:
            return {}
        chosen, _ = choose(
            {m: [c for _, _, cs in p for c in cs] for m, p in pool.items()}, self.matcher, self.options.consensus
        )
        return {chosen: pool[chosen]}

    def _claims_json(self, cands, refined_by, matcher: Matcher, chosen: str, in_text) -> list[dict[str, Any]]:
        surviving = [c for u in self._all_units() for c in u.alive()]
        out = []
        for m, pieces in cands.items():
            for idx, _, cs in pieces:
                for c in cs:
                    if refined_by[m]:
                        # a rewrite claim restates surviving claims: it carries their support
                        backers = [s for s in surviving if matcher.score(c, s) > 0 or s.key == c.key]
                        supports = [self.support.get(_ref(self.units, s), (None, [])) for s in backers]
                        known = [x for x, _ in supports if x is not None]
                        share = max(known) if known else None
                        supported_by = sorted({o for _, others in supports for o in others})
                        extra: dict[str, Any] = {
                            "stage": "refine",
                            "restates": [[s.model, s.sentence] for s in backers],
                        }
                    else:
                        ref = (m, idx, _position(self.units, m, idx, c))
                        share, supported_by = self.support.get(ref, (None, []))
                        extra = verdict_json(self.verdicts.get(ref))
                        if ref in self.against:
                            extra["contradicted_by"] = self.against[ref]
                        if ref in self.uncontested:
                            extra["uncontested"] = True
                    out.append(
                        c.to_json()
                        | {
                            "support": share,
                            "supported_by": supported_by,
                            "in_caption": m == chosen and idx in in_text[m],
                            "in_candidate": idx in in_text[m],
                        }
                        | extra
                    )
        return out


def fuse_tile(
    tile_id: str,
    captions: dict[str, str],
    gsd: float | None,
    options: FusionOptions,
    tools: Tools,
    trusted: frozenset[str] | set[str] = frozenset(),
) -> dict[str, Any] | None:
    """Fuse one tile's captions (model -> text) with the deterministic steps only; None when cleaning left nothing."""
    return TileFusion(tile_id, captions, gsd, options, tools, trusted).row()


def _piece(u: Unit) -> Piece | None:
    if not u.claims:
        return (u.index, u.text, [])  # nothing to check: kept as written
    c = u.cut()
    return None if c.text is None else (u.index, c.text, u.alive())


def _claim_drops(u: Unit, verdicts: dict[ClaimRef, Verdict], **extra: Any) -> list[dict[str, Any]]:
    """The drops of one sentence's claims: each with the step that dropped it, or the claim it went with."""
    out = []
    c = u.cut()
    for i, why in sorted(u.dropped().items()):
        claim = u.claims[i]
        info: dict[str, Any] = {"concept": claim.concept, **verdict_json(verdicts.get((u.model, u.index, i)))}
        if i in u.primary:
            info["step"] = STEP_OF.get(why)
            info["removed"] = c.removed_by.get(i) or None
        else:
            cause = c.cause.get(i)
            cause_claim = u.claims[cause] if cause is not None else None
            cause_reason = u.primary.get(cause) if cause is not None else None
            info["step"] = STEP_OF.get(cause_reason or "")
            info["cause"] = {"reason": cause_reason, "text": cause_claim.render()} if cause_claim is not None else None
        out.append(drop(u.model, u.index, claim.render(), why, **info, **extra))
    return out


def _position(units: dict[str, list[Unit]], model: str, index: int, claim: Claim) -> int:
    return next(i for i, x in enumerate(_unit(units, model, index).claims) if x is claim)


def _ref(units: dict[str, list[Unit]], claim: Claim) -> ClaimRef:
    return (claim.model, claim.sentence, _position(units, claim.model, claim.sentence, claim))


def _unit(units: dict[str, list[Unit]], model: str, index: int) -> Unit:
    return next(u for u in units[model] if u.index == index)


__all__ = ["TileFusion", "Rewrite", "Unit", "ClaimRef", "fuse_tile"]
