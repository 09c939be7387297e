"""Step 1 of ``fuse``: clean a caption sentence by sentence, saying why each piece went.

Every function returns what it kept and a list of ``Drop(text, reason)``, in the
manner of datatrove's filters, so ``fuse`` can count ``dropped_<reason>`` and
show the dropped phrases. Sentence indices always refer to ``split_sentences``
of the raw caption, so a sentence can be traced back to its source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# reasons, in the order the checks run
REASONS = ("refusal", "boilerplate", "filler", "repeated", "repetition", "too_short", "too_long")

# a sentence ends at . ! ? before a capital (with a space, or without one after a word: "background.The")
_SPLIT = re.compile(
    r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])|(?<=[a-z]{3}[.!?])(?=[A-Z][a-z])|\n\s*\n|\n(?=\s*[-*•\d])"
)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")

_REFUSAL = re.compile(
    r"^\s*(i'?m sorry|i am sorry|sorry,|i cannot|i can'?t|i am unable|i'?m unable|unfortunately,? i|as an ai|"
    r"i do not have the ability|i don'?t have the ability|it is not possible for me)",
    re.I,
)
# prefixes that assert nothing; what follows them may still say something
_BOILER_PREFIX = re.compile(
    r"^\s*(?:(?:overall|in summary|in conclusion|to summari[sz]e|in short),?\s*"
    r"|(?:this|the) (?:aerial |satellite |overhead |top-down )?(?:image|picture|photo|photograph|scene|view|tile)"
    r"(?: (?:provided|above|here))? (?:shows|depicts|displays|captures|presents|features|contains|reveals|is of|is)\s+"
    r"|in (?:this|the) (?:aerial |satellite )?(?:image|picture|photo|scene|view),?\s*"
    r"|(?:we|you) can see\s+|(?:it|this) is\s+|here (?:we see|is|are)\s+)",
    re.I,
)
# what is left of a sentence about the picture or its mood once the prefix went: "(The image captures) the
# essence of a lively city", "(The scene is) captured from an aerial perspective, providing a view of …"
_ABOUT_THE_PICTURE = re.compile(
    r"^\s*(?:the (?:essence|spirit|beauty|charm|atmosphere) of|an? (?:sense|feeling|glimpse|snapshot) of"
    r"|(?:captured|taken|seen|viewed|photographed|shot) from (?:an? |the )?(?:aerial|overhead|bird'?s[- "
    r"]eye|above|high|satellite|top-down)"
    r"|(?:providing|offering|giving) (?:an? |the )?(?:\w+ )?(?:view|overview|glimpse|look))\b",
    re.I,
)
# words that describe the picture rather than the place
_SCENE_WORDS = frozenset(
    "image picture photo photograph satellite aerial overhead top-down view views scene area region tile place "
    "taken captured shown seen visible above from perspective bird's-eye birds eye typical ordinary general "
    "landscape urban rural city town part location overall features feature various different some many".split()
)
_STOP = frozenset(
    "a an the this that these those is are was were be been being of in on at to from by with and or as it its "
    "there here which who what shows show depicts depict displays contains appears appear seems seem looks look "
    "portrays portray illustrates illustrate showcases showcase captures capture presents present "
    "can could may might would will very quite rather also just".split()
)
# clauses that pad a sentence without asserting anything about the place
# Each ends where its clause ends (punctuation or the end of the text), so it never cuts a word in two.
_CLAUSE_END = r"(?=\s*(?:[,.;:!?]|$))"
FILLER = tuple(
    p + _CLAUSE_END
    for p in (
        r",?\s*(?:as (?:can be |is )?(?:seen|visible|shown|evident|observed) (?:in|from) (?:the|this) "
        r"(?:image|picture|photo|photograph|view|scene|above))",
        r",\s*which (?:is|are) (?:clearly |easily |also )?(?:visible|seen|discernible)(?: from above| in the image)?",
        r",\s*giving (?:the|this) (?:scene|area|image|landscape|place) an? "
        r"[\w\s-]{1,40}?(?:character|feel|look|atmosphere|appearance|vibe)s?",
        r",\s*in a way that is typical of [\w\s-]{1,40}",
        r",\s*adding to the [\w\s-]{1,40}?(?:texture|character|charm|feel|atmosphere|appeal)s?(?: of the "
        r"[\w\s-]{1,30})?",
        r",\s*(?:creating|contributing to|making for) an? "
        r"[\w\s-]{1,40}?(?:scene|atmosphere|environment|landscape|feel)s?",
        r",\s*(?:possibly|probably|likely) (?:indicating|suggesting) [\w\s-]{1,120}",
        r",\s*it seems",
    )
)
_FILLER = re.compile("|".join(f"(?:{p})" for p in FILLER), re.I)


@dataclass(frozen=True)
class Drop:
    text: str
    reason: str
    sentence: int | None = None  # index in split_sentences(raw caption); None: the whole caption


@dataclass(frozen=True)
class Sentence:
    index: int  # in split_sentences(raw caption)
    text: str  # after cleaning
    raw: str


@dataclass(frozen=True)
class CleanOptions:
    min_words: int = 2
    max_words: int = 80
    filler: bool = True
    boilerplate: bool = True


def split_sentences(text: str) -> list[str]:
    """Sentences of a caption: split after . ! ? before a capital or digit, at blank lines and bullets."""
    out = []
    for part in _SPLIT.split(text.replace("\r", "")):
        part = _BULLET.sub("", part).strip()
        part = re.sub(r"\s+", " ", part)
        if part:
            out.append(part)
    return out


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:[-'][a-z0-9]+)*", text.lower())


def _content_words(text: str) -> list[str]:
    return [w for w in words(text) if w not in _STOP and w not in _SCENE_WORDS]


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def _finish(text: str) -> str:
    text = text.strip().strip(",;: ")
    return text if not text or text[-1] in ".!?" else text + "."


def clean_sentence(raw: str, options: CleanOptions = CleanOptions()) -> tuple[str | None, list[str], str | None]:
    """(cleaned text or None, removed filler phrases, why the whole sentence went or None)."""
    if _REFUSAL.match(raw):
        return None, [], "refusal"
    text, fillers = raw, []
    if options.filler:
        fillers = [m.group(0).strip(" ,") for m in _FILLER.finditer(text)]
        text = _FILLER.sub("", text)
    if options.boilerplate:
        stripped = text
        for _ in range(3):  # "Overall, this image shows …"
            new = _BOILER_PREFIX.sub("", stripped, count=1)
            if new == stripped:
                break
            stripped = new
        if not _content_words(stripped) or (stripped != text and _ABOUT_THE_PICTURE.match(stripped)):
            return None, fillers, "boilerplate"
        if stripped != text:
            text = _capitalise(stripped)
    return _finish(text), fillers, None


def _runaway(text: str) -> bool:
    """A sentence stuck in a loop: long, with few distinct words or one phrase over and over."""
    w = words(text)
    if len(w) < 12:
        return False
    if len(set(w)) / len(w) < 0.35:
        return True
    grams = [" ".join(w[i : i + 3]) for i in range(len(w) - 2)]
    return max(grams.count(g) for g in set(grams)) >= 4


def clean_caption(
    caption: str, options: CleanOptions = CleanOptions(), enabled: bool = True
) -> tuple[list[Sentence], list[Drop]]:
    """Split and clean a caption; returns the kept sentences and every drop with its reason."""
    raws = split_sentences(caption)
    if not enabled:
        return [Sentence(i, r, r) for i, r in enumerate(raws)], []
    kept: list[Sentence] = []
    drops: list[Drop] = []
    seen: set[str] = set()
    for i, raw in enumerate(raws):
        text, fillers, reason = clean_sentence(raw, options)
        drops.extend(Drop(f, "filler", i) for f in fillers)
        if reason is None:
            key = " ".join(words(text))
            n = len(words(text))
            if key in seen:
                reason = "repeated"
            elif _runaway(text):
                reason = "repetition"
            elif n < options.min_words:
                reason = "too_short"
            elif n > options.max_words:
                reason = "too_long"
            seen.add(key)
        if reason is not None:
            drops.append(Drop(raw, reason, i))
        else:
            kept.append(Sentence(i, text, raw))
    return kept, drops
