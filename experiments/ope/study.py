"""Off-policy evaluation checked against the truth: the ``ope`` section of ``results.json``.

For each of ``draws`` independent sets of TrueWorld logs (the logging policy on fresh
users), every policy is evaluated by every estimator from the logs alone. Its true value is
its mean return in on-policy TrueWorld rollouts (``truth_users`` users, with a CI). Per
policy and estimator we report the first draw's estimate and CI (what a researcher with one
dataset would see), and over the draws: relative error, bias, RMSE and CI coverage.

Per-decision (bandit) estimators target a different quantity — the one-step value on the
logged states — which is known exactly in TrueWorld (the oracle's expected reward of every
action on every logged state); it is reported as ``one_step_value`` so their error can be
split into estimation error and the cost of ignoring the policy's effect on future states.
Each estimator is also scored against *its own* target (``target_rel_error``,
``target_coverage``: the return for sequential ones, that draw's one-step value for the others).

OPE for decisions (``selection``): per draw, every estimator ranks the evaluated policies; we
report the Spearman correlation of its estimates with the true values and its regret@1 (Fu et
al. 2021): the true value of the best policy minus that of the policy it ranks first, divided
by the spread (best minus worst true value), so 0 is a perfect choice and 1 the worst policy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from scipy.stats import spearmanr

from agents.base import Policy, logged_action_probs
from envs.true_world import TrueWorld
from envs.vector_env import CampaignVectorEnv
from experiments.collect import make_env_factory, rollout
from experiments.ope.data import OPEData
from experiments.ope.estimators import PER_DECISION, DirectMethod
from experiments.ope.evaluate import (
    ResponseModelRewards,
    RewardModel,
    estimate_all,
    logged_rewards,
    oracle_rewards,
)
from experiments.ope.fqe import FQE
from experiments.ope.registry import EstimatorConfig
from experiments.parallel import Workers
from recsys.data.replay import LoggedData
from recsys.data.sequences import sequences_from_logs
from recsys.stats import Interval, bootstrap_mean

log = logging.getLogger("campaign_gym")
PolicyFactory = Callable[[CampaignVectorEnv], Policy]


def ope_study(
    config: Any, policies: dict[str, PolicyFactory], kinds: dict[str, str], draw_logs: Callable[[int], pa.Table],
    reward_model: RewardModel, truth_users_from: int, progress: bool = False, workers: Workers | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Returns (the ``ope`` section, a summary: which estimator to trust for which kind).

    ``draw_logs(d)``: the d-th independent logs table; ``kinds[name]``: the policy's group
    in the summary (e.g. "RL agent", "recommender (greedy)"). Each policy's truth rollout and
    each (draw, policy) estimation is one job on ``workers`` (inline without)."""
    ope, ev, seed = config.experiment.ope, config.experiment.evaluation, config.experiment.seed
    world, campaign = config.world, config.campaign
    make_env = make_env_factory(lambda n: TrueWorld(world, n_users=n), campaign)
    catalog = make_env(1).catalog
    probe = make_env(1)
    estimators = EstimatorConfig(**vars(ope.estimators))
    jobs = workers or Workers(1)

    truth_jobs = {name: jobs.submit(_true_value, make_env, f, ope.truth_users, truth_users_from, ev.n_bootstrap,
                                    ev.ci_level, seed) for name, f in policies.items()}
    per_draw: dict[str, list[dict[str, Interval]]] = {name: [] for name in policies}
    one_step: dict[str, list[float]] = {name: [] for name in policies}
    fqe_fits: dict[str, list[dict[str, Any]]] = {name: [] for name in policies}
    for draw in range(ope.draws):  # one draw's jobs at a time: each carries that draw's logs
        data = sequences_from_logs(draw_logs(draw), n_actions=catalog.n_actions)
        logged = LoggedData.replay(data, catalog, probe.world.profile_schema, campaign)
        q_members = reward_model.members(data) if isinstance(reward_model, ResponseModelRewards) else []
        draw_data = _DrawData(logged, logged_rewards(campaign, catalog, data), reward_model(data), q_members,
                              oracle_rewards(world, catalog, campaign, data))
        estimates = jobs.gather({f"ope_{name}_draw_{draw}": jobs.submit(
            _estimate_policy, factory, probe.world, campaign, draw_data, estimators, ope.n_bootstrap, ev.ci_level,
            seed, seed + draw) for name, factory in policies.items()}, f"ope: draw {draw}", progress)
        for name in policies:
            intervals, fits, value = estimates[f"ope_{name}_draw_{draw}"]
            per_draw[name].append(intervals)
            fqe_fits[name] += fits
            one_step[name].append(value)
    truth = jobs.gather({f"ope_truth_{name}": f for name, f in truth_jobs.items()}, "ope: true values", progress)
    truth = {name: truth[f"ope_truth_{name}"] for name in policies}
    kind_of = {e.name: e.kind for e in estimators.build(seed)}
    section = {name: _policy_entry(truth[name], per_draw[name], one_step[name], kind_of, kinds.get(name, ""),
                                   fqe_fits[name]) for name in policies}
    return section, {**_summary(section, kind_of, ope.draws), "selection": _selection(truth, per_draw, kind_of)}


