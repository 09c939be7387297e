"""`urbanln evaluate retrieval`: recall both ways and mR, several captions per image, top-k in chunks, dedupe and
the seeded random baseline."""

import json
from math import comb

import numpy as np
import pytest

from urbanln_cli.evaluation.retrieval import (
    random_recall,
    retrieval_recall,
    tile_captions,
    top_k,
    top_k_both,
)

# three images (one-hot) and five captions: 0 and 1 are image 0's, 2 and 4 image 1's, 3 image 2's
HAND_IMAGE = np.eye(3, dtype=np.float32)
HAND_TEXT = np.array([[1, 0, 0], [0, 0.6, 0.8], [0.8, 0.6, 0], [0, 0, 1], [0, 0.5, 0.7]], np.float32)
HAND_TILE = np.array([0, 0, 1, 2, 1])


@pytest.mark.parametrize("chunk", [None, 1, 2])
def test_recall_and_mr_against_a_hand_computed_case(chunk):
    r = retrieval_recall(HAND_IMAGE, HAND_TEXT, HAND_TILE, ks=(1, 2), chunk=chunk)
    # image→text, a hit when ANY of the image's captions is in the top k:
    #   image 0: c0 (1.0) first: hit at 1
    #   image 1: c1 (0.6) and c2 (0.6) tie, the lower index c1 first: miss at 1; c2 second: hit at 2
    #   image 2: c3 (1.0) first: hit at 1
    assert r["i2t_R@1"] == pytest.approx(2 / 3)
    assert r["i2t_R@2"] == 1.0
    # text→image, a hit when the caption's own image is in the top k:
    #   c0 -> image 0 hit; c1 -> image 2 (0.8), image 1 (0.6): misses image 0 at 1 and 2;
    #   c2 -> image 0 (0.8), image 1 (0.6): hit at 2; c3 -> image 2 hit; c4 -> image 2 (0.7), image 1 (0.5): hit at 2
    assert r["t2i_R@1"] == pytest.approx(2 / 5)
    assert r["t2i_R@2"] == pytest.approx(4 / 5)
    # mR: (2/3 + 1 + 2/5 + 4/5) / 4 = 43/60
    assert r["mR"] == pytest.approx(43 / 60)
    assert list(r) == ["i2t_R@1", "t2i_R@1", "i2t_R@2", "t2i_R@2", "mR"]


def test_default_cutoffs_give_six_recalls_and_their_mean():
    rng = np.random.default_rng(3)
    image, text = rng.normal(size=(40, 8)), rng.normal(size=(120, 8))
    r = retrieval_recall(image, text, np.repeat(np.arange(40), 3))
    six = [r[f"{d}_R@{k}"] for k in (1, 5, 10) for d in ("i2t", "t2i")]
    assert len(r) == 7 and r["mR"] == pytest.approx(np.mean(six))


def _reference(sims: np.ndarray, text_image: np.ndarray, ks) -> dict[str, float]:
    """Recall from a stable argsort of the whole matrix: what the top-k path must reproduce."""
    i2t = np.argsort(-sims, axis=1, kind="stable")
    t2i = np.argsort(-sims.T, axis=1, kind="stable")
    out = {}
    for k in ks:
        out[f"i2t_R@{k}"] = float(np.mean([(text_image[i2t[i, :k]] == i).any() for i in range(len(sims))]))
        out[f"t2i_R@{k}"] = float((t2i[:, :k] == text_image[:, None]).any(axis=1).mean())
    return out


@pytest.mark.parametrize("ties", [False, True])
def test_top_k_path_equals_a_full_argsort(ties):
    rng = np.random.default_rng(7)
    image = rng.normal(size=(57, 16)).astype(np.float32)
    text = rng.normal(size=(203, 16)).astype(np.float32)
    if ties:  # few distinct scores: the order among equal scores must follow the column index
        image, text = np.sign(image), np.sign(text)
    text_image = rng.integers(0, 57, 203)
    sims = image @ text.T
    for k in (1, 4, 13, 57, 203):
        by_row = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        by_column = np.argsort(-sims.T, axis=1, kind="stable")[:, :k]
        assert np.array_equal(top_k(sims, k), by_row)
        for chunk in (1, 3, 10, 57):  # chunks of fewer rows than k too: the column merge must still be exact
            rows, columns = top_k_both(lambda a, b: sims[a:b], 57, 203, k, chunk=chunk)
            assert np.array_equal(rows, by_row) and np.array_equal(columns, by_column), (k, chunk)
    ks = (1, 5, 10)
    reference = _reference(sims, text_image, ks)
    got = retrieval_recall(image, text, text_image, ks, chunk=9)
    assert {k: got[k] for k in reference} == reference
    if not ties:  # the data must not make every recall trivially 0 or 1
        assert 0 < got["t2i_R@10"] < 1


def test_top_k_wider_than_the_candidates():
    sims = np.array([[0.1, 0.9], [0.5, 0.5]])
    assert top_k(sims, 10).tolist() == [[1, 0], [0, 1]]
    # two images: R@5 and R@10 cannot be anything but 1
    r = retrieval_recall(np.eye(2), np.eye(2), np.array([1, 0]))
    assert r["t2i_R@1"] == 0 and r["t2i_R@5"] == 1 and r["i2t_R@10"] == 1


