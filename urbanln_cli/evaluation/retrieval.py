"""Image↔text retrieval recall, with every caption of a tile counted as its positive."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def retrieval_recall(
    image: np.ndarray, text: np.ndarray, text_tile: np.ndarray, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """R@k both ways.

    ``image`` [N, D] and ``text`` [M, D] are L2-normalised; ``text_tile[j]`` is the row in
    ``image`` of caption j's tile. Image→text: a hit when any caption of the image's tile is
    in the top k. Text→image: a hit when the caption's own tile is in the top k.
    """
    sims = image @ text.T  # [N, M]
    out: dict[str, float] = {}
    n_images = len(image)
    i2t_rank = np.argsort(-sims, axis=1, kind="stable")
    t2i_rank = np.argsort(-sims.T, axis=1, kind="stable")
    for k in ks:
        top_texts = i2t_rank[:, :k]
        out[f"i2t_R@{k}"] = float(np.mean([(text_tile[top_texts[i]] == i).any() for i in range(n_images)]))
        out[f"t2i_R@{k}"] = float((t2i_rank[:, :k] == text_tile[:, None]).any(axis=1).mean())
    return out
