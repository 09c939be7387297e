"""VLM requests whose answers are journaled by content, so a rerun asks only what it lacks.

``fuse`` asks VLMs yes/no questions about claims and for quadrant captions and
rewrites. Each answer is keyed by everything that decides it (model tag and
digest, prompt, image bytes, JSON schema, options) and appended to an fsynced
journal. After Ctrl-C, ``kill -9``, Ollama going down or a model vanishing, the
same command resumes: every journaled answer is reused and only the rest is
sent. Failed answers are not reused: a rerun tries them again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from urbanln_cli.captioners import Backend, GenerationOptions, ModelInfo, TileInfo
from urbanln_cli.captioners.runner import Outcome, Request, RetryPolicy, run_requests
from urbanln_cli.journal import Journal, read_records


@dataclass(frozen=True)
class Ask:
    """One question for one model. ``image`` is read lazily; ``image_id`` names its bytes (e.g. a sha256)."""

    model: str
    prompt: str
    image: Callable[[], bytes]
    image_id: str
    format: dict[str, Any] | None = None
    tile: TileInfo | None = None  # where the image is (backends that answer from a scene need it)


@dataclass(frozen=True)
class Answer:
    text: str
    error: str | None = None
    error_class: str | None = None


class CachedVlm:
    """Ask many questions of Ollama models through the robust runner, with a journal for resume.

    ``make_backend`` builds the backend inside the event loop (its HTTP clients belong to that loop).
    """

    def __init__(
        self,
        make_backend: Callable[[], Backend],
        journal: Path | None,
        *,
        policy: RetryPolicy,
        options: GenerationOptions,
    ):
        self.make_backend = make_backend
        self.journal_path = journal
        self.policy, self.options = policy, options
        self.cache: dict[str, dict[str, Any]] = {}
        if journal is not None:
            for record in read_records(journal):
                if record.get("error") is None:
                    self.cache[record["key"]] = record
        self.asked = 0
        self.reused = 0
        self.digests: dict[str, str] = {}  # model tag -> digest, of every model asked

    def key(self, ask: Ask, info: ModelInfo) -> str:
        spec = {
            "model": info.tag,
            "digest": info.digest,
            "prompt": ask.prompt,
            "image": ask.image_id,
            "format": ask.format,
            "options": {k: v for k, v in asdict(self.options).items() if k != "keep_alive"},
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    def run(
        self,
        asks: Sequence[Ask],
        problem: Callable[[str], str | None],
        progress: Callable[[int, int], None] | None = None,
    ) -> list[Answer]:
        """Answers in the order of ``asks``; ``problem(text)`` says why a reply is unusable (it is then asked again).

        Raises ServiceUnavailable (journal kept) when the servers fail.
        """
        return asyncio.run(self._run(list(asks), problem, progress or (lambda done, total: None)))

    async def _run(
        self, asks: list[Ask], problem: Callable[[str], str | None], progress: Callable[[int, int], None]
    ) -> list[Answer]:
        backend = self.make_backend()
        try:
            models = sorted({a.model for a in asks})
            infos = await backend.preflight(models) if models else {}
            self.digests.update({m: infos[m].digest for m in models})
            keys = [self.key(a, infos[a.model]) for a in asks]
            first = {k: i for i, k in reversed(list(enumerate(keys)))}  # the same question is asked once
            todo = sorted(i for k, i in first.items() if k not in self.cache)
            self.reused += sum(k in self.cache for k in first)
            fresh: dict[str, dict[str, Any]] = {}
            done = [len(first) - len(todo)]
            progress(done[0], len(first))
            journal = Journal(self.journal_path) if self.journal_path is not None and todo else None

            def finish(i: int, outcome: Outcome) -> None:
                record = {
                    "key": keys[i],
                    "model": asks[i].model,
                    "text": outcome.text,
                    "error": outcome.error[1] if outcome.error else None,
                    "error_class": outcome.error[0] if outcome.error else None,
                    "host": outcome.host,
                }
                if journal is not None:
                    journal.append(record)
                fresh[keys[i]] = record
                self.asked += 1
                done[0] += 1
                progress(done[0], len(first))

            try:
                for model in models:  # one model at a time, so each GPU keeps one model loaded
                    mine = [i for i in todo if asks[i].model == model]
                    await run_requests(
                        backend,
                        model,
                        mine,
                        lambda i: Request(asks[i].image, asks[i].prompt, asks[i].tile, asks[i].format),
                        finish,
                        policy=self.policy,
                        options=self.options,
                        content_problem=problem,
                        what="answers",
                    )
            finally:
                if journal is not None:
                    journal.close()
            self.cache.update({k: r for k, r in fresh.items() if r["error"] is None})
            out = []
            for k in keys:
                record = fresh.get(k) or self.cache[k]
                out.append(Answer(record["text"], record["error"], record["error_class"]))
            return out
        finally:
            await backend.aclose()
