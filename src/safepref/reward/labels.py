"""Labelled safety answers, (prompt, response, safe?), and the preference pairs they imply.

Sources: ``safety-labels`` (GuardReasoner's copies of PKU-SafeRLHF and BeaverTails under ``$SAFEPREF_DATA``),
``safety-labels-saferlhf``, ``safety-labels-beavertails``, or a file of GuardReasoner rows or plain
``prompt``/``response``/``label`` rows. ``label_pairs`` turns a safe and an unsafe answer to the same prompt
into a pair (chosen = the safe one), which the fine-tuned reward model trains on.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safepref import paths
from safepref.errors import DataError
from safepref.records import PreferencePair, prompt_id


@dataclass
class LabelledResponse:
    prompt: str
    response: str
    safe: bool
    source: str
    prompt_id: str = ""

    def __post_init__(self) -> None:
        if not self.prompt_id:
            self.prompt_id = prompt_id(self.prompt)


# name -> files under $SAFEPREF_DATA (GuardReasoner format)
LABEL_SOURCES: dict[str, tuple[str, ...]] = {
    "safety-labels": ("safety_labels/0_9_safe_rlhf.json", "safety_labels/0_A_beaver_tails.json"),
    "safety-labels-saferlhf": ("safety_labels/0_9_safe_rlhf.json",),
    "safety-labels-beavertails": ("safety_labels/0_A_beaver_tails.json",),
}
_SAFE_WORDS = {"safe": True, "unharmful": True, "harmless": True, "unsafe": False, "harmful": False}


def load_labelled(spec: str) -> list[LabelledResponse]:
    """Labelled answers from a registered name (``safety-labels``, optionally ``:N``) or a file.

    A file is GuardReasoner's format (``input`` = "Human user:\\n…\\n\\nAI assistant:\\n…", ``output`` ending in
    "Response: harmful|unharmful") or plain rows with ``prompt``, ``response`` and ``label`` (safe/unsafe,
    harmful/unharmful, or ``harmful`` = 1/0). Raises DataError naming the file and row.
    """
    from safepref.sources.tables import iter_rows

    text, _, limit_text = spec.rpartition(":") if spec.rpartition(":")[2].isdigit() else (spec, "", "")
    limit = int(limit_text) if limit_text else None
    if text in LABEL_SOURCES:
        files = [paths.data_file(f) for f in LABEL_SOURCES[text]]
    elif "/" in text or "." in Path(text).name:
        files = [Path(text)]
    else:
        raise DataError(f"unknown labelled source '{text}'; known: {', '.join(LABEL_SOURCES)}, or a file path")
    out: list[LabelledResponse] = []
    for file in files:
        for where, row in iter_rows(file):
            out.append(_labelled_row(row, where, Path(file).stem))
            if limit is not None and len(out) >= limit:
                return out
    if not out:
        raise DataError(f"labelled source '{spec}' holds no rows")
    return out


def _labelled_row(row: dict[str, Any], where: str, source: str) -> LabelledResponse:
    if "input" in row and "output" in row:
        body = str(row["input"])
        if "\n\nAI assistant:\n" not in body:
            raise DataError(f"{where}: field 'input' lacks the '\\n\\nAI assistant:\\n' separator")
        human, response = body.split("\n\nAI assistant:\n", 1)
        prompt = human.removeprefix("Human user:\n").strip()
        verdict = str(row["output"]).strip().splitlines()[-1].strip().lower()
        if not verdict.startswith("response:"):
            raise DataError(f"{where}: field 'output' must end with 'Response: harmful|unharmful'")
        label = verdict.removeprefix("response:").strip()
    else:
        for name in ("prompt", "response"):
            if not isinstance(row.get(name), str) or not row[name].strip():
                raise DataError(f"{where}: missing or empty field '{name}'")
        prompt, response = row["prompt"], row["response"]
        if "label" in row:
            label = str(row["label"]).strip().lower()
        elif "harmful" in row:
            label = "harmful" if str(row["harmful"]).strip().lower() in ("1", "true") else "unharmful"
        else:
            raise DataError(f"{where}: needs a 'label' (safe/unsafe) or 'harmful' (1/0) field")
    if label not in _SAFE_WORDS:
        raise DataError(f"{where}: label {label!r} is not one of safe, unsafe, harmful, unharmful")
    if not response.strip() or not prompt.strip():
        raise DataError(f"{where}: empty prompt or response")
    return LabelledResponse(prompt=prompt, response=response.strip(), safe=_SAFE_WORDS[label], source=source)


def label_pairs(items: list[LabelledResponse]) -> list[PreferencePair]:
    """Pairs (safe answer chosen, unsafe answer rejected) from labelled answers to the same prompt.

    The i-th safe answer of a prompt is paired with its i-th unsafe answer (file order), so each answer is
    used once: min(safe, unsafe) pairs a prompt. Prompts with answers of one label only give none.
    """
    by_prompt: dict[str, tuple[list[LabelledResponse], list[LabelledResponse]]] = defaultdict(lambda: ([], []))
    for item in items:
        by_prompt[item.prompt_id][0 if item.safe else 1].append(item)
    pairs = []
    for pid, (safe, unsafe) in by_prompt.items():
        for good, bad in zip(safe, unsafe, strict=False):
            pairs.append(PreferencePair(
                prompt=[{"role": "user", "content": good.prompt}],
                chosen=[{"role": "assistant", "content": good.response}],
                rejected=[{"role": "assistant", "content": bad.response}],
                chosen_meta={"source": {"kind": "dataset", "name": good.source, "label": "safe"}},
                rejected_meta={"source": {"kind": "dataset", "name": bad.source, "label": "unsafe"}},
                prompt_id=pid, recipe="labels"))
    return pairs
