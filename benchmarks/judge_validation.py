"""Validate every shipped judge on the project's held-out labelled sets; write docs/validation/judges.json.

  python benchmarks/judge_validation.py --out /tmp/judge-validation \\
      --extra xstest-safe-smollm2-alpaca=/path/xstest-alpaca-labelled.jsonl --machine "2-core CPU, loaded"

Sets: GPTFuzz's evaluate file (human labels, questions never trained on) and the held-out prompts
(``:held-out``, 20% by prompt hash) of every other labelled source, plus ``--extra`` files (e.g. answers to
XSTest's safe prompts labelled harmless). Each run is ``safepref.evaluate.validate.validate``; the per-item
verdicts and disagreements stay in ``--out``. The JSON holds one row per (judge, dataset).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from safepref.evaluate.validate import VALIDATION_FILE, ValidateConfig, validate

JUDGES = ["keyword", "keyword:more-is-less-v1", "classifier", "safety"]
DATASETS = ["gptfuzz-evaluate", "safety-labels:held-out", "pku-realign:held-out", "pku-safe-sft:held-out",
            "gpt35-safety:held-out", "benign-answers:held-out"]


def row(judge: str, dataset: str, m: dict) -> dict:
    return {"judge": judge, "dataset": dataset, "n": m["n"], "undecided": m["undecided"],
            "accuracy": m["accuracy"]["value"], "ci": m["accuracy"]["ci"], "precision": m["precision"]["value"],
            "recall": m["recall"]["value"], "f1": m["f1"], "kappa": m["kappa"],
            "flagged_rate": m["flagged_rate"]["value"], "true_rate": m["true_rate"]["value"],
            "false_alarm_rate": m["false_alarm_rate"]["value"], "false_alarm_ci": m["false_alarm_rate"]["ci"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for the per-dataset validation runs")
    parser.add_argument("--judge", dest="judges", action="append", default=None)
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=FILE", help="more labelled files")
    parser.add_argument("--machine", default="2-core CPU", help="where it ran (recorded)")
    parser.add_argument("--write", default=str(VALIDATION_FILE), help="the JSON to write")
    args = parser.parse_args()
    judges = args.judges or JUDGES
    datasets = {d: d for d in DATASETS}
    datasets.update(dict(e.split("=", 1) for e in args.extra))
    rows, described = [], {}
    started = time.time()
    for name, labels in datasets.items():
        summary = validate(ValidateConfig(labels=labels, out=str(Path(args.out) / name.replace(":", "_")),
                                          judges=judges))
        for judge, m in summary["judges"].items():
            rows.append(row(judge, name, m))
            described[judge] = m["describe"]
            print(f"{judge:<26} {name:<34} n={m['n']:<5} acc={m['accuracy']['value']} kappa={m['kappa']} "
                  f"flagged={m['flagged_rate']['value']} true={m['true_rate']['value']}", flush=True)
    # Judges not rerun keep their rows from the existing file (one judge can be revalidated alone).
    previous = json.loads(Path(args.write).read_text()) if Path(args.write).is_file() else {}
    kept = [r for r in previous.get("rows", []) if r["judge"] not in judges]
    runs = {**previous.get("runs", {}), **{j: {"command": " ".join(["python", *sys.argv]), "machine": args.machine,
                                              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                                           for j in judges}}
    rows = kept + rows
    judges = list(dict.fromkeys([r["judge"] for r in rows]))
    described = {**{j: e.get("describe", {}) for j, e in previous.get("judges", {}).items()}, **described}
    out = {"format": "safepref-judge-validation", "format_version": 1, "runs": runs,
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "command": " ".join(["python", *sys.argv]), "machine": args.machine, "python": platform.python_version(),
           "seconds": round(time.time() - started, 1), "rows": rows, "judges": {}}
    for judge in judges:
        describe = described.get(judge, {})
        out["judges"][judge] = {"version": describe.get("version"), "describe": describe,
                                "datasets": {r["dataset"]: {k: v for k, v in r.items() if k not in ("judge", "dataset")}
                                             for r in rows if r["judge"] == judge}}
    Path(args.write).parent.mkdir(parents=True, exist_ok=True)
    Path(args.write).write_text(json.dumps(out, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
