"""The on-disk side of a generation run: whose folder it is, which shards are really done, and cleanup.

A run folder holds ``config.json`` (its marker: ``"written_by": "safepref generate"``), ``shards/`` with
``shard-NNNNN.jsonl`` plus a ``shard-NNNNN.done.json`` marker each, ``responses.jsonl`` and ``summary.json``.
Only these files are ever deleted, and only in a folder whose ``config.json`` is such a marker: a folder that
safepref did not write (a checkpoint, the user's notes) is never touched, even with ``overwrite``.

A done-marker records its shard's row count and sha256. On resume a marker is trusted only when its shard
is still there with that count and hash; otherwise (shard deleted, edited, truncated; marker corrupt) the
shard and its marker are removed and its prompts generated again, with a warning naming the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safepref.errors import DataError, SafeprefError
from safepref.paths import check_output_dir

log = logging.getLogger(__name__)

MARKER = "safepref generate"
# Entries of a run folder that a fresh run may find already there: the openai backend's request cache is
# created beside the run (``--out DIR`` -> ``DIR/api_cache``) before the run starts.
_PRESTART_ENTRIES = {"api_cache"}
_RUN_FILES = ("config.json", "responses.jsonl", "summary.json")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_marker(config_file: Path) -> dict[str, Any] | None:
    """The run marker in ``config_file``, or None when the file is not one of ours."""
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        data = None
    if not isinstance(data, dict):
        # A broken config.json beside our own done-markers is a run of ours whose settings are unknown.
        if config_file.exists() and any((config_file.parent / "shards").glob("shard-*.done.json")):
            return {"hash": None, "corrupt": True}
        return None
    # Runs written before the marker field existed are recognised by their keys.
    if data.get("written_by") == MARKER or {"hash", "generation", "backend", "num_prompts"} <= set(data):
        return data
    return None


def check_out_dir(out_dir: str | Path) -> None:
    """Refuse an output that cannot hold a run, before any model is loaded: a file, a folder that safepref
    did not write, or a place that cannot be written. Raises SafeprefError (one line)."""
    out = Path(out_dir)
    check_output_dir(out)
    if out.is_dir():
        foreign = [p.name for p in out.iterdir() if p.name not in _PRESTART_ENTRIES]
        if foreign and _read_marker(out / "config.json") is None:
            raise SafeprefError(
                f"{out} is not empty and holds no safepref generation run (no generation config.json; found "
                f"{', '.join(sorted(foreign)[:3])}{' ...' if len(foreign) > 3 else ''}); it is never "
                "overwritten: choose another --out")


def prepare(out: Path, run_hash: str, overwrite: bool) -> None:
    """Make ``out`` ready for the run ``run_hash``: keep a matching run (resume), refuse or clear a different
    one (only its own files), refuse anything else."""
    check_out_dir(out)
    previous = _read_marker(out / "config.json")
    if previous is None or previous.get("hash") == run_hash:
        return
    if not overwrite and previous.get("corrupt"):
        raise SafeprefError(f"{out / 'config.json'} is not a readable generation config, so it is unknown which "
                            "settings made the shards beside it: pass --overwrite to start this run again "
                            "(deletes only the run's own files)")
    if not overwrite:
        raise SafeprefError(
            f"{out} holds a generation run with other settings, model or prompts (hash {previous.get('hash')} "
            f"!= {run_hash}); choose another --out or pass --overwrite")
    remove_run_files(out)


def remove_run_files(out: Path) -> None:
    """Delete what a generation run wrote into ``out`` and nothing else."""
    shard_dir = out / "shards"
    if shard_dir.is_dir():
        for path in shard_dir.glob("shard-*"):
            if path.name.endswith((".jsonl", ".done.json")):
                path.unlink()
        for path in shard_dir.glob(".shard-*.tmp"):  # a crashed atomic write's leftovers
            path.unlink()
        if not any(shard_dir.iterdir()):
            shard_dir.rmdir()
    for name in _RUN_FILES:
        (out / name).unlink(missing_ok=True)


def write_marker(out: Path, data: dict[str, Any]) -> None:
    from safepref.records import write_json

    write_json(out / "config.json", {"written_by": MARKER, **data})


@dataclass
class DoneShards:
    """What the valid done-markers of a run say."""

    prompt_ids: set[str] = field(default_factory=set)
    dropped: Counter = field(default_factory=Counter)
    shards: list[Path] = field(default_factory=list)  # shard files that are done and intact
    redone: list[str] = field(default_factory=list)  # shard names found broken and removed
    next_index: int = 0


def shard_problem(shard: Path, info: Any) -> str | None:
    """Why ``shard`` does not match its done-marker ``info``, or None when it does."""
    if not isinstance(info, dict) or not isinstance(info.get("prompt_ids"), list) \
            or not isinstance(info.get("dropped", {}), dict):
        return "its done-marker is malformed"
    if not shard.exists():
        return "the shard file is missing"
    if "sha256" in info:
        if file_sha256(shard) != info["sha256"]:
            return "the shard's content differs from the sha256 in its done-marker"
        return None
    # Markers written before rows/sha256 were recorded: the shard must at least read back whole.
    from safepref.records import read_records

    try:
        read_records(shard, "response")
    except DataError as exc:
        return str(exc)
    return None


def load_done(shard_dir: Path) -> DoneShards:
    """Read the done-markers, dropping (and deleting) every shard whose file does not match its marker."""
    done = DoneShards()
    for marker in sorted(shard_dir.glob("shard-*.done.json")):
        name = marker.name[: -len(".done.json")]
        done.next_index = max(done.next_index, _index(name) + 1)
        shard = shard_dir / f"{name}.jsonl"
        try:
            info: Any = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            info = None
        problem = shard_problem(shard, info)
        if problem is not None:
            log.warning("generation: %s is redone: %s", shard, problem)
            shard.unlink(missing_ok=True)
            marker.unlink()
            done.redone.append(name)
            continue
        done.prompt_ids.update(info["prompt_ids"])
        done.dropped.update(info.get("dropped", {}))
        done.shards.append(shard)
    return done


def _index(name: str) -> int:
    try:
        return int(name.split("-")[1])
    except (IndexError, ValueError):
        return -1


def finish_shard(shard_dir: Path, index: int, rows: list[Any], prompt_ids: list[str],
                 dropped: Counter) -> Path:
    """Write one shard, then its done-marker holding the shard's row count and sha256."""
    from safepref.records import write_json, write_jsonl

    shard = shard_dir / f"shard-{index:05d}.jsonl"
    count = write_jsonl(shard, rows)
    write_json(shard_dir / f"shard-{index:05d}.done.json",
               {"prompt_ids": prompt_ids, "dropped": dict(dropped), "rows": count,
                "sha256": file_sha256(shard)})
    return shard
