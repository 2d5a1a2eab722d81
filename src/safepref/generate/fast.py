"""Fast generation backend: large static batches, a preallocated KV cache and one CUDA graph per decoding step.

    backend = make_backend("fast", "smollm2-135m-instruct")          # or FastBackend(name, model_obj=, tokenizer=)
    answers = backend.generate(prompts, generation_config("paper-sample"))

Where the study's loop loses its time, and what this backend does instead (numbers: docs/benchmarks/generation.md):

- transformers ``generate`` runs the model eagerly, so every token costs the Python and kernel-launch time of a
  whole forward pass (tens of milliseconds for a 32-layer model, whatever the batch): here the whole step
  (forward, repetition penalty, no-repeat-ngram, temperature / top-k / top-p, sampling, end-of-sequence
  bookkeeping) is captured once as a CUDA graph and replayed: no host work per token, and one host sync every 16
  tokens (to stop when every row has ended);
- 4 prompts x 5 samples leave the GPU idle: here a batch holds as many prompts x samples rows as memory allows
  (prompts sorted by length, so left padding stays short);
- the dynamic cache is re-concatenated every step: here the cache is allocated once, each prompt is prefilled once
  and its keys/values copied to its sample rows, and attention reads only the filled prefix rounded up to
  ``bucket`` positions (one graph per bucket width);
- transformers' sdpa path copies the whole cache to repeat grouped-query key/value heads every step: here one
  decoding position attends without that copy (``grouped_sdpa_attention``).

Semantics are those of ``model.generate`` with the same settings: the same logits processors (the static-shape
versions in ``processors.py``, equal to transformers' own on the same inputs), temperature, top-k, top-p (the
same cut as ``TopPLogitsWarper``), greedy = argmax, rows stop at an end-of-sequence token and are padded after it.
Sampling draws differ from ``generate``'s: every (prompt id, sample index) has its own seed (``row_seed``) and a
counter-based random stream, so an answer does not depend on which prompts share its batch (up to floating-point
rounding of batched matrix products) and a rerun reproduces it.

Tested on Llama-architecture models (tiny Llama on the CPU; Llama-2-7B and SmolLM2-135M shapes on an H200).
Meant for decoder-only models whose attention layers call ``cache.update`` and accept a 4D attention mask
(Mistral, Qwen2, ... : untested), with ``sdpa`` or ``eager`` attention. Sliding-window attention is not applied
(a full mask is given): fine while prompt + answer is shorter than the window.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import math
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.cache_utils import Cache
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from safepref import models
from safepref.errors import ConfigError, ModelError
from safepref.generate import GenerationConfig, adds_special_tokens
from safepref.generate.processors import (
    apply_repetition_penalty,
    banned_ngram_mask,
    mark_seen_,
    presence_mask,
)
from safepref.records import Prompt

_M32 = 0xFFFFFFFF


def row_seed(seed: int, prompt_id: str, sample_index: int) -> int:
    """Seed of one answer's random stream: depends on the run seed, the prompt id and the sample index only."""
    digest = hashlib.sha256(f"{seed}:{prompt_id}:{sample_index}".encode()).hexdigest()
    return int(digest[:8], 16)


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    # (x * c) mod 2^32 for x < 2^32 in int64 without overflow: split c into 16-bit halves.
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 integer hash (C. Wellons), on int64 tensors holding 32-bit values."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def uniform(seeds: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """``(R,)`` float32 in [0, 1): draw number ``step`` of each row's stream. Pure tensor ops, graph-capturable."""
    x = _mix32((seeds + _mix32((step + 1) & _M32)) & _M32)
    return (x >> 8).to(torch.float32) * (1.0 / (1 << 24))


