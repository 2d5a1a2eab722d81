"""Reward models: train the offline safety RM, measure pairwise accuracy, score answers.

  safepref rm train                                  # head on MiniLM -> $SAFEPREF_CACHE/reward/safety-minilm/
  safepref rm train --name quick --limit 500         # smaller and faster
  safepref rm train --kind finetuned --out out/rm    # fine-tuned RM (SmolLM2 on a GPU, MiniLM on a CPU)
  safepref rm eval --rm hf:out/rm --pairs hh-harmless --out out/rm/hh.json   # + hh.pairs.jsonl
  safepref rm eval --rm offline:safety-minilm --pairs pku-realign --out out/rm/pku.json
  safepref rm eval --rm offline:safety-minilm --pairs hh-harmless --out out/rm/hh.json
  safepref rm eval --rm hf:OpenAssistant/reward-model-deberta-v3-large-v2 --pairs pku-paper
  safepref rm score --rm offline:safety-minilm --responses out/gen --out out/gen-scored

Reward model specs: hf:<hub id or folder>, hf-chat:<hub id or folder>, offline:<name or folder> (offline =
offline:safety-minilm), a saved folder, or length. `rm eval` drops pairs on prompts the RM saw in training (offline RMs record them),
so `--pairs pku-realign` measures the held-out prompts only.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from safepref.config import add_arguments_from
    from safepref.stages import RMTrainCall

    sub = parser.add_subparsers(dest="rm_command", metavar="SUBCOMMAND", required=True)

    train = sub.add_parser("train", help="train the offline safety reward model on the offline data",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments_from(train, RMTrainCall)  # one option per field of the stage's config, help from the field
    train.epilog = ("--kind finetuned: every field of FinetunedRMConfig (safepref/reward/finetuned.py) can be "
                    "set with --set or --config: backbone, input_format, pairs, labels, exclude, epochs, eval_every, "
                    "patience, batch_size, lr, weight_decay, center_rewards, max_length, dev_fraction, "
                    "test_fraction, seed, limit.\n"
                    "--kind head: every field of OfflineRMConfig (safepref/reward/offline.py) can be set with --set or --config: "
                    "embedder, features, hidden, dropout, pair_weight, label_weight, epochs, patience, batch_size, "
                    "lr, weight_decay, dev_fraction, test_fraction, seed, limit, exclude, max_prompt_chars.")

    evaluate = sub.add_parser("eval", help="pairwise accuracy of a reward model on a preference set")
    evaluate.add_argument("--rm", required=True, help="reward model spec")
    evaluate.add_argument("--pairs", required=True, help="pair source: pku-realign, hh-harmless, a file, ...")
    evaluate.add_argument("--chosen-field", default="chosen", help="chosen column of a plain file")
    evaluate.add_argument("--rejected-field", default="rejected", help="rejected column of a plain file")
    evaluate.add_argument("--prompt-field", default="prompt", help="prompt column of a plain file")
    evaluate.add_argument("--include-seen", action="store_true",
                          help="keep pairs whose prompt the RM saw in training (not a held-out measure)")
    evaluate.add_argument("--out", default=None, help="write the result JSON here, and each pair's scores and "
                                                      "verdict beside it (<out stem>.pairs.jsonl)")
    evaluate.add_argument("--threads", type=int, default=None,
                          help="CPU threads for torch (1 is often fastest on a busy machine)")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda")

    score = sub.add_parser("score", help="add a reward score to each answer of a responses file")
    score.add_argument("--rm", required=True, help="reward model spec")
    score.add_argument("--responses", required=True,
                       help="responses JSONL (or `safepref generate`'s output folder) or a source spec")
    score.add_argument("--out", required=True, help="output folder: responses.jsonl + summary.json")
    score.add_argument("--threads", type=int, default=None,
                       help="CPU threads for torch (1 is often fastest on a busy machine)")
    score.add_argument("--device", default="auto", help="auto, cpu, cuda")
    score.add_argument("--chunk", type=int, default=512,
                       help="answers per scoring call and per resumable shard (out/shards/)")


def run(args: argparse.Namespace) -> int:
    if args.threads and args.rm_command != "train":  # rm train sets them itself (stages.train_rm)
        import torch

        torch.set_num_threads(args.threads)
    return {"train": _train, "eval": _eval, "score": _score}[args.rm_command](args)


# ------------------------------------------------------------------------------------------------- train


def _train(args: argparse.Namespace) -> int:
    from safepref.config import from_arguments
    from safepref.stages import RMTrainCall, rm_folder, train_rm

    call = from_arguments(RMTrainCall, args)
    meta = train_rm(call)  # records the command line being run
    out = rm_folder(call, meta["name"])
    print(json.dumps({"sizes": meta["sizes"], **({"best_epoch": meta["best_epoch"]} if call.kind == "head" else {
        "data": meta["data"], "label_pairs": meta["label_pairs"],
        "dropped_identical_sides": meta["dropped_identical_sides"], "steps": meta["steps"],
        "best_checkpoint": meta["best_checkpoint"]}),
        "timings_s": {k: round(v, 1) for k, v in meta["timings"].items()}}, indent=1))
    for key, value in meta["metrics"].items():
        if "accuracy" in value:
            ci = value.get("cluster_ci", [value["ci_low"], value["ci_high"]])
            print(f"{key}: accuracy {value['accuracy']:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f}, n={value['n']})")
        else:
            print(f"{key}: accuracy@0 {value['accuracy_at_0']:.3f}, ROC AUC {value.get('roc_auc', float('nan')):.3f}"
                  f" (n={value['n']})")
    load = "offline" if call.kind == "head" else "hf:{out} or offline"
    print(f"saved {out}  (load it as {load.format(out=out)}:{meta['name'] if not call.out else out})")
    return 0


# -------------------------------------------------------------------------------------------------- eval


def _eval(args: argparse.Namespace) -> int:
    from safepref.errors import DataError
    from safepref.records import write_json, write_jsonl
    from safepref.reward import load_reward_model, pairwise_accuracy, score_pairs, user_turn_ids
    from safepref.reward.evaluation import evaluate_pairs, format_table
    from safepref.sources import load_pairs

    out = Path(args.out) if args.out else None
    if out is not None:
        _check_file_out(out)
    fields = {"prompt": args.prompt_field, "chosen": args.chosen_field, "rejected": args.rejected_field}
    pairs, report = load_pairs(args.pairs, fields)
    same = [i for i, p in enumerate(pairs) if p.chosen_text.strip() == p.rejected_text.strip()]
    if same and len(same) == len(pairs):
        raise DataError(f"{args.pairs}: every pair's chosen and rejected answers are the same text: no preference "
                        "to measure (check --chosen-field / --rejected-field)")
    rm = load_reward_model(args.rm, device=args.device)
    seen = getattr(rm, "seen_prompt_ids", None) or set()
    dropped_seen = 0
    if seen and not args.include_seen:
        kept = [p for p in pairs if not (user_turn_ids(p) & seen)]
        dropped_seen = len(pairs) - len(kept)
        pairs = kept
        if not pairs:
            raise DataError(f"every pair of '{args.pairs}' is on a prompt {rm.name} was trained on; "
                            "evaluate on other data (or pass --include-seen for a training-set measure)")
    print(f"{len(pairs)} pairs from {args.pairs}" +
          (f" ({dropped_seen} dropped: prompt seen in {rm.name}'s training)" if dropped_seen else "") +
          (f"; {len(same)} pairs have identical sides (counted as ties)" if same else ""))
    start = time.perf_counter()
    chosen, rejected = score_pairs(rm, pairs, progress=True)
    seconds = time.perf_counter() - start
    result = pairwise_accuracy(chosen, rejected, groups=[p.prompt_id for p in pairs])
    subsets, rows = evaluate_pairs(chosen, rejected, pairs)
    result.update(subsets)
    result.update({"rm": args.rm, "rm_name": rm.name, "pairs": args.pairs, "pairs_load": report.as_dict(),
                   "dropped_seen_prompts": dropped_seen, "include_seen": args.include_seen,
                   "identical_sides": len(same), "seconds": round(seconds, 2),
                   "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    print(f"{rm.name} on {args.pairs}: accuracy {result['accuracy']:.3f} "
          f"(95% Wilson CI {result['ci_low']:.3f}-{result['ci_high']:.3f}; by-prompt bootstrap "
          f"{result['cluster_ci'][0]:.3f}-{result['cluster_ci'][1]:.3f}), n={result['n']}, ties={result['ties']}, "
          f"{result['n_groups']} prompts, {seconds:.1f} s")
    print(format_table(result))
    if out is not None:
        per_pair = out.with_name(out.name.removesuffix(".json") + ".pairs.jsonl")
        write_jsonl(per_pair, rows)
        result["per_pair"] = per_pair.name
        write_json(out, result)
        print(f"wrote {out} and {per_pair}")
    return 0


def _check_file_out(out: Path) -> None:
    """--out of a JSON result: not a folder, and its folder writable (checked before any model loads)."""
    from safepref.errors import ConfigError

    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file name such as {out / 'result.json'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = out.parent / f".{out.name}.probe"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None


# ------------------------------------------------------------------------------------------------- score


def _score(args: argparse.Namespace) -> int:
    from safepref.reward.scoring import ScoreConfig, score_responses

    summary = score_responses(ScoreConfig(rm=args.rm, responses=args.responses, out=args.out, chunk=args.chunk,
                                          device=args.device))
    reused = f", {summary['chunks_reused']} of {summary['chunks']} chunks reused" if summary["chunks_reused"] else ""
    print(f"scored {summary['count']} answers with {summary['rm_name']} in {summary['seconds']:.1f} s (mean "
          f"{summary['mean']:.3f}{reused}); wrote {args.out}/responses.jsonl")
    return 0
