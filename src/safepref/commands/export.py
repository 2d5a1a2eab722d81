"""Share a preference set as a Hugging Face dataset, or (re)write a trained model's card.

  safepref export runs/quickstart/stages/build__self-rm-<hash> --out share/self-rm \\
      --audit runs/quickstart/stages/audit-<hash>            # Parquet + dataset card + datasheet
  safepref export share/self-rm-src --out share/self-rm --push-to-hub me/safepref-self-rm   # needs $HF_TOKEN
  safepref export runs/quickstart/stages/train__self-rm-<hash> \\
      --eval runs/quickstart/stages/eval__self-rm-<hash>     # a model folder: its README.md card, with results

A preference set folder holds pairs.jsonl (and datasheet.json) as `safepref build` writes it; the export loads
with ``datasets.load_dataset("parquet", data_files="OUT/data/*.parquet")`` and trains with TRL or
``safepref train --pairs OUT/data/train-00000-of-00001.parquet``.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="a preference-set folder (pairs.jsonl) or a trained model folder (run.json)")
    parser.add_argument("--out", default=None, help="output folder for a preference set (required for sets)")
    parser.add_argument("--audit", default=None, help="audit.json or audit folder: its verdict goes on the card")
    parser.add_argument("--audit-set", default=None, help="name of this set in the audit (default: matched)")
    parser.add_argument("--name", default=None, help="title of the card")
    parser.add_argument("--eval", dest="eval_dir", default=None,
                        help="model folders: the `safepref eval` folder whose results go on the card")
    parser.add_argument("--push-to-hub", default=None, metavar="REPO", help="upload to this hub repository")
    parser.add_argument("--private", action="store_true", help="create the hub repository as private")
    parser.add_argument("--token-env", default="HF_TOKEN", help="environment variable holding the hub token")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")


def run(args: argparse.Namespace) -> int:
    from safepref.errors import ConfigError

    path = Path(args.path)
    if (path / "run.json").exists() and not (path / "pairs.jsonl").exists():
        from safepref.export import push_folder
        from safepref.train.modelcard import read_evaluation, write_model_card

        evaluation = read_evaluation(Path(args.eval_dir)) if args.eval_dir else None
        card = write_model_card(path, evaluation)
        print(f"wrote {card}")
        if args.push_to_hub:
            print(f"pushed to {push_folder(path, args.push_to_hub, 'model', args.private, args.token_env)}")
        return 0
    if not args.out:
        raise ConfigError("--out is required when exporting a preference set")
    from safepref.export import ExportConfig, export_preference_set

    summary = export_preference_set(ExportConfig(
        pairs_dir=args.path, out=args.out, audit=args.audit, audit_set=args.audit_set, name=args.name,
        push_to_hub=args.push_to_hub, private=args.private, token_env=args.token_env, overwrite=args.overwrite))
    print(f"wrote {summary['rows']} pairs to {args.out}/{summary['data_file']} and README.md "
          f"(license {summary['license']})")
    if summary.get("pushed"):
        print(f"pushed to {summary['pushed']}")
    return 0
