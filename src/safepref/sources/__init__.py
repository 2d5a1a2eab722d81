"""Data sources by name: prompts, answers and preference pairs, from a local file/folder or the hub.

A source is addressed by a spec string:

- ``advbench``, ``advbench:100`` (first 100 rows), ``xstest-safe``: a registered name, read from its default
  file under ``$SAFEPREF_DATA`` (or the hub, for sources that live there);
- ``pku-saferlhf=path/to/folder_or_file``: a registered name read from an explicit local path in that
  source's format;
- ``path/to/file.jsonl`` (``.json``, ``.csv``, ``.parquet``): a plain file whose columns are named by
  ``fields`` (defaults: ``prompt``, ``response``, ``chosen``, ``rejected``).

Loaders never drop a row silently: a malformed row raises ``DataError`` naming the file and line. Duplicate
prompts are merged by ``prompt_id`` (PKU-SafeRLHF's test prompts repeat) and counted in the ``LoadReport``.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safepref import paths
from safepref.errors import DataError
from safepref.records import PreferencePair, Prompt, Response, prompt_id
from safepref.registry import Registry
from safepref.sources.tables import get_field, iter_rows

Row = dict[str, Any]


@dataclass(frozen=True)
class Skip:
    """Returned by a row parser for a well-formed row that is not kept; ``reason`` is counted."""

    reason: str


@dataclass
class LoadReport:
    """What a load did: rows read, records kept, and every row not kept with its reason."""

    source: str
    rows: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "rows": self.rows, "kept": self.kept, "dropped": dict(self.dropped)}


# ------------------------------------------------------------------------------------------ row parsers
# Each parser turns one row into records of the source's kind; ``where`` is "file:line" for errors.


def _pku_hub_pair(row: Row, where: str, name: str) -> PreferencePair:
    """PKU-SafeRLHF hub format: ``response_0/1`` and ``safer_response_id`` (safer = chosen)."""
    prompt = get_field(row, "prompt", where)
    safer = get_field(row, "safer_response_id", where, int)
    if safer not in (0, 1):
        raise DataError(f"{where}: field 'safer_response_id' must be 0 or 1, got {safer!r}")
    chosen = get_field(row, f"response_{safer}", where)
    rejected = get_field(row, f"response_{1 - safer}", where)
    meta = {k: row[k] for k in ("is_response_0_safe", "is_response_1_safe", "better_response_id") if k in row}
    return _pair(prompt, chosen, rejected, name, extra=meta)


def _pku_paper_pair(row: Row, where: str, name: str) -> PreferencePair:
    """The study's converted JSONL: ``chosen``/``rejected`` as [user, assistant] message lists."""
    prompt = get_field(row, "prompt", where)
    sides = []
    for side in ("chosen", "rejected"):
        messages = get_field(row, side, where, list)
        if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "assistant":
            raise DataError(f"{where}: field '{side}' must end with an assistant message")
        sides.append(get_field(messages[-1], "content", f"{where} ({side})"))
    return _pair(prompt, sides[0], sides[1], name)


def _pku_realign_pair(row: Row, where: str, name: str) -> PreferencePair:
    """The 5k "realign" JSON: ``response`` = [safer, less safe]."""
    prompt = get_field(row, "prompt", where)
    responses = get_field(row, "response", where, list)
    if len(responses) != 2 or not all(isinstance(r, str) and r.strip() for r in responses):
        raise DataError(f"{where}: field 'response' must be a list of two non-empty strings")
    return _pair(prompt, responses[0], responses[1], name)


def _hh_pair(row: Row, where: str, name: str) -> PreferencePair | Skip:
    """Anthropic hh-rlhf: whole dialogues; the shared prefix is the prompt, the last turns the answers."""
    chosen_dialogue = get_field(row, "chosen", where)
    rejected_dialogue = get_field(row, "rejected", where)
    prompt_c, chosen = _split_last_assistant(chosen_dialogue, where)
    prompt_r, rejected = _split_last_assistant(rejected_dialogue, where)
    if prompt_c != prompt_r:  # the two dialogues diverge before the last turn: not a pair on one prompt
        return Skip("dialogues_diverge_before_last_turn")
    messages = _hh_messages(prompt_c)
    pair = _pair(messages[-1]["content"], chosen, rejected, name)
    pair.prompt = messages
    pair.prompt_id = prompt_id("\n".join(m["content"] for m in messages))
    return pair


_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


def _split_last_assistant(dialogue: str, where: str) -> tuple[str, str]:
    index = dialogue.rfind("\n\nAssistant:")
    if index < 0:
        raise DataError(f"{where}: dialogue has no '\\n\\nAssistant:' turn")
    return dialogue[:index], dialogue[index + len("\n\nAssistant:"):].strip()


