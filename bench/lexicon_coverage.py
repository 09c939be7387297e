"""How much of real captions' vocabulary the lexicon recognises: the share of noun phrases it names.

Real captions (``../shared/data``, when present):

- UC Merced: the 5 human UCM-Captions of 420 aerial tiles, 21 land-use classes
  (``ucmerced/captions.jsonl``);
- UrbanCLIP Beijing: LLaMA-Adapter V2's captions of 4,592 z16 tiles, 20,642
  sentences (``urbanclip_beijing/captions_sentences.json``).

Noun phrases come from a small heuristic chunker (no tagger, no new dependency):
a noun phrase is a maximal run of words that are not closed-class words
(determiners, pronouns, prepositions, conjunctions, auxiliaries, negations),
numbers, ``-ly`` adverbs, common caption verbs (``shows``, ``surrounded``,
``arranged``…), or quantifier nouns before ``of`` (``lots of``, ``a piece of``).
An ``-ed``/``-ing`` word stays in a phrase only before another word of it
(``paved road``, ``scattered houses``) or when it is a known noun
(``building``, ``parking``); otherwise it is a verb and ends the phrase
(``cars parked``). The phrase's head is its last word.

A phrase is *recognised* when its head lies inside a lexicon term matched on the
sentence (the way ``text/claims.py`` finds concepts: longest term first, whole
words). Phrases made only of scene or position words (``the image``, ``the
left side``, ``a mix``) are *generic*: counted apart and left out of the content
share. Shares are over occurrences (every phrase of every caption) and over
distinct phrases.

    python bench/lexicon_coverage.py [--data ../shared/data] [--baseline HEAD] [--top 25]

``--baseline REV`` also measures the lexicon of a git revision (before/after).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from urbanln_cli.text.clean import _SCENE_WORDS  # noqa: E402 (after the sys.path set-up) the words fuse itself treats as saying nothing

_CLOSED = frozenset(
    """
a an the this that these those some any each every all both either neither no not none nor another other such
i me my we us our you your he him his she her they them their it its itself themselves one ones
of in on at to from by with without within into onto over under above below across along around about near
between among amongst through throughout behind beside besides beyond toward towards upon off out up down
like unlike via per than then against despite during until till since after before inside outside next for
others together nearby away further well alone apart ahead still even only already often almost perhaps maybe else
instead however therefore thus indeed yes
and or but so yet as if because while whereas although though where when which who whom whose what how why whether
is are was were be been being am do does did done doing have has had having can could may might must shall should
will would there here also just very quite rather too more most less least much many few several lots lot plenty
s t re ve ll d m
""".split()
)
_VERBS = frozenset(
    """
show shows showing shown depict depicts depicting depicted display displays displaying displayed feature features
contain contains containing contained include includes including included appear appears appearing appeared seem seems
look looks looking looked suggest suggests suggesting suggested indicate indicates indicating indicated give gives
giving
make makes making made provide provides providing provided create creates creating created add adds adding
go goes going gone went run runs running ran lie lies lying lay sit sits sitting sat stand stands standing stood
surround surrounds surrounding surrounded cover covers covering covered lining lined fill fills filled
parked arrange arranges arranged arranging distribute distributes distributed locate located situate situated
connect connects connected cross crosses crossing crossed pass passes passing passed lead leads leading led
border borders bordered dot dots dotted spread spreads spreading stretch stretches stretching extend extends extending
flow flows flowing divide divides divided separate separates separated beat throw throws flying flies grow grows growing
build built stopped docked planted see seen seem take taken capture captures captured enjoy enjoys manage manages
compose composed constitute constitutes flourish flourishes flurish offer offers offering serve serves serving
reflect reflects reflecting highlight highlights highlighting showcase showcases showcasing convey conveys
connecting positioned relax come comes vary varies ensure ensures allow allows accommodate accommodates
form forms forming belong belongs remain remains walk walking walks drive driving drives travel travelling traveling

