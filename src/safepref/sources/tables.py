"""Reading tabular files row by row with a location for every row (``file:line`` or ``file:row N``).

Supported: ``.jsonl``, ``.json`` (a list of objects), ``.csv``, ``.parquet``, ``.jsonl.gz``. A folder is read
file by file in name order.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safepref.errors import DataError

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".jsonl.gz")


def iter_rows(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(location, row)``; raises DataError naming the file (and line) for unreadable input:
    missing or unreadable files, invalid UTF-8, broken gzip or parquet, JSON nested too deep."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"file not found: {path}")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES))
        if not files:
            raise DataError(f"{path}: folder holds no {', '.join(SUFFIXES)} file")
        for file in files:
            yield from iter_rows(file)
        return
    try:
        yield from _file_rows(path)
    except DataError:
        raise
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to read") from None
    except OSError as exc:  # unreadable file, or not gzip at all (gzip.BadGzipFile)
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _file_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    name = path.name
    if name.endswith(".jsonl") or name.endswith(".jsonl.gz"):
        yield from jsonl_rows(path)
    elif name.endswith(".json"):
        try:
            data = json.loads(path.read_bytes().decode("utf-8-sig"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        if isinstance(data, dict):  # {"data": [...]} or {"train": [...]} style
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise DataError(f"{path}: expected a JSON list of objects")
            data = lists[0]
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of objects")
        for index, row in enumerate(data):
            if not isinstance(row, dict):
                raise DataError(f"{path}: item {index} is not a JSON object")
            yield f"{path}[{index}]", row
    elif name.endswith(".csv"):
        # utf-8-sig: a byte-order mark (Excel writes one) would otherwise become part of the first column name.
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                # DictReader's line_num is the physical line where the row ended
                yield f"{path}:{reader.line_num}", dict(row)
    elif name.endswith(".parquet"):
        yield from _parquet_rows(path)
    else:
        raise DataError(f"{path}: unsupported file type (known: {', '.join(SUFFIXES)})")


def jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows of a ``.jsonl`` or ``.jsonl.gz`` file; every error names the line. Bytes are decoded line by line
    so that invalid UTF-8 is reported where it is."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(f"{path}:{number}: not valid UTF-8 (byte {exc.start} of the line)") from None
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
                except RecursionError:
                    raise DataError(f"{path}:{number}: JSON nested too deeply to read") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
                yield f"{path}:{number}", row
    except (gzip.BadGzipFile, EOFError) as exc:
        raise DataError(f"{path}: not a valid gzip file ({exc})") from None


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a broken file
        raise DataError(f"{path}: not a readable parquet file ({type(exc).__name__}: {str(exc)[:120]})") from None
    for index, row in enumerate(table.to_pylist()):
        yield f"{path}:row {index}", row


def get_field(row: dict[str, Any], name: str, where: str, kind: type = str) -> Any:
    """``row[name]``, checked to be a non-empty ``kind``; raises DataError naming location and field."""
    if name not in row:
        raise DataError(f"{where}: missing field '{name}' (fields present: {', '.join(map(str, row))})")
    value = row[name]
    if not isinstance(value, kind) or (kind is str and not value.strip()):
        raise DataError(f"{where}: field '{name}' must be a non-empty {kind.__name__}, got {str(value)[:60]!r}")
    return value
