"""Training data of the reward models: load the sources, drop evaluation prompts, split by prompt.

Both trainers (``offline.py``: a head on frozen embeddings; ``finetuned.py``: a whole sequence classifier) read
their data here, so they see the same prompts in the same splits: ``safepref.sources.split_of`` hashes the
prompt id with the seed, and a prompt lands in one split whatever source it comes from. Prompts of the
``exclude`` sources (evaluation sets such as hh-harmless, matched on every user turn) are never trained on.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from safepref.records import PreferencePair
from safepref.reward import user_turn_ids
from safepref.reward.labels import LabelledResponse, load_labelled

SPLITS = ("train", "dev", "test")


@dataclass
class Split:
    pairs: list[PreferencePair]
    labelled: list[LabelledResponse]


def excluded_prompt_ids(specs: list[str]) -> set[str]:
    """Prompt ids of every prompt (and every user turn of a dialogue) of the ``specs`` sources."""
    from safepref.sources import SOURCES, load_pairs, load_prompts, parse_spec

    excluded: set[str] = set()
    for spec in specs:
        parsed = parse_spec(spec)
        if parsed.name is not None and SOURCES[parsed.name].kind == "prompts":
            excluded.update(p.prompt_id for p in load_prompts(spec)[0])
        else:
            for pair in load_pairs(spec)[0]:
                excluded.update(user_turn_ids(pair))
    return excluded


def split_sources(pairs: list[str], labels: list[str], exclude: list[str], fractions: dict[str, float],
                  seed: int, limit: int | None, report: dict[str, Any]) -> dict[str, Split]:
    """Load every source (at most ``limit`` rows each), drop excluded prompts, split by prompt.

    Counts per source and split (and the excluded rows) go into ``report["data"]``: nothing is dropped
    without a count.
    """
    from safepref.sources import load_pairs, split_of

    excluded = excluded_prompt_ids(exclude)
    splits = {name: Split([], []) for name in SPLITS}
    counts: dict[str, Counter] = {}
    for spec in pairs:
        counter = counts.setdefault(f"pairs:{spec}", Counter())
        for pair in load_pairs(spec)[0][:limit]:
            if user_turn_ids(pair) & excluded:
                counter["excluded_eval_prompt"] += 1
                continue
            split = split_of(pair.prompt_id, fractions, seed)
            counter[split] += 1
            splits[split].pairs.append(pair)
    for spec in labels:
        counter = counts.setdefault(f"labels:{spec}", Counter())
        for item in load_labelled(spec)[:limit]:
            if item.prompt_id in excluded:
                counter["excluded_eval_prompt"] += 1
                continue
            split = split_of(item.prompt_id, fractions, seed)
            counter[split] += 1
            splits[split].labelled.append(item)
    report["data"] = {k: dict(v) for k, v in counts.items()}
    report["excluded_prompt_ids"] = len(excluded)
    return splits


def seen_prompt_ids(splits: dict[str, Split]) -> set[str]:
    """Ids of every prompt a model trained on these splits saw (train and dev): ``rm eval`` drops them."""
    seen = {i for name in ("train", "dev") for p in splits[name].pairs for i in user_turn_ids(p)}
    seen |= {item.prompt_id for name in ("train", "dev") for item in splits[name].labelled}
    return seen
