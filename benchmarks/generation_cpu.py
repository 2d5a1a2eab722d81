"""Generation on this CPU: the `hf` backend with the embedded SmolLM2-135M-Instruct in float32 (the baseline, what
`auto` gives on a CPU) against bfloat16 (`--dtype bfloat16`), same prompts, same settings, one run each; the
ratio of new tokens/s and how far the greedy answers agree.

  python benchmarks/generation_cpu.py --machine "2-core CPU (AMD EPYC, AVX512-BF16), idle"   # docs/benchmarks/

The workload is the quickstart's jailbreak evaluation at a larger n: AdvBench goals (``--n``, default 64), Alpaca
template, greedy, 48 new tokens, batches of 16. Model loading is not timed. Agreement: the share of answers that
are identical, and the mean share of the float32 answer's tokens that the bfloat16 answer repeats before it
first differs.
"""

from __future__ import annotations

import time
from pathlib import Path

from _common import parser, write  # benchmarks/_common.py (the script folder is on sys.path)

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "generation-cpu.json"
MODEL = "smollm2-135m-instruct"


def run(dtype: str, prompts: list, config: object) -> tuple[dict, list[tuple[str, list[int]]]]:
    """One dtype's timed pass: its row and each answer with its token ids (counted here, compared later)."""
    from safepref.generate.hf import HFBackend

    backend = HFBackend(MODEL, device="cpu", dtype=dtype)
    backend.generate(prompts[:2], config)  # warm-up, not timed
    loaded = str(backend.model.dtype).removeprefix("torch.")
    started = time.perf_counter()
    answers: list[str] = []
    for start in range(0, len(prompts), 16):
        answers += [group[0] for group in backend.generate(prompts[start:start + 16], config)]
    seconds = time.perf_counter() - started
    ids = [backend.tokenizer(a, add_special_tokens=False)["input_ids"] for a in answers]
    tokens = sum(map(len, ids))
    row = {"dtype": dtype, "dtype_loaded": loaded, "seconds": round(seconds, 2),
           "new_tokens": tokens, "tokens_per_second": round(tokens / seconds, 1)}
    print(row, flush=True)
    return row, list(zip(answers, ids, strict=True))


def agreement(base: list[tuple[str, list[int]]], other: list[tuple[str, list[int]]]) -> dict:
    same, prefix = 0, []
    for (a, ta), (b, tb) in zip(base, other, strict=True):
        same += a == b
        common = next((i for i, (x, y) in enumerate(zip(ta, tb, strict=False)) if x != y), min(len(ta), len(tb)))
        prefix.append(common / max(len(ta), 1))
    return {"identical": same, "n": len(base), "identical_share": round(same / len(base), 3),
            "mean_common_prefix_share": round(sum(prefix) / len(prefix), 3)}


def main() -> None:
    options = parser(__doc__, OUT)
    options.add_argument("--n", type=int, default=64, help="AdvBench goals")
    args = options.parse_args()

    from safepref import models
    from safepref.generate import GenerationConfig
    from safepref.sources import load_prompts

    prompts = load_prompts(f"advbench:{args.n}")[0]
    config = GenerationConfig(max_new_tokens=48, do_sample=False, prompt_format="alpaca")
    base, base_answers = run("float32", prompts, config)
    fast, fast_answers = run("bfloat16", prompts, config)
    result = {"baseline": base, "bfloat16": fast,
              "ratio": round(fast["tokens_per_second"] / base["tokens_per_second"], 2),
              "agreement": agreement(base_answers, fast_answers)}
    print(f"ratio {result['ratio']}x; agreement {result['agreement']}")
    write(args.write, args.machine,
          {"benchmark": "generation_cpu", "model": MODEL, "cpu_has_bf16": models.cpu_has_bf16(),
           "workload": f"advbench:{args.n}, alpaca, greedy, 48 new tokens, batch 16"}, result)


if __name__ == "__main__":
    main()
