"""What ``export`` reads and builds: the tiles' columns, the input's rows, footprints and raster bands."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from urbanln_cli import artifacts
from urbanln_cli.errors import InputError, UsageProblem

TILE_COLUMNS = (
    "tile_id",
    "source",
    "crs",
    "row_off",
    "col_off",
    "height",
    "width",
    "minx",
    "miny",
    "maxx",
    "maxy",
    "lon",
    "lat",
    "gsd",
)
PREDICTION_COLUMNS = ("target", "embeddings", "fold", "y_true", "y_pred", "class_true", "class_pred")
EDGE_POINTS = 8  # points per footprint edge when reprojecting: a projected box's edges bend


# ---------------------------------------------------------------- inputs


@dataclass
class Bands:
    values: np.ndarray  # (N, B) float32, NaN where a tile has no value
    names: list[str]
    tags: dict[str, Any] = field(default_factory=dict)
    resampling: str = "AVERAGE"  # how overviews combine pixels: NEAREST for class codes


@dataclass
class Source:
    kind: str  # embeddings | predictions
    path: Path
    ids: list[str]
    rows: Mapping[str, np.ndarray]  # embeddings: "vectors" (N, D); predictions: one array per column
    models: dict[str, Any] = field(default_factory=dict)
    tiles_artifact: str | None = None
    picked: dict[str, Any] = field(default_factory=dict)  # what was chosen from a probe's predictions
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        if self.kind == "embeddings":
            return {"dim": int(self.rows["vectors"].shape[1])}
        return {"predictions": self.picked}

    def columns(self, layout: str) -> dict[str, Any]:
        if self.kind == "predictions":
            return dict(self.rows)
        return vector_columns(self.rows["vectors"], layout)

    def bands(self) -> Bands:
        if self.kind == "embeddings":
            vectors = self.rows["vectors"]
            width = len(str(vectors.shape[1] - 1))
            return Bands(vectors, [f"embedding_{i:0{width}d}" for i in range(vectors.shape[1])])
        return prediction_bands(self.rows)


def embeddings_source(
    path: Path, vectors: np.ndarray, ids: list[str], meta: Mapping[str, Any], manifest: Mapping[str, Any]
) -> Source:
    _check_unique(ids, path)
    model = meta.get("model")
    return Source(
        "embeddings",
        path,
        list(ids),
        {"vectors": vectors},
        models={"source": model} if model else {},
        tiles_artifact=manifest.get("tiles_artifact"),
    )


def predictions_source(folder: Path, table, target: str | None, embeddings_name: str | None) -> Source:
    """The rows of one target and one embeddings of a probe's predictions table."""
    import pyarrow.compute as pc

    picked = {}
    choices = (("target", target, "--target"), ("embeddings", embeddings_name, "--embeddings-name"))
    for column, wanted, option in choices:
        if column not in table.column_names:
            continue
        names = sorted(str(v) for v in pc.unique(table[column]).to_pylist())
        if wanted is None and len(names) > 1:
            raise UsageProblem(
                f"{folder} holds predictions for {len(names)} {column} values ({', '.join(names)}); pick one",
                hint=f"pass {option} {names[0]}",
            )
        choice = wanted if wanted is not None else names[0] if names else None
        if choice not in names:
            raise UsageProblem(
                f"{option} {choice!r} is not in {folder} (it has {', '.join(names) or 'no rows'})",
                hint=f"pass one of: {', '.join(names)}",
            )
        table = table.filter(pc.equal(table[column], choice))
        picked[column] = choice
    ids = [str(v) for v in table["tile_id"].to_pylist()]
    _check_unique(ids, folder)
    rows = {
        name: table[name].to_numpy(zero_copy_only=False) for name in PREDICTION_COLUMNS if name in table.column_names
    }
    return Source("predictions", folder, ids, rows, picked=picked)


def _check_unique(ids: list[str], path: Path) -> None:
    if len(set(ids)) != len(ids):
        raise InputError(
            f"{path} holds {len(ids) - len(set(ids))} repeated tile ids; export needs one row per tile",
            hint="re-create it",
        )


