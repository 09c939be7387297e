"""Table targets for ``label``: read a CSV, TSV or Parquet table, type its columns, join them to tiles.

A column is numeric when every cell that is not missing is a number, and categorical
(its stripped text cells are the classes) when none is; a column mixing the two
is an error that names it. Columns named in ``LabelConfig.categorical`` are
categorical whatever they hold (codes such as 11 or 021, read as written). Cells
that are empty, blank or a missing marker such as ``NA`` or ``-`` are missing.
Categorical columns come back as object arrays of ``str`` or ``None``; numeric
ones as float64 with NaN.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from urbanln_cli import geo
from urbanln_cli.errors import InputError, UsageProblem

if TYPE_CHECKING:
    import pandas as pd

    from urbanln_cli.stages.label import LabelConfig

RESERVED = {"tile_id", "lon", "lat", "group"}
TARGET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
# compared after stripping and lower-casing; pandas' own defaults plus the spreadsheet habits "-" and "?"
MISSING_MARKERS = frozenset(
    {"", "na", "n/a", "nan", "-nan", "null", "none", "<na>", "#n/a", "#n/a n/a", "#na", "nat", "-", "?"}
)
# a text column that is not named with --columns is a class target only when it looks like one
MAX_AUTO_CLASSES = 1000


@dataclass
class TableTargets:
    columns: dict[str, np.ndarray]  # one value per tile, in the table's column order
    categorical: list[str]  # which of the columns hold classes
    counts: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # text columns left out, and why


def read_table(path: Path, id_column: str | None = None, text_columns: tuple[str, ...] = ()):
    """The table as pandas reads it; in a CSV, ``id_column`` and ``text_columns`` are kept as written."""
    import pandas as pd

    if not path.is_file():
        raise InputError(f"table not found: {path}", hint="pass a CSV or parquet file to --table")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt", ".tsv"):
            # ids and class codes stay text, so "007" still matches a tile called "007"
            text = {c: str for c in (*text_columns, *([id_column] if id_column else []))}
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=text or None)
    except Exception as exc:  # pandas/pyarrow raise many parser error types
        raise InputError(
            f"cannot read table {path}: {exc}", hint="check that it is a valid CSV or parquet file"
        ) from None
    raise InputError(f"unsupported table format: {path}", hint="use .csv, .tsv or .parquet")


def table_targets(tiles, config: LabelConfig) -> TableTargets:
    """The table's target columns, one value per tile (joined by id or by nearest point)."""
    forced = tuple(config.categorical or ())
    table = read_table(config.table, config.id_column, forced)
    keys = [config.id_column] if config.id_column else [config.lon_column, config.lat_column]
    missing = [k for k in keys if k not in table.columns]
    if missing:
        raise InputError(
            f"{config.table} has no column {', '.join(repr(m) for m in missing)}",
            hint=f"its columns are: {', '.join(map(str, table.columns))}",
        )
    named = config.columns is not None and len(config.columns) > 0
    unknown = [c for c in (*(config.columns or ()), *forced) if c not in table.columns]
    if unknown:
        raise InputError(
            f"{config.table} has no column {', '.join(map(repr, dict.fromkeys(unknown)))}",
            hint=f"its columns are: {', '.join(map(str, table.columns))}",
        )
    if named:
        candidates = list(dict.fromkeys((*config.columns, *forced)))
    else:
        skip = {config.id_column, config.lon_column, config.lat_column, *RESERVED}
        candidates = [c for c in table.columns if c not in skip or c in forced]
    text_rows = config.table.suffix.lower() != ".parquet" and config.table.suffix.lower() != ".pq"
    value_cols, categorical, skipped = [], [], {}
    for c in candidates:
        if c in forced:
            kind, values = "categorical", as_classes(table[c])
        else:
            kind, values = type_column(table[c], str(c), config.table, text_rows)
        if kind == "categorical" and not named and c not in forced:
            reason = _not_a_class_column(values)
            if reason:
                skipped[str(c)] = reason
                continue
        if not TARGET_NAME.match(str(c)) or c in RESERVED:
            raise UsageProblem(f"table column {c!r} cannot be a target name", hint="rename it, or choose --columns")
        table[c] = values
        value_cols.append(c)
        if kind == "categorical":
            categorical.append(str(c))
    warnings = [
        f"text column {name!r} of {config.table} is not a target: {why}; name it with --columns to take it anyway"
        for name, why in skipped.items()
    ]
    if not value_cols:
        left_out = f"; left out as not class-like: {', '.join(map(repr, skipped))}" if skipped else ""
        raise InputError(
            f"{config.table} has no columns to use as targets{left_out}",
            hint="name the columns to take with --columns, e.g. --columns landuse",
        )
    join = _join_by_id if config.id_column else _join_nearest
    columns, counts = join(tiles, table, config, value_cols, set(categorical))
    return TableTargets(columns, categorical, counts, warnings, skipped)


