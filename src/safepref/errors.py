"""Errors that the command line prints as one clear line (no traceback), and the "did you mean" hint."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SafeprefError(Exception):
    """Base class: a problem with the user's input or environment, explained in the message."""


class ConfigError(SafeprefError):
    """A config file or override is invalid; the message names the field."""


class DataError(SafeprefError):
    """A data file is missing or malformed; the message names the file and line."""


class ModelError(SafeprefError):
    """A model cannot be found or loaded."""


class BackendError(SafeprefError):
    """A generation, reward or judge backend failed (endpoint down, authentication, ...)."""


def did_you_mean(name: str, known: Iterable[str], *, parenthetical: bool = False, suffix: str = "") -> str:
    """`` Did you mean 'x'?`` for the known name closest to ``name`` (`` (did you mean 'x'?)`` with
    ``parenthetical``), or "" when none is close. ``suffix`` is appended to the suggestion."""
    close = difflib.get_close_matches(name, list(known), n=1)
    if not close:
        return ""
    suggestion = f"'{close[0]}{suffix}'"
    return f" (did you mean {suggestion}?)" if parenthetical else f" Did you mean {suggestion}?"
