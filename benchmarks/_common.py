"""What every CPU benchmark here records about its run, and the options it shares (`--machine`, `--write`)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any


def parser(doc: str, out: Path) -> argparse.ArgumentParser:
    """A parser with ``--machine`` (where it ran, recorded) and ``--write`` (the JSON, default ``out``)."""
    parsed = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parsed.add_argument("--machine", default="2-core CPU", help="where it ran (recorded)")
    parsed.add_argument("--write", default=str(out), help="the JSON to write")
    return parsed


def write(path: str, machine: str, fields: dict[str, Any], results: Any) -> None:
    """``fields``, then the machine, CPU count, torch threads, Python and time, then ``results``: JSON at ``path``."""
    import torch

    out = {**fields, "machine": machine, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "python": platform.python_version(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "results": results}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}")
