"""The report's statistics, from the per-answer verdicts each evaluation keeps in the run folder.

Every rate is computed from the answers themselves (``jailbreak*/judgments/<judge>.jsonl`` and
``refusal/refusals.jsonl`` of each ``eval/`` stage), not copied from a metrics file, so that it can come with
an interval and be compared with another condition's answers to the *same* prompts:

- ``rates``: per condition and metric, the rate with a 95% interval and n: Wilson for one seed, a bootstrap
  over prompts and seeds when seeds are pooled (then also each seed's Wilson interval);
- ``comparisons``: every condition against SFT and against Self+RM: the difference of rates with a paired
  bootstrap interval over prompts and seeds, an exact McNemar p-value per seed, and Holm-adjusted p-values
  over each metric's comparisons (the family), within each seed;
- ``separability``: Spearman's rho between each set's best audit AUC and its pooled ASR, permutation p, n;
- ``monitor``: each training run's steps and pairs, and the first step at which reward accuracy, averaged
  over at least ``MIN_PAIRS`` pairs, passes 0.95.

Metric keys (``metric``): ``asr/<set>/<judge>`` (``<set>`` is the eval folder: ``jailbreak`` for the study's
set, ``jailbreak-<name>`` for others, ``pooled`` for all sets together), ``over_refusal/<detector>`` (safe
XSTest prompts refused) and ``compliance/<detector>`` (unsafe XSTest prompts not refused).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from safepref import stats
from safepref.records import iter_jsonl

MIN_PAIRS = 64  # reward accuracy is averaged over at least this many training pairs before it can count
BASELINES = ("sft", "self-rm")

# outcomes[metric][condition][seed] = {unit: 0 or 1}; a unit is a prompt (``(set, prompt_id, sample)``)
Outcomes = dict[str, dict[str, dict[int, dict[tuple, int]]]]


# --------------------------------------------------------------------------------------------- reading


def read_outcomes(eval_dir: Path) -> dict[str, dict[tuple, int]]:
    """Per-answer 0/1 outcomes of one evaluation folder, by metric; undecided answers are left out."""
    out: dict[str, dict[tuple, int]] = {}
    for folder in sorted(eval_dir.glob("jailbreak*")):
        metrics_file = folder / "metrics.json"
        if not metrics_file.exists():
            continue
        entries = (json.loads(metrics_file.read_text()).get("judges") or {})
        for judge, entry in entries.items():
            file = folder / entry.get("file", "")
            if not file.is_file():
                continue
            units = {(folder.name, row["prompt_id"], row.get("sample_index", 0)): int(bool(row["harmful"]))
                     for _, row in iter_jsonl(file) if row.get("harmful") is not None}
            out[f"asr/{folder.name}/{judge}"] = units
            out.setdefault(f"asr/pooled/{judge}", {}).update(units)
    refusals = eval_dir / "refusal" / "refusals.jsonl"
    if refusals.is_file():
        for _, row in iter_jsonl(refusals):
            for detector, refused in (row.get("refusal") or {}).items():
                if refused is None:
                    continue
                if row.get("label") == "safe":
                    out.setdefault(f"over_refusal/{detector}", {})[("xstest", row["prompt_id"])] = int(refused)
                elif row.get("label") == "unsafe":
                    out.setdefault(f"compliance/{detector}", {})[("xstest", row["prompt_id"])] = int(not refused)
    # "pooled" only means something with more than one set
    sets = {m.split("/")[1] for m in out if m.startswith("asr/") and not m.startswith("asr/pooled/")}
    if len(sets) < 2:
        out = {m: u for m, u in out.items() if not m.startswith("asr/pooled/")}
    return out


def gather(eval_dirs: dict[str, dict[int, Path]]) -> Outcomes:
    """``eval_dirs[condition][seed]`` -> outcomes[metric][condition][seed]."""
    outcomes: Outcomes = {}
    for condition, by_seed in eval_dirs.items():
        for seed, folder in by_seed.items():
            for metric, units in read_outcomes(folder).items():
                outcomes.setdefault(metric, {}).setdefault(condition, {})[seed] = units
    return outcomes


def _matrix(by_seed: dict[int, dict[tuple, int]], units: list[tuple], seeds: list[int]) -> np.ndarray:
    """(units, seeds) matrix, NaN where a seed has no outcome for a unit."""
    m = np.full((len(units), len(seeds)), np.nan)
    for j, seed in enumerate(seeds):
        answers = by_seed.get(seed, {})
        for i, unit in enumerate(units):
            if unit in answers:
                m[i, j] = answers[unit]
    return m


# ----------------------------------------------------------------------------------------------- rates


def rate_of(by_seed: dict[int, dict[tuple, int]]) -> dict[str, Any]:
    """Wilson for one seed; bootstrap over prompts and seeds (and each seed's Wilson) for several."""
    seeds = sorted(by_seed)
    per_seed = {str(s): stats.rate_entry(sum(by_seed[s].values()), len(by_seed[s])) for s in seeds}
    if len(seeds) == 1:
        return {**per_seed[str(seeds[0])], "seeds": seeds}
    units = sorted(set().union(*by_seed.values()))
    entry = stats.bootstrap_rate(_matrix(by_seed, units, seeds))
    return {**entry, "seeds": seeds, "per_seed": per_seed}


def rates(outcomes: Outcomes) -> dict[str, dict[str, Any]]:
    """rates[condition][metric] = rate entry."""
    table: dict[str, dict[str, Any]] = {}
    for metric, by_condition in outcomes.items():
        for condition, by_seed in by_condition.items():
            table.setdefault(condition, {})[metric] = rate_of(by_seed)
    return table


# ----------------------------------------------------------------------------------------- comparisons


def compare(a: dict[int, dict[tuple, int]], b: dict[int, dict[tuple, int]]) -> dict[str, Any]:
    """Condition ``a`` minus ``b`` on the units both answered: paired bootstrap over prompts and seeds,
    exact McNemar per seed. A baseline with one evaluation (SFT: greedy, the same in every seed) is paired
    with every seed of ``a``."""
    seeds = sorted(a)
    b = {s: b[s] if s in b else b[min(b)] for s in seeds} if len(b) == 1 else b
    seeds = [s for s in seeds if s in b]
    units = sorted(set().union(*(a[s].keys() & b[s].keys() for s in seeds))) if seeds else []
    if not units:
        return {"difference": None, "ci95": None, "n": 0, "mcnemar": {}}
    diff = stats.paired_bootstrap_diff(_matrix(a, units, seeds), _matrix(b, units, seeds))
    mcnemar = {}
    for s in seeds:
        shared = sorted(a[s].keys() & b[s].keys())
        mcnemar[str(s)] = stats.mcnemar_exact([a[s][u] for u in shared], [b[s][u] for u in shared])
    return {**diff, "seeds": seeds, "mcnemar": mcnemar}


def comparisons(outcomes: Outcomes, conditions: list[str]) -> list[dict[str, Any]]:
    """Every condition against each baseline present, for every metric; Holm within each metric."""
    rows: list[dict[str, Any]] = []
    for metric, by_condition in outcomes.items():
        family = []
        for baseline in BASELINES:
            if baseline not in by_condition:
                continue
            for condition in conditions:
                if condition == baseline or condition not in by_condition:
                    continue
                if baseline == "self-rm" and condition == "sft":
                    continue  # already in the table as self-rm against sft
                row = {"metric": metric, "condition": condition, "baseline": baseline,
                       **compare(by_condition[condition], by_condition[baseline])}
                family.append(row)
        # Holm over the table's comparisons, within each seed (each seed is one replicate of the experiment)
        for seed in sorted({s for row in family for s in row.get("mcnemar", {})}):
            tests = [row for row in family if seed in row.get("mcnemar", {})]
            adjusted = stats.holm([row["mcnemar"][seed]["p"] for row in tests])
            for row, p in zip(tests, adjusted, strict=True):
                row["mcnemar"][seed]["p_holm"] = p
        for row in family:
            row["holm_family"] = len(family)
            row["holm_significant_seeds"] = sum(1 for t in row.get("mcnemar", {}).values() if t["p_holm"] < 0.05)
        rows += family
    return rows


# ------------------------------------------------------------------------------------- separability, monitor


def separability(points: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """Spearman of best probe AUC against ASR over the sets (``points[condition] = (auc, asr)``)."""
    names = sorted(points)
    result = stats.spearman_permutation([points[c][0] for c in names], [points[c][1] for c in names])
    return {**result, "conditions": names}


def monitor_row(train_summary: dict[str, Any] | None, curve: list[tuple[int, float]],
                threshold: float = 0.95, min_pairs: int = MIN_PAIRS) -> dict[str, Any]:
    """Steps and pairs of one training run and its smoothed saturation step (``None`` fields when absent)."""
    from safepref.train.monitor import first_step_above_pairs

    training = (train_summary or {}).get("training") or {}
    pairs = ((train_summary or {}).get("pairs") or {}).get("trained")
    batch = training.get("global_batch")
    steps = training.get("steps")
    result: dict[str, Any] = {"pairs": pairs, "steps": steps, "global_batch": batch,
                              "epochs": training.get("epochs"),
                              "pairs_seen": steps * batch if steps and batch else None,
                              "threshold": threshold, "min_pairs": min_pairs}
    if curve and batch:
        found = first_step_above_pairs([s for s, _ in curve], [v for _, v in curve], batch, threshold, min_pairs)
        result.update(found)
    return result


def finite(value: Any) -> Any:
    """NaN-free copy for JSON (NaN and infinities become None)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