def read_tiles(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The tiles' geometry columns as numpy arrays (strings as object arrays), without the images."""
    ds, manifest = artifacts.read_dataset(path, "tiles", columns=TILE_COLUMNS)
    table = ds.data.table.select(list(TILE_COLUMNS))
    out = {name: table[name].to_numpy(zero_copy_only=False) for name in TILE_COLUMNS}
    for name in ("crs", "source"):  # null reads as "" (no CRS), like the tiler writes it
        out[name] = np.asarray(["" if v is None else str(v) for v in out[name]], object)
    return out, manifest


def tiles_stride(manifest: Mapping[str, Any]) -> int | None:
    """The stride ``urbanln tile`` used (its --stride, else --size), from the tiles' manifest."""
    params = manifest.get("params") or {}
    for name in ("stride", "size"):
        value = (params.get(name) or {}).get("value")
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def join(ids: list[str], tile_ids: np.ndarray, source: Path, tiles: Path) -> np.ndarray:
    """Each input row's row in the tiles; every id must be there."""
    import pyarrow as pa
    import pyarrow.compute as pc

    at = pc.index_in(pa.array(ids, pa.string()), value_set=pa.array(tile_ids, pa.string()))
    missing = at.is_null()
    if pc.any(missing).as_py():
        lost = [ids[i] for i in np.flatnonzero(missing.to_numpy(zero_copy_only=False))]
        raise InputError(
            f"{len(lost)} of {len(ids)} tile ids in {source} are not in {tiles} (first: {lost[0]})",
            hint="pass the tiles they were made from with --tiles",
        )
    return at.to_numpy(zero_copy_only=False).astype(np.int64)


# ---------------------------------------------------------------- geometry


def parse_crs(text: str):
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        return CRS.from_user_input(text)
    except (CRSError, ValueError) as exc:  # rasterio raises ValueError for EPSG:<not a number>
        raise UsageProblem(f"--crs {text!r} is not a CRS: {exc}", hint="e.g. --crs EPSG:4326") from None


@dataclass
class Footprints:
    wkb: list[bytes | None]
    bounds: np.ndarray  # (N, 4), NaN where there is no footprint
    crs: str
    counts: dict[str, int]


def footprints(tiles: Mapping[str, np.ndarray], crs: str | None) -> Footprints:
    """Each tile's bounds as a polygon in one CRS: the tiles' own, or ``crs`` (edges densified, then reprojected)."""
    import shapely

    crs_col = tiles["crs"]
    box = np.stack([np.asarray(tiles[k], np.float64) for k in ("minx", "miny", "maxx", "maxy")], axis=1)
    has = (crs_col != "") & np.isfinite(box).all(axis=1)
    if not has.any():
        raise InputError(
            f"none of the {len(has)} tiles has a footprint: they are not georeferenced",
            hint="GeoParquet needs georeferenced tiles, e.g. tiles cut from a GeoTIFF",
        )
    crss = sorted(set(crs_col[has]))
    if crs is None and len(crss) > 1:
        listed = ", ".join(c if len(c) < 40 else c[:37] + "…" for c in crss[:4])
        raise UsageProblem(
            f"the tiles are in {len(crss)} CRSs ({listed}); a GeoParquet geometry column has one",
            hint="pass --crs EPSG:4326 to reproject every footprint to it",
        )
    target = crs or crss[0]
    target_crs = parse_crs(target)
    polygons = np.full(len(has), None, object)
    counts = {"no_footprint": int((~has).sum())}
    for name in crss:
        rows = np.flatnonzero(has & (crs_col == name))
        if parse_crs(name) == target_crs:
            polygons[rows] = shapely.box(*box[rows].T)
            continue
        polygons[rows] = _reprojected(box[rows], name, target)
        counts["reprojected"] = counts.get("reprojected", 0) + len(rows)
    missing = shapely.is_missing(polygons) | ~shapely.is_valid(polygons)
    counts["unprojectable"] = int((missing & has).sum())
    polygons[missing] = None
    polygons = shapely.orient_polygons(polygons)  # counterclockwise shells, as the metadata says
    bounds = np.where(missing[:, None], np.nan, shapely.bounds(polygons))
    return Footprints(list(shapely.to_wkb(polygons)), bounds, target, {k: v for k, v in counts.items() if v})


def _reprojected(box: np.ndarray, source: str, target: str) -> np.ndarray:
    """Boxes in ``source`` as polygons in ``target``: edges densified, then every point reprojected at once."""
    import shapely
    from rasterio.warp import transform

    t = np.arange(EDGE_POINTS) / EDGE_POINTS
    minx, miny, maxx, maxy = (box[:, i : i + 1] for i in range(4))
    w, h = maxx - minx, maxy - miny
    one = np.ones_like(t)
    xs = np.concatenate([minx + w * t, maxx * one, maxx - w * t, minx * one, minx], axis=1)
    ys = np.concatenate([miny * one, miny + h * t, maxy * one, maxy - h * t, miny], axis=1)
    px, py = transform(source, target, xs.ravel().tolist(), ys.ravel().tolist())
    coords = np.stack([np.asarray(px).reshape(xs.shape), np.asarray(py).reshape(ys.shape)], axis=2)
    ok = np.isfinite(coords).all(axis=(1, 2))
    out = np.full(len(box), None, object)
    out[ok] = shapely.polygons(coords[ok])
    return out


# ---------------------------------------------------------------- columns and bands


def vector_columns(vectors: np.ndarray, layout: str) -> dict[str, Any]:
    """The vectors as one list or fixed-size list column ``embedding``, or one float32 column per dimension."""
    import pyarrow as pa

    vectors = np.ascontiguousarray(vectors, np.float32)
    n, dim = vectors.shape
    if layout == "columns":
        width = len(str(dim - 1))
        return {f"embedding_{i:0{width}d}": vectors[:, i] for i in range(dim)}
    values = pa.array(vectors.ravel())
    if layout == "fixed":
        return {"embedding": pa.FixedSizeListArray.from_arrays(values, dim)}
    if n * dim < 2**31:
        return {
            "embedding": pa.ListArray.from_arrays(pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32)), values)
        }
    return {
        "embedding": pa.LargeListArray.from_arrays(pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int64)), values)
    }


