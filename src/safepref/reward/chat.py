"""How a sequence-classification reward model reads (prompt, response): the input formats, shared by scoring
(``hf.py``) and training (``finetuned.py``) so a trained model is scored exactly as it was trained.

- ``pair``: the tokenizer's text pair (prompt, response), truncated together to ``max_length`` tokens,
  longest side first: the study's ``OpenAssistant/reward-model-deberta-v3-large-v2`` input.
- ``chat``: the conversation (user turns, then the response as the assistant's turn) rendered through the
  tokenizer's chat template, as Skywork-Reward, ArmoRM and the Llama-3.1 based RMs of RewardBench read it. A
  sequence longer than ``max_length`` keeps its last tokens: the answer and the turns nearest to it.

Dialogue prompts reach ``score()`` as one string rendered by ``safepref.reward.conversation_text``
("Human: …\\n\\nAssistant: …\\n\\nHuman: …"); ``messages_of`` turns that back into messages for the template.
"""

from __future__ import annotations

import re
from typing import Any

from safepref.errors import ModelError

INPUT_FORMATS = ("pair", "chat")
# A key of the model's config.json: a checkpoint that says how it reads its input (safepref's fine-tuned RMs
# write it) is scored that way under plain ``hf:``.
CONFIG_KEY = "reward_input_format"

_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant|System): ")
_ROLES = {"Human": "user", "Assistant": "assistant", "System": "system"}


def messages_of(prompt: str) -> list[dict[str, str]]:
    """Chat messages of a prompt string: a dialogue rendered by ``conversation_text`` is split back into its
    turns; any other text is one user turn."""
    if not prompt.startswith(("Human: ", "System: ")) or "\n\nAssistant: " not in prompt:
        return [{"role": "user", "content": prompt}]
    parts = _TURN.split(prompt)  # ['', 'Human', text, 'Assistant', text, ...]
    return [{"role": _ROLES[role], "content": text} for role, text in zip(parts[1::2], parts[2::2], strict=True)]


def require_chat_template(tokenizer: Any, model: str) -> None:
    """Raise ModelError unless the tokenizer has a chat template (a chat RM reads its input through it)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(f"reward model '{model}' has no chat template in its tokenizer: a chat-format reward "
                         "model reads the conversation through it (use hf:<model> for a text-pair model)")


def encode(tokenizer: Any, input_format: str, prompts: list[str], responses: list[str],
           max_length: int) -> list[dict[str, list[int]]]:
    """Token ids (and token type ids where the tokenizer makes them) of each (prompt, response), unpadded."""
    if input_format == "pair":
        enc = tokenizer(prompts, responses, truncation=True, max_length=max_length)
        keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
        return [{k: enc[k][i] for k in keys} for i in range(len(prompts))]
    if input_format != "chat":
        raise ModelError(f"unknown reward input format '{input_format}'; known: {', '.join(INPUT_FORMATS)}")
    texts = [tokenizer.apply_chat_template(messages_of(p) + [{"role": "assistant", "content": r}], tokenize=False)
             for p, r in zip(prompts, responses, strict=True)]
    # The template wrote the special tokens already.
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [{"input_ids": seq[-max_length:]} for seq in ids]


def collate(features: list[dict[str, list[int]]], pad_token_id: int) -> dict[str, Any]:
    """Right-padded tensors (B, T): input_ids, attention_mask and token_type_ids when the features have them.
    Decoder classifiers pool the last non-pad token, encoder ones the first: right padding suits both."""
    import torch

    width = max(len(f["input_ids"]) for f in features)
    batch: dict[str, Any] = {
        "input_ids": torch.tensor([f["input_ids"] + [pad_token_id] * (width - len(f["input_ids"]))
                                   for f in features]),
        "attention_mask": torch.tensor([[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"]))
                                        for f in features]),
    }
    if "token_type_ids" in features[0]:
        batch["token_type_ids"] = torch.tensor([f["token_type_ids"] + [0] * (width - len(f["token_type_ids"]))
                                                for f in features])
    return batch
