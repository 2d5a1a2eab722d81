"""Record types that flow between stages, and their JSONL I/O.

Three records, all plain JSON objects on disk (one per line):

- ``Prompt``: a prompt and where it came from.
- ``Response``: one answer to a prompt, with its provenance (which model or dataset, which generation
  settings, which sample) and a reward ``score`` once scored.
- ``PreferencePair``: TRL's conversational preference format (``prompt``, ``chosen``, ``rejected`` as
  message lists, the prompt holding the user turn, each side holding the assistant turn) plus provenance of
  each side (``chosen_meta`` / ``rejected_meta``) and the recipe that built it.

``prompt_id`` is a hash of the normalized prompt text (case-folded, whitespace collapsed, surrounding
quotes and punctuation kept), so that the same prompt matches across sources even when one copy has a
trailing space or different capitalisation. Records are matched by ``prompt_id``, never by raw string.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from safepref.errors import DataError

Message = dict[str, str]


def normalize_prompt(text: str) -> str:
    """The form used for matching: NFKC, case-folded, whitespace collapsed, stripped."""
    text = unicodedata.normalize("NFKC", text)
    return re.sub(r"\s+", " ", text).strip().casefold()


def prompt_id(text: str) -> str:
    """Stable 16-hex-digit id of a prompt's normalized text."""
    return hashlib.sha256(normalize_prompt(text).encode("utf-8")).hexdigest()[:16]


@dataclass
class Prompt:
    text: str
    source: str
    prompt_id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.prompt_id:
            self.prompt_id = prompt_id(self.text)


@dataclass
class Response:
    """One answer. ``source`` says where it came from:

    ``{"kind": "model", "name": <model id or path>, "backend": "hf", "generation": {...}}`` or
    ``{"kind": "dataset", "name": "pku-saferlhf", "field": "safer"}``.
    """

    prompt: str
    response: str
    source: dict[str, Any]
    prompt_id: str = ""
    sample_index: int = 0
    score: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.prompt_id:
            self.prompt_id = prompt_id(self.prompt)

    @property
    def source_name(self) -> str:
        return str(self.source.get("name", "?"))


@dataclass
class PreferencePair:
    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]
    chosen_meta: dict[str, Any] = field(default_factory=dict)  # {"source": {...}, "score": ..., ...}
    rejected_meta: dict[str, Any] = field(default_factory=dict)
    prompt_id: str = ""
    recipe: str = ""

    def __post_init__(self) -> None:
        if not self.prompt_id:
            self.prompt_id = prompt_id(self.prompt_text)

    @property
    def prompt_text(self) -> str:
        return self.prompt[-1]["content"]

    @property
    def chosen_text(self) -> str:
        return self.chosen[-1]["content"]

    @property
    def rejected_text(self) -> str:
        return self.rejected[-1]["content"]

    @classmethod
    def from_responses(cls, chosen: Response, rejected: Response, recipe: str) -> PreferencePair:
        """A pair from two answers to the same prompt; provenance and scores are carried over."""
        if chosen.prompt_id != rejected.prompt_id:
            raise ValueError(f"responses answer different prompts: {chosen.prompt_id} != {rejected.prompt_id}")
        return cls(
            prompt=[{"role": "user", "content": chosen.prompt}],
            chosen=[{"role": "assistant", "content": chosen.response}],
            rejected=[{"role": "assistant", "content": rejected.response}],
            chosen_meta=_side_meta(chosen),
            rejected_meta=_side_meta(rejected),
            prompt_id=chosen.prompt_id,
            recipe=recipe,
        )


def _side_meta(response: Response) -> dict[str, Any]:
    return {"source": response.source, "sample_index": response.sample_index, "score": response.score}


RECORD_TYPES: dict[str, type] = {"prompt": Prompt, "response": Response, "pair": PreferencePair}


def to_dict(record: Any) -> dict[str, Any]:
    return asdict(record)


def from_dict(kind: str, obj: dict[str, Any], where: str) -> Any:
    """Build a record of ``kind`` from a JSON object; raises DataError naming ``where`` and the field."""
    cls = RECORD_TYPES[kind]
    required = [n for n, f in cls.__dataclass_fields__.items() if _is_required(f)]
    missing = [n for n in required if n not in obj]
    if missing:
        raise DataError(f"{where}: {kind} record lacks field(s) {', '.join(missing)}")
    known = {k: v for k, v in obj.items() if k in cls.__dataclass_fields__}
    # Types are checked before the record is built: its __post_init__ hashes the prompt text.
    for name, expected in _FIELD_TYPES[kind].items():
        if name in known and not isinstance(known[name], expected):
            wanted = " or ".join(t.__name__ for t in expected) if isinstance(expected, tuple) else \
                expected.__name__
            raise DataError(f"{where}: field '{name}' must be a {wanted}, got {type(known[name]).__name__} "
                            f"{repr(known[name])[:60]}")
    if kind == "pair":
        for side in ("prompt", "chosen", "rejected"):
            _check_messages(known[side], f"{where}: field '{side}'")
    return cls(**known)


