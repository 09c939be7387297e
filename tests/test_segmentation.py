"""The segmentation probe: IoU metrics, masks from `label --raster NAME=PATH:mask`, and `evaluate segmentation`."""

import io
import json
import math

import datasets
import numpy as np
import pytest

from urbanln_cli.evaluation import segmentation as seg
from urbanln_cli.stages.label import LabelConfig, RasterTarget, label
from urbanln_cli.stages.tile import TileConfig, tile
from urbanln_cli.synth import SynthConfig, synth_city

FAST = [
    "--baseline",
    "random",
    "--arch",
    "urbanln-tiny",
    "--block-km",
    "0.1",
    "--folds",
    "3",
    "--epochs",
    "2",
    "--device",
    "cpu",
]


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    """A 512 px synthetic city at 1 m, cut into 64 tiles of 64 px, with land-cover masks and a population target."""
    folder = tmp_path_factory.mktemp("seg")
    synth_city(SynthConfig(out=folder / "city", size=512, seed=1, workers=1))
    tiles = tile(
        TileConfig(inputs=(folder / "city" / "imagery.tif",), out=folder / "tiles", size=64, min_valid=0, workers=1)
    ).out
    labels = label(
        LabelConfig(
            tiles=tiles,
            out=folder / "labels",
            rasters=(
                RasterTarget.parse(f"landcover={folder / 'city' / 'landcover.tif'}:mask"),
                RasterTarget.parse(f"population={folder / 'city' / 'population.tif'}:sum"),
            ),
        )
    ).out
    return folder, tiles, labels


def _png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))


# ---------------------------------------------------------------- metrics


def test_iou_against_a_hand_computed_case():
    # classes 0, 1, 2, 3; 255 = not scored; class 3 is in neither truth nor prediction
    truth = np.array([[0, 0, 1, 1], [0, 2, 2, 255], [1, 1, 2, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 2, 1, 0], [1, 0, 2, 2]])
    conf = seg.confusion(truth, pred, 4)
    # scored pixels (truth != 255): 10.  rows = truth, columns = prediction
    #   truth 0: (0,0)->0 (0,1)->1 (1,0)->0        => [2, 1, 0, 0]
    #   truth 1: (0,2)->1 (0,3)->1 (2,0)->1 (2,1)->0 => [1, 3, 0, 0]
    #   truth 2: (1,1)->2 (1,2)->1 (2,2)->2        => [0, 1, 2, 0]
    np.testing.assert_array_equal(conf, [[2, 1, 0, 0], [1, 3, 0, 0], [0, 1, 2, 0], [0, 0, 0, 0]])
    # IoU = TP / (TP + FP + FN):
    #   class 0: TP 2, FN 1, FP 1 (a truth-1 pixel) -> 2/4 = 0.5
    #   class 1: TP 3, FN 1, FP 2 (one truth-0, one truth-2) -> 3/6 = 0.5
    #   class 2: TP 2, FN 1, FP 0 -> 2/3
    #   class 3: no pixel in truth or prediction -> no IoU (NaN), left out of the mean
    iou = seg.iou(conf)
    assert iou[0] == 0.5 and iou[1] == 0.5 and iou[2] == pytest.approx(2 / 3) and math.isnan(iou[3])
    assert seg.mean_iou(conf) == pytest.approx((0.5 + 0.5 + 2 / 3) / 3)  # 0.5556
    assert seg.pixel_accuracy(conf) == pytest.approx(7 / 10)  # predictions at 255-truth pixels count nowhere
    scores = seg.scores(conf, [10, 20, 30, 40])
    assert scores["iou"] == {"10": 0.5, "20": 0.5, "30": pytest.approx(2 / 3), "40": None}
    assert scores["pixels"] == 10 and scores["class_pixels"] == {"10": 3, "20": 4, "30": 3, "40": 0}
    # a class predicted but never true has IoU 0 and does count
    assert seg.mean_iou(seg.confusion([0, 0], [0, 1], 2)) == pytest.approx((0.5 + 0.0) / 2)
    assert math.isnan(seg.mean_iou(seg.confusion([255, 255], [0, 1], 2)))
    summary = seg.summarise(
        [seg.scores(conf, [0, 1, 2, 3]), seg.scores(seg.confusion([0, 1], [0, 1], 4), [0, 1, 2, 3])], [0, 1, 2, 3]
    )
    assert summary["miou"]["mean"] == pytest.approx(((0.5 + 0.5 + 2 / 3) / 3 + 1.0) / 2)
    assert summary["iou"]["2"] == {"mean": pytest.approx(2 / 3), "std": 0.0, "folds": 1}
    assert summary["iou"]["3"]["folds"] == 0 and math.isnan(summary["iou"]["3"]["mean"])


