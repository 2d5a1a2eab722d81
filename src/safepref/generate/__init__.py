"""Generation: answers to prompts from a model, behind one interface, written in resumable shards.

A backend turns a batch of prompts into ``num_samples`` answers each::

    class Backend(Protocol):
        def generate(self, prompts: list[Prompt], config: GenerationConfig) -> list[list[str]]: ...
        def describe(self) -> dict: ...   # provenance: backend, model, resolved location

Backends are chosen by name from ``BACKENDS`` (``hf``, ``openai``, ``fast``). ``run_generation`` owns
everything else: the work order (prompts sorted by length so batches pad little), shards written atomically
as they finish, resume after a crash, the min-length filter, and the summary.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from safepref import config as cfg
from safepref.config import field, require
from safepref.errors import ConfigError, SafeprefError, did_you_mean
from safepref.generate import shards
from safepref.records import Prompt, Response, read_records, write_json, write_jsonl
from safepref.registry import Registry

log = logging.getLogger(__name__)


@dataclass
class GenerationConfig:
    max_new_tokens: int = field(128, help="new tokens per answer")
    do_sample: bool = field(True, help="sample (true) or greedy decoding (false)")
    temperature: float = field(0.5, help="sampling temperature (ignored when greedy)")
    top_p: float = field(0.9, help="nucleus sampling mass (ignored when greedy)")
    top_k: int = field(0, help="top-k sampling (0 = off; transformers' own default is 50)")
    repetition_penalty: float = field(1.0, help="CTRL-style repetition penalty (1.0 = off)")
    no_repeat_ngram_size: int = field(0, help="forbid repeating any n-gram of this size (0 = off)")
    num_samples: int = field(1, help="answers per prompt")
    min_chars: int = field(0, help="answers shorter than this (after stripping) are dropped and counted")
    seed: int = field(0, help="random seed; each batch's seed derives from it and the batch's prompt ids")
    batch_size: int | None = field(None, help="prompts handed to the backend at once (None = the backend's "
                                              "own default: 8 for hf, 512 for fast, 64 for openai)")
    prompt_format: str = field("chat", help="chat (chat template), raw (text as is) or alpaca (study's eval)")
    system_prompt: str | None = field(None, help="system message for chat prompting (None = model default)")
    shard_size: int | None = field(None, help="prompts per output shard; a killed run redoes at most one "
                                              "shard (None = 2 batches)")
    add_special_tokens: bool | None = field(None, help="let the tokenizer add BOS etc. to the prompt text (None = "
                                                       "yes for raw/alpaca, no for chat, whose template holds "
                                                       "them; the study: false)")

    def __post_init__(self) -> None:
        cfg.require_finite(self)
        require(self.max_new_tokens > 0, "max_new_tokens", "must be positive")
        require(self.temperature > 0, "temperature", "must be positive")
        require(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        require(self.top_k >= 0, "top_k", "must be >= 0")
        require(self.repetition_penalty > 0, "repetition_penalty", "must be positive")
        require(self.no_repeat_ngram_size >= 0, "no_repeat_ngram_size", "must be >= 0")
        require(self.num_samples >= 1, "num_samples", "must be >= 1")
        require(self.do_sample or self.num_samples == 1, "num_samples",
                "greedy decoding gives one answer; set do_sample=true for several")
        require(self.min_chars >= 0, "min_chars", "must be >= 0")
        require(self.batch_size is None or self.batch_size >= 1, "batch_size", "must be >= 1")
        require(self.shard_size is None or self.shard_size >= 1, "shard_size", "must be >= 1")
        require(self.prompt_format in ("chat", "raw", "alpaca"), "prompt_format",
                f"must be chat, raw or alpaca, got {self.prompt_format!r}")


PRESETS: dict[str, dict[str, Any]] = {
    # The study's sampling pass for Self+RM. Its transformers `generate` call set no top_k, so the library
    # default top_k=50 applied; its prompts were tokenized with add_special_tokens=False (no BOS on raw text).
    # The prompt format is not part of the preset: the study gave base/SFT models raw text (`prompt_format=raw`,
    # as the paper configs set); the default here is chat. Differences that remain: the openai backend cannot
    # apply top_k or repetition_penalty against OpenAI's API (a warning says so); seeds are per batch (the study
    # set none); a prompt counts its samples by prompt_id (the study used a running counter, see BRIEF).
    "paper-sample": dict(do_sample=True, temperature=0.5, top_p=0.9, top_k=50, repetition_penalty=1.2,
                         no_repeat_ngram_size=3, max_new_tokens=128, num_samples=5, min_chars=5,
                         add_special_tokens=False),
    # The study's greedy pass (the "Self" rejected side): do_sample=False, max_new_tokens=128, no BOS added.
    "paper-greedy": dict(do_sample=False, max_new_tokens=128, num_samples=1, add_special_tokens=False),
    # The study's jailbreak evaluation: Alpaca template, greedy, 512 new tokens. Difference: the tokenizer's
    # special tokens (BOS) are added as transformers does by default; the study's evaluation script is not
    # known to turn them off, so this preset does not either.
    "paper-eval": dict(do_sample=False, max_new_tokens=512, num_samples=1, prompt_format="alpaca"),
}


def adds_special_tokens(config: GenerationConfig) -> bool:
    """Whether the tokenizer should add its special tokens (BOS) to the formatted prompt: as configured, else
    not for chat (the template already holds them) and yes otherwise."""
    if config.add_special_tokens is not None:
        return config.add_special_tokens
    return config.prompt_format != "chat"


def generation_config(preset: str | None = None, path: str | None = None,
                      overrides: list[str] | None = None) -> GenerationConfig:
    """Preset <- YAML file <- ``key=value`` overrides."""
    base: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            hint = did_you_mean(preset, list(PRESETS))
            raise ConfigError(f"unknown preset '{preset}'.{hint} Known: {', '.join(PRESETS)}")
        base = dict(PRESETS[preset])
    return cfg.load_config(GenerationConfig, path, overrides, base=base)


class Backend(Protocol):
    """Optional, for local models: ``context_length`` (int | None) and ``prompt_tokens(prompts, config)``
    (token count of each formatted prompt); with them, prompts that cannot fit are skipped and counted."""

    default_batch_size: int  # prompts per generate() call when the config leaves batch_size unset

    def generate(self, prompts: list[Prompt], config: GenerationConfig) -> list[list[str]]: ...

    def describe(self) -> dict[str, Any]: ...


# name -> "module:Class"; imported lazily so that `safepref --help` stays fast and optional
# dependencies (openai, vllm) are only needed by the backend that uses them. A new backend: its module (a class
# taking (model, **options) with the Backend methods) and one line here.
BACKENDS: Registry = Registry("generation backend", {
    "hf": "safepref.generate.hf:HFBackend",
    "openai": "safepref.generate.openai_api:OpenAIBackend",
    "fast": "safepref.generate.fast:FastBackend",
})


def make_backend(name: str, model: str, **options: Any) -> Backend:
    """Instantiate a backend by name; unknown names fail with the list of known ones (ConfigError), a missing
    optional package with its name (SafeprefError)."""
    return BACKENDS.load(name)(model, **options)


def default_backend() -> str:
    """``fast`` on a CUDA GPU (when available), ``hf`` otherwise."""
    try:
        import torch

        if torch.cuda.is_available() and "fast" in BACKENDS:
            importlib.import_module(BACKENDS["fast"].split(":")[0])
            return "fast"
    except Exception:  # noqa: BLE001 - any failure falls back to the reference backend
        pass
    return "hf"


def batch_seed(seed: int, prompt_ids: list[str]) -> int:
    """Seed for one batch: the same prompts with the same seed always sample the same answers."""
    digest = hashlib.sha256(f"{seed}:{','.join(prompt_ids)}".encode()).hexdigest()
    return int(digest[:8], 16)


# ------------------------------------------------------------------------------------- resumable runner


def _settings_for_provenance(config: GenerationConfig) -> dict[str, Any]:
    settings = dataclasses.asdict(config)
    for key in ("batch_size", "shard_size"):  # do not change answers' meaning
        settings.pop(key)
    if settings["add_special_tokens"] is None:  # the default: left out so that older runs keep their hash
        settings.pop("add_special_tokens")
    return settings


def run_generation(prompts: list[Prompt], backend: Backend, config: GenerationConfig, out_dir: str | Path,
                   overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Generate answers for ``prompts`` into ``out_dir`` and return the summary.

    Layout (see ``generate.shards``): ``config.json`` (the run's marker: settings, backend, hash),
    ``shards/shard-NNNNN.jsonl`` plus a ``.done.json`` marker each (written after the shard, holding its row
    count and sha256), ``responses.jsonl`` (all shards merged, at the end) and ``summary.json``.

    A rerun with the same settings resumes: prompts whose shard is done and intact are skipped; a shard that
    was deleted, truncated or edited is generated again. A rerun with other settings into a folder that holds
    a run raises SafeprefError unless ``overwrite`` (which deletes only that run's own files); a non-empty
    folder that holds no generation run is always refused.
    """
    out_dir = Path(out_dir)
    shard_dir = out_dir / "shards"
    identity = {"generation": _settings_for_provenance(config), "backend": backend.describe(),
                "prompts": sorted(p.prompt_id for p in prompts)}
    run_hash = cfg.config_hash(identity)
    shards.prepare(out_dir, run_hash, overwrite)
    shard_dir.mkdir(parents=True, exist_ok=True)
    shards.write_marker(out_dir, {"hash": run_hash, "generation": identity["generation"],
                                  "backend": identity["backend"], "num_prompts": len(prompts)})

    done = shards.load_done(shard_dir)
    todo = [p for p in prompts if p.prompt_id not in done.prompt_ids]
    todo, too_long = _drop_too_long(todo, backend, config)
    # Length-sorted work order: batches of similar length waste little compute on padding.
    todo.sort(key=lambda p: (len(p.text), p.prompt_id))
    started = time.time()
    generated_chars = _generate_shards(todo, backend, config, identity["generation"], shard_dir,
                                       done, progress, total=len(prompts))
    elapsed = time.time() - started

    responses: list[Response] = []
    for shard in sorted(shard_dir.glob("shard-*.jsonl")):
        if Path(str(shard)[: -len(".jsonl")] + ".done.json").exists():
            responses.extend(read_records(shard, "response"))
    wanted = {p.prompt_id for p in prompts}
    responses = [r for r in responses if r.prompt_id in wanted]
    write_jsonl(out_dir / "responses.jsonl", responses)
    per_prompt = Counter(r.prompt_id for r in responses)
    summary = {
        "prompts": len(prompts),
        "prompts_resumed": len(prompts) - len(todo) - too_long,
        "shards_redone": done.redone,
        "responses": len(responses),
        "prompts_without_answer": sum(1 for p in prompts if per_prompt[p.prompt_id] == 0),
        "dropped": {**done.dropped, **({"prompt_longer_than_context": too_long} if too_long else {})},
        "seconds_this_run": round(elapsed, 2),
        "generated_chars_this_run": generated_chars,
        "backend": backend.describe(),
        "generation": identity["generation"],
        "hash": run_hash,
    }
    write_json(out_dir / "summary.json", summary)
    return summary


