"""Stage ``embed``: one vector per tile from a trained model or a baseline (a safetensors file).

Sources: a ``pretrain`` run folder (default ``runs/latest``), any open_clip
architecture with ``--pretrained`` weights, or a baseline for honest comparison:
``pixels`` (colour and texture statistics) or ``random`` (random weights of the
architecture named by ``arch`` or copied from the ``model`` run: one of the two is
required). Images are decoded in DataLoader workers while the model runs; inference
mode, bf16 on GPU. Rows line up with ``tile_ids`` in the file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from urbanln_cli import artifacts
from urbanln_cli.errors import InputError, UsageProblem
from urbanln_cli.models.loading import EncoderSpec, load_encoder, run_folder
from urbanln_cli.training.data import worker_errors


@dataclass(frozen=True)
class EmbedConfig:
    tiles: Path = Path("tiles")
    model: Path | None = None  # a pretrain run folder; default runs/latest
    arch: str | None = None  # with --pretrained; --baseline random needs it or ``model``
    pretrained: str | None = None  # an open_clip tag, a checkpoint file or local-dir:FOLDER
    baseline: str | None = None  # pixels | random
    corpus: Path | None = None  # also embed the corpus captions (text tower)
    out: Path = Path("embeddings.safetensors")
    batch_size: int = 256
    workers: int = 2
    device: str = "auto"
    seed: int = 0
    overwrite: bool = False

    def check(self) -> None:
        self.encoder().check()
        if self.baseline == "random":
            _check_random_baseline(self)
        if self.baseline == "pixels" and self.corpus is not None:
            raise UsageProblem("the pixel baseline has no text tower", hint="drop --corpus, or embed with a model")
        if self.batch_size < 1 or self.workers < 0:
            raise UsageProblem("--batch-size must be at least 1 and --workers at least 0")

    def encoder(self) -> EncoderSpec:
        return EncoderSpec(
            model=self.model, arch=self.arch, pretrained=self.pretrained, baseline=self.baseline, seed=self.seed
        )


def _check_random_baseline(config: EmbedConfig) -> None:
    """Random weights of which architecture: the user says, never a silent default."""
    if config.pretrained is not None:
        raise UsageProblem("--baseline random takes no --pretrained weights", hint="drop --pretrained")
    if config.arch is None and config.model is None:
        raise UsageProblem(
            "--baseline random needs an architecture: --arch NAME, or --model RUN to copy a run's",
            hint="e.g. --model runs/latest (the run you compare with), or --arch ViT-B-16",
        )
    if config.arch is not None and config.model is not None:
        raise UsageProblem(
            "--baseline random takes --arch or --model, not both",
            hint="--model copies the run's architecture; --arch names one",
        )


def random_baseline_spec(config: EmbedConfig) -> tuple[EncoderSpec, str]:
    """The random baseline's encoder with its architecture resolved, and where the architecture came from."""
    if config.arch is not None:
        return EncoderSpec(arch=config.arch, baseline="random", seed=config.seed), "--arch"
    folder = run_folder(config.model)
    arch = ((artifacts.read_manifest(folder) or {}).get("models") or {}).get("arch")
    if not isinstance(arch, str) or not arch:
        raise InputError(
            f"{config.model} does not record its architecture, so --baseline random cannot copy it",
            hint="name it with --arch instead of --model",
        )
    return EncoderSpec(arch=arch, baseline="random", seed=config.seed), f"run {config.model}"


@dataclass
class EmbedResult:
    out: Path
    rows: int
    dim: int
    source: dict[str, Any]
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)


class _Images:
    """Tile images decoded and transformed in DataLoader workers."""

    def __init__(self, images, transform: Callable | None, tile_ids=None, max_pixels: int | None = None):
        self.images, self.transform = images, transform
        self.tile_ids, self.max_pixels = (
            tile_ids,
            max_pixels,
        )  # the limit the tiles were made with (imagery.max_pixels_of)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from urbanln_cli import imagery

        name = f"tile {self.tile_ids[i].as_py()}" if self.tile_ids is not None else f"tile row {i}"
        rgb = imagery.decode_tile(self.images[i]["bytes"].as_py(), self.max_pixels, name)
        if self.transform is None:
            import torch

            from urbanln_cli.pixel_features import pixel_features

            return torch.from_numpy(pixel_features(np.asarray(rgb)))
        return self.transform(rgb)


