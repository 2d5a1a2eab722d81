"""Generation throughput: the study's loop against safepref's fast backend, in one process on one GPU.

    python benchmarks/generation.py --out docs/benchmarks/generation-h200.json      # both shapes, ~5 min (H200)
    python benchmarks/generation.py --shapes smollm2-135m --variants study,fast --prompts 256
    python benchmarks/generation.py --smoke                                         # CPU, tiny: does it run

Models are randomly initialised (weights do not change throughput) from the real architectures' configs, in
bf16 with sdpa attention. Prompts are random token ids whose lengths follow the PKU-SafeRLHF prompts tokenised
raw (the study's prompting); every answer is forced to ``--new-tokens`` tokens (end-of-sequence banned until
then: ``min_new_tokens`` for transformers, the same rule in the fast backend), so tokens/s = prompts x samples x
new tokens / seconds, prefill included.

Variants (sampling pass = temperature 0.5, top_p 0.9, repetition penalty 1.2, no-repeat-3-gram, 5 samples):
  study            the study's loop: transformers ``generate``, 4 prompts x 5 samples a call (the baseline)
  study-noproc     the same without repetition penalty and no-repeat-ngram (what the two processors cost)
  study-profile    cProfile of a 16-token study call: host time per step by function
  hf-64x5          ``generate`` with 64 prompts x 5 samples a call
  fast             safepref's fast backend, batches sized to GPU memory, CUDA graphs
  fast-rows<R>     the same with R sequences a batch (fast-rows40: the 8 prompts x 5 of run_generation's default
                   batch_size), 4 batches
  fast-eager-rows<R>  the same without CUDA graphs, 2 batches
  fast-sdpa        the fast backend with transformers' sdpa for decoding (grouped-query models: what not
                   repeating the key/value heads buys)
  fast-eager       the fast backend without CUDA graphs (what the graphs buy)
  fast-greedy      the study's greedy pass (1 answer, argmax) through the fast backend
  check            fast (graphs) == fast (eager) token for token; fast greedy vs hf greedy agreement
  profile          GPU kernel time of one fast decoding step by kind (eager run under torch.profiler)
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoModelForCausalLM, LlamaConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from safepref.generate.fast import FastGenerator, Sampling, kv_bytes_per_position  # noqa: E402

SHAPES: dict[str, dict[str, Any]] = {
    "llama2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096,
                      tie_word_embeddings=False),
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192,
                         tie_word_embeddings=True),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, max_position_embeddings=1024, tie_word_embeddings=True),
}
PAD, BOS, EOS = 0, 1, 2
# Every other percentile (1st, 3rd, ..., 99th) of the token counts of the 5,135 PKU-SafeRLHF prompts in
# ../shared/data/saferlhf/pku_seferlhf_realign_dpo_5k.json, tokenised raw with the SmolLM2 tokenizer.
PKU_PROMPT_TOKENS = [4, 6, 6, 6, 7, 7, 7, 8, 8, 8, 8, 8, 9, 9, 9, 10, 10, 10, 10, 11, 11, 12, 12, 12, 12, 13, 13, 13,
                     14, 14, 15, 15, 16, 16, 17, 18, 19, 20, 20, 22, 23, 24, 25, 27, 29, 31, 35, 37, 42, 59]
STUDY = dict(do_sample=True, temperature=0.5, top_p=0.9, top_k=0, repetition_penalty=1.2, no_repeat_ngram_size=3)


def build_model(shape: str, device: str, dtype: torch.dtype) -> Any:
    config = LlamaConfig(**SHAPES[shape], bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.eval()


def make_prompts(count: int, vocab: int, seed: int = 0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    lengths = [PKU_PROMPT_TOKENS[int(i)] for i in torch.randint(0, len(PKU_PROMPT_TOKENS), (count,), generator=gen)]
    return [[BOS] + torch.randint(10, vocab, (n - 1,), generator=gen).tolist() for n in lengths]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------ transformers generate


def hf_generate(model: Any, prompts: list[list[int]], n: int, new: int, settings: dict[str, Any],
                seed: int = 0) -> torch.Tensor:
    """One ``generate`` call, left padding, as safepref.generate.hf.HFBackend makes it."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = torch.tensor(p)
        mask[row, width - len(p):] = 1
    kwargs: dict[str, Any] = dict(max_new_tokens=new, min_new_tokens=new, num_return_sequences=n,
                                  pad_token_id=PAD, eos_token_id=EOS, do_sample=settings["do_sample"])
    if settings["do_sample"]:
        kwargs.update(temperature=settings["temperature"], top_p=settings["top_p"], top_k=settings["top_k"] or None)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if settings["repetition_penalty"] != 1.0:
        kwargs["repetition_penalty"] = settings["repetition_penalty"]
    if settings["no_repeat_ngram_size"]:
        kwargs["no_repeat_ngram_size"] = settings["no_repeat_ngram_size"]
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device), **kwargs)
    return out[:, width:].cpu()


