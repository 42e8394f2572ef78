"""Paired evaluation: every policy in every world on the same users with the same draws,
the paired differences that carry the run's claims, and the sim-to-real agreement.

Large populations are sharded (``experiment.evaluation.shards``): the users are cut into
contiguous ranges at batch boundaries, each (policy, range) runs as a Ray task when Ray is
initialised (a Ray-launched job, or ``ray.init()`` before the call) or in a spawned local
process otherwise, and the per-user stats are concatenated back. Every batch is the same env
with the same slot seeds and a fresh policy either way, and all randomness is counter-based or
seeded per policy instance, so a sharded evaluation equals the unsharded one exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy.stats import kendalltau

from envs.vector_env import CampaignVectorEnv
from envs.world import World
from experiments.collect import EpisodeStats, make_env_factory, rollout
from experiments.config import AgentConfig, EvaluationConfig
from experiments.parallel import Workers, available_cpus
from experiments.policies import Factory
from recsys.stats import bootstrap_mean

NOT_BASELINES = {"oracle_greedy", "nurture", "no_offer"}  # read the hidden state, or never act


def evaluate_worlds(world_factories: dict[str, Callable[[int], World]], rosters: dict[str, dict[str, Factory]],
                    campaign: Any, ev: EvaluationConfig, users_from: int, agents: dict[str, AgentConfig],
                    seed: int, workers: Workers | None = None) -> tuple[dict[str, Any], dict[str, dict[str, EpisodeStats]]]:
    """(the ``worlds`` section of results.json, the per-user stats of every policy per world)."""
    worlds: dict[str, Any] = {}
    stats_by_world: dict[str, dict[str, EpisodeStats]] = {}
    for world, factory in world_factories.items():
        make_env = make_env_factory(factory, campaign)
        stats = sharded_rollouts(make_env, rosters[world], ev.n_users, users_from, ev.shards, ev.batch_size, workers)
        stats_by_world[world] = stats
        summary = {name: {m: iv.as_dict() for m, iv in s.summarise(ev.n_bootstrap, ev.ci_level, seed).items()}
                   for name, s in stats.items()}
        worlds[world] = {"policies": summary, "paired_differences": paired_differences(stats, agents, ev, seed)}
    return worlds, stats_by_world


def shard_ranges(n_users: int, shards: int, batch_size: int) -> list[tuple[int, int]]:
    """At most ``shards`` contiguous user ranges ``[start, stop)`` covering ``n_users``, cut at
    multiples of ``batch_size`` so each range runs exactly the batches of the unsharded run."""
    n_batches = -(-n_users // batch_size)
    groups = np.array_split(np.arange(n_batches), min(shards, n_batches))
    return [(int(g[0]) * batch_size, min((int(g[-1]) + 1) * batch_size, n_users)) for g in groups]


def sharded_rollouts(make_env: Callable[[int], CampaignVectorEnv], roster: dict[str, Factory], n_users: int,
                     seed: int, shards: int = 1, batch_size: int = 4096,
                     workers: Workers | None = None) -> dict[str, EpisodeStats]:
    """``rollout`` of every policy of ``roster`` on users ``seed .. seed + n_users - 1``, split
    into ``shards`` ranges; every (policy, range) is a job on ``workers`` (by default, when
    sharded, Ray tasks if Ray is running, else one process per CPU; inline otherwise). The
    result depends on neither ``shards`` nor ``workers``."""
    ranges = shard_ranges(n_users, shards, batch_size)
    own = workers is None
    if own:
        workers = Workers(1 if len(ranges) == 1 else min(len(ranges) * len(roster), available_cpus()),
                          torch.get_num_threads(), ray=True)
    try:
        futures = {(name, start): workers.submit(rollout, make_env, f, stop - start, seed + start, batch_size)
                   for name, f in roster.items() for start, stop in ranges}
        parts = {key: f.result()[0] for key, f in futures.items()}
    finally:
        if own:
            workers.close()
    return {name: EpisodeStats(*(np.concatenate([getattr(parts[name, start], f) for start, _ in ranges])
                                 for f in EpisodeStats.__dataclass_fields__)) for name in roster}


def best_baseline(policies: dict[str, Any], agents: Any) -> str:
    """The best policy on TrueWorld profit that is neither an RL agent nor an oracle."""
    excluded = set(agents) | NOT_BASELINES
    return max((p for p in policies if p not in excluded), key=lambda p: policies[p]["profit"]["mean"])


def best_sim_trained_agent(policies: dict[str, Any], agents: dict[str, AgentConfig]) -> str | None:
    """The challenger: the best agent on TrueWorld profit that never saw TrueWorld."""
    sim_trained = [n for n in agents if agents[n].train_world == "learned"] or list(agents)
    return max(sim_trained, key=lambda n: policies[n]["profit"]["mean"]) if sim_trained else None


def paired_differences(stats: dict[str, EpisodeStats], agents: dict[str, AgentConfig], ev: EvaluationConfig,
                       seed: int) -> dict[str, Any]:
    """Profit differences on the same users: nurture vs oracle_greedy; every agent vs the
    best baseline, the greedy heuristic and oracle_greedy (when present); and an agent trained
    in TrueWorld vs the same algorithm trained in the learned simulator (what the simulator's
    errors cost)."""
    summary = {name: {"profit": {"mean": float(s.profit.mean())}} for name, s in stats.items()}
    best = best_baseline(summary, agents)
    pairs = [("nurture", "oracle_greedy")] + [(a, b) for a in agents for b in dict.fromkeys((best, "greedy", "oracle_greedy"))]
    pairs += [(a, b) for a, ca in agents.items() for b, cb in agents.items()
              if ca.algo == cb.algo and ca.train_world == "true" and cb.train_world == "learned"]
    out = {}
    for challenger, baseline in pairs:
        if challenger in stats and baseline in stats:
            d = stats[challenger].profit - stats[baseline].profit
            out[f"{challenger}_minus_{baseline}"] = {"profit": bootstrap_mean(d, ev.n_bootstrap, ev.ci_level, seed).as_dict()}
    return out


def sim_to_real(worlds: dict[str, Any]) -> dict[str, Any]:
    """Kendall tau between the policies' returns in the two worlds, and each policy's relative error."""
    true, learned = worlds["true"]["policies"], worlds["learned"]["policies"]
    both = [p for p in learned if p in true]
    true_ret = [true[p]["return"]["mean"] for p in both]
    sim_ret = [learned[p]["return"]["mean"] for p in both]
    return {
        "kendall_tau": float(kendalltau(true_ret, sim_ret).statistic),
        "rel_error": {p: abs(s - t) / abs(t) if t else None for p, t, s in zip(both, true_ret, sim_ret, strict=True)},
    }
