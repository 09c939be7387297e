"""``evaluate retrieval``: image→text and text→image recall of a trained model (or a random ranking) on held-out
tiles."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from urbanln_cli import artifacts, imagery
from urbanln_cli.errors import InputError, UsageProblem

BASELINES = ("random",)


@dataclass(frozen=True)
class RetrievalConfig:
    tiles: Path = Path("tiles")
    corpus: Path = Path("corpus")  # the held-out tiles' corpus: every caption of a tile is a positive
    model: Path | None = None  # a pretrain run folder; default runs/latest
    pretrained: str | None = None  # or open_clip weights (with arch)
    arch: str | None = None
    baseline: str | None = None  # "random": seeded random rankings, no model
    seed: int = 0
    dedupe: bool = False  # count each distinct caption of a tile once
    ks: tuple[int, ...] = (1, 5, 10)
    batch_size: int = 256
    device: str = "auto"

    def check(self) -> None:
        if not self.ks or min(self.ks) < 1:
            raise UsageProblem("recall cut-offs must be at least 1")
        if self.baseline is not None and self.baseline not in BASELINES:
            raise UsageProblem(f"unknown baseline {self.baseline!r}", hint="the baseline is: random")
        if self.baseline and (self.model or self.pretrained or self.arch):
            raise UsageProblem(
                "--baseline random ranks captions at random and uses no model",
                hint="drop --model, --pretrained and --arch, or drop --baseline",
            )


@dataclass
class RetrievalResult:
    metrics: dict[str, float]
    images: int
    captions: int
    duplicates: int  # captions that repeat another of the same tile (dropped with dedupe)
    source: dict[str, Any] = field(default_factory=dict)


def retrieval(config: RetrievalConfig, progress: Callable[..., None] | None = None) -> RetrievalResult:
    from urbanln_cli.evaluation.retrieval import random_recall, retrieval_recall

    config.check()
    tiles, tiles_manifest = artifacts.read_dataset(config.tiles, "tiles")
    corpus, _ = artifacts.read_dataset(config.corpus, "corpus")
    rows = {t: i for i, t in enumerate(tiles.data.column("tile_id").to_pylist())}
    ids = corpus.data.column("tile_id").to_pylist()
    missing = [t for t in ids if t not in rows]
    if missing:
        raise InputError(
            f"{len(missing)} of {len(ids)} corpus tiles are not in {config.tiles} (e.g. {missing[0]!r})",
            hint="pass the tiles the corpus was made from with --tiles",
        )
    if len(ids) < 2:
        raise InputError(
            f"{config.corpus} has {len(ids)} tile(s); retrieval needs at least 2", hint="use a larger held-out corpus"
        )
    captions, caption_tile, duplicates = _captions(corpus, ids, config.dedupe, config.corpus)
    if not captions:
        raise InputError(f"{config.corpus} has no captions", hint="fuse captions into the corpus with `urbanln fuse`")
    if config.baseline == "random":
        metrics = random_recall(len(ids), np.asarray(caption_tile), config.ks, seed=config.seed)
        source: dict[str, Any] = {"baseline": "random", "seed": config.seed}
    else:
        image_emb, text_emb, source = _encode(config, tiles, tiles_manifest, rows, ids, captions, progress)
        try:
            metrics = retrieval_recall(image_emb, text_emb, np.asarray(caption_tile), config.ks)
        except ValueError as exc:  # NaN embeddings: a diverged run
            raise InputError(f"{exc} (model: {source})", hint="check the run: a diverged training gives NaN") from None
    return RetrievalResult(metrics, len(ids), len(captions), duplicates, json.loads(json.dumps(source)))


def _captions(corpus, ids: list[str], dedupe: bool, where: Path) -> tuple[list[str], list[int], int]:
    """Every counted caption, the corpus row of its tile, and how many repeat another caption of their tile."""
    from urbanln_cli.evaluation.retrieval import tile_captions
    from urbanln_cli.training.data import candidates_of

    data = corpus.data
    cand_col = data.column("candidates").to_pylist() if "candidates" in corpus.column_names else [None] * len(ids)
    captions: list[str] = []
    caption_tile: list[int] = []
    duplicates = 0
    for i, (main, cands) in enumerate(zip(data.column("caption").to_pylist(), cand_col)):
        try:
            others = candidates_of(cands)
        except ValueError as exc:
            raise InputError(
                f"{where}: tile {ids[i]!r} has malformed candidates ({exc})",
                hint="re-create the corpus with `urbanln fuse`",
            ) from None
        texts = tile_captions(main, others, dedupe)
        duplicates += len(tile_captions(main, others, False)) - len(tile_captions(main, others, True))
        captions.extend(texts)
        caption_tile.extend([i] * len(texts))
    return captions, caption_tile, duplicates


def _encode(config, tiles, tiles_manifest, rows, ids, captions, progress) -> tuple[np.ndarray, np.ndarray, dict]:
    """L2-normalised image and caption embeddings of the model."""
    import torch

    from urbanln_cli.models.loading import EncoderSpec, load_encoder
    from urbanln_cli.models.step import pick_device

    report = progress or (lambda done, total, **_: None)
    device = pick_device(config.device)
    model, transform, tokenizer, source = load_encoder(
        EncoderSpec(model=config.model, pretrained=config.pretrained, arch=config.arch), device
    )
    images = tiles.data.column("image")
    image_chunks, text_chunks = [], []
    total, done = len(ids) + len(captions), 0
    report(0, total)
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for start in range(0, len(ids), config.batch_size):
            batch = [
                _decode(images[rows[t]]["bytes"].as_py(), tiles_manifest, t, transform)
                for t in ids[start : start + config.batch_size]
            ]
            image_chunks.append(model.encode_image(torch.stack(batch).to(device), normalize=True).float().cpu().numpy())
            done += len(batch)
            report(done, total)
        for start in range(0, len(captions), config.batch_size):
            chunk = captions[start : start + config.batch_size]
            tokens = tokenizer(chunk).to(device)
            text_chunks.append(model.encode_text(tokens, normalize=True).float().cpu().numpy())
            done += len(chunk)
            report(done, total)
    return np.concatenate(image_chunks), np.concatenate(text_chunks), source


def _decode(data: bytes, tiles_manifest, tile_id: str, transform):
    try:
        with imagery.open_image(data, imagery.max_pixels_of(tiles_manifest), f"tile {tile_id}: its image") as img:
            return transform(img.convert("RGB"))
    except imagery.ImageTooLarge as exc:  # an oversize tile is a bad tile: never decoded
        raise InputError(str(exc), hint=imagery.OVERSIZE_HINT) from None
    except (OSError, ValueError) as exc:
        raise InputError(
            f"tile {tile_id}: cannot decode its image ({exc})", hint="re-create the tiles with `urbanln tile`"
        ) from None
