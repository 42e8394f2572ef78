"""Quality of the supervised recommenders: offline metrics on held-out users of TrueWorld logs,
fit time, and what each earns acting greedily in TrueWorld.

    python -m benchmarks.recommenders [--users 50000] [--eval-users 4000] [--names mf gru4rec]

Prints ONE JSON object on stdout; progress goes to stderr. See ``METHOD`` for the protocol.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Any

METHOD = (
    "Logs: TrueWorld (default TrueWorldConfig) x default CampaignConfig, LoggingPolicy(rest_probability=0.3), "
    "users seed .. seed+users-1; split_users (0.8/0.1/0.1 of users, seed 0). Each recommender is fitted on the "
    "training users (validation users for early stopping / model selection) and its offline metrics are "
    "computed on the test users: click AUC and logloss on logged exposures (logloss_base = the best "
    "constant predictor of the same rows), HR@5/NDCG@5 of the clicked offer among the offers allowed at that "
    "step. TrueWorld: one greedy episode for each of eval_users users (slot seeds eval_seed ..), the same "
    "users and coin flips for every policy; per-user means and per-send rates with 95% bootstrap CIs."
)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.recommenders", description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=50_000, help="logged users")
    p.add_argument("--log-seed", type=int, default=0, help="first user seed of the logs")
    p.add_argument("--eval-users", type=int, default=4_000, help="TrueWorld users per policy")
    p.add_argument("--eval-seed", type=int, default=5_000_000, help="first slot seed of the TrueWorld rollouts")
    p.add_argument("--names", nargs="+", default=None, help="recommenders to run (default: all)")
    p.add_argument("--threads", type=int, default=1, help="torch / OpenMP / MKL / OpenBLAS threads")
    args = p.parse_args(argv)
    if args.users < 100 or args.eval_users < 2:
        p.error("--users must be >= 100 and --eval-users >= 2")
    return args


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _clean(x: Any) -> Any:
    """JSON-safe: NaN -> null, numpy scalars -> Python numbers."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if hasattr(x, "item"):
        x = x.item()
    if isinstance(x, float):
        return None if not math.isfinite(x) else round(x, 6)
    return x


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before numpy / torch load their BLAS
    import numpy as np
    import torch

    from agents.recommender_policy import RecommenderPolicy
    from agents.reference import LoggingPolicy, OracleGreedyPolicy
    from envs.campaign import CampaignConfig
    from envs.true_world import TrueWorld, TrueWorldConfig
    from experiments.collect import EpisodeStats, generate_logs, make_env_factory, rollout
    from recsys.data.replay import LoggedData
    from recsys.data.sequences import sequences_from_logs
    from recsys.data.splits import split_users
    from recsys.recommenders import evaluate_recommenders, fit_recommenders

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    world_config, campaign = TrueWorldConfig(), CampaignConfig()
    world = TrueWorld(world_config)
    make_env = make_env_factory(lambda n: TrueWorld(world_config, n), campaign)

    _log(f"logging {args.users} users ...")
    table = generate_logs(make_env, lambda env: LoggingPolicy(env, rest_probability=0.3), n_users=args.users,
                          seed=args.log_seed, progress=True)
    seq = sequences_from_logs(table)
    split = split_users(seq.user_ids, seed=0)
    logged = LoggedData.replay(seq, world.catalog, world.profile_schema, campaign)
    train, validation, test = (logged.subset(split[s]) for s in ("train", "validation", "test"))
    data_seconds = time.perf_counter() - started

    fitted = fit_recommenders(train, validation, names=args.names, progress=True)
    _log("offline metrics ...")
    offline = evaluate_recommenders(fitted, test)

    def true_world(make_policy) -> tuple[dict[str, Any], float]:
        start = time.perf_counter()
        stats: EpisodeStats = rollout(make_env, make_policy, n_users=args.eval_users, seed=args.eval_seed)
        elapsed = time.perf_counter() - start
        summary = {k: v.as_dict() for k, v in stats.summarise().items()}
        summary["profit_per_user"] = summary.pop("profit")
        summary["return_per_user"] = summary.pop("return")
        summary["offers_sent_per_user"] = summary.pop("offers_sent")
        summary["clicks_per_user"] = float(stats.clicks.mean())
        summary["conversions_per_user"] = float(stats.conversions.mean())
        return summary, elapsed

    recommenders: dict[str, Any] = {}
    for name, rec in fitted.items():
        _log(f"TrueWorld rollout: {name} ...")
        metrics = dict(offline[name])
        fit_seconds = metrics.pop("fit_seconds")
        eval_seconds = metrics.pop("eval_seconds")
        tw, rollout_seconds = true_world(lambda env, rec=rec: RecommenderPolicy(rec, env))
        recommenders[name] = {"offline": metrics, "fit_seconds": fit_seconds, "true_world": tw,
                              "seconds": {"offline_metrics": eval_seconds, "rollout": rollout_seconds}}
    reference = {}
    for name, make_policy in (("logging", lambda env: LoggingPolicy(env, rest_probability=0.3)),
                              ("oracle_greedy", OracleGreedyPolicy)):
        _log(f"TrueWorld rollout: {name} ...")
        reference[name] = true_world(make_policy)[0]

    d = seq
    exposures = d.mask & (d.actions > 0)
    out = {
        "benchmark": "recommenders",
        "method": METHOD,
        "config": {"users": args.users, "log_seed": args.log_seed, "eval_users": args.eval_users,
                   "eval_seed": args.eval_seed, "world": "TrueWorldConfig()", "campaign": "CampaignConfig()",
                   "logging_policy": "LoggingPolicy(rest_probability=0.3)", "k": 5},
        "data": {
            "users": {s: int(split[s].sum()) for s in ("train", "validation", "test")},
            "logged_rows": int(d.mask.sum()), "exposures": int(exposures.sum()),
            "click_rate_per_exposure": float(d.click[exposures].mean()),
            "conversion_rate_per_click": float(d.conversion[exposures & (d.click > 0)].mean()),
        },
        "recommenders": recommenders,
        "reference_policies": reference,
        "seconds": {"data": data_seconds, "total": time.perf_counter() - started},
        "metadata": {
            "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
            "numpy_version": np.__version__, "python_version": sys.version.split()[0], "cpu_count": os.cpu_count(),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    }
    return _clean(out)


if __name__ == "__main__":
    result = main()
    from recsys.artifacts import json_bytes  # after main(): numpy loads after the thread settings

    print(json_bytes(result).decode(), end="")  # strict JSON: NaN -> null
