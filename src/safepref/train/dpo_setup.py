"""Devices, dtypes and the TRL objects ``train_dpo`` builds: precision, the trainer class, ``DPOConfig``,
the LoRA config, the model to train, and the package versions recorded with a run."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from safepref.errors import ConfigError, SafeprefError
from safepref.train.dpo_config import DTYPES, DPOTrainConfig

# ----------------------------------------------------------------------------------------- devices/dtypes


def _precision(config: DPOTrainConfig) -> str:
    """auto: bf16 on a GPU that has it, and on a CPU that computes it natively (AVX512-BF16/AMX: LoRA DPO of
    SmolLM2 on the quickstart's pairs 36 s instead of 50 s a stage on the 2-core EPYC); fp32 else."""
    import torch

    from safepref.models import cpu_has_bf16

    if config.precision != "auto":
        if config.precision == "fp16" and not torch.cuda.is_available():
            raise ConfigError("config field 'precision': fp16 needs a GPU here; use auto, bf16 or fp32")
        if config.precision == "bf16" and not torch.cuda.is_available() and not cpu_has_bf16():
            raise ConfigError("config field 'precision': bf16 needs a GPU or a CPU with AVX512-BF16/AMX here; "
                              "use auto or fp32")
        return config.precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def _model_dtype(config: DPOTrainConfig, precision: str) -> str:
    if config.model_dtype != "auto":
        return config.model_dtype
    if config.finetune == "lora" and precision == "bf16":
        return "bfloat16"
    return "float32"


def _checkpoint_dtype(location: str) -> str:
    """dtype the checkpoint declares in its config.json (float32 when unknown or not local)."""
    folder = Path(location)
    if (folder / "adapter_config.json").exists() and not (folder / "config.json").exists():
        from safepref.models import _adapter_base

        folder = Path(_adapter_base(str(folder)))
    config_file = folder / "config.json"
    if config_file.exists():
        data = json.loads(config_file.read_text())
        value = str(data.get("dtype") or data.get("torch_dtype") or "float32")
        if value in DTYPES:
            return value
    return "float32"


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("safepref", "torch", "transformers", "trl", "peft", "accelerate", "datasets"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "absent"
    return out


# ---------------------------------------------------------------------------------------------- trainer


def pair_lengths(dataset: Any) -> list[int]:
    """Padded row length of each tokenized pair: TRL pads chosen and rejected of a batch to one length, so a
    pair costs its prompt plus the longer of its two answers."""
    prompts, chosen, rejected = dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"]
    return [len(p) + max(len(c), len(r)) for p, c, r in zip(prompts, chosen, rejected, strict=True)]


def _trainer_class(group_by_length: bool = False, ref_cache: bool = False) -> type:
    """TRL's DPOTrainer plus the answers' token lengths per batch (``length/*`` in the logs), with
    ``group_by_length`` batches of pairs of similar length (transformers' LengthGroupedSampler), and with
    ``ref_cache`` reference log-probs kept per sequence across runs (``ref_cache.py``)."""
    from trl import DPOTrainer

    class MonitoredDPOTrainer(DPOTrainer):
        def _get_train_sampler(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            import torch
            from transformers.trainer_pt_utils import LengthGroupedSampler

            dataset = args[0] if args else kwargs.get("train_dataset", self.train_dataset)
            columns = getattr(dataset, "column_names", None) or []
            if not group_by_length or "chosen_ids" not in columns:
                return super()._get_train_sampler(*args, **kwargs)
            # TRL's tokenized columns hold the lengths; transformers' own grouping looks for input_ids, which a
            # DPO dataset does not have. A seeded generator: the same order on every run and after --resume.
            generator = torch.Generator().manual_seed(self.args.data_seed or self.args.seed)
            return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                        lengths=pair_lengths(dataset), generator=generator)

        def _precompute_ref_logps(self, dataset, name, batch_size):  # noqa: ANN001, ANN202
            from safepref.paths import cache_dir
            from safepref.train import ref_cache as rc

            if not ref_cache or not rc.usable(self, dataset):
                return self._sorted_ref_logps(dataset, name, batch_size)
            folder = cache_dir("ref-logps", rc.reference_key(self))
            out, scored = rc.precompute(self, dataset, batch_size, folder)
            self.ref_cache_report = {"sequences": 2 * len(dataset), "scored": scored, "folder": str(folder)}
            return out

        def _sorted_ref_logps(self, dataset, name, batch_size):  # noqa: ANN001, ANN202
            # TRL scores the reference in dataset order, each batch padded to its longest pair; in length order
            # the same pass pads almost nothing. The scores are put back in the dataset's own order.
            columns = getattr(dataset, "column_names", None) or []
            if "chosen_ids" not in columns or not hasattr(dataset, "select"):
                return super()._precompute_ref_logps(dataset, name, batch_size)
            lengths = pair_lengths(dataset)
            order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)
            inverse = [0] * len(order)
            for position, index in enumerate(order):
                inverse[index] = position
            return super()._precompute_ref_logps(dataset.select(order), name, batch_size).select(inverse)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
            import torch

            mode = "train" if self.model.training else "eval"
            chosen_mask, rejected_mask = inputs["completion_mask"].chunk(2, dim=0)  # batch = [chosen; rejected]
            lengths = torch.stack([chosen_mask.sum(1), rejected_mask.sum(1)], dim=1).float()  # (B, 2)
            lengths = self.accelerator.gather_for_metrics(lengths)
            self._metrics[mode]["length/chosen"].append(lengths[:, 0].mean().item())
            self._metrics[mode]["length/rejected"].append(lengths[:, 1].mean().item())
            self._metrics[mode]["length/gap"].append((lengths[:, 0] - lengths[:, 1]).mean().item())
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    return MonitoredDPOTrainer


def _dpo_args(config: DPOTrainConfig, output_dir: Path, precision: str) -> Any:
    from trl import DPOConfig

    from safepref.models import pick_device

    # transformers 5 folded warmup_ratio into warmup_steps (a float < 1 is a ratio); older 5.x kept both.
    names = {f.name for f in dataclasses.fields(DPOConfig)}
    warmup = ({"warmup_ratio": config.warmup_ratio} if "warmup_ratio" in names
              else {"warmup_steps": config.warmup_ratio})
    return DPOConfig(
        **warmup,
        output_dir=str(output_dir),
        beta=config.beta,
        loss_type=list(config.loss_type),
        loss_weights=config.loss_weights,
        label_smoothing=config.label_smoothing,
        learning_rate=config.resolved_learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        lr_scheduler_type=config.lr_scheduler_type,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        optim=config.optim,
        max_length=config.max_length,
        precompute_ref_log_probs=config.precompute_ref_log_probs,
        precompute_ref_batch_size=config.precompute_ref_batch_size,
        gradient_checkpointing=config.gradient_checkpointing,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=pick_device() == "cpu",  # transformers refuses bf16 without a GPU unless told the CPU is meant
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=config.logging_steps,
        save_strategy="steps" if config.save_steps > 0 else "no",
        save_steps=config.save_steps or 500,
        save_total_limit=config.save_total_limit,
        dataloader_num_workers=config.dataloader_num_workers,
        report_to=config.report_to,
        trust_remote_code=config.trust_remote_code,
        remove_unused_columns=True,
        disable_tqdm=not sys.stderr.isatty(),
    )


def _peft_config(config: DPOTrainConfig) -> Any:
    if config.finetune != "lora":
        return None
    from peft import LoraConfig

    targets: Any = config.lora.target_modules
    if targets == ["all-linear"]:
        targets = "all-linear"
    return LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                      target_modules=targets, task_type="CAUSAL_LM")


