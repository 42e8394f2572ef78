"""The sim-to-real claims of a sweep, across training seeds (``aggregate.json`` -> ``claims``).

A claim about a training algorithm needs several seeds: each seed refits the logs, the
simulator and every agent, and the spread between seeds is larger than any CI over users
(docs/experiments.md). Per simulator-trained agent and group of runs:

- ``metric``: what "wins" means, the objective the runs optimised (``campaign.reward``): profit
  per user for the profit reward, else the TrueWorld return per user (clicks, conversions or the
  weighted sum); ``true_value`` is the agent's, ``true_profit`` its profit whatever the reward;
- ``minus_best_recommender``: its value minus that of the seed's best supervised recommender
  (on the same users, so the difference of means is the mean paired difference), t-interval;
  ``minus_recommender``: the same against each recommender (e.g. ``logistic``);
- ``probability_of_improvement``: P(X > Y) for X the agent's and Y the best recommender's
  per-seed value, over all pairs of seeds (ties count 1/2; Agarwal et al. 2021, rliable),
  with a percentile interval from resampling the seeds of X and of Y independently;
- ``overrating``: the learned-world value (in the world it trained in) / true value − 1;
- ``gap_to_true_trained``: ``ppo_true`` (the same algorithm trained in TrueWorld) minus it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from recsys.stats import t_interval

N_BOOTSTRAP = 2000


def seed_interval(values: Sequence[float | None], level: float) -> dict[str, Any]:
    """Mean over seeds with a Student-t interval (None with fewer than 2 seeds), the number of
    seeds and the per-seed values; the across-seed cell of every aggregate table."""
    clean = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    iv = t_interval(clean, level)
    mean = float(np.nanmean(clean)) if np.isfinite(clean).any() else None
    return {"mean": mean, "ci_low": iv and iv.ci_low, "ci_high": iv and iv.ci_high,
            "n_seeds": int(np.isfinite(clean).sum()), "values": [None if v is None else float(v) for v in values]}


def probability_of_improvement(x: Sequence[float], y: Sequence[float], level: float, seed: int = 0) -> dict[str, Any]:
    """P(X > Y) over all (seed of X, seed of Y) pairs, with a bootstrap interval over seeds."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def p(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # last axis: seeds
        gt = (a[..., :, None] > b[..., None, :]).mean(axis=(-1, -2))
        eq = (a[..., :, None] == b[..., None, :]).mean(axis=(-1, -2))
        return gt + 0.5 * eq

    g = np.random.default_rng(seed)
    boots = p(x[g.integers(0, len(x), (N_BOOTSTRAP, len(x)))], y[g.integers(0, len(y), (N_BOOTSTRAP, len(y)))])
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2]) if len(x) >= 2 else (None, None)
    return {"mean": float(p(x, y)), "ci_low": lo and float(lo), "ci_high": hi and float(hi), "n_seeds": len(x)}


def _sim_trained(result: Mapping[str, Any]) -> list[str]:
    cfg = result["config"]
    return [a for a in cfg["experiment"]["agents"] if str(cfg["agents"][a]["train_world"]).lower() == "learned"]


def _own_world_return(result: Mapping[str, Any], agent: str) -> float | None:
    rows = (result.get("pessimism") or {}).get("agents") or {}
    if agent in rows:
        return rows[agent]["own_world_return"]["mean"]
    learned = result["worlds"].get("learned", {}).get("policies", {})
    return learned[agent]["return"]["mean"] if agent in learned else None


def claim_metric(result: Mapping[str, Any]) -> str:
    """``"profit"`` for runs that optimised profit, else ``"return"`` (their own objective)."""
    reward = result.get("config", {}).get("campaign", {}).get("reward", "profit")
    return "profit" if reward == "profit" else "return"


def agent_claims(results: Sequence[Mapping[str, Any]], level: float) -> dict[str, Any]:
    """Per simulator-trained agent of these runs (the seeds of one group): see the module docstring."""
    agents = list(dict.fromkeys(a for r in results for a in _sim_trained(r)))
    metrics = {claim_metric(r) for r in results}
    if len(metrics) > 1:
        raise ValueError(f"agent_claims: the runs optimised different objectives ({sorted(metrics)}); group them "
                         "by campaign.reward first")
    metric = metrics.pop() if metrics else "profit"
    out: dict[str, Any] = {}
    for agent in agents:
        runs = [r for r in results if agent in r["worlds"]["true"]["policies"]]
        value, profit, best, best_profit, gap, over = [], [], [], [], [], []
        per_rec: dict[str, list[float]] = {}
        for r in runs:
            true = r["worlds"]["true"]["policies"]
            recommenders = [n for n in r["recommenders"]["offline_metrics"] if n in true]
            value.append(true[agent][metric]["mean"])
            profit.append(true[agent]["profit"]["mean"])
            if recommenders:
                best.append(max(true[n][metric]["mean"] for n in recommenders))
                best_profit.append(max(true[n]["profit"]["mean"] for n in recommenders))
            for n in recommenders:
                per_rec.setdefault(n, []).append(value[-1] - true[n][metric]["mean"])
            if "ppo_true" in true:
                gap.append(true["ppo_true"][metric]["mean"] - value[-1])
            learned, t = _own_world_return(r, agent), true[agent]["return"]["mean"]
            if learned is not None and t:
                over.append(learned / t - 1.0)
        row: dict[str, Any] = {"metric": metric, "true_value": seed_interval(value, level),
                               "true_profit": seed_interval(profit, level), "overrating": seed_interval(over, level)}
        if len(best) == len(value):
            row["best_recommender_value"] = seed_interval(best, level)
            row["best_recommender_profit"] = seed_interval(best_profit, level)  # the training curves' band
            row["minus_best_recommender"] = seed_interval(np.subtract(value, best), level)
            row["probability_of_improvement"] = probability_of_improvement(value, best, level)
        row["minus_recommender"] = {n: seed_interval(d, level) for n, d in per_rec.items() if len(d) == len(value)}
        if len(gap) == len(value):
            row["gap_to_true_trained"] = seed_interval(gap, level)
        out[agent] = row
    return out
