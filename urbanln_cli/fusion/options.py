"""What the per-tile fusion needs: its options, its tools, and the reasons a piece of text goes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from urbanln_cli.text.clean import REASONS as CLEAN_REASONS
from urbanln_cli.text.lexicon import Lexicon

# every reason a phrase or claim is dropped, in the order of the steps (the manifest counts dropped_<reason>)
REASONS = (
    *CLEAN_REASONS,
    "too_small",
    "unsupported",
    "contradicted",
    "unconfirmed",
    "head_dropped",
    "clause_dropped",
    "refine_new",
    "length_cut",
)
# the step that drops for each reason; head_dropped and clause_dropped name the step of the claim that took them along
STEP_OF = {
    **{r: "clean" for r in CLEAN_REASONS},
    "too_small": "visibility",
    "unsupported": "support",
    "contradicted": "support",
    "unconfirmed": "check",
    "refine_new": "refine",
    "length_cut": "length",
}
COLLATERAL = ("head_dropped", "clause_dropped")


@dataclass(frozen=True)
class FusionOptions:
    """The parameters of the deterministic steps (a subset of the stage's ``FuseConfig``)."""

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
    # visibility, support and the image check also for captions marked trusted (human-checked)
    filter_trusted: bool = False

    @classmethod
    def of(cls, config: Any) -> FusionOptions:
        """The options of any object with these attributes (a ``FuseConfig``)."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls) if hasattr(config, f.name)})


@dataclass(frozen=True)
class Tools:
    lexicon: Lexicon
    count_tokens: Callable[[str], int]

    def is_attribute(self, word: str) -> bool:
        """Whether a word may stand before a noun in its noun phrase (an attribute of the lexicon)."""
        return self.lexicon.attribute_pattern.fullmatch(word) is not None


def step_of(reason: str) -> str | None:
    return STEP_OF.get(reason)