@dataclass(frozen=True)
class Sampling:
    """Decoding settings that shape a captured step (a change of any of them captures new graphs)."""

    do_sample: bool
    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    no_repeat_ngram_size: int
    max_new_tokens: int
    min_new_tokens: int = 0

    @classmethod
    def from_config(cls, config: GenerationConfig, min_new_tokens: int = 0) -> Sampling:
        return cls(do_sample=config.do_sample, temperature=float(config.temperature), top_p=float(config.top_p),
                   top_k=int(config.top_k), repetition_penalty=float(config.repetition_penalty),
                   no_repeat_ngram_size=int(config.no_repeat_ngram_size), max_new_tokens=config.max_new_tokens,
                   min_new_tokens=min(min_new_tokens, config.max_new_tokens))


def pick_tokens(scores: torch.Tensor, s: Sampling, *, tokens: torch.Tensor, lengths: torch.Tensor,
                seen: torch.Tensor | None, step: torch.Tensor, seeds: torch.Tensor,
                eos: torch.Tensor | None = None) -> torch.Tensor:
    """Next token of every row from float32 ``scores`` ``(R, V)``, as ``generate`` would pick it.

    ``tokens[:, :lengths]`` is the text so far (left padding included, as in ``input_ids``); ``seen`` its
    presence mask; ``step`` the number of tokens generated so far (a 1-element tensor). Static shapes only.
    """
    vocab = scores.shape[-1]
    if s.repetition_penalty != 1.0:
        scores = apply_repetition_penalty(scores, seen, s.repetition_penalty)
    if s.no_repeat_ngram_size:
        scores = scores.masked_fill(banned_ngram_mask(tokens, lengths, s.no_repeat_ngram_size, vocab), -math.inf)
    if s.min_new_tokens and eos is not None:  # eos: a (V,) bool mask of the end-of-sequence ids
        scores = scores.masked_fill(eos & (step < s.min_new_tokens), -math.inf)
    if not s.do_sample:
        return scores.argmax(dim=-1)
    if s.temperature != 1.0:
        scores = scores / s.temperature
    if s.top_k:
        kth = torch.topk(scores, min(s.top_k, vocab)).values[:, -1:]
        scores = scores.masked_fill(scores < kth, -math.inf)
    order = None
    if s.top_p < 1.0:
        # TopPLogitsWarper's cut: ascending sort, drop tokens whose cumulative mass is <= 1 - top_p, keep the top one.
        scores, order = torch.sort(scores, descending=False)
        drop = scores.softmax(dim=-1).cumsum(dim=-1) <= (1 - s.top_p)
        drop[:, -1] = False
        scores = scores.masked_fill(drop, -math.inf)
    # Inverse-CDF sampling with one uniform per row: the same distribution as multinomial(softmax(scores)).
    cdf = scores.softmax(dim=-1).cumsum(dim=-1)
    target = uniform(seeds, step) * cdf[:, -1]
    index = torch.searchsorted(cdf, target[:, None], right=True).clamp(max=vocab - 1)
    return index[:, 0] if order is None else order.gather(1, index)[:, 0]


GROUPED_SDPA = "safepref_grouped_sdpa"


