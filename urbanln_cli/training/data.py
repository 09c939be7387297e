"""Pairs of (tile image, caption) for pretraining, deterministic per (seed, epoch, sample).

Every random choice for a sample (which caption, which crop and flip) is seeded
from (seed, epoch, index), so a run resumed mid-epoch, or split over DDP ranks
and DataLoader workers, sees exactly the samples an uninterrupted run sees.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler


def _seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little") & (2**63 - 1)


def candidates_of(value: Any) -> list[str]:
    """The other models' captions of a tile: a list of {model, caption, score} (or one), its JSON, or plain strings.

    Raises ValueError for anything else, so a malformed corpus is reported, not trained on.
    """
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in "[{" or text in ("null", ""):
            value = json.loads(text) if text else None  # json raises ValueError on malformed input
            if value is None:
                return []
        else:
            return [value]
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"expected a list, got {type(value).__name__}")
    out = []
    for item in value:
        text = item.get("caption") if isinstance(item, dict) else item
        if text is None:
            continue
        if not isinstance(text, str):
            raise ValueError(f"a candidate caption is {type(text).__name__}, not text")
        if text:
            out.append(text)
    return out


class CaptionedTiles(Dataset):
    """Sample i: (image tensor, long tokens, short tokens, tile index)."""

    def __init__(
        self,
        images,
        image_rows: list[int],
        captions: list[str],
        shorts: list[str],
        candidates: list[list[str]],
        transform: Callable,
        long_tokenizer: Callable,
        short_tokenizer: Callable,
        consensus_prob: float,
        seed: int,
        max_pixels: int | None = None,
    ):
        self.images, self.image_rows = (
            images,
            image_rows,
        )  # pyarrow column of {bytes, path}, and each sample's row in it
        self.captions, self.shorts, self.candidates = captions, shorts, candidates
        self.transform, self.long_tokenizer, self.short_tokenizer = transform, long_tokenizer, short_tokenizer
        self.consensus_prob, self.seed, self.epoch = consensus_prob, seed, 0
        self.max_pixels = max_pixels  # the limit the tiles were made with (imagery.max_pixels_of)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.captions)

    def caption_for(self, i: int) -> str:
        """The consensus caption with probability consensus_prob, else another model's candidate."""
        rng = random.Random(_seed(self.seed, self.epoch, i, "caption"))
        others = [c for c in self.candidates[i] if c != self.captions[i]]
        if others and rng.random() >= self.consensus_prob:
            return rng.choice(others)
        return self.captions[i]

    def __getitem__(self, i: int):
        from urbanln_cli.imagery import decode_tile

        torch.manual_seed(_seed(self.seed, self.epoch, i, "augment"))  # the crop and flip of this sample, this epoch
        row = self.image_rows[i]
        image = self.transform(decode_tile(self.images[row]["bytes"].as_py(), self.max_pixels, f"tile row {row}"))
        long_tokens = self.long_tokenizer([self.caption_for(i)])[0]
        short_tokens = self.short_tokenizer([self.shorts[i] or self.captions[i]])[0]
        return image, long_tokens, short_tokens, torch.tensor(i, dtype=torch.int64)


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch, split over ranks, starting at a given position (for resume).

    ``start`` counts samples already consumed in this epoch across all ranks; the
    tail that does not fill a global batch is dropped, so every step is full.
    """

    def __init__(
        self, size: int, global_batch: int, seed: int, epoch: int, start: int = 0, rank: int = 0, world: int = 1
    ):
        self.size, self.global_batch, self.seed, self.epoch = size, global_batch, seed, epoch
        self.start, self.rank, self.world = start, rank, world

    def _order(self) -> list[int]:
        generator = torch.Generator().manual_seed(_seed(self.seed, self.epoch, "order") % (2**62))
        usable = (self.size // self.global_batch) * self.global_batch
        return torch.randperm(self.size, generator=generator)[:usable].tolist()

    def __iter__(self) -> Iterator[int]:
        order = self._order()[self.start :]
        per_rank = self.global_batch // self.world
        for b in range(0, len(order), self.global_batch):
            yield from order[b + self.rank * per_rank : b + (self.rank + 1) * per_rank]

    def __len__(self) -> int:
        return (len(self._order()) - self.start) // self.world


@contextlib.contextmanager
def worker_errors(hint: str = "re-create the tiles with `urbanln tile`") -> Iterator[None]:
    """A DataLoader worker's InputError arrives wrapped in its traceback text: keep its one line."""
    from urbanln_cli.errors import InputError

    try:
        yield
    except InputError as exc:
        last = [line for line in exc.message.splitlines() if "InputError: " in line]
        if not last:  # raised in this process (--workers 0): its own hint stands
            raise
        raise InputError(last[-1].split("InputError: ", 1)[1], hint=hint) from None
