"""The simulated panel's personas: each one's length, style and error rates.

Calibration (``bench/sim_calibration.py``; figures and method in docs/fuse.md,
"The simulated panel's calibration"). The settings were chosen from a comparison
with real captions only, never from an ablation table:

- ``detail`` (verbosity) was cut from 5/12/6/1 (precise/verbose/hallucinating/
  generic) to 2/4/2/1. The comparison is between the sim chain without refinement
  (panel, then ``fuse``) and the real LLaMA-Adapter V2 Beijing captions after the
  same cleaning. With the old values, the fused sim captions had a median of 93
  CLIP tokens, 78 % of them over 77, and 15 % of their target-relevant facts were
  new past token 77. The real ones have 62 tokens, 22 % and 0.4 %. A long
  single-model caption mostly repeats itself. Of the detail scales tried (1, 0.5,
  0.3, 0.25), 0.3 came closest on median and share over 77 (66-68 tokens, 29 %,
  3.5 % new) without making the raw panel much shorter than the real raw captions
  (median 80-83 against 95).
- ``local_detail`` (what a rewrite adds beyond restating the checked facts in
  place) stays small: 2 for sim:precise, the refiner calibrated here. There are no
  real refined captions to match. So a rewrite keeps to the prompt's 8 sentences
  and to Long-CLIP's 248 tokens (p90 122: never cut), and its median (106 tokens)
  stays near a real VLM's free caption (95). The difference is that its text past
  token 77 is new, relevant content (30 % of its relevant facts, against 2.7 % in
  the real captions), which is the paper's mechanism. A ``local_detail`` of 0 or 4
  gives a refined median of 84 or 113 tokens on a 4 km city (106 at 2).
- ``check_false_yes`` and ``check_false_no`` follow each persona's hallucination
  and omission profile. The hallucinating persona says yes to false claims most
  often.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Persona:
    """Error rates are probabilities: per fact sentence (omission, wrong_count, wrong_land_use) or per caption."""

    detail: int  # how many optional detail sentences it adds (length)
    omission: float
    wrong_count: float
    wrong_land_use: float
    hallucinated_object: float
    hallucinated_small_object: float
    boilerplate: float
    style: str  # "plain", "florid" or "vague"
    absence: float = 0.0  # per caption, twice: says that something the tile lacks is not there (true)
    false_absence: float = 0.0  # per caption: says that something the tile has is not there (an error)
    # fuse --check vlm: the share of yes/no questions answered wrongly, by the truth of the claim asked about
    check_false_yes: float = 0.0  # "yes" to a claim the tile does not bear out
    check_false_no: float = 0.0  # "no" to a true claim
    # fuse --refine: how much a rewrite adds, and how often it carries over an unchecked quadrant claim
    local_detail: int = 2  # at most this many "also in the … quarter" sentences (local detail) per rewrite
    rewrite_leak: float = 0.0  # per quadrant claim that no checked fact backs (fuse drops it: refine_new)


# Hand-packed data tables: the formatter leaves them as written.
# fmt: off
PERSONAS = {
    "precise": Persona(detail=2, omission=0.10, wrong_count=0.05, wrong_land_use=0.03, hallucinated_object=0.03,
                       hallucinated_small_object=0.0, boilerplate=0.0, style="plain", absence=0.35, false_absence=0.02,
                       check_false_yes=0.05, check_false_no=0.10, local_detail=2, rewrite_leak=0.0),
    "verbose": Persona(detail=4, omission=0.05, wrong_count=0.15, wrong_land_use=0.05, hallucinated_object=0.15,
                       hallucinated_small_object=0.15, boilerplate=0.5, style="florid", absence=0.45,
                           false_absence=0.05, check_false_yes=0.15, check_false_no=0.10, local_detail=3,
                           rewrite_leak=0.10),
    "hallucinating": Persona(detail=2, omission=0.15, wrong_count=0.30, wrong_land_use=0.25, hallucinated_object=0.50,
                             hallucinated_small_object=0.60, boilerplate=0.2, style="florid", absence=0.25,
                                 false_absence=0.20, check_false_yes=0.35, check_false_no=0.20, local_detail=2,
                                 rewrite_leak=0.30),
    "generic": Persona(detail=1, omission=0.50, wrong_count=0.10, wrong_land_use=0.10, hallucinated_object=0.05,
                       hallucinated_small_object=0.05, boilerplate=0.8, style="vague", absence=0.20,
                           false_absence=0.05, check_false_yes=0.10, check_false_no=0.25, local_detail=1,
                           rewrite_leak=0.05),
}


# fmt: on
