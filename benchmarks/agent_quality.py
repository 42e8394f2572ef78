"""Learning quality of an SB3 agent config: train it, evaluate its TrueWorld profit per user.

    python -m benchmarks.agent_quality --agent ppo [--set n_envs=128 hyperparams.n_steps=32]
        [--seeds 0 1 2] [--world true|learned] [--simulator-dir DIR] [--eval-users 4000]

Prints ONE JSON object; progress goes to stderr. Used to check that a config change (e.g. more
envs and fewer n_steps for PPO, or DQN tuning) learns at least as well, and how long it trains.

Training follows ``experiments.run.train``: the agent config is ``conf/agent/<agent>.yaml`` with
``--set`` overrides (OmegaConf dotlist), the campaign ``conf/campaign/default.yaml`` with
``invalid_action=penalize`` (except ``maskable_ppo``, which masks), the world
``conf/world/default.yaml``; ``agents.sb3.build_agent`` / ``train_agent`` with the
training seed, one torch thread. ``--world true`` trains in TrueWorld (no simulator needed);
``--world learned`` needs ``--simulator-dir`` (``<run>/simulator`` of a ``make run``).
Evaluation follows ``experiments.run`` too: ``experiments.collect.rollout`` in TrueWorld on
``--eval-users`` users of the evaluation block of experiment seed 0 (never logged users), the
same users and draws for every config and seed, the policy as ``SB3Policy`` (sampled unless
the config sets ``deterministic_eval``). Per seed: profit per user with a 95% bootstrap CI over
users, and the wall seconds of ``train_agent``. Across seeds: the mean of the seed means with a
95% t-interval (seed-to-seed variation is usually larger than the per-seed CI).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

_CONF = Path(__file__).resolve().parent.parent / "conf"


def _t_interval(values: list[float]) -> dict[str, float]:
    from recsys.stats import t_interval

    iv = t_interval(values)
    mean = float(sum(values) / len(values))
    return iv.as_dict() if iv is not None else {"mean": mean, "ci_low": float("nan"), "ci_high": float("nan")}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.agent_quality", description=__doc__.splitlines()[0])
    p.add_argument("--agent", default="ppo", help="conf/agent/<agent>.yaml")
    p.add_argument("--set", nargs="*", default=[], help="overrides, e.g. n_envs=128 hyperparams.n_steps=32")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--world", choices=("true", "learned"), default="true", help="world to train in")
    p.add_argument("--simulator-dir", default=None, help="fitted simulator, for --world learned")
    p.add_argument("--eval-users", type=int, default=4000)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch
    from omegaconf import OmegaConf

    from agents.sb3 import SB3Policy, build_agent, train_agent
    from envs.campaign import CampaignConfig
    from envs.learned_world import LearnedWorld
    from envs.true_world import TrueWorld, TrueWorldConfig
    from envs.vector_env import CampaignVectorEnv
    from experiments.collect import make_env_factory, rollout
    from experiments.config import user_blocks
    from recsys.simulator.io import load_simulator

    torch.set_num_threads(args.threads)
    agent = OmegaConf.to_container(OmegaConf.merge(OmegaConf.load(_CONF / "agent" / f"{args.agent}.yaml"),
                                                   OmegaConf.from_dotlist(list(args.set))))
    world_config = TrueWorldConfig(**OmegaConf.to_container(OmegaConf.load(_CONF / "world" / "default.yaml")))
    campaign = CampaignConfig(**OmegaConf.to_container(OmegaConf.load(_CONF / "campaign" / "default.yaml")))
    train_campaign = campaign if agent["algo"] == "maskable_ppo" else CampaignConfig(
        **{**vars(campaign), "invalid_action": "penalize"})
    if args.world == "learned":
        if not args.simulator_dir:
            p.error("--world learned needs --simulator-dir")
        base = load_simulator(args.simulator_dir)
        train_factory = lambda n: LearnedWorld(base.model, base.sampler, base.catalog, n)  # noqa: E731
    else:
        train_factory = lambda n: TrueWorld(world_config, n_users=n)  # noqa: E731
    make_eval_env = make_env_factory(lambda n: TrueWorld(world_config, n_users=n), campaign)
    _, eval_from = user_blocks(0)
    deterministic = bool(agent.get("deterministic_eval", False))

    runs = []
    for seed in args.seeds:
        env = CampaignVectorEnv(train_factory(agent["n_envs"]), train_campaign)
        model = build_agent(agent["algo"], env, agent.get("hyperparams", {}), agent["net_arch"], seed, None)
        print(f"{args.agent} seed {seed}: training {agent['total_timesteps']} steps in the {args.world} world ...",
              file=sys.stderr, flush=True)
        start = time.perf_counter()
        train_agent(model, agent["total_timesteps"], args.agent, progress=False)
        seconds = time.perf_counter() - start
        stats = rollout(make_eval_env, lambda env, m=model, s=seed: SB3Policy(m, args.agent, deterministic, s),
                        args.eval_users, eval_from)
        summary = stats.summarise(1000, 0.95, seed=0)
        runs.append({
            "seed": seed, "train_seconds": seconds,
            **{k: summary[k].as_dict() for k in ("profit", "episode_length", "offers_sent", "click_rate")},
            "no_offer_share": float(stats.sends_per_action[:, 0].sum() / stats.length.sum()),
        })
        print(f"  profit {runs[-1]['profit']['mean']:.2f} [{runs[-1]['profit']['ci_low']:.2f}, "
              f"{runs[-1]['profit']['ci_high']:.2f}], {seconds:.0f} s", file=sys.stderr, flush=True)
    return {
        "benchmark": "agent_quality",
        "agent": args.agent,
        "config": agent,
        "train_world": args.world,
        "eval": {"world": "true", "users": args.eval_users, "first_user": eval_from},
        "runs": runs,
        "profit_over_seeds": _t_interval([r["profit"]["mean"] for r in runs]),
        "train_seconds_mean": sum(r["train_seconds"] for r in runs) / len(runs),
        "metadata": {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                     "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
    }


if __name__ == "__main__":
    result = main()
    from recsys.artifacts import json_bytes  # after main(): numpy loads after the thread settings

    print(json_bytes(result).decode(), end="")  # strict JSON: NaN -> null
