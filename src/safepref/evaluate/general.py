"""General capability through lm-evaluation-harness: the study's benchmarks by name, or local tasks.

  safepref eval general --model smollm2-135m-instruct --tasks safepref_basic_mc --out out/general
  safepref eval general --model out/train/self-rm --tasks paper --device cuda --batch-size 32 --out out/general
  safepref eval general --model out/train/lora --tasks my_task --include-path my_tasks/ --limit 100 --out out/general

``--tasks paper`` is the study's set (arc_challenge, arc_easy, hellaswag, mmlu, truthfulqa_mc2, winogrande);
lm-eval downloads its data from the Hugging Face hub. Offline, use the tasks shipped with safepref
(``safepref_basic_mc``; ``safepref_saferlhf_pref`` reads $SAFEPREF_DATA) or your own task YAMLs
(``--include-path``). In a local task YAML, ``data_files`` of a ``json``/``csv``/``parquet``/``text`` dataset
may be relative to the YAML and may name environment variables (``${SAFEPREF_DATA}/...``).
A LoRA adapter folder is evaluated on its base model (lm-eval's ``peft=``). Writes ``results.json``.
"""

from __future__ import annotations

import difflib
import importlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from safepref import paths, provenance
from safepref.errors import BackendError, ConfigError, DataError, ModelError, SafeprefError
from safepref.models import pick_device, pick_dtype, resolve_model
from safepref.records import write_json, write_jsonl

log = logging.getLogger(__name__)

PAPER_TASKS = ("arc_challenge", "arc_easy", "hellaswag", "mmlu", "truthfulqa_mc2", "winogrande")
TASK_PRESETS: dict[str, tuple[str, ...]] = {"paper": PAPER_TASKS, "local": ("safepref_basic_mc",)}
LOCAL_TASKS_DIR = Path(__file__).parent / "tasks"
# The lm-eval folders that define the study's tasks. Indexing only these takes ~1 s; indexing all of
# lm-eval's ~15,000 task YAMLs takes ~35 s on a 2-core CPU, so that happens only for other names.
BUILTIN_TASK_DIRS = {"arc_challenge": "arc", "arc_easy": "arc", "hellaswag": "hellaswag", "mmlu": "mmlu",
                     "truthfulqa_mc1": "truthfulqa", "truthfulqa_mc2": "truthfulqa", "winogrande": "winogrande"}
# datasets' packaged builders read local files; data_files of a hub dataset are relative to its repository.
FILE_BUILDERS = {"json", "csv", "parquet", "text", "arrow"}