@dataclass(frozen=True)
class _DrawData:
    """One draw of logs, as every policy's estimation reads it."""

    logged: LoggedData
    rewards: np.ndarray
    q_hat: np.ndarray | None  # the reward model's expected reward per (user, step, action)
    q_members: list[np.ndarray]  # per ensemble member (its fitting variance in the CIs)
    q_true: np.ndarray  # the oracle's: the exact one-step value


def _true_value(make_env: Callable[[int], CampaignVectorEnv], factory: PolicyFactory, n_users: int, first: int,
                n_bootstrap: int, level: float, seed: int) -> Interval:
    return bootstrap_mean(rollout(make_env, factory, n_users, first).ret, n_bootstrap, level, seed)


def _estimate_policy(factory: PolicyFactory, world: Any, campaign: Any, draw: _DrawData,
                     estimators: EstimatorConfig, n_bootstrap: int, level: float, seed: int, draw_seed: int,
                     ) -> tuple[dict[str, Interval], list[dict[str, Any]], float]:
    """(every estimator's interval, FQE's fitting diagnostics, the exact one-step value) of one
    policy on one draw; fresh estimators, so a job's result cannot depend on an earlier one's."""
    fitted = estimators.build(seed)
    pi = logged_action_probs(factory(CampaignVectorEnv(world, campaign)), draw.logged)
    intervals = estimate_all(draw.logged, draw.rewards, pi, draw.q_hat, fitted, n_bootstrap, level, draw_seed,
                             draw.q_members)
    d = draw.logged.data
    exact = OPEData(actions=d.actions, rewards=draw.rewards, propensities=d.propensity, mask=d.mask, pi=pi,
                    q_hat=draw.q_true)
    return (intervals, [dict(e.diagnostics) for e in fitted if isinstance(e, FQE)],
            float(DirectMethod().statistics(exact).mean()))


