"""Percentile-bootstrap confidence intervals over users; Student-t intervals over seeds.

Rates (click rate, conversion rate per offer sent) are ratios of sums, resampled as ratios of
sums of the same bootstrap sample of users, so the CI reflects that users differ in how many
offers they receive.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.stats import t as student_t

_EPS = 1e-7  # probability clip of log_loss


@dataclass(frozen=True)
class Interval:
    mean: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "ci_low": self.ci_low, "ci_high": self.ci_high}

    def excludes_zero(self) -> bool:
        return self.ci_low > 0.0 or self.ci_high < 0.0


@lru_cache(maxsize=4)
def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap resamples of n users; cached, so every metric (and every policy evaluated on
    the same users) uses the same resamples, which also makes paired CIs consistent."""
    if n < 2:
        raise ValueError(f"bootstrap: need at least 2 users, got {n}")
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    idx.flags.writeable = False
    return idx


def bootstrap_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) how often each user is drawn in each of the same resamples, so a statistic
    that is a sum over users is resampled by one matrix product (``counts @ per_user``)."""
    idx = bootstrap_indices(n, n_boot, seed)
    return np.bincount((np.arange(n_boot)[:, None] * n + idx).ravel(), minlength=n_boot * n).reshape(n_boot, n)


def bootstrap_mean(values: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> Interval:
    """Mean of per-user values with a percentile-bootstrap CI."""
    values = np.asarray(values, dtype=np.float64)
    boots = values[bootstrap_indices(len(values), n_boot, seed)].mean(axis=1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(values.mean()), float(lo), float(hi))


def bootstrap_ratio(
    numerator: np.ndarray, denominator: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> Interval:
    """sum(numerator) / sum(denominator) over users, with a percentile-bootstrap CI."""
    num, den = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    idx = bootstrap_indices(len(num), n_boot, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        boots = num[idx].sum(axis=1) / den[idx].sum(axis=1)
        point = num.sum() / den.sum() if den.sum() > 0 else 0.0
    boots = np.nan_to_num(boots, nan=0.0)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(point), float(lo), float(hi))


def t_interval(values: np.ndarray, level: float = 0.95) -> Interval | None:
    """Mean of independent replicates (one value per seed) with a Student-t CI:
    mean ± t_{(1+level)/2, n-1} · sd / sqrt(n). With few seeds (2–10) the t-interval has the
    right coverage for roughly normal per-seed means, where a bootstrap over so few values is
    too narrow. None for fewer than 2 values (no spread to measure); NaNs are dropped."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return None
    mean = float(values.mean())
    half = float(student_t.ppf((1 + level) / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return Interval(mean, mean - half, mean + half)


def roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half); NaN without both classes."""
    y = np.asarray(y) > 0.5
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # average 1-based rank of ties
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))) if len(p) else float("nan")
