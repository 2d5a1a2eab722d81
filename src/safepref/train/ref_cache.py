"""Reference log-probs shared across DPO runs (``ref_cache``, with ``precompute_ref_log_probs``).

The reference model of every condition and seed of a study is the same starting model, and the sets share many
answers (the target's greedy answer is the rejected side of HC+Self, GPT-4o+Self and Stronger+Self; every seed
trains on the same pairs). TRL scores the reference pair by pair, once per run. Here each (prompt, answer)
sequence is scored once and kept in ``$SAFEPREF_CACHE/ref-logps/<key>/``, where the key hashes the reference
weights (the LoRA adapter left out: it is off for the reference), their dtypes, the autocast precision, the
device type, TRL's truncation settings and the torch/TRL versions. A run scores only the sequences not yet there
(through TRL's collator and reference pass, one sequence a row) and reads the others back.

On the quickstart's 7 sets 85 of the 168 sequences are distinct (counted 2026-12-07).
"""

from __future__ import annotations

import hashlib
import json
import uuid
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
    versions, TRL's truncation settings. LoRA and full runs of one base in one dtype share it (the names are
    normalised)."""
    import torch
    import trl

    model = trainer.ref_model or trainer.accelerator.unwrap_model(trainer.model)
    h = hashlib.sha256()
    h.update(json.dumps({"format": FORMAT, "bf16": bool(trainer.args.bf16), "fp16": bool(trainer.args.fp16),
                         "device": trainer.accelerator.device.type, "torch": torch.__version__,
                         "trl": trl.__version__, "max_length": getattr(trainer.args, "max_length", None),
                         "truncation": getattr(trainer.args, "truncation_mode", None)}).encode())
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
    """Sequences are scored one by one only where that equals TRL's pair pass: one process (no DeepSpeed, no
    FSDP), no LD-DPO (which mixes the two answers' lengths), no PEFT adapters other than LoRA's, text-only rows."""
    columns = set(getattr(dataset, "column_names", None) or [])
    if not set(ID_COLUMNS) <= columns or columns - set(ID_COLUMNS) - set(TEXT_COLUMNS):
        return False
    if trainer.accelerator.num_processes != 1 or getattr(trainer, "ld_alpha", None) is not None:
        return False
    if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
        return False
    model = trainer.accelerator.unwrap_model(trainer.model)
    return not any("modules_to_save" in n or "prompt_encoder" in n for n in model.state_dict())


def load(folder: Path) -> dict[str, float]:
    """Every sequence scored so far under this key (the shards of earlier runs, in any order)."""
    scores: dict[str, float] = {}
    for shard in sorted(folder.glob("*.json")):
        try:
            shard_scores = json.loads(shard.read_text())
        except (OSError, ValueError):  # a shard being written by another run, or damaged: score again
            continue
        # write_json stores a non-finite float as null: such a sequence is scored again, not read as None
        scores.update({k: v for k, v in shard_scores.items() if isinstance(v, float | int)})
    return scores


def save(folder: Path, scores: dict[str, float]) -> None:
    """One new shard, written atomically by the project's writer (a run killed mid-write leaves no half shard)."""
    from safepref.records import write_json

    if scores:
        write_json(folder / f"{uuid.uuid4().hex}.json", scores)


def precompute(trainer: Any, dataset: Any, batch_size: int, folder: Path) -> tuple[Any, int]:
    """``dataset`` with TRL's ``ref_chosen_logps`` / ``ref_rejected_logps`` columns, scoring only sequences
    not in ``folder`` (``batch_size`` pairs' worth at a time). Returns (dataset, sequences scored)."""
    from datasets import Value

    scores = load(folder)
    prompts, chosen, rejected = (dataset[c] for c in ID_COLUMNS)
    keys = [(sequence_key(p, c), sequence_key(p, r)) for p, c, r in zip(prompts, chosen, rejected, strict=True)]
    missing: dict[str, tuple[list[int], list[int]]] = {}
    for (kc, kr), p, c, r in zip(keys, prompts, chosen, rejected, strict=True):
        for key, completion in ((kc, c), (kr, r)):
            if key not in scores:
                missing.setdefault(key, (p, completion))
    new = score_sequences(trainer, missing, 2 * batch_size)
    save(folder, new)
    scores.update(new)
    out = dataset.add_column("ref_chosen_logps", [scores[kc] for kc, _ in keys], feature=Value("float32"))
    return out.add_column("ref_rejected_logps", [scores[kr] for _, kr in keys], feature=Value("float32")), len(new)


def score_sequences(trainer: Any, sequences: dict[str, tuple[list[int], list[int]]],
                    batch_size: int) -> dict[str, float]:
    """Reference log-prob of each (prompt ids, completion ids), longest first, ``batch_size`` sequences a batch,
    through TRL's own collator and ``compute_ref_log_probs`` (adapter off, no grad, autocast): each sequence is
    collated as the chosen side of a row whose rejected side repeats it, and only the chosen rows are scored."""
    import torch
    from tqdm.auto import tqdm

    order = sorted(sequences, key=lambda k: len(sequences[k][0]) + len(sequences[k][1]), reverse=True)
    model = trainer.ref_model or trainer.model
    device = trainer.accelerator.device
    new: dict[str, float] = {}
    for start in tqdm(range(0, len(order), batch_size), desc="reference log-probs (new sequences)",
                      disable=not order):
        chunk = order[start:start + batch_size]
        rows = [{"prompt_ids": sequences[k][0], "chosen_ids": sequences[k][1], "rejected_ids": sequences[k][1]}
                for k in chunk]
        batch = trainer.data_collator(rows)
        batch = {name: value[:len(chunk)].to(device) for name, value in batch.items()}  # the chosen rows
        logps = torch.cat(trainer.compute_ref_log_probs(model, batch)).float().cpu().tolist()
        new.update(zip(chunk, logps, strict=True))
    return new
