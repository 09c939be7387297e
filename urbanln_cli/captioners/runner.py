"""Send many requests for one model to a backend's hosts, robustly.

The one request loop behind ``caption`` and the VLM steps of ``fuse`` (claim
checks, quadrant captions, rewrites). Each host gets ``concurrency`` requests in
flight. Transient failures (timeouts, dropped connections, 429, 5xx) are
retried with jittered exponential backoff; a host with ``HOST_FAILURE_LIMIT``
transport failures in a row leaves the rotation and its requests go to the
others; unusable content (empty, refusal, runaway repetition, unparseable JSON)
is retried at once with a new seed. A model that disappears (404) or every host
going down stops the run with ``ServiceUnavailable``: what finished is kept by
the caller's ``finish`` callback (a journal), so a rerun resumes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from urbanln_cli.captioners import Backend, GenerationOptions, ModelMissing, Reply, TileInfo, TransientError
from urbanln_cli.errors import ServiceUnavailable
from urbanln_cli.redact import plain_error

log = logging.getLogger(__name__)

HOST_FAILURE_LIMIT = 5  # consecutive transport failures before a host leaves the rotation
BACKOFF_CAP = 30.0
PERMANENT = {"bad_request"}  # errors a retry cannot fix


@dataclass(frozen=True)
class RetryPolicy:
    concurrency: int = 4  # requests in flight per host
    retries: int = 4  # for timeouts, dropped connections, 429, 5xx
    content_retries: int = 2  # for unusable content
    backoff: float = 0.5  # first retry delay in seconds; doubles, with jitter


@dataclass(frozen=True)
class Request:
    """What one request sends. ``image`` is read lazily: a damaged tile fails its request only."""

    image: Callable[[], bytes]
    prompt: str
    tile: TileInfo | None = None
    format: dict[str, Any] | None = None  # a JSON schema: Ollama's structured output


@dataclass
class Outcome:
    text: str
    error: tuple[str, str] | None  # (error_class, message)
    host: str
    requests: int
    latency_s: float
    reply: Reply | None = None


class _Task:
    __slots__ = ("item", "requests", "attempts", "content_attempts", "forgiven")

    def __init__(self, item):
        self.item = item
        self.requests = self.attempts = self.content_attempts = self.forgiven = 0


async def run_requests(
    backend: Backend,
    model: str,
    items: Sequence[Any],
    request_for: Callable[[Any], Request],
    finish: Callable[[Any, Outcome], None],
    *,
    policy: RetryPolicy,
    options: GenerationOptions,
    content_problem: Callable[[str], str | None],
    what: str = "results",
) -> None:
    """Run ``request_for(item)`` for every item against ``model``; call ``finish(item, outcome)`` once per item.

    ``content_problem(text)`` names why a reply is unusable (None when it is fine).
    ``what`` names the finished work in the messages of a fatal stop.
    """
    if not items:
        return
    queue: asyncio.Queue = asyncio.Queue()
    for item in items:
        queue.put_nowait(_Task(item))
    failures = {host: 0 for host in backend.hosts}
    dead: set[str] = set()
    state = {"remaining": len(items), "fatal": None}
    n_workers = len(failures) * policy.concurrency
    loop = asyncio.get_running_loop()

    def stop_all() -> None:
        for _ in range(n_workers):
            queue.put_nowait(None)

    def done(task: _Task, outcome: Outcome) -> None:
        finish(task.item, outcome)
        state["remaining"] -= 1
        if state["remaining"] == 0:
            stop_all()

    def outcome(task, text, error, host, started, reply=None) -> Outcome:
        return Outcome(text, error, host, task.requests, round(time.monotonic() - started, 4), reply)

    async def worker(host: str) -> None:
        while True:
            task = await queue.get()
            if task is None or state["fatal"] is not None:
                return
            if host in dead:
                queue.put_nowait(task)
                return
            started = time.monotonic()
            request = request_for(task.item)
            try:
                image = request.image()
            except Exception as exc:  # a damaged tile: record it, do not stop the run
                done(
                    task,
                    outcome(
                        task, "", ("bad_image", f"cannot read the tile's image: {plain_error(exc)}"), host, started
                    ),
                )
                continue
            try:
                # content failures are retried at once, on this slot, with a new seed each time
                while True:
                    task.requests += 1
                    reply = await backend.caption(
                        host,
                        model,
                        image,
                        request.prompt,
                        options.for_attempt(task.content_attempts),
                        request.tile,
                        format=request.format,
                    )
                    problem = content_problem(reply.text)
                    if problem is None or task.content_attempts >= policy.content_retries:
                        break
                    task.content_attempts += 1
            except ModelMissing:
                state["fatal"] = ServiceUnavailable(
                    f"model {model} disappeared from {host} during the run; finished {what} are kept",
                    hint=f"ollama pull {model}, then run the same command again to resume",
                )
                stop_all()
                return
            except TransientError as exc:
                if exc.error_class in ("connection", "timeout"):  # a host that answers 5xx is alive
                    failures[host] += 1
                    if failures[host] >= HOST_FAILURE_LIMIT and host not in dead:
                        dead.add(host)
                        log.warning("%s failed %d times in a row; taking it out of rotation", host, failures[host])
                        if len(dead) == len(failures):
                            state["fatal"] = ServiceUnavailable(
                                f"every host failed ({exc.error_class}: {exc.message}); finished {what} are kept",
                                hint="check the Ollama servers (`urbanln env --host …`), then run the same command "
                                "again to resume",
                            )
                            stop_all()
                if state["fatal"] is not None:
                    continue  # every host is down: this request is redone on the next run, not recorded as failed
                if host in dead:
                    queue.put_nowait(task)  # not the item's fault: another host takes it
                    continue
                delay = min(BACKOFF_CAP, policy.backoff * 2**task.attempts) * random.uniform(0.5, 1.5)
                if exc.error_class in ("connection", "timeout") and task.forgiven < HOST_FAILURE_LIMIT:
                    # A host going down fails its requests before it leaves the rotation; those
                    # are the host's failures, not the item's, so they do not use up its retries.
                    task.forgiven += 1
                    loop.call_later(delay, queue.put_nowait, task)
                    continue
                task.attempts += 1
                if task.attempts > policy.retries or exc.error_class in PERMANENT:
                    done(task, outcome(task, "", (exc.error_class, exc.message), host, started))
                else:
                    loop.call_later(delay, queue.put_nowait, task)
                continue
            failures[host] = 0
            error = (problem, f"unusable reply: {problem}") if problem else None
            done(task, outcome(task, reply.text.strip(), error, host, started, reply))

    await asyncio.gather(*(worker(host) for host in failures for _ in range(policy.concurrency)))
    if state["fatal"] is not None:
        raise state["fatal"]
