"""MiniLM embedding on this CPU: safepref's embedder (batches of 16, bfloat16 where the CPU has it) against the
embedder as it was (float32, batches of 64), same texts, one run; the ratio of texts/s and how close the vectors
are (cosine to the float32 vectors of the same text).

  python benchmarks/embedding.py --machine "2-core CPU (AMD EPYC, AVX512-BF16), idle"    # writes docs/benchmarks/

The texts are what the safety judge embeds on first use: answers of its training sets (GPTFuzz train,
PKU-SafeRLHF, the labelled safety answers), ``--n`` of them (default 1,000), with no embedding cache.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from _common import parser, write  # benchmarks/_common.py (the script folder is on sys.path)

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "embedding-cpu.json"
SETS = ("gptfuzz-train", "pku-realign", "safety-labels", "pku-safe-sft")


def texts(n: int) -> list[str]:
    from safepref.evaluate.labels import read_labelled

    per_set = -(-n // len(SETS))
    out: list[str] = []
    for name in SETS:
        out += [i.response for i in read_labelled(name, limit=per_set)[0]]
    return list(dict.fromkeys(out))[:n]


def run(variant: dict, sample: list[str]) -> tuple[dict, object]:
    import numpy as np

    from safepref.reward.embedders import PRECISION_ENV, MiniLMEmbedder

    os.environ[PRECISION_ENV] = variant["precision"]
    embedder = MiniLMEmbedder(device="cpu", batch_size=variant["batch_size"], cache=False)
    embedder._load()  # loading is not timed
    started = time.perf_counter()
    vectors = embedder(sample)
    seconds = time.perf_counter() - started
    row = {**variant, "precision_used": embedder.precision, "seconds": round(seconds, 2),
           "texts_per_second": round(len(sample) / seconds, 1)}
    return row, np.asarray(vectors)


def main() -> None:
    options = parser(__doc__, OUT)
    options.add_argument("--n", type=int, default=1000)
    args = options.parse_args()

    import torch

    sample = texts(args.n)
    variants = [{"name": "baseline: float32, batch 64", "precision": "float32", "batch_size": 64},
                {"name": "float32, batch 16", "precision": "float32", "batch_size": 16},
                {"name": "safepref: auto precision, batch 16", "precision": "auto", "batch_size": 16}]
    rows, base = [], None
    for variant in variants:
        row, vectors = run(variant, sample)
        if base is None:
            base = vectors
        cosine = (vectors * base).sum(axis=1)  # unit vectors
        row.update(cosine_min=round(float(cosine.min()), 6), cosine_mean=round(float(cosine.mean()), 6),
                   ratio_vs_baseline=round(row["texts_per_second"] / rows[0]["texts_per_second"], 2) if rows
                   else 1.0)
        rows.append(row)
        print(row, flush=True)
    write(args.write, args.machine,
          {"benchmark": "MiniLM embedding on the CPU, cold (no cache), the safety judge's training answers",
           "texts": len(sample), "mean_chars": round(sum(map(len, sample)) / len(sample), 1),
           "avx512_bf16": torch.cpu._is_avx512_bf16_supported(), "amx": torch.cpu._is_amx_tile_supported(),
           "torch": torch.__version__}, rows)

if __name__ == "__main__":
    main()
