"""DPO training through TRL's ``DPOTrainer``, from one CPU to several GPUs, with a reward-hacking monitor.

    from safepref.train import DPOTrainConfig, train_dpo
    summary = train_dpo("pku-realign:300", "smollm2-135m-instruct",
                        DPOTrainConfig(finetune="lora", max_length=512), "runs/dpo-smoke")

Reads top to bottom: check the inputs (config, pairs, output folder; no model is loaded before they pass) ->
tokenizer and length filter -> TRL config -> model (+ LoRA) -> train -> save -> per-pair probe -> summary.

Output folder (``out_dir``)::

    config.json, model.safetensors, tokenizer*   the trained model: load it by path (LoRA merged by default;
                                                 with merge_lora=false an adapter folder instead)
    run.json        config, model, data fingerprint, command, versions, hash (decides resume / refusal)
    config.yaml     the config used, learning rate resolved
    metrics.jsonl   one row per logged step (TRL's rewards/*, logps/*, loss, plus length/*)
    summary.json    counts (pairs kept, dropped by reason), throughput, the monitor's summary and warnings
    monitor.png     the curves
    checkpoints/    trainer checkpoints for --resume (deleted at the end unless keep_checkpoints)

Several GPUs: launch the same call with ``accelerate launch --config_file configs/accelerate/ddp.yaml -m
safepref train ...`` (or ``--accelerate-config``); every rank runs this function, rank 0 alone writes files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from safepref import config as cfg
from safepref.config import field, require
from safepref.errors import ConfigError, DataError, ModelError, SafeprefError
from safepref.records import PreferencePair, read_json, write_json, write_text
from safepref.redact import command_line

log = logging.getLogger(__name__)

LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DTYPES = ("auto", "float32", "bfloat16", "float16")
# The study's learning rates (alignment-handbook recipes): full fine-tuning vs LoRA.
PAPER_LEARNING_RATE = {"full": 5e-7, "lora": 5e-6}
# Fields that change how a run is saved or logged, not what it learns: a resume may change them.
NON_IDENTITY_FIELDS = ("logging_steps", "save_steps", "save_total_limit", "keep_checkpoints",
                       "dataloader_num_workers", "report_to", "precompute_ref_batch_size", "monitor")


@dataclass
class LoraSettings:
    r: int = field(16, help="LoRA rank: higher adds capacity and memory")
    alpha: int = field(32, help="LoRA scale numerator (the update is scaled by alpha / r)")
    dropout: float = field(0.05, help="dropout on the LoRA branch input")
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"],
                                      help="module names to adapt; ['all-linear'] = every linear layer but the "
                                           "output head (TRL cannot train an adapter on lm_head)")

    def __post_init__(self) -> None:
        require(self.r >= 1, "lora.r", "must be >= 1")
        require(self.alpha > 0, "lora.alpha", "must be positive")
        require(0 <= self.dropout < 1, "lora.dropout", "must be in [0, 1)")
        require(bool(self.target_modules), "lora.target_modules", "must name at least one module")
        require("lm_head" not in self.target_modules, "lora.target_modules",
                "TRL computes log-probs from lm_head.weight directly, so an adapter there is never trained")


@dataclass
class MonitorSettings:
    accuracy_threshold: float = field(0.95, help="report the first step where reward accuracy exceeds this")
    window: int = field(5, help="logged steps averaged for the smoothed accuracy and the 'final' values")
    probe_pairs: int = field(128, help="after training, score this many training pairs one by one to "
                                       "correlate margin with length gap (0 = off)")

    def __post_init__(self) -> None:
        require(0 < self.accuracy_threshold < 1, "monitor.accuracy_threshold", "must be in (0, 1)")
        require(self.window >= 1, "monitor.window", "must be >= 1")
        require(self.probe_pairs >= 0, "monitor.probe_pairs", "must be >= 0")


@dataclass
class DPOTrainConfig:
    """DPO settings; defaults follow the study (beta 0.1, 1 epoch, warmup 0.1, 5e-7 full / 5e-6 LoRA)."""

    finetune: str = field("full", help="full (all weights) or lora (peft adapters)")
    lora: LoraSettings = field(default_factory=LoraSettings, help="LoRA settings (finetune=lora only)")
    merge_lora: bool = field(True, help="save LoRA merged into a full checkpoint (false: the adapter folder)")
    beta: float = field(0.1, help="DPO beta: strength of the pull towards the reference model")
    loss_type: list[str] = field(default_factory=lambda: ["sigmoid"],
                                 help=f"TRL loss type(s), combined by loss_weights; known: {', '.join(LOSS_TYPES)}")
    loss_weights: list[float] | None = field(None, help="one weight per loss_type (None = all 1.0)")
    label_smoothing: float = field(0.0, help="robust / exo_pair label smoothing")
    learning_rate: float | None = field(None, help="peak learning rate (None = the study's: 5e-7 full, 5e-6 LoRA)")
    num_train_epochs: float = field(1.0, help="passes over the pairs")
    max_steps: int = field(-1, help="stop after this many optimizer steps (-1 = run the epochs)")
    per_device_train_batch_size: int = field(8, help="pairs per device per micro-batch")
    gradient_accumulation_steps: int = field(1, help="micro-batches per optimizer step")
    warmup_ratio: float = field(0.1, help="fraction of steps spent warming the learning rate up")
    lr_scheduler_type: str = field("cosine", help=f"learning-rate schedule; known: {', '.join(SCHEDULERS)}")
    weight_decay: float = field(0.0, help="AdamW weight decay")
    max_grad_norm: float = field(1.0, help="gradient clipping norm")
    optim: str = field("adamw_torch", help="transformers optimizer name")
    max_length: int = field(1024, help="prompt + answer tokens; longer pairs are dropped (and counted), "
                                       "never truncated")
    prompt_format: str = field("chat", help="chat (tokenizer's chat template), raw (prompt text as is, the "
                                            "study's base/SFT models) or alpaca")
    precompute_ref_log_probs: bool = field(False, help="score the reference model once before training, "
                                                       "so full fine-tuning keeps no reference copy in memory")
    precompute_ref_batch_size: int | None = field(None, help="batch for that pass (None = training batch)")
    gradient_checkpointing: bool = field(True, help="recompute activations: less memory, ~20-30% slower")
    precision: str = field("auto", help="auto (bf16 on a GPU that has it, else fp32), bf16, fp16 or fp32: "
                                        "autocast precision of the forward/backward")
    model_dtype: str = field("auto", help="dtype the weights are loaded in; auto = float32 for full "
                                          "fine-tuning (optimizer updates of 5e-7 vanish in bf16 weights), "
                                          "bfloat16 for frozen LoRA bases under bf16")
    save_dtype: str = field("auto", help="dtype of the saved model; auto = the input checkpoint's dtype")
    seed: int = field(42, help="seed for data order, LoRA init and dropout")
    logging_steps: int = field(1, help="log (and monitor) every this many optimizer steps")
    save_steps: int = field(50, help="write a resumable checkpoint every this many steps (0 = none; the "
                                      "final model is always saved)")
    save_total_limit: int = field(1, help="checkpoints kept on disk")
    keep_checkpoints: bool = field(False, help="keep checkpoints/ after a successful run")
    dataloader_num_workers: int = field(0, help="data loader worker processes")
    report_to: str = field("none", help="transformers reporting integration: none, tensorboard, wandb, ...")
    trust_remote_code: bool = field(False, help="allow the model's own code from the hub")
    monitor: MonitorSettings = field(default_factory=MonitorSettings, help="reward-hacking monitor")

    def __post_init__(self) -> None:
        cfg.require_finite(self)
        require(self.finetune in ("full", "lora"), "finetune", f"must be full or lora, got {self.finetune!r}")
        require(self.beta > 0, "beta", "must be positive")
        require(bool(self.loss_type), "loss_type", "must name at least one loss")
        for name in self.loss_type:
            require(name in LOSS_TYPES, "loss_type", f"unknown loss {name!r}; known: {', '.join(LOSS_TYPES)}")
        require(self.loss_weights is None or len(self.loss_weights) == len(self.loss_type), "loss_weights",
                f"needs one weight per loss_type ({len(self.loss_type)})")
        require(self.label_smoothing >= 0 and self.label_smoothing < 0.5, "label_smoothing", "must be in [0, 0.5)")
        require("exo_pair" not in self.loss_type or self.label_smoothing > 0, "label_smoothing",
                "must be > 0 for exo_pair (the EXO paper uses 1e-3)")
        require(self.learning_rate is None or 0 < self.learning_rate < 1, "learning_rate", "must be in (0, 1)")
        require(self.num_train_epochs > 0, "num_train_epochs", "must be positive")
        require(self.max_steps == -1 or self.max_steps >= 1, "max_steps", "must be -1 (off) or >= 1")
        require(self.per_device_train_batch_size >= 1, "per_device_train_batch_size", "must be >= 1")
        require(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps", "must be >= 1")
        require(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
        require(self.lr_scheduler_type in SCHEDULERS, "lr_scheduler_type",
                f"unknown schedule {self.lr_scheduler_type!r}; known: {', '.join(SCHEDULERS)}")
        require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        require(self.max_grad_norm > 0, "max_grad_norm", "must be positive")
        require(self.max_length >= 16, "max_length", "must be >= 16 tokens")
        require(self.prompt_format in ("chat", "raw", "alpaca"), "prompt_format", "must be chat, raw or alpaca")
        require(self.precompute_ref_batch_size is None or self.precompute_ref_batch_size >= 1,
                "precompute_ref_batch_size", "must be >= 1")
        require(self.precision in PRECISIONS, "precision", f"must be one of {', '.join(PRECISIONS)}")
        require(self.model_dtype in DTYPES, "model_dtype", f"must be one of {', '.join(DTYPES)}")
        require(self.save_dtype in DTYPES, "save_dtype", f"must be one of {', '.join(DTYPES)}")
        require(self.logging_steps >= 1, "logging_steps", "must be >= 1")
        require(self.save_steps >= 0, "save_steps", "must be >= 0")
        require(self.save_total_limit >= 1, "save_total_limit", "must be >= 1")
        require(self.dataloader_num_workers >= 0, "dataloader_num_workers", "must be >= 0")
        require(not (self.precompute_ref_log_probs and self.finetune == "lora"), "precompute_ref_log_probs",
                "not needed with LoRA: the reference is the base model with the adapter switched off")

    @property
    def resolved_learning_rate(self) -> float:
        return self.learning_rate if self.learning_rate is not None else PAPER_LEARNING_RATE[self.finetune]

    def resolved(self) -> dict[str, Any]:
        """The config as a dict with the learning rate filled in (what run.json and config.yaml hold)."""
        data = dataclasses.asdict(self)
        data["learning_rate"] = self.resolved_learning_rate
        return data


# YAML 1.1 reads 5e-7 (no dot, unsigned exponent) as a string; learning rates are written that way.
_SCIENTIFIC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _numbers(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, str) and _SCIENTIFIC.match(value.strip()):
        return float(value)
    return value


def load_train_config(path: str | Path | None = None, overrides: list[str] | None = None) -> DPOTrainConfig:
    """Defaults <- YAML file <- ``key=value`` overrides; ConfigError names the field. ``5e-7`` is a number."""
    data = cfg.load_yaml(path) if path is not None else {}
    if overrides:
        data = cfg.deep_merge(data, cfg.parse_overrides(overrides))
    return cfg.from_dict(DPOTrainConfig, _numbers(data))


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


# ----------------------------------------------------------------------------------------- devices/dtypes


def _precision(config: DPOTrainConfig) -> str:
    import torch

    if config.precision != "auto":
        if config.precision in ("bf16", "fp16") and not torch.cuda.is_available():
            raise ConfigError(f"config field 'precision': {config.precision} needs a GPU here; use auto or fp32")
        return config.precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


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


def _trainer_class() -> type:
    """TRL's DPOTrainer plus the answers' token lengths per batch (``length/*`` in the logs)."""
    from trl import DPOTrainer

    class MonitoredDPOTrainer(DPOTrainer):
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
    """Implicit reward margin of ``count`` training pairs, one by one, after training.

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


# ---------------------------------------------------------------------------------------------- main


def train_dpo(pairs: Any, model_spec: str, config: DPOTrainConfig, out_dir: str | Path,
              overwrite: bool = False, resume: bool = False, callbacks: list[Any] | None = None,
              command: str | None = None) -> dict[str, Any]:
    """Train ``model_spec`` with DPO on ``pairs`` into ``out_dir`` and return the summary (also summary.json).

    ``pairs``: a pair file, a source spec (``pku-realign:300``) or a list of PreferencePair. ``model_spec``:
    hub id, local folder (full checkpoint or LoRA adapter) or ``smollm2-135m-instruct``.

    Raises DataError (empty / malformed pairs, nothing fits max_length), ConfigError, ModelError, and
    SafeprefError when ``out_dir`` holds a different run (unless ``overwrite``) or an unfinished run of the same
    config (unless ``resume``); all before any model is loaded. A finished run of the same config is not
    trained again: its summary is returned.
    """
    from safepref import models
    from safepref.train import monitor as mon

    t0 = time.time()
    out = Path(out_dir)
    inputs = check_inputs(pairs, model_spec, config, out, overwrite, resume)
    if inputs.action == "done":
        log.info("%s already holds this finished run; returning its summary", out)
        return read_json(out / "summary.json")

    location = models.resolve_model(model_spec)  # converts the embedded model once; no weights loaded
    tokenizer = models.load_tokenizer(model_spec, padding_side="right",
                                      trust_remote_code=config.trust_remote_code)
    if config.prompt_format == "chat" and not getattr(tokenizer, "chat_template", None):
        raise ModelError(f"model '{model_spec}' has no chat template: set prompt_format to raw or alpaca")
    kept, lengths, too_long = filter_by_length(inputs.pairs, tokenizer, config.max_length, config.prompt_format)
    dropped = Counter(inputs.dropped)
    if too_long:
        dropped["longer_than_max_length"] = too_long
    if not kept:
        raise DataError(f"all {len(inputs.pairs)} pairs are longer than max_length={config.max_length} tokens")
    data_lengths = mon.length_stats([c for _, c, _ in lengths], [r for _, _, r in lengths])
    dataset = _to_dataset(kept, tokenizer, config.prompt_format)

    _check_one_process_per_gpu()
    precision = _precision(config)
    model_dtype = _model_dtype(config, precision)
    save_dtype = config.save_dtype if config.save_dtype != "auto" else _checkpoint_dtype(location)
    args = _dpo_args(config, out / "checkpoints", precision)  # sets up the distributed state
    state = args.distributed_state
    is_main = state.is_main_process
    if is_main:
        if inputs.action == "overwrite":
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "run.json", {
            "hash": inputs.hash, "identity": inputs.identity, "config": config.resolved(),
            "model": model_spec, "model_location": location, "pairs_source": inputs.source,
            "command": command_line(command or f"train_dpo({str(pairs)[:80]!r}, {model_spec!r}, ...)"),
            "versions": versions(), "world_size": state.num_processes, "precision": precision,
            "model_dtype": model_dtype, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })
        write_text(out / "config.yaml", yaml.safe_dump(config.resolved(), sort_keys=False))
    state.wait_for_everyone()

    # Model: full fine-tuning trains a float32 copy under autocast and keeps a frozen reference copy (unless
    # precomputed); LoRA wraps the base and switches the adapter off for the reference.
    policy = _load_causal_lm(location, model_dtype, config.trust_remote_code)
    ref_model = None
    if config.finetune == "full" and not config.precompute_ref_log_probs:
        ref_model = _load_causal_lm(location, model_dtype, config.trust_remote_code)
    writer = mon.MetricsWriter(out / "metrics.jsonl")
    trainer = _trainer_class()(
        model=policy, ref_model=ref_model, args=args, train_dataset=dataset, processing_class=tokenizer,
        peft_config=_peft_config(config), callbacks=[writer, *(callbacks or [])])

    checkpoint = None
    if inputs.action == "resume":
        from transformers.trainer_utils import get_last_checkpoint

        folder = out / "checkpoints"
        checkpoint = get_last_checkpoint(str(folder)) if folder.is_dir() else None
        log.info("resuming from %s", checkpoint or "the start (no checkpoint was written yet)")
    setup_s = time.time() - t0
    result = trainer.train(resume_from_checkpoint=checkpoint)

    saved = _save(trainer, config, model_spec, location, tokenizer, out, save_dtype, is_main)
    probe = probe_pairs(trainer, config.monitor.probe_pairs, config.seed) if is_main else None
    summary: dict[str, Any] = {}
    if is_main:
        global_batch = (config.per_device_train_batch_size * config.gradient_accumulation_steps
                        * state.num_processes)
        rows = writer.rows
        monitor = mon.summarize_curves(rows, config.beta, config.monitor.accuracy_threshold,
                                       config.monitor.window, trainer.state.max_steps, global_batch)
        monitor["data_lengths"] = data_lengths
        if probe is not None:
            monitor["probe"] = mon.probe_summary(probe["margins"], probe["gaps"])
        monitor["warnings"] = mon.warnings_for(monitor)
        summary = {
            "status": "complete",
            "out": str(out),
            "model": model_spec,
            "checkpoint": saved,
            "pairs": {"source": inputs.source, "read": len(inputs.pairs) + sum(inputs.dropped.values()),
                      "trained": len(kept), "dropped": dict(dropped), "max_length": config.max_length},
            "training": {
                "steps": trainer.state.global_step, "steps_this_run": writer.steps_this_run,
                "resumed_from": checkpoint, "epochs": trainer.state.epoch, "global_batch": global_batch,
                "world_size": state.num_processes, "device": _device_name(), "precision": precision,
                "model_dtype": model_dtype, "learning_rate": config.resolved_learning_rate,
                "train_seconds": round(writer.seconds, 2), "setup_seconds": round(setup_s, 2),
                "pairs_per_second": _pairs_per_second(writer, global_batch, len(kept), config),
                "pairs_per_second_steady": _steady_rate(rows, global_batch),
                "train_loss": result.training_loss,
            },
            "monitor": monitor,
            "hash": inputs.hash,
            "seconds": round(time.time() - t0, 2),
        }
        try:
            mon.plot_curves(rows, monitor, out / "monitor.png", config.beta,
                            (probe["gaps"], probe["margins"]) if probe else None,
                            title=f"DPO {config.finetune} on {len(kept)} pairs: {model_spec}")
            summary["plot"] = "monitor.png"
        except ImportError as exc:  # matplotlib is optional on training boxes
            summary["plot"] = f"skipped: {exc}"
        if not config.keep_checkpoints:
            shutil.rmtree(out / "checkpoints", ignore_errors=True)
        write_json(out / "summary.json", summary)  # last: its status marks the run finished
        from safepref.train.modelcard import write_model_card

        write_model_card(out)  # README.md, the hub's model card; evaluation results are added later
    state.wait_for_everyone()
    return summary


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


def _pairs_per_second(writer: Any, global_batch: int, n_pairs: int, config: DPOTrainConfig) -> float | None:
    """Pairs processed in this run's training loop per second (the last batch of an epoch may be short)."""
    if writer.seconds <= 0 or writer.steps_this_run <= 0:
        return None
    processed = writer.steps_this_run * global_batch
    if config.max_steps == -1:
        processed = min(processed, int(n_pairs * config.num_train_epochs))
    return round(processed / writer.seconds, 2)


def _steady_rate(rows: list[dict[str, Any]], global_batch: int) -> float | None:
    """Pairs per second between the first and the last logged step of this run (start-up excluded)."""
    timed = [r for r in rows if "elapsed_s" in r]
    if len(timed) < 3:
        return None
    first, last = timed[0], timed[-1]
    seconds = last["elapsed_s"] - first["elapsed_s"]
    return round((last["step"] - first["step"]) * global_batch / seconds, 2) if seconds > 0 else None
