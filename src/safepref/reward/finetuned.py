"""The fine-tuned safety reward model: a whole sequence classifier trained on preference pairs with a
Bradley-Terry loss through TRL's ``RewardTrainer``.

  safepref rm train --kind finetuned --out DIR                  # preset auto: smollm2 on a GPU, minilm-cpu else
  safepref rm train --kind finetuned --preset minilm-cpu --name safety-minilm-ft

Data (``safepref.reward.data``): PKU-SafeRLHF pairs (``pku-realign``, ``pku-paper``) and pairs derived from the
labelled safety answers (a safe and an unsafe answer to the same prompt, ``labels.label_pairs``), split by
prompt hash exactly as the head model splits them; hh-harmless prompts are never trained on. Pairs whose two
answers are the same text are dropped and counted.

Model: ``AutoModelForSequenceClassification`` from the backbone with one output (a new score head), reading
its input in the format of ``chat.py`` (``chat`` for a backbone with a chat template, ``pair`` else), the
same function scoring uses. Loss: ``-log sigmoid(r_chosen - r_rejected)`` plus TRL's reward centering
(``center_rewards``). Evaluated on the dev split every ``eval_every`` of an epoch; the checkpoint with the
lowest dev loss is kept, training stops after ``patience`` evaluations without a better one.

Artifact: a normal checkpoint folder (``model.safetensors``, config with ``reward_input_format``, tokenizer)
plus ``safepref_rm.json`` (config, data counts, metrics, history, command) and ``seen_prompt_ids.txt``. It loads
as ``hf:<folder>`` or ``offline:<folder or name>``; ``rm eval`` drops pairs on its training prompts.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from safepref import provenance
from safepref.config import field, require
from safepref.errors import ConfigError, DataError
from safepref.records import PreferencePair, write_json, write_text
from safepref.reward import conversation_text, pairwise_accuracy, score_pairs
from safepref.reward.chat import CONFIG_KEY, INPUT_FORMATS, collate, encode, require_chat_template
from safepref.reward.data import seen_prompt_ids, split_sources
from safepref.reward.labels import label_pairs
from safepref.reward.offline import FINETUNED_MARKER

FORMAT = "safepref-finetuned-rm"
# Bumped when a preset's recipe changes, so a pipeline's rm/train stage made with the earlier recipe is not
# reused (its cache key holds this). 2: the smollm2 preset trains on hh-rlhf harmless' training split too.
RECIPE_VERSION = 2
MINILM_BACKBONE = "all-MiniLM-L6-v2"

# Named starting points; any field can still be set. ``smollm2`` is the GPU recipe (minutes on one GPU),
# ``minilm-cpu`` a smaller one that trains on two CPU cores in about ten minutes. ``smollm2`` also trains on the
# training-split prompts of hh-rlhf harmless (so `rm eval` scores hh-rlhf on its held-out prompts only): measured
# better on both held-out sets than without them (README, paired McNemar on pairs both held out).
PRESETS: dict[str, dict[str, Any]] = {
    "smollm2": {"name": "safety-smollm2", "backbone": "smollm2-135m-instruct",
                "pairs": ["pku-realign", "pku-paper", "hh-harmless"], "exclude": []},
    "minilm-cpu": {"name": "safety-minilm-ft", "backbone": MINILM_BACKBONE, "limit": 600, "max_length": 256,
                   "batch_size": 16, "lr": 2e-4, "epochs": 2.0, "eval_every": 0.5},
}


@dataclass
class FinetunedRMConfig:
    name: str = field("safety-smollm2", help="artifact name; saved under $SAFEPREF_CACHE/reward/<name>/")
    backbone: str = field("smollm2-135m-instruct", help="model to start from: the embedded name, "
                                                        "all-MiniLM-L6-v2, a folder or a hub id")
    input_format: str = field("auto", help="chat (through the chat template), pair (text pair), or auto: "
                                           "chat when the tokenizer has a chat template")
    pairs: list[str] = field(default_factory=lambda: ["pku-realign", "pku-paper"],
                             help="preference-pair sources (chosen = safer)")
    labels: list[str] = field(default_factory=lambda: ["safety-labels"],
                              help="labelled-answer sources; a safe and an unsafe answer to one prompt make a pair")
    exclude: list[str] = field(default_factory=lambda: ["hh-harmless"],
                               help="sources whose prompts are never trained on (evaluation sets)")
    epochs: float = field(3.0, help="at most this many passes over the training pairs")
    eval_every: float = field(0.5, help="evaluate on the dev split every this fraction of an epoch")
    patience: int = field(2, help="stop after this many evaluations without a lower dev loss")
    batch_size: int = field(32, help="pairs per step")
    lr: float = field(2e-5, help="AdamW learning rate (cosine schedule, 10% warmup)")
    weight_decay: float = field(0.0, help="AdamW weight decay")
    center_rewards: float = field(0.01, help="TRL's center_rewards_coefficient: keeps rewards near 0; 0 = off")
    max_length: int = field(512, help="tokens per (prompt, response); chat keeps the last ones, pair cuts the "
                                      "longer side")
    dev_fraction: float = field(0.1, help="share of prompts for the dev split (early stopping)")
    test_fraction: float = field(0.2, help="share of prompts held out (never seen)")
    seed: int = field(0, help="seed of the prompt split and of training")
    limit: int | None = field(None, help="read at most this many rows of each source (a quick, smaller run)")

    def __post_init__(self) -> None:
        require(bool(self.name) and "/" not in self.name, "name", "must be a plain name without '/'")
        require(bool(self.pairs) or bool(self.labels), "pairs", "give pair or labelled sources to train on")
        require(self.input_format in ("auto", *INPUT_FORMATS), "input_format", "must be auto, chat or pair")
        require(0 < self.epochs <= 100, "epochs", "must be in (0, 100]")
        require(0 < self.eval_every <= 1, "eval_every", "must be in (0, 1]")
        require(self.patience >= 1, "patience", "must be >= 1")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")
        require(0 < self.lr < 1, "lr", "must be in (0, 1)")
        require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        require(self.center_rewards >= 0, "center_rewards", "must be >= 0")
        require(self.max_length >= 16, "max_length", "must be >= 16")
        require(0 < self.dev_fraction < 1, "dev_fraction", "must be in (0, 1)")
        require(0 < self.test_fraction < 1, "test_fraction", "must be in (0, 1)")
        require(self.dev_fraction + self.test_fraction < 1, "test_fraction", "dev + test must leave training data")
        require(self.limit is None or self.limit > 0, "limit", "must be positive")

    @property
    def fractions(self) -> dict[str, float]:
        # The same consecutive hash intervals as the head model: both hold out the same test prompts.
        return {"train": 1 - self.dev_fraction - self.test_fraction, "dev": self.dev_fraction,
                "test": self.test_fraction}


def pick_preset(preset: str, device: str) -> dict[str, Any]:
    """The preset's fields; ``auto`` = ``smollm2`` where the model would train on a GPU, ``minilm-cpu`` else."""
    if preset == "auto":
        from safepref.models import pick_device

        preset = "smollm2" if pick_device(device).startswith("cuda") else "minilm-cpu"
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; known: auto, {', '.join(PRESETS)}")
    return {"preset": preset, **PRESETS[preset]}


