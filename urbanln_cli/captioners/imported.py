"""Captions made elsewhere: read a JSONL, CSV or Parquet file and match its rows to tiles.

A file holds one caption per row (``caption``; in JSONL and Parquet a list of
strings is several rows), names its tile by ``tile_id`` (exactly as the tiles
artifact has it) or by ``image`` (a path relative to the tiled folder, a longer
path ending in one, or a file name; with or without extension), and may name
its ``model`` (default: the file's stem). No server and no image is touched:
``caption --import`` turns the matched rows into a normal captions artifact
(see ``stages.caption``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from urbanln_cli.config import suggest
from urbanln_cli.errors import InputError

FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
# extensions stripped from ``image`` values and tile sources when matching (a tile id never has one unless
# two files differ only by it, and then the id keeps it and matches as given)
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif", ".jp2", ".vrt"})
COLUMNS = ("caption", "tile_id", "image", "model")
EXAMPLES = 5  # unmatched rows named per file
FORMAT_HINT = (
    "one row per caption with a caption column and a tile_id or image column (optional model), "
    'e.g. {"image": "a.png", "caption": "..."} per line of a .jsonl file'
)


@dataclass
class Row:
    """One caption of a file, before matching."""

    line: int  # 1-based row (JSONL/CSV: line of the record; Parquet/JSON: position)
    tile_id: str | None
    image: str | None
    caption: str | None  # None: empty or missing
    model: str | None  # None: the file's default

    @property
    def named(self) -> str:
        """How the row names its tile, for messages: tile_id 'x' or image 'x.png'."""
        if self.tile_id is not None:
            return f"tile_id {self.tile_id!r}"
        if self.image is not None:
            return f"image {self.image!r}"
        return f"row {self.line} (no tile_id or image)"


@dataclass
class ImportFile:
    path: Path
    sha256: str
    format: str
    columns: list[str]
    rows: list[Row]
    # filled by match(): the tile of each row (None: unmatched, ambiguous or empty)
    tiles: list[str | None] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    unmatched_examples: list[str] = field(default_factory=list)

    @property
    def default_model(self) -> str:
        return self.path.stem

    @property
    def digest(self) -> str:
        """The 'model digest' of its captions: the file's sha256 prefix."""
        return self.sha256[:12]

    def summary(self) -> dict[str, Any]:
        """What the manifest records of the file."""
        return {
            "path": str(self.path),
            "stage": "import",
            "format": self.format,
            "sha256": self.sha256,
            "rows": len(self.rows),
            **self.counts,
            "unmatched_examples": self.unmatched_examples,
        }


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_file(path: Path | str) -> ImportFile:
    """Read and check one import file (no matching yet)."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(
            f"cannot import {path}: not a .jsonl, .csv, .tsv or .parquet file",
            hint="name the file after its format: .jsonl (one JSON object per line), .csv, .tsv or .parquet",
        )
    if not path.is_file():
        raise InputError(f"import file not found: {path}", hint="check the path given to --import")
    sha = sha256_file(path)
    try:
        records, columns = _READERS[fmt](path)
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})", hint="save it as UTF-8"
        ) from None
    if not records:
        raise InputError(f"{path} holds no captions", hint=FORMAT_HINT)
    if "caption" not in columns:
        raise InputError(
            f"{path} has no caption column{suggest('caption', columns)} (it has: {_names(columns)})", hint=FORMAT_HINT
        )
    if "tile_id" not in columns and "image" not in columns:
        near = suggest("image", columns) or suggest("tile_id", columns)
        raise InputError(
            f"{path} has neither a tile_id nor an image column{near} (it has: {_names(columns)})", hint=FORMAT_HINT
        )
    rows = [row for line, record in records for row in _rows(path, line, record)]
    if not rows:
        raise InputError(f"{path} holds no captions", hint=FORMAT_HINT)
    return ImportFile(path, sha, fmt, sorted(columns), rows)


def _names(columns: Iterable[str]) -> str:
    names = sorted(columns)
    return ", ".join(names[:12]) + (f", … ({len(names)} in all)" if len(names) > 12 else "") if names else "no columns"


def _text(value: Any) -> str | None:
    """A cell as text; None for missing, empty or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = value.strip() if isinstance(value, str) else str(value).strip()
    return text or None


def _rows(path: Path, line: int, record: dict[str, Any]) -> Iterator[Row]:
    tile_id, image, model = _text(record.get("tile_id")), _text(record.get("image")), _text(record.get("model"))
    caption = record.get("caption")
    if isinstance(caption, (list, tuple)):  # several captions of one tile in one record
        if not caption:
            yield Row(line, tile_id, image, None, model)
        for item in caption:
            yield Row(line, tile_id, image, _text(item), model)
    elif isinstance(caption, dict):
        raise InputError(f"{path}, row {line}: caption is a JSON object, not text", hint=FORMAT_HINT)
    else:
        yield Row(line, tile_id, image, _text(caption), model)


def _read_jsonl(path: Path) -> tuple[list[tuple[int, dict]], set[str]]:
    records, columns = [], set()
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}, line {n}: not valid JSON ({exc.msg})", hint=FORMAT_HINT) from None
            if not isinstance(record, dict):
                raise InputError(f"{path}, line {n}: a JSON {type(record).__name__}, not an object", hint=FORMAT_HINT)
            records.append((n, record))
            columns.update(record)
    return records, columns


