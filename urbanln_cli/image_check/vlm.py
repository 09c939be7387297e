"""``fuse --check vlm``: one model checks another's claims with a yes/no question about the tile.

Each disputed claim goes to the first checking model that did not make it (the
author itself only when it is the only checking model: then the model takes a
second look at its own claim, as a yes/no question), as a question with Ollama's
structured output: the reply must be ``{"answer": "yes"}`` or ``{"answer": "no"}``.
Only "yes" confirms. A question that still fails after the retries leaves the
claim unconfirmed, with the error recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from urbanln_cli.captioners import TileInfo, gsd_phrase, json_field
from urbanln_cli.captioners.cached import Ask, CachedVlm
from urbanln_cli.image_check import ClaimQuery, Verdict

ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
    "required": ["answer"],
}


def question(phrase: str, gsd: float | None) -> str:
    """The yes/no question; the claim is in double quotes so the answer is about exactly that phrase."""
    return (
        f'This is a satellite or aerial image{gsd_phrase(gsd)}. Is there "{phrase}" in this image? '
        'Answer only from what is clearly visible. Reply in JSON: {"answer": "yes"} or {"answer": "no"}.'
    )


def parse_answer(text: str) -> str | None:
    """'yes' or 'no' from a structured reply, or None when the reply is not one."""
    answer = (json_field(text, "answer") or "").lower()
    return answer if answer in ("yes", "no") else None


def answer_problem(text: str) -> str | None:
    return None if parse_answer(text) is not None else "bad_json"


def checker_for(author: str, models: Sequence[str]) -> str:
    return next((m for m in models if m != author), models[0])


class VlmChecker:
    def __init__(self, vlm: CachedVlm, models: Sequence[str]):
        self.vlm, self.models = vlm, list(models)

    def describe(self) -> dict:
        return {
            "kind": "vlm",
            "models": self.models,
            "rule": "yes/no question with a JSON schema; only 'yes' confirms",
            "prompt": question("{claim}", None),
        }

    def check(
        self,
        queries: Sequence[ClaimQuery],
        image_of: Callable[[str], bytes],
        image_id_of: Callable[[str], str],
        gsd_of: Callable[[str], float | None],
        progress: Callable[[int, int], None] | None = None,
        tile_of: Callable[[str], TileInfo | None] = lambda _t: None,
    ) -> list[Verdict]:
        asks = []
        for q in queries:
            asks.append(
                Ask(
                    checker_for(q.author, self.models),
                    question(q.phrase, gsd_of(q.tile_id)),
                    lambda t=q.tile_id: image_of(t),
                    image_id_of(q.tile_id),
                    ANSWER_SCHEMA,
                    tile_of(q.tile_id),
                )
            )
        answers = self.vlm.run(asks, answer_problem, progress)
        out = []
        for ask, answer in zip(asks, answers):
            parsed = parse_answer(answer.text) if answer.error is None else None
            out.append(Verdict(parsed == "yes", f"vlm:{ask.model}", answer=parsed, error=answer.error))
        return out
