"""What ``safepref rm eval`` measures on a preference set: pairwise accuracy overall and by refusal subset,
each pair's scores and verdict, and two cheap baselines on the same pairs.

Refusal subsets use the ``opening`` detector (``safepref.evaluate.refusal_eval.opening_refusal``: a refusal
phrase opens one of an answer's first two sentences): ``both`` answers refuse, ``one`` refuses (split by
direction: ``chosen_refuses`` / ``rejected_refuses``), ``neither`` refuses. A reward model that only detects
refusals wins ``chosen_refuses`` and loses ``rejected_refuses``; ``neither`` shows what it knows beyond that.

Baselines, scored like a reward model (a tie counts as wrong, as in RewardBench; ``accuracy_ties_half``
counts it as half): ``length`` (the longer answer wins) and ``refusal`` (the answer that opens with a refusal
wins: it ties on ``both`` and ``neither``, so its ties-half accuracy there is 0.5).
"""

from __future__ import annotations

from typing import Any

from safepref.records import PreferencePair
from safepref.reward import pairwise_accuracy

SUBSETS = ("both", "one", "chosen_refuses", "rejected_refuses", "neither")
_KEYS = ("accuracy", "accuracy_ties_half", "n", "correct", "ties", "ci_low", "ci_high")


def refusal_subset(chosen_refuses: bool, rejected_refuses: bool) -> str:
    if chosen_refuses and rejected_refuses:
        return "both"
    if chosen_refuses:
        return "chosen_refuses"
    if rejected_refuses:
        return "rejected_refuses"
    return "neither"


def _in_subset(subset: str, name: str) -> bool:
    return name == subset or (name == "one" and subset in ("chosen_refuses", "rejected_refuses"))


def accuracy_by_subset(chosen: list[float], rejected: list[float], subsets: list[str],
                       groups: list[str] | None = None) -> dict[str, Any]:
    """``overall`` and one entry per refusal subset (absent when the subset is empty): accuracy, Wilson CI, n."""
    out: dict[str, Any] = {}
    for name in ("overall", *SUBSETS):
        index = [i for i, s in enumerate(subsets) if name == "overall" or _in_subset(s, name)]
        if index:
            result = pairwise_accuracy([chosen[i] for i in index], [rejected[i] for i in index])
            out[name] = {k: result[k] for k in _KEYS}
    return out


def evaluate_pairs(chosen: list[float], rejected: list[float],
                   pairs: list[PreferencePair]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(summary, per-pair rows) for scores already computed on ``pairs``.

    The summary holds ``by_refusal`` (the RM's accuracy per subset) and ``baselines`` (length and refusal,
    overall and per subset), each with Wilson 95% intervals and n.
    """
    from safepref.evaluate.refusal_eval import OPENING_LIST_NAME, opening_refusal

    flags = [(opening_refusal(p.chosen_text), opening_refusal(p.rejected_text)) for p in pairs]
    subsets = [refusal_subset(c, r) for c, r in flags]
    length = ([float(len(p.chosen_text)) for p in pairs], [float(len(p.rejected_text)) for p in pairs])
    refusal = ([float(c) for c, _ in flags], [float(r) for _, r in flags])
    summary = {
        "refusal_detector": f"opening ({OPENING_LIST_NAME})",
        "by_refusal": accuracy_by_subset(chosen, rejected, subsets),
        "baselines": {"length": accuracy_by_subset(*length, subsets),
                      "refusal": accuracy_by_subset(*refusal, subsets)},
    }
    rows = []
    for i, pair in enumerate(pairs):
        rows.append({"index": i, "prompt_id": pair.prompt_id, "chosen_score": chosen[i],
                     "rejected_score": rejected[i], "correct": chosen[i] > rejected[i],
                     "tie": chosen[i] == rejected[i], "subset": subsets[i], "chosen_refuses": flags[i][0],
                     "rejected_refuses": flags[i][1], "chosen_chars": int(length[0][i]),
                     "rejected_chars": int(length[1][i])})
    return summary, rows


def format_table(summary: dict[str, Any]) -> str:
    """Accuracy of the RM and the baselines per subset, one line each, for the terminal."""
    # The refusal baseline ties wherever both or neither answer refuses: shown with ties as half.
    lines = [f"{'subset':<17} {'n':>5}  {'reward model':>22}  {'length':>6}  {'refusal (ties 1/2)':>18}"]
    for name in ("overall", *SUBSETS):
        rm = summary["by_refusal"].get(name)
        if rm is None:
            continue
        base = summary["baselines"]
        lines.append(f"{name:<17} {rm['n']:>5}  {rm['accuracy']:.3f} ({rm['ci_low']:.3f}-{rm['ci_high']:.3f})"
                     f"{'':>3}  {base['length'][name]['accuracy']:.3f}  {base['refusal'][name]['accuracy_ties_half']:>18.3f}")
    return "\n".join(lines)
