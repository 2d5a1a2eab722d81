"""Where data and caches live. Everything is overridable by environment variables.

- ``SAFEPREF_DATA``: root of the offline data (a folder laid out like ``../shared/data``).
- ``SAFEPREF_CACHE``: converted models, trained reward models and judges (default ``~/.cache/safepref``).
"""

from __future__ import annotations

import os
from pathlib import Path

from safepref.errors import DataError

DATA_ENV = "SAFEPREF_DATA"
CACHE_ENV = "SAFEPREF_CACHE"


def data_root(required: bool = True) -> Path | None:
    """The offline data root from ``$SAFEPREF_DATA``.

    Raises DataError when it is required but unset or not a folder.
    """
    value = os.environ.get(DATA_ENV)
    if not value:
        if required:
            raise DataError(
                f"${DATA_ENV} is not set: point it at the offline data root "
                f"(for example `export {DATA_ENV}=../shared/data`) or give a file path instead of a source name"
            )
        return None
    root = Path(value).expanduser()
    if not root.is_dir():
        raise DataError(f"${DATA_ENV}={value} is not a folder")
    return root


def data_file(relative: str) -> Path:
    """A file under the data root; raises DataError naming the full path when it is missing."""
    path = data_root() / relative  # type: ignore[operator]
    if not path.exists():
        raise DataError(f"data file not found: {path} (expected under ${DATA_ENV})")
    return path


def cache_dir(*parts: str) -> Path:
    base = Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "safepref")).expanduser()
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
