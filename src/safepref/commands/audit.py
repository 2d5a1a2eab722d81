"""How separable are chosen and rejected, and by what cue? Run before spending GPU hours on DPO.

  safepref audit --pairs out/self_rm/pairs.jsonl --out out/audit
  safepref audit --pairs out/self_rm --pairs out/gpt4o_self --pairs pku-paper:180 \\
      --name Self+RM --name GPT4o+Self --name Original \\
      --model smollm2-135m-instruct --repr hidden:auto --repr minilm --repr length --repr refusal --repr tfidf \\
      --folds 5 --out out/audit
  safepref audit --pairs my.jsonl --repr hidden:all --no-margin --out out/sweep   # probe every layer
  safepref audit --pairs my.jsonl --model none --repr length --repr refusal --repr tfidf --no-margin  # no model

--pairs takes a pairs.jsonl, a folder holding one, or a pair source spec (pku-paper:200). Each set is
probed by logistic regression on every representation (5-fold, grouped by prompt), and its reference
log-prob margin is measured with --model. Prints one table of probe AUC and accuracy for all sets and a verdict
per set; writes audit.json, audit.md, audit.png and margins.jsonl to --out.

Representations: hidden:<layer|auto|all> (target model, mean over response tokens; auto = last layer),
embed:<sentence-transformers name or folder> (minilm = all-MiniLM-L6-v2, offline), length, refusal, tfidf.
"""

from __future__ import annotations

import argparse
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from safepref.config import add_arguments_from
    from safepref.stages import AuditCall

    add_arguments_from(parser, AuditCall)  # one option per field, help from the field


def run(args: argparse.Namespace) -> int:
    from safepref.audit.report import render_text
    from safepref.config import from_arguments
    from safepref.stages import AuditCall, audit

    started = time.perf_counter()
    report = audit(from_arguments(AuditCall, args))  # audit.json records the command, every option spelled out
    print(render_text(report))
    print(f"\n({time.perf_counter() - started:.0f} s)")
    if args.out:
        print(f"wrote {args.out}/audit.json, audit.md, audit.png")
    return 0
