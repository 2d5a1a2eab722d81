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


def check_output_dir(out: str | Path, option: str = "--out") -> Path:
    """Refuse an output folder that cannot be written, before any model or data is loaded: an existing
    file, or a folder (or its nearest existing parent) without write permission. Raises SafeprefError."""
    from safepref.errors import SafeprefError

    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise SafeprefError(f"{option} {out} is a file; give a folder")
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise SafeprefError(f"cannot create {option} {out}: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise SafeprefError(f"cannot write {option} {out}: {probe} is not writable")
    return out


def check_replaceable(folder: str | Path, marker: str, what: str) -> None:
    """Refuse to replace ``folder`` unless it is absent, empty, or holds ``marker`` (the file a save of ``what``
    writes): a command deletes only what it wrote itself. Raises SafeprefError naming the folder."""
    from safepref.errors import SafeprefError

    folder = Path(folder).expanduser()
    check_output_dir(folder)
    if folder.is_dir() and any(folder.iterdir()) and not (folder / marker).exists():
        raise SafeprefError(f"{folder} is not empty and holds no {what} (no {marker}); it is never replaced: "
                            "choose another --out")


def cache_dir(*parts: str) -> Path:
    base = Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "safepref")).expanduser()
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