# ------------------------------------------------------------------------------------------------- data


def training_pairs(config: FinetunedRMConfig,
                   report: dict[str, Any]) -> tuple[dict[str, list[PreferencePair]], set[str]]:
    """(pairs of each split, ids of the prompts trained on). A split's pairs: the pair sources plus the
    labelled answers' pairs; pairs with identical sides are dropped, counted in ``report``."""
    splits = split_sources(config.pairs, config.labels, config.exclude, config.fractions, config.seed,
                           config.limit, report)
    out: dict[str, list[PreferencePair]] = {}
    dropped = 0
    for name, split in splits.items():
        derived = label_pairs(split.labelled)
        report.setdefault("label_pairs", {})[name] = len(derived)
        kept = [p for p in split.pairs + derived if p.chosen_text.strip() != p.rejected_text.strip()]
        dropped += len(split.pairs) + len(derived) - len(kept)
        out[name] = kept
    report["dropped_identical_sides"] = dropped
    return out, seen_prompt_ids(splits)


def _tokenized(pairs: list[PreferencePair], tokenizer: Any, input_format: str, max_length: int) -> Any:
    """A datasets.Dataset with chosen/rejected token ids (TRL's pre-tokenized columns) and token types."""
    from datasets import Dataset

    prompts = [conversation_text(p.prompt) for p in pairs]
    chosen = encode(tokenizer, input_format, prompts, [p.chosen_text for p in pairs], max_length)
    rejected = encode(tokenizer, input_format, prompts, [p.rejected_text for p in pairs], max_length)
    columns: dict[str, list] = {"chosen_ids": [c["input_ids"] for c in chosen],
                                "rejected_ids": [r["input_ids"] for r in rejected]}
    if "token_type_ids" in chosen[0]:
        columns["chosen_type_ids"] = [c["token_type_ids"] for c in chosen]
        columns["rejected_type_ids"] = [r["token_type_ids"] for r in rejected]
    return Dataset.from_dict(columns)


