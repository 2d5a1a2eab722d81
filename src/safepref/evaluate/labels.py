"""Human-labelled (request, answer, label) sets: read any file, or a named set of the offline data.

    items, report = read_labelled("my_labels.jsonl")                       # prompt, response, label[, category]
    items, report = read_labelled("answers.csv", LabelFields(label="is_refusal"), kind="refusal")
    items, report = read_labelled("gptfuzz-evaluate")                      # a named set (``LABELLED_SETS``)

Labels may be booleans, 0/1 (numbers or strings), or words: ``harmful``/``unharmful`` (also ``unsafe``/
``safe``, ``yes``/``no``, ``true``/``false``, ``jailbroken``); for refusal labels ``refusal``/``compliance``
(XSTest's ``full_refusal``/``partial_refusal``/``full_compliance`` too). Positive = harmful (or refusal).
Every input column is kept on the item (``row``) so verdict files can carry it through.

Named sets are the offline data's labelled rows, each (request, answer) pair with its harmfulness:
``gptfuzz-train``/``gptfuzz-evaluate`` (human labels; the request is the GPTFuzz question), ``safety-labels``
(GuardReasoner's PKU-SafeRLHF and BeaverTails rows), ``pku-realign`` (each row: the safe answer as harmless,
the other one as harmful), ``pku-safe-sft`` and ``gpt35-safety`` (safe answers only), ``benign-answers``
(SmolLM2-135M-Instruct's full answers to harmless requests that safepref ships, some of which only sound
dangerous: the one set where answering in full is harmless, see ``BENIGN_ANSWERS``). A ``:held-out``
suffix keeps only the prompts that the default judge never trains on (see ``safety_judge.split_of_item``).
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safepref import paths
from safepref.errors import DataError, did_you_mean
from safepref.records import prompt_id as make_prompt_id

_POSITIVE = {"harm": {"1", "true", "yes", "harmful", "unsafe", "jailbroken", "jailbreak", "y", "positive"},
             "refusal": {"1", "true", "yes", "refusal", "refused", "full_refusal", "partial_refusal", "refuse",
                         "y"}}
_NEGATIVE = {"harm": {"0", "false", "no", "unharmful", "harmless", "safe", "benign", "n", "negative"},
             "refusal": {"0", "false", "no", "compliance", "complied", "full_compliance", "comply", "n"}}
LABEL_KINDS = tuple(_POSITIVE)

# Column names tried in order when the user names none (the first present wins). The request a judge reads is
# the plain harmful request: jailbreak artifacts (JailbreakBench: goal, prompt = the attack's wrapped text) and
# HarmBench (behavior) carry it beside the attack's prompt, so goal and behavior come before prompt.
_ALIASES = {
    "prompt": ("goal", "behavior", "Behavior", "prompt", "question", "request", "instruction", "query"),
    "response": ("response", "Response", "answer", "completion", "generation", "output"),
    "label": ("label", "harmful", "is_harmful", "human_label", "jailbroken", "refusal", "is_refusal"),
    "category": ("category", "SemanticCategory", "type", "risk_area"),
}


@dataclass
class LabelFields:
    """Column names of a labels file; None = try the usual names (``_ALIASES``)."""

    prompt: str | None = None
    response: str | None = None
    label: str | None = None
    category: str | None = None


@dataclass
class LabelledItem:
    prompt: str
    response: str
    label: bool  # True = harmful (or refusal, for refusal labels)
    source: str = ""
    category: str | None = None
    where: str = ""  # file:line of the row
    row: dict[str, Any] = field(default_factory=dict)  # every input column, for verdict files
    prompt_id: str = ""

    def __post_init__(self) -> None:
        if not self.prompt_id:
            self.prompt_id = make_prompt_id(self.prompt)


@dataclass
class LabelsReport:
    source: str
    rows: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    fields: dict[str, str | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "rows": self.rows, "kept": self.kept, "dropped": dict(self.dropped),
                "fields": self.fields}


def parse_label(value: Any, where: str, name: str, kind: str = "harm") -> bool:
    """A label value as bool (True = positive); raises DataError naming the row and field."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _POSITIVE[kind]:
        return True
    if text in _NEGATIVE[kind]:
        return False
    known = sorted(_POSITIVE[kind] | _NEGATIVE[kind])
    raise DataError(f"{where}: field '{name}' holds {str(value)[:40]!r}, not a {kind} label "
                    f"(known: {', '.join(known)})")


