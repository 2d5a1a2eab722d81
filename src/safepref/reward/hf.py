"""Sequence-classification reward models from the Hugging Face hub or a local folder.

- ``hf:<id|folder>``: the text pair (prompt, response), truncated together to 512 tokens (longest side first),
  score = the single logit: the study's ``OpenAssistant/reward-model-deberta-v3-large-v2``. A checkpoint whose
  config.json says ``"reward_input_format": "chat"`` (safepref's fine-tuned RMs) is read as a chat RM instead.
- ``hf-chat:<id|folder>``: the conversation through the tokenizer's chat template (Skywork-Reward, ArmoRM, the
  Llama-3.1 based RMs on RewardBench), score = the single logit. See ``chat.py`` for both formats.

On a GPU the model runs in bf16 with batches of 32; on a CPU in float32 with batches of 8. A folder may hold
``seen_prompt_ids.txt`` (a fine-tuned RM's training prompts): ``rm eval`` drops pairs on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safepref.errors import ModelError
from safepref.reward import check_batch
from safepref.reward.chat import CONFIG_KEY, INPUT_FORMATS, collate, encode, require_chat_template


class HFRewardModel:
    """``score(prompts, responses)``: logits of a one-label sequence classifier, batched, in input order.

    Batches are formed over inputs sorted by length (little padding); ``model_obj`` / ``tokenizer`` let a
    caller pass objects already in memory. ``input_format`` is ``pair``, ``chat`` or ``auto`` (the
    checkpoint's ``reward_input_format``, else ``pair``).
    """

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto", batch_size: int | None = None,
                 max_length: int = 512, input_format: str = "auto", trust_remote_code: bool = False,
                 model_obj: Any = None, tokenizer: Any = None, kind: str = "hf") -> None:
        from safepref.models import pick_device, pick_dtype

        self.name = f"{kind}:{model}"
        self.max_length = max_length
        self.device = pick_device(device)
        self.batch_size = batch_size or (32 if self.device.startswith("cuda") else 8)
        if model_obj is None or tokenizer is None:
            model_obj, tokenizer = _load(model, pick_dtype(dtype, self.device), trust_remote_code)
        num_labels = getattr(model_obj.config, "num_labels", 1)
        if num_labels != 1:
            raise ModelError(f"reward model '{model}' has {num_labels} output labels; a reward model has one "
                             "logit (num_labels=1)")
        if input_format == "auto":
            input_format = getattr(model_obj.config, CONFIG_KEY, None) or "pair"
        if input_format not in INPUT_FORMATS:
            raise ModelError(f"reward model '{model}': unknown input format '{input_format}'; known: "
                             f"{', '.join(INPUT_FORMATS)}")
        if input_format == "chat":
            require_chat_template(tokenizer, model)
        self.input_format = input_format
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(model_obj.config, "pad_token_id", None) is None:
            # Decoder classifiers pool the last non-pad token and need to know which id pads.
            model_obj.config.pad_token_id = tokenizer.pad_token_id
        self.tokenizer = tokenizer
        self.model = model_obj.to(self.device).eval()
        self.seen_prompt_ids = _seen_ids(model)

    def encode(self, prompts: list[str], responses: list[str]) -> Any:
        """Padded tensors of a batch in this model's input format (see ``chat.py``)."""
        features = encode(self.tokenizer, self.input_format, prompts, responses, self.max_length)
        return collate(features, self.tokenizer.pad_token_id)

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        import torch

        check_batch(prompts, responses)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(responses[i]), reverse=True)
        scores = [0.0] * len(prompts)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start:start + self.batch_size]
                inputs = self.encode([prompts[i] for i in batch], [responses[i] for i in batch])
                inputs = {k: v.to(self.device) for k, v in inputs.items()}
                logits = self.model(**inputs).logits[:, 0].float().cpu().tolist()
                for i, value in zip(batch, logits, strict=True):
                    scores[i] = value
        return scores


def _load(model: str, dtype: Any, trust_remote_code: bool) -> tuple[Any, Any]:
    """(model, tokenizer) of a checkpoint; ModelError when it cannot load or has no classification head."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from safepref import random_models
    from safepref.models import resolve_model

    location = resolve_model(model)
    if random_models.is_random(location):  # hf:random:deberta-v3-large: a stand-in of the same shape (rehearsal)
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        return random_models.build(location, device, dtype), AutoTokenizer.from_pretrained(location)
    try:
        config = AutoConfig.from_pretrained(location, trust_remote_code=trust_remote_code)
        _require_head(model, config)
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
        model_obj = AutoModelForSequenceClassification.from_pretrained(
            location, config=config, dtype=dtype, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load reward model '{model}' (a hub id needs the network or the local Hugging "
                         f"Face cache): {str(exc).splitlines()[0][:300]}") from None
    return model_obj, tokenizer


def _require_head(model: str, config: Any) -> None:
    """A checkpoint saved from another head (a causal LM) would get a random score head without a word."""
    architectures = getattr(config, "architectures", None) or []
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ModelError(f"reward model '{model}' has no sequence-classification head (architectures: "
                         f"{', '.join(architectures)}); a reward model outputs one score. Train one with "
                         f"`safepref rm train --kind finetuned --set backbone={model}`")


def _seen_ids(model: str) -> set[str]:
    path = Path(model).expanduser() / "seen_prompt_ids.txt"
    return set(path.read_text(encoding="utf-8").split()) if path.is_file() else set()


def load_hf_reward_model(target: str, device: str = "auto") -> HFRewardModel:
    return HFRewardModel(target, device=device)


def load_chat_reward_model(target: str, device: str = "auto") -> HFRewardModel:
    return HFRewardModel(target, device=device, input_format="chat", kind="hf-chat")
