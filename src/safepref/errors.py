"""Errors that the command line prints as one clear line (no traceback)."""


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