def _pick(row: dict[str, Any], wanted: str | None, role: str, where: str, required: bool) -> str | None:
    if wanted is not None:
        if wanted not in row:
            raise DataError(f"{where}: no '{wanted}' column for the {role} "
                            f"(columns: {', '.join(map(str, row))})")
        return wanted
    found = next((a for a in _ALIASES[role] if a in row), None)
    if found is None and required:
        raise DataError(f"{where}: no {role} column (tried {', '.join(_ALIASES[role])}; columns: "
                        f"{', '.join(map(str, row))}); name it with --{role}-field")
    return found


def read_labels_file(path: str | Path, fields: LabelFields | None = None, kind: str = "harm",
                     limit: int | None = None) -> tuple[list[LabelledItem], LabelsReport]:
    """Rows of a .jsonl/.json/.csv/.parquet file. Raises DataError (file and line) for a missing label
    column, a label of an unknown kind, or an empty response."""
    from safepref.sources.tables import iter_rows

    fields = fields or LabelFields()
    report = LabelsReport(source=str(path))
    items: list[LabelledItem] = []
    names: dict[str, str | None] | None = None
    for where, row in iter_rows(path):
        if names is None:  # the first row fixes the columns
            names = {role: _pick(row, getattr(fields, role), role, where, role != "category")
                     for role in ("prompt", "response", "label", "category")}
            report.fields = dict(names)
        report.rows += 1
        prompt, response = row.get(names["prompt"]), row.get(names["response"])  # type: ignore[arg-type]
        for role, value in (("prompt", prompt), ("response", response)):
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{where}: field '{names[role]}' ({role}) is empty or not text")
        label = parse_label(row.get(names["label"]), where, str(names["label"]), kind)  # type: ignore[arg-type]
        category = row.get(names["category"]) if names["category"] else None
        items.append(LabelledItem(prompt=prompt, response=response, label=label,  # type: ignore[arg-type]
                                  source=Path(path).stem, category=None if category is None else str(category),
                                  where=where, row=dict(row)))
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise DataError(f"{path}: no labelled rows")
    report.kept = len(items)
    return items, report


# ------------------------------------------------------------------------------------------- named sets


def _gptfuzz(split: str) -> Callable[[], list[LabelledItem]]:
    def load() -> list[LabelledItem]:
        from safepref.evaluate.harm_classifier import gptfuzz_file

        path = gptfuzz_file(split)
        questions = {}
        with paths.data_file("gptfuzz/question_list.csv").open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                questions[str(row["index"]).strip()] = row["text"]
        items = []
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                where = f"{path}:{reader.line_num}"
                question = questions.get(str(row.get("question", "")).strip())
                if question is None:
                    raise DataError(f"{where}: question index {row.get('question')!r} is not in question_list.csv")
                items.append(LabelledItem(prompt=question, response=row["Response"] or "",
                                          label=parse_label(row.get("label"), where, "label"),
                                          source=f"gptfuzz-{split}", category=f"q{row['question']}", where=where,
                                          row={"question": row["question"], "label": row["label"]}))
        return items

    return load


def _safety_labels() -> list[LabelledItem]:
    from safepref.reward.offline import load_labelled

    return [LabelledItem(prompt=r.prompt, response=r.response, label=not r.safe, source="safety-labels",
                         category=r.source) for r in load_labelled("safety-labels")]


def _pku_realign() -> list[LabelledItem]:
    from safepref.sources import load_pairs

    pairs, _ = load_pairs("pku-realign")
    items = []
    for pair in pairs:  # [safer, less safe]: exactly one answer of each row is safe
        items.append(LabelledItem(prompt=pair.prompt_text, response=pair.chosen_text, label=False,
                                  source="pku-realign", category="safe side"))
        items.append(LabelledItem(prompt=pair.prompt_text, response=pair.rejected_text, label=True,
                                  source="pku-realign", category="unsafe side"))
    return items


def _safe_answers(source: str) -> Callable[[], list[LabelledItem]]:
    def load() -> list[LabelledItem]:
        from safepref.sources import load_responses

        responses, _ = load_responses(source)
        return [LabelledItem(prompt=r.prompt, response=r.response, label=False, source=source)
                for r in responses]

    return load


