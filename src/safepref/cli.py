"""The ``safepref`` command: one sub-command per stage, each parsed here and run by one function.

Every command lives in ``safepref/commands/<name>.py`` exposing ``add_arguments(parser)`` and
``run(args) -> int``. Command modules import heavy libraries (torch, transformers) inside ``run`` so that
``safepref --help`` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from safepref import __version__, provenance
from safepref.errors import SafeprefError
from safepref.redact import redact_text

# name -> (module, one-line help). Order is the data flow.
COMMANDS: dict[str, tuple[str, str]] = {
    "sources": ("safepref.commands.sources", "list the data sources, or count what one holds"),
    "generate": ("safepref.commands.generate", "generate answers to prompts with a model (resumable)"),
    "rm": ("safepref.commands.rm", "reward models: train the offline safety RM, score, evaluate"),
    "build": ("safepref.commands.build", "build a preference set for one of the study's conditions"),
    "audit": ("safepref.commands.audit", "how separable are chosen and rejected? (reward-hacking risk)"),
    "train": ("safepref.commands.train", "DPO training through TRL, with a reward-hacking monitor"),
    "eval": ("safepref.commands.eval", "jailbreak ASR, over-refusal, general capability"),
    "run": ("safepref.commands.run", "the whole study from one experiment YAML (cached, resumable)"),
    "report": ("safepref.commands.report", "report.md, figures and summary.json for a run folder"),
    "export": ("safepref.commands.export", "a preference set as a Hugging Face dataset; a model's card"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="safepref", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"safepref {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_line) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # a stage not built yet
        command = sub.add_parser(name, help=help_line, description=module.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        with provenance.running_command(sys.argv[1:] if argv is None else argv):  # the command outputs record
            return int(args._run(args) or 0)
    except SafeprefError as exc:
        print(f"safepref {args.command}: error: {redact_text(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"safepref {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
