"""How close are synthetic user profiles to real ones?

* ``c2st_auc``: a classifier two-sample test. A gradient-boosting classifier
  (``HistGradientBoostingClassifier``, categoricals declared as categorical) is trained to tell
  real rows from synthetic rows on a balanced set; the score is its k-fold cross-validated ROC
  AUC. 0.5 means the classifier cannot tell them apart; 1.0 means it always can. It sees the
  joint distribution, so it catches broken dependencies that per-feature distances miss.
* per-feature marginal distances: total variation for categoricals; Kolmogorov-Smirnov
  statistic and Wasserstein-1 (in the feature's own unit) for numerics.
* ``correlation_diff``: mean absolute difference between the correlation matrices of the
  one-hot + numeric encodings (pairs within one categorical feature excluded: they are fixed by
  its marginal), plus the Frobenius norm of the same difference.
* ``profile_fidelity``: all of the above in one dict, including the C2ST AUC of a baseline
  sampler (normally independent marginals) so a generator's score has a reference.

Profiles are passed as ``envs.world.Profiles`` (what ``profiles_from_logs`` and a user GAN's
``sample`` return) or as a ``(categorical, numeric)`` tuple of arrays. Features are matched by
column position.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.world import Profiles
from recsys.stats import roc_auc

_MAX_HGB_CATEGORIES = 255  # HistGradientBoosting's limit for a native categorical feature


ProfileLike = Profiles | tuple[np.ndarray, np.ndarray]


def _arrays(x: ProfileLike, name: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(x, tuple):
        if len(x) != 2:
            raise ValueError(f"{name}: expected a (categorical, numeric) pair, got a tuple of {len(x)}")
        cat, num = x
    elif isinstance(x, Profiles):
        cat, num = x.categorical, x.numeric
    else:
        raise TypeError(f"{name}: expected Profiles or a (categorical, numeric) tuple, got {type(x).__name__}")
    cat = np.asarray(cat)
    num = np.asarray(num, dtype=np.float64)
    if cat.ndim != 2 or num.ndim != 2 or len(cat) != len(num):
        raise ValueError(
            f"{name}: categorical and numeric must be 2-d with the same number of rows, "
            f"got shapes {cat.shape} and {num.shape}"
        )
    if cat.size and (not np.issubdtype(cat.dtype, np.integer) or cat.min() < 0):
        raise ValueError(f"{name}: categorical codes must be non-negative integers")
    if not np.all(np.isfinite(num)):
        raise ValueError(f"{name}: numeric features must be finite")
    return cat.astype(np.int64), num


def _pair(real: ProfileLike, synthetic: ProfileLike) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    r, s = _arrays(real, "real"), _arrays(synthetic, "synthetic")
    if r[0].shape[1] != s[0].shape[1] or r[1].shape[1] != s[1].shape[1]:
        raise ValueError(
            f"synthetic: has {s[0].shape[1]} categorical + {s[1].shape[1]} numeric features, "
            f"real has {r[0].shape[1]} + {r[1].shape[1]}; generate the same features"
        )
    if r[0].shape[1] + r[1].shape[1] == 0:
        raise ValueError("real: no features to compare")
    return r, s


# ------------------------------------------------------------------------------------------- C2ST
def c2st_auc(real: ProfileLike, synthetic: ProfileLike, n_folds: int = 5, seed: int = 0) -> float:
    """Classifier two-sample test: mean ``n_folds``-fold cross-validated ROC AUC of a
    HistGradientBoostingClassifier telling real rows (label 1) from synthetic rows (label 0).

    The two sets are balanced first (the larger one is subsampled, without replacement, to the
    size of the smaller); folds are stratified and shuffled with ``seed``. With n rows per side
    the AUC of two samples of one distribution is 0.5 up to roughly ±1/sqrt(3 n)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold

    (rc, rn), (sc, sn) = _pair(real, synthetic)
    if n_folds < 2:
        raise ValueError(f"n_folds: must be >= 2, got {n_folds}")
    n = min(len(rc), len(sc))
    if n < n_folds:
        raise ValueError(f"real/synthetic: need at least n_folds={n_folds} rows each, got {len(rc)} and {len(sc)}")
    g = np.random.default_rng(seed)
    ri = np.sort(g.choice(len(rc), size=n, replace=False))
    si = np.sort(g.choice(len(sc), size=n, replace=False))
    cat = np.concatenate([rc[ri], sc[si]])
    x = np.concatenate([cat.astype(np.float64), np.concatenate([rn[ri], sn[si]])], axis=1)
    y = np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)])
    n_cat = cat.shape[1]
    is_cat = [bool(j < n_cat and cat[:, j].max() < _MAX_HGB_CATEGORIES) for j in range(x.shape[1])]
    aucs = []
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for train, test in folds.split(x, y):
        clf = HistGradientBoostingClassifier(
            categorical_features=is_cat if any(is_cat) else None, random_state=seed
        )
        clf.fit(x[train], y[train])
        aucs.append(roc_auc(y[test], clf.predict_proba(x[test])[:, 1]))
    return float(np.mean(aucs))


# ------------------------------------------------------------------------------ marginal distances
def marginal_tv(real: ProfileLike, synthetic: ProfileLike, names: list[str] | None = None) -> dict[str, float]:
    """Total variation distance (0 = same, 1 = disjoint) between the code frequencies of each
    categorical feature. Keys: ``names``, else ``real.categorical_names``, else cat_0, cat_1, ..."""
    (rc, _), (sc, _) = _pair(real, synthetic)
    names = names or _names(real, "categorical_names", rc.shape[1], "cat_")
    out = {}
    for j, name in enumerate(names):
        k = int(max(rc[:, j].max(initial=0), sc[:, j].max(initial=0))) + 1
        p = np.bincount(rc[:, j], minlength=k) / max(len(rc), 1)
        q = np.bincount(sc[:, j], minlength=k) / max(len(sc), 1)
        out[name] = float(0.5 * np.abs(p - q).sum())
    return out


