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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from safepref.stages import TrainCall


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
    from safepref.config import add_arguments_from
    from safepref.stages import TrainCall
    from safepref.train.dpo import DPOTrainConfig

    add_arguments_from(parser, TrainCall)  # the stage's options, help from its fields; then the launcher's
    parser.add_argument("--accelerate-config", default=None, metavar="YAML",
                        help="relaunch through `accelerate launch` with this config (configs/accelerate/*.yaml)")
    parser.add_argument("--num-processes", type=int, default=None,
                        help="with --accelerate-config: processes (GPUs), overriding the YAML's num_processes")
    parser.epilog = "settings (--config / --set):\n" + _settings_help(DPOTrainConfig)


def _relaunch(args: argparse.Namespace, call: TrainCall) -> int:
    """Run this same command under ``accelerate launch`` (inputs were checked here first)."""
    from safepref.errors import ConfigError

    if not os.path.isfile(args.accelerate_config):
        raise ConfigError(f"accelerate config not found: {args.accelerate_config}")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", args.accelerate_config]
    if args.num_processes:
        launch += ["--num_processes", str(args.num_processes)]
    command = launch + ["-m", "safepref", *call.argv()]  # the command minus the launcher options, on each rank
    print("launching:", shlex.join(command), flush=True)
    return subprocess.call(command)


def run(args: argparse.Namespace) -> int:
    from safepref.config import from_arguments
    from safepref.stages import TrainCall, train
    from safepref.train.dpo import check_inputs

    call = from_arguments(TrainCall, args)
    if args.accelerate_config and "LOCAL_RANK" not in os.environ:
        # Fail fast on bad pairs or a taken --out before starting N processes.
        check_inputs(call.pairs, call.model, call.settings(), call.out, call.overwrite, call.resume)
        return _relaunch(args, call)
    summary = train(call)  # run.json records the call's command line (launcher options left out)
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
