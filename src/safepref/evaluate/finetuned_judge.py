"""A fine-tuned cross-encoder judge (``safepref eval train-judge --kind finetuned``): a sequence classifier reads
the request and the answer together and its head says harmful or not. Backbones (``PRESETS``): all-MiniLM-L6-v2
(``minilm``, the default; the request and the answer as a text pair) or the embedded SmolLM2-135M-Instruct
(``smollm2``; the conversation through its chat template, the RM's ``chat`` format).

  safepref eval train-judge --kind finetuned --out judges/minilm-ce        # on a GPU: about a minute
  safepref eval train-judge --kind finetuned --preset smollm2 --out judges/smollm2-ce   # GPU: a few minutes
  safepref eval jailbreak --answers a.jsonl --judge hf-classifier:judges/minilm-ce --out out/jb

Same data and splits as the default ``safety`` judge (``safety_judge.training_items``); training through
transformers' ``Trainer`` (AdamW, linear decay, bf16 on a GPU). The result is an ordinary sequence-classification
checkpoint (safetensors) with labels ``unharmful``/``harmful`` and its input format in its config
(``reward.chat.CONFIG_KEY``), so the existing ``hf-classifier:<folder>`` judge scores it as it was trained. It
needs a GPU to train in reasonable time; scoring runs on a CPU too (slower than ``safety``).
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
from safepref.reward.finetuned import MINILM_BACKBONE

log = logging.getLogger(__name__)


@dataclass
class FinetunedJudgeConfig:
    backbone: str = MINILM_BACKBONE  # the embedded name, all-MiniLM-L6-v2, a folder or a hub id
    input_format: str = "auto"  # pair, chat, or auto (chat when the tokenizer has a chat template)
    epochs: float = 2.0
    learning_rate: float = 5e-5
    batch_size: int = 64
    max_length: int = 384  # request + answer tokens; the request keeps at most its last 1,000 characters
    seed: int = 0


# Named starting points (``--preset``); the SmolLM2 rate is the fine-tuned RM's (``reward.finetuned``).
PRESETS: dict[str, dict[str, Any]] = {
    "minilm": {},
    "smollm2": {"backbone": "smollm2-135m-instruct", "learning_rate": 2e-5, "batch_size": 32},
}


def _encode(tokenizer: Any, input_format: str, items: list[LabelledItem], max_length: int) -> list[dict]:
    from safepref.reward.chat import encode

    # the request keeps at most its last 1,000 characters
    return encode(tokenizer, input_format, [i.prompt[-1000:] for i in items], [i.response for i in items],
                  max_length)


class _Rows:
    """A torch-style dataset over tokenized items (no ``datasets`` dependency)."""

    def __init__(self, features: list[dict], labels: list[int]) -> None:
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.features[index], "labels": self.labels[index]}


class _Collator:
    """Right-padded batches in the RM's layout (``reward.chat.collate``) plus the labels."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        from safepref.reward.chat import collate

        batch = collate([{k: v for k, v in r.items() if k != "labels"} for r in rows], self.pad_token_id)
        batch["labels"] = torch.tensor([r["labels"] for r in rows])
        return batch


def train_finetuned_judge(out: str | Path, config: FinetunedJudgeConfig | None = None,
                          train_sets: list[str] | None = None, max_rows_per_set: int | None = None
                          ) -> dict[str, Any]:
    """Fine-tune the backbone on the train split, save the checkpoint to ``out``, return its metadata."""
    from safepref.paths import check_replaceable

    # Its files (config.json, model.safetensors) would overwrite a user's checkpoint: only our own may go.
    check_replaceable(out, "safepref_judge.json", "fine-tuned judge")
    import torch
    from transformers import Trainer, TrainingArguments

    from safepref.evaluate.safety_judge import GATE_SETS, TRAIN_SETS, SafetyJudgeConfig, training_items
    from safepref.reward.finetuned import load_classifier

    config = config or FinetunedJudgeConfig()
    started = time.time()
    # Not the harmless-request sets by default: their answers are one small model's, and an answer judge trained
    # on them learns that model's style as harmless (safety_judge.GATE_SETS; benchmarks/judge_gpu.py measures both).
    default = [s for s in TRAIN_SETS if s not in GATE_SETS]
    items, counts = training_items(SafetyJudgeConfig(train_sets=list(train_sets or default),
                                                        max_rows_per_set=max_rows_per_set))
    model, tokenizer, input_format = load_classifier(
        config.backbone, config.input_format, num_labels=2, id2label={0: "unharmful", 1: "harmful"},
        label2id={"unharmful": 0, "harmful": 1})
    rows = _Rows(_encode(tokenizer, input_format, items, config.max_length), [int(i.label) for i in items])
    cuda = torch.cuda.is_available()
    steps = math.ceil(len(rows) / config.batch_size) * config.epochs
    args = TrainingArguments(output_dir=str(Path(out) / "trainer"), num_train_epochs=config.epochs,
                             per_device_train_batch_size=config.batch_size, learning_rate=config.learning_rate,
                             warmup_steps=int(0.06 * steps), weight_decay=0.01, bf16=cuda, logging_steps=50,
                             save_strategy="no", report_to=[], seed=config.seed, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=_Collator(tokenizer.pad_token_id))
    trainer.train()
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    name = "minilm" if config.backbone == MINILM_BACKBONE else Path(config.backbone).name
    meta = {"name": f"finetuned-{name}", "input_format": input_format, "config": asdict(config), "train": counts,
            "train_rows": len(items), "seconds": round(time.time() - started, 1), "device": "cuda" if cuda else "cpu"}
    write_json(Path(out) / "safepref_judge.json", meta)
    return meta


def predict_proba(folder: str | Path, items: list[LabelledItem], batch_size: int = 128,
                  max_length: int = 384) -> np.ndarray:
    """P(harmful) of each item under a fine-tuned checkpoint (GPU when there is one), read in the input format
    its config names; batched in length order, returned in the items' order."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from safepref.reward.chat import CONFIG_KEY, collate

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder), use_safetensors=True).to(device).eval()
    features = _encode(tokenizer, getattr(model.config, CONFIG_KEY, "pair"), items, max_length)
    order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
    proba = np.zeros(len(features))
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = {k: v.to(device) for k, v in collate([features[i] for i in chunk], model.config.pad_token_id).items()}
        with torch.inference_mode():
            proba[chunk] = torch.softmax(model(**batch).logits.float(), dim=-1)[:, 1].cpu().numpy()
    return proba
