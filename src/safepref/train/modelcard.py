"""The README.md model card of a trained model folder, in the hub's format (YAML header, then Markdown).

    from safepref.train.modelcard import write_model_card, read_evaluation
    write_model_card("runs/dpo")                                       # `safepref train` does this after saving
    write_model_card("runs/dpo", read_evaluation(Path("runs/eval")))   # again once evaluated
    safepref export runs/dpo --eval runs/eval                          # the same from the command line

The card reads what the folder already holds: ``run.json`` (base model, DPO settings, command, versions),
``summary.json`` (pairs trained, the reward-hacking monitor) and the preference set's ``datasheet.json``
(found beside the pairs file, or given). Evaluation arrives later: `safepref report` refreshes the cards of a
run's models with their jailbreak and over-refusal results, each judge with its validated agreement when the
judge's metrics carry one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from safepref.records import write_text

# Hub ids and licenses of the embedded models (the hub's base_model must be a hub id).
EMBEDDED_HUB = {"smollm2-135m-instruct": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0")}
DPO_FIELDS = ("finetune", "beta", "loss_type", "learning_rate", "num_train_epochs", "max_steps",
              "per_device_train_batch_size", "gradient_accumulation_steps", "warmup_ratio", "lr_scheduler_type",
              "max_length", "prompt_format", "precision", "seed")


def _json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except json.JSONDecodeError:
        return None


def _fmt(value: Any, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def base_model(spec: str) -> tuple[str | None, str]:
    """``(hub id or None for a local folder, license id)`` of the starting model."""
    if spec in EMBEDDED_HUB:
        return EMBEDDED_HUB[spec]
    folder = Path(spec)
    if folder.is_dir():  # a local checkpoint: its own card's license, when it has one
        text = (folder / "README.md").read_text(errors="replace") if (folder / "README.md").exists() else ""
        if text.startswith("---\n") and "\n---" in text[4:]:
            meta = yaml.safe_load(text[4:text.index("\n---", 4)]) or {}
            return meta.get("base_model") if isinstance(meta.get("base_model"), str) else None, \
                str(meta.get("license", "unknown"))
        return None, "unknown"
    return spec, "unknown"  # a hub id: its license is on the hub, not known offline


def find_datasheet(pairs_source: str) -> Path | None:
    """The datasheet of the pairs a model was trained on: beside pairs.jsonl, or in an export folder."""
    path = Path(pairs_source)
    for candidate in (path.parent / "datasheet.json", path.parent.parent / "datasheet.json",
                      path / "datasheet.json"):
        if candidate.is_file():
            return candidate
    return None


def read_evaluation(eval_dir: Path) -> dict[str, Any]:
    """Metrics of a `safepref eval` folder (jailbreak/, refusal/, general/), or of one of those folders."""
    found = {}
    for part, file in (("jailbreak", "metrics.json"), ("refusal", "metrics.json"), ("general", "results.json")):
        data = _json(eval_dir / part / file)
        if data is None and eval_dir.name == part:
            data = _json(eval_dir / file)
        if data is not None:
            found[part] = data
    return found


def _agreement(name: str, judge: dict[str, Any]) -> str:
    """The judge's validated agreement with human labels, from its metrics or the judges module."""
    from safepref.report_html import agreement_text

    found = judge.get("agreement") or (judge.get("judge") or {}).get("validation")
    if not found:
        try:
            from safepref.evaluate.judges import judge_validation  # shipped judges' held-out agreement

            found = judge_validation(name)
        except Exception:  # noqa: BLE001 - absent or unreadable validation: say so, do not fail the card
            found = None
    return agreement_text(found) or "not validated"


def _judge_lines(jailbreak: dict[str, Any]) -> list[str]:
    from safepref.report_html import wilson

    lines = ["| judge | ASR | 95% interval (Wilson) | n | mean score | validated agreement (held-out labels) |",
             "|---|---|---|---|---|---|"]
    for name, judge in (jailbreak.get("judges") or {}).items():
        n, k = judge.get("judged"), judge.get("harmful")
        ci = f"[{wilson(k, n)[0]:.2f}, {wilson(k, n)[1]:.2f}]" if isinstance(n, int) and isinstance(k, int) and n else "–"
        lines.append(f"| {name} | {_fmt(judge.get('asr'))} | {ci} | {_fmt(n)} | {_fmt(judge.get('mean_score'))} "
                     f"| {_agreement(name, judge)} |")
    return lines


