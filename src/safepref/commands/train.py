"""DPO training through TRL, with a reward-hacking monitor (metrics.jsonl, summary.json, monitor.png).

  safepref train --pairs pku-realign:300 --model smollm2-135m-instruct \\
      --config configs/train/dpo-smollm2-lora.yaml --out runs/dpo-lora
  safepref train --pairs out/build/pairs.jsonl --model path/to/sft --config configs/train/dpo-paper.yaml \\
      --set beta=0.01 --set num_train_epochs=2 --out runs/dpo-full
  # several GPUs (DDP; fsdp.yaml or zero3.yaml for models that do not fit one card):
  accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes 8 \\
      -m safepref train --pairs ... --model ... --config configs/train/dpo-paper.yaml --out runs/x
  safepref train ... --accelerate-config configs/accelerate/ddp.yaml --num-processes 2   # the same, relaunched

The output folder is a normal checkpoint (LoRA merged unless --no-merge) that later stages load by path.
A rerun into a folder holding a different run is refused unless --overwrite; an interrupted run continues
with --resume; a finished run of the same config is not trained again.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys


def _settings_help(cls: type, prefix: str = "") -> str:
    """One line per setting (nested ones dotted), with defaults from factories too."""
    import dataclasses

    lines = []
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            value = f.default_factory()  # type: ignore[misc]
            if dataclasses.is_dataclass(value):
                lines.append(_settings_help(type(value), f"{prefix}{f.name}."))
                continue
        else:
            value = f.default
        lines.append(f"  {prefix}{f.name} = {value!r}: {f.metadata.get('help', '')}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from safepref.train.dpo import DPOTrainConfig

    parser.add_argument("--pairs", required=True,
                        help="preference pairs: a file (safepref pairs JSONL, or prompt/chosen/rejected columns) "
                             "or a source spec such as pku-realign:300")
    parser.add_argument("--model", required=True,
                        help="starting model: hub id, local folder (full or LoRA adapter), smollm2-135m-instruct")
    parser.add_argument("--config", default=None, help="YAML of DPO settings (configs/train/*.yaml); "
                                                       "default: the study's settings")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override one setting (repeatable), e.g. --set beta=0.01 --set lora.r=8")
    parser.add_argument("--out", required=True, help="output folder (the trained checkpoint)")
    parser.add_argument("--no-merge", action="store_true", help="LoRA: save the adapter, not a merged model")
    parser.add_argument("--overwrite", action="store_true", help="replace a different run in --out")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    parser.add_argument("--accelerate-config", default=None, metavar="YAML",
                        help="relaunch through `accelerate launch` with this config (configs/accelerate/*.yaml)")
    parser.add_argument("--num-processes", type=int, default=None,
                        help="with --accelerate-config: processes (GPUs), overriding the YAML's num_processes")
    parser.epilog = "settings (--config / --set):\n" + _settings_help(DPOTrainConfig)


def _config(args: argparse.Namespace):  # -> DPOTrainConfig
    from safepref.train import load_train_config

    overrides = list(args.overrides)
    if args.no_merge:
        overrides.append("merge_lora=false")
    return load_train_config(args.config, overrides)


def _arguments(args: argparse.Namespace) -> list[str]:
    """This command's arguments, minus the launcher options (recorded in run.json, passed to each rank)."""
    argv = ["train", "--pairs", args.pairs, "--model", args.model, "--out", args.out]
    if args.config:
        argv += ["--config", args.config]
    for item in args.overrides:
        argv += ["--set", item]
    argv += [flag for flag, on in (("--no-merge", args.no_merge), ("--overwrite", args.overwrite),
                                   ("--resume", args.resume)) if on]
    return argv


def _relaunch(args: argparse.Namespace) -> int:
    """Run this same command under ``accelerate launch`` (inputs were checked here first)."""
    from safepref.errors import ConfigError

    if not os.path.isfile(args.accelerate_config):
        raise ConfigError(f"accelerate config not found: {args.accelerate_config}")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", args.accelerate_config]
    if args.num_processes:
        launch += ["--num_processes", str(args.num_processes)]
    command = launch + ["-m", "safepref", *_arguments(args)]
    print("launching:", shlex.join(command), flush=True)
    return subprocess.call(command)


def run(args: argparse.Namespace) -> int:
    from safepref.redact import command_line
    from safepref.train.dpo import check_inputs, train_dpo

    config = _config(args)
    if args.accelerate_config and "LOCAL_RANK" not in os.environ:
        # Fail fast on bad pairs or a taken --out before starting N processes.
        check_inputs(args.pairs, args.model, config, args.out, args.overwrite, args.resume)
        return _relaunch(args)
    summary = train_dpo(args.pairs, args.model, config, args.out, overwrite=args.overwrite, resume=args.resume,
                        command=command_line(["safepref", *_arguments(args)]))
    if not summary:  # ranks other than the main one
        return 0
    training, monitor = summary["training"], summary["monitor"]
    print(json.dumps({
        "pairs": summary["pairs"]["trained"], "dropped": summary["pairs"]["dropped"],
        "steps": training["steps"], "pairs_per_second": training["pairs_per_second"],
        "reward_accuracy_final": monitor["accuracy"]["final"],
        "first_step_accuracy_above": monitor["accuracy"]["first_step_above"],
        "margin_final": monitor["margin"]["final"],
        "chosen_logp_drift": monitor["drift"]["chosen_final"],
        "rejected_logp_drift": monitor["drift"]["rejected_final"],
    }, indent=1))
    for note in monitor.get("warnings", []):
        print(f"warning: {note}")
    print(f"wrote {args.out} (checkpoint, metrics.jsonl, summary.json, monitor.png)")
    return 0
