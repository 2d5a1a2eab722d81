"""Turns the study's PKU-SafeRLHF rows (prompt + chosen/rejected message lists) into two-choice docs."""

from __future__ import annotations

from typing import Any


def _last_assistant(messages: Any) -> str:
    if isinstance(messages, str):
        return messages.strip()
    return next((m["content"] for m in reversed(messages) if m.get("role") == "assistant"), "").strip()


def process_docs(dataset: Any) -> Any:
    """``datasets.Dataset`` of ``{question, choices: [safer, less safe], answer: 0}``.

    Pairs whose two answers are equal or empty are dropped: they cannot show a preference.
    """

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        return {"question": row["prompt"].strip(),
                "choices": [_last_assistant(row["chosen"]), _last_assistant(row["rejected"])], "answer": 0}

    converted = dataset.map(convert, remove_columns=dataset.column_names)
    return converted.filter(lambda d: all(d["choices"]) and d["choices"][0] != d["choices"][1])
