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
import sys
from pathlib import Path

from safepref.redact import command_line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe or condition name (see above)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--target-greedy", default=None, metavar="FILE",
                        help="the target's greedy answers (safepref generate --preset paper-greedy)")
    parser.add_argument("--target-samples", default=None, metavar="FILE",
                        help="the target's sampled answers (safepref generate --preset paper-sample)")
    parser.add_argument("--chosen", default=None, metavar="SOURCE",
                        help="chosen-side answers for x-self / x-self-rm (gpt4o, pku-safe-sft, a JSONL, ...)")
    parser.add_argument("--human", default=None, metavar="PAIRS_SPEC",
                        help="human-labelled pairs for original / hc-self (pku-realign, pku-paper, a file)")
    parser.add_argument("--pool", action="append", default=[], metavar="SOURCE",
                        help="a pool source for pool-rm (repeatable); label=SPEC names it")
    parser.add_argument("--rm", default=None, metavar="SPEC", help="reward model: hf:<id>, offline:<name>, length")
    parser.add_argument("--proxy", default=None, metavar="NOTE",
                        help="this set only stands in for the condition (e.g. Peer+RM without peers of the "
                             "target's size): NOTE says why; the datasheet and the report label it a proxy")
    parser.add_argument("--rescore", action="store_true", help="score every answer with --rm, even scored ones")
    parser.add_argument("--device", default="auto", help="device for the reward model (auto, cpu, cuda)")
    parser.add_argument("--prompts", default=None, metavar="SPEC", help="keep only the prompts of this source")
    parser.add_argument("--limit-prompts", type=int, default=None, metavar="N",
                        help="keep N common prompts (smallest prompt_id first)")
    parser.add_argument("--max-per-prompt", type=int, default=None, metavar="K",
                        help="at most K pairs a prompt (original, hc-self, x-self, x-self-rm)")
    parser.add_argument("--min-chars", type=int, default=None,
                        help="self-rm / pool-rm: shortest valid answer in characters (default 5, the study's)")
    parser.add_argument("--min-samples", type=int, default=None,
                        help="self-rm / pool-rm: valid answers a prompt needs (default 2, the study's)")
    parser.add_argument("--min-sources", type=int, default=2, help="pool-rm: sources a prompt needs (default 2)")
    parser.add_argument("--tokenizer", default="auto",
                        help="tokenizer for datasheet lengths: auto (the target model's), a model spec, or none "
                             "(whitespace words)")
    parser.add_argument("--refusal-phrases", default="gcg-v1", help="refusal phrase list (gcg-v1, more-is-less-v1)")


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from safepref.build import BuildConfig, build_set

    config = BuildConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(BuildConfig)})
    summary = build_set(config, command=_command_line())
    out = Path(args.out)
    print((out / "datasheet.md").read_text(encoding="utf-8"), end="")  # datasheet_markdown of the sheet
    print(json.dumps({"pairs": summary["pairs"], "prompts": summary["prompts"], "drops": summary["drops"]}))
    print(f"wrote {out}/pairs.jsonl, datasheet.json, datasheet.md, summary.json")
    return 0


def _command_line() -> str | None:
    """The command as typed, when this process is the `safepref build` command line (else None: build_set
    records the equivalent command)."""
    argv = sys.argv[1:]
    return command_line(["safepref", *argv]) if "build" in argv else None
