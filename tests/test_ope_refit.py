"""Honest OPE intervals and OPE for decisions.

The refitted bootstrap (``estimators.refit_intervals``) is checked on the small MDP of
``test_ope`` with a *tabular* FQE (exact backward induction on the empirical MDP of each
resample), cheap enough to repeat over 100 log draws; FQE's own network ensemble is checked for
its contract (fixed cost, members, diagnostics) and at one seed. The selection metrics and the
report's split into return and one-step estimators are checked on hand-made numbers.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import t as student_t
from test_ope import TRUTH, A, T, _log, _pi

from experiments.ope import FQE, WDR, DirectMethod, DoublyRobust, OPEData
from experiments.ope.estimators import Refits, refit_intervals
from experiments.ope.study import _policy_entry, _selection, _summary
from experiments.report.ope import ope_markdown
from recsys.stats import Interval, bootstrap_counts


def _tabular_q(data: OPEData, obs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(U, T, A) Q^pi of the empirical MDP with users weighted by ``weights`` (a resample)."""
    s = obs[..., 1].astype(int)
    q, v_next = np.zeros((T, 2, A)), np.zeros(2)
    for t in reversed(range(T)):
        for x in range(2):
            for a in range(A):
                m = (s[:, t] == x) & (data.actions[:, t] == a)
                w = weights[m]
                future = (w * v_next[s[m, t + 1]]).sum() if t + 1 < T else 0.0
                q[t, x, a] = ((w * data.rewards[m, t]).sum() + future) / w.sum()
        v_next = (_pi(np.arange(2)) * q[t]).sum(axis=1)
    return q[np.arange(T)[None, :], s]


def test_refitted_bootstrap_covers_at_the_nominal_rate_and_a_fixed_model_does_not() -> None:
    """Over 100 draws of 400 users, FQE's and WDR's 95% CIs from 10 refits of Q cover the
    true value 95% of the time within 3 binomial sd; holding the fitted Q fixed (resampling
    only the users' V(s_0)) leaves the fitting variance out and covers far less."""
    draws, n, refits = 100, 400, 10
    hits: dict[str, list[bool]] = {"fqe": [], "wdr": [], "fixed": []}
    for r in range(draws):
        data, obs = _log(n, seed=500 + r)
        counts = bootstrap_counts(n, refits, r)
        fitted = data.with_policy(data.pi, q_pi=_tabular_q(data, obs, np.ones(n)))
        replicas = [_tabular_q(data, obs, c) for c in counts]
        intervals = refit_intervals([FQE(), WDR()], fitted, Refits(counts, replicas.__getitem__))
        for name, iv in intervals.items():
            hits[name].append(iv.ci_low <= TRUTH <= iv.ci_high)
        iv = FQE().estimate(fitted, n_boot=300, seed=r)
        hits["fixed"].append(iv.ci_low <= TRUTH <= iv.ci_high)
    tolerance = 3 * np.sqrt(0.95 * 0.05 / draws)
    for name in ("fqe", "wdr"):
        assert abs(np.mean(hits[name]) - 0.95) <= tolerance, (name, np.mean(hits[name]))
    assert np.mean(hits["fixed"]) < 0.95 - tolerance, np.mean(hits["fixed"])


def test_refit_interval_is_the_t_interval_of_the_replicates() -> None:
    data, obs = _log(200, seed=7)
    fitted = data.with_policy(data.pi, q_pi=_tabular_q(data, obs, np.ones(200)))
    counts = bootstrap_counts(200, 8, 0)
    iv = refit_intervals([FQE()], fitted, Refits(counts, lambda b: fitted.q_pi))["fqe"]
    v0 = FQE().statistics(fitted)[:, 0]
    replicates = counts @ v0 / 200
    half = student_t.ppf(0.975, 7) * replicates.std(ddof=1)
    assert iv.mean == pytest.approx(v0.mean()) and iv.ci_high - iv.mean == pytest.approx(half)


def test_fqe_cost_does_not_depend_on_the_data_size_and_its_members_are_resamples() -> None:
    sizes = {}
    for n in (100, 1000):
        data, obs = _log(n, seed=8)
        fqe = FQE(iterations=2, steps=5, n_refits=3, hidden=(8,))
        q = fqe.fit(data, obs)
        sizes[n] = fqe.diagnostics["gradient_steps"]
        assert fqe.counts.shape == (3, n) and (fqe.counts.sum(axis=1) == n).all()
        refits = fqe.refits()
        assert not np.allclose(refits.q_pi(0), q)  # member 1 is another network, fitted on another resample
        d = fqe.diagnostics
        assert len(d["bellman_error_train"]) == len(d["bellman_error_held_out"]) == len(d["value"]) == 2
        assert all(x > 0 for x in d["bellman_error_held_out"])
    assert sizes[100] == sizes[1000] == 2 * 5
    horizon = int(data.mask.sum(axis=1).max())
    assert horizon > 2 and fqe.diagnostics["covers_episodes"] is False  # 2 iterations cannot back up the return


def test_fqe_says_when_its_iterations_cannot_cover_an_episode(caplog) -> None:
    data, obs = _log(100, seed=8)
    horizon = int(data.mask.sum(axis=1).max())
    with caplog.at_level("WARNING", logger="campaign_gym"):
        FQE(iterations=2, steps=1, n_refits=0, hidden=(8,)).fit(data, obs)
    assert f"ope.fqe.iterations: 2 < the longest logged episode ({horizon} steps)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="campaign_gym"):
        fqe = FQE(iterations=horizon, steps=1, n_refits=0, hidden=(8,))
        fqe.fit(data, obs)
    assert "ope.fqe.iterations" not in caplog.text and fqe.diagnostics["covers_episodes"] is True
    assert FQE(n_refits=0).refits() is None
    with pytest.raises(ValueError, match="ope.fqe.n_refits"):
        FQE(n_refits=1)


