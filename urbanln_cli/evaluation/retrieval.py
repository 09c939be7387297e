"""Image↔text retrieval recall with several captions per image, in memory O(N·K).

The N × M similarity matrix is never held whole, and never argsorted: it is scored a
chunk of image rows at a time, once, and only the top K of each row (image→text) and of
each column (text→image, merged across chunks) are kept, chosen with ``np.partition``
(linear time). Ties go to the lower index, so the result equals a stable full argsort of
the whole matrix, exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

# scores of rows [start, stop) against every column
ScoreChunk = Callable[[int, int], np.ndarray]

CHUNK_ELEMENTS = 1 << 23  # scores held at once (32 MB of float32), whatever N and M


def _pick(scores: np.ndarray, k: int) -> np.ndarray:
    """The positions of each row's ``k`` (<= columns) highest scores, in ascending position; of the positions tied
    with the k-th highest score, the lowest ones."""
    rows, cols = scores.shape
    if k == cols:
        return np.broadcast_to(np.arange(cols), (rows, cols)).copy()
    kth = np.partition(scores, cols - k, axis=1)[:, cols - k]  # each row's k-th highest score
    keep = scores >= kth[:, None]
    over = np.flatnonzero(keep.sum(axis=1) > k)  # rows with ties at the k-th score
    if over.size:
        sub, limit = scores[over], kth[over, None]
        at = sub == limit
        room = k - (sub > limit).sum(axis=1)
        keep[over] &= ~(at & (np.cumsum(at, axis=1, dtype=np.int32) > room[:, None]))
    return np.nonzero(keep)[1].reshape(rows, k)  # row-major: ascending position within a row


def _best_first(values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``positions`` (ascending in each row) reordered by descending ``values``, ties keeping their order."""
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(positions, order, axis=1)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """The columns of each row's ``k`` highest scores, best first, ties to the lower index: the first ``k``
    columns of a stable argsort of ``-scores``, in O(rows × columns) time instead of O(... × log columns)."""
    picked = _pick(scores, min(k, scores.shape[1]))
    return _best_first(np.take_along_axis(scores, picked, axis=1), picked)


def top_k_both(
    score_chunk: ScoreChunk, n_rows: int, n_cols: int, k: int, chunk: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's top ``k`` columns [n_rows, min(k, n_cols)] and each column's top ``k`` rows
    [n_cols, min(k, n_rows)], best first, from one pass over the scores, ``chunk`` rows at a time."""
    step = chunk or max(1, CHUNK_ELEMENTS // max(1, n_cols))
    rows_top = np.empty((n_rows, min(k, n_cols)), np.int64)
    col_values = np.empty((n_cols, 0), np.float32)  # each column's best rows so far, in ascending row order
    col_rows = np.empty((n_cols, 0), np.int64)
    for start in range(0, n_rows, step):
        stop = min(n_rows, start + step)
        scores = np.asarray(score_chunk(start, stop))
        rows_top[start:stop] = top_k(scores, k)
        by_column = scores.T
        picked = _pick(by_column, min(k, stop - start))
        # earlier rows come first, so a position in the merged row is also the order of the row index
        merged_values = np.concatenate([col_values, np.take_along_axis(by_column, picked, axis=1)], axis=1)
        merged_rows = np.concatenate([col_rows, start + picked], axis=1)
        keep = _pick(merged_values, min(k, merged_values.shape[1]))
        col_values = np.take_along_axis(merged_values, keep, axis=1)
        col_rows = np.take_along_axis(merged_rows, keep, axis=1)
    return rows_top, _best_first(col_values, col_rows)


def recalls_from_top(
    i2t_top: np.ndarray, t2i_top: np.ndarray, text_image: np.ndarray, ks: Sequence[int]
) -> dict[str, float]:
    """R@k both ways from each image's top captions and each caption's top images.

    Image→text: a hit when any caption of the image is among its top k. Text→image: a hit
    when the caption's own image is among its top k. ``mR`` is the mean of all the recalls.
    """
    n_images = len(i2t_top)
    text_image = np.asarray(text_image, np.int64)
    i2t_hit = text_image[i2t_top] == np.arange(n_images)[:, None]  # [N, K]: is the j-th caption one of mine
    t2i_hit = t2i_top == text_image[:, None]  # [M, K]
    out: dict[str, float] = {}
    for k in ks:
        out[f"i2t_R@{k}"] = float(i2t_hit[:, :k].any(axis=1).mean())
        out[f"t2i_R@{k}"] = float(t2i_hit[:, :k].any(axis=1).mean())
    out["mR"] = float(np.mean(list(out.values())))
    return out


def retrieval_recall(
    image: np.ndarray,
    text: np.ndarray,
    text_image: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
    chunk: int | None = None,
) -> dict[str, float]:
    """R@k both ways and mR for embeddings.

    ``image`` [N, D] and ``text`` [M, D] are L2-normalised; ``text_image[j]`` is the row in
    ``image`` of caption j's image (an image may have several captions).
    """
    image, text = np.asarray(image, np.float32), np.asarray(text, np.float32)
    _check(len(image), text_image, ks)
    if not (np.isfinite(image).all() and np.isfinite(text).all()):
        raise ValueError("the embeddings hold NaN or infinite values")
    i2t, t2i = top_k_both(lambda a, b: image[a:b] @ text.T, len(image), len(text), max(ks), chunk)
    return recalls_from_top(i2t, t2i, text_image, ks)


def random_recall(
    n_images: int, text_image: np.ndarray, ks: Sequence[int] = (1, 5, 10), seed: int = 0, chunk: int | None = None
) -> dict[str, float]:
    """The same recalls for a random ranking: seeded uniform scores stand in for the similarities.

    In expectation text→image R@k is k / N, and image→text R@k is 1 - C(M - c, k) / C(M, k)
    for an image with c of the M captions.
    """
    _check(n_images, text_image, ks)
    rng = np.random.default_rng(seed)
    scores = lambda a, b: rng.random((b - a, len(text_image)), np.float32)  # noqa: E731  (drawn in row order)
    i2t, t2i = top_k_both(scores, n_images, len(text_image), max(ks), chunk)
    return recalls_from_top(i2t, t2i, text_image, ks)


def _check(n_images: int, text_image: np.ndarray, ks: Sequence[int]) -> None:
    text_image = np.asarray(text_image)
    if not len(ks) or min(ks) < 1:
        raise ValueError("recall cut-offs must be at least 1")
    if len(text_image) and (text_image.min() < 0 or text_image.max() >= n_images):
        raise ValueError(f"a caption points at image {int(text_image.max())}, but there are {n_images} images")


def tile_captions(main: str | None, candidates: Sequence[str], dedupe: bool) -> list[str]:
    """The captions of one tile that retrieval counts.

    Every candidate counts, repeats included (UCM-Captions' annotators often wrote the same
    sentence twice); the fused ``caption`` counts too unless it is one of the candidates
    word for word (it was chosen from them, so it is the same caption, not another one).
    ``dedupe`` keeps each distinct text once.
    """
    texts = [t for t in candidates if t]
    if main and main not in texts:
        texts.insert(0, main)
    return list(dict.fromkeys(texts)) if dedupe else texts