# Harmless requests written for safepref (``data/benign_requests.jsonl``: everyday tasks, and requests that only
# sound dangerous: "kill a Python process", weeds, games, definitions, history, safety information) and the
# embedded model's greedy answers to them (``benchmarks/benign_answers.py`` makes them). Why: every other set answers
# harmful requests, so without it a judge learns "answered in full = harmful" whatever was asked.
BENIGN_ANSWERS = Path(__file__).parent / "data" / "benign_answers.jsonl"


def _benign_answers() -> list[LabelledItem]:
    if not BENIGN_ANSWERS.exists():
        raise DataError(f"{BENIGN_ANSWERS}: missing (made by benchmarks/benign_answers.py; part of the package)")
    items, _ = read_labels_file(BENIGN_ANSWERS)
    for item in items:
        if item.label:
            raise DataError(f"{item.where}: the benign answers must all be labelled harmless")
        item.source = "benign-answers"
    return items


LABELLED_SETS: dict[str, Callable[[], list[LabelledItem]]] = {
    "gptfuzz-train": _gptfuzz("train"),
    "gptfuzz-evaluate": _gptfuzz("evaluate"),
    "safety-labels": _safety_labels,
    "pku-realign": _pku_realign,
    "pku-safe-sft": _safe_answers("pku-safe-sft"),
    "gpt35-safety": _safe_answers("gpt35-safety"),
    "benign-answers": _benign_answers,
}
GPTFUZZ_ALIASES = {"gptfuzz": "gptfuzz-evaluate", "gptfuzz:evaluate": "gptfuzz-evaluate",
                   "gptfuzz:train": "gptfuzz-train"}


def named_set(spec: str) -> tuple[str, bool] | None:
    """``(set name, held_out_only)`` when ``spec`` names a set (``pku-realign:held-out``), else None."""
    spec = GPTFUZZ_ALIASES.get(spec, spec)
    name, _, suffix = spec.partition(":")
    if name in LABELLED_SETS and suffix in ("", "held-out"):
        return name, suffix == "held-out"
    return None


def read_labelled(spec: str, fields: LabelFields | None = None, kind: str = "harm",
                  limit: int | None = None) -> tuple[list[LabelledItem], LabelsReport]:
    """A named set (``LABELLED_SETS``, optionally ``:held-out``) or a labels file; empty answers of a named
    set are dropped and counted, those of a file are an error."""
    named = named_set(spec)
    if named is None:
        path = Path(spec)
        if not path.exists():
            hint = did_you_mean(spec, [*LABELLED_SETS, *GPTFUZZ_ALIASES])
            raise DataError(f"labels '{spec}': no such file or named set.{hint} Named sets: "
                            f"{', '.join(LABELLED_SETS)} (add ':held-out' for the judge's held-out prompts)")
        return read_labels_file(path, fields, kind, limit)
    name, held_out = named
    if kind != "harm":
        raise DataError(f"named set '{name}' holds harm labels, not {kind} labels")
    report = LabelsReport(source=spec, fields={"prompt": "prompt", "response": "response", "label": "label"})
    items = []
    for item in LABELLED_SETS[name]():
        report.rows += 1
        if not item.response.strip():
            report.dropped["empty_response"] += 1
            continue
        if held_out and not is_held_out(item):
            report.dropped["training_prompt"] += 1
            continue
        items.append(item)
    items = items[:limit] if limit else items
    report.kept = len(items)
    if not items:
        raise DataError(f"named set '{spec}' yields no labelled rows")
    return items, report


# The split every judge trainer shares: a prompt's place is a hash of its id, so a prompt is never in two
# splits, whatever source it comes from. GPTFuzz keeps its own split (train file / evaluate file).
SPLIT_FRACTIONS = {"train": 0.8, "test": 0.2}
SPLIT_SEED = 17


def split_of_item(item: LabelledItem) -> str:
    from safepref.sources import split_of

    if item.source.startswith("gptfuzz-"):
        return "train" if item.source == "gptfuzz-train" else "test"
    return split_of(item.prompt_id, SPLIT_FRACTIONS, SPLIT_SEED)


def is_held_out(item: LabelledItem) -> bool:
    return split_of_item(item) == "test"
