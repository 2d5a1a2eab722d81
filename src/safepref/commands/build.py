"""Build a preference set for one of the study's conditions (or any recipe), with its datasheet.

  safepref build gpt4o-self --target-greedy out/gen/greedy --out out/sets/gpt4o-self   # --chosen gpt4o implied
  safepref build hc-self --human pku-realign --target-greedy out/gen/greedy --out out/sets/hc-self
  safepref build stronger-self --chosen pku-safe-sft --target-greedy out/gen/greedy --out out/sets/stronger
  safepref build self-rm --target-samples out/gen/sample --rm offline:safety-minilm --out out/sets/self-rm
  safepref build all-rm --pool gpt4o --pool pku-safe-sft --target-samples out/gen/sample --rm length \\
      --out out/sets/all-rm
  safepref build original --human pku-realign --limit-prompts 32 --out out/sets/original

The first argument is a recipe (original, hc-self, x-self, x-self-rm, self-rm, pool-rm) or one of the study's
conditions (original, hc-self, gpt4o-self, stronger-self, peer-rm, all-rm, self-rm), which names its recipe.

Inputs: --target-greedy / --target-samples take the output of `safepref generate` (its folder or its
responses.jsonl; provenance and scores are kept); --chosen and --pool take any answer source (gpt4o,
pku-safe-sft, gpt35-safety, a responses JSONL); --human any pairs source (pku-realign, pku-paper, a pairs
file). all-rm pools the target's answers (as source "self") with the --pool sources; peer-rm pools only --pool.

Prompts are matched across inputs by prompt_id. --prompts SPEC keeps only those prompts; --limit-prompts N
keeps the N prompts with the smallest prompt_id among the prompts common to the inputs (a fixed pseudo-random
subset, independent of file order). Without them nothing is filtered and the recipe counts unmatched prompts.

Scores: recipes that compare rewards (x-self-rm, self-rm, pool-rm) score the answers that lack a score with
--rm (hf:<id or folder>, offline:safety-minilm, length); --rescore replaces existing scores. Other recipes
score both sides with --rm for the datasheet only.

Writes, atomically, into --out: pairs.jsonl, datasheet.json, datasheet.md, summary.json (command, config,
inputs, prompt selection, scoring, counts, drops by reason; written last).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from safepref.build import BuildConfig
    from safepref.config import add_arguments_from

    add_arguments_from(parser, BuildConfig, positional=("recipe",))  # one option per field, help from the field


def run(args: argparse.Namespace) -> int:
    import json

    from safepref.build import BuildConfig, build_set
    from safepref.config import from_arguments

    summary = build_set(from_arguments(BuildConfig, args))  # records the command line being run
    out = Path(args.out)
    print((out / "datasheet.md").read_text(encoding="utf-8"), end="")  # datasheet_markdown of the sheet
    print(json.dumps({"pairs": summary["pairs"], "prompts": summary["prompts"], "drops": summary["drops"]}))
    print(f"wrote {out}/pairs.jsonl, datasheet.json, datasheet.md, summary.json")
    return 0