def _drop_too_long(todo: list[Prompt], backend: Backend, config: GenerationConfig) -> tuple[list[Prompt], int]:
    """``todo`` without the prompts whose tokens plus ``max_new_tokens`` exceed the model's context (they would
    fail or be cut silently), and how many there were; a warning names the longest."""
    limit = getattr(backend, "context_length", None)
    if not limit or not todo or not hasattr(backend, "prompt_tokens"):
        return todo, 0
    lengths = backend.prompt_tokens(todo, config)
    budget = limit - config.max_new_tokens
    kept = [p for p, n in zip(todo, lengths, strict=True) if n <= budget]
    dropped = len(todo) - len(kept)
    if dropped:
        log.warning("%d prompt(s) are longer than the model's context allows (%d tokens = %d positions - "
                    "max_new_tokens %d; longest prompt %d tokens): skipped and counted as "
                    "prompt_longer_than_context", dropped, budget, limit, config.max_new_tokens, max(lengths))
    return kept, dropped


def prompt_token_counts(tokenizer: Any, prompts: list[Prompt], config: GenerationConfig) -> list[int]:
    """Tokens of each prompt as a local backend feeds it to the model."""
    from safepref.models import format_prompt

    texts = [format_prompt(tokenizer, p.text, config.prompt_format, config.system_prompt) for p in prompts]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=adds_special_tokens(config))["input_ids"]]


