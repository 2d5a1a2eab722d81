"""Reference backend: batched transformers ``generate`` with left padding (the study's way)."""

from __future__ import annotations

from typing import Any

from safepref import models
from safepref.generate import GenerationConfig, adds_special_tokens, batch_seed
from safepref.records import Prompt


class HFBackend:
    """``model.generate`` on batches of prompts, ``num_samples`` sequences each, seeded per batch."""

    default_batch_size = 8

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto",
                 trust_remote_code: bool = False, model_obj: Any = None, tokenizer: Any = None) -> None:
        self.model_name = model
        self.tokenizer = tokenizer or models.load_tokenizer(model, padding_side="left",
                                                            trust_remote_code=trust_remote_code)
        self.model = model_obj or models.load_model(model, device=device, dtype=dtype,
                                                    trust_remote_code=trust_remote_code)
        self.tokenizer.padding_side = "left"

    @property
    def context_length(self) -> int | None:
        return models.context_length(self.model)

    def prompt_tokens(self, prompts: list[Prompt], config: GenerationConfig) -> list[int]:
        from safepref.generate import prompt_token_counts

        return prompt_token_counts(self.tokenizer, prompts, config)

    def describe(self) -> dict[str, Any]:
        from safepref.random_models import provenance

        return {"backend": "hf", "name": self.model_name, **provenance(self.model_name)}

    def generation_kwargs(self, config: GenerationConfig) -> dict[str, Any]:
        kwargs: dict[str, Any] = dict(
            max_new_tokens=config.max_new_tokens,
            do_sample=config.do_sample,
            num_return_sequences=config.num_samples,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        if config.do_sample:
            # top_k=0 switches top-k off (transformers skips it); None would fall back to the model's default.
            kwargs.update(temperature=config.temperature, top_p=config.top_p, top_k=config.top_k)
        else:  # silence generation_config defaults that only apply to sampling
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if getattr(self.model.config, "safepref_random_weights", False):
            # random weights (safepref.random_models): never stop early, timings need the configured lengths
            kwargs["min_new_tokens"] = config.max_new_tokens
        if config.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = config.repetition_penalty
        if config.no_repeat_ngram_size:
            kwargs["no_repeat_ngram_size"] = config.no_repeat_ngram_size
        return kwargs

    def encode(self, prompts: list[Prompt], config: GenerationConfig) -> Any:
        texts = [models.format_prompt(self.tokenizer, p.text, config.prompt_format, config.system_prompt)
                 for p in prompts]
        return self.tokenizer(texts, return_tensors="pt", padding=True,
                              add_special_tokens=adds_special_tokens(config))

    def generate(self, prompts: list[Prompt], config: GenerationConfig) -> list[list[str]]:
        import torch

        batch = self.encode(prompts, config).to(self.model.device)
        torch.manual_seed(batch_seed(config.seed, [p.prompt_id for p in prompts]))
        with torch.inference_mode():
            output = self.model.generate(**batch, **self.generation_kwargs(config))
        new_tokens = output[:, batch["input_ids"].shape[1]:]  # (B * n, T_new)
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        n = config.num_samples
        return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]
