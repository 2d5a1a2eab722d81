"""stats.py: every interval and p-value against a value worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from safepref import stats


def test_wilson_interval_by_hand():
    # 8 of 10: p = 0.8, z^2 = 3.8415; centre = (0.8 + 0.19207) / 1.38415 = 0.71679;
    # half = 1.96 * sqrt(0.016 + 0.0096037) / 1.38415 = 0.22658  ->  [0.49020, 0.94337]
    lo, hi = stats.wilson(8, 10)
    assert lo == pytest.approx(0.490162, abs=1e-5) and hi == pytest.approx(0.943318, abs=1e-5)
    # k = 0: the lower end is 0 and the upper end z^2/n / (1 + z^2/n) = 0.038415 / 1.038415
    assert stats.wilson(0, 100) == (0.0, pytest.approx(0.038415 / 1.038415, abs=1e-6))
    assert stats.wilson(4, 4) == (pytest.approx(1 - 0.960365 / 1.960365, abs=1e-6), 1.0)
    assert stats.wilson(0, 0) is None
    with pytest.raises(ValueError):
        stats.wilson(5, 4)
    assert stats.rate_entry(8, 10) == {"rate": 0.8, "k": 8, "n": 10, "ci95": [0.4902, 0.9433], "method": "wilson"}


def test_exact_mcnemar_by_hand():
    # 6 discordant prompts, all one way: p = 2 * 0.5^6
    result = stats.mcnemar_exact([1] * 6 + [1, 0, 0, 0], [0] * 6 + [1, 0, 0, 0])
    assert result == {"p": 0.03125, "only_a": 6, "only_b": 0, "n": 10}
    # 1 against 7: p = 2 * (C(8,0) + C(8,1)) / 2^8 = 18 / 256
    assert stats.mcnemar_exact([1] + [0] * 7, [0] + [1] * 7)["p"] == pytest.approx(18 / 256)
    assert stats.mcnemar_exact([1, 0], [1, 0])["p"] == 1.0  # no discordant prompt
    with pytest.raises(ValueError):
        stats.mcnemar_exact([1], [1, 0])


def test_holm_by_hand():
    # sorted: 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 = 0.04 -> raised to 0.06 (monotone)
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.9]) == [1.0, 1.0]
    assert stats.holm([]) == []


def test_spearman_permutation_is_exact_for_small_n():
    # 4 points in the same order: rho 1; of the 24 orderings only this one and its reverse reach |rho| = 1
    result = stats.spearman_permutation([1, 2, 3, 4], [10, 20, 30, 40])
    assert result["rho"] == 1.0 and result["p"] == pytest.approx(2 / 24, abs=1e-4) and result["n"] == 4
    assert "exact" in result["method"]
    # rank differences d = (1, -1, 0, 0, 0): rho = 1 - 6 * 2 / (5 * 24) = 0.9
    assert stats.spearman_permutation([1, 2, 3, 4, 5], [2, 1, 3, 4, 5])["rho"] == pytest.approx(0.9)
    assert stats.spearman_permutation([1, 2], [3, 4])["rho"] is None


def test_bootstrap_rate_and_paired_difference():
    # every prompt the same in every seed: no resample can move the rate
    assert stats.bootstrap_rate(np.ones((5, 3)))["ci95"] == [1.0, 1.0]
    m = np.array([[1, 0], [1, 1], [0, 0], [1, np.nan]])
    entry = stats.bootstrap_rate(m)
    assert entry["rate"] == pytest.approx(4 / 7, abs=1e-4) and entry["k"] == 4 and entry["n"] == 7
    # a - b = -1 on 6 of 10 prompts, 0 on the others: the resampled difference is -X/10 with X ~ Bin(10, 0.6),
    # whose 2.5% and 97.5% quantiles are 3 and 9 (P(X<=2)=0.012, P(X<=3)=0.055, P(X<=8)=0.954, P(X<=9)=0.994)
    a = [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    b = [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]
    diff = stats.paired_bootstrap_diff(a, b)
    assert diff["difference"] == -0.6 and diff["ci95"] == [-0.9, -0.3] and diff["excludes_zero"]
    assert not stats.paired_bootstrap_diff([1, 0, 1, 0], [0, 1, 1, 0])["excludes_zero"]
    with pytest.raises(ValueError):
        stats.paired_bootstrap_diff([1, 0], [1, 0, 1])
    assert math.isclose(stats.Z95, 1.959964, abs_tol=1e-6)
