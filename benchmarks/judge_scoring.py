"""How long the offline judges take to score 1,000 answers on this machine (cold: no embedding cache).

  python benchmarks/judge_scoring.py --machine "2-core CPU, loaded by other jobs"     # writes docs/benchmarks/

The answers are the first 1,000 rows of GPTFuzz's evaluate file (long jailbreak answers, 686 characters on
average) with their questions. The ``safety`` judge must be trained already (``safepref eval train-judge``);
its MiniLM embedding cache is switched off, so every request and answer is embedded as a new one would be.
"""

from __future__ import annotations

import time
from pathlib import Path

from _common import parser, write  # benchmarks/_common.py (the script folder is on sys.path)

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "judge_scoring.json"


def main() -> None:
    options = parser(__doc__, OUT)
    options.add_argument("--n", type=int, default=1000)
    args = options.parse_args()

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
    write(args.write, args.machine,
          {"benchmark": "judge scoring, 1,000 GPTFuzz answers with their questions, cold embedding cache"}, results)

if __name__ == "__main__":
    main()
