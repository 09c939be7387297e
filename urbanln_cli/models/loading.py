"""Which image/text encoder a stage runs: a pretrain run folder, open_clip weights, or a baseline.

``embed``, the segmentation probe, retrieval and ``fuse --check clip`` all load their
model here, so each sees exactly what ``embed`` sees.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from urbanln_cli import artifacts
from urbanln_cli.errors import InputError, UsageProblem

RUNS_LATEST = Path("runs/latest")
BASELINES = ("pixels", "random")


@dataclass(frozen=True)
class EncoderSpec:
    model: Path | None = None  # a pretrain run folder; default runs/latest
    arch: str | None = None  # with pretrained weights or the random baseline
    pretrained: str | None = None  # an open_clip tag, a checkpoint file or local-dir:FOLDER
    baseline: str | None = None  # pixels | random
    seed: int = 0  # the random baseline's weights

    def check(self) -> None:
        if self.baseline is not None and self.baseline not in BASELINES:
            raise UsageProblem(f"--baseline {self.baseline!r} is not one of {', '.join(BASELINES)}")
        if sum(x is not None for x in (self.pretrained, self.model, self.baseline)) > 1 and self.baseline != "random":
            raise UsageProblem(
                "give one of --model (a run folder), --pretrained weights or --baseline",
                hint="--baseline random may take --model to copy its architecture",
            )


def load_encoder(spec: EncoderSpec, device) -> tuple[Any, Any, Any, dict[str, Any]]:
    """(model or None, image transform or None, tokenizer or None, a description of the source with its fingerprint)."""
    import torch

    from urbanln_cli.models.longclip import create_model

    if spec.baseline == "pixels":
        return None, None, None, {"baseline": "pixels"}
    if spec.baseline == "random":
        arch = spec.arch or _run_arch(spec.model or RUNS_LATEST) or "ViT-B-16"  # comparable with the run
        torch.manual_seed(spec.seed)
        model, _, preprocess, tokenizer = create_model(arch, "none", device=str(device))
        return model.eval(), preprocess, tokenizer, {"baseline": "random", "arch": arch, "seed": spec.seed}
    if spec.pretrained is not None:
        arch = spec.arch or "ViT-B-16"
        model, _, preprocess, tokenizer = create_model(arch, spec.pretrained, device=str(device))
        return model.eval(), preprocess, tokenizer, {"arch": arch, "pretrained": spec.pretrained}
    folder = run_folder(spec.model)
    model, _, preprocess, tokenizer = create_model(pretrained=f"local-dir:{folder}", device=str(device))
    weights = folder / "open_clip_model.safetensors"
    return model.eval(), preprocess, tokenizer, {"run": str(folder), "weights_sha256": _sha256(weights)}


def run_folder(model: Path | None, hint: str | None = None) -> Path:
    """The trained model folder ``model`` (default runs/latest), or an InputError saying how to get one."""
    folder = Path(model) if model is not None else RUNS_LATEST
    if not (folder / "open_clip_config.json").is_file():
        raise InputError(
            f"no trained model in {folder}",
            hint=hint
            or "train one with `urbanln pretrain`, pass its folder with --model, or use --pretrained/--baseline",
        )
    return folder.resolve()


def _run_arch(model: Path | None) -> str | None:
    manifest = artifacts.read_manifest(Path(model)) if model is not None and Path(model).exists() else None
    return (manifest or {}).get("models", {}).get("arch")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()
