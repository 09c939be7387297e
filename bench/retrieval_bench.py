"""Benchmark retrieval recall: our chunked top-k against the plain full argsort, in one process.

Data: N image and M = N × captions-per-image caption embeddings (L2-normalised, 512-d);
each caption is its image's vector plus noise, so recall is neither 0 nor 1.

Ours: ``retrieval_recall`` (urbanln_cli/evaluation/retrieval.py): scores a chunk of rows
at a time and keeps each row's top K with ``np.partition``; memory O(N·K + chunk·M).
Baseline: what `evaluate retrieval` did before: the whole N × M similarity matrix, a stable
argsort of it and of its transpose (two N × M int64 arrays), then the hits.

Peak memory is what each allocates on top of the inputs, measured with tracemalloc (numpy
reports its buffers to it). The baseline needs about 20 bytes per similarity; it is skipped,
and said so, when that is more than half the memory available.

    python bench/retrieval_bench.py                          # 4,000 images × 20,000 captions, both
    python bench/retrieval_bench.py --images 20000 --captions-per-image 5   # 20k × 100k

Prints seconds, peak MB, the recalls (which must agree) and the ratios (baseline / ours).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from urbanln_cli.evaluation.retrieval import retrieval_recall  # noqa: E402


def full_argsort_recall(image: np.ndarray, text: np.ndarray, text_image: np.ndarray, ks) -> dict[str, float]:
    """The previous implementation, verbatim apart from the name: argsort the whole matrix both ways."""
    sims = image @ text.T  # [N, M]
    out: dict[str, float] = {}
    n_images = len(image)
    i2t_rank = np.argsort(-sims, axis=1, kind="stable")
    t2i_rank = np.argsort(-sims.T, axis=1, kind="stable")
    for k in ks:
        top_texts = i2t_rank[:, :k]
        out[f"i2t_R@{k}"] = float(np.mean([(text_image[top_texts[i]] == i).any() for i in range(n_images)]))
        out[f"t2i_R@{k}"] = float((t2i_rank[:, :k] == text_image[:, None]).any(axis=1).mean())
    return out


def measure(fn, *args) -> tuple[dict[str, float], float, float]:
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - start
    peak_mb = (tracemalloc.get_traced_memory()[1] - before) / 2**20
    return result, seconds, peak_mb


def available_bytes() -> int:
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
    return info.get("MemAvailable", 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--captions-per-image", type=int, default=5)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument(
        "--noise",
        type=float,
        default=15.0,
        help="norm of the noise added to each caption (its image vector has norm 1)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    n, m, ks = args.images, args.images * args.captions_per_image, (1, 5, 10)
    image = rng.standard_normal((n, args.dim), np.float32)
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    text_image = np.repeat(np.arange(n), args.captions_per_image)
    text = image[text_image] + args.noise / np.sqrt(args.dim) * rng.standard_normal((m, args.dim), np.float32)
    text = (text / np.linalg.norm(text, axis=1, keepdims=True)).astype(np.float32)  # float32, as the model's
    print(f"{n:,} images × {m:,} captions, {args.dim}-d, {os.cpu_count()} CPUs", file=sys.stderr)

    warm = image[:50], text[:250], text_image[:250] % 50  # load BLAS threads before timing either
    retrieval_recall(*warm, ks), full_argsort_recall(*warm, ks)
    tracemalloc.start()
    ours, ours_s, ours_mb = measure(retrieval_recall, image, text, text_image, ks)
    report = {"images": n, "captions": m, "ours": {"seconds": round(ours_s, 2), "peak_mb": round(ours_mb, 1)}}
    print(f"ours (chunked top-k):   {ours_s:8.2f} s  peak {ours_mb:9.1f} MB", file=sys.stderr)
    need = 20 * n * m  # float32 sims + its negation + two int64 argsorts
    if args.skip_baseline or need > available_bytes() / 2:
        why = "asked" if args.skip_baseline else f"needs ~{need / 2**30:.1f} GiB, {available_bytes() / 2**30:.1f} free"
        print(f"baseline skipped ({why})", file=sys.stderr)
        report["baseline"] = None
    else:
        base, base_s, base_mb = measure(full_argsort_recall, image, text, text_image, ks)
        print(f"baseline (full argsort): {base_s:7.2f} s  peak {base_mb:9.1f} MB", file=sys.stderr)
        mismatch = {k: (ours[k], base[k]) for k in base if ours[k] != base[k]}
        if mismatch:
            raise SystemExit(f"recalls differ: {mismatch}")
        report["baseline"] = {"seconds": round(base_s, 2), "peak_mb": round(base_mb, 1)}
        report["time_ratio"] = round(base_s / ours_s, 2)
        report["memory_ratio"] = round(base_mb / ours_mb, 1)
        print(f"ratio baseline / ours: time {base_s / ours_s:.2f}×, memory {base_mb / ours_mb:.1f}×", file=sys.stderr)
    report["metrics"] = {k: round(v, 4) for k, v in ours.items()}
    tracemalloc.stop()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