def _draws(values: list[list[float]]) -> list[dict[str, Interval]]:
    return [{"fqe": Interval(v[0], v[0] - 1, v[0] + 1), "ips": Interval(v[1], v[1] - 1, v[1] + 1)} for v in values]


def test_selection_regret_at_1_and_spearman() -> None:
    """True values 1, 2, 4 (spread 3). Draw 1: fqe ranks right (regret 0, rho 1), ips picks
    the worst (regret 1); draw 2: fqe picks the middle one (regret 2/3)."""
    truth = {p: Interval(v, v, v) for p, v in zip("abc", (1.0, 2.0, 4.0), strict=True)}
    per_draw = {"a": _draws([[1.0, 9.0], [1.0, 9.0]]), "b": _draws([[2.0, 5.0], [8.0, 5.0]]),
                "c": _draws([[3.0, 1.0], [3.0, 1.0]])}
    out = _selection(truth, per_draw, {"fqe": "sequential", "ips": "per_decision"})
    assert out["best_policy"] == "c" and out["best_sequential"] == "fqe"
    assert out["estimators"]["fqe"]["regret_at_1"] == pytest.approx((0 + 2 / 3) / 2)
    assert out["estimators"]["fqe"]["spearman"] == pytest.approx((1.0 + 0.5) / 2)
    assert out["estimators"]["ips"]["regret_at_1"] == pytest.approx(1.0)
    assert out["estimators"]["ips"]["spearman"] == pytest.approx(-1.0)


def test_report_scores_each_family_against_its_own_target() -> None:
    kind_of = {"fqe": "sequential", "ips": "per_decision"}
    truth = Interval(2.0, 1.9, 2.1)
    entry = _policy_entry(truth, _draws([[2.2, 4.0], [1.8, 4.4]]), [4.2, 4.2], kind_of, "baseline", [])
    assert entry["estimators"]["fqe"]["target_rel_error"] == pytest.approx(0.1)  # against the return
    assert entry["estimators"]["ips"]["target_rel_error"] == pytest.approx((0.2 / 4.2 + 0.2 / 4.2) / 2)
    assert entry["estimators"]["ips"]["rel_error"] == pytest.approx(1.1)  # against the return
    assert entry["estimators"]["ips"]["target_coverage"] == 1.0 and entry["estimators"]["ips"]["coverage"] == 0.0
    section = {"p": entry, "q": entry, "r": entry}
    summary = {**_summary(section, kind_of, 2), "selection": {"estimators": {}}}
    md = ope_markdown(section, summary, {"n_users": 10, "truth_users": 10})
    returns, one_step = md.split("**One-step value estimators**")
    assert "| fqe |" in returns.split("\n\n")[2] and "ips" not in returns.split("\n\n")[2]
    assert "| ips |" in one_step.split("\n\n")[1] and "fqe" not in one_step.split("\n\n")[1]


def _tabular_reward(data: OPEData, states: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(2, A) mean reward per (state, action) of one-step logs, users weighted by ``weights``."""
    r = np.zeros((2, A))
    for x in range(2):
        for a in range(A):
            m = (states == x) & (data.actions[:, 0] == a)
            r[x, a] = (weights[m] * data.rewards[m, 0]).sum() / weights[m].sum()
    return r


def test_reward_model_members_put_its_fitting_variance_in_dm_and_dr_intervals() -> None:
    """DM's reward model fitted on 150 other (training) users: its noise dominates DM's error, so
    resampling the evaluation users alone covers the one-step value far too rarely; pairing
    resample b with the model fitted on a bootstrap resample b of the training users (an
    ensemble member) covers it at 95% within 3 binomial sd over 100 draws. DR stays covered."""
    draws, n, n_train, members = 100, 400, 150, 10
    truth = float(0.5 * (_pi(np.arange(2)) * np.array([[0.0, 1.0, 0.2], [0.0, 0.1, 2.0]])).sum())
    hits: dict[str, list[bool]] = {"dm": [], "dr": [], "fixed_dm": []}
    for r in range(draws):
        train, train_obs = _log(n_train, seed=2000 + r)
        evaluation, obs = _log(n, seed=3000 + r)
        one = OPEData(actions=evaluation.actions[:, :1], rewards=evaluation.rewards[:, :1],
                      propensities=evaluation.propensities[:, :1], mask=evaluation.mask[:, :1], pi=evaluation.pi[:, :1])
        s_train, s = train_obs[:, 0, 1].astype(int), obs[:, 0, 1].astype(int)
        fits = [_tabular_reward(train, s_train, w) for w in
                [np.ones(n_train), *bootstrap_counts(n_train, members, r).astype(float)]]
        fitted = OPEData(**{**vars(one), "q_hat": fits[0][s][:, None]})
        refits = Refits(bootstrap_counts(n, members, r), q_hat=[f[s][:, None] for f in fits[1:]].__getitem__)
        for name, iv in refit_intervals([DirectMethod(), DoublyRobust()], fitted, refits).items():
            hits[name].append(iv.ci_low <= truth <= iv.ci_high)
        iv = DirectMethod().estimate(fitted, n_boot=300, seed=r)
        hits["fixed_dm"].append(iv.ci_low <= truth <= iv.ci_high)
    tolerance = 3 * np.sqrt(0.95 * 0.05 / draws)
    for name in ("dm", "dr"):
        assert abs(np.mean(hits[name]) - 0.95) <= tolerance, (name, np.mean(hits[name]))
    assert np.mean(hits["fixed_dm"]) < 0.95 - tolerance, np.mean(hits["fixed_dm"])
