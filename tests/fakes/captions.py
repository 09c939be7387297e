"""Captions artifacts written straight from (tile, model, caption) rows, for tests of what reads them."""

from __future__ import annotations

from pathlib import Path


def caption_row(tile_id: str, model: str, caption: str | None, error: str | None = None) -> dict:
    """One row of a captions dataset with placeholder provenance."""
    return {
        "tile_id": tile_id,
        "model": model,
        "model_digest": "sha256:x",
        "prompt_id": "urban-v1",
        "prompt_sha256": "p",
        "options_sha256": "o",
        "image_sha256": "i",
        "caption": caption,
        "error": error,
        "error_class": None,
        "attempts": 1,
        "latency_s": 0.1,
        "prompt_tokens": 10,
        "output_tokens": 10,
        "host": "sim",
        "sentence_labels": None,
    }


def write_captions(path: Path, rows: list[dict]) -> Path:
    import datasets

    from urbanln_cli import artifacts
    from urbanln_cli.stages.caption import caption_features

    ds = datasets.Dataset.from_list(rows, features=caption_features())
    manifest = artifacts.new_manifest("captions", run=artifacts.RunInfo(), inputs=[], rows=len(rows))
    return artifacts.write_dataset(ds, path, manifest)
