"""recsys.stats: intervals that cover a known truth at their nominal level, and metrics that
match their definitions.

Coverage is checked on many fixed-seed replicates from a distribution with a known mean: the
share of intervals containing it must be the nominal level within three binomial standard
deviations, sqrt(level (1 - level) / replicates). A too-narrow interval (e.g. a normal
interval on 4 values, or a bootstrap that ignores ``level``) misses by more than that."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.stats import (
    bootstrap_counts,
    bootstrap_indices,
    bootstrap_mean,
    bootstrap_ratio,
    calibration_bins,
    expected_calibration_error,
    log_loss,
    percentile_interval,
    roc_auc,
    t_interval,
)

MU = 1.3


def coverage_tolerance(level: float, replicates: int) -> float:
    return 3.0 * np.sqrt(level * (1 - level) / replicates)


@pytest.mark.parametrize("level", [0.95, 0.8])
def test_bootstrap_mean_covers_the_true_mean_at_its_level(level):
    replicates, n = 200, 100
    g = np.random.default_rng(0)
    covered = []
    for r in range(replicates):
        iv = bootstrap_mean(g.normal(MU, 1.0, n), n_boot=500, level=level, seed=r)
        covered.append(iv.ci_low <= MU <= iv.ci_high)
    # the percentile bootstrap of a mean is slightly narrow for small n; n = 100 is enough
    assert abs(np.mean(covered) - level) <= coverage_tolerance(level, replicates), np.mean(covered)


def test_bootstrap_ratio_covers_the_true_rate():
    """Users with different numbers of offers: the rate is a ratio of sums over users."""
    replicates, n, p = 200, 200, 0.12
    g = np.random.default_rng(1)
    covered = []
    for r in range(replicates):
        offers = g.poisson(4.0, n) + 1
        clicks = g.binomial(offers, p)
        iv = bootstrap_ratio(clicks, offers, n_boot=500, seed=r)
        assert iv.mean == clicks.sum() / offers.sum()
        covered.append(iv.ci_low <= p <= iv.ci_high)
    assert abs(np.mean(covered) - 0.95) <= coverage_tolerance(0.95, replicates), np.mean(covered)


def test_t_interval_covers_the_true_mean_with_four_seeds():
    """With 4 values a normal (z) interval covers only ~86%; the t-interval covers 95%."""
    replicates = 400
    g = np.random.default_rng(2)
    covered = [(lambda iv: iv.ci_low <= MU <= iv.ci_high)(t_interval(g.normal(MU, 1.0, 4))) for _ in range(replicates)]
    assert abs(np.mean(covered) - 0.95) <= coverage_tolerance(0.95, replicates), np.mean(covered)


def test_t_interval_drops_nans_and_needs_two_values():
    iv = t_interval(np.array([1.0, np.nan, 3.0]))
    assert iv.mean == 2.0
    # sd = sqrt(2), n = 2: half-width t_{0.975, 1} * sqrt(2) / sqrt(2) = 12.706...
    assert iv.ci_high - iv.mean == pytest.approx(12.7062047, rel=1e-6)
    assert t_interval(np.array([1.0, np.nan])) is None


def test_bootstrap_counts_are_the_resample_indices_counted():
    idx = bootstrap_indices(7, 30, 3)
    counts = bootstrap_counts(7, 30, 3)
    assert counts.shape == (30, 7) and (counts.sum(axis=1) == 7).all()
    for row, c in zip(idx, counts, strict=True):
        np.testing.assert_array_equal(np.bincount(row, minlength=7), c)
    assert not idx.flags.writeable  # cached and shared: nobody may change it
    with pytest.raises(ValueError, match="at least 2 users"):
        bootstrap_indices(1, 10, 0)


def test_percentile_interval_is_the_central_share_of_the_replicates():
    iv = percentile_interval(0.5, np.arange(1001.0), level=0.9)
    assert iv.mean == 0.5 and (iv.ci_low, iv.ci_high) == pytest.approx((50.0, 950.0))


def test_roc_auc_is_the_share_of_correctly_ordered_pairs():
    g = np.random.default_rng(4)
    y = g.random(300) < 0.3
    s = g.integers(0, 10, 300).astype(float)  # many ties: a tie counts one half
    pos, neg = s[y], s[~y]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert roc_auc(y, s) == pytest.approx(pairs, abs=1e-12)
    # integer weights are repeated rows (how the paired AUC bootstrap resamples users)
    w = g.integers(0, 3, 300)
    assert roc_auc(y, s, sample_weight=w) == pytest.approx(roc_auc(np.repeat(y, w), np.repeat(s, w)), abs=1e-12)


def test_roc_auc_is_nan_without_both_classes():
    assert np.isnan(roc_auc(np.zeros(5), np.arange(5.0)))
    assert np.isnan(roc_auc(np.array([1, 0, 0]), np.arange(3.0), sample_weight=np.array([0, 1, 1])))


def test_log_loss_matches_its_definition_and_clips():
    assert log_loss(np.array([1, 0]), np.array([0.8, 0.3])) == pytest.approx(-(np.log(0.8) + np.log(0.7)) / 2)
    assert log_loss(np.array([1]), np.array([0.0])) == pytest.approx(-np.log(1e-7))
    assert log_loss(np.array([1]), np.array([0.0]), eps=1e-12) == pytest.approx(-np.log(1e-12))
    assert np.isnan(log_loss(np.array([]), np.array([])))


def test_calibration_bins_are_equal_mass_and_ece_measures_the_gap():
    g = np.random.default_rng(5)
    p = g.uniform(0.01, 0.3, 10_000)
    mean_pred, mean_target, weight = calibration_bins(p, p + 0.02, n_bins=20)
    np.testing.assert_allclose(weight, 1 / 20)
    assert np.all(np.diff(mean_pred) > 0)
    np.testing.assert_allclose(mean_target - mean_pred, 0.02, atol=1e-12)
    assert expected_calibration_error(p, p) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(p + 0.02, p) == pytest.approx(0.02, abs=1e-9)
    # against sampled outcomes a calibrated model's ECE is only sampling noise (< 3 sd of a bin mean)
    outcomes = (g.random(len(p)) < p).astype(float)
    assert expected_calibration_error(p, outcomes) < 3 * np.sqrt(0.3 * 0.7 / (len(p) / 20))
    assert expected_calibration_error(np.clip(p * 1.5, 0, 1), outcomes) > 0.05  # overconfident