def arrow_columns(columns: Mapping[str, Any]) -> dict[str, Any]:
    import pyarrow as pa

    return {name: v if isinstance(v, (pa.Array, pa.ChunkedArray)) else pa.array(v) for name, v in columns.items()}


def prediction_bands(rows: Mapping[str, np.ndarray]) -> Bands:
    """y_pred and y_true as bands; for a class target, class codes with the names in the ``classes`` tag."""
    predicted = rows.get("class_pred")
    if predicted is not None and any(isinstance(v, str) and v for v in predicted):
        truth = rows.get("class_true", np.full(len(predicted), None, object))
        classes = sorted({v for v in (*predicted, *truth) if isinstance(v, str) and v})
        code = {name: float(i) for i, name in enumerate(classes)}
        values = np.array(
            [[code.get(p, np.nan), code.get(t, np.nan)] for p, t in zip(predicted, truth)], np.float32
        ).reshape(-1, 2)
        return Bands(values, ["class_pred", "class_true"], {"classes": classes}, "NEAREST")
    y_true = rows.get("y_true", np.full(len(rows["y_pred"]), np.nan))
    values = np.stack([np.asarray(rows["y_pred"], np.float32), np.asarray(y_true, np.float32)], axis=1)
    return Bands(values, ["y_pred", "y_true"])


def band_image(grid, values: np.ndarray) -> np.ndarray:
    """One band of the raster: each tile's value at its pixel, NaN (nodata) elsewhere."""
    image = np.full((grid.height, grid.width), np.nan, np.float32)
    image[grid.rows, grid.cols] = values
    return image
