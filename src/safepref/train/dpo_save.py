"""After training: write the final model (full weights, LoRA merged, or the adapter) and probe the implicit
reward margin of single training pairs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safepref.records import write_json
from safepref.train.dpo_config import DPOTrainConfig
from safepref.train.dpo_data import _portable_model_spec

# ----------------------------------------------------------------------------------------- saving


def _save(trainer: Any, config: DPOTrainConfig, model_spec: str, location: str, tokenizer: Any,
          out: Path, save_dtype: str, is_main: bool) -> dict[str, Any]:
    """Write the final model into ``out``: full weights, LoRA merged, or the LoRA adapter."""
    import torch

    sharded = trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled
    if config.finetune == "full":
        model = trainer.accelerator.unwrap_model(trainer.model)
        target = getattr(torch, save_dtype)
        if not sharded and model.dtype != target:
            model.to(target)  # training is over: casting in place costs no copy
        trainer.save_model(str(out))  # every rank: FSDP / ZeRO-3 gather the weights here
        return {"format": "full", "dtype": save_dtype if not sharded else "as gathered"}
    adapter_dir = out / "adapter" if config.merge_lora else out
    trainer.save_model(str(adapter_dir))
    if not is_main:
        return {}
    adapter_config = adapter_dir / "adapter_config.json"
    data = json.loads(adapter_config.read_text())
    data["base_model_name_or_path"] = _portable_model_spec(model_spec)  # loadable by safepref.models later
    write_json(adapter_config, data)
    if not config.merge_lora:
        tokenizer.save_pretrained(str(out))
        return {"format": "lora-adapter", "base": data["base_model_name_or_path"]}
    # Merge on CPU from a fresh base: works whatever sharded the training copy (DDP, FSDP, ZeRO-3).
    from peft import PeftModel

    from safepref.models import load_model

    if trainer.is_deepspeed_enabled:  # else from_pretrained would partition the fresh base over one rank
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()
    base = load_model(location, device="cpu", dtype=save_dtype, trust_remote_code=config.trust_remote_code)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return {"format": "lora-merged", "dtype": save_dtype, "adapter": str(adapter_dir.name)}


# ------------------------------------------------------------------------------------------ length probe


def probe_pairs(trainer: Any, count: int, seed: int) -> dict[str, list[float]] | None:
    """Implicit reward margin of each of ``count`` training pairs after training (scored in length-sorted batches).

    margin = beta * [(log pi(chosen) - log ref(chosen)) - (log pi(rejected) - log ref(rejected))], the same
    quantity TRL averages per batch. Runs on the main process only, and not under FSDP / ZeRO-3 (the weights are
    sharded there; the batch-level curves still are recorded). Returns margins and length gaps, or None.
    """
    import torch
    from torch.utils.data import DataLoader

    if count <= 0 or trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
        return None
    dataset = trainer.train_dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count].tolist()
    keep = [c for c in ("prompt_ids", "chosen_ids", "rejected_ids", "ref_chosen_logps", "ref_rejected_logps")
            if c in dataset.column_names]
    # scored longest first, in batches of similar length: little padding (the margins do not depend on the order)
    from safepref.train.dpo_setup import pair_lengths

    lengths = pair_lengths(dataset.select(order))
    order = [i for _, i in sorted(zip(lengths, order, strict=True), reverse=True)]
    subset = dataset.select(order).select_columns(keep)
    loader = DataLoader(subset, batch_size=trainer.args.per_device_train_batch_size,
                        collate_fn=trainer.data_collator)
    model = trainer.accelerator.unwrap_model(trainer.model)
    was_training = model.training
    model.eval()
    device = trainer.accelerator.device
    margins: list[float] = []
    gaps: list[float] = []
    with torch.no_grad():
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            mask = batch["completion_mask"]
            labels = batch["input_ids"].masked_fill(mask == 0, -100)
            with trainer.accelerator.autocast():
                out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                            fused_lm_head=True, use_cache=False)
            seq = mask.size(1) - 1
            logps = out.log_probs[:, -seq:].float().sum(dim=1)
            chosen, rejected = logps.chunk(2, dim=0)
            if "ref_chosen_logps" in batch:
                ref_chosen, ref_rejected = batch["ref_chosen_logps"], batch["ref_rejected_logps"]
            else:
                # ref_model when full fine-tuning; the adapter switched off when LoRA (TRL decides)
                ref_chosen, ref_rejected = trainer.compute_ref_log_probs(trainer.ref_model or trainer.model, batch)
            margin = trainer.beta * ((chosen - ref_chosen.float()) - (rejected - ref_rejected.float()))
            chosen_mask, rejected_mask = mask.chunk(2, dim=0)
            margins.extend(margin.tolist())
            gaps.extend((chosen_mask.sum(1) - rejected_mask.sum(1)).float().tolist())
    model.train(was_training)
    return {"margins": margins, "gaps": gaps}
