"""A small stage graph: topological order, outputs cached under a hash of inputs and config, resume.

Each ``Stage`` names the stages it reads (``deps``) and carries its own settings (``config``). Its key is a
hash of its name, config and the keys of its dependencies, so changing one setting recomputes exactly the
stages downstream of it. A stage's output lives in ``<run>/stages/<name>-<key>/``; ``stage.json`` is written
last, so a folder without it is an unfinished stage and is run again (stages that are resumable themselves,
like generation, pick up their own partial work there).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safepref.config import config_hash
from safepref.errors import ConfigError, DataError, did_you_mean
from safepref.records import read_json, write_json


@dataclass
class StageContext:
    """What a stage function gets: its output folder and the output folders of its dependencies."""

    out_dir: Path
    inputs: dict[str, Path]
    config: dict[str, Any]


@dataclass
class Stage:
    name: str
    run: Callable[[StageContext], dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)
    deps: list[str] = field(default_factory=list)
    description: str = ""


def order(stages: list[Stage]) -> list[Stage]:
    """Stages in dependency order. Raises ConfigError for duplicate names, unknown deps and cycles."""
    by_name: dict[str, Stage] = {}
    for stage in stages:
        if stage.name in by_name:
            raise ConfigError(f"stage '{stage.name}' is defined twice")
        by_name[stage.name] = stage
    for stage in stages:
        for dep in stage.deps:
            if dep not in by_name:
                hint = did_you_mean(dep, list(by_name), parenthetical=True)
                raise ConfigError(f"stage '{stage.name}' depends on unknown stage '{dep}'{hint}")
    ordered: list[Stage] = []
    state: dict[str, str] = {}  # name -> "visiting" | "done"

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = " -> ".join(path[path.index(name):] + [name])
            raise ConfigError(f"stage references form a cycle: {cycle}")
        state[name] = "visiting"
        for dep in by_name[name].deps:
            visit(dep, path + [name])
        state[name] = "done"
        ordered.append(by_name[name])

    for stage in stages:
        visit(stage.name, [])
    return ordered


def stage_keys(stages: list[Stage]) -> dict[str, str]:
    keys: dict[str, str] = {}
    for stage in order(stages):
        keys[stage.name] = config_hash(stage.name, stage.config, [keys[d] for d in stage.deps])
    return keys


def stage_dir(run_dir: Path, name: str, key: str) -> Path:
    return Path(run_dir) / "stages" / f"{name.replace('/', '__')}-{key}"


def is_done(folder: Path) -> bool:
    return (folder / "stage.json").exists()


def plan(stages: list[Stage], run_dir: Path) -> list[dict[str, Any]]:
    """One row per stage in run order: name, key, folder, cached or not."""
    keys = stage_keys(stages)
    rows = []
    for stage in order(stages):
        folder = stage_dir(run_dir, stage.name, keys[stage.name])
        rows.append({"stage": stage.name, "key": keys[stage.name], "cached": is_done(folder),
                     "deps": stage.deps, "folder": str(folder), "description": stage.description})
    return rows


def execute(stages: list[Stage], run_dir: Path, log: Callable[[str], None] = print) -> dict[str, dict]:
    """Run every stage not yet done, in order; returns {stage name: its stage.json content}.

    ``<run>/index.json`` maps each stage name to its current folder, so the report finds the outputs of
    this configuration even when folders of older configurations sit beside them.
    """
    run_dir = Path(run_dir)
    keys = stage_keys(stages)
    ordered = order(stages)
    results: dict[str, dict] = {}
    folders = {s.name: stage_dir(run_dir, s.name, keys[s.name]) for s in ordered}
    for number, stage in enumerate(ordered, start=1):
        folder = folders[stage.name]
        prefix = f"[{number}/{len(ordered)}] {stage.name}"
        if is_done(folder):
            try:
                results[stage.name] = read_json(folder / "stage.json")
                log(f"{prefix}: cached ({folder.name})")
                continue
            except DataError as exc:  # the stage's own marker is broken: run the stage again
                log(f"{prefix}: {exc}; running it again")
                (folder / "stage.json").unlink()
        log(f"{prefix}: running{' - ' + stage.description if stage.description else ''}")
        folder.mkdir(parents=True, exist_ok=True)
        started = time.time()
        summary = stage.run(StageContext(folder, {d: folders[d] for d in stage.deps}, stage.config))
        record = {"stage": stage.name, "key": keys[stage.name], "config": stage.config, "deps": stage.deps,
                  "seconds": round(time.time() - started, 1), "summary": summary or {}}
        write_json(folder / "stage.json", record)
        results[stage.name] = record
        log(f"{prefix}: done in {record['seconds']} s")
        write_json(run_dir / "index.json", _index(run_dir, folders, ordered))
    write_json(run_dir / "index.json", _index(run_dir, folders, ordered))
    return results


def _index(run_dir: Path, folders: dict[str, Path], ordered: list[Stage]) -> dict[str, str]:
    """Stage name -> folder, relative to the run folder where possible (a moved or copied run still reports)."""
    index = {}
    for stage in ordered:
        folder = Path(folders[stage.name])
        try:
            index[stage.name] = str(folder.relative_to(run_dir))
        except ValueError:
            index[stage.name] = str(folder)
    return index