def _hh_messages(prefix: str) -> list[dict[str, str]]:
    parts = _HH_TURN.split(prefix)
    messages = []
    for role, content in zip(parts[1::2], parts[2::2], strict=False):
        messages.append({"role": "user" if role == "Human" else "assistant", "content": content.strip()})
    return messages or [{"role": "user", "content": prefix.strip()}]


def _pair(prompt: str, chosen: str, rejected: str, name: str, extra: dict | None = None) -> PreferencePair:
    return PreferencePair(
        prompt=[{"role": "user", "content": prompt}],
        chosen=[{"role": "assistant", "content": chosen}],
        rejected=[{"role": "assistant", "content": rejected}],
        chosen_meta={"source": {"kind": "dataset", "name": name, "side": "chosen", **(extra or {})}},
        rejected_meta={"source": {"kind": "dataset", "name": name, "side": "rejected"}},
        recipe="original",
    )


def _response_parser(prompt_field: str, response_field: str, model: str | None = None,
                     input_field: str | None = None) -> Callable[[Row, str, str], Response | Skip]:
    def parse(row: Row, where: str, name: str) -> Response | Skip:
        prompt = get_field(row, prompt_field, where)
        if input_field and str(row.get(input_field) or "").strip():
            prompt = f"{prompt}\n\n{row[input_field]}"
        if isinstance(row.get(response_field), str) and not row[response_field].strip():
            return Skip("empty_response")  # a model may answer nothing: counted, not fatal
        answer = get_field(row, response_field, where)
        source = {"kind": "dataset", "name": name}
        if model:
            source["model"] = model
        return Response(prompt=prompt, response=answer, source=source)

    return parse


def _prompt_parser(prompt_field: str, meta_fields: tuple[str, ...] = (),
                   keep: Callable[[Row], bool] | None = None) -> Callable[[Row, str, str], Prompt | Skip]:
    def parse(row: Row, where: str, name: str) -> Prompt | Skip:
        if keep is not None and not keep(row):
            return Skip("other_subset")
        text = get_field(row, prompt_field, where)
        return Prompt(text=text, source=name, meta={k: row.get(k) for k in meta_fields})

    return parse


def _harmbench_prompt(row: Row, where: str, name: str) -> Prompt:
    behavior = get_field(row, "Behavior", where)
    context = str(row.get("ContextString") or "").strip()
    text = f"{context}\n\n---\n\n{behavior}" if context else behavior
    meta = {k: row.get(k) for k in ("BehaviorID", "FunctionalCategory", "SemanticCategory")}
    return Prompt(text=text, source=name, meta=meta)


# ------------------------------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class Source:
    name: str
    kind: str  # "prompts", "responses" or "pairs"
    parse: Callable[[Row, str, str], Any]
    path: str | None = None  # default file under $SAFEPREF_DATA
    hub_id: str | None = None  # datasets hub id, used when no local path is given
    hub_split: str = "train"
    description: str = ""


def _xstest(label: str | None) -> Callable[[Row, str, str], Prompt | Skip]:
    keep = None if label is None else (lambda row: row.get("label") == label)
    return _prompt_parser("prompt", ("id", "type", "label", "focus"), keep)


def _known_sources(registry: Registry) -> str:
    """The known sources for an error: one line each, and what else a spec may be."""
    return (f"Known sources:\n{describe_sources()}\n"
            "or give a path to a .jsonl/.json/.csv/.parquet file")


