"""Reward models: train the offline safety RM, measure pairwise accuracy, score answers.

  safepref rm train                                  # offline safety RM -> $SAFEPREF_CACHE/reward/safety-minilm/
  safepref rm train --name quick --limit 500         # smaller and faster
  safepref rm eval --rm offline:safety-minilm --pairs pku-realign --out out/rm/pku.json
  safepref rm eval --rm offline:safety-minilm --pairs hh-harmless --out out/rm/hh.json
  safepref rm eval --rm hf:OpenAssistant/reward-model-deberta-v3-large-v2 --pairs pku-paper
  safepref rm score --rm offline:safety-minilm --responses out/gen --out out/gen-scored

Reward model specs: hf:<hub id or folder>, offline:<name or folder> (offline = offline:safety-minilm), a
saved folder, or length. `rm eval` drops pairs on prompts the RM saw in training (offline RMs record them),
so `--pairs pku-realign` measures the held-out prompts only.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="rm_command", metavar="SUBCOMMAND", required=True)

    train = sub.add_parser("train", help="train the offline safety reward model on the offline data",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--name", default=None, help="artifact name (default safety-minilm)")
    train.add_argument("--out", default=None, help="output folder (default $SAFEPREF_CACHE/reward/<name>)")
    train.add_argument("--config", default=None, help="YAML of OfflineRMConfig fields")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                       help="override one config field (repeatable), e.g. --set features=response")
    train.add_argument("--pairs", action="append", default=None, help="pair source (repeatable)")
    train.add_argument("--labels", action="append", default=None, help="labelled source (repeatable)")
    train.add_argument("--features", default=None, help="concat, response or joint")
    train.add_argument("--embedder", default=None, help="all-MiniLM-L6-v2 or hashing")
    train.add_argument("--hidden", type=int, default=None, help="hidden units of the head (0 = linear)")
    train.add_argument("--limit", type=int, default=None, help="read at most N rows of each source (quick run)")
    train.add_argument("--seed", type=int, default=None, help="split and training seed")
    train.add_argument("--threads", type=int, default=None,
                       help="CPU threads for torch (1 is often fastest on a busy machine)")
    train.add_argument("--device", default="auto", help="where the embedder runs: auto, cpu, cuda")
    train.add_argument("--overwrite", action="store_true", help="replace an existing artifact folder")
    train.epilog = ("Every field of OfflineRMConfig (safepref/reward/offline.py) can be set with --set or --config: "
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
    evaluate.add_argument("--out", default=None, help="write the result JSON here")
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
    score.add_argument("--chunk", type=int, default=512, help="answers per scoring call")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return {"train": _train, "eval": _eval, "score": _score}[args.rm_command](args)


# ------------------------------------------------------------------------------------------------- train


def _train(args: argparse.Namespace) -> int:
    import sys

    from safepref.config import load_config
    from safepref.errors import ConfigError
    from safepref.redact import command_line
    from safepref.reward.offline import OfflineRMConfig, default_folder, train_offline_rm

    flags = {"name": args.name, "pairs": args.pairs, "labels": args.labels, "features": args.features,
             "embedder": args.embedder, "hidden": args.hidden, "limit": args.limit, "seed": args.seed}
    overrides = [f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None] + args.overrides
    config = load_config(OfflineRMConfig, args.config, overrides)
    out = Path(args.out) if args.out else default_folder(config.name)
    if (out / "rm.json").exists() and not args.overwrite:
        raise ConfigError(f"{out} already holds a reward model; pass --overwrite to replace it, or --name/--out")
    command = command_line(["safepref", *sys.argv[1:]])
    model, meta = train_offline_rm(config, device=args.device, progress=True, command=command)
    model.save(out)
    metrics = meta["metrics"]
    print(json.dumps({"sizes": meta["sizes"], "best_epoch": meta["best_epoch"],
                      "timings_s": {k: round(v, 1) for k, v in meta["timings"].items()}}, indent=1))
    for key, value in metrics.items():
        if "accuracy" in value:
            ci = value.get("cluster_ci", [value["ci_low"], value["ci_high"]])
            print(f"{key}: accuracy {value['accuracy']:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f}, n={value['n']})")
        else:
            print(f"{key}: accuracy@0 {value['accuracy_at_0']:.3f}, ROC AUC {value.get('roc_auc', float('nan')):.3f}"
                  f" (n={value['n']})")
    print(f"saved {out}  (load it as offline:{config.name if not args.out else out})")
    return 0


# -------------------------------------------------------------------------------------------------- eval


def _eval(args: argparse.Namespace) -> int:
    from safepref.records import write_json
    from safepref.reward import load_reward_model, pairwise_accuracy, score_pairs, user_turn_ids
    from safepref.sources import load_pairs

    fields = {"prompt": args.prompt_field, "chosen": args.chosen_field, "rejected": args.rejected_field}
    pairs, report = load_pairs(args.pairs, fields)
    rm = load_reward_model(args.rm, device=args.device)
    seen = getattr(rm, "seen_prompt_ids", None) or set()
    dropped_seen = 0
    if seen and not args.include_seen:
        kept = [p for p in pairs if not (user_turn_ids(p) & seen)]
        dropped_seen = len(pairs) - len(kept)
        pairs = kept
        if not pairs:
            from safepref.errors import DataError

            raise DataError(f"every pair of '{args.pairs}' is on a prompt {rm.name} was trained on; "
                            "evaluate on other data (or pass --include-seen for a training-set measure)")
    print(f"{len(pairs)} pairs from {args.pairs}" +
          (f" ({dropped_seen} dropped: prompt seen in {rm.name}'s training)" if dropped_seen else ""))
    start = time.perf_counter()
    chosen, rejected = score_pairs(rm, pairs, progress=True)
    seconds = time.perf_counter() - start
    result = pairwise_accuracy(chosen, rejected, groups=[p.prompt_id for p in pairs])
    result.update({"rm": args.rm, "rm_name": rm.name, "pairs": args.pairs, "pairs_load": report.as_dict(),
                   "dropped_seen_prompts": dropped_seen, "include_seen": args.include_seen,
                   "seconds": round(seconds, 2), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    print(f"{rm.name} on {args.pairs}: accuracy {result['accuracy']:.3f} "
          f"(95% Wilson CI {result['ci_low']:.3f}-{result['ci_high']:.3f}; by-prompt bootstrap "
          f"{result['cluster_ci'][0]:.3f}-{result['cluster_ci'][1]:.3f}), n={result['n']}, ties={result['ties']}, "
          f"{result['n_groups']} prompts, {seconds:.1f} s")
    if args.out:
        write_json(args.out, result)
        print(f"wrote {args.out}")
    return 0


# ------------------------------------------------------------------------------------------------- score


def _score(args: argparse.Namespace) -> int:
    from safepref.records import write_json, write_jsonl
    from safepref.reward import load_reward_model

    responses, source = _read_responses(args.responses)
    rm = load_reward_model(args.rm, device=args.device)
    start = time.perf_counter()
    for begin in range(0, len(responses), args.chunk):
        part = responses[begin:begin + args.chunk]
        scores = rm.score([r.prompt for r in part], [r.response for r in part])
        for response, value in zip(part, scores, strict=True):
            response.score = float(value)
            response.meta["score_rm"] = rm.name
    seconds = time.perf_counter() - start
    out = Path(args.out)
    write_jsonl(out / "responses.jsonl", responses)
    values = [r.score for r in responses]
    summary = {"rm": args.rm, "rm_name": rm.name, "responses": args.responses, "source": source,
               "count": len(values), "mean": sum(values) / len(values), "min": min(values), "max": max(values),
               "seconds": round(seconds, 2), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json(out / "summary.json", summary)
    print(f"scored {len(values)} answers with {rm.name} in {seconds:.1f} s (mean {summary['mean']:.3f}); "
          f"wrote {out}/responses.jsonl")
    return 0


def _read_responses(spec: str) -> tuple[list, dict]:
    """safepref Response records (provenance kept) from a file or generate's folder; else a source spec."""
    from safepref.records import iter_jsonl, read_records
    from safepref.sources import load_responses

    path = Path(spec)
    if path.is_dir() and (path / "responses.jsonl").exists():
        path = path / "responses.jsonl"
    if path.is_file() and path.name.endswith(".jsonl"):
        first = next((obj for _, obj in iter_jsonl(path)), None)
        if first is not None and isinstance(first.get("source"), dict):
            records = read_records(path, "response")
            if not records:
                from safepref.errors import DataError

                raise DataError(f"{path}: no responses in file")
            return records, {"path": str(path), "rows": len(records)}
    records, report = load_responses(spec)
    return records, report.as_dict()