def _read_json(path: Path) -> tuple[list[tuple[int, dict]], set[str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # several objects, one per line: JSON Lines named .json
            return _read_jsonl(path)
        raise InputError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})", hint=FORMAT_HINT) from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise InputError(f"{path} is not a JSON list of objects", hint=FORMAT_HINT)
    return list(enumerate(data, 1)), {k for r in data for k in r}


def _read_csv(path: Path, delimiter: str = ",") -> tuple[list[tuple[int, dict]], set[str]]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long captions
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        columns = set(reader.fieldnames or ())
        try:
            records = [(reader.line_num, row) for row in reader]
        except csv.Error as exc:
            raise InputError(f"{path}, line {reader.line_num}: {exc}", hint=FORMAT_HINT) from None
    return records, columns


def _read_tsv(path: Path) -> tuple[list[tuple[int, dict]], set[str]]:
    return _read_csv(path, "\t")


def _read_parquet(path: Path) -> tuple[list[tuple[int, dict]], set[str]]:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
        wanted = [c for c in COLUMNS if c in schema.names]
        table = pq.read_table(path, columns=wanted)
    except Exception as exc:  # pyarrow raises several types for files that are not Parquet
        raise InputError(
            f"cannot read {path} as Parquet: {exc}", hint="check the file, or export it as .jsonl or .csv"
        ) from None
    return list(enumerate(table.to_pylist(), 1)), set(schema.names)


_READERS = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv, "tsv": _read_tsv, "parquet": _read_parquet}


# ---------------------------------------------------------------- matching


def _norm(path: str) -> str:
    """A path as a matching key: forward slashes, no leading ./ or /."""
    parts = [p for p in path.strip().replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts)


def strip_suffix(path: str) -> str:
    """``path`` without an image extension (other dots are part of the name)."""
    suffix = PurePosixPath(path).suffix
    return path[: -len(suffix)] if suffix.lower() in IMAGE_SUFFIXES else path


def id_as_given(row: Row) -> str | None:
    """The tile id of a row when there are no tiles to match: tile_id, or image without its extension."""
    if row.tile_id is not None:
        return row.tile_id
    return strip_suffix(_norm(row.image)) if row.image is not None else None


AMBIGUOUS = object()


class TileIndex:
    """Tile ids and the names of their image files, for matching ``image`` values.

    Each tile answers to its id, its path inside the tiled folder (the id without
    the folder's name), and its source file's path and name, each with and without
    extension. A name that two tiles answer to (a raster's file name; twin file
    names in two subfolders) matches neither.
    """

    def __init__(self, tile_ids: list[str], sources: list[str | None]):
        self.ids = set(tile_ids)
        self.examples = tile_ids[:1]
        keys: dict[str, Any] = {}
        for tile_id, source in zip(tile_ids, sources):
            names = {_norm(tile_id)}
            _, sep, inside = tile_id.partition("/")
            if sep:
                names.add(_norm(inside))
            if source:
                src = _norm(source)
                names |= {src, PurePosixPath(src).name}
            for name in list(names):
                names.add(strip_suffix(name))
            for name in names:
                if name:
                    keys[name] = tile_id if keys.get(name, tile_id) == tile_id else AMBIGUOUS
        self.keys = keys

    def match(self, row: Row) -> tuple[str | None, str]:
        """(tile id, how): how is 'tile_id', 'image', 'unmatched' or 'ambiguous'."""
        if row.tile_id is not None:
            return (row.tile_id, "tile_id") if row.tile_id in self.ids else (None, "unmatched")
        if row.image is None:
            return None, "unmatched"
        parts = _norm(row.image).split("/")
        for i in range(len(parts)):  # the longest path first, then shorter endings of it
            tail = "/".join(parts[i:])
            for name in dict.fromkeys((tail, strip_suffix(tail))):
                hit = self.keys.get(name)
                if hit is AMBIGUOUS:
                    return None, "ambiguous"
                if hit is not None:
                    return hit, "image"
        return None, "unmatched"


def match(file: ImportFile, index: TileIndex | None) -> None:
    """Fill ``file.tiles`` and ``file.counts``; ``index`` None keeps the ids as given."""
    counts = dict.fromkeys(("matched", "unmatched", "ambiguous", "empty"), 0)
    tiles: list[str | None] = []
    for row in file.rows:
        if index is None:
            tile, how = id_as_given(row), "as_given"
            if tile is None:
                how = "unmatched"
        else:
            tile, how = index.match(row)
        if how in ("unmatched", "ambiguous"):
            counts[how] += 1
            if len(file.unmatched_examples) < EXAMPLES and row.named not in file.unmatched_examples:
                file.unmatched_examples.append(row.named)
            tiles.append(None)
        elif row.caption is None:
            counts["empty"] += 1
            tiles.append(None)
        else:
            counts["matched"] += 1
            counts[f"by_{how}"] = counts.get(f"by_{how}", 0) + 1
            tiles.append(tile)
    file.tiles, file.counts = tiles, counts
