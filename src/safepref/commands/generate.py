"""Generate answers to prompts with a model, written with provenance in resumable shards.

  safepref generate --model smollm2-135m-instruct --prompts advbench:8 --preset paper-sample --out out/gen
  safepref generate --model path/to/ckpt --prompts my.csv --prompt-field question --preset paper-greedy \\
      --set max_new_tokens=64 --out out/greedy
  safepref generate --backend openai --model gpt-4o --prompts pku-paper:50 --preset paper-greedy --out out/gpt4o

Killing the command and rerunning it resumes: finished shards are kept, the rest is generated. A shard that no
longer matches its done-marker (deleted, truncated, edited) is generated again, with a warning.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from safepref.config import add_arguments_from
    from safepref.stages import GenerateCall

    add_arguments_from(parser, GenerateCall)  # one option per field, help from the field


def run(args: argparse.Namespace) -> int:
    from safepref.config import from_arguments
    from safepref.stages import GenerateCall, generate

    summary = generate(from_arguments(GenerateCall, args))
    print(json.dumps({k: summary[k] for k in ("prompts", "prompts_resumed", "responses", "dropped",
                                               "seconds_this_run")}, indent=1))
    print(f"wrote {args.out}/responses.jsonl")
    return 0
