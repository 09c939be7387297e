"""The ``clip`` image check of ``fuse --check clip``: does the tile's image back a claim?

The model is the current CLIP model: a ``pretrain`` run folder (default
``runs/latest``, as ``embed``), or open_clip weights (``pretrained``: a tag of
``arch``, a checkpoint file or ``local-dir:FOLDER``); it is loaded by
``models.loading.load_encoder``, so the checker sees exactly what ``embed`` sees.

Views. Each tile is decoded once and encoded once as five views: the whole
tile and its four quadrant crops (``image_check.QUADRANTS`` order, the boxes of
``quadrant_crops``), each through the model's eval transform. A claim about
something in one corner (a river, a stadium) can then win on the crop that
holds it.

Texts. A claim's phrase and every contrast text go through one template,
``PROMPT`` ("a satellite image of {}."). The contrast set is fixed: the label
of every concept of the lexicon ("a river", "industrial area", "cars", …),
encoded once per checker. Each distinct claim phrase is encoded once per call.

Rule. Raw CLIP cosines are not calibrated: their level moves from model to
model, from image to image (some images are close to every text) and from text
to text (some phrases are close to every image). The score is relative on both
sides. On view ``v`` of a tile let ``s_v`` be the claim's cosine and ``c_vk``
the cosines of the contrast texts, leaving out the claim's own concept (a
concept does not contrast with itself)::

    z(tile) = max over the five views v of (s_v - mean_k c_vk) / std_k c_vk
    score   = z(tile) - mean of z(r) over the reference tiles r
    confirmed = score >= margin

The first line removes what is common to all texts on a view (an offset, a
scale, the logit scale). The second removes the claim's text prior: how well
the same phrase scores on a typical tile. The reference tiles are the tiles of
the call, or a fixed set given with ``reference=`` (``reference_sample`` picks
256 tile ids spread over the artifact); with a fixed set a claim's verdict does
not depend on which other claims share its call. The reference views are kept
between calls.

``score`` is thus in contrast standard deviations: how far the claim stands
above the other concepts on its best view, beyond what the same phrase gets on
a typical tile. ``DEFAULT_MARGIN`` is 1.5. Without the second line the text
prior dominates: on the benchmark a random-weights model then scores ROC AUC
0.43 (confidently wrong, because the hallucinated sentences reuse a few
phrases), and 0.49 with it. A model that cannot see gives scores near 0, so
at 1.5 it confirms almost nothing (0.2% of claims for random weights) and
disputed claims go as they would without a checker; a model that has learned
something confirms what it sees. Common concepts are hard to confirm: a
concept present in most reference tiles has a high prior, so the margin asks
for more than a typical tile shows.

Measured by ``bench/clip_check_quality.py`` on a held-out synthetic city (seed
1, 64 tiles, 1,974 claims of which 89% true; 111 disputed by ``fuse``, 36%
true): the ``urbanln demo --quick`` model is at chance (AUC 0.54, 95% CI 0.50
to 0.59; about 0.5 on disputed claims; it confirms nothing at 1.5), like its
random-weights twin (0.49). An urbanln-tiny model trained longer (25 epochs on
576 tiles of another city) reaches AUC 0.59 (0.55 to 0.63), 0.59 on disputed
claims; at 1.5 it confirms 14% of disputed claims with precision 0.69 against
a base rate of 0.36. Wrong counts cannot be seen (AUC 0.45); wrong land use
(0.67) and hallucinated objects (0.62) can. The rule is meant for a real model
(a long ``pretrain`` run, or CLIP weights through ``pretrained``).

Verdicts. ``score`` is the score above (rounded to 4 decimals), ``answer`` the
view it came from (``"tile"`` or a quadrant name), ``by`` is ``"clip"``.

Errors. A tile whose image cannot be decoded (or for which ``image_of`` returns
None) gives each of its claims ``Verdict(confirmed=False, error=...)``; the
other tiles are checked as usual; an undecodable reference tile is left out
of the reference. Exceptions raised by ``image_of`` itself propagate: a tile
the caller cannot find is the caller's bug.

Determinism: eval mode, ``torch.inference_mode``, random weights drawn from
``seed`` in a forked RNG, texts encoded in sorted order. The same inputs give
the same verdicts. Memory grows with the tiles of one call (five vectors per
tile, both kept while scoring); for a large corpus call ``check`` on chunks of
about a thousand tiles with one fixed ``reference``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from urbanln_cli.errors import UsageProblem
from urbanln_cli.image_check import QUADRANTS, ClaimQuery, Verdict, quadrant_boxes
from urbanln_cli.text.lexicon import Lexicon, builtin

PROMPT = "a satellite image of {}."  # the one template of claim and contrast texts
VIEWS = ("tile", *QUADRANTS)
DEFAULT_MARGIN = 1.5  # contrast standard deviations; see the module docstring
DEFAULT_REFERENCE = 256  # tiles in reference_sample
RULE = (
    "z = max over views (tile + 4 quadrants) of (cos(claim) - mean cos(contrast)) / std cos(contrast); "
    "score = z - mean of z over the reference tiles; confirmed when score >= margin"
)
_STD_FLOOR = 1e-6


def prompt(phrase: str) -> str:
    """The text encoded for a claim or contrast phrase."""
    return PROMPT.format(phrase.strip().rstrip("."))


@dataclass(frozen=True)
class ClipCheckConfig:
    model: Path | None = None  # a pretrain run folder; default runs/latest (as embed)
    arch: str | None = None  # with pretrained (default ViT-B-16)
    pretrained: str | None = None  # an open_clip tag, a checkpoint file, local-dir:FOLDER, or none (random weights)
    margin: float = DEFAULT_MARGIN  # in contrast standard deviations; see the module docstring
    batch_size: int = 64  # views (images) or texts per forward pass
    device: str = "auto"
    seed: int = 0  # draws the weights when pretrained is none
    max_pixels: int | None = None  # a tile image with more pixels is a bad image, never decoded (default: imagery's)

    def check(self) -> None:
        if self.model is not None and self.pretrained is not None:
            raise UsageProblem(
                "give the CLIP check a run folder or pretrained weights, not both",
                hint="--clip-model PATH (a `urbanln pretrain` folder) or --clip-pretrained TAG with --clip-arch",
            )
        if self.batch_size < 1:
            raise UsageProblem(f"the CLIP check's batch size must be at least 1, not {self.batch_size}")
        if not np.isfinite(self.margin):
            raise UsageProblem(f"the CLIP check's margin {self.margin} is not a number")


@dataclass
class Similarities:
    """The cosines behind a call's verdicts (``decide`` turns them into scores; the bench tries other rules on them).

    ``claim[q, v]``: query q's cosine on view v of its tile; ``contrast[tile_of[q], v, k]``: contrast
    text k on the same view; ``own[q]``: index of the claim's concept in the contrast set, -1 for none;
    ``prior[q]``: the mean over the reference tiles of the claim's text-side score (its text prior).
    Rows of failed tiles are NaN and ``errors[q]`` says why.
    """

    claim: np.ndarray  # (queries, 5)
    contrast: np.ndarray  # (tiles, 5, contrast texts)
    tile_of: np.ndarray  # (queries,) row of contrast
    own: np.ndarray  # (queries,)
    prior: np.ndarray  # (queries,)
    prior_std: np.ndarray  # (queries,) std of that score over the reference tiles
    reference_tiles: int = 0
    errors: list[str | None] = field(default_factory=list)


def reference_sample(tile_ids: Sequence[str], n: int = DEFAULT_REFERENCE) -> list[str]:
    """A fixed calibration set: ``n`` tile ids evenly spaced over the sorted ids (all of them when fewer)."""
    ids = sorted(set(tile_ids))
    if len(ids) <= n:
        return ids
    return [ids[round(i * (len(ids) - 1) / (n - 1))] for i in range(n)] if n > 1 else ids[:1]


class ClipChecker:
    """Scores claims against tile images with a CLIP model; see the module docstring for the rule."""

    by = "clip"

    def __init__(self, config: ClipCheckConfig = ClipCheckConfig(), lexicon: Lexicon | None = None):
        import torch

        from urbanln_cli.models.loading import EncoderSpec, load_encoder, run_folder
        from urbanln_cli.models.step import pick_device

        config.check()
        self.config = config
        self.device = pick_device(config.device)
        if config.pretrained is None:
            run_folder(
                config.model,
                hint="train one with `urbanln pretrain`, pass its folder with --clip-model, "
                "or give open_clip weights with --clip-pretrained (and --clip-arch)",
            )
        encoder_config = EncoderSpec(model=config.model, arch=config.arch, pretrained=config.pretrained)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)  # random weights (pretrained none) are the same every time
            model, transform, tokenizer, source = load_encoder(encoder_config, self.device)
        self.model, self.transform, self.tokenizer = model.eval(), transform, tokenizer
        self.source = dict(source)
        if config.pretrained is not None and config.pretrained.lower() in ("none", "random", ""):
            self.source["seed"] = config.seed
        self._fingerprint: str | None = self.source.get("weights_sha256")
        lexicon = lexicon or builtin()
        self.contrast_concepts = list(lexicon.concepts)
        self.contrast_texts = [prompt(lexicon.concepts[c].label) for c in self.contrast_concepts]
        self._concept_index = {c: i for i, c in enumerate(self.contrast_concepts)}
        self._contrast = self.encode_texts(self.contrast_texts)  # (K, D), once per checker
        self._reference: tuple[tuple[str, ...], dict[str, np.ndarray]] | None = (
            None  # ids -> their views, kept between calls
        )
        self.last_reference_tiles: int | None = None

    # ------------------------------------------------------------ encoders (tests count and replace these)

    def encode_images(self, pixels) -> np.ndarray:
        """Unit vectors of a batch of transformed views, (n, D) float32."""
        import torch

        from urbanln_cli.models import autocast_for

        with torch.inference_mode(), autocast_for(self.device):
            out = self.model.encode_image(pixels.to(self.device), normalize=True)
        return out.float().cpu().numpy()

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of texts (already through ``prompt``), (n, D) float32, in ``batch_size`` chunks."""
        import torch

        from urbanln_cli.models import autocast_for

        chunks = []
        with torch.inference_mode(), autocast_for(self.device):
            for start in range(0, len(texts), self.config.batch_size):
                tokens = self.tokenizer(list(texts[start : start + self.config.batch_size]))
                chunks.append(self._encode_tokens(tokens.to(self.device)).float().cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, self._dim()), np.float32)

    def _encode_tokens(self, tokens):
        """Short prompts are encoded at their own length, not padded to 77 or 248 (same vectors, a fraction of the
        work)."""
        from open_clip.tokenizer import SimpleTokenizer

        from urbanln_cli.models import encode_text

        model = self.model
        plain = (
            getattr(model, "text_pool_type", None) == "argmax"
            and getattr(model, "attn_mask", None) is not None
            and isinstance(getattr(self.tokenizer, "tokenizer", self.tokenizer), SimpleTokenizer)
        )
        if not plain:
            return model.encode_text(tokens, normalize=True)
        length = int((tokens != 0).sum(dim=1).max())
        return encode_text(model, tokens[:, : max(length, 1)], normalize=True)

    def _dim(self) -> int:
        return int(self._contrast.shape[1]) if hasattr(self, "_contrast") else int(self.model.text_projection.shape[1])

    # ------------------------------------------------------------ the check

    def check(
        self,
        queries: Sequence[ClaimQuery],
        image_of: Callable[[str], bytes | None],
        progress: Callable[[int, int], None] | None = None,
        reference: Sequence[str] | None = None,
    ) -> list[Verdict]:
        """One verdict per query, in order.

        ``image_of(tile_id)`` gives a tile's encoded image (None: no image). ``reference``: the tile ids
        that calibrate each phrase's prior (see the module docstring); None uses this call's tiles. Pass
        the same reference to every call (``reference_sample(all tile ids)``) and the verdicts do not
        depend on how the claims are split into calls. ``progress(done, total)`` counts tiles encoded.
        """
        sims = self.similarities(queries, image_of, progress, reference)
        scores, best = decide(sims)
        verdicts = []
        for q in range(len(queries)):
            if sims.errors[q] is not None:
                verdicts.append(Verdict(confirmed=False, by=self.by, error=sims.errors[q]))
            else:
                score = float(scores[q])
                verdicts.append(
                    Verdict(
                        confirmed=score >= self.config.margin, by=self.by, score=round(score, 4), answer=VIEWS[best[q]]
                    )
                )
        return verdicts

    def similarities(
        self,
        queries: Sequence[ClaimQuery],
        image_of: Callable[[str], bytes | None],
        progress: Callable[[int, int], None] | None = None,
        reference: Sequence[str] | None = None,
    ) -> Similarities:
        """The cosines ``check`` decides on: each tile encoded once (5 views), each distinct phrase once."""
        tiles = list(dict.fromkeys(q.tile_id for q in queries))
        ref_ids = tuple(dict.fromkeys(reference)) if reference is not None else tuple(tiles)
        keep = reference is not None and self._reference is not None and self._reference[0] == ref_ids
        cached = self._reference[1] if keep else {}  # a reference passed in is kept between calls
        todo = [t for t in dict.fromkeys((*tiles, *ref_ids)) if t not in cached]
        encoded = {**cached, **self._encode_tiles(todo, image_of, progress)}
        if reference is not None:
            self._reference = (ref_ids, {t: encoded[t] for t in ref_ids})

        errors = [encoded[q.tile_id] if isinstance(encoded[q.tile_id], str) else None for q in queries]
        dim = self._dim()
        views = (
            np.stack(
                [
                    encoded[t] if not isinstance(encoded[t], str) else np.full((len(VIEWS), dim), np.nan, np.float32)
                    for t in tiles
                ]
            )
            if tiles
            else np.zeros((0, len(VIEWS), dim), np.float32)
        )
        ref_views = [encoded[t] for t in ref_ids if not isinstance(encoded[t], str)]
        self.last_reference_tiles = len(ref_views)

        texts = sorted({prompt(q.phrase) for q in queries})
        text_vec = dict(zip(texts, self.encode_texts(texts))) if texts else {}
        row_of = {t: i for i, t in enumerate(tiles)}
        tile_of = np.array([row_of[q.tile_id] for q in queries], np.int64)
        own = np.array([self._concept_index.get(q.concept, -1) if q.concept else -1 for q in queries], np.int64)
        contrast = np.einsum("tvd,kd->tvk", views, self._contrast)
        claim = np.full((len(queries), len(VIEWS)), np.nan, np.float32)
        for i, q in enumerate(queries):
            if errors[i] is None:
                claim[i] = views[tile_of[i]] @ text_vec[prompt(q.phrase)]
        prior, prior_std = self._prior(queries, own, text_vec, np.stack(ref_views) if ref_views else None)
        return Similarities(claim, contrast.astype(np.float32), tile_of, own, prior, prior_std, len(ref_views), errors)

    def _prior(self, queries, own: np.ndarray, text_vec: dict[str, np.ndarray], ref_views: np.ndarray | None):
        """Per query: mean and std over the reference tiles of its text-side score (max over views of the contrast
        z)."""
        if ref_views is None or not len(queries):
            return np.zeros(len(queries)), np.ones(len(queries))
        mean, std = _contrast_stats(np.einsum("rvd,kd->rvk", ref_views, self._contrast))  # (R, 5, K+1)
        pairs = sorted({(prompt(q.phrase), int(o)) for q, o in zip(queries, own)})
        value: dict[tuple[str, int], tuple[float, float]] = {}
        for start in range(0, len(pairs), 512):  # (pairs, R, 5) at a time, bounded memory
            chunk = pairs[start : start + 512]
            cos = np.einsum("rvd,pd->prv", ref_views, np.stack([text_vec[t] for t, _ in chunk])).astype(np.float64)
            col = np.array([o for _, o in chunk])
            m, s = np.moveaxis(mean[:, :, col], -1, 0), np.moveaxis(std[:, :, col], -1, 0)
            z = ((cos - m) / s).max(axis=-1)  # (pairs, R)
            spread = z.std(axis=-1, ddof=1) if z.shape[1] > 1 else np.ones(len(chunk))
            value.update(zip(chunk, zip(z.mean(axis=-1).tolist(), np.maximum(spread, _STD_FLOOR).tolist())))
        both = np.array([value[(prompt(q.phrase), int(o))] for q, o in zip(queries, own)]).reshape(-1, 2)
        return both[:, 0], both[:, 1]

    def _encode_tiles(self, tile_ids: Sequence[str], image_of, progress) -> dict[str, np.ndarray | str]:
        """Each tile's five view vectors (5, D), or the reason it has none; views batched across tiles."""
        import torch

        report = progress or (lambda done, total: None)
        out: dict[str, Any] = {}
        pending: list[tuple[str, int, Any]] = []  # (tile, view index, transformed view)

        def flush() -> None:
            if pending:
                vectors = self.encode_images(torch.stack([p for _, _, p in pending]))
                for (tile_id, v, _), vector in zip(pending, vectors):
                    out[tile_id][v] = vector
                pending.clear()

        report(0, len(tile_ids))
        for done, tile_id in enumerate(tile_ids, 1):
            try:
                crops = self._views(image_of(tile_id))
            except _BadImage as exc:
                out[tile_id] = str(exc)
                crops = []
            else:
                out[tile_id] = np.empty((len(VIEWS), self._dim()), np.float32)
            for v, crop in enumerate(crops):
                pending.append((tile_id, v, crop))
                if len(pending) >= self.config.batch_size:
                    flush()
            if done % 16 == 0 and done < len(tile_ids):
                report(done, len(tile_ids))
        flush()
        report(len(tile_ids), len(tile_ids))
        return out

    def _views(self, image: bytes | None) -> list:
        """The five transformed views of one tile image; _BadImage when it cannot be decoded."""
        from PIL import Image

        from urbanln_cli.imagery import open_image

        if image is None:
            raise _BadImage("no image for this tile")
        try:
            with open_image(image, self.config.max_pixels, "it") as img:
                rgb = img.convert("RGB")
        except (
            OSError,
            ValueError,
            Image.DecompressionBombError,
        ) as exc:  # UnidentifiedImageError is an OSError; ImageTooLarge a ValueError
            reason = re.sub(
                r"<[^>]*at 0x[0-9a-fA-F]+>", "its bytes", str(exc)
            )  # no memory addresses: verdicts stay reproducible
            raise _BadImage(f"cannot decode the tile image: {reason}") from None
        w, h = rgb.size
        if w < 2 or h < 2:
            raise _BadImage(f"the tile image is {w}×{h} px, too small for quadrant crops")
        return [self.transform(rgb), *(self.transform(rgb.crop(box)) for box in quadrant_boxes(w, h))]

    # ------------------------------------------------------------ provenance

    def describe(self) -> dict[str, Any]:
        """What the corpus manifest records about this check: model, fingerprint, rule, margin, texts."""
        if self._fingerprint is None:
            self._fingerprint = _state_sha256(self.model)
        contrast = json.dumps(self.contrast_texts).encode()
        return {
            "checker": self.by,
            "source": self.source,
            "weights_sha256": self._fingerprint,
            "rule": RULE,
            "margin": self.config.margin,
            "prompt": PROMPT,
            "views": list(VIEWS),
            "contrast": {"texts": len(self.contrast_texts), "sha256": hashlib.sha256(contrast).hexdigest()},
            "reference_tiles": self.last_reference_tiles,
        }


