"""What ``fuse`` reads: the captions panel (with the trusted marks of imported captions) and the tiles (GSD, images).

Also the checks that the tiles are the ones the captions were made from.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from urbanln_cli import artifacts, manifest_fields
from urbanln_cli.captioners import TileInfo
from urbanln_cli.errors import InputError
from urbanln_cli.imagery import max_pixels_of

if TYPE_CHECKING:
    from urbanln_cli.stages.fuse import FuseConfig


@dataclass
class Panel:
    """Every captions folder merged: tile -> model -> caption, which of them are trusted, counts, manifests."""

    captions: dict[str, dict[str, str]]
    trusted: dict[str, frozenset[str]]
    counts: dict[str, int]
    manifests: list[dict[str, Any]]


def load_panel(paths: tuple[Path, ...]) -> Panel:
    """Merge captions folders.

    Failed rows (non-null ``error``) are skipped and counted. The same (tile, model)
    twice is fine when the captions agree; when they differ, it is an error. A row
    is trusted when its ``trusted`` column says so, or, without that column (or
    with a null), when its artifact's manifest says ``"trusted": true``.
    """
    merged: dict[str, dict[str, str]] = {}
    trusted: dict[str, set[str]] = {}
    where: dict[tuple[str, str], Path] = {}
    counts = Counter()
    manifests = []
    for path in paths:
        ds, manifest = artifacts.read_dataset(path, "captions")
        manifests.append(manifest)
        missing = {"tile_id", "model", "caption", "error"} - set(ds.column_names)
        if missing:
            raise InputError(
                f"{path} lacks the column(s) {', '.join(sorted(missing))} of a captions dataset",
                hint="re-create it with `urbanln caption`",
            )
        default = manifest.get("trusted") is True
        columns = ["tile_id", "model", "caption", "error"] + (["trusted"] if "trusted" in ds.column_names else [])
        table = ds.select_columns(columns).to_dict()
        marks = table.get("trusted") or [None] * len(table["tile_id"])
        for tile_id, model, caption, error, mark in zip(
            table["tile_id"], table["model"], table["caption"], table["error"], marks
        ):
            if error or caption is None:
                counts["failed_captions"] += 1
                continue
            key = (tile_id, model)
            old = merged.get(tile_id, {}).get(model)
            if old is not None:
                if old != caption:
                    raise InputError(
                        f"tile {tile_id} has two different captions by {model}: in {where[key]} and in {path}",
                        hint="pass each model's captions once (shards of one run, or runs with different models)",
                    )
                counts["duplicate_rows"] += 1
                continue
            merged.setdefault(tile_id, {})[model] = caption
            if default if mark is None else bool(mark):
                trusted.setdefault(tile_id, set()).add(model)
            where[key] = path
    return Panel(merged, {t: frozenset(m) for t, m in trusted.items()}, dict(counts), manifests)


def load_captions(paths: tuple[Path, ...]) -> tuple[dict[str, dict[str, str]], dict[str, int], list[dict[str, Any]]]:
    """tile_id -> model -> caption, plus counts and the input manifests (``load_panel`` without the trusted marks)."""
    panel = load_panel(paths)
    return panel.captions, panel.counts, panel.manifests


class TileImages:
    """A tiles artifact's GSD and images by tile id; images are read only when a check or rewrite needs them."""

    def __init__(self, tiles: Path):
        ds, self.manifest = artifacts.read_dataset(tiles, "tiles", columns=("gsd",))
        self.artifact_id = manifest_fields.field(self.manifest, tiles, "artifact_id", str)
        ids = ds.data.column("tile_id").to_pylist()
        self.index = {t: i for i, t in enumerate(ids)}
        # image-folder tiles without --locations store NaN: unknown, like None (then --gsd applies)
        self.gsd = {
            t: (float(g) if g is not None and math.isfinite(g) else None)
            for t, g in zip(ids, ds.data.column("gsd").to_pylist())
        }
        self._images = ds.data.column("image")
        self._sha = ds.data.column("image_sha256").to_pylist() if "image_sha256" in ds.column_names else None
        self._geometry = [
            ds.data.column(c).to_pylist() if c in ds.column_names else [None] * len(ids)
            for c in ("crs", "minx", "miny", "maxx", "maxy")
        ]
        self.max_pixels = max_pixels_of(
            self.manifest
        )  # a larger tile is a bad image for the checks and refine, never decoded

    def image(self, tile_id: str) -> bytes:
        return self._images[self.index[tile_id]]["bytes"].as_py()

    def tile_info(self, tile_id: str) -> TileInfo:
        """Where the tile is (NaN bounds when the tiles do not say), as a caption backend is told."""
        i = self.index[tile_id]
        crs, *bounds = (column[i] for column in self._geometry)
        box = tuple(math.nan if b is None else float(b) for b in bounds)
        return TileInfo(tile_id, crs or "", box, self.gsd[tile_id])  # type: ignore[arg-type]

    def image_id(self, tile_id: str) -> str:
        if self._sha is not None:
            return self._sha[self.index[tile_id]]
        return hashlib.sha256(self.image(tile_id)).hexdigest()


