"""``openai`` backend: answers from any OpenAI-compatible chat endpoint (GPT-4o, or a local server).

    safepref generate --backend openai --model gpt-4o --prompts pku-paper:50 --preset paper-greedy --out out/g
    python -m llama_cpp.server --model model.gguf --port 8000 &
    safepref generate --backend openai --model local --base-url http://127.0.0.1:8000/v1 ... --out out/l

Requests go through ``safepref.api.ChatClient`` (concurrency limit, retries with backoff, every answer cached
under ``<out>/api_cache`` so that a crash loses nothing). How ``GenerationConfig`` maps onto a request:

==========================  ========================================================================
``do_sample=false``         ``temperature=0`` (greedy), no ``top_p``
``temperature``, ``top_p``  same fields (sampling only)
``max_new_tokens``          ``max_tokens``
``seed``                    ``seed``, derived per prompt (``batch_seed(seed, [prompt_id])``), so an
                            answer does not depend on which prompts share its batch
``num_samples``             ``n``. Servers that ignore ``n`` (llama-cpp-python answers one choice) get
                            the missing samples as extra requests with seeds ``seed+1, seed+2 ...``
``system_prompt``           a system message before the user message
``prompt_format``           ``chat``: the prompt as the user message; ``alpaca``: the Alpaca template
                            as the user message (the server still applies its chat template);
                            ``raw`` is refused (a chat endpoint cannot send text without a template)
``repetition_penalty``      NOT ``frequency_penalty`` (additive, by count; the HF/CTRL penalty divides
                            the logit of every token already seen). Sent only with ``extra_sampling``,
                            in ``extra_body`` as ``repeat_penalty`` (llama.cpp's name, same formula) and
                            ``repetition_penalty`` (vLLM / SGLang name); always sent then, because
                            llama-cpp-python's default is 1.1, not 1.0
``top_k``                   ``extra_body.top_k`` with ``extra_sampling`` (0 = off, as in HF); with it
                            ``min_p=0`` too, since llama-cpp-python filters with ``min_p=0.05`` by default
``no_repeat_ngram_size``    no API has it: ignored, with a warning
==========================  ========================================================================

``extra_sampling`` defaults to on for a ``base_url`` (a self-hosted server: llama.cpp, vLLM, SGLang ignore
or accept these fields) and off for OpenAI's API, which rejects unknown fields. Without it, a preset's
``repetition_penalty`` / ``top_k`` are not applied, and a warning says so.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from safepref.api import ChatClient
from safepref.errors import BackendError, ConfigError
from safepref.generate import GenerationConfig, batch_seed
from safepref.models import ALPACA_TEMPLATE
from safepref.records import Prompt

log = logging.getLogger(__name__)

_SEED_RANGE = 2 ** 31  # servers store the seed in a signed 32-bit int


class OpenAIBackend:
    """Backend over ``ChatClient``; see the module docstring for how settings map onto requests."""

    # Enough prompts per call to keep `concurrency` requests in flight; answers are cached one by one, so
    # a large shard loses nothing on a crash.
    default_batch_size = 64

    def __init__(self, model: str, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 8, cache_dir: str | Path | None = None, max_retries: int = 5,
                 timeout: float = 120.0, extra_sampling: bool | None = None, progress: bool = False,
                 retry_base_delay: float = 1.0, **_ignored: Any) -> None:
        self.model_name = model
        self.client = ChatClient(model, base_url=base_url, api_key_env=api_key_env, concurrency=concurrency,
                                 max_retries=max_retries, timeout=timeout, cache_dir=cache_dir,
                                 retry_base_delay=retry_base_delay, progress=progress)
        if extra_sampling is None:
            extra_sampling = base_url is not None and "api.openai.com" not in self.client.endpoint
        self.extra_sampling = extra_sampling
        self._warned: set[str] = set()

    def describe(self) -> dict[str, Any]:
        # Part of the run's identity: what decides the answers, and never the key.
        return {"backend": "openai", "name": self.model_name, "base_url": self.client.endpoint,
                "extra_sampling": self.extra_sampling}

    def messages(self, prompt: Prompt, config: GenerationConfig) -> list[dict[str, str]]:
        if config.prompt_format == "raw":
            raise ConfigError("prompt_format: 'raw' is not possible with a chat endpoint (it always applies a "
                              "chat template); use chat or alpaca")
        if config.prompt_format == "alpaca":  # like the hf backend: the template alone, no system prompt
            return [{"role": "user", "content": ALPACA_TEMPLATE.format(instruction=prompt.text)}]
        messages = [{"role": "system", "content": config.system_prompt}] if config.system_prompt else []
        return [*messages, {"role": "user", "content": prompt.text}]

    def sampling(self, config: GenerationConfig) -> dict[str, Any]:
        """Request parameters for ``config`` (without ``n`` and ``seed``, which vary per request)."""
        params: dict[str, Any] = {"max_tokens": config.max_new_tokens}
        if config.do_sample:
            params.update(temperature=config.temperature, top_p=config.top_p)
        else:
            params["temperature"] = 0.0
        if self.extra_sampling:
            params["extra_body"] = {"repeat_penalty": config.repetition_penalty,
                                    "repetition_penalty": config.repetition_penalty,
                                    "top_k": config.top_k, "min_p": 0.0}
        else:
            if config.repetition_penalty != 1.0:
                self._warn("repetition_penalty", f"repetition_penalty={config.repetition_penalty} is not "
                           f"applied: {self.client.endpoint} has no equivalent (frequency_penalty is another "
                           f"formula); pass extra_sampling=True for a server that takes it")
            if config.top_k:
                self._warn("top_k", f"top_k={config.top_k} is not applied: {self.client.endpoint} has no top_k")
        if config.no_repeat_ngram_size:
            self._warn("no_repeat_ngram_size", f"no_repeat_ngram_size={config.no_repeat_ngram_size} is not "
                       f"applied: OpenAI-compatible endpoints have no such setting")
        return params

    def generate(self, prompts: list[Prompt], config: GenerationConfig) -> list[list[str]]:
        base = self.sampling(config)
        n = config.num_samples
        messages = [self.messages(p, config) for p in prompts]
        seeds = [batch_seed(config.seed, [p.prompt_id]) % _SEED_RANGE for p in prompts]
        first = self.client.choices_many(messages, per_request=[_seed_n(s, n) for s in seeds], desc="openai",
                                         **base)
        answers = [list(choices[:n]) for choices in first]
        # A server that ignored n (llama-cpp-python) gets one request per missing sample, each with its own
        # seed, all in one concurrent round.
        missing = [(i, k) for i, a in enumerate(answers) for k in range(len(a), n)]
        if missing:
            extra = self.client.choices_many([messages[i] for i, _ in missing],
                                             per_request=[_seed_n((seeds[i] + k) % _SEED_RANGE, 1)
                                                          for i, k in missing],
                                             desc="openai", **base)
            for (i, _), choices in zip(missing, extra, strict=True):
                answers[i].extend(choices[:1])
        for prompt, samples in zip(prompts, answers, strict=True):
            if len(samples) != n:
                raise BackendError(f"{self.client.endpoint} returned {len(samples)} of {n} samples for prompt "
                                   f"{prompt.prompt_id}")
        return answers

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)


def _seed_n(seed: int, n: int) -> dict[str, Any]:
    # n=1 is left out so that the request is the plain one every server accepts.
    return {"seed": seed, "n": n} if n > 1 else {"seed": seed}
