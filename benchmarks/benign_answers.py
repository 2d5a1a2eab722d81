"""The ``benign-answers`` labelled set: the embedded model's answers to safepref's harmless requests.

  python benchmarks/benign_answers.py                                   # CPU, hf backend (about 15 min a template)
  python benchmarks/benign_answers.py --backend fast --device cuda      # on a GPU
  python benchmarks/benign_answers.py --from chat=/tmp/bgen-chat --from alpaca=/tmp/bgen-alpaca   # reuse runs

SmolLM2-135M-Instruct answers the requests of ``safepref/evaluate/data/benign_requests.jsonl`` (626 written for
safepref: 200 everyday tasks and 426 that only sound dangerous; those within cosine 0.80 of an XSTest prompt
(all-MiniLM-L6-v2) were removed so that XSTest stays a clean false-alarm test) with the chat and the Alpaca
template, greedy, 256 new tokens. Non-empty answers go to ``safepref/evaluate/data/benign_answers.jsonl`` with
label 0, the request's category, the template and the generation settings; empty answers are counted, not kept.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from safepref.evaluate.labels import BENIGN_ANSWERS

REQUESTS = BENIGN_ANSWERS.parent / "benign_requests.jsonl"
TEMPLATES = ("chat", "alpaca")
MAX_NEW_TOKENS = 256


def generate(fmt: str, folder: Path, backend: str, device: str) -> None:
    subprocess.run([sys.executable, "-m", "safepref", "generate", "--model", "smollm2-135m-instruct",
                    "--prompts", str(REQUESTS), "--preset", "paper-greedy", "--set", f"prompt_format={fmt}",
                    "--set", f"max_new_tokens={MAX_NEW_TOKENS}", "--set", "batch_size=32", "--backend", backend,
                    "--device", device, "--out", str(folder)], check=True)


def assemble(folders: dict[str, Path], out: Path = BENIGN_ANSWERS) -> dict[str, dict[str, int]]:
    """Write the labelled set from one ``safepref generate`` folder per template; returns counts per template."""
    category = {}
    for line in REQUESTS.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        category[row["prompt"]] = row["category"]
    rows, counts = [], {}
    for fmt, folder in folders.items():
        answers = [json.loads(line) for line in (folder / "responses.jsonl").read_text().splitlines()]
        kept = [a for a in answers if a["response"].strip()]
        counts[fmt] = {"answers": len(answers), "kept": len(kept), "dropped_empty": len(answers) - len(kept)}
        for a in kept:
            settings = a["source"]["generation"]
            rows.append({"prompt": a["prompt"], "response": a["response"], "label": 0,
                         "category": category.get(a["prompt"], "unknown"), "template": fmt,
                         "generator": f"{a['source']['name']} ({a['source']['backend']} backend), greedy, "
                                      f"{settings['max_new_tokens']} new tokens"})
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="hf")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", default="/tmp/benign-answers", help="folder for the generation runs")
    parser.add_argument("--from", dest="given", action="append", default=[], metavar="TEMPLATE=FOLDER",
                        help="reuse a finished `safepref generate` folder for a template")
    parser.add_argument("--out", default=str(BENIGN_ANSWERS))
    args = parser.parse_args()
    folders = {fmt: Path(folder) for fmt, folder in (g.split("=", 1) for g in args.given)}
    for fmt in TEMPLATES:
        if fmt not in folders:
            started = time.time()
            folders[fmt] = Path(args.work) / fmt
            generate(fmt, folders[fmt], args.backend, args.device)
            print(f"{fmt}: {time.time() - started:.0f} s", flush=True)
    print(json.dumps(assemble(folders, Path(args.out))), flush=True)


if __name__ == "__main__":
    main()
