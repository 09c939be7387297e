"""Caption many tiles with one ``hf:`` model, ``batch_size`` tiles per ``generate``.

The batched counterpart of ``runner.run_requests``, with the same contract:
``finish(item, outcome)`` once per item (the caller journals it), content
retries with a new seed (``GenerationOptions.for_attempt``) for empty, refused
or repetitive output, and a damaged tile failing its own row only. Rows due a
content retry go into the next batch, so retries batch too.

CUDA out of memory halves the batch size and runs the same rows again; the
smaller size stays for the rest of the run. Out of memory with one tile per
batch, or any other failure of ``generate``, stops the run with exit 4: what
finished is already journaled, so the same command resumes.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from urbanln_cli.captioners import GenerationOptions
from urbanln_cli.captioners.hf import decode_image, out_of_memory_errors
from urbanln_cli.captioners.runner import Outcome, Request, RetryPolicy
from urbanln_cli.errors import ServiceUnavailable, UrbanlnError
from urbanln_cli.redact import plain_error

log = logging.getLogger(__name__)


class _Row:
    __slots__ = ("item", "request", "image", "requests", "content_attempts", "latency_s")

    def __init__(self, item, request: Request, image):
        self.item, self.request, self.image = item, request, image
        self.requests = self.content_attempts = 0
        self.latency_s = 0.0


def run_batches(
    backend,
    model: str,
    items: Sequence[Any],
    request_for: Callable[[Any], Request],
    finish: Callable[[Any, Outcome], None],
    *,
    policy: RetryPolicy,
    options: GenerationOptions,
    content_problem: Callable[[str], str | None],
    batch_size: int,
    what: str = "captions",
) -> None:
    """Caption ``items`` with ``backend.generate_batch``; call ``finish(item, outcome)`` once per item."""
    oom = out_of_memory_errors()
    host = backend.hosts[0]
    waiting = collections.deque(items)
    retry: collections.deque[_Row] = collections.deque()  # rows due a content retry go first
    size = max(1, batch_size)
    if items:
        try:
            backend.load(model)  # before the first batch, so loading is not counted in its rows' latency
        except UrbanlnError:
            raise
        except Exception as exc:
            raise ServiceUnavailable(
                f"cannot load {model} ({type(exc).__name__}: {plain_error(exc)[:300]})",
                hint="check that the folder holds a whole image-text-to-text model with its processor",
            ) from exc
    while waiting or retry:
        batch: list[_Row] = []
        while len(batch) < size and retry:
            batch.append(retry.popleft())
        while len(batch) < size and waiting:
            item = waiting.popleft()
            request = request_for(item)
            try:
                image = decode_image(request.image())
            except Exception as exc:  # a damaged tile: its row fails, the run goes on
                message = f"cannot read the tile's image: {plain_error(exc)}"
                finish(item, Outcome("", ("bad_image", message), host, 0, 0.0))
                continue
            batch.append(_Row(item, request, image))
        if not batch:
            continue
        started = time.monotonic()
        try:
            replies = backend.generate_batch(
                model,
                [r.image for r in batch],
                [r.request.prompt for r in batch],
                [options.for_attempt(r.content_attempts) for r in batch],
            )
        except oom as exc:
            _free_gpu_memory()
            if size == 1:
                raise ServiceUnavailable(
                    f"{model} ran out of GPU memory on one tile at a time ({plain_error(exc)[:200]}); "
                    f"finished {what} are kept",
                    hint="use a smaller --image-size or --num-predict, a smaller model, or a larger GPU; "
                    "then run the same command again to resume",
                ) from None
            size = max(1, len(batch) // 2)
            backend.oom_halvings = getattr(backend, "oom_halvings", 0) + 1
            log.warning("%s: out of GPU memory with %d tiles per batch; going on with %d", model, len(batch), size)
            retry.extendleft(reversed(batch))
            continue
        except Exception as exc:
            raise ServiceUnavailable(
                f"{model} failed to generate ({type(exc).__name__}: {plain_error(exc)[:300]}); "
                f"finished {what} are kept",
                hint="check that the model is an image-text-to-text model with a chat template, then run the same "
                "command again to resume",
            ) from exc
        elapsed = time.monotonic() - started
        again = []
        for row, reply in zip(batch, replies):
            row.requests += 1
            row.latency_s += elapsed
            text = reply.text.strip()
            problem = content_problem(text)
            if problem is not None and row.content_attempts < policy.content_retries:
                row.content_attempts += 1
                again.append(row)
                continue
            error = (problem, f"unusable reply: {problem}") if problem else None
            finish(row.item, Outcome(text, error, host, row.requests, round(row.latency_s, 4), reply))
        retry.extend(again)


def _free_gpu_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
