"""``evaluate retrieval``: image→text and text→image recall of a trained model on held-out tiles."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from urbanln_cli import artifacts, imagery
from urbanln_cli.errors import InputError, UsageProblem


@dataclass(frozen=True)
class RetrievalConfig:
    tiles: Path = Path("tiles")
    corpus: Path = Path("corpus")  # the held-out tiles' corpus: every caption of a tile is a positive
    model: Path | None = None  # a pretrain run folder; default runs/latest
    pretrained: str | None = None  # or open_clip weights (with arch)
    arch: str | None = None
    ks: tuple[int, ...] = (1, 5, 10)
    batch_size: int = 256
    device: str = "auto"

    def check(self) -> None:
        if not self.ks or min(self.ks) < 1:
            raise UsageProblem("recall cut-offs must be at least 1")


@dataclass
class RetrievalResult:
    metrics: dict[str, float]
    images: int
    captions: int
    source: dict[str, Any] = field(default_factory=dict)


def retrieval(config: RetrievalConfig) -> RetrievalResult:
    import torch

    from urbanln_cli.evaluation.retrieval import retrieval_recall
    from urbanln_cli.models.loading import EncoderSpec, load_encoder
    from urbanln_cli.models.step import pick_device
    from urbanln_cli.training.data import candidates_of

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
    device = pick_device(config.device)
    model, transform, tokenizer, source = load_encoder(
        EncoderSpec(model=config.model, pretrained=config.pretrained, arch=config.arch), device
    )
    captions, caption_tile = [], []
    cand_col = (
        corpus.data.column("candidates").to_pylist() if "candidates" in corpus.column_names else [None] * len(ids)
    )
    for i, (main, cands) in enumerate(zip(corpus.data.column("caption").to_pylist(), cand_col)):
        for text in dict.fromkeys([main, *candidates_of(cands)]):  # each distinct caption once
            if text:
                captions.append(text)
                caption_tile.append(i)
    images = tiles.data.column("image")
    image_chunks, text_chunks = [], []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for start in range(0, len(ids), config.batch_size):
            batch = []
            for t in ids[start : start + config.batch_size]:
                try:
                    with imagery.open_image(
                        images[rows[t]]["bytes"].as_py(), imagery.max_pixels_of(tiles_manifest), f"tile {t}: its image"
                    ) as img:
                        batch.append(transform(img.convert("RGB")))
                except imagery.ImageTooLarge as exc:  # an oversize tile is a bad tile: never decoded
                    raise InputError(str(exc), hint=imagery.OVERSIZE_HINT) from None
                except (OSError, ValueError) as exc:
                    raise InputError(
                        f"tile {t}: cannot decode its image ({exc})", hint="re-create the tiles with `urbanln tile`"
                    ) from None
            image_chunks.append(model.encode_image(torch.stack(batch).to(device), normalize=True).float().cpu().numpy())
        for start in range(0, len(captions), config.batch_size):
            tokens = tokenizer(captions[start : start + config.batch_size]).to(device)
            text_chunks.append(model.encode_text(tokens, normalize=True).float().cpu().numpy())
    metrics = retrieval_recall(
        np.concatenate(image_chunks), np.concatenate(text_chunks), np.asarray(caption_tile), config.ks
    )
    return RetrievalResult(metrics, len(ids), len(captions), json.loads(json.dumps(source)))
