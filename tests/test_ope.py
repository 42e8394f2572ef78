"""OPE estimators against problems whose true value is known exactly.

A small episodic MDP (2 user states, 3 actions, 3 steps; the action moves the state) is
logged by a stochastic policy mu; the evaluation policy pi differs. Its true value comes
from exact dynamic programming, so unbiased estimators must cover it with their 95% CI at a
fixed seed, and the biased ones (DM with a wrong model, per-decision estimators on a
sequential problem) must miss it by more than their CI.
"""

from __future__ import annotations

import numpy as np
import pytest

from experiments.ope import (
    ESTIMATORS,
    FQE,
    IPS,
    PDIS,
    PER_DECISION_ESTIMATORS,
    SEQUENTIAL_ESTIMATORS,
    SNDR,
    SNIPS,
    WDR,
    DirectMethod,
    DoublyRobust,
    DRos,
    EstimatorConfig,
    OPEData,
    SwitchDR,
)

T, A = 3, 3
REWARD = np.array([[0.0, 1.0, 0.2], [0.0, 0.1, 2.0]])  # r(s, a): expected reward
MOVE = np.array([[0.1, 0.8, 0.3], [0.2, 0.1, 0.9]])  # p(s' = 1 | s, a): actions move the user


def _mu(s: np.ndarray) -> np.ndarray:
    return np.where(s[:, None] == 0, [0.5, 0.3, 0.2], [0.2, 0.4, 0.4])


def _pi(s: np.ndarray) -> np.ndarray:
    return np.where(s[:, None] == 0, [0.1, 0.8, 0.1], [0.1, 0.1, 0.8])


def _true_value() -> float:
    v = np.zeros(2)  # value-to-go from state s at step t, backwards
    for _ in range(T):
        q = REWARD + MOVE * v[1] + (1 - MOVE) * v[0]
        v = (_pi(np.arange(2)) * q).sum(axis=1)
    return float(0.5 * v.sum())  # initial state uniform


def _log(n: int, seed: int, q_model: np.ndarray | None = None) -> tuple[OPEData, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 2, n)
    actions, rewards, props = (np.zeros((n, T), dtype=np.int64), np.zeros((n, T)), np.zeros((n, T)))
    states, obs = np.zeros((n, T), dtype=np.int64), np.zeros((n, T, 3), dtype=np.float32)
    for t in range(T):
        mu = _mu(s)
        a = (rng.random(n)[:, None] > np.cumsum(mu, axis=1)).sum(axis=1)
        actions[:, t], props[:, t], states[:, t] = a, mu[np.arange(n), a], s
        rewards[:, t] = rng.random(n) < REWARD[s, a] / 2.0  # Bernoulli with mean r/2 ...
        rewards[:, t] *= 2.0  # ... times 2: mean r(s, a), noisy
        obs[:, t, 0], obs[:, t, 1], obs[:, t, 2] = s == 0, s == 1, 1 - t / T
        s = (rng.random(n) < MOVE[s, a]).astype(np.int64)
    q = REWARD if q_model is None else q_model
    data = OPEData(actions=actions, rewards=rewards, propensities=props, mask=np.ones((n, T), dtype=bool),
                   pi=_pi(states.ravel()).reshape(n, T, A), q_hat=q[states])
    return data, obs


TRUTH = _true_value()
ONE_STEP_TRUTH = float(0.5 * (_pi(np.arange(2)) * REWARD).sum())


@pytest.fixture(scope="module")
def logged() -> tuple[OPEData, np.ndarray]:
    return _log(20_000, seed=0)


@pytest.mark.parametrize("estimator", [PDIS(), WDR()])
def test_sequential_estimators_cover_the_true_value(logged, estimator) -> None:
    data, _ = logged
    iv = estimator.estimate(data, n_boot=500)
    assert iv.ci_low <= TRUTH <= iv.ci_high, (estimator.name, iv, TRUTH)
    assert iv.ci_high - iv.ci_low < 0.1 * TRUTH  # and the CI is informative at n = 20,000


