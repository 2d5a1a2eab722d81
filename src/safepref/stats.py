"""The statistics behind every number in a report: intervals on rates, paired differences, tests.

Pure functions over 0/1 outcomes. An outcome matrix has one row per prompt and one column per seed
(``numpy.nan`` where a seed has no answer for that prompt); the unit of resampling is the prompt, because all
conditions answer the same prompts, so prompts (not answers) are the independent draws.

- ``wilson``: the 95% Wilson score interval of k successes in n (one seed, or answers counted once);
- ``bootstrap_rate``: the rate of an outcome matrix with a percentile interval from resampling prompts and,
  independently, seeds (a two-level bootstrap: seed-to-seed spread widens the interval);
- ``paired_bootstrap_diff``: the difference of two conditions' rates on the same prompts and seeds, both
  resampled with the same indices (the pairing is what makes small differences detectable);
- ``mcnemar_exact``: the exact McNemar test on one seed's paired outcomes (a two-sided binomial test on the
  discordant prompts);
- ``holm``: Holm's step-down adjustment of a family of p-values;
- ``spearman_permutation``: Spearman's rank correlation with a permutation p-value (exact for n <= 8).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # fixed: a report rewritten from the same files gives the same intervals


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for k successes out of n; None when n is 0.

    ``centre ± half`` with ``centre = (p + z²/2n) / (1 + z²/n)`` and
    ``half = z·sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n)``. Unlike the normal interval it stays inside [0, 1] and
    is not empty at p = 0 or 1 (k = 0 of 100 gives [0, 0.037]).
    """
    if n <= 0:
        return None
    if not 0 <= k <= n:
        raise ValueError(f"k must be within 0..{n}, got {k}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # exact ends at k = 0 and k = n (the formula gives them up to rounding error)
    return (0.0 if k == 0 else centre - half), (1.0 if k == n else centre + half)


def rate_entry(k: int, n: int) -> dict[str, Any]:
    """``{"rate", "k", "n", "ci95", "method"}`` of k in n with its Wilson interval (rate None when n is 0)."""
    ci = wilson(k, n)
    return {"rate": round(k / n, 4) if n else None, "k": k, "n": n,
            "ci95": [round(ci[0], 4), round(ci[1], 4)] if ci else None, "method": "wilson"}


def _matrix(outcomes: Any) -> np.ndarray:
    """A (prompts, seeds) float matrix; a 1-D sequence is one seed."""
    m = np.asarray(outcomes, dtype=float)
    return m[:, None] if m.ndim == 1 else m


def _resample_means(matrices: list[np.ndarray], resamples: int, seed: int) -> np.ndarray:
    """Means of each matrix under the same (prompt, seed) resampling: shape (len(matrices), resamples).

    Prompts and seeds are drawn with replacement, independently; cells that are NaN are left out of a mean.
    """
    prompts, seeds = matrices[0].shape
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, prompts, size=(resamples, prompts))  # (B, P)
    cols = rng.integers(0, seeds, size=(resamples, seeds))  # (B, S)
    out = np.empty((len(matrices), resamples))
    for i, m in enumerate(matrices):
        picked = m[rows[:, :, None], cols[:, None, :]].reshape(resamples, -1)  # (B, P*S)
        counts = (~np.isnan(picked)).sum(axis=1)
        sums = np.nansum(picked, axis=1)
        # a resample that drew only empty cells has no mean (NaN, skipped by the percentiles)
        out[i] = np.divide(sums, counts, out=np.full(resamples, np.nan), where=counts > 0)
    return out


