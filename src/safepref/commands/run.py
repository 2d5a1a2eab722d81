"""Run the whole study from one experiment YAML: a cached, resumable graph of stages, then the report.

  safepref run configs/quickstart.yaml                    # everything, on the embedded model, offline
  safepref run configs/quickstart.yaml --dry-run          # the plan: every stage, cached or not
  safepref run configs/quickstart.yaml --set prompts.limit=64 --set device=cuda --out runs/quickstart-gpu
  safepref run configs/paper/llama-3.1-8b.yaml --dry-run  # validate a paper reproduction config
  safepref run configs/offline-study.yaml                 # 3 seeds (`seeds: [0, 1, 2]`), pooled in the report

Kill it at any point and rerun the same command: finished stages are skipped, unfinished ones resume.
Changing one setting recomputes only the stages that depend on it.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="experiment YAML (configs/quickstart.yaml, configs/paper/*.yaml)")
    parser.add_argument("--out", default=None, help="run folder (default: runs/<experiment name>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override one experiment field (repeatable), e.g. --set prompts.limit=64")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the plan; run nothing")
    parser.add_argument("--rehearse", type=int, default=None, metavar="N",
                        help="rehearse every stage on N prompts with random twins of the models, offline, and "
                             "estimate the full run's GPU-hours (rehearsal.md; see safepref.rehearse)")


def run(args: argparse.Namespace) -> int:
    import time

    from safepref.pipeline import run_experiment

    started = time.time()
    if args.rehearse is not None:
        from safepref.rehearse import rehearse_experiment

        rehearse_experiment(args.experiment, args.rehearse, args.out, args.overrides, dry_run=args.dry_run)
        return 0
    result = run_experiment(args.experiment, args.out, args.overrides, dry_run=args.dry_run)
    if args.dry_run:
        width = max(len(r["stage"]) for r in result)
        for row in result:
            state = "cached" if row["cached"] else "to run"
            print(f"{row['stage']:<{width}}  {state:<7} {row['key']}  {row['description']}")
        todo = sum(not r["cached"] for r in result)
        print(f"{len(result)} stages, {todo} to run")
        return 0
    report = result.get("report", {}).get("summary", {})
    print(f"done in {time.time() - started:.0f} s; report: {report}")
    for note in report.get("missing") or []:
        print(f"missing: {note}")
    return 0
