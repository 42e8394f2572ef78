"""Paired rollouts: each policy meets the same users with the same coin flips.

Users come from slot seeds ``seed + i`` and all randomness is counter-based, so two policies
evaluated with the same ``seed`` see identical users and identical uniform draws at each
step (common random numbers); paired differences then have far less variance than
independent runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from gymnasium.vector import AutoresetMode

from agents.base import OnlinePolicy, Policy
from envs.vector_env import CampaignVectorEnv, episode_batches
from envs.world import World
from experiments.stats import Interval, bootstrap_counts, bootstrap_mean, bootstrap_ratio

METRICS = ("click_rate", "conversion_rate", "return", "profit", "episode_length", "offers_sent", "roi", "coverage")


@dataclass
class EpisodeStats:
    """Per-user totals of one episode each (arrays of shape (n_users,))."""

    clicks: np.ndarray
    conversions: np.ndarray
    offers_sent: np.ndarray
    ret: np.ndarray
    profit: np.ndarray
    revenue: np.ndarray
    cost: np.ndarray
    length: np.ndarray
    sends_per_action: np.ndarray  # (n_users, n_actions) how often each action was taken
    first_obs: np.ndarray  # (n_users, obs_dim) the observation at the start of the episode (profile)

    def summarise(self, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict[str, Interval]:
        """Every metric with a bootstrap CI over users. Click and conversion rates are per
        offer sent (ratio of sums); the others are per user-episode means."""
        return {
            "click_rate": bootstrap_ratio(self.clicks, self.offers_sent, n_boot, level, seed),
            "conversion_rate": bootstrap_ratio(self.conversions, self.offers_sent, n_boot, level, seed),
            "return": bootstrap_mean(self.ret, n_boot, level, seed),
            "profit": bootstrap_mean(self.profit, n_boot, level, seed),
            "episode_length": bootstrap_mean(self.length, n_boot, level, seed),
            "offers_sent": bootstrap_mean(self.offers_sent, n_boot, level, seed),
            "roi": bootstrap_ratio(self.revenue, self.cost, n_boot, level, seed),
            "coverage": _bootstrap_coverage(self.sends_per_action, n_boot, level, seed),
        }

    def subset(self, users: np.ndarray) -> EpisodeStats:
        return EpisodeStats(**{f: getattr(self, f)[users] for f in self.__dataclass_fields__})


def _bootstrap_coverage(sends: np.ndarray, n_boot: int, level: float, seed: int) -> Interval:
    """Share of catalog offers (actions >= 1) sent to at least one user, with a bootstrap CI."""
    offers = sends[:, 1:] > 0
    point = float(offers.any(axis=0).mean())
    weights = bootstrap_counts(len(offers), n_boot, seed)
    boots = ((weights @ offers) > 0).mean(axis=1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return Interval(point, float(lo), float(hi))


def rollout(
    make_env: Callable[[int], CampaignVectorEnv],
    make_policy: Callable[[CampaignVectorEnv], Policy],
    n_users: int,
    seed: int,
    batch_size: int = 4096,
) -> EpisodeStats:
    """Run one episode for each of ``n_users`` users (slot seeds ``seed .. seed+n_users-1``)."""
    parts = [_run_batch(env, make_policy(env), seed + start) for start, env in episode_batches(make_env, n_users, batch_size)]
    return EpisodeStats(*(np.concatenate([getattr(p, f) for p in parts]) for f in EpisodeStats.__dataclass_fields__))


def _run_batch(env: CampaignVectorEnv, policy: Policy, seed: int) -> EpisodeStats:
    n = env.num_envs
    totals = {k: np.zeros(n) for k in ("clicks", "conversions", "offers_sent", "ret", "profit", "revenue", "cost", "length")}
    sends = np.zeros((n, env.catalog.n_actions))
    obs, _ = env.reset(seed=seed)
    first_obs = obs.copy()
    done = np.zeros(n, dtype=bool)
    while not done.all():
        actions = policy.act(obs, env.action_masks())
        previous = obs
        obs, reward, terminated, truncated, info = env.step(actions)
        active = info["active"]
        if isinstance(policy, OnlinePolicy):
            policy.observe(previous, actions, reward, info)
        totals["clicks"] += info["click"]
        totals["conversions"] += info["conversion"]
        totals["offers_sent"] += info["offer_sent"]
        totals["ret"] += reward
        totals["profit"] += info["profit"]
        totals["revenue"] += info["revenue"]
        totals["cost"] += info["cost"]
        totals["length"] += active
        sends[np.flatnonzero(active), actions[active]] += 1
        done |= terminated | truncated
    return EpisodeStats(**totals, sends_per_action=sends, first_obs=first_obs)


def make_env_factory(world_factory: Callable[[int], World], campaign) -> Callable[[int], CampaignVectorEnv]:
    return lambda n: CampaignVectorEnv(world_factory(n), campaign, AutoresetMode.DISABLED)
