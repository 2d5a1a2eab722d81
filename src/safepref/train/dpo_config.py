"""DPO settings: ``DPOTrainConfig`` and its nested LoRA / monitor sections, loaded from YAML plus overrides.

    from safepref.train import load_train_config
    config = load_train_config("configs/train/dpo-smollm2-lora.yaml", ["beta=0.2"])
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safepref import config as cfg
from safepref.config import field, require

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
                       "dataloader_num_workers", "report_to", "precompute_ref_batch_size", "ref_cache", "monitor")


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
    probe_pairs: int = field(128, help="after training, score this many training pairs (each its own margin, "
                                       "in batches) to correlate margin with length gap (0 = off)")

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
    optim: str = field("adamw_torch_fused", help="transformers optimizer name (TRL's default: AdamW as one "
                                                  "fused kernel; adamw_torch = the same update, per-tensor loops)")
    max_length: int = field(1024, help="prompt + answer tokens; longer pairs are dropped (and counted), "
                                       "never truncated")
    prompt_format: str = field("chat", help="chat (tokenizer's chat template), raw (prompt text as is, the "
                                            "study's base/SFT models) or alpaca")
    precompute_ref_log_probs: bool = field(False, help="score the reference model once before training: "
                                                       "no reference forward in each step (LoRA too) and, for "
                                                       "full fine-tuning, no reference copy in memory")
    precompute_ref_batch_size: int | None = field(None, help="batch for that pass (None = training batch)")
    ref_cache: bool = field(True, help="with precompute_ref_log_probs: keep each (prompt, answer)'s reference "
                                       "score in $SAFEPREF_CACHE/ref-logps/ and score only new ones (conditions "
                                       "and seeds of a study share most answers)")
    group_by_length: bool = field(True, help="batch pairs of similar token length together (transformers' "
                                             "LengthGroupedSampler): less padding, the same pairs each epoch "
                                             "in another order; false = TRL's random order")
    gradient_checkpointing: bool = field(True, help="recompute activations: less memory, ~20-30% slower")
    precision: str = field("auto", help="auto (bf16 on a GPU that has it or a CPU with AVX512-BF16/AMX, else fp32), "
                                        "bf16, fp16 or fp32: "
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
