"""`urbanln evaluate retrieval`: recall both ways, every caption of a tile a positive."""

import json

import numpy as np

from urbanln_cli.evaluation.retrieval import retrieval_recall


def test_recall_against_a_hand_computed_case():
    image = np.eye(3, dtype=np.float32)
    # captions 0,1 belong to tile 0, caption 2 to tile 1, caption 3 to tile 2
    text = np.array([[1, 0, 0], [0, 0.6, 0.8], [0.8, 0.6, 0], [0, 0, 1]], np.float32)
    tile = np.array([0, 0, 1, 2])
    r = retrieval_recall(image, text, tile, ks=(1, 2))
    # image→text top-1: tile0 -> caption0 (hit); tile1 -> caption1 (0.6) vs caption2 (0.6): stable order picks 1
    # (miss); tile2 -> caption3 (hit)
    assert r["i2t_R@1"] == 2 / 3
    assert r["i2t_R@2"] == 1.0
    # text→image top-1: c0 -> img0 hit; c1 -> img2 (0.8) miss; c2 -> img0 (0.8) miss; c3 -> img2 hit
    assert r["t2i_R@1"] == 0.5
    # top-2: c1 -> img2, img1 still misses img0; c2 -> img0, img1 hits img1
    assert r["t2i_R@2"] == 0.75


def test_retrieval_cli(trained, cli):
    folder, tiles, run, _ = trained
    result = cli("evaluate", "retrieval", "--tiles", tiles, "--corpus", folder / "corpus", "--model", run, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["images"] == 16 and report["captions"] == 16
    assert set(report["metrics"]) == {f"{d}_R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)}
    assert all(0 <= v <= 1 for v in report["metrics"].values())
    assert report["metrics"]["i2t_R@10"] >= report["metrics"]["i2t_R@1"]
