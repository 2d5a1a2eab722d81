"""The reference model's own view of a preference set: the log-probability margin at DPO's step zero.

For a pair, ``margin = sum log p(chosen | prompt) - sum log p(rejected | prompt)`` under the target (=
reference) model, summed over response tokens exactly as DPO sums them. DPO's implicit reward is
``beta * (log pi/pi_ref)(chosen) - beta * (log pi/pi_ref)(rejected)``: zero at step zero, and the loss pushes it
up from there. A set whose rejected side is the model's own greedy answer starts with a large negative margin
(the model already prefers its own text), so DPO must move the policy far, and any cheap cue that separates
the sides is an easy way to do it. The per-token margin (each side's mean log-prob) is reported beside it,
since summed log-probs fall with length.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from safepref.audit.representations import Example, TargetModel


def pair_margins(examples: list[Example], logp: np.ndarray, n_tokens: np.ndarray) -> dict[str, np.ndarray]:
    """Per pair (ordered by pair id): summed and per-token margin, and each side's summed log-prob."""
    pairs = np.array([e.pair for e in examples])
    labels = np.array([e.label for e in examples])
    ids = np.unique(pairs)
    position = np.searchsorted(ids, pairs)
    sides: dict[str, np.ndarray] = {}
    for name, label in (("chosen", 1), ("rejected", 0)):
        values = np.full(len(ids), np.nan)
        tokens = np.full(len(ids), np.nan)
        values[position[labels == label]] = logp[labels == label]
        tokens[position[labels == label]] = n_tokens[labels == label]
        sides[name], sides[f"{name}_tokens"] = values, tokens
    return {
        "margin": sides["chosen"] - sides["rejected"],
        "margin_per_token": sides["chosen"] / sides["chosen_tokens"] - sides["rejected"] / sides["rejected_tokens"],
        "chosen_logp": sides["chosen"],
        "rejected_logp": sides["rejected"],
    }


def summarize(values: np.ndarray) -> dict[str, float]:
    """Mean, std and quantiles of a margin distribution, plus the share of pairs already preferring chosen."""
    values = np.asarray(values, dtype=np.float64)
    q = np.percentile(values, [10, 25, 50, 75, 90])
    return {
        "mean": float(values.mean()), "std": float(values.std()), "p10": float(q[0]), "p25": float(q[1]),
        "median": float(q[2]), "p75": float(q[3]), "p90": float(q[4]),
        "share_prefers_chosen": float((values > 0).mean()),
    }


def reference_margin(target: TargetModel, examples: list[Example], layers: list[int] | None = None
                     ) -> dict[str, Any]:
    """Margins of one set under the target model (batched; shares the hidden-state pass when cached).

    ``layers``: hidden layers the same pass should keep for probes, so the model runs once per set.
    Returns summaries of the summed and per-token margins plus the per-pair arrays (``pairs``).
    """
    result = target.run(examples, layers or [])
    margins = pair_margins(examples, result.logp, result.n_tokens)
    return {
        "margin": summarize(margins["margin"]),
        "margin_per_token": summarize(margins["margin_per_token"]),
        "truncated_examples": result.truncated,
        "pairs": margins,
    }
