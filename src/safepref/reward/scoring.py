"""``safepref rm score``: add a reward score to each answer of a responses file, resumably.

Work goes in chunks of ``chunk`` answers. Each finished chunk is a shard ``<out>/shards/NNNNN.jsonl`` with a
done-marker ``NNNNN.done.json`` (rows, sha256 of the shard); ``<out>/shards/run.json`` holds the key of the
run (reward model, input file hash, chunk). A rerun after an interruption reuses every shard whose marker
matches its file and scores the rest; a shard that does not match its marker (deleted, truncated, edited) is
scored again. The folder ``<out>`` then gets ``responses.jsonl`` and ``summary.json``, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safepref.errors import ConfigError, DataError
from safepref.records import Response, iter_jsonl, write_json, write_jsonl


@dataclass
class ScoreConfig:
    rm: str
    responses: str
    out: str
    chunk: int = 512
    device: str = "auto"


def check_score_out(out: Path, chunk: int) -> None:
    """Fail before any model loads: ``--chunk`` < 1, ``--out`` a file, or a folder that cannot be written."""
    if chunk < 1:
        raise ConfigError(f"--chunk must be >= 1, got {chunk}")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for responses.jsonl and summary.json")
    try:
        (out / "shards").mkdir(parents=True, exist_ok=True)
        probe = out / "shards" / ".write-probe"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None


def read_responses(spec: str) -> tuple[list[Response], dict[str, Any], str]:
    """(records, load report, sha256 of the input) from a responses file, generate's folder, or a source spec.

    A prompt or response that is not text is a DataError naming the file, line and field.
    """
    from safepref.records import read_records
    from safepref.sources import load_responses

    path = Path(spec)
    if path.is_dir() and (path / "responses.jsonl").exists():
        path = path / "responses.jsonl"
    if path.is_file() and path.name.endswith(".jsonl"):
        rows = list(iter_jsonl(path))
        if rows and isinstance(rows[0][1].get("source"), dict):
            for line, obj in rows:
                for name in ("prompt", "response"):
                    if not isinstance(obj.get(name), str):
                        raise DataError(f"{path}:{line}: field '{name}' must be a string, got "
                                        f"{type(obj.get(name)).__name__}")
            records = read_records(path, "response")
            if not records:
                raise DataError(f"{path}: no responses in file")
            return records, {"path": str(path), "rows": len(records)}, _sha256(path)
    records, report = load_responses(spec)
    for i, record in enumerate(records):
        for name in ("prompt", "response"):
            if not isinstance(getattr(record, name), str):
                raise DataError(f"{spec}: row {i + 1}: field '{name}' must be a string")
    digest = hashlib.sha256("\n".join(f"{r.prompt_id}\0{r.response}" for r in records).encode()).hexdigest()
    return records, report.as_dict(), digest


def score_responses(config: ScoreConfig) -> dict[str, Any]:
    """Score every answer, resuming from finished shards; returns the summary (also in summary.json)."""
    from safepref.reward import load_reward_model

    out = Path(config.out)
    check_score_out(out, config.chunk)
    responses, source, digest = read_responses(config.responses)
    shards = out / "shards"
    key = {"rm": config.rm, "input_sha256": digest, "chunk": config.chunk, "rows": len(responses)}
    _check_run_key(shards, key)
    rm = load_reward_model(config.rm, device=config.device)
    start = time.perf_counter()
    reused = 0
    scores: list[float] = []
    for index, begin in enumerate(range(0, len(responses), config.chunk)):
        part = responses[begin:begin + config.chunk]
        done = _read_shard(shards, index, len(part))
        if done is None:
            done = [float(v) for v in rm.score([r.prompt for r in part], [r.response for r in part])]
            _write_shard(shards, index, done)
        else:
            reused += 1
        scores.extend(done)
    seconds = time.perf_counter() - start
    for response, value in zip(responses, scores, strict=True):
        response.score = value
        response.meta["score_rm"] = rm.name
    write_jsonl(out / "responses.jsonl", responses)
    summary = {"rm": config.rm, "rm_name": rm.name, "responses": config.responses, "source": source,
               "count": len(scores), "mean": sum(scores) / len(scores), "min": min(scores), "max": max(scores),
               "chunks": -(-len(responses) // config.chunk), "chunks_reused": reused,
               "seconds": round(seconds, 2), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json(out / "summary.json", summary)
    return summary


def _check_run_key(shards: Path, key: dict[str, Any]) -> None:
    marker = shards / "run.json"
    if marker.exists():
        try:
            old = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old != key:
            raise ConfigError(f"{marker}: this folder holds scores of another run (another reward model, input or "
                              f"--chunk); give a new --out, or delete {shards} to start over")
    else:
        write_json(marker, key)


def _read_shard(shards: Path, index: int, rows: int) -> list[float] | None:
    """A finished shard's scores, or None when it is missing or does not match its marker."""
    shard, marker = shards / f"{index:05d}.jsonl", shards / f"{index:05d}.done.json"
    try:
        expected = json.loads(marker.read_text(encoding="utf-8"))
        if expected.get("rows") != rows or expected.get("sha256") != _sha256(shard):
            return None
        return [float(obj["score"]) for _, obj in iter_jsonl(shard)]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, DataError):
        return None


def _write_shard(shards: Path, index: int, scores: list[float]) -> None:
    shard = shards / f"{index:05d}.jsonl"
    write_jsonl(shard, [{"score": s} for s in scores])
    write_json(shards / f"{index:05d}.done.json", {"rows": len(scores), "sha256": _sha256(shard)})


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
