"""Steps 4 and 6 of ``fuse``: whether two claims say the same thing, and how alike two captions are.

Two lexicon claims match when they name the same canonical concept (synonyms
are one concept already) and their numbers do not contradict each other (counts
within ``count_tolerance``, lanes, storeys). A phrase claim (no lexicon concept)
matches by soft similarity: cosine of character 3-5-gram TF-IDF vectors, fitted
on the claims of one tile only, so a tile's result never depends on the others.

Polarity is part of the match: an absence claim ("no cars") matches only another
absence claim, and a presence claim of the same concept contradicts it
(``contradicts``). Phrase claims (no concept) never contradict anything: their
meaning is too loosely known.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from urbanln_cli.text.claims import Claim


@dataclass(frozen=True)
class MatchOptions:
    count_tolerance: float = 0.25  # counts a and b agree when |a-b| <= max(1, tol*max(a, b))
    soft_threshold: float = 0.5  # cosine of char n-gram TF-IDF for phrase claims


def counts_agree(a: int | None, b: int | None, tolerance: float) -> bool:
    if a is None or b is None:
        return True
    return abs(a - b) <= max(1.0, tolerance * max(a, b))


def _bounds(x: str) -> tuple[int, int]:
    parts = [int(v) for v in x.split("-")]
    return parts[0], parts[-1]


def _quantity_agrees(x: str, y: str, tolerance: float) -> bool:
    if "-" in x or "-" in y:  # a range agrees with a value or range that overlaps it (one either side)
        (lo1, hi1), (lo2, hi2) = _bounds(x), _bounds(y)
        return lo1 <= hi2 + 1 and lo2 <= hi1 + 1
    return counts_agree(int(x), int(y), tolerance)


class Matcher:
    """Compares the claims of one tile; build one per tile."""

    def __init__(self, claims: Sequence[Claim], options: MatchOptions = MatchOptions()):
        self.options = options
        phrases = sorted({c.soft_text() for c in claims if c.concept is None} | {c.soft_text() for c in claims})
        self._vectors = {}
        if any(c.concept is None for c in claims) and phrases:
            from sklearn.feature_extraction.text import TfidfVectorizer

            vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), lowercase=True, norm="l2")
            matrix = vec.fit_transform(phrases)
            self._vectors = {p: matrix[i] for i, p in enumerate(phrases)}

    def soft(self, a: Claim, b: Claim) -> float:
        va, vb = self._vectors.get(a.soft_text()), self._vectors.get(b.soft_text())
        if va is None or vb is None:
            return 0.0
        return float(va.multiply(vb).sum())

    def score(self, a: Claim, b: Claim) -> float:
        """1.0 for an exact or synonym match, the cosine for a soft match above threshold, else 0."""
        if a.negated != b.negated:
            return 0.0
        if a.concept is not None and b.concept is not None:
            if a.concept != b.concept or not counts_agree(a.count, b.count, self.options.count_tolerance):
                return 0.0
            qa, qb = dict(a.quantities), dict(b.quantities)
            for k in qa.keys() & qb.keys():
                if not _quantity_agrees(qa[k], qb[k], self.options.count_tolerance):
                    return 0.0
            return 1.0
        s = self.soft(a, b)
        return s if s >= self.options.soft_threshold else 0.0

    @staticmethod
    def contradicts(a: Claim, b: Claim) -> bool:
        """One says the concept is there, the other that it is not."""
        return a.concept is not None and a.concept == b.concept and a.negated != b.negated

    def best(self, claim: Claim, others: Sequence[Claim]) -> float:
        return max((self.score(claim, o) for o in others), default=0.0)

    def f1(self, a: Sequence[Claim], b: Sequence[Claim]) -> float:
        """CAPTURE-like similarity of two captions: F1 of their claim sets under this matching."""
        if not a or not b:
            return 0.0
        precision = sum(self.best(c, b) for c in a) / len(a)
        recall = sum(self.best(c, a) for c in b) / len(b)
        return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
