"""What ``train_dpo`` checks before any model is loaded (pairs, output folder, run identity), and the
token lengths it filters by, counted exactly as TRL's DPOTrainer tokenizes a pair."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safepref import config as cfg
from safepref.errors import ConfigError, DataError, SafeprefError
from safepref.records import PreferencePair, read_json
from safepref.train.dpo_config import NON_IDENTITY_FIELDS, DPOTrainConfig

# ------------------------------------------------------------------------------------------- input checks


@dataclass
class Inputs:
    """What ``check_inputs`` established, before any model is loaded."""

    pairs: list[PreferencePair]
    source: dict[str, Any]
    dropped: Counter
    identity: dict[str, Any]
    hash: str
    action: str  # fresh | overwrite | resume | done


def _load_pairs(pairs: Any) -> tuple[list[PreferencePair], dict[str, Any]]:
    from safepref.sources import load_pairs

    if isinstance(pairs, str | Path):
        records, report = load_pairs(str(pairs))
        return records, report.as_dict()
    records = list(pairs)
    if not records:
        raise DataError("no preference pairs given")
    for i, record in enumerate(records):
        if not isinstance(record, PreferencePair):
            raise DataError(f"pair {i}: expected a PreferencePair, got {type(record).__name__}")
    return records, {"source": "records", "rows": len(records), "kept": len(records), "dropped": {}}


def _usable(pairs: list[PreferencePair]) -> tuple[list[PreferencePair], Counter]:
    """Drop pairs that teach nothing: an empty side, or chosen identical to rejected."""
    kept, dropped = [], Counter()
    for pair in pairs:
        if not pair.chosen_text.strip() or not pair.rejected_text.strip():
            dropped["empty_side"] += 1
        elif pair.chosen_text.strip() == pair.rejected_text.strip():
            dropped["identical_sides"] += 1
        else:
            kept.append(pair)
    return kept, dropped


def data_fingerprint(pairs: list[PreferencePair]) -> str:
    digest = hashlib.sha256()
    for pair in pairs:
        digest.update(json.dumps([pair.prompt, pair.chosen, pair.rejected], ensure_ascii=False).encode())
    return digest.hexdigest()[:16]


def _portable_model_spec(model_spec: str) -> str:
    path = Path(model_spec).expanduser()
    return str(path.resolve()) if path.exists() else model_spec


def _identity(config: DPOTrainConfig, model_spec: str, pairs: list[PreferencePair]) -> dict[str, Any]:
    settings = config.resolved()
    for key in NON_IDENTITY_FIELDS:
        settings.pop(key, None)
    return {"config": settings, "model": _portable_model_spec(model_spec), "data": data_fingerprint(pairs),
            "pairs": len(pairs)}


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(_differences(a, b, f"{prefix}{key}."))
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def _decide(out: Path, identity: dict[str, Any], run_hash: str, overwrite: bool, resume: bool) -> str:
    """fresh | overwrite | resume | done, or SafeprefError when the folder holds something else."""
    if out.is_file():
        raise SafeprefError(f"output {out} is a file; give a folder")
    if not out.exists() or not any(out.iterdir()):
        return "fresh"
    run_file = out / "run.json"
    if not run_file.exists():
        # Never delete a folder safepref did not write, even with --overwrite.
        raise SafeprefError(f"{out} is not empty and holds no safepref training run; choose another --out")
    if overwrite:
        return "overwrite"
    previous = read_json(run_file)
    if previous.get("hash") != run_hash:
        changes = _differences(previous.get("identity", {}), identity)
        shown = "; ".join(changes[:6]) + (" ..." if len(changes) > 6 else "")
        raise SafeprefError(
            f"{out} holds a different training run (hash {previous.get('hash')} != {run_hash}; {shown}); "
            "--resume only continues the same run: choose another --out or pass --overwrite")
    summary = out / "summary.json"
    if summary.exists() and read_json(summary).get("status") == "complete":
        return "done"
    if resume:
        return "resume"
    raise SafeprefError(f"{out} holds an unfinished run of this same config: pass --resume to continue it "
                        "or --overwrite to start again")


def check_inputs(pairs: Any, model_spec: str, config: DPOTrainConfig, out_dir: str | Path,
                 overwrite: bool = False, resume: bool = False) -> Inputs:
    """Validate pairs and output folder (no model, no tokenizer is loaded). Raises DataError /
    SafeprefError with the reason."""
    if not isinstance(config, DPOTrainConfig):
        raise ConfigError(f"config must be a DPOTrainConfig, got {type(config).__name__}")
    if overwrite and resume:
        raise SafeprefError("pass either overwrite or resume, not both")
    records, source = _load_pairs(pairs)
    records, dropped = _usable(records)
    if not records:
        raise DataError(f"no usable preference pairs (dropped: {dict(dropped)})")
    identity = _identity(config, model_spec, records)
    run_hash = cfg.config_hash(identity)
    action = _decide(Path(out_dir), identity, run_hash, overwrite, resume)
    return Inputs(records, source, dropped, identity, run_hash, action)


# ------------------------------------------------------------------------------------- tokens and lengths


def _as_text_pair(pair: PreferencePair, tokenizer: Any, prompt_format: str) -> dict[str, str]:
    from safepref.models import format_prompt

    return {"prompt": format_prompt(tokenizer, pair.prompt, prompt_format),
            "chosen": pair.chosen_text, "rejected": pair.rejected_text}


def token_lengths(pair: PreferencePair, tokenizer: Any, prompt_format: str) -> tuple[int, int, int]:
    """``(prompt, chosen, rejected)`` token counts exactly as TRL's DPOTrainer tokenizes the pair.

    Chat format: the chat template of prompt (with generation prompt), prompt+chosen and prompt+rejected; an
    answer's tokens are those past the common prefix. Raw/alpaca: plain text, TRL appends EOS to each answer.
    """
    if prompt_format == "chat":
        def ids(messages: list[dict[str, str]], generation: bool = False) -> list[int]:
            return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                                      add_generation_prompt=generation)["input_ids"])

        prompt = ids(pair.prompt, generation=True)
        chosen = ids(pair.prompt + pair.chosen)
        rejected = ids(pair.prompt + pair.rejected)
    else:
        text = _as_text_pair(pair, tokenizer, prompt_format)
        eos = tokenizer.eos_token or ""
        prompt = tokenizer(text["prompt"])["input_ids"]
        chosen = tokenizer(text["prompt"] + text["chosen"] + eos)["input_ids"]
        rejected = tokenizer(text["prompt"] + text["rejected"] + eos)["input_ids"]
    shared = min(_common_prefix(prompt, chosen), _common_prefix(prompt, rejected))
    return shared, len(chosen) - shared, len(rejected) - shared


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def filter_by_length(pairs: list[PreferencePair], tokenizer: Any, max_length: int, prompt_format: str
                     ) -> tuple[list[PreferencePair], list[tuple[int, int, int]], int]:
    """Keep pairs whose prompt+chosen and prompt+rejected both fit ``max_length`` tokens.

    TRL 1.x truncates whole sequences at ``max_length`` (it no longer truncates the prompt separately), which
    would cut answers and bias the log-probs; so long pairs are dropped here and counted instead.
    Returns (kept pairs, their token lengths, number dropped).
    """
    kept, lengths = [], []
    for pair in pairs:
        p, c, r = token_lengths(pair, tokenizer, prompt_format)
        if p + max(c, r) <= max_length:
            kept.append(pair)
            lengths.append((p, c, r))
    return kept, lengths, len(pairs) - len(kept)


def _to_dataset(pairs: list[PreferencePair], tokenizer: Any, prompt_format: str) -> Any:
    from datasets import Dataset

    from safepref.records import pairs_to_dataset

    if prompt_format == "chat":
        return pairs_to_dataset(pairs)
    rows = [_as_text_pair(p, tokenizer, prompt_format) for p in pairs]
    return Dataset.from_list(rows)
