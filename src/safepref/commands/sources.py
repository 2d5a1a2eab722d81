"""List the registered data sources, or load one and report what it holds.

  safepref sources                 # the list
  safepref sources advbench:10     # load, count, show the first rows
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", nargs="?", help="a source spec to load (name, name:N, name=path, or file)")
    parser.add_argument("--as", dest="kind", default=None, choices=["prompts", "responses", "pairs"],
                        help="load as this kind (default: the source's own kind)")
    parser.add_argument("--show", type=int, default=2, help="rows to print")


def run(args: argparse.Namespace) -> int:
    from safepref import sources
    from safepref.records import to_dict

    if not args.spec:
        print("Registered sources (read from $SAFEPREF_DATA, or the hub where noted):")
        print(sources.describe_sources())
        return 0
    spec = sources.parse_spec(args.spec)
    kind = args.kind or (sources.SOURCES[spec.name].kind if spec.name else "prompts")
    loader = {"prompts": sources.load_prompts, "responses": sources.load_responses,
              "pairs": sources.load_pairs}[kind]
    records, report = loader(args.spec)
    print(json.dumps(report.as_dict()))
    for record in records[: args.show]:
        print(json.dumps(to_dict(record), ensure_ascii=False)[:400])
    return 0
