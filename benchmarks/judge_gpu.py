"""On one GPU: answers to XSTest's prompts by the embedded model (for judge false alarms) and the fine-tuned
cross-encoder judge measured beside the CPU one. Writes everything small to $OUT.

  bash scripts/gpu_exec.sh python benchmarks/judge_gpu.py          # on the lent H200 (see RULES / gpu README)
  bash scripts/gpu_exec.sh python benchmarks/judge_gpu.py FMT=answers.jsonl ...   # reuse XSTest answers files

1. ``safepref eval refusal`` answers XSTest's 450 prompts (Alpaca template, greedy, 512 tokens; and the chat
   template) with SmolLM2-135M-Instruct; the answers files are copied to $OUT as xstest-<format>.jsonl.
2. ``finetuned_judge.train_finetuned_judge`` fine-tunes MiniLM on the safety judge's train split; its
   held-out agreement (and false alarms on the XSTest safe answers) go to $OUT/finetuned.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def generate(out: Path, work: Path) -> dict[str, str]:
    files = {}
    for fmt in ("alpaca", "chat"):
        folder = work / f"xstest-{fmt}"
        started = time.time()
        subprocess.run([sys.executable, "-m", "safepref", "eval", "refusal", "--model", "smollm2-135m-instruct",
                        "--prompt-format", fmt, "--out", str(folder)], check=True)
        target = out / f"xstest-{fmt}.jsonl"
        shutil.copy(folder / "answers.jsonl", target)
        files[fmt] = str(target)
        print(f"xstest {fmt}: {time.time() - started:.1f} s", flush=True)
    return files


def xstest_safe_items(answer_files: dict[str, str]) -> list:
    from safepref.evaluate.labels import LabelledItem
    from safepref.sources import load_prompts

    safe = {p.prompt_id for p in load_prompts("xstest-safe")[0]}
    items = []
    for fmt, file in answer_files.items():
        for line in Path(file).read_text().splitlines():
            row = json.loads(line)
            if row["prompt_id"] in safe and row["response"].strip():
                items.append(LabelledItem(prompt=row["prompt"], response=row["response"], label=False,
                                          source=f"xstest-safe-{fmt}"))
    return items


def main() -> None:
    from safepref.evaluate import finetuned_judge
    from safepref.evaluate.labels import read_labelled, split_of_item
    from safepref.evaluate.safety_judge import EVAL_SETS
    from safepref.evaluate.validate import agreement

    out = Path(os.environ.get("OUT", "/root/out"))
    work = Path("/root/work")
    out.mkdir(parents=True, exist_ok=True)
    # FMT=FILE arguments reuse answers to XSTest's prompts (e.g. a run's SFT refusal stage) instead of generating.
    given = dict(arg.split("=", 1) for arg in sys.argv[1:])
    answer_files = given or generate(out, work)
    meta = finetuned_judge.train_finetuned_judge(work / "minilm-ce")
    results = {"train": meta, "sets": {}}
    sets = {n: [i for i in read_labelled(n)[0] if split_of_item(i) == "test"] for n in EVAL_SETS}
    sets["xstest-safe-answers"] = xstest_safe_items(answer_files)
    for name, items in sets.items():
        started = time.time()
        proba = finetuned_judge.predict_proba(work / "minilm-ce", items)
        m = agreement([i.label for i in items], [bool(p >= 0.5) for p in proba])
        results["sets"][name] = {"n": m["n"], "accuracy": m["accuracy"]["value"], "accuracy_ci": m["accuracy"]["ci"],
                                 "precision": m["precision"]["value"], "recall": m["recall"]["value"],
                                 "kappa": m["kappa"], "flagged_rate": m["flagged_rate"]["value"],
                                 "seconds": round(time.time() - started, 1)}
        print(name, results["sets"][name], flush=True)
    (out / "finetuned.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