def _generate_shards(todo: list[Prompt], backend: Backend, config: GenerationConfig,
                     settings: dict[str, Any], shard_dir: Path, done: shards.DoneShards, progress: bool,
                     total: int) -> int:
    """Generate ``todo`` shard by shard (each written with its done-marker); returns characters generated.
    Drops are added to ``done.dropped``."""
    # The fast backend needs hundreds of prompts a call to fill a GPU; the hf loop wants a handful.
    batch_size = config.batch_size or getattr(backend, "default_batch_size", 8)
    shard_size = config.shard_size or 2 * batch_size
    provenance = {**backend.describe(), "kind": "model", "generation": settings}
    generated_chars = 0
    index = done.next_index
    bar = tqdm(total=total, initial=total - len(todo), desc="generate", unit="prompt", disable=not progress)
    for start in range(0, len(todo), shard_size):
        shard_prompts = todo[start:start + shard_size]
        rows: list[Response] = []
        shard_dropped: Counter = Counter()
        for b in range(0, len(shard_prompts), batch_size):
            batch = shard_prompts[b:b + batch_size]
            answers = backend.generate(batch, config)
            if len(answers) != len(batch):
                raise SafeprefError(f"backend returned {len(answers)} answer lists for {len(batch)} prompts")
            for prompt, samples in zip(batch, answers, strict=True):
                for sample_index, text in enumerate(samples):
                    generated_chars += len(text)
                    if len(text.strip()) < config.min_chars:
                        shard_dropped["too_short"] += 1
                        continue
                    rows.append(Response(prompt=prompt.text, response=text, source=provenance,
                                         prompt_id=prompt.prompt_id, sample_index=sample_index))
            bar.update(len(batch))
        shards.finish_shard(shard_dir, index, rows, [p.prompt_id for p in shard_prompts], shard_dropped)
        done.dropped.update(shard_dropped)
        index += 1
    bar.close()
    return generated_chars
