"""Sequence-classification reward models from the Hugging Face hub or a local folder.

The study's reward model is ``OpenAssistant/reward-model-deberta-v3-large-v2``: the tokenizer gets the text
pair (prompt, response), truncated together to 512 tokens (longest side first), and the score is the single
logit. Any one-logit ``AutoModelForSequenceClassification`` checkpoint works the same way.
"""

from __future__ import annotations

from typing import Any

from safepref.errors import ModelError
from safepref.reward import check_batch


class HFRewardModel:
    """``score(prompts, responses)``: logits of a one-label sequence classifier, batched, in input order.

    Batches are formed over inputs sorted by length (little padding); ``model_obj`` / ``tokenizer`` let a
    caller pass objects already in memory.
    """

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto", batch_size: int = 8,
                 max_length: int = 512, trust_remote_code: bool = False, model_obj: Any = None,
                 tokenizer: Any = None) -> None:
        from safepref.models import pick_device, pick_dtype, resolve_model

        self.name = f"hf:{model}"
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = pick_device(device)
        if model_obj is None or tokenizer is None:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            location = resolve_model(model)
            try:
                tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
                model_obj = AutoModelForSequenceClassification.from_pretrained(
                    location, dtype=pick_dtype(dtype, self.device), trust_remote_code=trust_remote_code)
            except OSError as exc:
                raise ModelError(f"cannot load reward model '{model}' (a hub id needs the network or the "
                                 f"local Hugging Face cache): {str(exc)[:300]}") from None
        num_labels = getattr(model_obj.config, "num_labels", 1)
        if num_labels != 1:
            raise ModelError(f"reward model '{model}' has {num_labels} output labels; a reward model has one "
                             "logit (num_labels=1)")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(model_obj.config, "pad_token_id", None) is None:
            # Decoder classifiers pool the last non-pad token and need to know which id pads.
            model_obj.config.pad_token_id = tokenizer.pad_token_id
        self.tokenizer = tokenizer
        self.model = model_obj.to(self.device).eval()

    def encode(self, prompts: list[str], responses: list[str]) -> Any:
        """Tokenized text pairs, truncated to ``max_length`` tokens in all (the longer side loses tokens)."""
        return self.tokenizer(prompts, responses, truncation=True, max_length=self.max_length, padding=True,
                              return_tensors="pt")

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        import torch

        check_batch(prompts, responses)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(responses[i]), reverse=True)
        scores = [0.0] * len(prompts)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start:start + self.batch_size]
                inputs = self.encode([prompts[i] for i in batch], [responses[i] for i in batch])
                logits = self.model(**inputs.to(self.device)).logits[:, 0].float().cpu().tolist()
                for i, value in zip(batch, logits, strict=True):
                    scores[i] = value
        return scores


def load_hf_reward_model(target: str, device: str = "auto") -> HFRewardModel:
    return HFRewardModel(target, device=device)
