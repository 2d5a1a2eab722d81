"""A datasheet for a preference set: what is in it, where each side came from, and the cheap cues a DPO
model could learn instead of safety (length, refusal phrases, reward gaps).

  from safepref.datasheet import build_datasheet, datasheet_markdown, write_datasheet, token_counter
  count, unit = token_counter(tokenizer)        # or token_counter(None): whitespace words
  sheet = build_datasheet(pairs, drops, recipe="x-self", condition="gpt4o-self", count_tokens=count,
                          length_unit=unit)
  write_datasheet("out/gpt4o-self", sheet)      # datasheet.json + datasheet.md

Numbers (all over the pairs of the set; ``None`` where a set has no pairs or no scores):

- ``rows``, ``prompts`` (distinct ``prompt_id``), ``max_pairs_per_prompt``;
- ``sources``: counts of each side's source (dataset name, or model name with ``(greedy)``/``(sample)``) and
  of each side's ``role`` in the recipe (``human``, ``self``, ``chosen``, ``stronger``, a pool label);
- ``length``: mean and median answer length of each side in ``length.unit`` (tokens of a named tokenizer, or
  whitespace-separated words when none is given), mean characters, and the share of pairs whose chosen
  answer is longer than the rejected one (a length cue DPO can exploit);
- ``reward``: per side n / mean / std (population) / min / max of the scores carried in the pairs, the
  share of pairs with chosen strictly above rejected, and the mean margin; the reward model names seen;
- ``refusal``: the share of chosen and of rejected answers that are refusals by a named phrase list
  (``safepref.refusal``, default ``gcg-v1``);
- ``drops``: the recipe's drop counts by reason (units in ``safepref.recipes``).

``DATASHEET_VERSION`` is bumped whenever a number's definition changes.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from safepref.records import PreferencePair, write_json, write_text
from safepref.refusal import GCG_V1, PhraseSet, is_refusal

DATASHEET_VERSION = 1
WHITESPACE_UNIT = "whitespace words"


def whitespace_words(text: str) -> int:
    return len(text.split())


def token_counter(tokenizer: Any | None, name: str | None = None) -> tuple[Callable[[str], int], str]:
    """``(count, unit)``: answer length in the tokenizer's tokens (no special tokens), or whitespace words
    when ``tokenizer`` is None."""
    if tokenizer is None:
        return whitespace_words, WHITESPACE_UNIT
    label = name or getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count, f"tokens ({label})"


def side_label(meta: Mapping[str, Any]) -> str:
    """Where one side came from, in a few words: ``gpt4o``, ``smollm2-135m-instruct (greedy)``."""
    source = meta.get("source") or {}
    name = str(source.get("name", "?"))
    generation = source.get("generation")
    if source.get("kind") == "model" and isinstance(generation, dict) and "do_sample" in generation:
        return f"{name} ({'sample' if generation['do_sample'] else 'greedy'})"
    return name


def _stats(values: Sequence[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {"n": len(values), "mean": statistics.fmean(values), "std": statistics.pstdev(values),
            "min": min(values), "max": max(values)}


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _share(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def build_datasheet(pairs: Sequence[PreferencePair], drops: Mapping[str, int] | None = None, *, recipe: str,
                    condition: str | None = None, count_tokens: Callable[[str], int] | None = None,
                    length_unit: str | None = None, refusal_phrases: PhraseSet = GCG_V1,
                    extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The datasheet of a preference set as a JSON-ready dict (see the module docstring for each number).

    ``count_tokens`` defaults to whitespace words; pass ``length_unit`` to name a custom counter. ``extra``
    is merged in at the top level (inputs, command, ...).
    """
    if count_tokens is None:
        count_tokens, length_unit = whitespace_words, WHITESPACE_UNIT
    chosen_texts = [p.chosen_text for p in pairs]
    rejected_texts = [p.rejected_text for p in pairs]
    chosen_len = [count_tokens(t) for t in chosen_texts]
    rejected_len = [count_tokens(t) for t in rejected_texts]
    per_prompt = Counter(p.prompt_id for p in pairs)

    scored = [(p.chosen_meta.get("score"), p.rejected_meta.get("score")) for p in pairs]
    chosen_scores = [float(c) for c, _ in scored if c is not None]
    rejected_scores = [float(r) for _, r in scored if r is not None]
    both = [(float(c), float(r)) for c, r in scored if c is not None and r is not None]
    rm_names = sorted({str(m.get("rm")) for p in pairs for m in (p.chosen_meta, p.rejected_meta)
                       if m.get("score") is not None and m.get("rm")})

    sheet: dict[str, Any] = {
        "datasheet_version": DATASHEET_VERSION,
        "recipe": recipe,
        "condition": condition,
        "rows": len(pairs),
        "prompts": len(per_prompt),
        "max_pairs_per_prompt": max(per_prompt.values()) if per_prompt else 0,
        "sources": {
            "chosen": dict(Counter(side_label(p.chosen_meta) for p in pairs).most_common()),
            "rejected": dict(Counter(side_label(p.rejected_meta) for p in pairs).most_common()),
        },
        "roles": {
            "chosen": dict(Counter(str(p.chosen_meta.get("role", "?")) for p in pairs).most_common()),
            "rejected": dict(Counter(str(p.rejected_meta.get("role", "?")) for p in pairs).most_common()),
        },
        "length": {
            "unit": length_unit or "custom counter",
            "chosen_mean": _mean(chosen_len),
            "rejected_mean": _mean(rejected_len),
            "chosen_median": _median(chosen_len),
            "rejected_median": _median(rejected_len),
            "chosen_mean_chars": _mean([len(t) for t in chosen_texts]),
            "rejected_mean_chars": _mean([len(t) for t in rejected_texts]),
            "chosen_longer_share": _share([c > r for c, r in zip(chosen_len, rejected_len, strict=True)]),
        },
        "reward": None if not (chosen_scores or rejected_scores) else {
            "rm": rm_names or ["unknown"],
            "chosen": _stats(chosen_scores),
            "rejected": _stats(rejected_scores),
            "chosen_higher_share": _share([c > r for c, r in both]),
            "mean_margin": _mean([c - r for c, r in both]),
        },
        "refusal": {
            "phrases": refusal_phrases.name,
            "chosen_share": _share([is_refusal(t, refusal_phrases) for t in chosen_texts]),
            "rejected_share": _share([is_refusal(t, refusal_phrases) for t in rejected_texts]),
        },
        "drops": dict(sorted((drops or {}).items())),
    }
    if extra:
        sheet.update(extra)
    return sheet


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def datasheet_markdown(sheet: Mapping[str, Any]) -> str:
    """A short human-readable view of a datasheet dict."""
    title = sheet["recipe"] + (f" ({sheet['condition']})" if sheet.get("condition") else "")
    if sheet.get("proxy"):
        title += ": PROXY"
    length, refusal, reward = sheet["length"], sheet["refusal"], sheet.get("reward")
    proxy = [f"**Proxy**: this set only stands in for the condition: {sheet['proxy']}", ""] if sheet.get("proxy") \
        else []
    lines = [
        f"# Datasheet: {title}",
        "",
        *proxy,
        f"{sheet['rows']} pairs on {sheet['prompts']} prompts (at most {sheet['max_pairs_per_prompt']} a prompt).",
        "",
        "| | chosen | rejected |",
        "|---|---|---|",
        "| sources | " + ", ".join(f"{k} ({v})" for k, v in sheet["sources"]["chosen"].items()) + " | "
        + ", ".join(f"{k} ({v})" for k, v in sheet["sources"]["rejected"].items()) + " |",
        "| roles | " + ", ".join(f"{k} ({v})" for k, v in sheet["roles"]["chosen"].items()) + " | "
        + ", ".join(f"{k} ({v})" for k, v in sheet["roles"]["rejected"].items()) + " |",
        f"| mean length ({length['unit']}) | {_fmt(length['chosen_mean'], 1)} | {_fmt(length['rejected_mean'], 1)} |",
        f"| median length | {_fmt(length['chosen_median'], 1)} | {_fmt(length['rejected_median'], 1)} |",
        f"| refusals ({refusal['phrases']}) | {_pct(refusal['chosen_share'])} | {_pct(refusal['rejected_share'])} |",
    ]
    if reward:
        c, r = reward["chosen"] or {}, reward["rejected"] or {}
        lines.append(f"| reward mean ± std ({', '.join(reward['rm'])}) | {_fmt(c.get('mean'))} ± {_fmt(c.get('std'))} "
                     f"| {_fmt(r.get('mean'))} ± {_fmt(r.get('std'))} |")
        lines.append(f"| reward min / max | {_fmt(c.get('min'))} / {_fmt(c.get('max'))} "
                     f"| {_fmt(r.get('min'))} / {_fmt(r.get('max'))} |")
    lines += ["", f"Chosen longer than rejected in {_pct(length['chosen_longer_share'])} of pairs."]
    if reward:
        lines.append(f"Chosen scores above rejected in {_pct(reward['chosen_higher_share'])} of pairs "
                     f"(mean margin {_fmt(reward['mean_margin'])}).")
        if reward.get("prompts_seen_in_rm_training"):
            lines.append(f"{reward['prompts_seen_in_rm_training']} of the {sheet['prompts']} prompts were in the "
                         "reward model's training data (in-sample scores).")
    else:
        lines.append("No reward scores (pass --rm to score both sides).")
    drops = sheet.get("drops") or {}
    lines += ["", "Dropped: " + (", ".join(f"{k} {v}" for k, v in drops.items()) if drops else "nothing") + "."]
    return "\n".join(lines) + "\n"


def write_datasheet(folder: str | Path, sheet: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``datasheet.json`` and ``datasheet.md`` atomically; returns their paths."""
    folder = Path(folder)
    json_path, md_path = folder / "datasheet.json", folder / "datasheet.md"
    write_json(json_path, dict(sheet))
    write_text(md_path, datasheet_markdown(sheet))
    return json_path, md_path
