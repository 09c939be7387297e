"""What the training loop carries across an exact resume: the LR schedule, RNG states and the metrics log."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

from urbanln_cli import artifacts


def truncate_metrics(path: Path, step: int) -> None:
    if not path.is_file():
        return
    kept = [
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and json.loads(line).get("step", 0) <= step
    ]
    with artifacts.atomic_file(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def cosine_with_warmup(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def get_rng_state(cuda: bool) -> dict[str, Any]:
    import numpy as np
    import torch

    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if cuda else [],
    }


def set_rng_state(state: dict[str, Any], cuda: bool) -> None:
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(tuple(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if cuda and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