def test_per_decision_estimators_miss_a_sequential_value(logged) -> None:
    """IPS/DR estimate sum_t E_pi[r | logged s_t]: the states pi would lead to are ignored,
    and here pi steers users into the rewarding state, so they underestimate."""
    data, _ = logged
    for est in (IPS(), SNIPS(), DoublyRobust(), SNDR(), DirectMethod()):
        iv = est.estimate(data, n_boot=300)
        assert iv.ci_high < TRUTH, (est.name, iv, TRUTH)


def test_per_decision_estimators_are_unbiased_for_one_step() -> None:
    """With one step (a contextual bandit) every estimator with the right support is unbiased."""
    data, _ = _log(20_000, seed=1)
    one = OPEData(actions=data.actions[:, :1], rewards=data.rewards[:, :1], propensities=data.propensities[:, :1],
                  mask=data.mask[:, :1], pi=data.pi[:, :1], q_hat=data.q_hat[:, :1])
    truth = ONE_STEP_TRUTH
    for est in (IPS(), SNIPS(), DoublyRobust(), SNDR(), SwitchDR(tau=2.0), DRos(lam=5.0), DirectMethod(), PDIS(), WDR()):
        iv = est.estimate(one, n_boot=300)
        assert iv.ci_low <= truth <= iv.ci_high, (est.name, iv, truth)


def test_dr_corrects_a_wrong_reward_model_and_dm_does_not() -> None:
    wrong = REWARD * 0.5 + 0.3
    data, _ = _log(20_000, seed=2, q_model=wrong)
    one = OPEData(actions=data.actions[:, :1], rewards=data.rewards[:, :1], propensities=data.propensities[:, :1],
                  mask=data.mask[:, :1], pi=data.pi[:, :1], q_hat=data.q_hat[:, :1])
    truth = ONE_STEP_TRUTH
    dm, dr = DirectMethod().estimate(one, n_boot=300), DoublyRobust().estimate(one, n_boot=300)
    assert not dm.ci_low <= truth <= dm.ci_high
    assert dr.ci_low <= truth <= dr.ci_high


def test_on_policy_logs_give_the_sample_mean() -> None:
    """pi = mu: every weight is 1, so IPS, SNIPS and PDIS are the mean logged return."""
    data, _ = _log(500, seed=3)
    states = (data.pi[..., 2] > 0.5).astype(int)
    on = OPEData(actions=data.actions, rewards=data.rewards, propensities=data.propensities, mask=data.mask,
                 pi=_mu(states.ravel()).reshape(data.pi.shape), q_hat=data.q_hat)
    mean_return = data.rewards.sum(axis=1).mean()
    for est in (IPS(), SNIPS(), PDIS()):
        assert est.estimate(on, n_boot=50).mean == pytest.approx(mean_return)


def test_formulas_match_a_hand_computation() -> None:
    data, _ = _log(50, seed=4)
    w = np.take_along_axis(data.pi, data.actions[..., None], -1)[..., 0] / data.propensities
    r, q = data.rewards, data.q_hat
    q_a = np.take_along_axis(q, data.actions[..., None], -1)[..., 0]
    dm = (data.pi * q).sum(-1)
    assert IPS().estimate(data, 20).mean == pytest.approx((w * r).sum() / 50)
    assert SNIPS().estimate(data, 20).mean == pytest.approx((w * r).sum() / w.sum() * T)
    assert DoublyRobust().estimate(data, 20).mean == pytest.approx((dm + w * (r - q_a)).sum() / 50)
    assert SwitchDR(tau=1.5).estimate(data, 20).mean == pytest.approx((dm + (w <= 1.5) * w * (r - q_a)).sum() / 50)
    shrunk = 3.0 * w / (w**2 + 3.0)
    assert DRos(lam=3.0).estimate(data, 20).mean == pytest.approx((dm + shrunk * (r - q_a)).sum() / 50)
    rho = np.cumprod(w, axis=1)
    assert PDIS().estimate(data, 20).mean == pytest.approx((rho * r).sum() / 50)
    v = rho / rho.sum(0)
    v_prev = np.concatenate([np.full((50, 1), 1 / 50), v[:, :-1]], axis=1)
    assert WDR().estimate(data, 20).mean == pytest.approx((v * r).sum() - (v * q_a - v_prev * dm).sum())