def test_recall_rejects_a_caption_of_no_image():
    with pytest.raises(ValueError, match="image 3"):
        retrieval_recall(HAND_IMAGE, HAND_TEXT, np.array([0, 0, 1, 3, 1]))
    with pytest.raises(ValueError, match="NaN"):
        retrieval_recall(HAND_IMAGE * np.nan, HAND_TEXT, HAND_TILE)
    with pytest.raises(ValueError, match="at least 1"):
        retrieval_recall(HAND_IMAGE, HAND_TEXT, HAND_TILE, ks=(0, 1))


def test_tile_captions_count_repeats_unless_deduped():
    cands = ["a farm .", "a farm .", "fields .", ""]
    assert tile_captions("a farm .", cands, dedupe=False) == ["a farm .", "a farm .", "fields ."]
    assert tile_captions("a farm .", cands, dedupe=True) == ["a farm .", "fields ."]
    # a fused caption that is none of the candidates is a caption of its own
    assert tile_captions("farm and fields .", cands, dedupe=False) == [
        "farm and fields .",
        "a farm .",
        "a farm .",
        "fields .",
    ]
    assert tile_captions("only one", [], dedupe=False) == ["only one"]


def test_random_baseline_is_seeded_and_near_chance():
    n_images, per_image = 400, 4
    text_image = np.repeat(np.arange(n_images), per_image)
    m = len(text_image)
    a = random_recall(n_images, text_image, seed=1)
    assert random_recall(n_images, text_image, seed=1) == a
    assert random_recall(n_images, text_image, seed=2) != a
    assert random_recall(n_images, text_image, seed=1, chunk=7) == a  # the chunk size does not change the draw
    for k in (1, 5, 10):
        p = k / n_images  # text→image: the own image among k of N
        assert abs(a[f"t2i_R@{k}"] - p) < 5 * np.sqrt(p * (1 - p) / m) + 1e-9, (k, a)
        q = 1 - comb(m - per_image, k) / comb(m, k)  # image→text: any of 4 captions among k of M
        assert abs(a[f"i2t_R@{k}"] - q) < 5 * np.sqrt(q * (1 - q) / n_images) + 1e-9, (k, a)
    assert a["t2i_R@10"] > a["t2i_R@1"]


# ---------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def repeated_corpus(trained):
    """The trained fixture's tiles with a corpus whose tiles have repeated captions: 3 + 2 per tile counted."""
    import datasets

    from urbanln_cli import artifacts

    folder, _, _, ids = trained
    rows = [
        {
            "tile_id": t,
            "caption": f"houses, tile {i}",
            "candidates": json.dumps(
                [
                    {"model": "ucm#1", "caption": f"houses, tile {i}"},
                    {"model": "ucm#2", "caption": f"houses, tile {i}"},
                    {"model": "ucm#3", "caption": f"roads near tile {i}"},
                ]
            ),
        }
        for i, t in enumerate(ids)
    ]
    out = folder / "corpus_repeats"
    artifacts.write_dataset(
        datasets.Dataset.from_list(rows),
        out,
        artifacts.new_manifest("corpus", run=artifacts.RunInfo("t"), inputs=[], rows=len(rows)),
    )
    return out


def test_retrieval_cli(trained, cli):
    folder, tiles, run, _ = trained
    result = cli("evaluate", "retrieval", "--tiles", tiles, "--corpus", folder / "corpus", "--model", run, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["images"] == 16 and report["captions"] == 16 and report["duplicates"] == 0
    six = {f"{d}_R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)}
    assert set(report["metrics"]) == six | {"mR"}
    assert all(0 <= v <= 1 for v in report["metrics"].values())
    assert report["metrics"]["mR"] == pytest.approx(np.mean([report["metrics"][k] for k in six]))
    assert report["metrics"]["i2t_R@10"] >= report["metrics"]["i2t_R@1"]
    assert report["source"] and "baseline" not in report["source"]


def test_retrieval_cli_counts_every_caption_unless_dedupe(trained, repeated_corpus, cli):
    _, tiles, _, ids = trained
    base = ["evaluate", "retrieval", "--tiles", tiles, "--corpus", repeated_corpus, "--baseline", "random", "--json"]
    every = json.loads(cli(*base).stdout)
    assert every["captions"] == 3 * len(ids) and every["duplicates"] == len(ids) and every["dedupe"] is False
    once = json.loads(cli(*base, "--dedupe").stdout)
    assert once["captions"] == 2 * len(ids) and once["duplicates"] == len(ids) and once["dedupe"] is True
    assert every["source"] == {"baseline": "random", "seed": 0}
    # seeded: the same seed gives the same numbers, another seed (almost surely) others
    assert json.loads(cli(*base).stdout)["metrics"] == every["metrics"]
    seeded = [json.loads(cli(*base, "--seed", str(s)).stdout)["metrics"] for s in (1, 2, 3)]
    assert any(m != every["metrics"] for m in seeded)
    text = cli(*base[:-1])
    assert text.exit_code == 0 and "mR" in text.stdout
    assert f"{3 * len(ids)} captions ({len(ids)} of them repeats); random ranking, seed 0" in text.stderr


def test_retrieval_cli_usage_errors(trained, repeated_corpus, cli):
    _, tiles, run, _ = trained
    base = ["evaluate", "retrieval", "--tiles", tiles, "--corpus", repeated_corpus]
    unknown = cli(*base, "--baseline", "pixels")
    assert unknown.exit_code == 2 and "unknown baseline" in unknown.stderr
    both = cli(*base, "--baseline", "random", "--model", run)
    assert both.exit_code == 2 and "uses no model" in both.stderr
