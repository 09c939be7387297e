"""Stage ``evaluate segmentation``: how well do a model's frozen patch tokens segment land cover?

The image tower of an open_clip ViT (a ``pretrain`` run, ``--pretrained`` weights
or random weights) turns each tile, resized whole to the model's input size (no
crop, so the token grid covers the tile), into a grid of patch tokens; the class
token is left out. A linear head (a 1×1 convolution on the tokens, standardised
on the training tiles) predicts class logits per token; they are bilinearly
upsampled to the mask grid of ``label --raster NAME=PATH:mask`` and trained with
cross-entropy (ignore index 255) by AdamW, seeded. Folds come from the probe's
splits (spatial blocks by default). Scores on each fold's held-out tiles: per-class
IoU, mIoU and pixel accuracy (conventions in ``evaluation.segmentation``), then
mean ± std over folds and pooled over every fold.

Writes ``report.json``, ``examples.png`` (held-out tiles: image, truth, prediction)
and the manifest into the output folder (default ``probe/<mask>-segmentation``).
The tokens of every tile are kept in memory as float16 (tiles × width × grid² × 2
bytes: about 300 kB a tile for ViT-B-16), and the masks as uint8.

Library use::

    from urbanln_cli.stages.segment import SegmentConfig, evaluate
    report = evaluate(SegmentConfig(mask="landcover", model=Path("runs/latest"))).report
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from urbanln_cli import artifacts, imagery
from urbanln_cli.errors import InputError, UsageProblem
from urbanln_cli.evaluation import pixel_head, splits
from urbanln_cli.evaluation import segmentation as seg


@dataclass(frozen=True)
class SegmentConfig:
    mask: str = "landcover"  # a mask target of the labels: column <mask>_mask
    tiles: Path = Path("tiles")
    labels: Path = Path("labels")
    out: Path | None = None  # default probe/<mask>-segmentation
    model: Path | None = None  # a pretrain run folder; default runs/latest
    arch: str | None = None  # with --pretrained or --baseline random
    pretrained: str | None = None
    baseline: str | None = None  # random
    split: str = "spatial"  # random | spatial | group | logo | transfer:A->B
    folds: int = 5
    block_km: float = 1.0
    epochs: int = 30
    lr: float = 1e-2
    weight_decay: float = 1e-4
    batch_size: int = 64  # tiles per forward pass of the image tower
    device: str = "auto"
    seed: int = 0
    examples: int = 4  # held-out tiles drawn in examples.png
    plots: bool = True
    overwrite: bool = False

    def encoder(self):
        from urbanln_cli.models.loading import EncoderSpec

        return EncoderSpec(
            model=self.model, arch=self.arch, pretrained=self.pretrained, baseline=self.baseline, seed=self.seed
        )

    def check(self) -> None:
        if self.baseline == "pixels":
            raise UsageProblem(
                "the pixel baseline has no patch tokens to segment with", hint="use --baseline random, or a model"
            )
        self.encoder().check()
        if splits.SplitSpec.parse(self.split).kind == "auto":
            raise UsageProblem(
                "--split auto is for `urbanln probe`", hint="name the split: spatial, random, group, logo or transfer"
            )
        if self.folds < 2:
            raise UsageProblem(f"--folds {self.folds} must be at least 2")
        if not self.block_km > 0:
            raise UsageProblem(f"--block-km {self.block_km} must be positive")
        if self.epochs < 1 or self.batch_size < 1 or self.examples < 0:
            raise UsageProblem("--epochs and --batch-size must be at least 1, and examples at least 0")
        if not self.lr > 0 or self.weight_decay < 0:
            raise UsageProblem(
                f"--lr {self.lr:g} must be positive and --weight-decay {self.weight_decay:g} not negative"
            )
        if not self.mask.strip():
            raise UsageProblem("--mask is empty", hint="name a mask target of the labels, e.g. --mask landcover")

    def output(self) -> Path:
        return (
            Path(self.out)
            if self.out is not None
            else Path("probe") / f"{self.mask.removesuffix('_mask')}-segmentation"
        )


@dataclass
class SegmentEvaluation:
    report: dict[str, Any]
    counts: dict[str, int]
    examples: list[dict[str, Any]] = field(repr=False, default_factory=list)  # tile_id, image, truth, pred (class ids)
    palette: dict[int, tuple[int, int, int]] | None = None


@dataclass
class SegmentResult:
    out: Path
    report: dict[str, Any]
    counts: dict[str, int]
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass
class _Data:
    tile_ids: list[str]
    tile_rows: np.ndarray  # row of each tile in the tiles dataset
    masks: list[np.ndarray]  # contiguous class index per pixel (uint8; 255 ignored)
    classes: list[int]  # class id of each index
    fold: np.ndarray
    fold_info: dict[str, Any]
    counts: dict[str, int]
    labels_info: dict[str, Any]
    palette: dict[int, tuple[int, int, int]] | None
    names: dict[str, str]  # class id -> name, where the raster named its classes


# ---------------------------------------------------------------- public API


def segment(
    config: SegmentConfig, progress: Callable[[int, int], None] | None = None, run: artifacts.RunInfo | None = None
) -> SegmentResult:
    """Evaluate, then write the output folder atomically (see the module docstring)."""
    config.check()
    out = config.output()
    with artifacts.writing(out, "probe", overwrite=config.overwrite, inputs=(config.tiles, config.labels)):
        result = evaluate(config, progress)
        return _write(config, out, result, run or artifacts.RunInfo.from_config(config))


def evaluate(config: SegmentConfig, progress: Callable[[int, int], None] | None = None) -> SegmentEvaluation:
    """Read, extract tokens, fit a head per fold and score; nothing is written."""
    from urbanln_cli.models.loading import load_encoder
    from urbanln_cli.models.step import pick_device

    config.check()
    report_progress = progress or (lambda done, total: None)
    spec = splits.SplitSpec.parse(config.split)
    tiles, tiles_manifest = artifacts.read_dataset(config.tiles, "tiles")
    data = _read(config, spec, tiles)
    device = pick_device(config.device)
    model, _, _, source = load_encoder(config.encoder(), device)
    fold_ids = sorted(int(f) for f in np.unique(data.fold) if f != splits.TRAIN_ONLY)
    total = len(data.tile_ids) + len(fold_ids) * config.epochs
    report_progress(0, total)
    feats, token_info = _tokens(
        model,
        tiles.data.column("image"),
        data.tile_rows,
        config,
        device,
        lambda n: report_progress(n, total),
        max_pixels=imagery.max_pixels_of(tiles_manifest),
    )
    del model

    done = len(data.tile_ids)

    def step() -> None:
        nonlocal done
        done += 1
        report_progress(done, total)

    show = _pick_examples(data, config.examples)
    per_fold, pooled, examples = _folds(feats, data, fold_ids, show, config, device, step)
    summary = seg.summarise(per_fold, data.classes)
    report = {
        "task": "segmentation",
        "mask": config.mask.removesuffix("_mask"),
        "classes": data.classes,
        "class_names": data.names,
        "metrics": {"miou": summary["miou"], "pixel_accuracy": summary["pixel_accuracy"]},
        "iou": summary["iou"],
        "pooled": seg.scores(pooled, data.classes),
        "miou_convention": "mean IoU over the classes present in a fold's held-out truth or prediction; pixels "
        "whose truth is 255 (nodata) are not scored",
        "folds": per_fold,
        "split": {
            "kind": spec.kind,
            "spec": spec.describe(),
            "folds": config.folds if spec.kind in ("random", "spatial", "group") else None,
            "block_km": config.block_km,
            "seed": config.seed,
            **{k: v for k, v in data.fold_info.items() if k not in ("test_group", "buffer_dropped")},
            **(
                {"train_groups": list(spec.train_groups), "test_groups": list(spec.test_groups)}
                if spec.kind == "transfer"
                else {}
            ),
        },
        "model": source,
        "tokens": token_info,
        "head": {
            "kind": "linear: a 1×1 convolution on the patch tokens, standardised on the training tiles",
            "loss": "cross-entropy on logits bilinearly upsampled to the mask grid, ignore index 255",
            "optimizer": f"AdamW lr {config.lr:g} weight_decay {config.weight_decay:g}",
            "epochs": config.epochs,
            "batch_tiles": pixel_head.BATCH_TILES,
            "seed": config.seed,
        },
        "labels": data.labels_info,
        "tiles": {"path": str(config.tiles), "rows": tiles.num_rows, "artifact_id": tiles_manifest.get("artifact_id")},
        "n": len(data.tile_ids),
        "counts": dict(sorted(data.counts.items())),
    }
    shown = [
        {
            "tile_id": data.tile_ids[r],
            "tile_row": int(data.tile_rows[r]),
            "truth": data.masks[r],
            "pred": examples[r],
            "fold": int(data.fold[r]),
        }
        for r in sorted(show, key=lambda r: data.tile_ids[r])
        if r in examples
    ]
    return SegmentEvaluation(report, data.counts, shown, data.palette)


def _folds(feats, data: _Data, fold_ids: list[int], show: set[int], config: SegmentConfig, device, step):
    """Fit a head per fold and score its held-out tiles: (fold records, pooled confusion, predictions of the tiles to
    show)."""
    k_classes = len(data.classes)
    examples: dict[int, np.ndarray] = {}
    per_fold, pooled = [], np.zeros((k_classes, k_classes), np.int64)
    for k in fold_ids:
        train, test = np.flatnonzero(data.fold != k), np.flatnonzero(data.fold == k)
        head, loss = pixel_head.fit(
            feats,
            data.masks,
            train,
            k_classes,
            epochs=config.epochs,
            lr=config.lr,
            weight_decay=config.weight_decay,
            device=device,
            seed=config.seed + k,
            step=step,
        )
        conf = np.zeros((k_classes, k_classes), np.int64)
        for rows, preds in pixel_head.predict(head, feats, data.masks, test):
            for row, pred in zip(rows, preds):
                conf += seg.confusion(data.masks[row], pred, k_classes)
                if int(row) in show:
                    examples[int(row)] = pred
        pooled += conf
        record = {
            "fold": k,
            "n_train": int(len(train)),
            "n_test": int(len(test)),
            "final_loss": loss,
            **seg.scores(conf, data.classes),
        }
        if k in data.fold_info.get("test_group", {}):
            record["test_group"] = data.fold_info["test_group"][k]
        per_fold.append(record)
    return per_fold, pooled, examples


# ---------------------------------------------------------------- reading


def _read(config: SegmentConfig, spec: splits.SplitSpec, tiles) -> _Data:
    import pandas as pd

    labels, manifest = artifacts.read_dataset(config.labels, "labels")
    name = config.mask.removesuffix("_mask")
    column = f"{name}_mask"
    if column not in labels.column_names:
        masks = [c for c, f in labels.features.items() if getattr(f, "dtype", None) == "binary"]
        raise InputError(
            f"{config.labels} has no mask column {column!r}; its columns are {', '.join(labels.column_names)}",
            hint=(
                f"pick one with --mask {masks[0].removesuffix('_mask')}, or make it with " if masks else "make it with "
            )
            + f"`urbanln label --raster {name}=PATH:mask`",
        )
    frame = labels.remove_columns(
        [c for c in labels.column_names if c not in ("tile_id", "lon", "lat", "group")]
    ).to_pandas()
    for col in ("lon", "lat"):
        if col not in frame.columns:
            frame[col] = np.nan
    if "group" not in frame.columns:
        frame["group"] = None
    label_ids = frame["tile_id"].astype(str).tolist()
    tile_ids = [str(t) for t in tiles.data.column("tile_id").to_pylist()]
    tile_row = pd.Index(tile_ids).get_indexer(label_ids)
    matched = int((tile_row >= 0).sum())
    needed = max(2, config.folds if spec.kind in ("random", "spatial") else 2)
    if matched < needed:
        what = "no tile id" if matched == 0 else f"only {matched} of {len(label_ids)} tile ids"
        raise InputError(
            f"{what} in {config.labels} matched a tile of {config.tiles} ({len(tile_ids)} tiles); {matched} "
            f"matched, at least {needed} are needed",
            hint=f"label the tiles you segment (ids look like {label_ids[0] if label_ids else None!r} in the labels, "
            f"{tile_ids[0] if tile_ids else None!r} in the tiles)",
        )
    counts = {"matched": matched}
    if matched < len(label_ids):
        counts["labels_without_tile"] = len(label_ids) - matched
    pngs = labels.data.column(column)
    raw: dict[int, np.ndarray] = {}
    for i in np.flatnonzero(tile_row >= 0):
        png = pngs[int(i)].as_py()
        if png is None:
            continue
        try:
            with imagery.open_image(png, None, "the mask") as img:  # ImageTooLarge is a ValueError
                raw[int(i)] = np.asarray(img, np.uint8)
        except (OSError, ValueError) as exc:
            raise InputError(
                f"{config.labels}: the {column} of {label_ids[i]} is not a readable PNG ({exc})",
                hint="re-create the labels",
            ) from None
    valid = [i for i, m in raw.items() if (m != seg.IGNORE).any()]
    if matched - len(valid):
        counts["no_valid_pixels"] = matched - len(valid)
    usable = np.zeros(len(label_ids), bool)
    usable[valid] = True
    lon, lat = frame["lon"].to_numpy(np.float64), frame["lat"].to_numpy(np.float64)
    group = frame["group"].to_numpy(object)
    usable, dropped = splits.usable_rows(spec, usable, lon, lat, group)
    counts.update({k: v for k, v in dropped.items() if v})
    rows = np.flatnonzero(usable)
    if len(rows) < needed:
        raise InputError(
            f"{len(rows)} tiles have a usable {column} (valid pixels"
            + (", a location" if spec.kind == "spatial" else "")
            + f"), fewer than {needed}",
            hint="check the mask raster covers the tiles (`urbanln inspect` the labels)",
        )
    fold, fold_info = splits.outer_folds(
        spec,
        lon[rows],
        lat[rows],
        group[rows],
        folds=config.folds,
        block_km=config.block_km,
        seed=config.seed,
        what=f"mask {name!r}",
    )
    seen = np.zeros(256, bool)
    for r in rows:
        seen[np.unique(raw[int(r)])] = True
    seen[seg.IGNORE] = False
    classes = [int(c) for c in np.flatnonzero(seen)]
    lut = np.full(256, seg.IGNORE, np.uint8)
    lut[classes] = np.arange(len(classes), dtype=np.uint8)
    target = (manifest.get("targets") or {}).get(name) or {}
    palette = {int(c): tuple(v) for c, v in (target.get("palette") or {}).items()} or None
    names = {str(c): str(n) for c, n in (target.get("names") or {}).items() if int(c) in classes}
    return _Data(
        tile_ids=[label_ids[r] for r in rows],
        tile_rows=tile_row[rows],
        masks=[lut[raw[int(r)]] for r in rows],
        classes=classes,
        fold=fold,
        fold_info=fold_info,
        counts=counts,
        labels_info={
            "path": str(config.labels),
            "rows": len(label_ids),
            "column": column,
            "artifact_id": manifest.get("artifact_id"),
        },
        palette=palette,
        names=names,
    )


def _pick_examples(data: _Data, n: int) -> set[int]:
    """Held-out tiles to draw: those with the most classes (ties by tile id), so the figure shows boundaries."""
    scored = [r for r in range(len(data.tile_ids)) if data.fold[r] != splits.TRAIN_ONLY]
    ranked = sorted(scored, key=lambda r: (-len(np.unique(data.masks[r])), data.tile_ids[r]))
    return set(ranked[:n])


# ---------------------------------------------------------------- tokens


def _token_grid(model) -> tuple[Any, tuple[int, int], tuple[int, int]]:
    """The image tower, its input size and its patch grid; an error for towers without patch tokens."""
    visual = getattr(model, "visual", None)
    if visual is None or not hasattr(visual, "output_tokens") or not hasattr(visual, "grid_size"):
        raise UsageProblem(
            f"the model's image tower ({type(visual).__name__}) gives no grid of patch tokens to segment with",
            hint="use a ViT architecture (e.g. --arch ViT-B-16, or a run pretrained with one)",
        )
    size = visual.image_size if isinstance(visual.image_size, (tuple, list)) else (visual.image_size, visual.image_size)
    return visual, (int(size[0]), int(size[1])), (int(visual.grid_size[0]), int(visual.grid_size[1]))


def token_grid(tokens, grid: tuple[int, int]):
    """Patch tokens ``[tiles, gh·gw, dim]`` (or ``gh·gw + 1`` with the class token in front) as ``[tiles, dim, gh,
    gw]``.

    open_clip's ViT flattens its patch embedding ``[tiles, dim, gh, gw]`` row by row
    (``x.reshape(tiles, dim, -1).permute(0, 2, 1)`` in ``VisionTransformer._embeds``),
    so token ``i·gw + j`` is the patch in row ``i`` and column ``j``; this undoes it.
    Returns the grid and whether a class token was dropped.
    """
    gh, gw = grid
    dropped = tokens.shape[1] == gh * gw + 1
    if dropped:
        tokens = tokens[:, 1:]
    return tokens.reshape(tokens.shape[0], gh, gw, tokens.shape[2]).permute(0, 3, 1, 2), dropped


def _tokens(
    model, images, tile_rows: np.ndarray, config: SegmentConfig, device, on_progress, max_pixels: int | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Patch tokens of every tile, [tiles, dim, grid_h, grid_w] (float16 on the CPU), from the frozen image tower."""
    import torch
    from PIL import Image

    visual, (height, width), (gh, gw) = _token_grid(model)
    mean = torch.tensor(getattr(visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
    std = torch.tensor(getattr(visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)
    chunks, class_token = [], False
    previous = visual.output_tokens
    visual.output_tokens = True
    try:
        with torch.inference_mode():
            for start in range(0, len(tile_rows), config.batch_size):
                batch = []
                for row in tile_rows[start : start + config.batch_size]:
                    try:
                        with imagery.open_image(
                            images[int(row)]["bytes"].as_py(), max_pixels, f"tile row {int(row)}: its image"
                        ) as img:
                            rgb = img.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
                    except imagery.ImageTooLarge as exc:  # an oversize tile is a bad tile: never decoded
                        raise InputError(str(exc), hint=imagery.OVERSIZE_HINT) from None
                    except (OSError, ValueError) as exc:
                        raise InputError(
                            f"tile row {int(row)}: cannot decode its image ({exc})",
                            hint="re-create the tiles with `urbanln tile`",
                        ) from None
                    batch.append(torch.from_numpy(np.asarray(rgb, np.float32) / 255.0).permute(2, 0, 1))
                x = ((torch.stack(batch) - mean) / std).to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    out = visual(x)
                tokens = out[1] if isinstance(out, tuple) else None
                if tokens is None or tokens.ndim != 3 or tokens.shape[1] not in (gh * gw, gh * gw + 1):
                    got = "none" if tokens is None else f"shape {list(tokens.shape)}"
                    raise UsageProblem(
                        f"the model's image tower gives no {gh}×{gw} grid of patch tokens ({got})",
                        hint="use a plain ViT architecture (e.g. --arch ViT-B-16); attention-pooled towers have no "
                        "token grid",
                    )
                grid, dropped = token_grid(tokens.float(), (gh, gw))
                class_token = class_token or dropped
                chunks.append(grid.cpu().to(torch.float16).numpy())
                on_progress(start + len(batch))
    finally:
        visual.output_tokens = previous
    feats = np.concatenate(chunks)
    info = {
        "input_size": [height, width],
        "grid": [gh, gw],
        "dim": int(feats.shape[1]),
        "class_token": "dropped" if class_token else "not in the tokens",
        "resize": "each tile resized whole (bicubic, no crop) to the input size, so the grid covers the tile",
    }
    return feats, info


# ---------------------------------------------------------------- writing


def _write(config: SegmentConfig, out: Path, result: SegmentEvaluation, run: artifacts.RunInfo) -> SegmentResult:
    from urbanln_cli.evaluation import plots
    from urbanln_cli.evaluation.metrics import json_finite

    report = dict(result.report)
    files: dict[str, str] = {}
    with artifacts.staged_dir(out, config.overwrite) as staging:
        if config.plots and result.examples:
            tiles, _ = artifacts.read_dataset(config.tiles, "tiles")
            images = tiles.data.column("image")
            panels = []
            for ex in result.examples:
                from PIL import Image

                with Image.open(io.BytesIO(images[ex["tile_row"]]["bytes"].as_py())) as img:
                    rgb = np.asarray(img.convert("RGB"))
                classes = np.asarray(report["classes"] + [seg.IGNORE] * (256 - len(report["classes"])), np.int64)
                panels.append((ex["tile_id"], rgb, classes[ex["truth"]], classes[ex["pred"]]))
            iou = {int(c): v["mean"] for c, v in report["iou"].items()}
            title = (
                f"{report['mask']}: held-out tiles, truth and prediction (mIoU {report['metrics']['miou']['mean']:.3f})"
            )
            names = {int(c): n for c, n in report["class_names"].items()}
            plots.segmentation_figure(
                staging / "examples.png", panels, report["classes"], iou, title, palette=result.palette, names=names
            )
            files["examples"] = "examples.png"
        report["files"] = files
        report = json_finite(report)
        artifacts.write_json_atomic(staging / "report.json", report)
        manifest = artifacts.new_manifest(
            "probe",
            run=run,
            inputs=[artifacts.fingerprint(p) for p in (config.tiles, config.labels)],
            rows=report["n"],
            counts=result.counts,
            models={"source": report["model"]},
            extra={
                "task": "segmentation",
                "mask": report["mask"],
                "split": report["split"],
                "metrics": report["metrics"],
            },
        )
        artifacts.write_json_atomic(staging / artifacts.MANIFEST_NAME, manifest)
    return SegmentResult(out, report, result.counts, manifest)
