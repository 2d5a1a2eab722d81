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
    import dataclasses

    from safepref.export import ExportConfig

    parser.add_argument("path", help="a preference-set folder (pairs.jsonl) or a trained model folder (run.json)")
    # One flag per ExportConfig field, its help from the field (--out is required for sets only, checked in run).
    for f in dataclasses.fields(ExportConfig):
        if f.name == "pairs_dir":
            continue
        flag = "--" + f.name.replace("_", "-")
        default = None if f.default is dataclasses.MISSING else f.default
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", help=f.metadata["help"])
        else:
            parser.add_argument(flag, default=default, help=f.metadata["help"])
    parser.add_argument("--eval", dest="eval_dir", default=None,
                        help="model folders: the `safepref eval` folder (jailbreak/, refusal/) whose results go "
                             "on the card")


def run(args: argparse.Namespace) -> int:
    import dataclasses

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

    settings = {f.name: getattr(args, f.name) for f in dataclasses.fields(ExportConfig) if f.name != "pairs_dir"}
    summary = export_preference_set(ExportConfig(pairs_dir=args.path, **settings))
    print(f"wrote {summary['rows']} pairs to {args.out}/{summary['data_file']} and README.md "
          f"(license {summary['license']})")
    if summary.get("pushed"):
        print(f"pushed to {summary['pushed']}")
    return 0
