"""Write report.md, PNG figures and summary.json for a `safepref run` folder.

  safepref report runs/quickstart
  safepref report runs/quickstart --out docs/results/quickstart
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run folder written by `safepref run`")
    parser.add_argument("--out", default=None, help="where to write the report (default: the run folder)")


def run(args: argparse.Namespace) -> int:
    from safepref.report import write_report

    result = write_report(args.run_dir, args.out)
    print(f"wrote {args.out or args.run_dir}/report.md and report.html with figures "
          f"{', '.join(result['figures']) or 'none'}")
    if result["missing_stages"]:
        print(f"stages without results: {', '.join(result['missing_stages'])}")
    for note in result.get("missing") or []:  # files deleted from finished stages: said, never silently dropped
        print(f"missing: {note}")
    return 0
