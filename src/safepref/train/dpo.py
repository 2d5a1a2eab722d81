"""DPO training through TRL's ``DPOTrainer``, from one CPU to several GPUs, with a reward-hacking monitor.

    from safepref.train import DPOTrainConfig, train_dpo
    summary = train_dpo("pku-realign:300", "smollm2-135m-instruct",
                        DPOTrainConfig(finetune="lora", max_length=512), "runs/dpo-smoke")

Reads top to bottom: check the inputs (config, pairs, output folder; no model is loaded before they pass) ->
tokenizer and length filter -> TRL config -> model (+ LoRA) -> train -> save -> per-pair probe -> summary.

Output folder (``out_dir``)::

    config.json, model.safetensors, tokenizer*   the trained model: load it by path (LoRA merged by default;
                                                 with merge_lora=false an adapter folder instead)
    run.json        config, model, data fingerprint, command, versions, hash (decides resume / refusal)
    config.yaml     the config used, learning rate resolved
    metrics.jsonl   one row per logged step (TRL's rewards/*, logps/*, loss, plus length/*)
    summary.json    counts (pairs kept, dropped by reason), throughput, the monitor's summary and warnings
    monitor.png     the curves
    checkpoints/    trainer checkpoints for --resume (deleted at the end unless keep_checkpoints)

The parts live beside it: ``dpo_config.py`` (the settings), ``dpo_data.py`` (input checks, token lengths),
``dpo_setup.py`` (devices, dtypes, TRL objects), ``dpo_save.py`` (final model, per-pair probe); their public
names are importable from here as before.

Several GPUs: launch the same call with ``accelerate launch --config_file configs/accelerate/ddp.yaml -m
safepref train ...`` (or ``--accelerate-config``); every rank runs this function, rank 0 alone writes files.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from safepref.errors import DataError, ModelError
from safepref.records import PreferencePair, read_json, write_json, write_text
from safepref.redact import command_line
from safepref.train.dpo_config import (
    DTYPES,
    LOSS_TYPES,
    NON_IDENTITY_FIELDS,
    PAPER_LEARNING_RATE,
    PRECISIONS,
    SCHEDULERS,
    DPOTrainConfig,
    LoraSettings,
    MonitorSettings,
    load_train_config,
)
from safepref.train.dpo_data import (
    Inputs,
    check_inputs,
    data_fingerprint,
    filter_by_length,
    token_lengths,
)
from safepref.train.dpo_data import _to_dataset as _to_dataset
from safepref.train.dpo_save import _save as _save
from safepref.train.dpo_save import probe_pairs
from safepref.train.dpo_setup import _check_one_process_per_gpu as _check_one_process_per_gpu
from safepref.train.dpo_setup import _checkpoint_dtype as _checkpoint_dtype
from safepref.train.dpo_setup import _device_name as _device_name
from safepref.train.dpo_setup import _dpo_args as _dpo_args
from safepref.train.dpo_setup import _load_causal_lm as _load_causal_lm
from safepref.train.dpo_setup import _model_dtype as _model_dtype
from safepref.train.dpo_setup import _peft_config as _peft_config
from safepref.train.dpo_setup import _precision as _precision
from safepref.train.dpo_setup import _trainer_class as _trainer_class
from safepref.train.dpo_setup import versions

__all__ = ["DPOTrainConfig", "DTYPES", "Inputs", "LOSS_TYPES", "LoraSettings", "MonitorSettings",
           "NON_IDENTITY_FIELDS", "PAPER_LEARNING_RATE", "PRECISIONS", "SCHEDULERS", "check_inputs",
           "data_fingerprint", "filter_by_length", "load_train_config", "probe_pairs", "token_lengths",
           "train_dpo", "versions"]

log = logging.getLogger(__name__)


@dataclass
class _Data:
    """The pairs that go into training, after the length filter."""

    kept: list[PreferencePair]
    dropped: Counter
    lengths: dict[str, Any]  # token-length statistics of the kept pairs (monitor.length_stats)
    dataset: Any


@dataclass
class _Run:
    """Settings resolved for this machine before the model loads."""

    precision: str
    model_dtype: str
    save_dtype: str
    world_size: int
    global_batch: int


def train_dpo(pairs: Any, model_spec: str, config: DPOTrainConfig, out_dir: str | Path,
              overwrite: bool = False, resume: bool = False, callbacks: list[Any] | None = None,
              command: str | None = None) -> dict[str, Any]:
    """Train ``model_spec`` with DPO on ``pairs`` into ``out_dir`` and return the summary (also summary.json).

    ``pairs``: a pair file, a source spec (``pku-realign:300``) or a list of PreferencePair. ``model_spec``:
    hub id, local folder (full checkpoint or LoRA adapter) or ``smollm2-135m-instruct``.

    Raises DataError (empty / malformed pairs, nothing fits max_length), ConfigError, ModelError, and
    SafeprefError when ``out_dir`` holds a different run (unless ``overwrite``) or an unfinished run of the same
    config (unless ``resume``); all before any model is loaded. A finished run of the same config is not
    trained again: its summary is returned.
    """
    from safepref import models

    t0 = time.time()
    out = Path(out_dir)
    inputs = check_inputs(pairs, model_spec, config, out, overwrite, resume)
    if inputs.action == "done":
        log.info("%s already holds this finished run; returning its summary", out)
        return read_json(out / "summary.json")

    location = models.resolve_model(model_spec)  # converts the embedded model once; no weights loaded
    tokenizer = models.load_tokenizer(model_spec, padding_side="right",
                                      trust_remote_code=config.trust_remote_code)
    data = _prepare_data(inputs, model_spec, tokenizer, config)

    _check_one_process_per_gpu()
    precision = _precision(config)
    model_dtype = _model_dtype(config, precision)
    save_dtype = config.save_dtype if config.save_dtype != "auto" else _checkpoint_dtype(location)
    args = _dpo_args(config, out / "checkpoints", precision)  # sets up the distributed state
    state = args.distributed_state
    run = _Run(precision, model_dtype, save_dtype, state.num_processes,
               config.per_device_train_batch_size * config.gradient_accumulation_steps * state.num_processes)
    is_main = state.is_main_process
    if is_main:
        _start_folder(out, inputs, config, run, model_spec, location,
                      command or f"train_dpo({str(pairs)[:80]!r}, {model_spec!r}, ...)")
    state.wait_for_everyone()

    trainer, writer = _make_trainer(location, config, run, args, data.dataset, tokenizer, out, callbacks)
    checkpoint = _last_checkpoint(out) if inputs.action == "resume" else None
    setup_s = time.time() - t0
    result = trainer.train(resume_from_checkpoint=checkpoint)

    saved = _save(trainer, config, model_spec, location, tokenizer, out, run.save_dtype, is_main)
    probe = probe_pairs(trainer, config.monitor.probe_pairs, config.seed) if is_main else None
    summary: dict[str, Any] = {}
    if is_main:
        monitor = _monitor_summary(writer.rows, config, trainer, run, data, probe)
        summary = {
            "status": "complete",
            "out": str(out),
            "model": model_spec,
            "checkpoint": saved,
            "pairs": {"source": inputs.source, "read": len(inputs.pairs) + sum(inputs.dropped.values()),
                      "trained": len(data.kept), "dropped": dict(data.dropped), "max_length": config.max_length},
            "training": _training_summary(trainer, writer, result, config, run, checkpoint, len(data.kept),
                                          setup_s),
            "monitor": monitor,
            "hash": inputs.hash,
            "seconds": round(time.time() - t0, 2),
        }
        _finish(out, summary, writer.rows, config, probe, f"DPO {config.finetune} on {len(data.kept)} pairs: "
                f"{model_spec}")
    state.wait_for_everyone()
    return summary


def _prepare_data(inputs: Inputs, model_spec: str, tokenizer: Any, config: DPOTrainConfig) -> _Data:
    """Drop (and count) pairs longer than max_length; the rest as the dataset TRL tokenizes."""
    from safepref.train import monitor as mon

    if config.prompt_format == "chat" and not getattr(tokenizer, "chat_template", None):
        raise ModelError(f"model '{model_spec}' has no chat template: set prompt_format to raw or alpaca")
    kept, lengths, too_long = filter_by_length(inputs.pairs, tokenizer, config.max_length, config.prompt_format)
    dropped = Counter(inputs.dropped)
    if too_long:
        dropped["longer_than_max_length"] = too_long
    if not kept:
        raise DataError(f"all {len(inputs.pairs)} pairs are longer than max_length={config.max_length} tokens")
    data_lengths = mon.length_stats([c for _, c, _ in lengths], [r for _, _, r in lengths])
    return _Data(kept, dropped, data_lengths, _to_dataset(kept, tokenizer, config.prompt_format))


def _start_folder(out: Path, inputs: Inputs, config: DPOTrainConfig, run: _Run, model_spec: str,
                  location: str, command: str) -> None:
    """Main process: (re)create ``out`` and write run.json (its hash decides resume / refusal) and config.yaml."""
    if inputs.action == "overwrite":
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "run.json", {
        "hash": inputs.hash, "identity": inputs.identity, "config": config.resolved(),
        "model": model_spec, "model_location": location, "pairs_source": inputs.source,
        "command": command_line(command), "versions": versions(), "world_size": run.world_size,
        "precision": run.precision, "model_dtype": run.model_dtype, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    write_text(out / "config.yaml", yaml.safe_dump(config.resolved(), sort_keys=False))


def _make_trainer(location: str, config: DPOTrainConfig, run: _Run, args: Any, dataset: Any, tokenizer: Any,
                  out: Path, callbacks: list[Any] | None) -> tuple[Any, Any]:
    """The trainer and its metrics writer (metrics.jsonl)."""
    from safepref.train import monitor as mon

    # Full fine-tuning trains a float32 copy under autocast and keeps a frozen reference copy (unless
    # precomputed); LoRA wraps the base and switches the adapter off for the reference.
    policy = _load_causal_lm(location, run.model_dtype, config.trust_remote_code)
    ref_model = None
    if config.finetune == "full" and not config.precompute_ref_log_probs:
        ref_model = _load_causal_lm(location, run.model_dtype, config.trust_remote_code)
    writer = mon.MetricsWriter(out / "metrics.jsonl")
    ref_cache = config.ref_cache and config.precompute_ref_log_probs
    trainer = _trainer_class(config.group_by_length, ref_cache)(
        model=policy, ref_model=ref_model, args=args, train_dataset=dataset, processing_class=tokenizer,
        peft_config=_peft_config(config), callbacks=[writer, *(callbacks or [])])
    return trainer, writer


def _last_checkpoint(out: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    folder = out / "checkpoints"
    checkpoint = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    log.info("resuming from %s", checkpoint or "the start (no checkpoint was written yet)")
    return checkpoint


def _monitor_summary(rows: list[dict[str, Any]], config: DPOTrainConfig, trainer: Any, run: _Run, data: _Data,
                     probe: dict[str, list[float]] | None) -> dict[str, Any]:
    from safepref.train import monitor as mon

    monitor = mon.summarize_curves(rows, config.beta, config.monitor.accuracy_threshold,
                                   config.monitor.window, trainer.state.max_steps, run.global_batch)
    monitor["data_lengths"] = data.lengths
    if probe is not None:
        monitor["probe"] = mon.probe_summary(probe["margins"], probe["gaps"])
    monitor["warnings"] = mon.warnings_for(monitor)
    return monitor


def _training_summary(trainer: Any, writer: Any, result: Any, config: DPOTrainConfig, run: _Run,
                      checkpoint: str | None, n_pairs: int, setup_s: float) -> dict[str, Any]:
    return {
        "steps": trainer.state.global_step, "steps_this_run": writer.steps_this_run,
        "resumed_from": checkpoint, "epochs": trainer.state.epoch, "global_batch": run.global_batch,
        "world_size": run.world_size, "device": _device_name(), "precision": run.precision,
        "model_dtype": run.model_dtype, "learning_rate": config.resolved_learning_rate,
        "train_seconds": round(writer.seconds, 2), "setup_seconds": round(setup_s, 2),
        "pairs_per_second": _pairs_per_second(writer, run.global_batch, n_pairs, config),
        "pairs_per_second_steady": _steady_rate(writer.rows, run.global_batch),
        "train_loss": result.training_loss,
        # reference sequences of this run and how many were scored (the rest came from the cache)
        "reference_cache": getattr(trainer, "ref_cache_report", None),
    }


def _finish(out: Path, summary: dict[str, Any], rows: list[dict[str, Any]], config: DPOTrainConfig,
            probe: dict[str, list[float]] | None, title: str) -> None:
    """Main process: the plot, checkpoint cleanup, then summary.json and the model card."""
    from safepref.train import monitor as mon
    from safepref.train.modelcard import write_model_card

    try:
        mon.plot_curves(rows, summary["monitor"], out / "monitor.png", config.beta,
                        (probe["gaps"], probe["margins"]) if probe else None, title=title)
        summary["plot"] = "monitor.png"
    except ImportError as exc:  # matplotlib is optional on training boxes
        summary["plot"] = f"skipped: {exc}"
    if not config.keep_checkpoints:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    write_json(out / "summary.json", summary)  # last: its status marks the run finished
    write_model_card(out)  # README.md, the hub's model card; evaluation results are added later


def _pairs_per_second(writer: Any, global_batch: int, n_pairs: int, config: DPOTrainConfig) -> float | None:
    """Pairs processed in this run's training loop per second (the last batch of an epoch may be short)."""
    if writer.seconds <= 0 or writer.steps_this_run <= 0:
        return None
    processed = writer.steps_this_run * global_batch
    if config.max_steps == -1:
        processed = min(processed, int(n_pairs * config.num_train_epochs))
    return round(processed / writer.seconds, 2)


def _steady_rate(rows: list[dict[str, Any]], global_batch: int) -> float | None:
    """Pairs per second between the first and the last logged step of this run (start-up excluded)."""
    timed = [r for r in rows if "elapsed_s" in r]
    if len(timed) < 3:
        return None
    first, last = timed[0], timed[-1]
    seconds = last["elapsed_s"] - first["elapsed_s"]
    return round((last["step"] - first["step"]) * global_batch / seconds, 2) if seconds > 0 else None