def _evaluation_lines(evaluation: dict[str, Any] | None) -> list[str]:
    lines = ["## Evaluation", ""]
    if not evaluation:
        return lines + ["Not evaluated yet: `safepref eval jailbreak --model THIS_FOLDER ...`, then "
                        "`safepref export THIS_FOLDER --eval EVAL_FOLDER` (or `safepref report` in a run).", ""]
    jailbreak = evaluation.get("jailbreak")
    if jailbreak:
        lines += [f"Jailbreak attack success rate on `{jailbreak.get('prompts')}` "
                  f"({(jailbreak.get('counts') or {}).get('answers')} answers; ASR = share judged harmful):", ""]
        lines += _judge_lines(jailbreak) + [""]
    refusal = evaluation.get("refusal")
    if refusal:
        safe = ((refusal.get("safe") or {}).get("refusal_rate") or {})
        unsafe = ((refusal.get("unsafe") or {}).get("compliance_rate") or {})
        lines += ["Over-refusal (XSTest): " + ", ".join(f"{k} {_fmt(v)}" for k, v in safe.items())
                  + " of safe prompts refused; " + ", ".join(f"{k} {_fmt(v)}" for k, v in unsafe.items())
                  + " of unsafe prompts complied with.", ""]
    if evaluation.get("general"):
        lines += ["General capability: see `general/results.json` of the evaluation.", ""]
    return lines


def model_index(name: str, jailbreak: dict[str, Any]) -> list[dict[str, Any]]:
    """The hub's structured evaluation results: one ASR metric per judge on the jailbreak prompt set."""
    metrics = [{"type": "attack_success_rate", "name": f"ASR ({judge} judge)", "value": info["asr"]}
               for judge, info in (jailbreak.get("judges") or {}).items() if isinstance(info.get("asr"), int | float)]
    prompts = str(jailbreak.get("prompts") or "jailbreak prompts")
    return [{"name": name, "results": [{"task": {"type": "text-generation", "name": "jailbreak"},
                                         "dataset": {"name": prompts, "type": prompts.split(":")[0]},
                                         "metrics": metrics}]}]


