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
    """Yield ``(location, row)``; raises DataError naming the file (and line) for unreadable input."""
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
    name = path.name
    if name.endswith(".jsonl") or name.endswith(".jsonl.gz"):
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{number}: expected a JSON object")
                yield f"{path}:{number}", row
    elif name.endswith(".json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
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
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                # DictReader's line_num is the physical line where the row ended
                yield f"{path}:{reader.line_num}", dict(row)
    elif name.endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        for index, row in enumerate(table.to_pylist()):
            yield f"{path}:row {index}", row
    else:
        raise DataError(f"{path}: unsupported file type (known: {', '.join(SUFFIXES)})")


def get_field(row: dict[str, Any], name: str, where: str, kind: type = str) -> Any:
    """``row[name]``, checked to be a non-empty ``kind``; raises DataError naming location and field."""
    if name not in row:
        raise DataError(f"{where}: missing field '{name}' (fields present: {', '.join(map(str, row))})")
    value = row[name]
    if not isinstance(value, kind) or (kind is str and not value.strip()):
        raise DataError(f"{where}: field '{name}' must be a non-empty {kind.__name__}, got {str(value)[:60]!r}")
    return value