class _BadImage(Exception):
    pass


def _contrast_stats(contrast: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (ddof 1) of the contrast cosines (..., K) leaving out each concept k in turn: (..., K+1).

    Index K (and -1) leaves out nothing, for claims without a concept in the lexicon.
    """
    c = contrast.astype(np.float64)
    k = c.shape[-1]
    s1, s2 = c.sum(-1, keepdims=True), (c * c).sum(-1, keepdims=True)
    n = np.concatenate([np.full(k, k - 1.0), [float(k)]])
    t1 = np.concatenate([s1 - c, s1], axis=-1)
    t2 = np.concatenate([s2 - c * c, s2], axis=-1)
    mean = t1 / n
    var = np.maximum(t2 - n * mean * mean, 0.0) / np.maximum(n - 1, 1)
    return mean, np.maximum(np.sqrt(var), _STD_FLOOR)


def decide(sims: Similarities) -> tuple[np.ndarray, np.ndarray]:
    """(score, best view) per query: max over views of the claim's contrast z-score, minus its prior.

    NaN scores for failed tiles.
    """
    if not len(sims.tile_of):
        return np.zeros(0), np.zeros(0, np.int64)
    mean, std = _contrast_stats(sims.contrast)  # (T, 5, K+1)
    rows = np.arange(len(sims.tile_of))
    m = mean[sims.tile_of][rows, :, sims.own]  # (Q, 5); own -1 picks index K: nothing left out
    s = std[sims.tile_of][rows, :, sims.own]
    z = (sims.claim - m) / s
    failed = np.isnan(z).all(axis=1)
    best = np.where(failed, 0, np.argmax(np.nan_to_num(z, nan=-np.inf), axis=1))
    score = np.where(failed, np.nan, z[rows, best] - sims.prior)
    return score.astype(np.float64), best.astype(np.int64)


def _state_sha256(model) -> str:
    """A fingerprint of the weights in memory (for open_clip tags and random weights, which have no file of ours)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


__all__ = [
    "ClipCheckConfig",
    "ClipChecker",
    "Similarities",
    "decide",
    "reference_sample",
    "prompt",
    "PROMPT",
    "VIEWS",
    "DEFAULT_MARGIN",
    "DEFAULT_REFERENCE",
    "RULE",
]