def bootstrap_rate(outcomes: Any, resamples: int = BOOTSTRAP_RESAMPLES,
                   seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """Rate of a (prompts, seeds) 0/1 matrix with a 95% percentile interval over prompts and seeds."""
    m = _matrix(outcomes)
    valid = ~np.isnan(m)
    if not valid.any():
        return {"rate": None, "k": 0, "n": 0, "ci95": None, "method": "bootstrap"}
    means = _resample_means([m], resamples, seed)[0]
    lo, hi = np.nanpercentile(means, [2.5, 97.5])
    return {"rate": round(float(np.nanmean(m)), 4), "k": int(np.nansum(m)), "n": int(valid.sum()),
            "prompts": m.shape[0], "seeds": m.shape[1], "ci95": [round(float(lo), 4), round(float(hi), 4)],
            "method": f"bootstrap over prompts and seeds ({resamples} resamples)"}


def paired_bootstrap_diff(a: Any, b: Any, resamples: int = BOOTSTRAP_RESAMPLES,
                          seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """Rate of ``a`` minus rate of ``b`` (same prompts in the same row order, same seeds), with a 95%
    percentile interval from resampling prompts and seeds jointly for both sides. Raises ValueError when
    the shapes differ."""
    ma, mb = _matrix(a), _matrix(b)
    if ma.shape != mb.shape:
        raise ValueError(f"paired outcomes need the same shape, got {ma.shape} and {mb.shape}")
    both = ~np.isnan(ma) & ~np.isnan(mb)  # only cells both conditions answered
    ma, mb = np.where(both, ma, np.nan), np.where(both, mb, np.nan)
    if not both.any():
        return {"difference": None, "ci95": None, "n": 0}
    means = _resample_means([ma, mb], resamples, seed)
    diffs = means[0] - means[1]
    lo, hi = np.nanpercentile(diffs, [2.5, 97.5])
    return {"difference": round(float(np.nanmean(ma) - np.nanmean(mb)), 4),
            "ci95": [round(float(lo), 4), round(float(hi), 4)], "n": int(both.sum()),
            "prompts": ma.shape[0], "seeds": ma.shape[1],
            "excludes_zero": bool(lo > 0 or hi < 0)}


def mcnemar_exact(a: Sequence[int | bool], b: Sequence[int | bool]) -> dict[str, Any]:
    """Exact McNemar test of paired 0/1 outcomes (one seed): two-sided binomial test of the discordant
    prompts ``a=1, b=0`` against ``a=0, b=1`` at p = 0.5. p is 1.0 when no prompt is discordant."""
    from scipy.stats import binomtest

    if len(a) != len(b):
        raise ValueError(f"paired outcomes need the same length, got {len(a)} and {len(b)}")
    only_a = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    only_b = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else float(binomtest(only_a, discordant, 0.5).pvalue)
    return {"p": p, "only_a": only_a, "only_b": only_b, "n": len(a)}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (same order as given): the i-th smallest of m is multiplied by
    ``m - i`` (i from 0), made monotone, and capped at 1."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def spearman_permutation(xs: Sequence[float], ys: Sequence[float], resamples: int = 9999,
                         seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """Spearman's rho with a two-sided permutation p-value (every permutation when n! <= ``resamples``,
    so exact for n <= 7 at the default). rho and p are None with fewer than 3 points or a constant side."""
    from scipy.stats import permutation_test, spearmanr

    n = len(xs)
    if n < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return {"rho": None, "p": None, "n": n, "method": "spearman, permutation test"}
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    options = {"permutation_type": "pairings", "n_resamples": resamples, "alternative": "two-sided"}
    try:
        result = permutation_test((x, y), lambda u, v: spearmanr(u, v).statistic, **options,
                                  rng=np.random.default_rng(seed))
    except TypeError:  # scipy < 1.15 names the generator random_state
        result = permutation_test((x, y), lambda u, v: spearmanr(u, v).statistic, **options,
                                  random_state=np.random.default_rng(seed))
    exact = math.factorial(n) <= resamples
    return {"rho": round(float(spearmanr(x, y).statistic), 4), "p": round(float(result.pvalue), 4), "n": n,
            "method": f"spearman, permutation test ({'exact' if exact else f'{resamples} permutations'})"}
