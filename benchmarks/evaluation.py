"""Wall time of evaluating a large TrueWorld population, unsharded or sharded
(``experiments.evaluate.sharded_rollouts``, what ``experiment.evaluation.shards`` runs).

    python -m benchmarks.evaluation --users 1000000 --shards 2 [--ray] [--check]

Prints ONE JSON object on stdout; progress goes to stderr. ``--ray`` starts a local Ray
(``--cpus`` CPUs) so the shards run as Ray tasks; otherwise they run in spawned local
processes. ``--check`` also runs the unsharded evaluation and reports whether every per-user
stat is identical (it doubles the time). The summary (bootstrap CIs) is timed apart: its cost
grows with users x ``--n-bootstrap``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from agents.reference import GreedyHeuristicPolicy, RandomPolicy
from envs.campaign import CampaignConfig
from envs.true_world import TrueWorld, TrueWorldConfig
from experiments.collect import EpisodeStats, make_env_factory
from experiments.evaluate import shard_ranges, sharded_rollouts


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.evaluation", description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--ray", action="store_true", help="run the shards as tasks of a local Ray")
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="the local Ray's CPUs")
    p.add_argument("--check", action="store_true", help="also run unsharded and compare per-user stats")
    p.add_argument("--n-bootstrap", type=int, default=100, help="resamples of the timed summary")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    torch.set_num_threads(1)
    make_env = make_env_factory(lambda n: TrueWorld(TrueWorldConfig(), n_users=n), CampaignConfig())
    roster = {"greedy": GreedyHeuristicPolicy, "random": lambda env: RandomPolicy(env.catalog.n_actions, seed=0)}
    backend = "single process" if args.shards == 1 else "spawned local processes"
    if args.ray:
        import ray  # only when asked: Ray's start-up is part of what --ray measures

        start = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False)
        ray_start = time.perf_counter() - start
        backend = "ray tasks"
    _log(f"evaluating {len(roster)} policies on {args.users} users in {args.shards} shards ({backend}) ...")
    start = time.perf_counter()
    stats = sharded_rollouts(make_env, roster, args.users, args.seed, args.shards, args.batch_size)
    rollout_seconds = time.perf_counter() - start
    start = time.perf_counter()
    summary = {name: {m: iv.as_dict() for m, iv in s.summarise(args.n_bootstrap, 0.95, args.seed).items()
                      if m in ("profit", "episode_length")} for name, s in stats.items()}
    summary_seconds = time.perf_counter() - start
    user_steps = int(sum(s.length.sum() for s in stats.values()))
    out: dict = {
        "benchmark": "evaluation",
        "users": args.users, "policies": list(roster), "shards": len(shard_ranges(args.users, args.shards, args.batch_size)),
        "batch_size": args.batch_size, "backend": backend,
        "rollout_seconds": rollout_seconds,
        "user_steps": user_steps, "user_steps_per_s": user_steps / rollout_seconds,
        "users_per_s_per_policy": args.users * len(roster) / rollout_seconds,
        "summary_seconds": summary_seconds, "n_bootstrap": args.n_bootstrap,
        "summary": summary,
    }
    if args.ray:
        out["ray_init_seconds"] = ray_start
    if args.check:
        _log("unsharded, for the identity check ...")
        start = time.perf_counter()
        whole = sharded_rollouts(make_env, roster, args.users, args.seed, 1, args.batch_size)
        out["unsharded_rollout_seconds"] = time.perf_counter() - start
        out["identical_to_unsharded"] = all(
            np.array_equal(getattr(whole[n], f), getattr(stats[n], f))
            for n in roster for f in EpisodeStats.__dataclass_fields__)
    if args.ray:
        ray.shutdown()
    out["metadata"] = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                       "numpy_version": np.__version__, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
