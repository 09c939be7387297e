"""GeoParquet 1.1 files: a table with a WKB geometry column and the file-level ``geo`` metadata.

Written with pyarrow alone (no GeoPandas): the geometry column holds WKB polygons, a
``bbox`` struct column is the 1.1 bounding-box covering (readers filter row groups by
it), and the ``geo`` key of the schema metadata says what the columns are
(https://geoparquet.org/releases/v1.1.0/). The urbanln manifest rides along under the
``urbanln`` key, so the file keeps its provenance when copied out of its folder.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

GEOPARQUET_VERSION = "1.1.0"
MANIFEST_KEY = b"urbanln"


def crs_projjson(crs: str) -> dict[str, Any]:
    """The PROJJSON of a CRS given as EPSG:N or WKT (what GeoParquet's ``crs`` field holds), through GDAL."""
    from rasterio.crs import CRS

    return CRS.from_user_input(crs).to_dict(projjson=True)


def bbox_struct(bounds: np.ndarray):
    """The 1.1 ``bbox`` covering column from (N, 4) xmin, ymin, xmax, ymax; NaN rows (no geometry) are null."""
    import pyarrow as pa

    bounds = np.asarray(bounds, np.float64).reshape(-1, 4)
    missing = pa.array(np.isnan(bounds).any(axis=1))
    fields = [pa.array(bounds[:, i]) for i in range(4)]
    return pa.StructArray.from_arrays(fields, names=["xmin", "ymin", "xmax", "ymax"], mask=missing)


def geo_metadata(
    crs: Mapping[str, Any], bbox: list[float], geometry_types: list[str], orientation: str | None = None
) -> dict[str, Any]:
    """The file-level ``geo`` metadata of one WKB ``geometry`` column with a ``bbox`` covering."""
    column: dict[str, Any] = {
        "encoding": "WKB",
        "geometry_types": geometry_types,
        "crs": dict(crs),
        "bbox": [float(v) for v in bbox],
        "covering": {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}},
    }
    if orientation:
        column["orientation"] = orientation
    return {"version": GEOPARQUET_VERSION, "primary_column": "geometry", "columns": {"geometry": column}}


def write_geoparquet(
    path: Path | str,
    columns: Mapping[str, Any],
    geometry_wkb: list[bytes | None],
    bounds: np.ndarray,
    crs: str,
    manifest: Mapping[str, Any],
    orientation: str | None = "counterclockwise",
) -> dict[str, Any]:
    """Write ``columns`` (name -> pyarrow array) with ``geometry`` (WKB polygons) and ``bbox`` as GeoParquet 1.1.

    ``bounds`` is each row's (xmin, ymin, xmax, ymax), NaN where the geometry is null. Write into a
    staging folder or through ``atomic_file``: this writes ``path`` in place. Returns the ``geo`` metadata.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    bounds = np.asarray(bounds, np.float64).reshape(-1, 4)
    present = ~np.isnan(bounds).any(axis=1)
    if not present.any():
        raise ValueError("a GeoParquet file needs at least one geometry")
    box = [
        float(bounds[present, 0].min()),
        float(bounds[present, 1].min()),
        float(bounds[present, 2].max()),
        float(bounds[present, 3].max()),
    ]
    geo = geo_metadata(crs_projjson(crs), box, ["Polygon"], orientation)
    arrays = {**columns, "geometry": pa.array(geometry_wkb, pa.binary()), "bbox": bbox_struct(bounds)}
    table = pa.table(arrays)
    metadata = {
        b"geo": json.dumps(geo).encode(),
        MANIFEST_KEY: json.dumps(dict(manifest), default=str).encode(),
    }
    table = table.replace_schema_metadata(metadata)
    # Row groups of ~64k rows: readers skip whole groups by the bbox covering's statistics.
    pq.write_table(table, str(path), compression="zstd", row_group_size=65_536, write_statistics=True)
    return geo


def read_geo_metadata(path: Path | str) -> dict[str, Any]:
    """The ``geo`` metadata of a GeoParquet file (for checks and ``inspect``-like summaries)."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(str(path)).metadata or {}
    return json.loads(meta[b"geo"]) if b"geo" in meta else {}
