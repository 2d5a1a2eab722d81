"""Linear probes: can a logistic regression tell chosen from rejected? Pure functions over arrays.

Each pair contributes two examples (chosen, label 1; rejected, label 0) in one group, its prompt. Folds are
grouped by prompt (``GroupKFold``), so a probe is always scored on prompts it never saw: otherwise it could
memorise a prompt's two answers instead of learning a cue. Scores are the held-out (out-of-fold) decision
values of every example, from which:

- ``accuracy``: share of examples classified right at the probe's own threshold;
- ``auc``: ROC AUC of the out-of-fold scores (0.5 = chance, 1 = perfectly separable);
- ``pair_accuracy``: share of pairs whose chosen side scores above its rejected side, the pairwise view a
  DPO reward takes (ties count half).

95% confidence intervals come from a cluster bootstrap over prompts (a prompt's examples are resampled
together because they are not independent). Folds are refitted once; the bootstrap only resamples scores,
so the intervals cover sampling noise of the evaluation set, not refitting noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from safepref.errors import DataError


@dataclass
class ProbeResult:
    representation: str
    n_examples: int
    n_groups: int
    folds: int
    accuracy: float
    accuracy_ci: tuple[float, float]
    auc: float
    auc_ci: tuple[float, float]
    pair_accuracy: float
    pair_accuracy_ci: tuple[float, float]
    fold_auc: list[float]
    scores: np.ndarray = field(repr=False)  # out-of-fold decision values, one per example

    def as_dict(self) -> dict[str, Any]:
        return {
            "representation": self.representation, "n_examples": self.n_examples, "n_groups": self.n_groups,
            "folds": self.folds, "accuracy": self.accuracy, "accuracy_ci": list(self.accuracy_ci),
            "auc": self.auc, "auc_ci": list(self.auc_ci), "pair_accuracy": self.pair_accuracy,
            "pair_accuracy_ci": list(self.pair_accuracy_ci), "fold_auc": self.fold_auc,
        }


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count half); needs both labels present."""
    from scipy.stats import rankdata

    labels = np.asarray(labels)
    positives = labels == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs both labels")
    ranks = rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pair_accuracy(scores: np.ndarray, labels: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Per pair: 1 if chosen scores above rejected, 0.5 on a tie, 0 otherwise; ordered by pair id."""
    ids = np.unique(pairs)
    chosen = np.full(len(ids), np.nan)
    rejected = np.full(len(ids), np.nan)
    position = np.searchsorted(ids, pairs)
    chosen[position[labels == 1]] = scores[labels == 1]
    rejected[position[labels == 0]] = scores[labels == 0]
    return (chosen > rejected) + 0.5 * (chosen == rejected)


def check_folds(groups: np.ndarray, folds: int) -> None:
    """Raises DataError when there are fewer prompts than folds (a fold would test on nothing)."""
    if folds < 2:
        raise DataError(f"--folds must be at least 2, got {folds}")
    n_groups = len(np.unique(groups))
    if n_groups < folds:
        raise DataError(f"{n_groups} prompt(s) but {folds} folds: cross-validation by prompt needs at least "
                        f"as many prompts as folds; add pairs or lower --folds")


def cross_validate(
    X: Any,
    labels: np.ndarray,
    groups: np.ndarray,
    pairs: np.ndarray,
    make_estimator: Callable[[], Any],
    folds: int = 5,
    seed: int = 0,
    n_bootstrap: int = 1000,
    name: str = "",
) -> ProbeResult:
    """Out-of-fold scores of a probe by prompt-grouped K-fold, with accuracy and AUC and their 95% CIs.

    ``X``: (n, d) array, or an object array of texts for pipelines that vectorize; ``labels``: 1 chosen,
    0 rejected; ``groups``: prompt id of each example; ``pairs``: pair id of each example.
    Raises DataError when there are fewer prompts than folds.
    """
    from sklearn.model_selection import GroupKFold

    labels = np.asarray(labels, dtype=int)
    groups = np.asarray(groups)
    pairs = np.asarray(pairs)
    check_folds(groups, folds)
    scores = np.zeros(len(labels), dtype=np.float64)
    predicted = np.zeros(len(labels), dtype=int)
    fold_auc = []
    splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(np.zeros(len(labels)), labels, groups):
        estimator = make_estimator()
        estimator.fit(X[train], labels[train])
        scores[test] = estimator.decision_function(X[test])
        predicted[test] = estimator.predict(X[test])
        fold_auc.append(roc_auc(labels[test], scores[test]))
    correct = (predicted == labels).astype(float)
    per_pair = pair_accuracy(scores, labels, pairs)
    acc_ci, auc_ci, pair_ci = bootstrap_cis(correct, labels, scores, groups, pairs, per_pair, n_bootstrap, seed)
    return ProbeResult(
        representation=name, n_examples=len(labels), n_groups=len(np.unique(groups)), folds=folds,
        accuracy=float(correct.mean()), accuracy_ci=acc_ci, auc=roc_auc(labels, scores), auc_ci=auc_ci,
        pair_accuracy=float(per_pair.mean()), pair_accuracy_ci=pair_ci,
        fold_auc=[round(a, 4) for a in fold_auc], scores=scores,
    )


def bootstrap_cis(correct: np.ndarray, labels: np.ndarray, scores: np.ndarray, groups: np.ndarray,
                  pairs: np.ndarray, per_pair: np.ndarray, n_bootstrap: int = 1000, seed: int = 0,
                  level: float = 0.95) -> tuple[tuple[float, float], ...]:
    """Percentile intervals for accuracy, AUC and pair accuracy, resampling prompts with replacement."""
    if n_bootstrap <= 0:
        nan = (float("nan"), float("nan"))
        return nan, nan, nan
    rng = np.random.default_rng(seed)
    _, group_of_example = np.unique(groups, return_inverse=True)
    n_groups = group_of_example.max() + 1
    members = [np.flatnonzero(group_of_example == g) for g in range(n_groups)]
    pair_ids = np.unique(pairs)
    # The group of each pair (both sides share it), to resample pairs along with their prompt.
    pair_group = np.zeros(len(pair_ids), dtype=int)
    pair_group[np.searchsorted(pair_ids, pairs)] = group_of_example
    pair_members = [np.flatnonzero(pair_group == g) for g in range(n_groups)]
    stats = np.zeros((n_bootstrap, 3))
    for b in range(n_bootstrap):
        chosen_groups = rng.integers(0, n_groups, n_groups)
        index = np.concatenate([members[g] for g in chosen_groups])
        pair_index = np.concatenate([pair_members[g] for g in chosen_groups])
        stats[b] = (correct[index].mean(), roc_auc(labels[index], scores[index]), per_pair[pair_index].mean())
    low, high = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    bounds = np.percentile(stats, [low, high], axis=0)
    return tuple((round(float(bounds[0, k]), 4), round(float(bounds[1, k]), 4)) for k in range(3))
