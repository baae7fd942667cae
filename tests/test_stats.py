"""Paired statistics: known answers computed by hand from the textbook formulas."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest

from harness.lib.stats import binom_cdf, mcnemar, mde, paired_bootstrap, wilson


def _pairs(lost: int, won: int, both_right: int, both_wrong: int) -> tuple[list[int], list[int]]:
    """Baseline/candidate 0/1 scores with the given cells of the 2x2 table."""
    baseline = [1] * lost + [0] * won + [1] * both_right + [0] * both_wrong
    candidate = [0] * lost + [1] * won + [1] * both_right + [0] * both_wrong
    return baseline, candidate


def _agresti_min(b: int, c: int, n: int, alpha: float) -> tuple[float, float]:
    """Agresti-Min interval, written out independently of the implementation."""
    p12, p21 = (b + 0.5) / (n + 2), (c + 0.5) / (n + 2)
    diff = p21 - p12
    se = math.sqrt(((p12 + p21) - diff**2) / (n + 2))
    z = NormalDist().inv_cdf(1 - alpha)
    return diff - z * se, diff + z * se


# ------------------------------------------------------------------------------- McNemar


def test_binom_cdf_small_case():
    # P(X <= 2) for X ~ Bin(10, 1/2) = (1 + 10 + 45) / 1024
    assert binom_cdf(2, 10) == pytest.approx(56 / 1024)
    assert binom_cdf(-1, 10) == 0.0
    assert binom_cdf(10, 10) == 1.0


def test_mcnemar_exact_p_value_and_difference():
    baseline, candidate = _pairs(lost=2, won=8, both_right=6, both_wrong=4)
    cmp = mcnemar(baseline, candidate, alpha=0.05)

    assert cmp.n == 20
    assert cmp.p_value == pytest.approx(112 / 1024)  # 2 * P(X <= 2), X ~ Bin(10, 1/2)
    assert cmp.diff == pytest.approx(0.3)  # (8 - 2) / 20
    assert cmp.baseline == pytest.approx(8 / 20)
    assert cmp.candidate == pytest.approx(14 / 20)
    assert cmp.detail == {"lost": 2.0, "won": 8.0, "design_effect": 1.0}
    low, high = _agresti_min(2, 8, 20, 0.05)
    assert (cmp.ci_low, cmp.ci_high) == (pytest.approx(low), pytest.approx(high))


def test_mcnemar_is_symmetric_in_direction():
    better = mcnemar(*_pairs(lost=2, won=8, both_right=6, both_wrong=4), alpha=0.05)
    worse = mcnemar(*_pairs(lost=8, won=2, both_right=6, both_wrong=4), alpha=0.05)
    assert worse.p_value == pytest.approx(better.p_value)
    assert worse.diff == pytest.approx(-better.diff)
    assert worse.ci_low == pytest.approx(-better.ci_high)


@pytest.mark.parametrize("alpha", [0.05, 0.025])
def test_mcnemar_without_discordant_pairs_keeps_an_honest_interval(alpha):
    baseline, candidate = _pairs(lost=0, won=0, both_right=30, both_wrong=20)
    cmp = mcnemar(baseline, candidate, alpha=alpha)

    assert cmp.p_value == 1.0
    assert cmp.diff == 0.0
    # b = c = 0: every cell + 1/2, n + 2 -> se = sqrt(1) / (n + 2), centred on 0
    z = NormalDist().inv_cdf(1 - alpha)
    assert cmp.ci_low == pytest.approx(-z / 52)
    assert cmp.ci_high == pytest.approx(z / 52)
    assert cmp.ci_low < 0 < cmp.ci_high
    assert cmp.ci_low == pytest.approx(_agresti_min(0, 0, 50, alpha)[0])


def test_mcnemar_equal_discordant_counts_give_p_one():
    cmp = mcnemar(*_pairs(lost=5, won=5, both_right=5, both_wrong=5), alpha=0.05)
    assert cmp.p_value == 1.0
    assert cmp.diff == 0.0


@pytest.mark.parametrize(
    "baseline, candidate",
    [([0, 1, 0.5], [0, 1, 1]), ([0, 1, 1], [0, 2, 1]), ([0.0, 1.0, -1.0], [1, 1, 1])],
)
def test_mcnemar_rejects_non_binary_scores(baseline, candidate):
    with pytest.raises(ValueError, match="binary"):
        mcnemar(baseline, candidate, alpha=0.05)


def test_mcnemar_rejects_unequal_lengths():
    with pytest.raises(ValueError, match="length"):
        mcnemar([0, 1, 1], [0, 1], alpha=0.05)


def test_mcnemar_rejects_no_items():
    with pytest.raises(ValueError, match="no items"):
        mcnemar([], [], alpha=0.05)


# ---------------------------------------------------------------------- paired bootstrap


def test_bootstrap_constant_improvement():
    baseline = [0.5] * 40
    candidate = [0.6] * 40
    cmp = paired_bootstrap(baseline, candidate, alpha=0.05, resamples=500, seed=3)

    assert cmp.diff == pytest.approx(0.1)
    assert cmp.ci_low == pytest.approx(0.1)
    assert cmp.ci_high == pytest.approx(0.1)
    assert cmp.p_value == pytest.approx(1 / 500)  # no resample is <= 0: floored at 1/resamples
    assert cmp.mde == pytest.approx(0.0, abs=1e-12)  # the deltas have no spread


def test_bootstrap_constant_regression_is_symmetric():
    cmp = paired_bootstrap([0.6] * 40, [0.5] * 40, alpha=0.05, resamples=500)
    assert cmp.ci_high == pytest.approx(-0.1)
    assert cmp.p_value == pytest.approx(1 / 500)


def test_bootstrap_no_difference_has_p_one():
    scores = [0.2, 0.9, 0.4, 0.7, 0.0, 1.0]
    cmp = paired_bootstrap(scores, list(scores), alpha=0.05, resamples=300)
    assert cmp.p_value == 1.0
    assert cmp.diff == 0.0
    assert (cmp.ci_low, cmp.ci_high) == (0.0, 0.0)


def test_bootstrap_is_reproducible_with_a_seed():
    baseline = [0.1, 0.4, 0.35, 0.8, 0.5, 0.9, 0.0, 0.3, 0.6, 0.2]
    candidate = [0.3, 0.4, 0.20, 0.9, 0.7, 0.8, 0.1, 0.5, 0.6, 0.4]
    first = paired_bootstrap(baseline, candidate, alpha=0.05, resamples=1000, seed=7)
    again = paired_bootstrap(baseline, candidate, alpha=0.05, resamples=1000, seed=7)
    other = paired_bootstrap(baseline, candidate, alpha=0.05, resamples=1000, seed=8)

    assert first == again
    assert (first.ci_low, first.ci_high) != (other.ci_low, other.ci_high)
    assert first.diff == pytest.approx(0.075)  # deltas sum to 0.75 over 10 items
    assert first.ci_low <= first.diff <= first.ci_high


def test_bootstrap_rejects_unequal_lengths():
    with pytest.raises(ValueError, match="length"):
        paired_bootstrap([0.1, 0.2], [0.1], alpha=0.05)


# -------------------------------------------------------------------- Wilson and the MDE


def test_wilson_known_value():
    low, high = wilson(8, 10, alpha=0.025)
    # closed form with z = 1.95996...: centre (p + z^2/2n) / (1 + z^2/n), half-width below
    z = NormalDist().inv_cdf(0.975)
    p, n = 0.8, 10
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    assert round(low, 3) == round(centre - half, 3) == 0.490
    assert round(high, 3) == round(centre + half, 3) == 0.943


def test_wilson_edges():
    assert wilson(0, 0, alpha=0.05) == (0.0, 1.0)
    low, high = wilson(0, 20, alpha=0.05)
    assert low == 0.0 and 0 < high < 0.2
    low, high = wilson(20, 20, alpha=0.05)
    assert high == pytest.approx(1.0) and 0.8 < low < 1


def test_mde_is_about_2_49_standard_errors_at_alpha_005():
    # z(0.95) + z(0.80) = 1.6449 + 0.8416 = 2.4865
    assert mde(0.01, alpha=0.05) == pytest.approx(0.024865, abs=1e-5)
    assert mde(1.0, alpha=0.05) == pytest.approx(2.49, abs=0.005)
    assert mde(1.0, alpha=0.025) > mde(1.0, alpha=0.05)