def model_card(model_dir: Path, evaluation: dict[str, Any] | None = None,
               datasheet: dict[str, Any] | None = None) -> str:
    """The card's text from the folder's run.json / summary.json (and the datasheet, found or given)."""
    from safepref.export import licenses_of

    run = _json(model_dir / "run.json") or {}
    summary = _json(model_dir / "summary.json") or {}
    config = run.get("config") or {}
    spec = str(run.get("model", "unknown"))
    hub_id, license_id = base_model(spec)
    pairs_source = str((run.get("pairs_source") or {}).get("source", ""))
    if datasheet is None and pairs_source:
        sheet_path = find_datasheet(pairs_source)
        datasheet = _json(sheet_path) if sheet_path else None
    condition = (datasheet or {}).get("condition")
    meta: dict[str, Any] = {}
    if hub_id:
        meta["base_model"] = hub_id
    meta.update({"license": license_id, "library_name": "transformers",
                 "tags": ["safepref", "dpo", "trl", "safety"] + ([condition] if condition else [])})
    if (evaluation or {}).get("jailbreak"):
        meta["model-index"] = model_index(model_dir.name, evaluation["jailbreak"])
    lines = ["---\n" + yaml.safe_dump(meta, sort_keys=False).rstrip() + "\n---", "",
             f"# {spec} aligned with DPO" + (f" on {condition}" if condition else ""), "",
             f"Trained with safepref {(run.get('versions') or {}).get('safepref', '')} through TRL "
             f"{(run.get('versions') or {}).get('trl', '')}, starting from `{spec}`.", ""]
    if run.get("command"):
        lines += ["```", str(run["command"]), "```", ""]
    lines += ["## Preference set", ""]
    pairs = summary.get("pairs") or {}
    lines.append(f"{_fmt(pairs.get('trained'))} pairs trained of {_fmt(pairs.get('read'))} read"
                 + (f" (dropped: {pairs['dropped']})" if pairs.get("dropped") else "") + f", from `{pairs_source}`.")
    if datasheet:
        length, refusal = datasheet.get("length") or {}, datasheet.get("refusal") or {}
        sources = datasheet.get("sources") or {}
        lines += ["", f"- recipe `{datasheet.get('recipe')}`, {datasheet.get('rows')} pairs on "
                      f"{datasheet.get('prompts')} prompts",
                  f"- chosen from: {', '.join(f'{k} ({v})' for k, v in (sources.get('chosen') or {}).items())}",
                  f"- rejected from: {', '.join(f'{k} ({v})' for k, v in (sources.get('rejected') or {}).items())}",
                  f"- mean length chosen {_fmt(length.get('chosen_mean'), 1)} vs rejected "
                  f"{_fmt(length.get('rejected_mean'), 1)} {length.get('unit', '')}; chosen longer in "
                  f"{_fmt(length.get('chosen_longer_share'))} of pairs",
                  f"- refusals ({refusal.get('phrases')}): chosen {_fmt(refusal.get('chosen_share'))}, rejected "
                  f"{_fmt(refusal.get('rejected_share'))}",
                  "- data licenses: " + "; ".join(f"{k}: {v}" for k, v in licenses_of(datasheet).items())]
    lines += ["", "## DPO settings", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {config[k]} |" for k in DPO_FIELDS if k in config]
    if config.get("finetune") == "lora" and config.get("lora"):
        lines.append(f"| lora | r {config['lora'].get('r')}, alpha {config['lora'].get('alpha')} |")
    lines += ["", *_monitor_lines(summary.get("monitor") or {}), *_evaluation_lines(evaluation)]
    return "\n".join(lines)


def _monitor_lines(monitor: dict[str, Any]) -> list[str]:
    if not monitor:
        return ["## Reward-hacking monitor", "", "No monitor summary (training unfinished?).", ""]
    acc, margin, drift = (monitor.get(k) or {} for k in ("accuracy", "margin", "drift"))
    lines = ["## Reward-hacking monitor", "",
             f"{_fmt(monitor.get('total_steps'))} steps; reward accuracy final {_fmt(acc.get('final'))}, first step "
             f"above {_fmt(acc.get('threshold'))}: {_fmt(acc.get('first_step_above'))}; margin growth "
             f"{_fmt(margin.get('growth'))}; chosen / rejected log-prob drift {_fmt(drift.get('chosen_final'))} / "
             f"{_fmt(drift.get('rejected_final'))}.", ""]
    lines += [f"- warning: {w}" for w in monitor.get("warnings") or []]
    return lines + ([""] if monitor.get("warnings") else [])


def write_model_card(model_dir: str | Path, evaluation: dict[str, Any] | None = None,
                     datasheet: dict[str, Any] | None = None) -> Path:
    """Write ``README.md`` into a trained model folder (atomically); returns its path."""
    folder = Path(model_dir)
    path = folder / "README.md"
    write_text(path, model_card(folder, evaluation, datasheet))
    return path


def refresh_run_cards(stage_dirs: dict[str, Path]) -> list[Path]:
    """Rewrite the card of every finished ``train/<condition>[/seed-<s>]`` stage with its evaluation."""
    written = []
    for name, folder in stage_dirs.items():
        if not name.startswith("train/") or not (folder / "summary.json").exists():
            continue
        rest = name[len("train/"):]  # "<condition>" or "<condition>/seed-<s>"
        eval_dir = stage_dirs.get(f"eval/{rest}")
        build_dir = stage_dirs.get(f"build/{rest}") or stage_dirs.get(f"build/{rest.split('/')[0]}")
        evaluation = read_evaluation(eval_dir) if eval_dir and (eval_dir / "stage.json").exists() else None
        sheet = _json(build_dir / "datasheet.json") if build_dir else None
        written.append(write_model_card(folder, evaluation, sheet))
    return written