def type_column(col: pd.Series, name: str, path: Path, text_rows: bool = True) -> tuple[str, pd.Series]:
    """("numeric", float64 values) or ("categorical", str/None values); an error if it mixes numbers and text."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(col) or (
        pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_complex_dtype(col)
    ):
        return "numeric", col.astype(np.float64)
    cells = pd.Series([_cell(v) for v in col.to_numpy(dtype=object)], index=col.index, dtype=object)
    present = cells.notna().to_numpy()
    numbers = pd.to_numeric(cells, errors="coerce").astype(np.float64)
    is_number = present & numbers.notna().to_numpy()
    is_text = present & ~is_number
    if not is_text.any():
        return "numeric", numbers
    if not is_number.any():
        return "categorical", cells
    where = "line" if text_rows else "row"

    def example(mask: np.ndarray) -> str:
        i = int(np.flatnonzero(mask)[0])
        return f"{cells.iloc[i]!r} ({where} {i + 2 if text_rows else i + 1})"

    raise InputError(
        f"column {name!r} of {path} mixes numbers and text: {int(is_number.sum())} number(s) such as "
        f"{example(is_number)} and {int(is_text.sum())} text cell(s) such as {example(is_text)}",
        hint="a target column holds numbers (a numeric target) or text (class names), not both: fix those cells "
        "or leave them empty, or pick other columns with --columns",
    )


def as_classes(col: pd.Series) -> pd.Series:
    """Every cell as a class name: text as written, numbers as their shortest form (11.0 is "11")."""
    import pandas as pd

    def name(value) -> str | None:
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        return _cell(value)

    return pd.Series([name(v) for v in col.to_numpy(dtype=object)], index=col.index, dtype=object)


def _cell(value) -> str | None:
    """A cell's text without surrounding spaces; None when it is missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):  # lists and arrays in a parquet cell
        pass
    text = str(value).strip()
    return None if text.lower() in MISSING_MARKERS else text


def _not_a_class_column(values: pd.Series) -> str | None:
    """Why a text column that nobody named looks like ids, names or free text rather than classes."""
    present = values.dropna()
    n_classes = int(present.nunique())
    if n_classes > MAX_AUTO_CLASSES:
        return f"{n_classes:,} distinct values (more than {MAX_AUTO_CLASSES:,})"
    if n_classes > 1 and 2 * n_classes > len(present):
        return f"{n_classes:,} distinct values in {len(present):,} rows, so most classes would have one example"
    return None


def _merge(table, keys, value_cols, categorical: set, dup: str):
    """One row per key (rows sharing an id or a point); numbers by mean or first, classes by majority or first.

    Returns (frame indexed by key in order of first appearance, {class column: keys whose rows disagree}).
    """
    import pandas as pd

    index = pd.Index(pd.unique(keys))
    numeric = [c for c in value_cols if c not in categorical]
    merged = pd.DataFrame(index=index)
    if numeric:
        grouped = table[numeric].groupby(keys, sort=False)
        merged = merged.join(grouped.mean() if dup == "mean" else grouped.first())
    conflicts = {}
    for c in value_cols:
        if c not in categorical:
            continue
        pairs = pd.DataFrame({"key": keys.to_numpy(), "cls": table[c].to_numpy(dtype=object)}).dropna()
        if dup == "first":
            chosen = pairs.drop_duplicates("key", keep="first")
        else:  # the most common class; a tie goes to the smallest name
            sizes = pairs.groupby(["key", "cls"], sort=False).size().rename("n").reset_index()
            chosen = sizes.sort_values(["key", "n", "cls"], ascending=[True, False, True]).drop_duplicates("key")
        merged[c] = pd.Series(chosen["cls"].to_numpy(dtype=object), index=chosen["key"].to_numpy()).reindex(index)
        conflicts[c] = int((pairs.groupby("key")["cls"].nunique() > 1).sum())
    return merged[list(value_cols)], conflicts