def _policy_entry(truth: Interval, draws: list[dict[str, Interval]], one_step: list[float],
                  kind_of: dict[str, str], kind: str, fqe_fits: list[dict[str, Any]]) -> dict[str, Any]:
    estimators = {}
    for name in draws[0]:
        est = np.array([d[name].mean for d in draws])
        target = np.full(len(draws), truth.mean) if kind_of[name] != PER_DECISION else np.array(one_step)
        covered = np.array([d[name].ci_low <= truth.mean <= d[name].ci_high for d in draws])
        on_target = np.array([d[name].ci_low <= x <= d[name].ci_high for d, x in zip(draws, target, strict=True)])
        scale = abs(truth.mean) if truth.mean else 1.0
        first = draws[0][name]
        estimators[name] = {
            "estimate": first.mean, "ci_low": first.ci_low, "ci_high": first.ci_high, "target": kind_of[name],
            "rel_error": float(np.mean(np.abs(est - truth.mean)) / scale),
            "bias": float(np.mean(est - truth.mean)),
            "rmse": float(np.sqrt(np.mean((est - truth.mean) ** 2))),
            "coverage": float(covered.mean()),
            "target_rel_error": float(np.mean(np.abs(est - target) / np.maximum(np.abs(target), 1e-12))),
            "target_coverage": float(on_target.mean()),
            "ci_width": float(np.mean([d[name].ci_high - d[name].ci_low for d in draws])),
            "draws": len(draws),
        }
    entry = {"kind": kind, "true_value": truth.mean, "true_value_ci": [truth.ci_low, truth.ci_high],
             "one_step_value": float(np.mean(one_step)), "estimators": estimators}
    if fqe_fits:  # the first draw's per-iteration trace, and the final errors of every draw
        entry["fqe_diagnostics"] = {**fqe_fits[0], "final_bellman_error_held_out": [
            f["bellman_error_held_out"][-1] for f in fqe_fits], "final_bellman_error_train": [
            f["bellman_error_train"][-1] for f in fqe_fits]}
    return entry


def _selection(truth: dict[str, Interval], per_draw: dict[str, list[dict[str, Interval]]],
               kind_of: dict[str, str]) -> dict[str, Any]:
    """Per estimator, over the draws: mean Spearman correlation of its estimates with the true
    values, mean normalised regret@1 of choosing its top policy, and the first draw's choice."""
    names = list(truth)
    true = np.array([truth[n].mean for n in names])
    spread = float(true.max() - true.min()) or 1.0
    out: dict[str, Any] = {"policies": names, "best_policy": names[int(np.argmax(true))], "estimators": {}}
    if len(names) < 3:
        return out
    for est in kind_of:
        regrets, rhos, chosen = [], [], []
        for d in range(len(per_draw[names[0]])):
            if any(est not in per_draw[n][d] for n in names):
                continue
            estimates = np.array([per_draw[n][d][est].mean for n in names])
            top = int(np.argmax(estimates))
            regrets.append(float(true.max() - true[top]) / spread)
            rhos.append(float(spearmanr(estimates, true).statistic))
            chosen.append(names[top])
        if regrets:
            out["estimators"][est] = {"target": kind_of[est], "regret_at_1": float(np.mean(regrets)),
                                      "spearman": float(np.mean(rhos)), "chosen_first_draw": chosen[0]}
    sequential = [e for e, v in out["estimators"].items() if v["target"] != PER_DECISION]
    out["best_sequential"] = max(sequential, key=lambda e: out["estimators"][e]["spearman"], default=None)
    return out


def _summary(section: dict[str, Any], kind_of: dict[str, str], draws: int) -> dict[str, Any]:
    """Per kind of policy: each estimator's median relative error and mean coverage across
    the policies of that kind, and the one with the lowest median error."""
    kinds: dict[str, list[str]] = {}
    for name, entry in section.items():
        kinds.setdefault(entry["kind"], []).append(name)
    out: dict[str, Any] = {"draws": draws, "by_kind": {}}
    for kind, names in kinds.items():
        table = {}
        for est in kind_of:
            rows = [section[n]["estimators"][est] for n in names if est in section[n]["estimators"]]
            if rows:
                table[est] = {"median_rel_error": float(np.median([r["rel_error"] for r in rows])),
                              "coverage": float(np.mean([r["coverage"] for r in rows])),
                              "target": kind_of[est],
                              "target_median_rel_error": float(np.median([r["target_rel_error"] for r in rows])),
                              "target_coverage": float(np.mean([r["target_coverage"] for r in rows]))}
        best = min(table, key=lambda e: table[e]["median_rel_error"]) if table else None
        out["by_kind"][kind] = {"policies": names, "estimators": table, "best": best,
                                "best_per_decision": min((e for e in table if kind_of[e] == PER_DECISION),
                                                         key=lambda e: table[e]["median_rel_error"], default=None)}
    return out