def marginal_ks(real: ProfileLike, synthetic: ProfileLike, names: list[str] | None = None) -> dict[str, float]:
    """Two-sample Kolmogorov-Smirnov statistic (max CDF gap, in [0, 1]) per numeric feature."""
    from scipy.stats import ks_2samp

    (_, rn), (_, sn) = _pair(real, synthetic)
    names = names or _names(real, "numeric_names", rn.shape[1], "num_")
    return {name: float(ks_2samp(rn[:, j], sn[:, j]).statistic) for j, name in enumerate(names)}


def marginal_wasserstein(
    real: ProfileLike, synthetic: ProfileLike, names: list[str] | None = None
) -> dict[str, float]:
    """Wasserstein-1 distance per numeric feature, in the feature's own unit."""
    from scipy.stats import wasserstein_distance

    (_, rn), (_, sn) = _pair(real, synthetic)
    names = names or _names(real, "numeric_names", rn.shape[1], "num_")
    return {name: float(wasserstein_distance(rn[:, j], sn[:, j])) for j, name in enumerate(names)}


def _encode(cat: np.ndarray, num: np.ndarray, cards: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """One-hot + numeric columns and, per column, the feature it comes from."""
    cols, owner = [], []
    for j, k in enumerate(cards):
        cols.append(np.eye(k)[np.minimum(cat[:, j], k - 1)])
        owner += [j] * k
    cols.append(num)
    owner += list(range(len(cards), len(cards) + num.shape[1]))
    return np.concatenate(cols, axis=1), np.asarray(owner)


def _corr(x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.corrcoef(x, rowvar=False)
    return np.nan_to_num(np.atleast_2d(c))  # a constant column correlates with nothing


def correlation_matrices(real: ProfileLike, synthetic: ProfileLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(real corr, synthetic corr, owner) of the one-hot + numeric encodings; ``owner[i]`` is the
    feature index (categoricals first) of encoded column i."""
    (rc, rn), (sc, sn) = _pair(real, synthetic)
    cards = [int(max(rc[:, j].max(initial=0), sc[:, j].max(initial=0))) + 1 for j in range(rc.shape[1])]
    xr, owner = _encode(rc, rn, cards)
    xs, _ = _encode(sc, sn, cards)
    return _corr(xr), _corr(xs), owner


def correlation_diff(real: ProfileLike, synthetic: ProfileLike) -> dict[str, float]:
    """``mean_abs``: mean |corr_real - corr_synthetic| over pairs of encoded columns from
    different features; ``frobenius``: the Frobenius norm of the difference over the same pairs
    (each pair counted once)."""
    cr, cs, owner = correlation_matrices(real, synthetic)
    mask = np.triu(owner[:, None] != owner[None, :], k=1)
    if not mask.any():
        return {"mean_abs": 0.0, "frobenius": 0.0}
    d = (cr - cs)[mask]
    return {"mean_abs": float(np.abs(d).mean()), "frobenius": float(np.sqrt((d**2).sum()))}


# ----------------------------------------------------------------------------------------- summary
def _names(x: Any, attr: str, n: int, prefix: str) -> list[str]:
    names = getattr(x, attr, None)
    return list(names) if names is not None and len(names) == n else [f"{prefix}{j}" for j in range(n)]


def profile_fidelity(
    real_heldout: ProfileLike,
    synthetic: ProfileLike,
    baseline_synthetic: ProfileLike | None = None,
    n_folds: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Every fidelity metric of ``synthetic`` against held-out real profiles (real data the
    generator did not train on), and the C2ST AUC of ``baseline_synthetic`` for reference.

    Keys: ``n_real``, ``n_synthetic``, ``c2st_auc``, ``c2st_auc_marginals_baseline`` (None
    without a baseline), ``marginal_tv``/``marginal_ks``/``marginal_wasserstein``
    ({feature: distance}), ``correlation_diff`` (mean abs), ``correlation_frobenius``, and the
    baseline's marginal distances and correlation difference under ``baseline``."""
    r, s = _pair(real_heldout, synthetic)
    cat_names = _names(real_heldout, "categorical_names", r[0].shape[1], "cat_")
    num_names = _names(real_heldout, "numeric_names", r[1].shape[1], "num_")
    corr = correlation_diff(r, s)
    out: dict[str, Any] = {
        "n_real": len(r[0]),
        "n_synthetic": len(s[0]),
        "c2st_auc": c2st_auc(r, s, n_folds, seed),
        "c2st_auc_marginals_baseline": None,
        "marginal_tv": marginal_tv(r, s, cat_names),
        "marginal_ks": marginal_ks(r, s, num_names),
        "marginal_wasserstein": marginal_wasserstein(r, s, num_names),
        "correlation_diff": corr["mean_abs"],
        "correlation_frobenius": corr["frobenius"],
    }
    if baseline_synthetic is not None:
        b = _pair(real_heldout, baseline_synthetic)[1]
        out["c2st_auc_marginals_baseline"] = c2st_auc(r, b, n_folds, seed)
        bcorr = correlation_diff(r, b)
        out["baseline"] = {
            "marginal_tv": marginal_tv(r, b, cat_names),
            "marginal_ks": marginal_ks(r, b, num_names),
            "marginal_wasserstein": marginal_wasserstein(r, b, num_names),
            "correlation_diff": bcorr["mean_abs"],
            "correlation_frobenius": bcorr["frobenius"],
        }
    return out


# -------------------------------------------------------------------------------------------- plot
