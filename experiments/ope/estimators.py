"""Off-policy estimators of a policy's value per episode (user), one small dataclass each.

Every estimator reduces the logs to per-user sufficient statistics (``statistics``: a
``(U, K)`` array) and a ``combine`` of their sums. The point estimate is
``combine(sum over users)``; the percentile-bootstrap CI resamples users (episodes, the
independent units) as counts ``C (B, U)`` so that ``combine(C @ statistics)`` gives all B
replicates in one matrix product, self-normalised estimators included.

That CI holds the models fixed. Estimators that read a return model fitted on the same logs
(FQE, WDR with FQE's Q) get ``refit_intervals`` instead: replicate b uses the model *refitted*
on resample b (``Refits``), so the interval includes the fitting variance. The DM/DR reward
model is fitted on other logs (the training users); when it is an ensemble whose members were
fitted on bootstrap resamples of those users, member b with resample b of the evaluation users
is a replicate of both sources of variance (``Refits.q_hat``). Refits are costly,
so there are few (``n_refits``, ~10) and the interval is the normal one from their standard
deviation (Student-t quantile), which is stable with few replicates where percentiles are not.

Two families, with different targets:

* **per-decision** (contextual-bandit) estimators treat each logged decision as a context
  and estimate ``sum_t E_{a~pi}[r | s_t, a]`` over the *logged* states: the value of acting
  with pi for one step and then following the logged history. This is what bandit OPE
  computes on sequential logs; it ignores that pi's actions change the future states
  (fatigue, nurturing, churn), so it can be far from pi's on-policy value — the validation
  report shows by how much.
* **sequential** estimators (PDIS, WDR, FQE) estimate pi's expected return per episode.

Formulas, with w_t = pi(a_t|s_t) / mu(a_t|s_t), rho_t = prod_{k<=t} w_k, q-hat the reward
model and n the number of users:

* DM:  (1/n) sum_i sum_t sum_a pi(a|s_it) q(s_it, a)                     (Dudik et al. 2011)
* IPS: (1/n) sum_i sum_t w_it r_it
* SNIPS: (sum w r / sum w) x (decisions per user)          (self-normalised, Swaminathan & Joachims 2015)
* DR:  DM + (1/n) sum_i sum_t w_it (r_it - q(s_it, a_it))                (Dudik et al. 2011)
* SNDR: DM + (sum w (r - q) / sum w) x (decisions per user)
* Switch-DR: DM + (1/n) sum 1{w <= tau} w (r - q)       (Wang et al. 2017; the form used in OBP)
* DRos: DM + (1/n) sum w_lambda (r - q), w_lambda = lambda w / (w^2 + lambda)   (Su et al. 2020)
* PDIS: (1/n) sum_i sum_t gamma^t rho_it r_it                (Precup et al. 2000; Jiang & Li 2016)
* WDR: sum_t gamma^t [sum_i v_it (r_it - Q(s_it, a_it)) + sum_i v_i,t-1 V(s_it)],
  v_it = rho_it / sum_j rho_jt, v_i,-1 = 1/n, V(s) = sum_a pi(a|s) Q(s, a)
  (Thomas & Brunskill 2016, eq. 9 with Q = FQE's Q-function when given, else q-hat)

Written here rather than taken from OBP: obp 0.5.7 needs Python < 3.11 with exact old pins and
0.4.1's dataset class breaks on pandas 3 (its wheel is installed with ``--no-deps`` for the
data and the BTS prior), and the sequential estimators are not in it. The one-step estimators
agree with ``obp.ope`` 0.4.1 to 1e-10 (tests/test_ope_reference.py). ``experiments.ope.registry``
lists every estimator by name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
from scipy.stats import t as student_t

from experiments.ope.data import OPEData
from recsys.stats import Interval, bootstrap_counts, percentile_interval

PER_DECISION, SEQUENTIAL = "per_decision", "sequential"  # an estimator's ``kind``: its target (module docstring)


@dataclass
class Estimator(ABC):
    """Base interface: ``estimate(data)`` -> point estimate with a percentile-bootstrap CI.
    ``name`` is the estimator's results.json key, ``kind`` its target (``PER_DECISION`` or
    ``SEQUENTIAL``)."""

    name: ClassVar[str]
    kind: ClassVar[str]
    needs_model: ClassVar[bool] = False
    reads_return_model: ClassVar[bool] = False  # uses OPEData.q_pi when given: refit per replicate

    @abstractmethod
    def statistics(self, data: OPEData) -> np.ndarray:
        """(U, K) per-user statistics whose sums ``combine`` turns into the estimate."""

    def combine(self, sums: np.ndarray, n: float) -> np.ndarray:
        """Estimate from the (..., K) sums over n users. Default: the mean of column 0."""
        return sums[..., 0] / n

    def estimate(self, data: OPEData, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> Interval:
        if self.needs_model and data.q_hat is None:
            raise ValueError(f"ope.{self.name}: needs a reward model (OPEData.q_hat); pass one or drop the estimator")
        stats = self.statistics(data)
        n = data.n_users
        point = float(self.combine(stats.sum(axis=0), n))
        return percentile_interval(point, self.combine(bootstrap_counts(n, n_boot, seed) @ stats, n), level)


@dataclass(frozen=True)
class Refits:
    """Bootstrap replicates with a model refitted on each: ``counts`` (B, U) how often each
    user is in resample b; ``q_pi(b)`` the return model or ``q_hat(b)`` the reward model,
    (U, T, A), fitted on resample b (None: that model is not refitted)."""

    counts: np.ndarray
    q_pi: Callable[[int], np.ndarray] | None = None
    q_hat: Callable[[int], np.ndarray] | None = None


def refit_intervals(estimators: Sequence[Estimator], data: OPEData, refits: Refits,
                    level: float = 0.95) -> dict[str, Interval]:
    """Each estimator on ``data`` (its models fitted on all users) with the normal CI of its
    refitted bootstrap replicates; one refitted model serves every estimator."""
    n, values = data.n_users, {e.name: [] for e in estimators}
    for b, counts in enumerate(refits.counts):
        replicate = replace(data, q_pi=data.q_pi if refits.q_pi is None else refits.q_pi(b),
                            q_hat=data.q_hat if refits.q_hat is None else refits.q_hat(b))
        for e in estimators:
            values[e.name].append(float(e.combine(counts @ e.statistics(replicate), n)))
    return {e.name: normal_interval(float(e.combine(e.statistics(data).sum(axis=0), n)), np.array(values[e.name]),
                                    level) for e in estimators}


def normal_interval(point: float, replicates: np.ndarray, level: float = 0.95) -> Interval:
    """``point`` +- q * sd(replicates), q the Student-t quantile with B - 1 degrees of freedom:
    the bootstrap interval for few (refitted) replicates; t rather than z pays for estimating
    the sd from B replicates (B = 10: 2.26 instead of 1.96)."""
    half = float(student_t.ppf((1 + level) / 2, len(replicates) - 1) * np.std(replicates, ddof=1))
    return Interval(float(point), float(point) - half, float(point) + half)


def _per_user(x: np.ndarray) -> np.ndarray:
    return x.sum(axis=1)[:, None]


# --------------------------------------------------------------------------- per decision
@dataclass
class DirectMethod(Estimator):
    name = "dm"
    kind = PER_DECISION
    needs_model = True

    def statistics(self, data: OPEData) -> np.ndarray:
        return _per_user(data.model_value(data.q_hat))


@dataclass
class IPS(Estimator):
    name = "ips"
    kind = PER_DECISION

    def statistics(self, data: OPEData) -> np.ndarray:
        return _per_user(data.weights() * data.rewards)


@dataclass
class SNIPS(Estimator):
    name = "snips"
    kind = PER_DECISION

    def statistics(self, data: OPEData) -> np.ndarray:
        w = data.weights()
        return np.stack([(w * data.rewards).sum(1), w.sum(1), data.mask.sum(1)], axis=1)

    def combine(self, sums: np.ndarray, n: float) -> np.ndarray:
        return _safe_divide(sums[..., 0], sums[..., 1]) * sums[..., 2] / n


@dataclass
class DoublyRobust(Estimator):
    name = "dr"
    kind = PER_DECISION
    needs_model = True

    def shrink(self, w: np.ndarray) -> np.ndarray:
        """The weight on the residual (DR: w itself; variants shrink it)."""
        return w

    def statistics(self, data: OPEData) -> np.ndarray:
        residual = data.rewards - data.logged_model(data.q_hat)
        return _per_user(data.model_value(data.q_hat) + self.shrink(data.weights()) * residual)


@dataclass
class SNDR(Estimator):
    name = "sndr"
    kind = PER_DECISION
    needs_model = True

    def statistics(self, data: OPEData) -> np.ndarray:
        w = data.weights()
        residual = w * (data.rewards - data.logged_model(data.q_hat))
        return np.stack([data.model_value(data.q_hat).sum(1), residual.sum(1), w.sum(1), data.mask.sum(1)], axis=1)

    def combine(self, sums: np.ndarray, n: float) -> np.ndarray:
        return sums[..., 0] / n + _safe_divide(sums[..., 1], sums[..., 2]) * sums[..., 3] / n


@dataclass
class SwitchDR(DoublyRobust):
    """DR where the weight is at most ``tau``; above it only the model (DM) is used."""

    name = "switch_dr"
    tau: float = 20.0

    def __post_init__(self) -> None:
        if not self.tau > 0:
            raise ValueError(f"ope.switch_dr.tau: must be > 0, got {self.tau}")

    def shrink(self, w: np.ndarray) -> np.ndarray:
        return np.where(w <= self.tau, w, 0.0)


@dataclass
class DRos(DoublyRobust):
    """DR with optimistic shrinkage: w -> lambda w / (w^2 + lambda); lambda -> inf is DR."""

    name = "dr_os"
    lam: float = 100.0

    def __post_init__(self) -> None:
        if not self.lam > 0:
            raise ValueError(f"ope.dr_os.lam: must be > 0, got {self.lam}")

    def shrink(self, w: np.ndarray) -> np.ndarray:
        return self.lam * w / (w**2 + self.lam)


# --------------------------------------------------------------------------- sequential
@dataclass
class PDIS(Estimator):
    name = "pdis"
    kind = SEQUENTIAL

    def statistics(self, data: OPEData) -> np.ndarray:
        return _per_user(np.where(data.mask, data.cumulative_weights() * data.rewards, 0.0) * data.discounts())


@dataclass
class WDR(Estimator):
    """Weighted per-decision doubly robust. Q is ``data.q_pi`` (return-to-go model, e.g.
    FQE) when present, else the immediate reward model ``q_hat`` (a weaker control variate;
    the estimator stays consistent either way)."""

    name = "wdr"
    kind = SEQUENTIAL
    needs_model = True
    reads_return_model = True

    def statistics(self, data: OPEData) -> np.ndarray:
        q = data.q_pi if data.q_pi is not None else data.q_hat
        rho, disc = data.cumulative_weights(), data.discounts()
        residual = np.where(data.mask, rho * (data.rewards - data.logged_model(q)), 0.0) * disc
        rho_before = np.concatenate([np.ones((data.n_users, 1)), rho[:, :-1]], axis=1)
        baseline = rho_before * data.model_value(q) * disc
        return np.concatenate([rho, residual, baseline], axis=1)

    def combine(self, sums: np.ndarray, n: float) -> np.ndarray:
        rho, residual, baseline = np.split(sums, 3, axis=-1)
        rho_before = np.concatenate([np.full((*rho.shape[:-1], 1), float(n)), rho[..., :-1]], axis=-1)
        return (_safe_divide(residual, rho) + _safe_divide(baseline, rho_before)).sum(axis=-1)


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den == 0 (no weight at all: the term has no support)."""
    return np.divide(num, den, out=np.zeros(np.broadcast_shapes(num.shape, den.shape)), where=den != 0)