def _load_causal_lm(location: str, dtype: str, trust_remote_code: bool) -> Any:
    """The model to train, left where transformers puts it (the Trainer places it; under ZeRO-3 it loads
    already partitioned). A LoRA adapter folder is merged into its base first."""
    from transformers import AutoModelForCausalLM

    from safepref import random_models
    from safepref.models import load_model, pick_dtype

    if random_models.is_random(location):  # a random twin: built where it trains, never in float32 on the CPU
        import torch

        device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu"
        return random_models.build(location, device, pick_dtype(dtype, "cpu"))
    folder = Path(location)
    if (folder / "adapter_config.json").exists() and not (folder / "config.json").exists():
        return load_model(location, device="cpu", dtype=dtype, trust_remote_code=trust_remote_code)
    try:
        return AutoModelForCausalLM.from_pretrained(location, dtype=pick_dtype(dtype, "cpu"), use_safetensors=True,
                                                    trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        from safepref.models import load_error

        raise load_error(location, "the model", exc) from None


def _check_one_process_per_gpu() -> None:
    """TRL refuses nn.DataParallel (one process, several GPUs) after loading everything; say so up front."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count > 1 and "LOCAL_RANK" not in os.environ:
        raise SafeprefError(
            f"{count} GPUs are visible to one process: launch one process per GPU with "
            f"`--accelerate-config configs/accelerate/ddp.yaml --num-processes {count}` (or `accelerate launch`), "
            "or use one GPU with CUDA_VISIBLE_DEVICES=0")


def _device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)} visible"
    return f"cpu ({os.cpu_count()} cores)"
