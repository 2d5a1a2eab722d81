"""A fine-tuned cross-encoder judge (``safepref eval train-judge --kind finetuned``): all-MiniLM-L6-v2 reads
the request and the answer together, as one sequence pair, and its classification head says harmful or not.

  safepref eval train-judge --kind finetuned --out judges/minilm-ce        # on a GPU: about a minute
  safepref eval jailbreak --answers a.jsonl --judge hf-classifier:judges/minilm-ce --out out/jb

Same data and splits as the default ``safety`` judge (``safety_judge.training_items``); training through
transformers' ``Trainer`` (AdamW, linear decay, bf16 on a GPU). The result is an ordinary sequence-classification
checkpoint (safetensors) with labels ``unharmful``/``harmful``, so the existing ``hf-classifier:<folder>`` judge
scores it. It needs a GPU to train in reasonable time; scoring runs on a CPU too (slower than ``safety``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from safepref.evaluate.labels import LabelledItem
from safepref.records import write_json

log = logging.getLogger(__name__)


@dataclass
class FinetunedJudgeConfig:
    epochs: float = 2.0
    learning_rate: float = 5e-5
    batch_size: int = 64
    max_length: int = 384  # request + answer tokens; the request keeps at most its last 1,000 characters
    seed: int = 0


def _tokenize(tokenizer: Any, items: list[LabelledItem], max_length: int) -> dict[str, Any]:
    prompts = [i.prompt[-1000:] for i in items]
    return tokenizer(prompts, [i.response for i in items], truncation="longest_first", max_length=max_length)


class _Rows:
    """A torch-style dataset over tokenized pairs (no ``datasets`` dependency)."""

    def __init__(self, encoded: dict[str, Any], labels: list[int]) -> None:
        self.encoded, self.labels = encoded, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = {k: v[index] for k, v in self.encoded.items()}
        row["labels"] = self.labels[index]
        return row


def train_finetuned_judge(out: str | Path, config: FinetunedJudgeConfig | None = None,
                          train_sets: list[str] | None = None, max_rows_per_set: int | None = None
                          ) -> dict[str, Any]:
    """Fine-tune MiniLM on the train split, save the checkpoint to ``out``, return its metadata."""
    from safepref.paths import check_replaceable

    # Its files (config.json, model.safetensors) would overwrite a user's checkpoint: only our own may go.
    check_replaceable(out, "safepref_judge.json", "fine-tuned judge")
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from safepref.evaluate.safety_judge import GATE_SETS, TRAIN_SETS, SafetyJudgeConfig, training_items
    from safepref.models import minilm_folder

    config = config or FinetunedJudgeConfig()
    started = time.time()
    # Not the harmless-request sets by default: their answers are one small model's, and an answer judge trained
    # on them learns that model's style as harmless (safety_judge.GATE_SETS; benchmarks/judge_gpu.py measures both).
    default = [s for s in TRAIN_SETS if s not in GATE_SETS]
    items, counts = training_items(SafetyJudgeConfig(train_sets=list(train_sets or default),
                                                        max_rows_per_set=max_rows_per_set))
    base = str(minilm_folder())
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=2, id2label={0: "unharmful", 1: "harmful"}, label2id={"unharmful": 0, "harmful": 1})
    rows = _Rows(_tokenize(tokenizer, items, config.max_length), [int(i.label) for i in items])
    cuda = torch.cuda.is_available()
    steps = math.ceil(len(rows) / config.batch_size) * config.epochs
    args = TrainingArguments(output_dir=str(Path(out) / "trainer"), num_train_epochs=config.epochs,
                             per_device_train_batch_size=config.batch_size, learning_rate=config.learning_rate,
                             warmup_steps=int(0.06 * steps), weight_decay=0.01, bf16=cuda, logging_steps=50, save_strategy="no",
                             report_to=[], seed=config.seed, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=DataCollatorWithPadding(tokenizer))
    trainer.train()
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    meta = {"name": "finetuned-minilm", "config": asdict(config), "train": counts, "train_rows": len(items),
            "seconds": round(time.time() - started, 1), "device": "cuda" if cuda else "cpu"}
    write_json(Path(out) / "safepref_judge.json", meta)
    return meta


def predict_proba(folder: str | Path, items: list[LabelledItem], batch_size: int = 128,
                  max_length: int = 384) -> np.ndarray:
    """P(harmful) of each item under a fine-tuned checkpoint (GPU when there is one)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).to(device).eval()
    out = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        batch = tokenizer([i.prompt[-1000:] for i in chunk], [i.response for i in chunk], truncation="longest_first",
                          max_length=max_length, padding=True, return_tensors="pt").to(device)
        with torch.inference_mode():
            out.append(torch.softmax(model(**batch).logits.float(), dim=-1)[:, 1].cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)