def grouped_sdpa_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                           is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """sdpa for one decoding position without copying keys/values for grouped-query attention.

    transformers' sdpa path repeats each key/value head for its query heads whenever a mask is given (a copy
    of the whole cache, every layer, every step). For a single query position the ``g`` query heads of a
    key/value head are instead stacked as ``g`` query positions: ``(B, H, 1, D) -> (B, H_kv, g, D)`` against
    ``(B, H_kv, L, D)``, the mask ``(B, 1, 1, L)`` broadcasting over them. Anything else goes to sdpa as is.
    """
    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    if length != 1 or heads == kv_heads or dropout or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    grouped = query.reshape(batch, kv_heads, heads // kv_heads, dim)
    out = torch.nn.functional.scaled_dot_product_attention(grouped, key, value, attn_mask=attention_mask,
                                                           scale=scaling)
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


AttentionInterface.register(GROUPED_SDPA, grouped_sdpa_attention)


class _Layer:
    """What ``Cache`` reads from its layers; the tensors live in ``_SlotCache``."""

    is_sliding = False
    is_compileable = True
    is_initialized = True


class _SlotCache(Cache):
    """Preallocated keys/values ``(R, H_kv, W, D)`` per layer, written where a device tensor says.

    ``mode == "prefill"``: the forward's ``(G, H, P, D)`` states go to positions ``[0, P)`` of rows ``rows``,
    each prompt's states repeated ``repeat`` times (one row per sample); attention sees the G prompts only.
    ``mode == "decode"``: one new position per row at ``slot`` (a 1-element device tensor); attention sees
    ``[0, view)``. The decoder sets these attributes before each forward.
    """

    def __init__(self, num_layers: int) -> None:
        super().__init__(layers=[_Layer() for _ in range(num_layers)])
        self.k_slots: list[torch.Tensor | None] = [None] * num_layers
        self.v_slots: list[torch.Tensor | None] = [None] * num_layers
        self.shape: tuple[int, int] = (0, 0)  # rows, width, fixed when the decoder allocates
        self.mode = "prefill"
        self.rows = slice(None)
        self.repeat = 1
        self.slot: torch.Tensor | None = None
        self.view = 0

    def _allocate(self, layer_idx: int, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        rows, width = self.shape
        _, heads, _, k_dim = key_states.shape
        self.k_slots[layer_idx] = key_states.new_zeros((rows, heads, width, k_dim))
        self.v_slots[layer_idx] = value_states.new_zeros((rows, heads, width, value_states.shape[-1]))

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if self.k_slots[layer_idx] is None:
            self._allocate(layer_idx, key_states, value_states)
        keys, values = self.k_slots[layer_idx], self.v_slots[layer_idx]
        if self.mode == "prefill":
            prompts, heads, length, _ = key_states.shape
            for slots, states in ((keys, key_states), (values, value_states)):
                target = slots[self.rows].view(prompts, self.repeat, heads, slots.shape[2], slots.shape[3])
                target[:, :, :, :length].copy_(states.unsqueeze(1))
            return key_states, value_states
        keys.index_copy_(2, self.slot, key_states)
        values.index_copy_(2, self.slot, value_states)
        return keys[:, :, : self.view], values[:, :, : self.view]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0  # positions are always passed explicitly

    def release(self) -> None:
        self.k_slots = [None] * len(self.k_slots)
        self.v_slots = [None] * len(self.v_slots)


def _text_config(model: Any) -> Any:
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def kv_bytes_per_position(model: Any) -> int:
    """Bytes of keys + values that one row holds per position, all layers (from the config)."""
    config = _text_config(model)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    element = next(model.parameters()).element_size()
    return 2 * config.num_hidden_layers * kv_heads * head_dim * element


class _Decoder:
    """Static state for ``rows`` sequences of up to ``width`` tokens, and the step graphs captured over it."""

    def __init__(self, model: Any, rows: int, width: int, vocab: int, pad_id: int, eos_ids: list[int],
                 bucket: int, use_graphs: bool, prefill_tokens: int) -> None:
        param = next(model.parameters())
        self.model, self.rows, self.width, self.vocab = model, rows, width, vocab
        self.device, self.bucket, self.prefill_tokens = param.device, bucket, prefill_tokens
        self.use_graphs = use_graphs
        self.pad_id = pad_id
        dev = self.device
        self.eos = torch.tensor(sorted(set(eos_ids)), device=dev) if eos_ids else None
        self.eos_mask = None
        if eos_ids:
            self.eos_mask = torch.zeros(vocab, dtype=torch.bool, device=dev)
            self.eos_mask[[e for e in set(eos_ids) if 0 <= e < vocab]] = True
        self.pad = torch.tensor(pad_id, device=dev)
        self.tokens = torch.full((rows, width), pad_id, dtype=torch.long, device=dev)
        self.key_valid = torch.zeros((rows, width), dtype=torch.bool, device=dev)
        self.seen = torch.zeros((rows, vocab), dtype=torch.bool, device=dev)
        self.done = torch.zeros(rows, dtype=torch.bool, device=dev)
        self.pos = torch.zeros((rows, 1), dtype=torch.long, device=dev)
        self.cur = torch.zeros(1, dtype=torch.long, device=dev)  # filled positions (same for all rows)
        self.step = torch.zeros(1, dtype=torch.long, device=dev)  # tokens generated so far
        self.seeds = torch.zeros(rows, dtype=torch.long, device=dev)
        self.cache = _SlotCache(_text_config(model).num_hidden_layers)
        self.cache.shape = (rows, width)
        parameters = inspect.signature(model.forward).parameters
        self.cache_kw = "cache" if "cache" in parameters else "past_key_values"  # 5.24 renamed the argument
        attn = getattr(_text_config(model), "_attn_implementation", "sdpa") or "sdpa"
        if attn not in ("sdpa", "eager", GROUPED_SDPA):
            raise ModelError(f"the fast backend needs sdpa or eager attention, this model uses '{attn}'")
        self.float_mask = attn == "eager"  # eager attention adds the mask; sdpa takes booleans
        self.graphs: dict[tuple[Sampling, int], Any] = {}
        self.pool = torch.cuda.graph_pool_handle() if use_graphs else None
        self.stream = torch.cuda.Stream(dev) if dev.type == "cuda" else None

    def release(self) -> None:
        self.graphs.clear()
        self.cache.release()

    def held_bytes(self) -> int:
        slots = [t for t in self.cache.k_slots + self.cache.v_slots if t is not None]
        state = [self.tokens, self.key_valid, self.seen]
        return sum(t.numel() * t.element_size() for t in slots + state)

    # ------------------------------------------------------------------------------------------- one step

    def _mask(self, allowed: torch.Tensor) -> torch.Tensor:
        if not self.float_mask:
            return allowed
        dtype = next(self.model.parameters()).dtype
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(dtype).min)

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                         use_cache=True, logits_to_keep=1, **{self.cache_kw: self.cache})
        return out.logits[:, -1, :].float()

    def _finish(self, scores: torch.Tensor, s: Sampling) -> None:
        """Pick the next tokens, write them at position ``cur``, advance. In place, static shapes."""
        nxt = pick_tokens(scores, s, tokens=self.tokens, lengths=self.cur, seen=self.seen, step=self.step,
                          seeds=self.seeds, eos=self.eos_mask)
        if self.eos is not None:
            nxt = torch.where(self.done, self.pad, nxt)
            self.done |= torch.isin(nxt, self.eos)
        if s.repetition_penalty != 1.0:
            mark_seen_(self.seen, nxt)
        self.tokens.index_copy_(1, self.cur, nxt[:, None])
        self.cur.add_(1)
        self.step.add_(1)

    def _decode_step(self, view: int, s: Sampling) -> None:
        slot = self.cur - 1  # where the newest token's keys/values go
        self.key_valid.index_fill_(1, slot, True)
        self.cache.mode, self.cache.slot, self.cache.view = "decode", slot, view
        scores = self._forward(self.tokens.index_select(1, slot), self._mask(self.key_valid[:, None, None, :view]),
                               self.pos)
        self.cache.slot = None  # no tensor of a captured graph's pool stays referenced between steps
        self.pos.add_(1)
        self._finish(scores, s)

    def _advance(self, view: int, s: Sampling) -> None:
        if not self.use_graphs:
            self._decode_step(view, s)
            return
        graph = self.graphs.get((s, view))
        if graph is not None:
            graph.replay()
            return
        # This step runs eagerly (that is the warm-up capture needs), then the same step is recorded: capture
        # executes nothing, so the state is not advanced twice.
        self._decode_step(view, s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
            self._decode_step(view, s)
        self.graphs[(s, view)] = graph

    # ------------------------------------------------------------------------------------------- one batch

    def run(self, prompts: list[list[int]], n: int, s: Sampling, seeds: list[int]) -> torch.Tensor:
        """``(len(prompts) * n, max_new_tokens)`` new tokens on the CPU (pad after an end-of-sequence token)."""
        if self.stream is None:
            return self._run(prompts, n, s, seeds)
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            return self._run(prompts, n, s, seeds)

    def _run(self, prompts: list[list[int]], n: int, s: Sampling, seeds: list[int]) -> torch.Tensor:
        used = len(prompts) * n
        groups = self.rows // n
        # Unused rows repeat the last prompt: the captured graphs keep their shape; their output is dropped.
        prompts = prompts + [prompts[-1]] * (groups - len(prompts))
        seeds = seeds + [seeds[-1]] * (self.rows - len(seeds))
        length = max(len(p) for p in prompts)
        new = s.max_new_tokens
        if length + new > self.width:
            raise ValueError(f"prompt of {length} tokens + {new} new tokens exceeds the decoder width {self.width}")
        dev = self.device
        padded = torch.full((groups, length), self.pad_id, dtype=torch.long)
        valid = torch.zeros((groups, length), dtype=torch.bool)
        for g, ids in enumerate(prompts):
            if ids:
                padded[g, length - len(ids):] = torch.tensor(ids, dtype=torch.long)
                valid[g, length - len(ids):] = True
        padded, valid = padded.to(dev), valid.to(dev)

        self.tokens.fill_(self.pad_id)
        self.tokens[:, :length] = padded.repeat_interleave(n, dim=0)
        self.key_valid.zero_()
        self.key_valid[:, :length] = valid.repeat_interleave(n, dim=0)
        if s.repetition_penalty != 1.0:
            # Left padding is not text: it does not count as seen (as in transformers 5.24's generate).
            self.seen.copy_(presence_mask(self.tokens[:, :length], self.vocab,
                                          counted=self.key_valid[:, :length]))
        self.done.zero_()
        self.cur.fill_(length)
        self.step.zero_()
        self.seeds.copy_(torch.tensor(seeds, dtype=torch.long))
        self.pos.copy_(valid.sum(dim=1).repeat_interleave(n)[:, None])

        # Prefill, each prompt once; left padding gets position 1 as in generate (it is masked anyway).
        positions = (valid.long().cumsum(dim=1) - 1).masked_fill(~valid, 1)
        causal = torch.ones((length, length), dtype=torch.bool, device=dev).tril()
        itself = torch.eye(length, dtype=torch.bool, device=dev)  # padding queries see themselves: no empty row
        scores = torch.empty((groups, self.vocab), dtype=torch.float32, device=dev)
        per_call = max(1, self.prefill_tokens // length)
        self.cache.mode, self.cache.repeat = "prefill", n
        for g0 in range(0, groups, per_call):
            g1 = min(groups, g0 + per_call)
            allowed = (causal[None] & valid[g0:g1, None, :]) | itself[None]
            self.cache.rows = slice(g0 * n, g1 * n)
            scores[g0:g1] = self._forward(padded[g0:g1], self._mask(allowed[:, None]), positions[g0:g1])
        self._finish(scores.repeat_interleave(n, dim=0), s)

        for k in range(1, new):
            if self.eos is not None and k % 16 == 0 and bool(self.done.all()):  # one host sync per 16 tokens
                break
            view = min(self.width, -(-(length + k) // self.bucket) * self.bucket)
            self._advance(view, s)
        return self.tokens[:used, length:length + new].cpu()


class FastGenerator:
    """Batched generation from token ids; ``FastBackend`` adds the tokenizer around it.

    Options: ``max_rows`` (most sequences decoded together; default: as many as fit in ``memory_fraction`` of
    the free GPU memory, at most 2048; 64 on the CPU), ``bucket`` (attention width granularity, 32),
    ``cuda_graphs`` (``auto``: on for CUDA), ``prefill_tokens`` (prompt tokens per prefill forward, 16384),
    ``min_new_tokens`` (forbid end-of-sequence before this many tokens; benchmarks use it to fix the length),
    ``grouped_attention`` (decode grouped-query attention without repeating the cache: ``grouped_sdpa_attention``).
    """

    def __init__(self, model: Any, pad_token_id: int, eos_token_id: int | list[int] | None, *,
                 max_rows: int | None = None, bucket: int = 32, cuda_graphs: bool | str = "auto",
                 memory_fraction: float = 0.85, prefill_tokens: int = 16384, min_new_tokens: int = 0,
                 grouped_attention: bool = True) -> None:
        if bucket < 1:
            raise ConfigError("fast backend: bucket must be >= 1")
        if max_rows is not None and max_rows < 1:
            raise ConfigError("fast backend: max_rows must be >= 1")
        if not 0 < memory_fraction <= 1:
            raise ConfigError("fast backend: memory_fraction must be in (0, 1]")
        self.model = model
        self.device = next(model.parameters()).device
        if cuda_graphs == "auto":
            cuda_graphs = self.device.type == "cuda"
        if cuda_graphs and self.device.type != "cuda":
            raise ConfigError("fast backend: cuda_graphs needs the model on a CUDA device")
        self.use_graphs = bool(cuda_graphs)
        self.pad_id = int(pad_token_id)
        eos = [] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        self.eos_ids = [int(e) for e in eos]
        self.max_rows, self.bucket, self.memory_fraction = max_rows, bucket, memory_fraction
        self.prefill_tokens, self.min_new_tokens = prefill_tokens, min_new_tokens
        self.grouped_attention = grouped_attention
        self.vocab = model.get_output_embeddings().weight.shape[0]
        self._decoder: _Decoder | None = None

    def describe(self) -> dict[str, Any]:
        return {"max_rows": self.max_rows, "bucket": self.bucket, "cuda_graphs": self.use_graphs,
                "grouped_attention": self.grouped_attention}

    def _rows_that_fit(self, width: int) -> int:
        """Rows whose cache and sampling temporaries fit in ``memory_fraction`` of the free GPU memory."""
        free, _ = torch.cuda.mem_get_info(self.device)
        free += torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        if self._decoder is not None:  # the current decoder's memory is free for its successor
            free += self._decoder.held_bytes()
        per_row = kv_bytes_per_position(self.model) * width + self.vocab * 40  # cache + sampling temporaries
        config = _text_config(self.model)
        reserve = self.prefill_tokens * (config.hidden_size * 24 + config.intermediate_size * 8) + (1 << 30)
        return int((free * self.memory_fraction - reserve) // per_row)

    def _decoder_for(self, rows: int, width: int, n: int) -> _Decoder:
        d = self._decoder
        if d is not None and d.width >= width and rows <= d.rows <= 2 * rows and d.rows % n == 0:
            return d  # a smaller batch reuses the captured graphs; the spare rows are wasted work
        if d is not None:
            d.release()
            self._decoder = None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        self._decoder = _Decoder(self.model, rows, width, self.vocab, self.pad_id, self.eos_ids, self.bucket,
                                 self.use_graphs, self.prefill_tokens)
        return self._decoder

    def generate_ids(self, prompts: list[list[int]], sampling: Sampling, num_samples: int,
                     seeds: list[list[int]]) -> list[list[list[int]]]:
        """For each prompt, ``num_samples`` lists of new token ids (up to and with the end-of-sequence token).

        ``seeds[i][k]``: the seed of prompt i's sample k (``row_seed``). Prompts are decoded in length order,
        in equal batches of at most ``max_rows // num_samples`` prompts; answers come back in the input order.
        """
        if not prompts:
            return []
        if len(seeds) != len(prompts) or any(len(s) != num_samples for s in seeds):
            raise ValueError("seeds must hold num_samples seeds for each prompt")
        n, new = num_samples, sampling.max_new_tokens
        if self.min_new_tokens and not sampling.min_new_tokens:
            sampling = dataclasses.replace(sampling, min_new_tokens=min(self.min_new_tokens, new))
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths pad little
        width = -(-(len(prompts[order[-1]]) + new) // 64) * 64
        if self.max_rows is not None:
            cap = self.max_rows
        elif self.device.type == "cuda":
            cap = min(2048, self._rows_that_fit(width))
        else:
            cap = 64 * n
        if cap < n:
            raise ModelError(f"fast backend: not even {n} rows of {width} tokens fit in GPU memory")
        # Equal batches: a short last batch would either pad to the captured size (wasted rows) or recapture.
        batches = -(-len(order) // max(1, cap // n))
        per_batch = -(-len(order) // batches)
        results: list[list[list[int]]] = [[] for _ in prompts]
        config = _text_config(self.model)
        attn = getattr(config, "_attn_implementation", None)
        group = self.grouped_attention and attn == "sdpa"
        try:
            if group:  # read by every attention layer at call time; captured graphs keep the kernels
                config._attn_implementation = GROUPED_SDPA
            with torch.inference_mode():
                decoder = self._decoder_for(per_batch * n, width, n)
                for start in range(0, len(order), per_batch):
                    chosen = order[start:start + per_batch]
                    tokens = decoder.run([prompts[i] for i in chosen], n, sampling,
                                         [s for i in chosen for s in seeds[i]])
                    for j, i in enumerate(chosen):
                        results[i] = [self._trim(tokens[j * n + k].tolist()) for k in range(n)]
        finally:
            if group:
                config._attn_implementation = attn
        return results

    def _trim(self, ids: list[int]) -> list[int]:
        for index, token in enumerate(ids):
            if token in self.eos_ids:
                return ids[:index + 1]
        return ids


_OPTIONS = {"max_rows", "bucket", "cuda_graphs", "memory_fraction", "prefill_tokens", "min_new_tokens",
            "grouped_attention"}


class FastBackend:
    """The ``fast`` generation backend (see the module docstring); same interface as ``HFBackend``."""

    default_batch_size = 512  # prompts a call: x5 samples fills an H100/H200 (see docs/benchmarks)

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False,
                 model_obj: Any = None, tokenizer: Any = None, **opts: Any) -> None:
        unknown = set(opts) - _OPTIONS
        if unknown:
            raise ConfigError(f"fast backend: unknown option(s) {', '.join(sorted(unknown))}; "
                              f"known: {', '.join(sorted(_OPTIONS))}")
        self.model_name = model
        self.tokenizer = tokenizer or models.load_tokenizer(model, padding_side="left",
                                                            trust_remote_code=trust_remote_code)
        self.model = model_obj or models.load_model(model, device=device, dtype=dtype,
                                                    trust_remote_code=trust_remote_code)
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        if eos is None:
            eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id
        if pad is None:
            raise ModelError(f"tokenizer of '{model}' has no pad token")
        if getattr(self.model.config, "safepref_random_weights", False):
            # random weights (safepref.random_models): never stop early, timings need the configured lengths
            opts.setdefault("min_new_tokens", 1 << 30)
        self.engine = FastGenerator(self.model, pad, eos, **opts)

    @property
    def context_length(self) -> int | None:
        return models.context_length(self.model)

    def prompt_tokens(self, prompts: list[Prompt], config: GenerationConfig) -> list[int]:
        from safepref.generate import prompt_token_counts

        return prompt_token_counts(self.tokenizer, prompts, config)

    def describe(self) -> dict[str, Any]:
        from safepref.random_models import provenance

        return {"backend": "fast", "name": self.model_name, **provenance(self.model_name)}

    def generate(self, prompts: list[Prompt], config: GenerationConfig) -> list[list[str]]:
        texts = [models.format_prompt(self.tokenizer, p.text, config.prompt_format, config.system_prompt)
                 for p in prompts]
        ids = self.tokenizer(texts, add_special_tokens=adds_special_tokens(config))["input_ids"]
        n = config.num_samples
        seeds = [[row_seed(config.seed, p.prompt_id, i) for i in range(n)] for p in prompts]
        answers = self.engine.generate_ids(ids, Sampling.from_config(config), n, seeds)
        flat = self.tokenizer.batch_decode([a for per_prompt in answers for a in per_prompt],
                                           skip_special_tokens=True)
        return [flat[i * n:(i + 1) * n] for i in range(len(prompts))]