# What each record's fields must hold (JSON types), checked by ``from_dict``.
_FIELD_TYPES: dict[str, dict[str, type | tuple[type, ...]]] = {
    "prompt": {"text": str, "source": str, "prompt_id": str, "meta": dict},
    "response": {"prompt": str, "response": str, "source": dict, "prompt_id": str, "sample_index": int,
                 "score": (int, float, type(None)), "meta": dict},
    "pair": {"chosen_meta": dict, "rejected_meta": dict, "prompt_id": str, "recipe": str},
}


def _is_required(f: Any) -> bool:
    from dataclasses import MISSING

    return f.default is MISSING and f.default_factory is MISSING


def _check_messages(messages: Any, where: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where} must be a non-empty list of messages")
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DataError(f"{where}: each message needs 'role' and 'content', got {str(m)[:80]!r}")
        if not isinstance(m["content"], str):
            raise DataError(f"{where}: message content must be a string")


# ---------------------------------------------------------------------------------------------- JSONL I/O


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)``; blank lines are skipped. Raises DataError naming file and line (also
    for invalid UTF-8, JSON nested too deep, and files that cannot be read)."""
    from safepref.sources.tables import jsonl_rows

    path = Path(path)
    if not path.exists():
        raise DataError(f"file not found: {path}")
    if path.is_dir():
        raise DataError(f"{path} is a folder; a .jsonl file is needed here")
    try:
        for where, obj in jsonl_rows(path):
            yield int(where.rsplit(":", 1)[1]), obj
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_records(path: str | Path, kind: str) -> list[Any]:
    """Read a JSONL file of ``kind`` records (``prompt``, ``response`` or ``pair``)."""
    records = [from_dict(kind, obj, f"{path}:{n}") for n, obj in iter_jsonl(path)]
    return records


def read_pairs(path: str | Path) -> list[PreferencePair]:
    """Read a preference-pair file; raises DataError when it is empty or a row is malformed."""
    pairs = read_records(path, "pair")
    if not pairs:
        raise DataError(f"{path}: no preference pairs in file")
    return pairs


@contextmanager
def _atomic_writer(path: str | Path) -> Iterator[TextIO]:
    """A text handle on a temp file beside ``path``, renamed over it on success: a crash never leaves half a
    file. The file gets the permissions a plain ``open`` would (mkstemp's are owner-only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask can only be read by setting it


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> int:
    """Write records or dicts as JSONL atomically."""
    count = 0
    with _atomic_writer(path) as handle:
        for row in rows:
            obj = row if isinstance(row, dict) else to_dict(row)
            handle.write(json.dumps(finite_json(obj), ensure_ascii=False, allow_nan=False) + "\n")
            count += 1
    return count


def read_json(path: str | Path, kind: type = dict, missing_ok: bool = False) -> Any:
    """A JSON document (as ``write_json`` writes them) that must hold a ``kind``; None when ``missing_ok`` and
    the file does not exist. Raises DataError naming the file for anything unreadable (corrupt, truncated,
    nested too deep, not UTF-8, a list where a mapping belongs)."""
    path = Path(path)
    if not path.exists():
        if missing_ok:
            return None
        raise DataError(f"file not found: {path}")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); delete or restore the file") from None
    except (UnicodeDecodeError, RecursionError) as exc:
        raise DataError(f"{path}: not readable JSON ({type(exc).__name__})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not isinstance(data, kind):
        raise DataError(f"{path}: expected a JSON {'object' if kind is dict else kind.__name__}, "
                        f"got {type(data).__name__}")
    return data


def finite_json(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None: strict JSON (NaN is not JSON; other readers reject
    it), a missing value read back as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    """Write one JSON document atomically, strict JSON (non-finite floats written as null)."""
    with _atomic_writer(path) as handle:
        json.dump(finite_json(obj), handle, indent=2, ensure_ascii=False, default=str, allow_nan=False)
        handle.write("\n")


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    with _atomic_writer(path) as handle:
        handle.write(text)


def pairs_to_dataset(pairs: list[PreferencePair], keep_meta: bool = False):  # -> datasets.Dataset
    """TRL-ready ``datasets.Dataset`` with ``prompt``/``chosen``/``rejected`` message lists.

    Provenance columns are dropped by default because TRL's collator does not need them; pass
    ``keep_meta=True`` to keep ``prompt_id`` (e.g. for grouped splits).
    """
    from datasets import Dataset

    columns: dict[str, list[Any]] = {"prompt": [], "chosen": [], "rejected": []}
    if keep_meta:
        columns["prompt_id"] = []
    for pair in pairs:
        columns["prompt"].append(pair.prompt)
        columns["chosen"].append(pair.chosen)
        columns["rejected"].append(pair.rejected)
        if keep_meta:
            columns["prompt_id"].append(pair.prompt_id)
    return Dataset.from_dict(columns)
