"""Reference log-probs shared across DPO runs (``ref_cache``, with ``precompute_ref_log_probs``).

The reference model of every condition and seed of a study is the same starting model, and the sets share many
answers (the target's greedy answer is the rejected side of HC+Self, GPT-4o+Self and Stronger+Self; every seed
trains on the same pairs). TRL scores the reference pair by pair, once per run. Here each (prompt, answer)
sequence is scored once and kept in ``$SAFEPREF_CACHE/ref-logps/<key>/``, where the key hashes the reference
weights (the LoRA adapter left out: it is off for the reference), their dtypes, the autocast precision, the
device type and the torch/TRL versions. A run scores only the sequences not yet there, two of them a row of
TRL's own pass (the two answers of a row share its prompt), and reads the others back.

On the quickstart's 7 sets 85 of the 168 sequences are distinct (measured 2026-12-07): the pass halves.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Columns TRL's collator reads from a tokenized preference row; a dataset with others (images) is not cached.
ID_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
TEXT_COLUMNS = ("prompt", "chosen", "rejected")
FORMAT = 1


def sequence_key(prompt_ids: list[int], completion_ids: list[int]) -> str:
    return hashlib.sha256(json.dumps([prompt_ids, completion_ids]).encode()).hexdigest()[:32]


def reference_key(trainer: Any) -> str:
    """Hash of what the reference scores depend on: its weights (adapter excluded), dtypes, precision, device,
    versions. LoRA and full runs of one base in one dtype share it (the names are normalised)."""
    import torch
    import trl

    model = trainer.ref_model or trainer.accelerator.unwrap_model(trainer.model)
    h = hashlib.sha256()
    h.update(json.dumps({"format": FORMAT, "bf16": bool(trainer.args.bf16), "fp16": bool(trainer.args.fp16),
                         "device": trainer.accelerator.device.type, "torch": torch.__version__,
                         "trl": trl.__version__}).encode())
    for name, tensor in sorted(_base_state(model).items()):
        h.update(name.encode() + str(tensor.dtype).encode())
        data = tensor.detach().cpu()
        h.update((data.float() if data.dtype == torch.bfloat16 else data).numpy().tobytes())
    return h.hexdigest()[:24]


def _base_state(model: Any) -> dict[str, Any]:
    """The state dict without LoRA tensors, under the base model's own names."""
    state = {}
    for name, tensor in model.state_dict().items():
        if "lora_" in name:
            continue
        name = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
        state[name] = tensor
    return state


def usable(trainer: Any, dataset: Any) -> bool:
    """Sequences are scored one by one only where that equals TRL's pair pass: one process, no LD-DPO (which
    mixes the two answers' lengths), no PEFT adapters other than LoRA's, and text-only rows."""
    columns = set(getattr(dataset, "column_names", None) or [])
    if not set(ID_COLUMNS) <= columns or columns - set(ID_COLUMNS) - set(TEXT_COLUMNS):
        return False
    if trainer.accelerator.num_processes != 1 or getattr(trainer, "ld_alpha", None) is not None:
        return False
    model = trainer.accelerator.unwrap_model(trainer.model)
    return not any("modules_to_save" in n or "prompt_encoder" in n for n in model.state_dict())


def load(folder: Path) -> dict[str, float]:
    """Every sequence scored so far under this key (the shards of earlier runs, in any order)."""
    scores: dict[str, float] = {}
    for shard in sorted(folder.glob("*.json")):
        try:
            scores.update(json.loads(shard.read_text()))
        except (OSError, ValueError):  # a shard being written by another run, or damaged: score again
            continue
    return scores


def save(folder: Path, scores: dict[str, float]) -> None:
    """One new shard, written atomically (a run killed mid-write leaves no half shard)."""
    if not scores:
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(scores, handle)
    os.replace(tmp, folder / f"{uuid.uuid4().hex}.json")


def precompute(trainer: Any, dataset: Any, score_pairs: Callable[[Any], Any], folder: Path) -> tuple[Any, int]:
    """``dataset`` with TRL's ``ref_chosen_logps`` / ``ref_rejected_logps`` columns, scoring only sequences
    not in ``folder``; ``score_pairs`` is TRL's pass over a dataset of pairs. Returns (dataset, scored)."""
    from datasets import Dataset, Value

    scores = load(folder)
    prompts, chosen, rejected = (dataset[c] for c in ID_COLUMNS)
    keys = [(sequence_key(p, c), sequence_key(p, r)) for p, c, r in zip(prompts, chosen, rejected, strict=True)]
    missing: dict[str, tuple[list[int], list[int]]] = {}
    for (kc, kr), p, c, r in zip(keys, prompts, chosen, rejected, strict=True):
        for key, completion in ((kc, c), (kr, r)):
            if key not in scores:
                missing.setdefault(key, (p, completion))
    new = _score(missing, score_pairs, Dataset) if missing else {}
    save(folder, new)
    scores.update(new)
    out = dataset.add_column("ref_chosen_logps", [scores[kc] for kc, _ in keys], feature=Value("float32"))
    return out.add_column("ref_rejected_logps", [scores[kr] for _, kr in keys], feature=Value("float32")), len(new)


def _score(missing: dict[str, tuple[list[int], list[int]]], score_pairs: Callable[[Any], Any],
           dataset_class: Any) -> dict[str, float]:
    """Scores of the missing sequences: those of one prompt paired up as the two answers of a row (an odd one
    out is its own pair), through TRL's own pass."""
    by_prompt: dict[str, list[str]] = {}
    for key, (prompt, _) in missing.items():
        by_prompt.setdefault(json.dumps(prompt), []).append(key)
    rows: list[tuple[str, str]] = []
    for group in by_prompt.values():
        rows += [(group[i], group[min(i + 1, len(group) - 1)]) for i in range(0, len(group), 2)]
    pseudo = dataset_class.from_dict({
        "prompt_ids": [missing[a][0] for a, _ in rows],
        "chosen_ids": [missing[a][1] for a, _ in rows],
        "rejected_ids": [missing[b][1] for _, b in rows]})
    scored = score_pairs(pseudo)
    new: dict[str, float] = {}
    for (a, b), ref_a, ref_b in zip(rows, scored["ref_chosen_logps"], scored["ref_rejected_logps"], strict=True):
        new[a], new[b] = float(ref_a), float(ref_b)
    return new
