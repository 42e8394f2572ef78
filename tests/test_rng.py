"""Counter-based randomness (``envs.rng``): distributions, determinism, independence of streams.

Every statistical check uses fixed keys, so it is deterministic; the tolerances are still
derived from the sample size (written next to each assertion) so that a correct generator
would pass them for almost any keys, and a broken one (wrong scale, shared streams, a
counter that is ignored) fails by a wide margin.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs import rng

N = 200_000  # draws per statistical check: ~10 ms each
_SIGMAS = 5.0  # a correct generator fails a 5-sigma bound with probability ~6e-7
_SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None)
_U64 = st.integers(min_value=0, max_value=2**64 - 1)


def _keys(n: int = N, seed: int = 12345) -> np.ndarray:
    return rng.seed_key(np.arange(n) + seed)


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x, y)[0, 1])


# ------------------------------------------------------------------ uniform
def test_uniform_is_strictly_inside_unit_interval_with_right_moments():
    u = rng.uniform(_keys(), 7, 1)
    assert u.shape == (N,) and u.dtype == np.float64
    assert u.min() > 0.0 and u.max() < 1.0
    # U(0,1): mean 1/2, var 1/12. sd of the sample mean = sqrt(1/12 / N) ~ 6.5e-4.
    assert abs(u.mean() - 0.5) < _SIGMAS * np.sqrt(1 / 12 / N)
    # sd of the sample variance ~ sqrt((mu4 - var^2) / N) with mu4 = E(U-1/2)^4 = 1/80:
    # mu4 - var^2 = 1/80 - 1/144 = 1/180.
    assert abs(u.var() - 1 / 12) < _SIGMAS * np.sqrt(1 / 180 / N)


def test_uniform_histogram_is_flat():
    u = rng.uniform(_keys(), 3)
    bins = 64
    counts = np.bincount((u * bins).astype(int), minlength=bins)
    expected = N / bins
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # chi-square with 63 df: mean 63, sd sqrt(2 * 63) ~ 11.2; mean + 5 sd ~ 119.
    assert chi2 < 63 + _SIGMAS * np.sqrt(2 * 63)


@_SETTINGS
@given(key=_U64, counter=_U64, stream=st.integers(0, 2**31))
def test_uniform_is_in_open_interval_for_any_key_and_counter(key, counter, stream):
    keys = np.array([key, key ^ 1, 0, 2**64 - 1], dtype=np.uint64)
    u = rng.uniform(keys, np.uint64(counter), stream)
    assert np.all((u > 0.0) & (u < 1.0))


# ------------------------------------------------------------------ normal
def test_normal_mean_sd_and_tails():
    z = rng.normal(_keys(), 11)
    assert np.all(np.isfinite(z))
    # N(0,1): sd of the sample mean = 1/sqrt(N) ~ 2.2e-3.
    assert abs(z.mean()) < _SIGMAS / np.sqrt(N)
    # sd of the sample variance of a normal = sqrt(2 / N) ~ 3.2e-3.
    assert abs(z.var() - 1.0) < _SIGMAS * np.sqrt(2 / N)
    # P(|Z| > 1.96) = 0.05; the observed share is binomial: sd = sqrt(p (1 - p) / N).
    tail = float(np.mean(np.abs(z) > 1.959964))
    assert abs(tail - 0.05) < _SIGMAS * np.sqrt(0.05 * 0.95 / N)
    # symmetry: P(Z > 0) = 1/2, sd = sqrt(1/4 / N).
    assert abs(float(np.mean(z > 0)) - 0.5) < _SIGMAS * np.sqrt(0.25 / N)


# ------------------------------------------------------------------ categorical
def test_categorical_frequencies_match_probabilities():
    p = np.array([0.05, 0.4, 0.0, 0.25, 0.3])
    idx = rng.categorical(_keys(), np.broadcast_to(p, (N, len(p))), 5)
    assert idx.min() >= 0 and idx.max() < len(p)
    counts = np.bincount(idx, minlength=len(p))
    assert counts[2] == 0  # a zero-probability category is never drawn
    nz = p > 0
    expected = N * p[nz]
    chi2 = float(((counts[nz] - expected) ** 2 / expected).sum())
    # chi-square with 3 df (4 non-zero categories - 1): mean 3, sd sqrt(6); the 1e-4 upper
    # quantile of chi2(3) is 21.1, so a correct sampler stays below it 99.99% of the time.
    assert chi2 < 21.1


def test_categorical_with_per_row_probabilities():
    # half the rows always pick category 0, half always pick 2; the draw must follow its row
    p = np.zeros((N, 3))
    p[::2, 0] = 1.0
    p[1::2, 2] = 1.0
    idx = rng.categorical(_keys(), p, 1)
    assert np.all(idx[::2] == 0) and np.all(idx[1::2] == 2)
    # rows with (0.2, 0.8): share of category 1 is binomial, sd = sqrt(0.16 / N).
    q = np.broadcast_to([0.2, 0.8], (N, 2))
    share = float(np.mean(rng.categorical(_keys(), q, 2) == 1))
    assert abs(share - 0.8) < _SIGMAS * np.sqrt(0.16 / N)


# ------------------------------------------------------------------ determinism and streams
def test_same_key_and_counters_give_the_same_draws():
    keys = _keys(1000)
    for fn in (rng.uniform, rng.normal):
        a, b = fn(keys, 4, 2), fn(keys.copy(), 4, 2)
        assert np.array_equal(a, b)
    # element i depends only on (key_i, counters), not on the batch it is drawn in
    full = rng.uniform(keys, 9, 1)
    part = rng.uniform(keys[100:103], 9, 1)
    single = rng.uniform(keys[101], 9, 1)
    assert np.array_equal(full[100:103], part) and full[101] == single
    assert np.array_equal(rng.seed_key(np.arange(5) + 3), rng.seed_key(np.arange(5) + 3))


def test_different_keys_counters_and_streams_give_different_draws():
    keys = _keys(10_000)
    base = rng.uniform(keys, 0, 1)
    for other in (rng.uniform(keys, 1, 1), rng.uniform(keys, 0, 2), rng.uniform(_keys(10_000, seed=7), 0, 1)):
        assert np.mean(base == other) < 1e-3
    assert len(np.unique(rng.seed_key(np.arange(10_000)))) == 10_000
    assert len(np.unique(rng.mix64(np.arange(N, dtype=np.uint64)))) == N  # a bijection


@pytest.mark.parametrize(
    "name, other",
    [
        ("streams", lambda k: (rng.uniform(k, 5, 1), rng.uniform(k, 5, 2))),
        ("counters", lambda k: (rng.uniform(k, 5, 1), rng.uniform(k, 6, 1))),
        ("neighbour keys", lambda k: (rng.uniform(k[:-1], 5, 1), rng.uniform(k[1:], 5, 1))),
        ("episodes", lambda k: (rng.uniform(rng.combine(k, 0), 0, 1), rng.uniform(rng.combine(k, 1), 0, 1))),
        ("box-muller pair", lambda k: (rng.normal(k, 3), rng.normal(k, 4))),
    ],
)
def test_streams_are_uncorrelated(name, other):
    x, y = other(_keys())
    n = len(x)
    # Under independence the sample correlation is ~ N(0, 1/n): |r| < 4/sqrt(n) ~ 9e-3 at 4 sd.
    assert abs(_corr(x, y)) < 4 / np.sqrt(n), name
    # rank-free check on the joint distribution: P(x < m_x and y < m_y) = 1/4 for independent
    # continuous draws (m = medians); sd of the share = sqrt(3/16 / n).
    both = float(np.mean((x < np.median(x)) & (y < np.median(y))))
    assert abs(both - 0.25) < _SIGMAS * np.sqrt(3 / 16 / n), name


def test_lag_one_autocorrelation_along_counters_is_zero():
    # one user's coin flips over many steps (the env's click stream): 1/sqrt(n) sd again
    key = rng.seed_key(42)
    u = rng.uniform(key, np.arange(N), 1)
    assert abs(_corr(u[:-1], u[1:])) < 4 / np.sqrt(N - 1)
