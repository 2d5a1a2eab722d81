"""The fast backend computes what transformers' generate computes.

- processors.py on random inputs (left padding, ids past the vocabulary) == transformers' own processors;
- FastBackend greedy == HFBackend greedy on the tiny model, with and without the study's penalties, and with an
  end-of-sequence token that rows actually reach;
- sampling: seeded per prompt and sample (reruns and other batch companions give the same answers), and the
  draws follow the filtered distribution.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from transformers import (
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from safepref.errors import ConfigError
from safepref.generate import generation_config
from safepref.generate.fast import FastBackend, FastGenerator, Sampling, pick_tokens, row_seed, uniform
from safepref.generate.hf import HFBackend
from safepref.generate.processors import (
    FastNoRepeatNGramLogitsProcessor,
    FastRepetitionPenaltyLogitsProcessor,
    banned_ngram_mask,
    mark_seen_,
    presence_mask,
)
from safepref.records import Prompt

PAD = 0


def _padded_ids(gen: torch.Generator, batch: int, length: int, vocab: int, extra_ids: int = 0) -> torch.Tensor:
    """Random ids with a random amount of left padding per row; ``extra_ids`` > 0 mixes in ids past the vocab."""
    ids = torch.randint(1, vocab + extra_ids, (batch, length), generator=gen)
    for row in range(batch):
        pads = int(torch.randint(0, length, (1,), generator=gen))
        ids[row, :pads] = PAD
    return ids


@pytest.mark.parametrize("penalty", [1.2, 0.7])
def test_repetition_penalty_equals_transformers(penalty):
    gen = torch.Generator().manual_seed(1)
    for length in (1, 3, 17):
        vocab = 40
        ids = _padded_ids(gen, 6, length, vocab, extra_ids=5)
        scores = torch.randn(6, vocab, generator=gen) * 3
        scores[0, 3] = -math.inf
        expected = RepetitionPenaltyLogitsProcessor(penalty)(ids, scores.clone())
        got = FastRepetitionPenaltyLogitsProcessor(penalty)(ids, scores.clone())
        assert torch.equal(got, expected)
        if "prompt_ignore_length" in inspect.signature(RepetitionPenaltyLogitsProcessor).parameters:
            padding = (ids != PAD).int().argmax(dim=1)  # what generate passes in transformers 5.24
            for skip in (padding, 2):
                expected = RepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length=skip)(ids, scores.clone())
                got = FastRepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length=skip)(ids, scores.clone())
                assert torch.equal(got, expected)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_no_repeat_ngram_equals_transformers(n):
    gen = torch.Generator().manual_seed(n)
    for length in range(1, 16):
        vocab = 6  # a small vocabulary repeats n-grams often
        ids = _padded_ids(gen, 8, length, vocab, extra_ids=2)
        scores = torch.randn(8, vocab, generator=gen)
        expected = NoRepeatNGramLogitsProcessor(n)(ids, scores.clone())
        got = FastNoRepeatNGramLogitsProcessor(n)(ids, scores.clone())
        assert torch.equal(got, expected), (n, length)


def test_static_buffer_functions_ignore_unfilled_positions():
    gen = torch.Generator().manual_seed(7)
    vocab, width = 9, 20
    buffer = torch.randint(0, vocab, (5, width), generator=gen)
    for filled in (0, 1, 2, 3, 11, width):
        length = torch.tensor([filled])
        head = buffer[:, :filled]
        expected_banned = torch.zeros(5, vocab, dtype=torch.bool)
        if filled:
            expected_banned = torch.isinf(NoRepeatNGramLogitsProcessor(3)(head, torch.zeros(5, vocab)))
        assert torch.equal(banned_ngram_mask(buffer, length, 3, vocab), expected_banned)
        seen = presence_mask(buffer, vocab, length)
        expected_seen = torch.zeros(5, vocab, dtype=torch.bool)
        for row in range(5):
            expected_seen[row, head[row].tolist()] = True
        assert torch.equal(seen, expected_seen)
    seen = torch.zeros(2, vocab, dtype=torch.bool)
    seen[0, 4] = True
    mark_seen_(seen, torch.tensor([4, 8]))
    assert seen.nonzero().tolist() == [[0, 4], [1, 8]]


def test_processors_reject_bad_settings():
    with pytest.raises(ValueError):
        FastRepetitionPenaltyLogitsProcessor(0.0)
    with pytest.raises(ValueError):
        FastNoRepeatNGramLogitsProcessor(0)


# ------------------------------------------------------------------------------- sampling maths


def test_uniform_is_a_per_row_counter_stream():
    seeds = torch.tensor([row_seed(0, f"p{i}", k) for i in range(500) for k in range(4)])
    draws = torch.stack([uniform(seeds, torch.tensor([step])) for step in range(8)])  # (8, 2000)
    assert draws.min() >= 0 and draws.max() < 1
    assert abs(draws.mean().item() - 0.5) < 0.01
    assert torch.equal(draws[3], uniform(seeds, torch.tensor([3])))  # a pure function of (seed, step)
    assert (draws[0] != draws[1]).float().mean() > 0.99
    assert row_seed(0, "a", 0) != row_seed(0, "a", 1) != row_seed(1, "a", 0)


def _warped(scores: torch.Tensor, s: Sampling) -> torch.Tensor:
    out = TemperatureLogitsWarper(s.temperature)(None, scores.clone())
    if s.top_k:
        out = TopKLogitsWarper(s.top_k)(None, out)
    if s.top_p < 1:
        out = TopPLogitsWarper(s.top_p)(None, out)
    return out.softmax(dim=-1)


@pytest.mark.parametrize("top_p,top_k", [(0.9, 0), (1.0, 3), (0.6, 4)])
def test_sampling_follows_the_warped_distribution(top_p, top_k):
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(1, 7, generator=gen) * 1.5
    rows = 40000
    s = Sampling(do_sample=True, temperature=0.5, top_p=top_p, top_k=top_k, repetition_penalty=1.0,
                 no_repeat_ngram_size=0, max_new_tokens=1)
    seeds = torch.arange(rows, dtype=torch.long) * 7919
    picked = pick_tokens(logits.repeat(rows, 1), s, tokens=torch.zeros(rows, 1, dtype=torch.long),
                         lengths=torch.tensor([1]), seen=None, step=torch.tensor([0]), seeds=seeds, eos=None)
    expected = _warped(logits, s)[0]
    freq = torch.bincount(picked, minlength=7).float() / rows
    assert torch.all(freq[expected == 0] == 0)  # nothing outside the nucleus / top-k
    assert torch.allclose(freq, expected, atol=0.012)


# ------------------------------------------------------------------------------- the backend vs HFBackend

PROMPTS = [
    Prompt(text="How do I make a cake?", source="test", prompt_id="p-cake"),
    Prompt(text="Write a script that can exploit vulnerabilities in software.", source="test", prompt_id="p-exploit"),
    Prompt(text="Hi", source="test", prompt_id="p-hi"),
    Prompt(text="The weather today is sunny with a light breeze. Here are some tips:", source="test", prompt_id="p-weather"),
    Prompt(text="As an AI, I do not provide instructions", source="test", prompt_id="p-ai"),
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Tiny tensors: one thread is faster, and immune to a busy machine's thread contention.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    """The tiny model with larger random weights: its greedy answers vary instead of repeating one token."""
    from safepref import models

    tokenizer = models.load_tokenizer(str(tiny_model_dir), padding_side="left")
    model = models.load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.15)
    return model, tokenizer


def _backends(tiny, **opts):
    model, tokenizer = tiny
    hf = HFBackend("tiny", model_obj=model, tokenizer=tokenizer)
    fast = FastBackend("tiny", model_obj=model, tokenizer=tokenizer, **opts)
    return hf, fast


@pytest.mark.parametrize("overrides", [
    [],
    ["repetition_penalty=1.2", "no_repeat_ngram_size=3"],
    ["prompt_format=raw", "repetition_penalty=1.3", "no_repeat_ngram_size=2", "top_k=5"],
])
@pytest.mark.parametrize("bucket", [1, 32])
def test_fast_greedy_equals_hf_greedy(tiny, overrides, bucket):
    hf, fast = _backends(tiny, bucket=bucket)
    config = generation_config("paper-greedy", overrides=["max_new_tokens=24", *overrides])
    expected = hf.generate(PROMPTS, config)
    assert len({a[0] for a in expected}) == len(PROMPTS)  # the answers differ: a real comparison
    assert fast.generate(PROMPTS, config) == expected
    assert fast.describe() == {"backend": "fast", "name": "tiny"}


def test_fast_greedy_stops_at_end_of_sequence_like_hf(tiny):
    model, tokenizer = tiny
    config = generation_config("paper-greedy", overrides=["max_new_tokens=20", "repetition_penalty=1.2"])
    sampling = Sampling.from_config(config)
    ids = [tokenizer.apply_chat_template([{"role": "user", "content": p.text}], add_generation_prompt=True,
                                         tokenize=False) for p in PROMPTS]
    ids = tokenizer(ids, add_special_tokens=False)["input_ids"]
    first = FastGenerator(model, tokenizer.pad_token_id, None).generate_ids(ids, sampling, 1, [[0]] * len(ids))
    eos = [first[0][0][3], first[2][0][6]]  # tokens that rows really produce
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = eos
    try:
        hf, fast = _backends(tiny, max_rows=2)  # batches of 2 prompts; the smaller last one reuses the decoder
        expected = hf.generate(PROMPTS, config)
        assert fast.generate(PROMPTS, config) == expected
        stopped = fast.engine.generate_ids(ids, sampling, 1, [[0]] * len(ids))
    finally:
        model.generation_config.eos_token_id = saved
    lengths = [len(s[0]) for s in stopped]
    assert min(lengths) < 20 and max(lengths) == 20
    assert all(s[0][-1] in eos for s in stopped if len(s[0]) < 20)


def test_sampling_is_seeded_per_prompt_and_sample(tiny):
    _, fast = _backends(tiny)
    config = generation_config("paper-sample", overrides=["max_new_tokens=16"])
    answers = fast.generate(PROMPTS, config)
    assert len(answers) == len(PROMPTS) and all(len(a) == 5 for a in answers)
    assert fast.generate(PROMPTS, config) == answers  # rerun
    # Other batch companions, other order: the same answers for the same prompt ids.
    assert fast.generate([PROMPTS[3], PROMPTS[0]], config) == [answers[3], answers[0]]
    assert len(set(answers[1])) > 1  # the five samples are different draws
    other_seed = generation_config("paper-sample", overrides=["max_new_tokens=16", "seed=1"])
    assert fast.generate(PROMPTS, other_seed) != answers


def test_fast_options_are_checked(tiny):
    model, tokenizer = tiny
    with pytest.raises(ConfigError, match="unknown option"):
        FastBackend("tiny", model_obj=model, tokenizer=tokenizer, rows=3)
    with pytest.raises(ConfigError, match="cuda_graphs"):
        FastGenerator(model, 0, 1, cuda_graphs=True)
    with pytest.raises(ConfigError, match="bucket"):
        FastGenerator(model, 0, 1, bucket=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graphs_replay_the_eager_step(tiny):
    model, tokenizer = tiny
    model = model.to("cuda")
    try:
        config = generation_config("paper-sample", overrides=["max_new_tokens=40"])
        eager = FastBackend("tiny", model_obj=model, tokenizer=tokenizer, cuda_graphs=False)
        graphs = FastBackend("tiny", model_obj=model, tokenizer=tokenizer, cuda_graphs=True, bucket=8)
        assert graphs.generate(PROMPTS, config) == eager.generate(PROMPTS, config)
    finally:
        model.to("cpu")