def test_unbiased_estimators_cis_cover_the_one_step_value_at_95_percent() -> None:
    """Over 100 independent one-step log draws, the 95% CIs of IPS, SNIPS and DR contain the
    true one-step value 95% of the time, within 3 binomial sd (an interval that ignored the
    weights' variance, or resampled decisions instead of users, would cover far less)."""
    draws, covered = 100, {"ips": [], "snips": [], "dr": []}
    for seed in range(draws):
        data, _ = _log(400, seed=100 + seed)
        one = OPEData(actions=data.actions[:, :1], rewards=data.rewards[:, :1], propensities=data.propensities[:, :1],
                      mask=data.mask[:, :1], pi=data.pi[:, :1], q_hat=data.q_hat[:, :1] * 0.8)  # a biased model
        for est in (IPS(), SNIPS(), DoublyRobust()):
            iv = est.estimate(one, n_boot=300, seed=seed)
            covered[est.name].append(iv.ci_low <= ONE_STEP_TRUTH <= iv.ci_high)
    for name, hits in covered.items():
        assert abs(np.mean(hits) - 0.95) <= 3 * np.sqrt(0.95 * 0.05 / draws), (name, np.mean(hits))


def test_the_registry_names_every_estimator_once_with_its_target() -> None:
    assert list(ESTIMATORS) == ["dm", "ips", "snips", "dr", "sndr", "switch_dr", "dr_os", "pdis", "wdr", "fqe"]
    assert all(cls.name == name for name, cls in ESTIMATORS.items())
    assert PER_DECISION_ESTIMATORS == ("dm", "ips", "snips", "dr", "sndr", "switch_dr", "dr_os")
    assert SEQUENTIAL_ESTIMATORS == ("pdis", "wdr", "fqe")
    built = EstimatorConfig(names=["wdr", "ips", "fqe"], switch_tau=3.0).build(seed=4)
    assert [e.name for e in built] == ["fqe", "wdr", "ips"] and built[0].seed == 4  # FQE first: WDR uses its Q
    assert EstimatorConfig(names=["switch_dr"], switch_tau=3.0).build()[0].tau == 3.0


def test_estimator_config_rejects_bad_names_and_hyperparameters_before_any_work() -> None:
    from experiments.config import ObdConfig

    with pytest.raises(ValueError, match="unknown \\['magic'\\]"):
        EstimatorConfig(names=["ips", "magic"])
    with pytest.raises(ValueError, match="ope.switch_dr.tau: must be > 0"):
        EstimatorConfig(names=["ips"], switch_tau=0.0)  # even when switch_dr is not run
    with pytest.raises(ValueError, match="ope.fqe.iterations"):
        EstimatorConfig(fqe_iterations=0)
    assert ObdConfig().estimators.names == list(PER_DECISION_ESTIMATORS)  # OBD rows are single steps
    with pytest.raises(ValueError, match="\\['pdis'\\] are not per-decision"):
        ObdConfig(estimators=EstimatorConfig(names=["ips", "pdis"]))


def test_fqe_recovers_the_true_value(logged) -> None:
    data, obs = logged
    fqe = FQE(iterations=5, steps=60, hidden=(32,), learning_rate=5e-3, n_refits=0, seed=0)
    q = fqe.fit(data, obs)
    assert q.shape == (*data.mask.shape, A)
    assert fqe.estimate(data.with_policy(data.pi, q_pi=q), n_boot=100).mean == pytest.approx(TRUTH, rel=0.05)
    # its Q makes WDR's control variates sharper than the immediate-reward model
    narrow = WDR().estimate(data.with_policy(data.pi, q_pi=q), n_boot=300)
    wide = WDR().estimate(data, n_boot=300)
    assert narrow.ci_high - narrow.ci_low < wide.ci_high - wide.ci_low
    assert narrow.ci_low <= TRUTH <= narrow.ci_high


def test_fqe_must_be_fitted_first(logged) -> None:
    with pytest.raises(ValueError, match="fit"):
        FQE().estimate(logged[0])  # no Q-function (OPEData.q_pi) yet