def parse_tasks(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """Task names from a comma list (or list) with presets expanded, duplicates dropped, order kept."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in (i.strip() for i in items):
        for name in TASK_PRESETS.get(item, (item,)):
            if name and name not in names:
                names.append(name)
    if not names:
        raise ConfigError(f"--tasks is empty; give task names or a preset ({', '.join(TASK_PRESETS)})")
    return names


def _adapter_base(folder: Path) -> str:
    config_file = folder / "adapter_config.json"
    try:
        base = json.loads(config_file.read_text()).get("base_model_name_or_path")
    except (json.JSONDecodeError, AttributeError):
        base = None
    if not base:
        raise ModelError(f"{config_file} names no base_model_name_or_path: cannot tell which model it adapts")
    return resolve_model(base)


def model_arguments(model_spec: str, device: str = "auto", dtype: str = "auto",
                    trust_remote_code: bool = False) -> dict[str, Any]:
    """lm-eval ``hf`` model arguments for ``model_spec`` (embedded name, folder, LoRA adapter folder, hub id).

    Raises ModelError for a folder that does not exist or holds no weights, before lm-eval is imported.
    """
    location = resolve_model(model_spec)
    device = pick_device(device)
    args: dict[str, Any] = {"pretrained": location, "device": device,
                            "dtype": str(pick_dtype(dtype, device)).removeprefix("torch."),
                            "trust_remote_code": trust_remote_code}
    folder = Path(location)
    if (folder / "adapter_config.json").exists():
        args["pretrained"] = _adapter_base(folder)
        args["peft"] = location
        # TRL saves the tokenizer (maybe with added tokens) beside the adapter; prefer it to the base's.
        args["tokenizer"] = location if (folder / "tokenizer_config.json").exists() else args["pretrained"]
    return args


def _resolve_data_file(value: str, yaml_path: Path, task: str) -> str:
    expanded = os.path.expandvars(value)
    unset = re.findall(r"\$\{?(\w+)", expanded)
    if unset:
        if "SAFEPREF_DATA" in unset:
            paths.data_root()  # raises the standard message on how to set it
        raise DataError(f"task {task} ({yaml_path}): data_files '{value}' names unset variable(s) "
                        f"{', '.join(unset)}")
    if "://" in expanded:
        return expanded
    path = Path(expanded).expanduser()
    if not path.is_absolute():
        path = yaml_path.parent / path
    if not any(ch in expanded for ch in "*?[") and not path.exists():
        raise DataError(f"task {task} ({yaml_path}): data file not found: {path}")
    return str(path)


def _lm_eval_internals() -> tuple[Any, Any]:
    """lm-eval's YAML loader (the one its TaskFactory uses) and task-kind enum: private modules, so checked."""
    try:
        from lm_eval.tasks._index import Kind
        from lm_eval.tasks._yaml_loader import load_yaml
    except ImportError:
        raise BackendError("this lm-eval lays out its task modules unlike 0.4.13, which safepref is tested "
                           "with: pip install 'lm-eval>=0.4.13,<0.5'") from None
    return load_yaml, Kind


def local_task_config(yaml_path: Path) -> dict[str, Any]:
    """A local task YAML as an lm-eval config dict, its data_files made absolute against the YAML's folder.

    lm-eval hands ``data_files`` to ``datasets.load_dataset`` as written, so a relative path would be
    resolved against the working directory; resolving it here lets a task folder travel with its data.
    """
    load_yaml, _ = _lm_eval_internals()
    try:
        config = load_yaml(yaml_path, resolve_func=True)
    except Exception as exc:  # yaml errors, a !function that does not import: name the file
        raise ConfigError(f"cannot read task YAML {yaml_path}: {str(exc)[:300]}") from exc
    name = config.get("task", yaml_path.stem)
    kwargs = dict(config.get("dataset_kwargs") or {})
    if config.get("dataset_path") in FILE_BUILDERS and "data_files" in kwargs:
        files = kwargs["data_files"]
        if isinstance(files, dict):
            kwargs["data_files"] = {
                split: ([_resolve_data_file(f, yaml_path, name) for f in value] if isinstance(value, list)
                        else _resolve_data_file(value, yaml_path, name))
                for split, value in files.items()}
        elif isinstance(files, list):
            kwargs["data_files"] = [_resolve_data_file(f, yaml_path, name) for f in files]
        else:
            kwargs["data_files"] = _resolve_data_file(files, yaml_path, name)
        # datasets keeps an Arrow copy of the file: keep it in safepref's cache, not ~/.cache/huggingface.
        kwargs.setdefault("cache_dir", str(paths.cache_dir("datasets")))
        config["dataset_kwargs"] = kwargs
    return config


def _task_manager(names: list[str], include_paths: list[Path]) -> Any:
    """A TaskManager that knows every name, indexing as few of lm-eval's folders as possible."""
    from lm_eval.tasks import TaskManager

    local = TaskManager(include_path=[LOCAL_TASKS_DIR, *include_paths], include_defaults=False)
    missing = [n for n in names if n not in local.task_index]
    if not missing:
        return local
    builtin_root = Path(importlib.import_module("lm_eval.tasks").__file__).parent
    if all(n in BUILTIN_TASK_DIRS for n in missing):
        folders = sorted({builtin_root / BUILTIN_TASK_DIRS[n] for n in missing})
        return TaskManager(include_path=[*folders, LOCAL_TASKS_DIR, *include_paths], include_defaults=False)
    log.info("indexing all of lm-eval's tasks to find %s (about half a minute)", ", ".join(missing))
    manager = TaskManager(include_path=[LOCAL_TASKS_DIR, *include_paths])
    unknown = [n for n in names if n not in manager.task_index]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, manager.all_tasks, n=3)
            hints.append(f"'{name}'" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        raise ConfigError(f"unknown lm-eval task {', '.join(hints)}; presets: {', '.join(TASK_PRESETS)}")
    return manager


def _load_tasks(names: list[str], include_paths: list[Path]) -> tuple[Any, list[Any], dict[str, str]]:
    """Build the task objects (this reads their data, so data problems show before the model loads).

    Returns (task manager, top-level tasks/groups for simple_evaluate, {task: where it is defined}).
    """
    _, Kind = _lm_eval_internals()
    manager = _task_manager(names, include_paths)
    builtin_root = str(Path(importlib.import_module("lm_eval.tasks").__file__).parent)
    top: list[Any] = []
    sources: dict[str, str] = {}
    for name in names:
        entry = manager.task_index[name]
        yaml_path = str(entry.yaml_path) if entry.yaml_path else ""
        builtin = not yaml_path or yaml_path.startswith(builtin_root)
        sources[name] = yaml_path or "lm-eval"
        local = entry.kind == Kind.TASK and not builtin
        try:
            loaded = manager.load([local_task_config(Path(yaml_path)) if local else name])
        except SafeprefError:
            raise
        except Exception as exc:  # datasets raises many types (offline, not found, bad JSON): name the task
            hint = (" lm-eval downloads it from the Hugging Face hub; offline, use local tasks (--tasks "
                    "safepref_basic_mc, or --include-path with your own YAMLs)." if builtin else "")
            raise DataError(f"cannot load task {name} ({sources[name]}): {type(exc).__name__}: "
                            f"{str(exc)[:300]}.{hint}") from exc
        # simple_evaluate wants the top level: a group, not its members as well.
        children = {child for members in loaded.get("group_map", {}).values() for child in members}
        top += [g for n, g in loaded.get("groups", {}).items() if n not in children]
        top += [t for n, t in loaded["tasks"].items() if n not in children]
    return manager, top, sources


def flatten_results(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} from lm-eval's results: ``acc,none`` -> ``acc``, ``acc_stderr,none`` ->
    ``acc_stderr``; a metric under another filter keeps its ``metric,filter`` key; 'N/A' stderrs are dropped."""
    flat: dict[str, dict[str, float]] = {}
    for task, metrics in results.get("results", {}).items():
        row: dict[str, float] = {}
        for key, value in metrics.items():
            # sample_len is a count (results.json has it under n_samples), alias a display name
            if key in ("alias", "sample_len") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            metric, _, filter_name = key.partition(",")
            row[metric if filter_name in ("", "none") else key] = float(value)
        flat[task] = row
    return flat


def _versions() -> dict[str, Any]:
    """results.json's version keys: the installed packages (those found) and lm-eval's (None when absent)."""
    found = {k: v for k, v in provenance.versions("lm_eval", "torch", "transformers", "peft", "datasets").items()
             if v != "absent" and k != "python"}
    return {"versions_installed": found, "lm_eval_version": found.get("lm_eval")}


def evaluate_general(model_spec: str, tasks: str | list[str], include_path: str | list[str] | None = None,
                     limit: int | float | None = None, device: str = "auto", batch_size: int | str = 8,
                     out_dir: str | Path | None = None, num_fewshot: int | None = None, dtype: str = "auto",
                     apply_chat_template: bool = False, log_samples: bool = False,
                     trust_remote_code: bool = False, command: str | None = None) -> dict[str, dict[str, float]]:
    """Run lm-eval's ``simple_evaluate`` on ``tasks`` and return ``{task: {metric: value}}``.

    ``tasks``: names, a comma list or a preset (``paper``, ``local``). ``include_path``: folders of task
    YAMLs (safepref's own tasks are always available). ``limit``: examples per task (a float < 1 is a
    fraction). With ``out_dir``, writes ``results.json`` (metrics, sample counts, task versions and configs,
    lm-eval version, the settings) and with ``log_samples`` ``samples/<task>.jsonl``, atomically.

    Raises ModelError (missing folder, no weights, unloadable), ConfigError (unknown task, bad include
    path), DataError (task data missing or not downloadable), BackendError (lm-eval not installed).
    """
    started = time.perf_counter()
    names = parse_tasks(tasks)
    includes = [include_path] if isinstance(include_path, (str, Path)) else list(include_path or [])
    include_dirs = [Path(p).expanduser().resolve() for p in includes]
    for folder in include_dirs:
        if not folder.is_dir():
            raise ConfigError(f"--include-path {folder} is not a folder of task YAMLs")
    if limit is not None and limit <= 0:
        raise ConfigError(f"--limit must be positive, got {limit}")
    model_args = model_arguments(model_spec, device, dtype, trust_remote_code)  # ModelError before lm-eval
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        raise BackendError("general evaluation needs lm-evaluation-harness: pip install 'safepref[eval]'") from None

    manager, task_objects, sources = _load_tasks(names, include_dirs)
    loaded_tasks = time.perf_counter()
    try:
        lm = HFLM(batch_size=batch_size, **model_args)
    except OSError as exc:
        raise ModelError(f"cannot load model '{model_spec}' for lm-eval: {str(exc)[:300]}") from exc
    loaded_model = time.perf_counter()
    results = lm_eval.simple_evaluate(
        model=lm, tasks=task_objects, task_manager=manager, num_fewshot=num_fewshot, limit=limit,
        apply_chat_template=apply_chat_template, log_samples=log_samples)
    finished = time.perf_counter()
    if results is None:  # a non-zero rank under `accelerate launch`: rank 0 reports and writes
        return {}
    flat = flatten_results(results)

    if out_dir is not None:
        out = Path(out_dir)
        samples = results.get("samples", {}) if log_samples else {}
        for task, rows in samples.items():
            write_jsonl(out / "samples" / f"{task}.jsonl", (json.loads(json.dumps(r, default=str)) for r in rows))
        write_json(out / "results.json", {
            "results": flat,
            "n_samples": results.get("n-samples", {}),
            "versions": results.get("versions", {}),
            "n_shot": results.get("n-shot", {}),
            "higher_is_better": results.get("higher_is_better", {}),
            "groups": results.get("group_subtasks", {}),
            "config": {"model": model_spec, "model_args": model_args, "tasks": names,
                       "include_path": [str(p) for p in include_dirs], "limit": limit,
                       "batch_size": batch_size, "num_fewshot": num_fewshot,
                       "apply_chat_template": apply_chat_template},
            "task_sources": sources,
            "task_configs": results.get("configs", {}),
            "model_info": {k: v for k, v in results.get("config", {}).items()
                           if k.startswith("model_") and k != "model_args"},
            **_versions(),
            "seconds": {"load_tasks": round(loaded_tasks - started, 2),
                        "load_model": round(loaded_model - loaded_tasks, 2),
                        "evaluate": round(finished - loaded_model, 2), "total": round(finished - started, 2)},
            "command": provenance.command(command),
        })
    return flat