# Name -> Source record (``SOURCES.load(name)`` returns it); unknown names fail with DataError listing them.
SOURCES: Registry = Registry("source", {
    s.name: s
    for s in [
        Source("pku-saferlhf", "pairs", _pku_hub_pair, hub_id="PKU-Alignment/PKU-SafeRLHF",
               description="PKU-SafeRLHF in its hub format (response_0/1, safer_response_id); safer = chosen"),
        Source("pku-paper", "pairs", _pku_paper_pair, path="saferlhf/paper_test.jsonl",
               description="the study's converted PKU-SafeRLHF test JSONL (500 rows, 391 prompts)"),
        Source("pku-realign", "pairs", _pku_realign_pair, path="saferlhf/pku_seferlhf_realign_dpo_5k.json",
               description="5,135 PKU-SafeRLHF pairs where exactly one answer is safe (Alpaca-7B answers)"),
        Source("pku-safe-sft", "responses", _response_parser("prompt", "response", "alpaca-7b"),
               path="saferlhf/pku_safe_sft.json", description="safe PKU-SafeRLHF answers"),
        Source("gpt4o", "responses", _response_parser("prompt", "response", "gpt-4o"),
               path="gpt4o/paper_test.jsonl", description="GPT-4o answers to PKU-SafeRLHF test prompts"),
        Source("gpt35-safety", "responses",
               _response_parser("instruction", "output", "gpt-3.5-turbo", input_field="input"),
               path="gpt35_safety/safety_only_data_Instructions.json",
               description="harmful instructions with gpt-3.5-turbo safe answers"),
        Source("hh-harmless", "pairs", _hh_pair, path="hh_rlhf/harmless-base-test.jsonl.gz",
               description="Anthropic hh-rlhf harmless-base test preferences"),
        Source("advbench", "prompts", _prompt_parser("goal", ("target",)),
               path="advbench/harmful_behaviors.csv", description="AdvBench harmful behaviours (520 goals)"),
        Source("harmbench", "prompts", _harmbench_prompt, path="harmbench/harmbench_behaviors_text_val.csv",
               description="HarmBench text behaviours, validation split"),
        Source("xstest", "prompts", _xstest(None), path="xstest/xstest_prompts.csv",
               description="XSTest, all 450 prompts"),
        Source("xstest-safe", "prompts", _xstest("safe"), path="xstest/xstest_prompts.csv",
               description="XSTest's 250 safe prompts (a safe model must answer them)"),
        Source("xstest-unsafe", "prompts", _xstest("unsafe"), path="xstest/xstest_prompts.csv",
               description="XSTest's 200 unsafe prompts"),
        Source("donotanswer", "prompts", _prompt_parser("prompt", ("intents",)), path="donotanswer",
               description="Do-Not-Answer harmful prompts (939, five risk areas)"),
    ]
}, known=_known_sources, error=DataError)


def describe_sources() -> str:
    return "\n".join(f"  {s.name:<14} {s.kind:<9} {s.description}" for s in SOURCES.values())


# -------------------------------------------------------------------------------------------- spec parsing


@dataclass
class SourceSpec:
    """A parsed spec: a registered ``name`` and/or a local ``path``, an optional row ``limit``."""

    raw: str
    name: str | None
    path: Path | None
    limit: int | None

    @property
    def label(self) -> str:
        return self.name or (self.path.stem if self.path else self.raw)


def parse_spec(spec: str) -> SourceSpec:
    """``name``, ``name:N``, ``name=path``, ``name=path:N``, ``path`` or ``path:N`` -> SourceSpec."""
    raw = spec
    limit = None
    match = re.fullmatch(r"(.*):(\d+)", spec)
    if match:
        spec, limit = match.group(1), int(match.group(2))
    name, path = None, None
    if "=" in spec:
        name, path_text = spec.split("=", 1)
        if not path_text.strip():
            # Path("") is the current folder: it would be read recursively.
            raise DataError(f"source '{raw}': the path after '=' is empty; give name=path/to/file_or_folder")
        path = Path(path_text)
    elif spec in SOURCES:
        name = spec
    elif "/" in spec or "." in Path(spec).name or Path(spec).exists():
        path = Path(spec)
    else:
        raise SOURCES.unknown(spec, spec)  # the whole spec: a file name may hold ':'
    if name is not None and name not in SOURCES:
        raise SOURCES.unknown(name, name)
    if limit is not None and limit <= 0:
        raise DataError(f"source '{raw}': the row limit must be positive")
    return SourceSpec(raw=raw, name=name, path=path, limit=limit)


def _rows(spec: SourceSpec) -> Iterator[tuple[str, Row]]:
    """Rows of a spec from its explicit path, its default file under $SAFEPREF_DATA, or the hub."""
    if spec.path is not None:
        yield from iter_rows(spec.path)
        return
    source = SOURCES[spec.name]  # type: ignore[index]
    if source.path is not None:
        yield from iter_rows(paths.data_file(source.path))
        return
    # A hub source given by name: the user's network (or HF cache) must provide it.
    try:
        from datasets import load_dataset

        dataset = load_dataset(source.hub_id, split=source.hub_split)
    except Exception as exc:  # noqa: BLE001 - any hub failure is reported the same way
        raise DataError(
            f"source '{spec.name}' lives on the hub ({source.hub_id}) and could not be loaded "
            f"({type(exc).__name__}: {str(exc)[:200]}). Offline, give a local copy: "
            f"'{spec.name}=path/to/folder_or_file'"
        ) from None
    for index, row in enumerate(dataset):
        yield f"{source.hub_id}[{index}]", row


# ---------------------------------------------------------------------------------------------- loaders