@pytest.mark.parametrize(("field", "value", "match"), [
    ("propensities", 0.0, "ope.propensities: must be in \\(0, 1\\]"),
    ("propensities", np.nan, "ope.propensities"),
    ("rewards", np.nan, "ope.rewards"),
    ("pi", 0.7, "ope.pi: rows must be probabilities summing to 1"),
    ("q_hat", np.inf, "ope.q_hat"),
    ("actions", 5, "ope.actions"),
])
def test_bad_inputs_name_the_field(field, value, match) -> None:
    data, _ = _log(20, seed=5)
    arrays = {k: np.array(getattr(data, k), dtype=float if k != "actions" else np.int64)
              for k in ("actions", "rewards", "propensities", "mask", "pi", "q_hat")}
    arrays["mask"] = arrays["mask"].astype(bool)
    arrays[field][3, 1] = value
    with pytest.raises(ValueError, match=match):
        OPEData(**arrays)


def test_estimators_that_need_a_model_say_so() -> None:
    data, _ = _log(20, seed=6)
    bare = OPEData(actions=data.actions, rewards=data.rewards, propensities=data.propensities, mask=data.mask, pi=data.pi)
    with pytest.raises(ValueError, match="ope.dr: needs a reward model"):
        DoublyRobust().estimate(bare)


# --------------------------------------------------------------------------- policies on logs
def _true_env_factory():
    from envs.true_world import TrueWorld, TrueWorldConfig
    from envs.vector_env import CampaignVectorEnv

    return lambda n: CampaignVectorEnv(TrueWorld(TrueWorldConfig(), n_users=n))


def _replayed(table, env):
    from recsys.data.replay import LoggedData
    from recsys.data.sequences import sequences_from_logs

    data = sequences_from_logs(table, n_actions=env.catalog.n_actions)
    return LoggedData.replay(data, env.catalog, env.world.profile_schema, env.campaign)


def test_recurrent_agent_replayed_on_its_own_logs_reproduces_its_propensities() -> None:
    """Logs of a recurrent PPO policy (LSTM state carried over the episode): replaying them
    through ``agents.base.logged_action_probs`` must give back the logged propensities, which only holds if the
    LSTM state follows each user's logged history step by step."""
    from agents.base import logged_action_probs as policy_probs
    from agents.sb3 import SB3Policy, build_agent
    from experiments.collect import generate_logs

    make_env = _true_env_factory()
    model = build_agent("recurrent_ppo", make_env(4), {"n_steps": 8, "batch_size": 32}, [16], seed=0,
                        tensorboard_dir=None)
    table = generate_logs(make_env, lambda env: SB3Policy(model, "rppo"), n_users=60, seed=7)
    logged = _replayed(table, make_env(1))
    pi = policy_probs(SB3Policy(model, "rppo"), logged)
    d = logged.data
    pi_logged = np.take_along_axis(pi, d.actions[..., None], -1)[..., 0][d.mask]
    np.testing.assert_allclose(pi_logged, d.propensity[d.mask], rtol=1e-5)
    # without the state replay (a fresh LSTM state at every step) the probabilities differ
    safe_masks = logged.masks | ~d.mask[..., None]  # padding rows: any action (never compared)
    fresh = np.stack([SB3Policy(model, "rppo").action_probs(logged.obs[:, t], safe_masks[:, t])
                      for t in range(1, d.horizon)], axis=1)
    later = d.mask[:, 1:]
    assert not np.allclose(np.take_along_axis(fresh, d.actions[:, 1:, None], -1)[..., 0][later],
                           d.propensity[:, 1:][later], rtol=1e-5)


def test_frozen_bandit_does_not_learn_from_evaluation_logs() -> None:
    from agents.bandits import LinUCBBandit
    from agents.base import Frozen
    from agents.base import logged_action_probs as policy_probs
    from agents.reference import LoggingPolicy
    from experiments.collect import generate_logs

    make_env = _true_env_factory()
    table = generate_logs(make_env, lambda env: LoggingPolicy(env), n_users=50, seed=3)
    logged = _replayed(table, make_env(1))
    bandit = LinUCBBandit.for_env(make_env(1))
    rewards = np.where(logged.data.mask, logged.data.click, 0.0)
    policy_probs(Frozen(bandit), logged, rewards)
    assert bandit.counts.sum() == 0
    policy_probs(bandit, logged, rewards)  # unfrozen: a warm start on the logged rewards
    assert bandit.counts.sum() == logged.data.mask.sum()
