"""The reference cache on this CPU: three LoRA DPO runs of the embedded SmolLM2-135M-Instruct that share answers,
as a study's conditions and seeds do, with ``ref_cache`` off (the baseline: TRL scores the reference for every
pair of every run) and on (each (prompt, answer) sequence scored once), same pairs, same settings, one process.

  python benchmarks/ref_cache.py --machine "2-core CPU (AMD EPYC, no AVX512), idle"   # docs/benchmarks/

The runs, on ``--n`` PKU-SafeRLHF prompts that Alpaca-7B's safe answers (``pku-safe-sft``) also cover:
``original`` (safer, less safe), ``sft-chosen`` (Alpaca-7B's safe answer, the same less-safe answer: one side shared,
as HC+Self and Stronger+Self share the target's answer) and ``original`` again with seed 1 (both sides shared).
Each trains 1 step (``dpo-smollm2-lora.yaml``, batch 4, no probe): the time that differs is the reference pass in
the trainer's set-up. Reported: each run's set-up and wall seconds and sequences scored, and the ratio of the
summed set-up seconds (baseline / cached). The two modes alternate run by run, after a full warm-up run (not
timed): the first runs of a process are slower.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _common import parser, write  # benchmarks/_common.py (the script folder is on sys.path)

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "ref-cache-cpu.json"
ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"


def sets(n: int) -> dict[str, list]:
    """The two pair sets: PKU's (safer, less safe), and Alpaca-7B's safe answer against the same less-safe one."""
    from safepref.records import PreferencePair
    from safepref.sources import load_pairs, load_responses

    safe = {r.prompt: r.response for r in load_responses("pku-safe-sft")[0]}
    pairs = [p for p in load_pairs("pku-realign")[0] if p.prompt_text in safe and safe[p.prompt_text] != p.chosen_text]
    pairs = pairs[:n]
    swapped = [PreferencePair(prompt=p.prompt, chosen=[{"role": "assistant", "content": safe[p.prompt_text]}],
                              rejected=p.rejected, chosen_meta=p.chosen_meta, rejected_meta=p.rejected_meta)
               for p in pairs]
    return {"original": pairs, "sft-chosen": swapped}


def train(pairs: list, cache: bool, seed: int, out: Path) -> dict:
    from safepref.train import load_train_config, train_dpo

    config = load_train_config(ROOT / "configs" / "train" / "dpo-smollm2-lora.yaml",
                               [f"ref_cache={str(cache).lower()}", f"seed={seed}", "max_steps=1",
                                "per_device_train_batch_size=4", "monitor.probe_pairs=0", "save_steps=0"])
    started = time.perf_counter()
    summary = train_dpo(pairs, MODEL, config, out)
    training = summary["training"]
    report = training.get("reference_cache") or {}
    return {"seconds": round(time.perf_counter() - started, 2), "setup_seconds": training["setup_seconds"],
            "sequences": 2 * summary["pairs"]["trained"], "scored": report.get("scored", 2 * summary["pairs"]["trained"])}


def main() -> None:
    import os

    args = parser(__doc__, OUT)
    args.add_argument("--n", type=int, default=24, help="prompts (pairs per run)")
    options = args.parse_args()
    data = sets(options.n)
    runs = [("original", 0), ("sft-chosen", 0), ("original", 1)]
    with tempfile.TemporaryDirectory() as tmp:
        # an empty $SAFEPREF_CACHE: the cached mode starts cold (the embedded model is converted again, untimed)
        os.environ["SAFEPREF_CACHE"] = str(Path(tmp) / "cache")
        train(data["original"], False, 0, Path(tmp) / "warm-up")
        results = {"baseline": [], "cached": []}
        # interleaved, run by run: both modes meet the same machine state (the first runs of a process are slower)
        for i, (name, seed) in enumerate(runs):
            for mode, cache in (("baseline", False), ("cached", True)):
                row = {"run": name, "seed": seed, **train(data[name], cache, seed, Path(tmp) / f"{mode}-{i}")}
                print(mode, row, flush=True)
                results[mode].append(row)
    base = sum(r["setup_seconds"] for r in results["baseline"])
    cached = sum(r["setup_seconds"] for r in results["cached"])
    ratio = round(base / cached, 2)
    print(f"set-up seconds, 3 runs: baseline {base:.1f}, cached {cached:.1f}: {ratio}x; sequences scored "
          f"{sum(r['scored'] for r in results['baseline'])} vs {sum(r['scored'] for r in results['cached'])}")
    write(options.write, options.machine, {"benchmark": "reference cache, LoRA DPO set-up (CPU)", "model": MODEL,
                                           "pairs_per_run": len(data["original"]), "setup_ratio": ratio}, results)


if __name__ == "__main__":
    main()
