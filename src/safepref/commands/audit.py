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
from pathlib import Path

from safepref.config import finite_float
from safepref.redact import command_line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from safepref.audit import DEFAULT_REPRESENTATIONS

    parser.add_argument("--pairs", action="append", required=True, metavar="PATH_OR_SPEC",
                        help="a preference set: pairs.jsonl, a folder holding one, or a source spec (repeatable)")
    parser.add_argument("--name", action="append", default=[],
                        help="display name of each --pairs, in the same order (default: folder or file name)")
    parser.add_argument("--model", default="smollm2-135m-instruct",
                        help="target (= reference) model: hub id, folder, smollm2-135m-instruct, or none")
    parser.add_argument("--repr", dest="representations", action="append", default=None, metavar="NAME",
                        help=f"representation (repeatable; default: {' '.join(DEFAULT_REPRESENTATIONS)})")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds, grouped by prompt")
    parser.add_argument("--seed", type=int, default=0, help="seed for folds, probes and bootstrap")
    parser.add_argument("--C", type=finite_float, default=1.0, help="inverse L2 strength of the logistic regression")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for CIs (0 = none)")
    parser.add_argument("--no-margin", dest="margin", action="store_false",
                        help="skip the reference model's log-prob margin")
    parser.add_argument("--max-pairs", type=int, default=None, help="audit only the first N pairs of each set")
    parser.add_argument("--prompt-format", default="chat", choices=["chat", "raw", "alpaca"],
                        help="how the target model sees the prompt (chat template, or raw text)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per target-model batch")
    parser.add_argument("--max-length", type=int, default=512, help="prompt + response tokens kept")
    parser.add_argument("--out", default=None, help="output folder for audit.json/.md/.png (default: none)")


def _default_name(spec: str) -> str:
    path = Path(spec)
    if path.is_dir():
        return path.name
    if path.is_file():
        return path.parent.name if path.name == "pairs.jsonl" else path.stem
    return spec


def _command(args: argparse.Namespace, names: list[str]) -> str:
    """The equivalent command line, every option spelled out (recorded in the report)."""
    from safepref.audit import DEFAULT_REPRESENTATIONS

    parts = ["safepref", "audit"]
    for spec, name in zip(args.pairs, names, strict=True):
        parts += ["--pairs", spec, "--name", name]
    parts += ["--model", str(args.model)]
    for rep in args.representations or DEFAULT_REPRESENTATIONS:
        parts += ["--repr", rep]
    parts += ["--folds", str(args.folds), "--seed", str(args.seed), "--C", str(args.C),
              "--bootstrap", str(args.bootstrap), "--prompt-format", args.prompt_format,
              "--max-length", str(args.max_length), "--batch-size", str(args.batch_size),
              "--device", args.device, "--dtype", args.dtype]
    if not args.margin:
        parts.append("--no-margin")
    if args.max_pairs:
        parts += ["--max-pairs", str(args.max_pairs)]
    if args.out:
        parts += ["--out", args.out]
    return command_line(parts)


def run(args: argparse.Namespace) -> int:
    from safepref.audit import DEFAULT_REPRESENTATIONS, AuditConfig, run_audit
    from safepref.audit.report import render_text
    from safepref.errors import ConfigError

    if args.name and len(args.name) != len(args.pairs):
        raise ConfigError(f"--name given {len(args.name)} time(s) but --pairs {len(args.pairs)} time(s); "
                          f"give one name per set or none")
    names = args.name or [_default_name(spec) for spec in args.pairs]
    if args.out:
        from safepref.paths import check_output_dir

        check_output_dir(args.out)  # before any model loads
    model = None if str(args.model).lower() in ("none", "") else args.model
    config = AuditConfig(
        representations=list(args.representations or DEFAULT_REPRESENTATIONS), model=model, folds=args.folds,
        seed=args.seed, C=args.C, bootstrap=args.bootstrap, margin=args.margin, max_pairs=args.max_pairs,
        device=args.device, dtype=args.dtype, batch_size=args.batch_size, max_length=args.max_length,
        prompt_format=args.prompt_format)
    started = time.perf_counter()
    report = run_audit(list(zip(names, args.pairs, strict=True)), config, args.out, command=_command(args, names))
    print(render_text(report))
    print(f"\n({time.perf_counter() - started:.0f} s)")
    if args.out:
        print(f"wrote {args.out}/audit.json, audit.md, audit.png")
    return 0
