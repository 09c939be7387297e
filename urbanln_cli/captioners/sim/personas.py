"""The simulated panel's personas: each one's length, style and error rates."""

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


# Hand-packed data tables: the formatter leaves them as written.
# fmt: off
PERSONAS = {
    "precise": Persona(detail=5, omission=0.10, wrong_count=0.05, wrong_land_use=0.03, hallucinated_object=0.03,
                       hallucinated_small_object=0.0, boilerplate=0.0, style="plain", absence=0.35, false_absence=0.02),
    "verbose": Persona(detail=12, omission=0.05, wrong_count=0.15, wrong_land_use=0.05, hallucinated_object=0.15,
                       hallucinated_small_object=0.15, boilerplate=0.5, style="florid", absence=0.45,
                           false_absence=0.05),
    "hallucinating": Persona(detail=6, omission=0.15, wrong_count=0.30, wrong_land_use=0.25, hallucinated_object=0.50,
                             hallucinated_small_object=0.60, boilerplate=0.2, style="florid", absence=0.25,
                                 false_absence=0.20),
    "generic": Persona(detail=1, omission=0.50, wrong_count=0.10, wrong_land_use=0.10, hallucinated_object=0.05,
                       hallucinated_small_object=0.05, boilerplate=0.8, style="vague", absence=0.20,
                           false_absence=0.05),
}


# fmt: on