def run_hf(model: Any, prompts: list[list[int]], per_call: int, n: int, new: int, settings: dict[str, Any],
           calls: int) -> dict[str, Any]:
    hf_generate(model, prompts[:per_call], n, 4, settings)  # warm-up: kernels, allocator, cuBLAS handles
    sync()
    start = time.perf_counter()
    for c in range(calls):
        hf_generate(model, prompts[c * per_call:(c + 1) * per_call], n, new, settings, seed=c)
    sync()
    seconds = time.perf_counter() - start
    return {"prompts": per_call * calls, "samples": n, "rows_per_batch": per_call * n, "seconds": seconds,
            "tokens": per_call * calls * n * new}


# ------------------------------------------------------------------------------------ safepref fast backend


def sampling_for(settings: dict[str, Any], new: int) -> Sampling:
    return Sampling(do_sample=settings["do_sample"], temperature=settings.get("temperature", 1.0),
                    top_p=settings.get("top_p", 1.0), top_k=settings.get("top_k", 0),
                    repetition_penalty=settings.get("repetition_penalty", 1.0),
                    no_repeat_ngram_size=settings.get("no_repeat_ngram_size", 0), max_new_tokens=new,
                    min_new_tokens=new)


def fast_rows(model: Any, prompts: list[list[int]], new: int, n: int, requested: int | None) -> int:
    if requested:
        return requested
    if not torch.cuda.is_available():
        return 64 * n
    probe = FastGenerator(model, PAD, EOS)
    width = -(-(max(len(p) for p in prompts) + new) // 64) * 64
    return max(n, min(2048, probe._rows_that_fit(width)) // n * n)


def run_study_profile(model: Any, prompts: list[list[int]], n: int, steps: int = 16) -> dict[str, Any]:
    """Where the study's loop spends its host time: cProfile of one 4 x n call of ``steps`` tokens."""
    import cProfile
    import pstats

    hf_generate(model, prompts[:4], n, 4, STUDY)
    sync()
    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.enable()
    hf_generate(model, prompts[:4], n, steps, STUDY)
    sync()
    prof.disable()
    total = (time.perf_counter() - start) * 1000 / steps
    stats = pstats.Stats(prof).stats  # {(file, line, function): (calls, ncalls, tottime, cumtime, callers)}

    def name(key: tuple[str, int, str]) -> str:
        return f"{Path(key[0]).name}:{key[1]}({key[2]})"

    own = sorted(stats.items(), key=lambda kv: -kv[1][2])[:10]
    processors = sorted(((k, v) for k, v in stats.items() if k[0].endswith("logits_process.py") and k[2] == "__call__"),
                        key=lambda kv: -kv[1][3])
    return {"ms_per_token_step": round(total, 2),
            "top_own_time_ms_per_step": [(name(k), round(v[2] * 1000 / steps, 2)) for k, v in own],
            "logits_processors_cum_ms_per_step": [(name(k), round(v[3] * 1000 / steps, 2)) for k, v in processors]}


def run_fast(model: Any, prompts: list[list[int]], n: int, new: int, settings: dict[str, Any],
             rows: int | None, graphs: bool, **opts: Any) -> dict[str, Any]:
    rows = fast_rows(model, prompts, new, n, rows)
    gen = FastGenerator(model, PAD, EOS, max_rows=rows, cuda_graphs=graphs, **opts)
    sampling = sampling_for(settings, new)
    seeds = [[i * 100 + k for k in range(n)] for i in range(len(prompts))]
    # Warm-up on one batch that holds the longest prompt: the timed run reuses its decoder and most graphs.
    ordered = sorted(prompts, key=len)
    warm = ordered[:min(rows // n, len(ordered)) - 1] + [ordered[-1]]
    gen.generate_ids(warm, sampling, n, seeds[:len(warm)])
    sync()
    start = time.perf_counter()
    out = gen.generate_ids(prompts, sampling, n, seeds)
    sync()
    seconds = time.perf_counter() - start
    assert all(len(a) == new for per in out for a in per), "answers must have the forced length"
    batches = -(-len(prompts) // (rows // n))
    return {"prompts": len(prompts), "samples": n, "rows_per_batch": -(-len(prompts) // batches) * n, "seconds": seconds,
            "tokens": len(prompts) * n * new, "graphs": graphs}


def run_check(model: Any, prompts: list[list[int]], new: int) -> dict[str, Any]:
    """Graph replay == eager step (sampling); fast greedy vs transformers greedy (bf16: a few may diverge)."""
    sampling = sampling_for(STUDY, new)
    seeds = [[i * 100 + k for k in range(5)] for i in range(len(prompts))]
    a = FastGenerator(model, PAD, EOS, cuda_graphs=torch.cuda.is_available()).generate_ids(prompts, sampling, 5, seeds)
    b = FastGenerator(model, PAD, EOS, cuda_graphs=False).generate_ids(prompts, sampling, 5, seeds)
    result: dict[str, Any] = {"graphs_equal_eager": a == b}
    # transformers 5.17 counts left padding in the repetition penalty, 5.24 and the fast backend do not:
    # compare plain greedy (bf16 rounding alone) and greedy with the study's no-repeat-3-gram.
    for name, greedy in (("greedy", dict(STUDY, do_sample=False, repetition_penalty=1.0, no_repeat_ngram_size=0)),
                         ("greedy_ngram3", dict(STUDY, do_sample=False, repetition_penalty=1.0))):
        fast = FastGenerator(model, PAD, EOS).generate_ids(prompts, sampling_for(greedy, new), 1,
                                                           [[0]] * len(prompts))
        ref = hf_generate(model, prompts, 1, new, greedy)
        first = [next((t for t, (x, y) in enumerate(zip(fast[i][0], ref[i].tolist(), strict=True)) if x != y), new)
                 for i in range(len(prompts))]
        result[f"{name}_rows_equal_hf"] = f"{sum(f == new for f in first)}/{len(first)}"
        result[f"{name}_first_divergence"] = sorted(first)
    return result


KINDS = [("matmul", ("gemm", "gemv", "cutlass", "xmma", "nvjet", "cublas", "splitk")),
         ("attention", ("fmha", "flash", "attention", "efficient", "cudnn")),
         ("sort/scan (top-p, sampling)", ("sort", "radix", "cub::", "scan", "searchsorted", "bitonic", "topk")),
         ("softmax", ("softmax",)),
         ("copy/cat/index", ("copy", "cat", "index", "gather", "scatter", "fill")),
         ("elementwise/reduce", ("elementwise", "reduce", "vectorized", "unrolled"))]


def _event_us(event: Any) -> float:
    if torch.cuda.is_available():  # kernels only: CPU-side operator events carry their kernels' time too
        if "CUDA" not in str(getattr(event, "device_type", "")):
            return 0.0
        return float(getattr(event, "device_time_total", 0) or getattr(event, "cuda_time_total", 0) or 0)
    return float(getattr(event, "self_cpu_time_total", 0) or 0)


def kernel_table(prof: Any) -> dict[str, float]:
    kinds: dict[str, float] = {}
    for event in prof.key_averages():
        us = _event_us(event)
        if us:
            name = event.key.lower()
            kind = next((k for k, words in KINDS if any(w in name for w in words)), "other")
            kinds[kind] = kinds.get(kind, 0.0) + us
    return kinds


def run_profile(model: Any, prompts: list[list[int]], n: int, rows: int, steps: int = 16) -> dict[str, Any]:
    """Kernel time by kind for ``steps`` decoding steps: a profiled run of 1 + steps tokens minus one of 1 token."""
    from torch.profiler import ProfilerActivity, profile

    activity = ProfilerActivity.CUDA if torch.cuda.is_available() else ProfilerActivity.CPU
    gen = FastGenerator(model, PAD, EOS, max_rows=rows, cuda_graphs=False)
    batch = sorted(prompts, key=len)[:rows // n]
    seeds = [[i * 100 + k for k in range(n)] for i in range(len(batch))]
    tables = []
    for new in (1, 1 + steps):
        sampling = sampling_for(STUDY, new)
        gen.generate_ids(batch, sampling, n, seeds)  # warm-up
        sync()
        with profile(activities=[activity]) as prof:
            gen.generate_ids(batch, sampling, n, seeds)
            sync()
        tables.append(kernel_table(prof))
    per_step = {k: (tables[1].get(k, 0.0) - tables[0].get(k, 0.0)) / steps / 1000 for k in tables[1]}
    top = sorted(((e.key[:160], _event_us(e) / 1000 / steps) for e in prof.key_averages() if _event_us(e) > 0),
                 key=lambda kv: -kv[1])[:16]
    return {"rows": len(batch) * n, "ms_per_step_by_kind": {k: round(v, 3) for k, v in
                                                            sorted(per_step.items(), key=lambda kv: -kv[1])},
            "ms_per_step_kernels": round(sum(per_step.values()), 3),
            "top_kernels_ms_per_step_incl_prefill": [(k, round(v, 3)) for k, v in top]}


# ------------------------------------------------------------------------------------ driver


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="smollm2-135m,llama2-7b")
    parser.add_argument("--variants", default="study,fast,fast-greedy,check,study-noproc,study-profile,hf-64x5,"
                                              "fast-sdpa,fast-rows40,fast-eager-rows40,profile,fast-eager")
    parser.add_argument("--prompts", type=int, default=0, help="prompts for the fast variants (0: per shape)")
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--study-calls", type=int, default=1, help="timed calls of 4 prompts for the baseline")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny shape, few tokens: the script runs")
    args = parser.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if args.smoke:
        args.shapes, args.new_tokens, args.prompts = "tiny", 8, 12
    gpu = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({platform.processor() or 'unknown'})"
    env = {"device": gpu, "torch": torch.__version__, "transformers": transformers.__version__,
           "python": platform.python_version(), "dtype": str(dtype).replace("torch.", "")}
    print(json.dumps(env), flush=True)
    n, new = args.samples, args.new_tokens
    results: list[dict[str, Any]] = []

    def save() -> None:  # after every variant: a run cut short keeps what it measured
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({"environment": env, "new_tokens": new, "samples": n,
                                                  "results": results}, indent=1) + "\n")
    for shape in args.shapes.split(","):
        started = time.perf_counter()
        model = build_model(shape, device, dtype)
        vocab = SHAPES[shape]["vocab_size"]
        count = args.prompts or {"llama2-7b": 512, "smollm2-135m": 1024}.get(shape, 64)
        prompts = make_prompts(max(count, 64), vocab)
        params = sum(p.numel() for p in model.parameters())
        print(f"\n== {shape}: {params / 1e6:.0f}M parameters, KV {kv_bytes_per_position(model) / 1024:.0f} KiB "
              f"per position, built in {time.perf_counter() - started:.1f}s", flush=True)
        baseline = None
        for variant in args.variants.split(","):
            started = time.perf_counter()
            try:
                if variant == "study":
                    row = run_hf(model, prompts, 4, n, new, STUDY, args.study_calls)
                elif variant == "study-noproc":
                    plain = dict(STUDY, repetition_penalty=1.0, no_repeat_ngram_size=0)
                    row = run_hf(model, prompts, 4, n, new, plain, 1)
                elif variant == "hf-64x5":
                    row = run_hf(model, prompts, 64, n, new, STUDY, 1)
                elif variant.startswith(("fast-rows", "fast-eager-rows")):
                    rows = int(variant.rsplit("rows", 1)[1])
                    eager = variant.startswith("fast-eager")
                    batches = 2 if eager else 4
                    row = run_fast(model, prompts[:batches * max(1, rows // n)], n, new, STUDY, rows,
                                   device == "cuda" and not eager)
                elif variant == "fast":
                    row = run_fast(model, prompts[:count], n, new, STUDY, None, device == "cuda")
                elif variant == "fast-sdpa":
                    if model.config.num_key_value_heads == model.config.num_attention_heads:
                        continue  # no grouped-query attention: the same as fast
                    row = run_fast(model, prompts[:count], n, new, STUDY, None, device == "cuda",
                                   grouped_attention=False)
                elif variant == "study-profile":
                    prof = run_study_profile(model, prompts, n)
                    results.append({"shape": shape, "variant": variant, **prof})
                    print(f"  study-profile: {json.dumps(prof)}", flush=True)
                    continue
                elif variant == "fast-eager":
                    rows = fast_rows(model, prompts, new, n, None)
                    row = run_fast(model, prompts[:max(1, rows // n)], n, new, STUDY, rows, False)
                elif variant == "fast-greedy":
                    row = run_fast(model, prompts[:count], 1, new, dict(STUDY, do_sample=False), None,
                                   device == "cuda")
                elif variant == "check":
                    print(f"  check: {json.dumps(run_check(model, prompts[:16], min(new, 64)))}", flush=True)
                    continue
                elif variant == "profile":
                    rows = fast_rows(model, prompts, new, n, None)
                    prof = run_profile(model, prompts, n, rows)
                    results.append({"shape": shape, "variant": "profile", **prof})
                    print(f"  profile: {json.dumps(prof)}", flush=True)
                    continue
                else:
                    raise SystemExit(f"unknown variant {variant}")
            except Exception as exc:  # noqa: BLE001 - report and go on: one failure must not lose the others
                print(f"  {variant}: FAILED {type(exc).__name__}: {str(exc)[:400]}", flush=True)
                results.append({"shape": shape, "variant": variant, "error": f"{type(exc).__name__}: {exc}"[:400]})
                continue
            finally:
                gc.collect()
                if device == "cuda":
                    torch.cuda.empty_cache()
            row["tokens_per_s"] = row["tokens"] / row["seconds"]
            if variant == "study":
                baseline = row["tokens_per_s"]
            row["x_study"] = row["tokens_per_s"] / baseline if baseline else None
            row.update(shape=shape, variant=variant, wall_s=round(time.perf_counter() - started, 1))
            results.append(row)
            save()
            ratio = f"{row['x_study']:.1f}x" if row["x_study"] else "-"
            print(f"  {variant:18s} {row['prompts']:5d} prompts x {row['samples']} rows/batch "
                  f"{row['rows_per_batch']:5d}  {row['tokens']:8d} tokens {row['seconds']:8.2f}s "
                  f"{row['tokens_per_s']:10.0f} tok/s  {ratio:>7s}", flush=True)
        del model
        if device == "cuda":
            torch.cuda.empty_cache()

    print(f"\n{'shape':14s} {'variant':18s} {'rows/batch':>10s} {'tokens/s':>10s} {'x study':>8s}   ({gpu})")
    for row in results:
        if "tokens_per_s" in row:
            ratio = f"{row['x_study']:.1f}" if row["x_study"] else "-"
            print(f"{row['shape']:14s} {row['variant']:18s} {row['rows_per_batch']:10d} "
                  f"{row['tokens_per_s']:10.0f} {ratio:>8s}")
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
