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
from envs.vector_env import CampaignVectorEnv
from envs.world import World
from experiments.stats import Interval, bootstrap_mean, bootstrap_ratio

METRICS = ("click_rate", "conversion_rate", "return", "profit", "episode_length", "offers_sent")


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
        }


def rollout(
    make_env: Callable[[int], CampaignVectorEnv],
    make_policy: Callable[[CampaignVectorEnv], Policy],
    n_users: int,
    seed: int,
    batch_size: int = 4096,
) -> EpisodeStats:
    """Run one episode for each of ``n_users`` users (slot seeds ``seed .. seed+n_users-1``)."""
    parts = []
    for start in range(0, n_users, batch_size):
        n = min(batch_size, n_users - start)
        env = make_env(n)
        if env.autoreset_mode is not AutoresetMode.DISABLED:
            env = CampaignVectorEnv(env.world, env.campaign, AutoresetMode.DISABLED)
        parts.append(_run_batch(env, make_policy(env), seed + start))
    return EpisodeStats(*(np.concatenate([getattr(p, f) for p in parts]) for f in EpisodeStats.__dataclass_fields__))


def _run_batch(env: CampaignVectorEnv, policy: Policy, seed: int) -> EpisodeStats:
    n = env.num_envs
    totals = {k: np.zeros(n) for k in ("clicks", "conversions", "offers_sent", "ret", "profit", "revenue", "cost", "length")}
    obs, _ = env.reset(seed=seed)
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
        done |= terminated | truncated
    return EpisodeStats(**totals)


def make_env_factory(world_factory: Callable[[int], World], campaign) -> Callable[[int], CampaignVectorEnv]:
    return lambda n: CampaignVectorEnv(world_factory(n), campaign, AutoresetMode.DISABLED)
