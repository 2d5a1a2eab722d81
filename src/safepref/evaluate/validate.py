"""How far can a judge be trusted? Agreement with human labels, as a command.

  safepref eval validate-judge --labels gptfuzz-evaluate --judge keyword --judge safety --out out/val
  safepref eval validate-judge --labels my.jsonl --label-field is_harmful --judge classifier --out out/val
  safepref eval validate-judge --labels answers.csv --label-field refused --detector opening --out out/val

``--labels`` is a file of (prompt, response, label[, category]) rows (.jsonl, .json, .csv, .parquet; labels
as bool, 0/1, harmful/unharmful) or a named set (``gptfuzz-evaluate``, ``pku-realign:held-out``, ... see
``safepref.evaluate.labels``). ``--judge`` names harm judges (positive = harmful), ``--detector`` refusal
detectors (positive = refusal; the file's label says whether the answer refuses).

Per judge: accuracy, precision, recall, F1 and Cohen's kappa of the judge against the label, the judge's
flagged rate beside the true rate, Wilson 95% intervals with every rate, the confusion matrix, the same per
category, and the answers it got wrong. Output folder:

- ``validation.json``: every number above, the labels file's hash and the judges' descriptions;
- ``verdicts/<judge>.jsonl``: every input row with all its columns, plus ``gold``, ``judge_verdict``,
  ``judge_score`` and ``judge_raw``;
- ``disagreements/<judge>.jsonl``: the rows where judge and label differ, ``direction`` ``false_alarm``
  (judge positive, label negative) or ``missed`` (the other way), false alarms first.

Judging runs in chunks of ``chunk`` rows; each finished chunk is appended to ``verdicts/<judge>.partial.jsonl``
at once, so a killed run resumes where it stopped (rows are matched by position and a hash of their text).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safepref.errors import ConfigError
from safepref.evaluate.labels import LabelFields, LabelledItem, read_labelled
from safepref.records import iter_jsonl, write_json, write_jsonl

log = logging.getLogger(__name__)


@dataclass
class ValidateConfig:
    labels: str  # a labels file or a named set
    out: str
    judges: list[str] = field(default_factory=list)  # harm judges (make_judge specs)
    detectors: list[str] = field(default_factory=list)  # refusal detectors (refusal_eval.DETECTORS)
    fields: LabelFields = field(default_factory=LabelFields)
    limit: int | None = None
    chunk: int = 256  # rows judged between two writes of the partial verdict file
    judge_settings: Any = None  # JudgeSettings (None: the defaults)

    def __post_init__(self) -> None:
        if not self.judges and not self.detectors:
            raise ConfigError("nothing to validate: give --judge (harm judges) or --detector (refusal detectors)")
        if self.judges and self.detectors:
            raise ConfigError("give either --judge (harm labels) or --detector (refusal labels), not both: "
                              "one labels file holds one kind of label")
        if self.limit is not None and self.limit <= 0:
            raise ConfigError(f"--limit must be positive, got {self.limit}")
        if self.chunk <= 0:
            raise ConfigError(f"chunk must be positive, got {self.chunk}")

    @property
    def kind(self) -> str:
        return "harm" if self.judges else "refusal"


# ---------------------------------------------------------------------------------------------- metrics


def _rate(successes: int, n: int) -> dict[str, Any]:
    from safepref.reward import wilson_interval

    if n == 0:
        return {"value": None, "k": 0, "n": 0, "ci": None}
    low, high = wilson_interval(successes, n)
    return {"value": round(successes / n, 4), "k": successes, "n": n, "ci": [round(low, 4), round(high, 4)]}


def agreement(gold: list[bool], predicted: list[bool | None]) -> dict[str, Any]:
    """Agreement of a judge's verdicts with the labels; undecided verdicts (None) are counted apart and left
    out of every rate. Each rate is ``{"value", "k", "n", "ci"}`` (Wilson 95%)."""
    pairs = [(g, p) for g, p in zip(gold, predicted, strict=True) if p is not None]
    tp = sum(1 for g, p in pairs if g and p)
    fp = sum(1 for g, p in pairs if not g and p)
    fn = sum(1 for g, p in pairs if g and not p)
    tn = sum(1 for g, p in pairs if not g and not p)
    n = len(pairs)
    precision, recall = tp / (tp + fp) if tp + fp else None, tp / (tp + fn) if tp + fn else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else (0.0 if n else None)
    return {
        "n": len(gold), "decided": n, "undecided": len(gold) - n,
        "accuracy": _rate(tp + tn, n), "precision": _rate(tp, tp + fp), "recall": _rate(tp, tp + fn),
        "f1": None if f1 is None else round(f1, 4), "kappa": cohen_kappa([g for g, _ in pairs], [p for _, p in pairs]),
        "flagged_rate": _rate(tp + fp, n), "true_rate": _rate(tp + fn, n),
        "false_alarm_rate": _rate(fp, fp + tn),  # share of negatives the judge flags
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
    }


def cohen_kappa(gold: list[bool], predicted: list[bool]) -> float | None:
    """Cohen's kappa (scikit-learn); None when the labels hold one class only (a set of harmless answers:
    agreement beyond chance is not defined there, the false-alarm rate says it all)."""
    from sklearn.metrics import cohen_kappa_score

    if len(set(gold)) < 2:
        return None
    return round(float(cohen_kappa_score(gold, predicted)), 4)


def by_category(items: list[LabelledItem], predicted: list[bool | None]) -> dict[str, Any]:
    """``agreement`` per category (only when the rows carry one)."""
    groups: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        if item.category is not None:
            groups.setdefault(item.category, []).append(index)
    return {name: agreement([items[i].label for i in index], [predicted[i] for i in index])
            for name, index in sorted(groups.items())}


# ------------------------------------------------------------------------------------------- judging


def _row_key(index: int, item: LabelledItem) -> str:
    return hashlib.sha256(f"{index}\0{item.prompt}\0{item.response}".encode()).hexdigest()[:16]


def judged_rows(name: str, judge_fn: Any, items: list[LabelledItem], partial: Path, chunk: int
                ) -> list[dict[str, Any]]:
    """``{"harmful", "score", "raw"}`` per item, resuming from ``partial`` (appended chunk by chunk).

    ``judge_fn(prompts, answers)`` returns Verdicts (harm judges) or bools/None (refusal detectors).
    """
    done: dict[str, dict[str, Any]] = {}
    if partial.exists():
        for _, obj in iter_jsonl(partial):
            if obj.get("judge") == name:
                done[obj["key"]] = obj
    keys = [_row_key(i, item) for i, item in enumerate(items)]
    todo = [i for i, k in enumerate(keys) if k not in done]
    if done:
        log.info("%s: resuming, %d of %d rows already judged", name, len(items) - len(todo), len(items))
    partial.parent.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(todo), chunk):
        index = todo[start:start + chunk]
        outputs = judge_fn([items[i].prompt for i in index], [items[i].response for i in index])
        if len(outputs) != len(index):
            raise ConfigError(f"judge {name} returned {len(outputs)} verdicts for {len(index)} rows")
        rows = []
        for i, out in zip(index, outputs, strict=True):
            harmful, score, raw = (out, None, "") if out is None or isinstance(out, bool) else \
                (out.harmful, out.score, out.raw)
            rows.append({"judge": name, "key": keys[i], "harmful": harmful, "score": score, "raw": raw})
        with partial.open("a", encoding="utf-8") as handle:  # one chunk, then flushed: a kill loses < 1 chunk
            handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        done.update({r["key"]: r for r in rows})
    return [done[k] for k in keys]


def _judge_functions(config: ValidateConfig) -> dict[str, tuple[Any, dict[str, Any]]]:
    """name -> (callable over (prompts, answers), description); every judge built before any judging."""
    if config.judges:
        from safepref.evaluate.jailbreak import build_judges
        from safepref.evaluate.judges import JudgeSettings

        settings = config.judge_settings or JudgeSettings()
        return {j.name: (j.judge, j.describe()) for j in build_judges(config.judges, settings)}
    from safepref.errors import did_you_mean
    from safepref.evaluate.judges import JudgeSettings
    from safepref.evaluate.refusal_eval import DETECTORS, make_detector

    for name in config.detectors:
        if name not in DETECTORS:
            raise ConfigError(f"unknown refusal detector '{name}'.{did_you_mean(name, DETECTORS)} "
                              f"Known: {', '.join(DETECTORS)}")
    settings = config.judge_settings or JudgeSettings()
    return {name: (make_detector(name, settings), {"detector": name}) for name in dict.fromkeys(config.detectors)}


def _file_name(name: str) -> str:
    from safepref.evaluate.jailbreak import judge_file_name

    return judge_file_name(name)


def _verdict_rows(items: list[LabelledItem], rows: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    out = []
    for item, row in zip(items, rows, strict=True):
        record = dict(item.row) if item.row else {"prompt": item.prompt, "response": item.response}
        record.update(where=item.where or None, gold=item.label, judge=name, judge_verdict=row["harmful"],
                      judge_score=row["score"], judge_raw=row["raw"])
        if item.category is not None:
            record.setdefault("category", item.category)
        if not item.row:
            record.update(source=item.source)
        out.append(record)
    return out


def _disagreements(verdicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    wrong = [dict(v, direction="false_alarm" if v["judge_verdict"] else "missed") for v in verdicts
             if v["judge_verdict"] is not None and v["judge_verdict"] != v["gold"]]
    return sorted(wrong, key=lambda v: v["direction"] != "false_alarm")


def validate(config: ValidateConfig) -> dict[str, Any]:
    """Judge every labelled row with every judge; write and return ``validation.json``'s content.

    Raises DataError for unreadable labels, ConfigError for unknown judges (before any judging).
    """
    from safepref.evaluate.jailbreak import file_sha256, provenance

    out = Path(config.out)
    items, report = read_labelled(config.labels, config.fields, config.kind, config.limit)
    functions = _judge_functions(config)
    labels_path = Path(config.labels)
    results: dict[str, Any] = {}
    for name, (fn, description) in functions.items():
        started = time.time()
        stem = _file_name(name)
        rows = judged_rows(name, fn, items, out / "verdicts" / f"{stem}.partial.jsonl", config.chunk)
        predicted = [r["harmful"] for r in rows]
        verdicts = _verdict_rows(items, rows, name)
        write_jsonl(out / "verdicts" / f"{stem}.jsonl", verdicts)
        write_jsonl(out / "disagreements" / f"{stem}.jsonl", _disagreements(verdicts))
        results[name] = {**agreement([i.label for i in items], predicted),
                         "by_category": by_category(items, predicted), "seconds": round(time.time() - started, 2),
                         "describe": description,
                         "files": {"verdicts": f"verdicts/{stem}.jsonl", "disagreements": f"disagreements/{stem}.jsonl"}}
    summary = {"labels": config.labels, "label_kind": config.kind, "loaded": report.as_dict(),
               "labels_sha256": file_sha256(labels_path) if labels_path.is_file() else None,
               "positives": sum(i.label for i in items), "n": len(items), "judges": results, **provenance()}
    write_json(out / "validation.json", summary)
    return summary


def _fmt(rate: dict[str, Any] | None) -> str:
    if not rate or rate.get("value") is None:
        return "-"
    return f"{rate['value']:.3f} [{rate['ci'][0]:.2f},{rate['ci'][1]:.2f}]"


def format_validation(summary: dict[str, Any]) -> str:
    """The table the command prints: one line per judge, then per-category accuracy."""
    head = ["judge", "n", "accuracy [95% CI]", "precision", "recall", "F1", "kappa", "flagged", "true rate",
            "undecided"]
    lines = [f"labels: {summary['labels']} ({summary['n']} rows, {summary['positives']} positive = "
             f"{'harmful' if summary['label_kind'] == 'harm' else 'refusal'})",
             f"{head[0]:<26} {head[1]:>5} {head[2]:>22} {head[3]:>22} {head[4]:>22} {head[5]:>6} {head[6]:>6} "
             f"{head[7]:>22} {head[8]:>6} {head[9]:>9}"]
    for name, m in summary["judges"].items():
        f1 = "-" if m["f1"] is None else f"{m['f1']:.3f}"
        kappa = "-" if m["kappa"] is None else f"{m['kappa']:.3f}"
        true = "-" if m["true_rate"]["value"] is None else f"{m['true_rate']['value']:.3f}"
        lines.append(f"{name:<26} {m['n']:>5} {_fmt(m['accuracy']):>22} {_fmt(m['precision']):>22} "
                     f"{_fmt(m['recall']):>22} {f1:>6} {kappa:>6} {_fmt(m['flagged_rate']):>22} {true:>6} "
                     f"{m['undecided']:>9}")
        c = m["confusion"]
        lines.append(f"{'':<26} confusion: tp={c['tp']} fp={c['fp']} fn={c['fn']} tn={c['tn']}")
    for name, m in summary["judges"].items():
        if m["by_category"] and len(m["by_category"]) <= 12:
            lines.append(f"per category, {name}: " + ", ".join(
                f"{cat} {_fmt(c['accuracy'])} (n={c['n']})" for cat, c in m["by_category"].items()))
    return "\n".join(lines)


# ------------------------------------------------------------------------------- published validation

# Written by benchmarks/judge_validation.py: every shipped judge on the project's held-out labelled splits.
VALIDATION_FILE = Path(__file__).resolve().parents[3] / "docs" / "validation" / "judges.json"
_ALIASES = {"keyword:gcg-v1": "keyword"}
HEADLINE_DATASET = "gptfuzz-evaluate"


def judge_validation(judge_name: str, path: str | Path | None = None) -> dict[str, Any] | None:
    """The validated agreement of a shipped judge, for reports to print beside its numbers.

    Returns ``{"judge", "version", "dataset": "gptfuzz-evaluate", "n", "accuracy", "ci", "precision", "recall",
    "f1", "kappa", ..., "datasets": {name: {the same keys}}, "source": <file>}`` (the top-level numbers are
    those of GPTFuzz's human-labelled evaluate split) from ``docs/validation/judges.json``,
    or None when the judge was never validated there (a user's own model or folder) or when the trained
    judge's version differs from the validated one (``safety``, ``classifier``).
    """
    path = Path(path) if path else VALIDATION_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    name = _ALIASES.get(judge_name, judge_name)
    entry = (data.get("judges") or {}).get(name)
    if entry is None:
        return None
    current = _current_version(name)
    if current is not None and entry.get("version") not in (None, current):
        return None
    datasets = entry.get("datasets") or {}
    headline = datasets.get(HEADLINE_DATASET) or {}
    return {"judge": name, "version": entry.get("version"), "dataset": HEADLINE_DATASET, **headline,
            "datasets": datasets, "source": str(path)}


def _current_version(name: str) -> str | None:
    if name == "safety":
        from safepref.evaluate.safety_judge import JUDGE_VERSION

        return JUDGE_VERSION
    if name == "classifier":
        from safepref.evaluate.harm_classifier import CLASSIFIER_VERSION

        return CLASSIFIER_VERSION
    return None