def _values(frame, c, categorical: set) -> np.ndarray:
    if c in categorical:
        col = frame[c].to_numpy(dtype=object)
        return np.asarray([v if isinstance(v, str) else None for v in col], dtype=object)
    return frame[c].to_numpy(np.float64)


def _join_by_id(tiles, table, config: LabelConfig, value_cols, categorical: set):
    ids = table[config.id_column].astype(str).str.strip()
    merged, conflicts = _merge(table, ids, value_cols, categorical, config.dup)
    duplicates = int(len(table) - len(merged))
    aligned = merged.reindex(tiles["tile_id"].astype(str))
    matched = int(aligned.index.isin(merged.index).sum())
    if matched == 0:
        raise InputError(
            f"no tile id appears in column {config.id_column!r} of {config.table}",
            hint=f"tile ids look like {tiles['tile_id'].iloc[0]!r}, the table's like "
            f"{ids.iloc[0] if len(ids) else None!r}; "
            "or join by location (omit --id-column)",
        )
    counts = {
        "table_unmatched_tiles": len(tiles) - matched,
        "table_duplicate_rows": duplicates,
        "table_unused_rows": int(len(merged) - matched),
        **{f"table_conflicts_{c}": n for c, n in conflicts.items()},
    }
    return {str(c): _values(aligned, c, categorical) for c in value_cols}, counts


def _join_nearest(tiles, table, config: LabelConfig, value_cols, categorical: set):
    import pandas as pd
    from sklearn.neighbors import BallTree

    coords = [config.lat_column, config.lon_column]
    table[coords] = table[coords].apply(pd.to_numeric, errors="coerce")
    table = table.dropna(subset=coords).reset_index(drop=True)
    # rows at the same point are duplicates: merge them like duplicate ids
    keys = table.groupby(coords, sort=False).ngroup()
    merged, conflicts = _merge(table, keys, value_cols, categorical, config.dup)
    duplicates = len(table) - len(merged)
    points = table.groupby(keys, sort=False)[coords].first().reindex(merged.index).to_numpy(np.float64)
    if len(points) == 0:
        raise InputError(
            f"{config.table} has no rows with numeric {config.lon_column}/{config.lat_column}",
            hint="or join by id with --id-column",
        )
    lonlat = tiles[["lat", "lon"]].to_numpy(np.float64)
    located = np.isfinite(lonlat).all(axis=1)
    if not located.any():
        raise InputError(
            "the tiles have no lon/lat to join by location",
            hint="join by id with --id-column, or tile with --locations",
        )
    if config.max_distance is not None:
        limits = np.full(len(tiles), config.max_distance)
    else:
        limits = tiles["ground_w"].to_numpy(np.float64) / 2
        if not np.isfinite(limits[located]).any():
            raise UsageProblem(
                "tiles have no ground sample distance to size the search", hint="pass --max-distance METRES"
            )
    tree = BallTree(np.radians(points), metric="haversine")
    dist, idx = tree.query(np.radians(lonlat[located]), k=1)
    dist_m = np.full(len(tiles), np.inf)
    nearest = np.zeros(len(tiles), np.int64)
    dist_m[located], nearest[located] = dist[:, 0] * geo.EARTH_RADIUS_M, idx[:, 0]
    hit = located & (dist_m <= limits)
    values = {}
    for c in value_cols:
        source = _values(merged, c, categorical)
        col = np.full(len(tiles), None, dtype=object) if c in categorical else np.full(len(tiles), np.nan)
        col[hit] = source[nearest[hit]]
        values[str(c)] = col
    counts = {
        "table_no_location": int((~located).sum()),
        "table_too_far": int((located & ~hit).sum()),
        "table_duplicate_rows": duplicates,
        **{f"table_conflicts_{c}": n for c, n in conflicts.items()},
    }
    return values, counts