def load_gsd(tiles: Path) -> tuple[dict[str, float], dict[str, Any]]:
    images = TileImages(tiles)
    return images.gsd, images.manifest


def _needs_gsd(panel: Panel, config: FuseConfig) -> bool:
    """Whether the visibility step applies to any caption (trusted ones are left alone unless --filter-trusted)."""
    untrusted = any(set(caps) - panel.trusted.get(t, frozenset()) for t, caps in panel.captions.items())
    return config.visibility and (config.filter_trusted or untrusted or not panel.captions)


def _tiles_for(config: FuseConfig, needs_gsd: bool = True) -> TileImages | None:
    needs_images = config.image_check != "none" or config.refine is not None
    if config.tiles is None or not (needs_gsd or needs_images):
        return None
    if not Path(config.tiles).exists():
        if config.gsd is not None and not needs_images:
            return None  # captions without tiles (e.g. imported): every tile has the --gsd given
        raise InputError(
            f"tiles artifact not found: {config.tiles} (needed for each tile's GSD and image)",
            hint="pass --tiles PATH"
            + ("" if needs_images else ", --gsd M for captions without tiles, or --no-visibility"),
        )
    return TileImages(config.tiles)


def _check_images(merged: dict[str, Any], tiles: TileImages | None, config: FuseConfig) -> None:
    if tiles is None or not (config.image_check != "none" or config.refine):
        return
    missing = [t for t in merged if t not in tiles.index]
    if missing:
        raise InputError(
            f"{len(missing)} of {len(merged)} captioned tiles are not in {config.tiles} (e.g. {missing[0]}); "
            "--check and --refine need their images",
            hint="pass with --tiles the tiles the captions were made from",
        )


def _tiles_inputs(manifest: dict[str, Any], path: Path) -> list[str]:
    """The tiles artifact(s) a captions manifest says its captions were made from (for hints)."""
    found = []
    for i, entry in enumerate(manifest_fields.field(manifest, path, "inputs", list, [])):
        if not isinstance(entry, dict):
            raise manifest_fields.damaged(
                path, manifest, f"'inputs[{i}]' is {manifest_fields.json_type(entry)}, not an object"
            )
        if entry.get("stage") == "tiles" and isinstance(entry.get("path"), str):
            found.append(entry["path"])
    return found


MOST_MISSING = 0.5  # more than this share of the captioned tiles not in --tiles: they are not the captions' tiles


def _check_overlap(
    merged: dict[str, Any], tiles: TileImages | None, config: FuseConfig, made_from: list[list[str]]
) -> int:
    """How many captioned tiles ``tiles`` lacks (a few: counted, and the command warns).

    When none or most of them are there, the tiles are not the ones the captions were
    made from, and every GSD (so the visibility step) would be wrong or missing: refused.
    """
    if tiles is None or not merged:
        return 0
    missing = [t for t in merged if t not in tiles.index]
    if len(missing) > MOST_MISSING * len(merged):
        n = len(merged)
        which = (
            f"none of the {n} captioned tiles is in"
            if len(missing) == n
            else f"{len(missing)} of the {n} captioned tiles are not in"
        )
        example = next(iter(tiles.index), None)
        theirs = f"; it holds tiles like {example!r}" if example is not None else "; it holds no tiles"
        sources = sorted({p for m in made_from for p in m})
        where = f" ({', '.join(sources)})" if sources else ""
        raise InputError(
            f"{which} {config.tiles} (e.g. {missing[0]!r}{theirs}): not the tiles the captions were made from",
            hint=f"pass with --tiles the tiles the captions were made from{where}, or --no-visibility to fuse "
            "without tiles",
        )
    return len(missing)


def _gsd_of(tiles: TileImages | None, config: FuseConfig) -> Callable[[str], float | None]:
    known = tiles.gsd if tiles else {}
    return lambda tile_id: known.get(tile_id) if known.get(tile_id) is not None else config.gsd