def _load(spec_text: str, kind: str, fields: dict[str, str] | None = None) -> tuple[list[Any], LoadReport]:
    spec = parse_spec(spec_text)
    report = LoadReport(source=spec.raw)
    if spec.name is not None:
        source = SOURCES[spec.name]
        parse = source.parse
        source_kind = source.kind
    else:
        parse, source_kind = _plain_parser(kind, fields or {})
    records = []
    for where, row in _rows(spec):
        report.rows += 1
        record = parse(row, where, spec.label)
        if isinstance(record, Skip):
            report.dropped[record.reason] += 1
            continue
        records.append(record)
        if spec.limit is not None and len(records) >= spec.limit:
            break
    report.kept = len(records)
    if source_kind != kind:
        records = _convert(records, source_kind, kind, spec.raw)
    return records, report


def _plain_parser(kind: str, fields: dict[str, str]) -> tuple[Callable, str]:
    prompt_field = fields.get("prompt", "prompt")
    if kind == "prompts":
        return _prompt_parser(prompt_field), "prompts"
    if kind == "responses":
        return _response_parser(prompt_field, fields.get("response", "response")), "responses"

    chosen_field, rejected_field = fields.get("chosen", "chosen"), fields.get("rejected", "rejected")

    def parse_pair(row: Row, where: str, name: str) -> PreferencePair:
        # Either safepref's own pair records (message lists) or plain text columns.
        if isinstance(row.get(chosen_field), list):
            from safepref.records import from_dict

            if "chosen_meta" in row:
                return from_dict("pair", row, where)
            return _pku_paper_pair(row, where, name)
        return _pair(get_field(row, prompt_field, where), get_field(row, chosen_field, where),
                     get_field(row, rejected_field, where), name)

    return parse_pair, "pairs"


def _convert(records: list[Any], have: str, want: str, label: str) -> list[Any]:
    """Pairs can serve as prompts (their prompts) or responses (their chosen side); nothing else converts."""
    if have == "pairs" and want == "prompts":
        return [Prompt(text=p.prompt_text, source=label, prompt_id=p.prompt_id) for p in records]
    if have == "responses" and want == "prompts":
        return [Prompt(text=r.prompt, source=label, prompt_id=r.prompt_id) for r in records]
    if have == "pairs" and want == "responses":
        return [Response(prompt=p.prompt_text, response=p.chosen_text, source=p.chosen_meta["source"],
                         prompt_id=p.prompt_id) for p in records]
    raise DataError(f"source '{label}' holds {have}, but {want} are needed here")


def load_prompts(spec: str, fields: dict[str, str] | None = None) -> tuple[list[Prompt], LoadReport]:
    """Unique prompts of a source (duplicates by ``prompt_id`` merged and counted as ``duplicate_prompt``).

    Raises DataError when the source yields no prompt.
    """
    records, report = _load(spec, "prompts", fields)
    unique: dict[str, Prompt] = {}
    for record in records:
        if record.prompt_id in unique:
            report.dropped["duplicate_prompt"] += 1
        else:
            unique[record.prompt_id] = record
    report.kept = len(unique)
    if not unique:
        raise DataError(f"source '{spec}' has no prompts")
    return list(unique.values()), report


def load_responses(spec: str, fields: dict[str, str] | None = None) -> tuple[list[Response], LoadReport]:
    records, report = _load(spec, "responses", fields)
    if not records:
        raise DataError(f"source '{spec}' has no responses")
    return records, report


def load_pairs(spec: str, fields: dict[str, str] | None = None) -> tuple[list[PreferencePair], LoadReport]:
    records, report = _load(spec, "pairs", fields)
    if not records:
        raise DataError(f"source '{spec}' has no preference pairs")
    return records, report


# ---------------------------------------------------------------------------------------------- splits


def split_of(prompt_id_: str, fractions: dict[str, float], seed: int = 0) -> str:
    """Deterministic split for a prompt: the same prompt always lands in the same split.

    A prompt's position in [0, 1) is a hash of (seed, prompt_id); splits take consecutive intervals in
    the order given. ``fractions`` must sum to 1.
    """
    if abs(sum(fractions.values()) - 1.0) > 1e-9:
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    digest = hashlib.sha256(f"{seed}:{prompt_id_}".encode()).hexdigest()
    position = int(digest[:15], 16) / 16**15
    edge = 0.0
    for name, fraction in fractions.items():
        edge += fraction
        if position < edge:
            return name
    return list(fractions)[-1]


def split_by_prompt(records: list[Any], fractions: dict[str, float], seed: int = 0) -> dict[str, list[Any]]:
    """Split any records with a ``prompt_id`` so that no prompt is in two splits."""
    out: dict[str, list[Any]] = {name: [] for name in fractions}
    for record in records:
        out[split_of(record.prompt_id, fractions, seed)].append(record)
    return out