""".split()
)
_QUANT = frozenset(
    "lots lot piece pieces number numbers couple variety mix group groups kind kinds type types sort part parts "
    "plenty amount amounts cluster clusters row rows line lines series set sets patch patches area areas".split()
)
# words that are only adjectives: a run made of nothing else names no thing ('the area is large, busy and open')
_ADJECTIVES = frozenset(
    """
large small big huge vast wide narrow long short tall high low open busy dense sparse serene peaceful quiet calm natural
urban rural different various diverse similar same close closer visible clear bright dark beautiful lush modern old new
typical interesting unique vibrant bustling scenic picturesque tranquil empty full free flat steep straight curved neat
tidy clean dirty dry wet rich lively active important significant main major minor entire whole overall green blue white
red grey gray black brown yellow orange colorful colourful distinct prominent notable possible likely able
visible accessible present available smooth vertical horizontal parallel metropolitan
""".split()
)
_ING_NOUNS = frozenset(
    "building parking housing crossing landing clearing railing dwelling shopping swimming opening ceiling "
    "setting planting marking paving fencing siding wedding ring spring evening morning".split()
)
_GENERIC = frozenset(
    """
image picture photo photograph satellite aerial overhead view views scene scenes area areas region tile place part parts
location landscape overall sense mix variety presence combination atmosphere environment setting feel character
middle center centre side sides left right top bottom background foreground edge edges corner corners portion section
distance surroundings vicinity front back rest whole kind type sort lot lots number couple bit piece pieces shape shapes
way time day size sizes color colour colors colours pattern patterns appearance perspective angle angles element
elements
bird bird's lines line rows row position positions spot spots space layout cityscape metropolis landscapes outdoors
locations
environment activity activities essence nature beauty touch life interconnectedness addition overview contrast range
style styles tranquility purpose purposes motion charm impression hub point points backdrop blend diversity use
connection connections scenery importance option options event events vastness mode modes balance safety relaxation
interplay proximity orientation orientations leisure coexistence routine routines openness visit game movement
""".split()
)
_TOKEN = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*|[^\sa-z0-9]")
_NUMBER = re.compile(
    r"^\d[\d,.]*$|^(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|fifty|hundred|hundreds|thousand|thousands|dozen|dozens)$"
)


_GENERIC = _GENERIC | _SCENE_WORDS


def noun_phrases(sentence: str) -> list[tuple[str, int, int]]:
    """The noun phrases of a (lower-cased) sentence: (text, start of its head, end of its head)."""
    toks = [(m.group(0), m.start(), m.end()) for m in _TOKEN.finditer(sentence)]
    phrases: list[list[tuple[str, int, int]]] = []
    run: list[tuple[str, int, int]] = []

    def content(i: int) -> bool:
        w = toks[i][0] if i < len(toks) else ""
        return (
            bool(w)
            and w[0].isalnum()
            and w not in _CLOSED
            and w not in _VERBS
            and not _NUMBER.match(w)
            and not w.endswith("ly")
        )

    for i, (w, s, e) in enumerate(toks):
        nxt = toks[i + 1][0] if i + 1 < len(toks) else ""
        breaker = not content(i) or (w in _QUANT and nxt == "of")
        if not breaker and w.endswith(("ed", "ing")) and w not in _ING_NOUNS and not content(i + 1):
            breaker = True  # a verb or predicative participle: 'cars parked', 'trees surrounding'
        if breaker:
            if run:
                phrases.append(run)
            run = []
        else:
            run.append((w, s, e))
    if run:
        phrases.append(run)
    phrases = [
        p[: max(i for i in range(1, len(p) + 1) if p[i - 1][0] not in _ADJECTIVES)]  # 'trucks visible' -> 'trucks'
        for p in phrases
        if not all(w in _ADJECTIVES for w, _, _ in p)
    ]
    return [(" ".join(w for w, _, _ in p), p[-1][1], p[-1][2]) for p in phrases]


def load_ucm(data: Path) -> list[str] | None:
    path = data / "ucmerced" / "captions.jsonl"
    if not path.is_file():
        return None
    return [c for line in path.read_text().splitlines() if line.strip() for c in json.loads(line)["captions"]]


def load_beijing(data: Path) -> list[str] | None:
    path = data / "urbanclip_beijing" / "captions_sentences.json"
    if not path.is_file():
        return None
    (sentences,) = json.loads(path.read_text())
    return [s["caption"] for s in sentences]


def measure(texts: list[str], lexicon, top: int = 25) -> dict:
    occ = Counter()  # (phrase, status) -> occurrences
    missed_heads = Counter()
    for text in texts:
        low = text.lower()
        covered = [(m.start(1), m.end(1)) for m in lexicon.term_pattern.finditer(low)]
        for phrase, hs, he in noun_phrases(low):
            words = [w.removesuffix("'s") for w in phrase.split()]
            if all(w in _GENERIC or w in _ADJECTIVES for w in words):
                status = "generic"
            elif any(s <= hs and he <= e for s, e in covered):
                status = "recognised"
            else:
                status = "missed"
                missed_heads[words[-1]] += 1
            occ[(phrase, status)] += 1
    n = Counter()
    distinct = Counter()
    for (_, status), k in occ.items():
        n[status] += k
        distinct[status] += 1
    content = n["recognised"] + n["missed"]
    content_d = distinct["recognised"] + distinct["missed"]
    return {
        "texts": len(texts),
        "noun_phrases": sum(n.values()),
        "generic": n["generic"],
        "content": content,
        "recognised": n["recognised"],
        "share": n["recognised"] / max(1, content),
        "share_incl_generic": n["recognised"] / max(1, sum(n.values())),
        "distinct_content": content_d,
        "distinct_share": distinct["recognised"] / max(1, content_d),
        "top_missed_heads": missed_heads.most_common(top),
    }


def lexicon_at(rev: str):
    """The built-in lexicon of ``urbanln_cli/text/lexicon.py`` at git revision ``rev``."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:urbanln_cli/text/lexicon.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location(f"_lexicon_{rev.replace('/', '_')}", f.name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        Path(f.name).unlink()
    return module.builtin()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--baseline", help="git revision whose lexicon to measure too (e.g. HEAD)")
    parser.add_argument("--top", type=int, default=25, help="most frequent unrecognised heads to list")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args()

    from urbanln_cli.text.lexicon import builtin

    sets = {"ucmerced": load_ucm(args.data), "urbanclip_beijing": load_beijing(args.data)}
    absent = [k for k, v in sets.items() if v is None]
    if absent:
        print(f"reference data absent under {args.data}: {', '.join(absent)} (skipped)", file=sys.stderr)
    sets = {k: v for k, v in sets.items() if v is not None}
    if not sets:
        print("nothing to measure: pass --data pointing at the shared reference data", file=sys.stderr)
        raise SystemExit(2)
    print(f"reading {args.data}", file=sys.stderr)
    lexicons = {"current": builtin()}
    if args.baseline:
        lexicons = {args.baseline: lexicon_at(args.baseline), **lexicons}
    results = {
        name: {lx: measure(texts, lex, args.top) for lx, lex in lexicons.items()} for name, texts in sets.items()
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for name, by_lex in results.items():
        first = next(iter(by_lex.values()))
        print(
            f"\n{name}: {first['texts']} captions, {first['noun_phrases']} noun phrases ({first['generic']} generic), "
            f"{first['distinct_content']} distinct content phrases"
        )
        print(
            f"  {'lexicon':<10} {'concepts':>8} {'terms':>6} {'recognised':>11} {'share':>7} {'incl. generic':>14} "
            f"{'distinct':>9}"
        )
        for lx, r in by_lex.items():
            d = lexicons[lx].describe()
            print(
                f"  {lx:<10} {d['concepts']:>8} {d['terms']:>6} {r['recognised']:>11} {r['share']:>7.1%} "
                f"{r['share_incl_generic']:>14.1%} {r['distinct_share']:>9.1%}"
            )
        for lx, r in by_lex.items():
            print(
                f"  most frequent unrecognised heads ({lx}): " + ", ".join(f"{w} {k}" for w, k in r["top_missed_heads"])
            )


if __name__ == "__main__":
    main()
