"""Reference checks: our per-decision estimators against the Open Bandit Pipeline (obp 0.4.1).

On one-step logs (T = 1: every user is one logged decision) our DM, IPS, SNIPS, DR, SNDR,
Switch-DR and DRos are the contextual-bandit estimators of ``obp.ope``, so their point
estimates must agree to rounding (1e-10 relative) on random logs: random logging propensities
in (0.05, 1], random evaluation-policy distributions, 0/1 rewards and a random reward model.
Switch-DR's ``tau`` and DRos's ``lam`` (obp: ``tau``, ``lambda_``) are each checked at a value
where the clipping / shrinkage is active and at one where it (almost) is not, and Switch-DR
also at a ``tau`` equal to a logged weight (obp and we both keep weights ``w <= tau``).

obp is a test-only dependency (the ``dev`` extra has what ``obp.ope`` imports; the Makefile
installs the wheel with ``--no-deps``); the project itself never imports it.
"""

from __future__ import annotations

import numpy as np
import pytest
from obp.ope import (
    DirectMethod,
    DoublyRobust,
    DoublyRobustWithShrinkage,
    InverseProbabilityWeighting,
    SelfNormalizedDoublyRobust,
    SelfNormalizedInverseProbabilityWeighting,
    SwitchDoublyRobust,
)

from experiments.ope import ESTIMATORS, EstimatorConfig, OPEData

N, A = 500, 5
RTOL = 1e-10
# (seed, Dirichlet concentration of pi's rows): small concentrations give near-deterministic
# evaluation policies and so large importance weights (up to 1 / 0.05 = 20)
DATASETS = [(0, 1.0), (1, 0.3), (2, 0.1)]
SWITCH_TAU_ACTIVE, SWITCH_TAU_OFF = 1.0, 1e3  # weights are at most 20: tau = 1e3 never switches
DROS_LAMBDA_ACTIVE, DROS_LAMBDA_WEAK = 1.0, 1e4  # lambda = 1 shrinks strongly, 1e4 barely


def _logs(seed: int, concentration: float) -> dict[str, np.ndarray]:
    """One-step logs in obp's layout (n rounds; action_dist and q_hat of shape (n, A, 1))."""
    rng = np.random.default_rng(seed)
    pi = rng.dirichlet(np.full(A, concentration), size=N)
    pi /= pi.sum(axis=1, keepdims=True)
    return {
        "action": rng.integers(0, A, size=N),
        "reward": rng.integers(0, 2, size=N).astype(float),
        "pscore": 1.0 - rng.uniform(0.0, 0.95, size=N),  # in (0.05, 1]
        "action_dist": pi[:, :, None],
        "estimated_rewards_by_reg_model": rng.uniform(0.0, 1.0, size=(N, A))[:, :, None],
    }


def _ope_data(logs: dict[str, np.ndarray]) -> OPEData:
    """The same logs as N users with one step each."""
    return OPEData(
        actions=logs["action"][:, None],
        rewards=logs["reward"][:, None],
        propensities=logs["pscore"][:, None],
        mask=np.ones((N, 1), dtype=bool),
        pi=logs["action_dist"][:, None, :, 0],
        q_hat=logs["estimated_rewards_by_reg_model"][:, None, :, 0],
    )


def _ours(name: str, data: OPEData, tau: float = 20.0, lam: float = 100.0) -> float:
    (estimator,) = EstimatorConfig(names=[name], switch_tau=tau, dr_os_lambda=lam).build()
    assert estimator.name == name and type(estimator) is ESTIMATORS[name]
    return estimator.estimate(data, n_boot=10).mean


def _obp(estimator, logs: dict[str, np.ndarray]) -> float:
    if isinstance(estimator, DirectMethod):
        keys = ("action_dist", "estimated_rewards_by_reg_model")
    elif isinstance(estimator, DoublyRobust):
        keys = tuple(logs)
    else:  # IPS, SNIPS: no reward model
        keys = ("reward", "action", "pscore", "action_dist")
    return float(estimator.estimate_policy_value(**{k: logs[k] for k in keys}, position=None))


def _weights(logs: dict[str, np.ndarray]) -> np.ndarray:
    return logs["action_dist"][np.arange(N), logs["action"], 0] / logs["pscore"]


CASES = [
    ("dm", {}, DirectMethod()),
    ("ips", {}, InverseProbabilityWeighting()),
    ("snips", {}, SelfNormalizedInverseProbabilityWeighting()),
    ("dr", {}, DoublyRobust()),
    ("sndr", {}, SelfNormalizedDoublyRobust()),
    ("switch_dr", {"tau": SWITCH_TAU_ACTIVE}, SwitchDoublyRobust(tau=SWITCH_TAU_ACTIVE)),
    ("switch_dr", {"tau": SWITCH_TAU_OFF}, SwitchDoublyRobust(tau=SWITCH_TAU_OFF)),
    ("dr_os", {"lam": DROS_LAMBDA_ACTIVE}, DoublyRobustWithShrinkage(lambda_=DROS_LAMBDA_ACTIVE)),
    ("dr_os", {"lam": DROS_LAMBDA_WEAK}, DoublyRobustWithShrinkage(lambda_=DROS_LAMBDA_WEAK)),
]


@pytest.mark.parametrize("seed, concentration", DATASETS)
@pytest.mark.parametrize("name, params, reference", CASES,
                         ids=[f"{n}-{'-'.join(f'{k}={v:g}' for k, v in p.items())}" for n, p, _ in CASES])
def test_point_estimate_equals_obp(seed, concentration, name, params, reference):
    logs = _logs(seed, concentration)
    ours = _ours(name, _ope_data(logs), **params)
    np.testing.assert_allclose(ours, _obp(reference, logs), rtol=RTOL, atol=0.0)


@pytest.mark.parametrize("seed, concentration", DATASETS)
def test_switch_dr_at_a_logged_weight_equals_obp(seed, concentration):
    """tau equal to a logged weight: that weight is kept (w <= tau) by both."""
    logs = _logs(seed, concentration)
    tau = float(np.sort(_weights(logs))[N // 2])
    assert (_weights(logs) == tau).any()
    ours = _ours("switch_dr", _ope_data(logs), tau=tau)
    np.testing.assert_allclose(ours, _obp(SwitchDoublyRobust(tau=tau), logs), rtol=RTOL, atol=0.0)


@pytest.mark.parametrize("seed, concentration", DATASETS)
def test_hyperparameters_matter_where_claimed(seed, concentration):
    """The agreement above is not vacuous: the 'active' tau and lambda change the estimate,
    the 'off' / 'weak' values (nearly) give DR."""
    logs = _logs(seed, concentration)
    data, w = _ope_data(logs), _weights(logs)
    assert (w > SWITCH_TAU_ACTIVE).mean() > 0.05 and (w <= SWITCH_TAU_ACTIVE).mean() > 0.05
    assert w.max() < SWITCH_TAU_OFF
    dr = _ours("dr", data)
    assert abs(_ours("switch_dr", data, tau=SWITCH_TAU_ACTIVE) - dr) > 1e-3
    assert _ours("switch_dr", data, tau=SWITCH_TAU_OFF) == pytest.approx(dr, rel=1e-12)
    assert abs(_ours("dr_os", data, lam=DROS_LAMBDA_ACTIVE) - dr) > 1e-3
    assert _ours("dr_os", data, lam=DROS_LAMBDA_WEAK) == pytest.approx(dr, rel=1e-2)
    assert _ours("dr_os", data, lam=DROS_LAMBDA_WEAK) != dr
