"""Provenance, recorded the same way by every stage: the command that made an output and the versions of
the packages that made it.

    from safepref import provenance
    record = {"command": provenance.command(command, equivalent=call.argv()),
              "versions": provenance.versions("torch", "scikit-learn")}

The command is, in this order: the one a caller passes (``safepref run`` passes each stage's equivalent
`safepref ...` command); the `safepref` command line this process is running (``cli.main`` notes it, so a
command records what was typed, and a test calling ``main([...])`` records those arguments); the equivalent
command a stage gives for a library call made from Python; else the process's own argv. Secrets are removed
(``redact.command_line``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import platform
import sys
from collections.abc import Iterator

from safepref.redact import command_line

_cli_argv: list[str] | None = None  # the arguments of the `safepref` command being run, while it runs


@contextlib.contextmanager
def running_command(argv: list[str]) -> Iterator[None]:
    """While the block runs, ``command()`` records `safepref <argv>` as the command (``cli.main`` uses it)."""
    global _cli_argv
    previous, _cli_argv = _cli_argv, list(argv)
    try:
        yield
    finally:
        _cli_argv = previous


def command(given: str | None = None, equivalent: list[str] | None = None) -> str:
    """The command to record, secrets removed: ``given``, else the running `safepref` command line, else
    `safepref <equivalent>`, else the process's argv."""
    if given:
        return command_line(given)
    if _cli_argv is not None:
        return command_line(["safepref", *_cli_argv])
    if equivalent is not None:
        return command_line(["safepref", *equivalent])
    return command_line(sys.argv)


def versions(*packages: str) -> dict[str, str]:
    """Python's version, safepref's and each named package's (``absent`` when not installed)."""
    found = {"python": platform.python_version()}
    for package in ("safepref", *packages):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "absent"
    return found