def embed(
    config: EmbedConfig, progress: Callable[..., None] | None = None, run: artifacts.RunInfo | None = None
) -> EmbedResult:
    config.check()
    inputs = (config.tiles, *((config.corpus,) if config.corpus else ()), *((config.model,) if config.model else ()))
    with artifacts.writing(config.out, "embeddings", overwrite=config.overwrite, inputs=inputs):
        return _embed(config, progress, run)


def _embed(config: EmbedConfig, progress: Callable[..., None] | None, run: artifacts.RunInfo | None) -> EmbedResult:
    import torch
    from torch.utils.data import DataLoader

    tiles, tiles_manifest = artifacts.read_dataset(config.tiles, "tiles")
    if tiles.num_rows == 0:
        raise InputError(f"{config.tiles} has no tiles", hint="check `urbanln inspect` on it")
    report = progress or (lambda done, total, **_: None)
    from urbanln_cli.models.step import pick_device

    device = pick_device(config.device)
    if config.baseline == "random":
        spec, arch_from = random_baseline_spec(config)
        model, transform, tokenizer, source = load_encoder(spec, device)
        source["arch_from"] = arch_from
    else:
        model, transform, tokenizer, source = load_encoder(config.encoder(), device)
    from urbanln_cli.imagery import max_pixels_of

    images = _Images(tiles.data.column("image"), transform, tiles.data.column("tile_id"), max_pixels_of(tiles_manifest))
    loader = DataLoader(
        images, batch_size=config.batch_size, num_workers=config.workers, pin_memory=device.type == "cuda"
    )
    chunks, done = [], 0
    report(0, tiles.num_rows)
    with torch.inference_mode(), worker_errors():
        for batch in loader:
            if model is None:  # the pixel baseline: the features are the embedding
                chunks.append(batch.numpy())
            else:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    features = model.encode_image(batch.to(device, non_blocking=True), normalize=True)
                chunks.append(features.float().cpu().numpy())
            done += len(batch)
            report(done, tiles.num_rows)
    vectors = np.concatenate(chunks).astype(np.float32)
    tensors = {"embeddings": vectors}
    ids = {"tile_ids": tiles.data.column("tile_id").to_pylist()}
    inputs = [artifacts.fingerprint(config.tiles)]
    if config.corpus is not None:
        text_vectors, ids["text_tile_ids"] = _embed_text(config, model, tokenizer, device)
        tensors["text_embeddings"] = text_vectors
        inputs.append(artifacts.fingerprint(config.corpus))
    for name, array in tensors.items():
        _check_finite(array, name, source)
    manifest = artifacts.new_manifest(
        "embeddings",
        run=run or artifacts.RunInfo.from_config(config),
        inputs=inputs,
        rows=len(vectors),
        models={"source": source},
        extra={"dim": int(vectors.shape[1]), "tiles_artifact": tiles_manifest.get("artifact_id")},
    )
    artifacts.write_tensors(
        config.out, tensors, manifest, metadata={"model": source}, overwrite=config.overwrite, ids=ids
    )
    return EmbedResult(config.out, len(vectors), int(vectors.shape[1]), source, manifest)


def _check_finite(array: np.ndarray, name: str, source: dict[str, Any]) -> None:
    """A model with NaN or infinite weights gives vectors no probe can use: refuse to write them."""
    bad = int((~np.isfinite(array)).any(axis=1).sum()) if array.size else 0
    if bad:
        raise InputError(
            f"{bad} of {len(array)} {name} rows are not finite (NaN or inf): the model is broken",
            hint=f"check the metrics.jsonl of {source.get('run', 'the run')} for a diverged loss, and train it again",
        )


def _embed_text(config: EmbedConfig, model, tokenizer, device) -> tuple[np.ndarray, list[str]]:
    import torch

    corpus, _ = artifacts.read_dataset(config.corpus, "corpus")
    ids = corpus.data.column("tile_id").to_pylist()
    captions = corpus.data.column("caption").to_pylist()
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(captions), config.batch_size):
            tokens = tokenizer(captions[start : start + config.batch_size]).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                chunks.append(model.encode_text(tokens, normalize=True).float().cpu().numpy())
    dim = chunks[0].shape[1] if chunks else 0
    return (np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)), ids