def test_interpolation_matrices_are_bilinear_upsampling():
    import torch
    import torch.nn.functional as F

    from urbanln_cli.evaluation.pixel_head import interpolation

    x = torch.randn(2, 5, 4, 3)
    for size in ((64, 64), (7, 10), (4, 3)):
        rh, rw = interpolation(size[0], 4), interpolation(size[1], 3)
        expected = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        torch.testing.assert_close(rh @ x @ rw.T, expected, rtol=1e-5, atol=1e-5)


def _block_masks(n, shape, cell, k, seed):
    """Masks of random classes in blocks of ``cell`` pixels, with a corner of ignored pixels."""
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(n):
        coarse = rng.integers(0, k, (shape[0] // cell, shape[1] // cell))
        mask = np.kron(coarse, np.ones((cell, cell), np.int64)).astype(np.uint8)
        mask[:3, -5:] = seg.IGNORE
        masks.append(mask)
    return masks


def _head_miou(feats, masks, k, train, test, **kw):
    """Fit the pixel head on ``train``, return the mIoU of its predictions on ``test``."""
    import torch

    from urbanln_cli.evaluation import pixel_head

    settings = {"epochs": 10, "lr": 1e-1, "weight_decay": 1e-4, **kw}
    head, _ = pixel_head.fit(feats, masks, np.asarray(train), k, device=torch.device("cpu"), seed=0, **settings)
    conf = np.zeros((k, k), np.int64)
    for rows, preds in pixel_head.predict(head, feats, masks, np.asarray(test)):
        for row, pred in zip(rows, preds):
            assert pred.shape == masks[row].shape
            conf += seg.confusion(masks[row], pred, k)
    return seg.mean_iou(conf)


def test_pixel_head_learns_informative_tokens_and_a_misaligned_grid_fails():
    # features that ARE the answer: each class's share of a token's pixels (the one-hot mask average-pooled to
    # the token grid), on a grid that is not square (8 × 12 tokens of 4 px over 32 × 48 px masks); a class per token
    n, k, cell = 30, 3, 4
    masks = _block_masks(n, (32, 48), cell, k, seed=3)
    onehot = np.stack([np.stack([m == c for c in range(k)]).astype(np.float32) for m in masks])  # [tiles, k, 32, 48]
    feats = onehot.reshape(n, k, 8, cell, 12, cell).mean(axis=(3, 5)).astype(np.float16)  # [tiles, k, 8, 12]
    train, test = range(20), range(20, n)
    assert _head_miou(feats, masks, k, train, test) > 0.85  # 0.92: only bilinear upsampling blurs the block edges
    # the same tokens on the wrong grid: rows and columns swapped (a 12 × 8 grid, still upsampled to 32 × 48),
    # the flat tokens read column by column, or off by one token (as when the class token is kept and the last patch
    # lost)
    flat = feats.reshape(n, k, -1)
    swapped = np.ascontiguousarray(feats.transpose(0, 1, 3, 2))
    column_major = np.ascontiguousarray(flat.reshape(n, k, 12, 8).transpose(0, 1, 3, 2))
    off_by_one = np.roll(flat, 1, axis=2).reshape(feats.shape)
    for wrong in (swapped, column_major, off_by_one):
        assert _head_miou(wrong, masks, k, train, test) < 0.4  # about 0.2


def test_token_grid_undoes_the_vit_flattening():
    import torch

    from urbanln_cli.stages.segment import token_grid

    grid = torch.randn(2, 5, 3, 4)  # [tiles, dim, gh, gw], as the ViT's patch embedding (conv1) gives them
    tokens = grid.reshape(2, 5, -1).permute(
        0, 2, 1
    )  # open_clip VisionTransformer._embeds: token i*gw + j is patch (i, j)
    back, dropped = token_grid(tokens, (3, 4))
    assert back.shape == (2, 5, 3, 4) and not dropped
    torch.testing.assert_close(back, grid)
    with_class = torch.cat([torch.full((2, 1, 5), 99.0), tokens], dim=1)
    back, dropped = token_grid(with_class, (3, 4))
    assert dropped
    torch.testing.assert_close(back, grid)


def _identity_vit():
    """urbanln-tiny with a transformer that does nothing (zero output projections) and no positional embedding:
    each patch token is then a layer-normed linear function of its own 16 × 16 patch only."""
    import torch

    from urbanln_cli.models import create_model

    torch.manual_seed(0)
    model = create_model("urbanln-tiny", "none", device="cpu")[0].eval()
    with torch.no_grad():
        for block in model.visual.transformer.resblocks:
            for linear in (block.attn.out_proj, block.mlp.c_proj):
                linear.weight.zero_()
                linear.bias.zero_()
        model.visual.positional_embedding.zero_()
    return model


def test_stage_tokens_line_up_with_the_pixels(monkeypatch):
    # tiles of 96 px whose 4 × 4 blocks (one per token once resized to the 64 px input) are coloured by class:
    # the stage's tokens must let a head find the class of each block, and a row/column mix-up in the
    # reshape of the tokens into their grid must not
    import pyarrow as pa
    import torch
    from PIL import Image

    from urbanln_cli.stages import segment as stage

    palette = np.array([[220, 40, 40], [40, 190, 70], [50, 60, 220]], np.uint8)
    masks = _block_masks(40, (96, 96), 24, 3, seed=5)
    images = []
    for mask in masks:
        buffer = io.BytesIO()
        Image.fromarray(palette[np.where(mask == seg.IGNORE, 0, mask)]).save(buffer, format="PNG")
        images.append({"bytes": buffer.getvalue(), "path": None})
    images = pa.array(images)
    model = _identity_vit()

    def tokens():
        feats, info = stage._tokens(
            model, images, np.arange(40), stage.SegmentConfig(batch_size=16), torch.device("cpu"), lambda n: None
        )
        assert feats.shape == (40, 64, 4, 4) and info["grid"] == [4, 4]
        return feats

    train, test = range(24), range(24, 40)
    assert _head_miou(tokens(), masks, 3, train, test) > 0.85
    right = stage.token_grid
    monkeypatch.setattr(stage, "token_grid", lambda t, grid: (right(t, grid)[0].transpose(2, 3), False))
    assert _head_miou(tokens(), masks, 3, train, test) < 0.5


# ---------------------------------------------------------------- masks from label


def test_tile_masks_equal_the_landcover_window(city):
    import rasterio

    folder, tiles, labels = city
    with rasterio.open(folder / "city" / "landcover.tif") as src:
        landcover = src.read(1)
    rows = datasets.load_from_disk(str(labels)).to_list()
    windows = {
        t["tile_id"]: (t["row_off"], t["col_off"])
        for t in datasets.load_from_disk(str(tiles)).remove_columns("image").to_list()
    }
    assert len(rows) == 64
    for row in rows:
        r, c = windows[row["tile_id"]]
        np.testing.assert_array_equal(_png(row["landcover_mask"]), landcover[r : r + 64, c : c + 64])
    manifest = json.loads((labels / "urbanln.json").read_text())
    info = manifest["targets"]["landcover"]
    counts = np.bincount(landcover.ravel(), minlength=10)
    assert info["classes"] == {str(k): int(n) for k, n in enumerate(counts) if n}
    assert info["nodata_pixels"] == 0 and info["tiles_with_nodata"] == 0
    assert info["names"]["0"] == "water" and len(info["palette"]["2"]) == 3
    # a coarser grid: the class at the centre of each 4 × 4 block of pixels
    small = label(
        LabelConfig(
            tiles=tiles,
            out=folder / "small",
            mask_size=16,
            rasters=(RasterTarget.parse(f"landcover={folder / 'city' / 'landcover.tif'}:mask"),),
        )
    ).out
    row = datasets.load_from_disk(str(small))[5]
    r, c = windows[row["tile_id"]]
    np.testing.assert_array_equal(_png(row["landcover_mask"]), landcover[r + 2 : r + 64 : 4, c + 2 : c + 64 : 4])


def test_edge_tiles_mark_outside_pixels_as_ignored(city, tmp_path):
    import rasterio

    folder, _, _ = city
    tiles = tile(
        TileConfig(inputs=(folder / "city" / "imagery.tif",), out=tmp_path / "tiles", size=96, min_valid=0, workers=1)
    ).out
    result = label(
        LabelConfig(
            tiles=tiles,
            out=tmp_path / "labels",
            rasters=(RasterTarget.parse(f"lc={folder / 'city' / 'landcover.tif'}:mask"),),
        )
    )
    with rasterio.open(folder / "city" / "landcover.tif") as src:
        landcover = src.read(1)
    corner = {r["tile_id"]: r for r in datasets.load_from_disk(str(tmp_path / "labels")).to_list()}["imagery/r480_c480"]
    mask = _png(corner["lc_mask"])
    np.testing.assert_array_equal(mask[:32, :32], landcover[480:, 480:])
    assert (mask[32:, :] == 255).all() and (mask[:, 32:] == 255).all()
    assert result.counts["partial_lc"] == 11  # the last row and column of the 6 × 6 tiles


# ---------------------------------------------------------------- the probe


def test_segmentation_probe_end_to_end(city, tmp_path, cli):
    folder, tiles, labels = city
    result = cli(
        "evaluate",
        "segmentation",
        "--mask",
        "landcover",
        "--tiles",
        tiles,
        "--labels",
        labels,
        *FAST,
        "-o",
        tmp_path / "a",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["out"] == str(tmp_path / "a")
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    miou = report["metrics"]["miou"]
    assert 0.0 <= miou["mean"] <= 1.0 and math.isfinite(miou["std"]) and miou["folds"] == 3
    assert payload["metrics"] == report["metrics"]
    assert report["classes"] == list(range(10)) and report["class_names"]["2"] == "road"
    assert report["tokens"]["grid"] == [4, 4] and report["tokens"]["dim"] == 64
    assert report["split"]["kind"] == "spatial" and len(report["folds"]) == 3
    assert sum(f["n_test"] for f in report["folds"]) == report["n"] == 64
    assert report["pooled"]["pixels"] == 64 * 64 * 64
    for fold in report["folds"]:
        present = [v for v in fold["iou"].values() if v is not None]
        assert fold["miou"] == pytest.approx(np.mean(present))
    assert "segmented landcover on 64 tiles" in result.stderr
    # the figure: a few held-out tiles, image | truth | prediction, in many colours
    from PIL import Image

    with Image.open(tmp_path / "a" / "examples.png") as img:
        assert img.width > 600 and img.height > 600
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
        assert len(colours) > 50 and max(n for n, _ in colours) < 0.8 * img.width * img.height
    manifest = json.loads((tmp_path / "a" / "urbanln.json").read_text())
    assert manifest["stage"] == "probe" and manifest["task"] == "segmentation"
    # resolved defaults, and only the options of segmentation
    params = manifest["params"]
    assert params["split"] == {"value": "spatial", "source": "default"}
    assert params["lr"] == {"value": 1e-2, "source": "default"} and params["weight_decay"] == {
        "value": 1e-4,
        "source": "default",
    }
    assert params["epochs"] == {"value": 2, "source": "flag"} and params["mask"] == {
        "value": "landcover",
        "source": "flag",
    }
    for name in (
        "target",
        "embeddings",
        "log_target",
        "drop_zero",
        "alphas",
        "hidden",
        "max_epochs",
        "patience",
        "as_json",
    ):
        assert name not in params, name
    assert report["head"]["optimizer"] == "AdamW lr 0.01 weight_decay 0.0001"
    # the same run twice is deterministic
    again = cli("evaluate", "segmentation", "--tiles", tiles, "--labels", labels, *FAST, "-o", tmp_path / "b")
    assert again.exit_code == 0, again.stderr
    assert "mIoU" in again.stdout and "road" in again.stdout
    other = json.loads((tmp_path / "b" / "report.json").read_text())
    assert other["metrics"] == report["metrics"] and other["iou"] == report["iou"]


def test_segmentation_lr_and_weight_decay(city, tmp_path, cli):
    _, tiles, labels = city
    base = ["--tiles", tiles, "--labels", labels, *FAST, "--no-plots", "--lr", "0.05", "--weight-decay", "0", "--json"]
    evaluated = cli("evaluate", "segmentation", *base, "-o", tmp_path / "e")
    assert evaluated.exit_code == 0, evaluated.stderr
    for folder in ("e",):
        report = json.loads((tmp_path / folder / "report.json").read_text())
        assert report["head"]["optimizer"] == "AdamW lr 0.05 weight_decay 0"
        params = json.loads((tmp_path / folder / "urbanln.json").read_text())["params"]
        assert params["lr"] == {"value": 0.05, "source": "flag"} and params["weight_decay"] == {
            "value": 0.0,
            "source": "flag",
        }
    bad = cli(
        "evaluate", "segmentation", "--tiles", tiles, "--labels", labels, *FAST, "--lr", "0", "-o", tmp_path / "x"
    )
    assert bad.exit_code == 2 and "--lr 0 must be positive" in bad.stderr


def test_segmentation_option_defaults_are_the_stages():
    import dataclasses

    import typer.main

    from urbanln_cli.cli import app
    from urbanln_cli.commands import segment as segment_cli
    from urbanln_cli.stages.segment import SegmentConfig

    defaults = {f.name: f.default for f in dataclasses.fields(SegmentConfig)}
    commands = typer.main.get_command(app).commands
    evaluate = {p.name: p.default for p in commands["evaluate"].commands["segmentation"].params}
    for name, default in evaluate.items():
        if name in defaults and name != "split":
            assert default == defaults[name], name
    assert evaluate["split"] == "spatial" and {"lr", "weight_decay"} <= set(evaluate)
    for name in segment_cli.ONLY:
        assert evaluate[name] == defaults[name], name
    # `probe` does one job: none of these options is its
    assert not set(segment_cli.ONLY) & {p.name for p in commands["probe"].params}


def test_segmentation_probe_random_split_and_no_plots(city, tmp_path):
    from urbanln_cli.stages.segment import SegmentConfig, segment

    folder, tiles, labels = city
    result = segment(
        SegmentConfig(
            tiles=tiles,
            labels=labels,
            baseline="random",
            arch="urbanln-tiny",
            split="random",
            folds=2,
            epochs=1,
            device="cpu",
            plots=False,
            out=tmp_path / "r",
        )
    )
    assert result.report["split"]["kind"] == "random" and len(result.report["folds"]) == 2
    assert result.report["files"] == {} and not (tmp_path / "r" / "examples.png").exists()


@pytest.mark.parametrize(
    "args, code, words",
    [
        (
            ["--labels", "{folder}/nomask"],
            3,
            "has no mask column 'landcover_mask'; its columns are tile_id, lon, lat, group, population",
        ),
        (["--mask", "roads"], 3, "has no mask column 'roads_mask'"),
        (["--tiles", "{folder}/other_tiles"], 3, "no tile id in"),
        (["--baseline", "pixels"], 2, "no patch tokens"),
        (["--baseline", "random", "--arch", "RN50"], 2, "no grid of patch tokens"),
        (["--split", "spatial", "--block-km", "50"], 2, "spatial block"),
        (["--split", "auto"], 2, "--split auto is for `urbanln probe`"),
    ],
)
def test_segmentation_errors(city, tmp_path, cli, args, code, words):
    folder, tiles, labels = city
    if not (folder / "nomask").exists():
        label(
            LabelConfig(
                tiles=tiles,
                out=folder / "nomask",
                rasters=(RasterTarget.parse(f"population={folder / 'city' / 'population.tif'}:sum"),),
            )
        )
        import shutil

        shutil.copyfile(
            folder / "city" / "imagery.tif", folder / "elsewhere.tif"
        )  # the same pixels under other tile ids
        tile(TileConfig(inputs=(folder / "elsewhere.tif",), out=folder / "other_tiles", size=64, workers=1))
    base = [
        "evaluate",
        "segmentation",
        "--tiles",
        tiles,
        "--labels",
        labels,
        "--device",
        "cpu",
        "--block-km",
        "0.1",
        "-o",
        tmp_path / "x",
    ]
    extra = [a.format(folder=folder) for a in args]
    if "--baseline" not in extra and "--model" not in extra:
        extra += ["--baseline", "random", "--arch", "urbanln-tiny"]
    result = cli(*base, *extra)
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and "hint: " in result.stderr and result.stderr.count("\n") == 2
    assert words in result.stderr
    if "nomask" in extra[1]:
        assert "label --raster landcover=PATH:mask" in result.stderr
    assert not (tmp_path / "x").exists()


def test_probe_has_no_segmentation_options(city, cli):
    _, _, labels = city
    for args in (["--task", "segmentation"], ["--mask", "landcover"]):
        result = cli("probe", "--labels", labels, *args)
        assert result.exit_code == 2 and result.stdout == ""
        assert args[0] in result.stderr


def test_regression_probe_reads_labels_with_masks(city, tmp_path):
    from urbanln_cli.stages.embed import EmbedConfig, embed
    from urbanln_cli.stages.probe import ProbeConfig, evaluate

    _, tiles, labels = city
    vectors = embed(EmbedConfig(tiles=tiles, baseline="pixels", out=tmp_path / "e.safetensors", workers=0)).out
    result = evaluate(ProbeConfig(target="all", embeddings=(vectors,), labels=labels, folds=3, block_km=0.1))
    assert result.report["targets"] == ["population"]  # the mask column is not a regression target
