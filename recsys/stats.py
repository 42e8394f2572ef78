"""Every statistic the project reports, in one place: percentile-bootstrap CIs over users,
Student-t intervals over seeds, AUC, log loss and calibration.

Users (episodes) are the independent units, so bootstraps resample users. Rates (click rate,
conversion rate per offer sent) are ratios of sums, resampled as ratios of sums of the same
bootstrap sample of users, so the CI reflects that users differ in how many offers they receive.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.stats import t as student_t
from sklearn.metrics import roc_auc_score

_EPS = 1e-7  # probability clip of log_loss


@dataclass(frozen=True)
class Interval:
    """A point estimate with a confidence interval; the one interval type of the project
    (``as_dict`` is its ``results.json`` form)."""

    mean: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "ci_low": self.ci_low, "ci_high": self.ci_high}

    def excludes_zero(self) -> bool:
        return self.ci_low > 0.0 or self.ci_high < 0.0


# --------------------------------------------------------------------------- bootstrap
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


def percentile_interval(point: float, replicates: np.ndarray, level: float = 0.95) -> Interval:
    """``point`` with the percentile CI of its bootstrap ``replicates`` (the central ``level``
    share of them); every bootstrap CI of the project ends here."""
    lo, hi = np.quantile(replicates, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(point), float(lo), float(hi))


def bootstrap_mean(values: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> Interval:
    """Mean of per-user values with a percentile-bootstrap CI."""
    values = np.asarray(values, dtype=np.float64)
    boots = values[bootstrap_indices(len(values), n_boot, seed)].mean(axis=1)
    return percentile_interval(values.mean(), boots, level)


def bootstrap_ratio(
    numerator: np.ndarray, denominator: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> Interval:
    """sum(numerator) / sum(denominator) over users, with a percentile-bootstrap CI (a
    resample with a zero denominator counts as 0, like the point estimate)."""
    num, den = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    idx = bootstrap_indices(len(num), n_boot, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        boots = num[idx].sum(axis=1) / den[idx].sum(axis=1)
        point = num.sum() / den.sum() if den.sum() > 0 else 0.0
    return percentile_interval(point, np.nan_to_num(boots, nan=0.0), level)


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


# --------------------------------------------------------------------------- prediction quality
def roc_auc(y: np.ndarray, score: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """Area under the ROC curve of ``score`` for the binary labels ``y > 0.5`` (ties count
    one half; scikit-learn's ``roc_auc_score``). NaN unless both classes have positive
    weight, instead of an error: a held-out split or a bootstrap resample may lack one."""
    y = np.asarray(y) > 0.5
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if not (w[y].sum() > 0 and w[~y].sum() > 0):
        return float("nan")
    return float(roc_auc_score(y, score, sample_weight=sample_weight))


def log_loss(y: np.ndarray, p: np.ndarray, eps: float = _EPS) -> float:
    """Mean binary cross-entropy of probabilities ``p`` (clipped to [eps, 1 - eps], so one
    confident miss cannot make it infinite); NaN for no rows."""
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))) if len(p) else float("nan")


def _binned_sums(pred: np.ndarray, target: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-mass bins of ``pred`` (quantile edges): per bin sum(pred), sum(target), rows."""
    pred, target = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    edges = np.quantile(pred, np.linspace(0, 1, n_bins + 1)[1:-1])
    bins = np.searchsorted(edges, pred, side="right")
    return np.bincount(bins, pred, n_bins), np.bincount(bins, target, n_bins), np.bincount(bins, minlength=n_bins)


def calibration_bins(
    pred: np.ndarray, target: np.ndarray, n_bins: int = 20
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-mass bins of ``pred``: per bin the mean prediction, the mean ``target`` (an
    outcome, or the true probability when it is known) and the share of rows (the weight).
    Each is (n_bins,); an empty bin (ties) has means 0 and weight 0."""
    sum_pred, sum_target, count = _binned_sums(pred, target, n_bins)
    denom = np.maximum(count, 1)
    return sum_pred / denom, sum_target / denom, count / len(pred)


def expected_calibration_error(pred: np.ndarray, target: np.ndarray, n_bins: int = 20) -> float:
    """sum_b w_b |mean(pred_b) - mean(target_b)| over the bins of ``calibration_bins`` (the
    gap is taken between bin sums, then divided by the count)."""
    sum_pred, sum_target, count = _binned_sums(pred, target, n_bins)
    return float((count / len(pred) * (np.abs(sum_pred - sum_target) / np.maximum(count, 1))).sum())
