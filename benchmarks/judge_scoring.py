"""How long the offline judges take to score 1,000 answers on this machine (cold: no embedding cache).

  python benchmarks/judge_scoring.py --machine "2-core CPU, loaded by other jobs"     # writes docs/benchmarks/

The answers are the first 1,000 rows of GPTFuzz's evaluate file (long jailbreak answers, 686 characters on
average) with their questions. The ``safety`` judge must be trained already (``safepref eval train-judge``);
its MiniLM embedding cache is switched off, so every request and answer is embedded as a new one would be.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "judge_scoring.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--machine", default="2-core CPU")
    parser.add_argument("--write", default=str(OUT))
    args = parser.parse_args()

    import torch

    from safepref.evaluate import safety_judge as sj
    from safepref.evaluate.judges import make_judge
    from safepref.evaluate.labels import read_labelled
    from safepref.reward.offline import MiniLMEmbedder

    items, _ = read_labelled("gptfuzz-evaluate", limit=args.n)
    prompts, answers = [i.prompt for i in items], [i.response for i in items]
    results = {}
    for name in ("keyword", "classifier", "safety"):
        judge = make_judge(name)  # loading (and first-use training) is not timed
        if name == "safety":
            sj._EMBEDDER = MiniLMEmbedder(device="cpu", cache=False)
            sj._EMBEDDER._load()
        started = time.perf_counter()
        verdicts = judge.judge(prompts, answers)
        seconds = time.perf_counter() - started
        results[name] = {"answers": len(verdicts), "seconds": round(seconds, 2),
                         "answers_per_second": round(len(verdicts) / seconds, 1)}
        print(name, results[name], flush=True)
    out = {"benchmark": "judge scoring, 1,000 GPTFuzz answers with their questions, cold embedding cache",
           "machine": args.machine, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "python": platform.python_version(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "results": results}
    Path(args.write).parent.mkdir(parents=True, exist_ok=True)
    Path(args.write).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