class PairCollator:
    """Chosen sequences first, then rejected (RewardTrainer splits the logits in two halves), right-padded."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        def side(name: str) -> list[dict[str, list[int]]]:
            types = f"{name}_type_ids"
            return [{"input_ids": r[f"{name}_ids"], **({"token_type_ids": r[types]} if types in r else {})}
                    for r in rows]

        return collate(side("chosen") + side("rejected"), self.pad_token_id)


# --------------------------------------------------------------------------------------------- training


def load_classifier(backbone: str, input_format: str, num_labels: int,
                    **labels: Any) -> tuple[Any, Any, str]:
    """(float32 sequence classifier with a new head of ``num_labels`` outputs, tokenizer, input format) of a
    backbone: the embedded name, all-MiniLM-L6-v2, a folder or a hub id. ``input_format`` auto: chat when the
    tokenizer has a chat template. The format goes into the model's config, so scoring reads it the same way.
    Shared by the fine-tuned RM and the fine-tuned judge (``evaluate/finetuned_judge.py``)."""
    import logging

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from safepref.models import minilm_folder, resolve_model

    location = str(minilm_folder()) if backbone == MINILM_BACKBONE else resolve_model(backbone)
    tokenizer = AutoTokenizer.from_pretrained(location)
    if input_format == "auto":
        input_format = "chat" if getattr(tokenizer, "chat_template", None) else "pair"
    if input_format == "chat":
        require_chat_template(tokenizer, backbone)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # "Some weights were newly initialized: score.weight" is expected here: the head is what we train.
    logging.getLogger("transformers.modeling_utils").setLevel(logging.ERROR)
    model = AutoModelForSequenceClassification.from_pretrained(location, num_labels=num_labels, dtype="float32",
                                                               **labels)
    model.config.pad_token_id = tokenizer.pad_token_id
    setattr(model.config, CONFIG_KEY, input_format)
    return model, tokenizer, input_format


def _trainer_args(config: FinetunedRMConfig, work: Path, device: str, steps_per_epoch: int) -> Any:
    from trl import RewardConfig

    cuda = device.startswith("cuda")
    eval_steps = max(1, round(steps_per_epoch * config.eval_every))
    return RewardConfig(
        output_dir=str(work), per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=2 * config.batch_size, num_train_epochs=config.epochs,
        learning_rate=config.lr, lr_scheduler_type="cosine", warmup_steps=0.1, weight_decay=config.weight_decay,
        eval_strategy="steps", eval_steps=eval_steps, save_strategy="steps", save_steps=eval_steps,
        load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False,
        save_total_limit=2, save_only_model=True, logging_steps=max(1, eval_steps // 2), report_to="none",
        bf16=cuda, fp16=False, use_cpu=not cuda, gradient_checkpointing=False, seed=config.seed,
        max_length=None, remove_unused_columns=False, disable_tqdm=True,
        center_rewards_coefficient=config.center_rewards or None, dataloader_num_workers=0)


def train_finetuned_rm(config: FinetunedRMConfig, out: Path, device: str = "auto", command: str | None = None,
                       overwrite: bool = False) -> dict[str, Any]:
    """Train, save the checkpoint folder ``out`` and return its metadata (also in ``safepref_rm.json``).

    Raises ConfigError when ``out`` holds something else, DataError when a split is empty.
    """
    from transformers import EarlyStoppingCallback
    from trl import RewardTrainer

    from safepref.models import pick_device

    started = time.perf_counter()
    device = pick_device(device)
    check_out(out, overwrite)
    report: dict[str, Any] = {"config": asdict(config)}
    splits, seen = training_pairs(config, report)
    if not splits["train"] or not splits["dev"]:
        raise DataError(f"the train or dev split holds no pairs (train {len(splits['train'])}, dev "
                        f"{len(splits['dev'])}): more data (--limit) or a larger dev_fraction")
    model, tokenizer, input_format = load_classifier(config.backbone, config.input_format, num_labels=1)
    timings = {"load": time.perf_counter() - started}
    tick = time.perf_counter()
    train_set = _tokenized(splits["train"], tokenizer, input_format, config.max_length)
    dev_set = _tokenized(splits["dev"], tokenizer, input_format, config.max_length)
    timings["tokenize"] = time.perf_counter() - tick
    steps_per_epoch = -(-len(train_set) // config.batch_size)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=_parent(out)))
    try:
        trainer = RewardTrainer(
            model=model, args=_trainer_args(config, work / "trainer", device, steps_per_epoch),
            data_collator=PairCollator(tokenizer.pad_token_id), train_dataset=train_set, eval_dataset=dev_set,
            processing_class=tokenizer, callbacks=[EarlyStoppingCallback(early_stopping_patience=config.patience)])
        tick = time.perf_counter()
        trainer.train()
        timings["train"] = time.perf_counter() - tick
        model = trainer.model.eval()
        history = [h for h in trainer.state.log_history if "eval_loss" in h or "loss" in h]
        meta = {"format": FORMAT, "recipe_version": RECIPE_VERSION, "name": config.name, "input_format": input_format,
                **report,
                "sizes": {k: len(v) for k, v in splits.items()}, "steps": trainer.state.global_step,
                "best_checkpoint": Path(trainer.state.best_model_checkpoint or "").name, "history": history,
                "device": device, "command": provenance.command(command),
                "versions": provenance.versions("torch", "transformers", "trl")}
        tick = time.perf_counter()
        meta["metrics"] = _split_metrics(model, tokenizer, input_format, config, splits, device)
        timings["evaluate"] = time.perf_counter() - tick
        meta["timings"] = {**timings, "total": time.perf_counter() - started}
        _save(model, tokenizer, meta, seen, work / "model", out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return meta


def _split_metrics(model: Any, tokenizer: Any, input_format: str, config: FinetunedRMConfig,
                   splits: dict[str, list[PreferencePair]], device: str) -> dict[str, Any]:
    from safepref.reward.hf import HFRewardModel

    rm = HFRewardModel(config.name, device=device, model_obj=model, tokenizer=tokenizer,
                       input_format=input_format, max_length=config.max_length)
    metrics = {}
    for name in ("dev", "test"):
        if splits[name]:
            chosen, rejected = score_pairs(rm, splits[name])
            metrics[f"{name}_pairs"] = pairwise_accuracy(chosen, rejected, [p.prompt_id for p in splits[name]])
    return metrics


def check_out(out: Path, overwrite: bool) -> None:
    """``out`` must be new, empty, or (with ``overwrite``) a fine-tuned RM this command wrote before."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / FINETUNED_MARKER).exists():
            raise ConfigError(f"--out {out} is a non-empty folder that holds no fine-tuned reward model "
                              f"({FINETUNED_MARKER}); give a new or empty folder")
        if not overwrite:
            raise ConfigError(f"{out} already holds a reward model; pass --overwrite to replace it, or "
                              "--name/--out")
    try:
        _parent(out).mkdir(parents=True, exist_ok=True)
        probe = Path(tempfile.mkdtemp(prefix=".probe.", dir=_parent(out)))
        probe.rmdir()
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write there ({exc.strerror})") from None


def _parent(out: Path) -> Path:
    return out.resolve().parent


def _save(model: Any, tokenizer: Any, meta: dict[str, Any], seen: set[str], tmp: Path, out: Path) -> None:
    """Write the checkpoint into ``tmp`` and move it into place: ``out`` is whole or absent, never half."""
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    write_text(tmp / "seen_prompt_ids.txt", "".join(f"{i}\n" for i in sorted(seen)))
    write_json(tmp / FINETUNED_MARKER, meta)
    if out.exists():  # checked by check_out: empty, or our own earlier artifact
        shutil.rmtree(out)
    os.replace(tmp, out)
