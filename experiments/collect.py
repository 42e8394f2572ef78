"""The one episode loop: paired rollouts of any policy, and logs of a stochastic one.

``rollout`` runs one episode per user and returns per-user totals (``EpisodeStats``);
``generate_logs`` runs the same batches and records every decision in the logs schema
(``recsys.data.schema``). ``python -m experiments.collect OUT --users N`` writes TrueWorld logs
of the default logging policy.

Users come from slot seeds ``seed + i`` and all randomness is counter-based, so two policies
evaluated with the same ``seed`` see identical users and identical uniform draws at each
step (common random numbers); paired differences then have far less variance than
independent runs.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from gymnasium.vector import AutoresetMode
from tqdm import tqdm

from agents.base import OnlinePolicy, Policy
from agents.reference import LoggingPolicy
from envs import rng
from envs.campaign import CampaignConfig
from envs.true_world import TrueWorld, TrueWorldConfig
from envs.vector_env import CampaignVectorEnv, episode_batches
from envs.world import World
from experiments.config import Config, user_blocks
from experiments.policies import fixed_policies
from recsys.data.io import write_logs
from recsys.data.schema import CAT_PREFIX, NUM_PREFIX, validate_logs, with_metadata
from recsys.stats import Interval, bootstrap_counts, bootstrap_mean, bootstrap_ratio, percentile_interval

_STREAM_LOGGING = 0x4C4F47  # counter-based stream of the logging policy's action draws ("LOG")
_PROB_TOL = 1e-6  # how far a policy's action probabilities may sum from 1

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
    uncertain_steps: np.ndarray  # steps the world marked off the logged distribution (0 if it marks none)

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
    return percentile_interval(point, ((weights @ offers) > 0).mean(axis=1), level)


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
    totals = {k: np.zeros(n) for k in ("clicks", "conversions", "offers_sent", "ret", "profit", "revenue", "cost", "length",
                                       "uncertain_steps")}
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
        if "uncertain" in info:
            totals["uncertain_steps"] += info["uncertain"]
        sends[np.flatnonzero(active), actions[active]] += 1
        done |= terminated | truncated
    return EpisodeStats(**totals, sends_per_action=sends, first_obs=first_obs)


def make_env_factory(world_factory: Callable[[int], World], campaign: Any) -> Callable[[int], CampaignVectorEnv]:
    return lambda n: CampaignVectorEnv(world_factory(n), campaign, AutoresetMode.DISABLED)


# -------------------------------------------------------------------------------------- generation
def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _checked_probs(policy: Policy, obs: np.ndarray, masks: np.ndarray, rows: np.ndarray) -> np.ndarray:
    name = getattr(policy, "name", type(policy).__name__)
    probs = np.asarray(policy.action_probs(obs, masks), dtype=np.float64)
    if probs.shape != masks.shape:
        raise ValueError(f"policy {name!r}: action_probs returned shape {probs.shape}, expected {masks.shape}")
    p, m = probs[rows], masks[rows]
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError(f"policy {name!r}: action_probs must be finite and >= 0")
    if np.any(np.abs(p.sum(axis=1) - 1.0) > _PROB_TOL):
        raise ValueError(f"policy {name!r}: action_probs rows must sum to 1")
    if np.any(p[~m] > 0):
        raise ValueError(f"policy {name!r}: action_probs puts probability on masked actions; respect masks")
    return probs


def generate_logs(
    make_env: Callable[[int], CampaignVectorEnv],
    make_policy: Callable[[CampaignVectorEnv], Policy],
    n_users: int,
    seed: int,
    batch_size: int = 4096,
    progress: bool = False,
) -> pa.Table:
    """Log one episode per user of a stochastic policy (normally ``agents.reference.LoggingPolicy``).

    Same conventions as ``experiments.collect.rollout``: ``make_env(n)`` builds an env of n
    users (autoreset is forced to ``DISABLED``), ``make_policy(env)`` the policy for it; user
    ``i`` is the env slot seeded with ``seed + i`` and is logged with ``user_id = seed + i``.
    Actions are drawn here from ``policy.action_probs(obs, masks)`` with counter-based
    uniforms keyed by the user and step, so the logged ``propensity`` is exactly the
    probability of the logged action and the table depends only on ``seed`` and ``n_users``
    (not on ``batch_size``). Rows are sorted by ``(user_id, step)``; the result is validated.
    """
    if n_users < 1:
        raise ValueError(f"n_users: must be >= 1, got {n_users}")
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    parts: list[dict[str, np.ndarray]] = []
    env = policy = None
    with tqdm(total=n_users, desc="logging", unit="user", disable=not progress) as bar:
        for start, env in episode_batches(make_env, n_users, batch_size):
            policy = make_policy(env)
            parts.append(_log_batch(env, policy, seed + start))
            bar.update(env.num_envs)
    assert env is not None and policy is not None
    columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.lexsort((columns["step"], columns["user_id"]))
    table = pa.table({k: v[order] for k, v in columns.items()})
    schema = env.world.profile_schema
    meta = {
        "n_actions": int(env.catalog.n_actions),
        "categorical_cardinality": {k: int(v) for k, v in schema.categorical.items()},
        "source": _snake(type(env.world).__name__),
        "policy": getattr(policy, "name", type(policy).__name__),
        "seed": int(seed),
        "n_users": int(n_users),
        "horizon": int(env.campaign.horizon),
        "actions": "0 = no offer, a >= 1 = catalog offer a - 1", "no_offer_action": 0,
    }
    world_config = getattr(env.world, "config", None)
    if world_config is not None and hasattr(world_config, "seed"):
        meta["world_seed"] = int(world_config.seed)
    table = with_metadata(table, meta)
    validate_logs(table)
    return table


def _log_batch(env: CampaignVectorEnv, policy: Policy, seed: int) -> dict[str, np.ndarray]:
    n = env.num_envs
    schema = env.world.profile_schema
    cat_names = [CAT_PREFIX + k for k in schema.categorical]
    num_names = [NUM_PREFIX + k for k in schema.numeric]
    out: dict[str, list[np.ndarray]] = {
        k: [] for k in ("user_id", "step", "action", "propensity", "click", "conversion",
                        "revenue", "cost", "churned", *cat_names, *num_names)
    }
    obs, _ = env.reset(seed=seed)
    user_ids = seed + np.arange(n, dtype=np.int64)
    while not env.done.all():
        rows = np.flatnonzero(~env.done)
        masks = env.action_masks()
        probs = _checked_probs(policy, obs, masks, rows)
        steps = env.steps
        u = rng.uniform(env.user_keys, steps, _STREAM_LOGGING)
        actions = np.zeros(n, dtype=np.int64)
        actions[rows] = rng.inverse_cdf(probs[rows], u[rows])
        previous = obs
        obs, reward, _, _, info = env.step(actions)
        if isinstance(policy, OnlinePolicy):  # per-user state (session models, recurrent agents) follows the log
            policy.observe(previous, actions, reward, info)
        if not np.array_equal(np.flatnonzero(info["active"]), rows):
            raise RuntimeError("generate_logs: env's active users disagree with env.done; is autoreset disabled?")
        out["user_id"].append(user_ids[rows])
        out["step"].append(steps[rows])
        out["action"].append(actions[rows])
        out["propensity"].append(probs[rows, actions[rows]])
        for key in ("click", "conversion", "churned"):
            out[key].append(np.asarray(info[key])[rows].astype(np.int8))
        for key in ("revenue", "cost"):
            out[key].append(np.asarray(info[key], dtype=np.float64)[rows])
        for j, name in enumerate(cat_names):
            out[name].append(env.profile_categorical[rows, j])
        for j, name in enumerate(num_names):
            out[name].append(env.profile_numeric[rows, j])
    return {k: np.concatenate(v) for k, v in out.items()}


def collect_logs(config: Config, progress: bool, n_users: int | None = None, first_user: int | None = None) -> pa.Table:
    """A run's logged data: its logging policy in TrueWorld on this seed's block of users (by
    default the block's first ``experiment.logs.n_users``; OPE draws take later users of the block)."""
    exp = config.experiment
    logs_from, _ = user_blocks(exp.seed)
    return generate_logs(make_env_factory(lambda n: TrueWorld(config.world, n_users=n), config.campaign),
                         fixed_policies(config)["logging"], n_users=n_users or exp.logs.n_users,
                         seed=logs_from if first_user is None else first_user, progress=progress)


# --------------------------------------------------------------------------------------------- cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.collect",
                                     description="Generate TrueWorld logs with the default LoggingPolicy.")
    parser.add_argument("out")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="first user seed (user_id = seed + i)")
    parser.add_argument("--world-seed", type=int, default=0, help="TrueWorldConfig.seed (fixes the world)")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.users < 1 or args.batch_size < 1:
        parser.error("--users and --batch-size: must be >= 1")
    world_config, campaign = TrueWorldConfig(seed=args.world_seed), CampaignConfig()
    table = generate_logs(make_env_factory(lambda n: TrueWorld(world_config, n_users=n), campaign), LoggingPolicy,
                          n_users=args.users, seed=args.seed, batch_size=args.batch_size,
                          progress=not args.no_progress)
    write_logs(table, args.out)
    print(f"wrote {args.out}")
    print(validate_logs(table).format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
