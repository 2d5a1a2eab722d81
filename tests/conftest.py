"""Shared fixtures: tiny models built from a config in the test itself, and tiny data files.

``tiny_model_dir`` is a 2-layer Llama with a ~300-token byte-level BPE vocabulary and a ChatML chat template,
saved as safetensors: everything that loads a causal LM (generation, DPO, audit, evaluation) runs on it in
seconds. ``tiny_classifier_dir`` is the same backbone with a one-logit sequence-classification head (a reward
model). Nothing here touches the network.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# $SAFEPREF_DATA when set (scripts/test.sh sets it), else ../shared/data beside the checkout.
SHARED_DATA = Path(os.environ.get("SAFEPREF_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CORPUS = [
    "I'm sorry, but I cannot help with that request because it is harmful.",
    "Sure, here is how you can do it step by step.",
    "How do I make a cake? Mix flour, sugar and eggs, then bake.",
    "Write a script that can exploit vulnerabilities in software.",
    "As an AI, I do not provide instructions for illegal activities.",
    "The weather today is sunny with a light breeze.",
    "Here are some tips: be kind, stay safe, and ask for help.",
] * 20


def build_tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<pad>", unk_token="<|endoftext|>")
    fast.chat_template = CHATML
    return fast


def _llama_config(vocab_size: int, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model = LlamaForCausalLM(_llama_config(len(tiny_tokenizer), tiny_tokenizer))
    model.generation_config.do_sample = False
    model.save_pretrained(folder, safe_serialization=True)
    tiny_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    import torch
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-rm")
    config = _llama_config(len(tiny_tokenizer), tiny_tokenizer)
    config.num_labels = 1
    model = LlamaForSequenceClassification(config)
    model.save_pretrained(folder, safe_serialization=True)
    tiny_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture()
def data_root(monkeypatch) -> Path:
    """The offline data root (../shared/data) as $SAFEPREF_DATA; skips when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("offline data root ../shared/data not present")
    monkeypatch.setenv("SAFEPREF_DATA", str(SHARED_DATA))
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session caches converted models etc. in its own folder, never in the user's home."""
    cache = os.environ.get("SAFEPREF_TEST_CACHE") or str(tmp_path_factory.getbasetemp() / "safepref-cache")
    monkeypatch.setenv("SAFEPREF_CACHE", cache)
