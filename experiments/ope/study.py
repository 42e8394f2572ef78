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
from typing import Any

import numpy as np
import pyarrow as pa
from scipy.stats import spearmanr
from tqdm.auto import tqdm

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
from recsys.data.replay import LoggedData
from recsys.data.sequences import sequences_from_logs
from recsys.stats import Interval, bootstrap_mean

log = logging.getLogger("campaign_gym")
PolicyFactory = Callable[[CampaignVectorEnv], Policy]


def ope_study(
    config: Any, policies: dict[str, PolicyFactory], kinds: dict[str, str], draw_logs: Callable[[int], pa.Table],
    reward_model: RewardModel, truth_users_from: int, progress: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Returns (the ``ope`` section, a summary: which estimator to trust for which kind).

    ``draw_logs(d)``: the d-th independent logs table; ``kinds[name]``: the policy's group
    in the summary (e.g. "RL agent", "recommender (greedy)")."""
    ope, ev, seed = config.experiment.ope, config.experiment.evaluation, config.experiment.seed
    world, campaign = config.world, config.campaign
    make_env = make_env_factory(lambda n: TrueWorld(world, n_users=n), campaign)
    catalog = make_env(1).catalog
    probe = make_env(1)
    estimators = EstimatorConfig(**vars(ope.estimators)).build(seed)

    truth = {name: bootstrap_mean(rollout(make_env, f, ope.truth_users, truth_users_from).ret, ev.n_bootstrap,
                                  ev.ci_level, seed)
             for name, f in tqdm(policies.items(), desc="ope: true values", disable=not progress)}
    per_draw: dict[str, list[dict[str, Interval]]] = {name: [] for name in policies}
    one_step: dict[str, list[float]] = {name: [] for name in policies}
    fqe_fits: dict[str, list[dict[str, Any]]] = {name: [] for name in policies}
    for draw in tqdm(range(ope.draws), desc="ope: log draws", disable=not progress):
        data = sequences_from_logs(draw_logs(draw), n_actions=catalog.n_actions)
        logged = LoggedData.replay(data, catalog, probe.world.profile_schema, campaign)
        rewards = logged_rewards(campaign, catalog, data)
        q_hat = reward_model(data)
        q_members = reward_model.members(data) if isinstance(reward_model, ResponseModelRewards) else []
        q_true = oracle_rewards(world, catalog, campaign, data)
        for name, factory in tqdm(policies.items(), desc=f"ope: draw {draw}", leave=False, disable=not progress):
            pi = logged_action_probs(factory(CampaignVectorEnv(probe.world, campaign)), logged)
            per_draw[name].append(estimate_all(logged, rewards, pi, q_hat, estimators, ope.n_bootstrap, ev.ci_level,
                                               seed + draw, q_members))
            fqe_fits[name] += [dict(e.diagnostics) for e in estimators if isinstance(e, FQE)]
            exact = OPEData(actions=data.actions, rewards=rewards, propensities=data.propensity, mask=data.mask,
                            pi=pi, q_hat=q_true)
            one_step[name].append(float(DirectMethod().statistics(exact).mean()))
    kind_of = {e.name: e.kind for e in estimators}
    section = {name: _policy_entry(truth[name], per_draw[name], one_step[name], kind_of, kinds.get(name, ""),
                                   fqe_fits[name]) for name in policies}
    return section, {**_summary(section, kind_of, ope.draws), "selection": _selection(truth, per_draw, kind_of)}


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
