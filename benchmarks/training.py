"""Where does PPO's learn() time go? Share of wall time spent stepping the env, and env-steps/s.

    python -m benchmarks.training [--steps 131072] [--world learned|true]
                                  [--ensemble-size 5 --reward-penalty 1 --threshold 0.39 --halt]

Prints ONE JSON object. Uses the default agent config (``conf/agent/ppo.yaml``) on the
batched env. The env time is measured by a ``VecEnvWrapper`` around the SB3 adapter
(step_async/step_wait/reset), so it includes the world (the response model forward for
LearnedWorld), the adapter and the info dicts; everything else is SB3 (policy forward,
rollout buffer, gradient steps). The learned world uses an untrained response model of the
default architecture (same cost per step as a fitted one) unless --simulator-dir is given; its
heads are shifted (Platt shift) to TrueWorld's logged base rates of click, conversion and churn,
so users churn and autoreset about as often as in a fitted simulator (``--stand-in raw`` keeps
the raw untrained heads: p = 0.5 each, half the users churn every step, 3-7x more resets).
``--ensemble-size K`` makes the stand-in K untrained members (seeds 0..K-1, one batched forward),
and ``--reward-penalty``, ``--threshold``, ``--halt``, ``--member-per-user`` switch on the
pessimism of ``conf/simulator/`` (envs.pessimism), so the cost of the sim-to-real simulator is
measured, not guessed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

_CONF = Path(__file__).resolve().parent.parent / "conf" / "agent" / "ppo.yaml"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.training", description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=131_072, help="env steps of learn()")
    p.add_argument("--world", choices=("learned", "true"), default="learned")
    p.add_argument("--simulator-dir", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n-envs", type=int, default=None, help="override the config's n_envs")
    p.add_argument("--n-steps", type=int, default=None, help="override the config's n_steps")
    p.add_argument("--stand-in", choices=("calibrated", "raw"), default="calibrated",
                   help="untrained response model: heads at TrueWorld's base rates, or raw (p = 0.5)")
    p.add_argument("--ensemble-size", type=int, default=1, help="stand-in response-model members (K)")
    p.add_argument("--reward-penalty", type=float, default=0.0, help="MOPO lambda (needs K >= 2)")
    p.add_argument("--threshold", type=float, default=None, help="u above which a step is uncertain")
    p.add_argument("--halt", action="store_true", help="MOReL: halt users above --threshold")
    p.add_argument("--member-per-user", action="store_true")
    args = p.parse_args(argv)
    if args.ensemble_size < 1:
        p.error("--ensemble-size: must be >= 1")
    if args.simulator_dir and args.ensemble_size > 1:
        p.error("--ensemble-size: a fitted simulator brings its own members; drop one of the two options")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch
    from omegaconf import OmegaConf
    from stable_baselines3.common.vec_env import VecEnvWrapper

    from agents.sb3 import algorithm_class
    from benchmarks.throughput import _learned_world_factory, stand_in_members
    from envs.campaign import CampaignConfig
    from envs.learned_world import LearnedWorld
    from envs.pessimism import Pessimism
    from envs.sb3 import SB3VecEnv
    from envs.true_world import TrueWorld, TrueWorldConfig
    from envs.vector_env import CampaignVectorEnv
    from recsys.simulator.response_model import EnsembleResponseModel

    torch.set_num_threads(args.threads)
    agent = OmegaConf.to_container(OmegaConf.load(_CONF))
    if args.n_envs:
        agent["n_envs"] = args.n_envs
    if args.n_steps:
        agent["hyperparams"]["n_steps"] = args.n_steps

    class Timed(VecEnvWrapper):
        seconds = 0.0
        resets = 0

        def reset(self):
            start = time.perf_counter()
            out = self.venv.reset()
            Timed.seconds += time.perf_counter() - start
            return out

        def step_async(self, actions):
            start = time.perf_counter()
            self.venv.step_async(actions)
            Timed.seconds += time.perf_counter() - start

        def step_wait(self):
            start = time.perf_counter()
            out = self.venv.step_wait()
            Timed.seconds += time.perf_counter() - start
            Timed.resets += int(out[2].sum())
            return out

    world_config = TrueWorldConfig()
    pessimism = Pessimism(args.reward_penalty, args.threshold, args.halt, 0.0, args.member_per_user)
    rates = (_truth_base_rates(world_config) if args.world == "learned" and not args.simulator_dir
             and args.stand_in == "calibrated" else None)
    if args.world == "true":
        world = TrueWorld(world_config, n_users=agent["n_envs"])
    else:
        base = _learned_world_factory(args.simulator_dir, world_config)(1)
        model = base.model
        if not args.simulator_dir:
            members = stand_in_members(model, args.ensemble_size)
            for member in members if rates else []:
                with torch.no_grad():
                    member.calib_shift.copy_(torch.logit(torch.tensor(rates, dtype=torch.float32)))
            model = EnsembleResponseModel(members, batched="fused") if len(members) > 1 else members[0]
        world = LearnedWorld(model, base.sampler, base.catalog, agent["n_envs"], pessimism)
    env = CampaignVectorEnv(world, CampaignConfig(invalid_action="penalize"))
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.vec_env import VecMonitor

    vec = Timed(VecMonitor(SB3VecEnv(env)))
    model = algorithm_class(agent["algo"])("MlpPolicy", vec, policy_kwargs={"net_arch": agent["net_arch"]},
                                           seed=0, device="cpu", verbose=0, **agent["hyperparams"])
    print(f"learn() for {args.steps} steps ...", file=sys.stderr)
    start = time.perf_counter()
    model.set_logger(Logger(folder=None, output_formats=[]))  # else SB3 leaves an empty tempdir/SB3-<time> folder
    model.learn(args.steps)
    wall = time.perf_counter() - start
    return {
        "benchmark": "training",
        "world": args.world,
        "agent": {k: agent[k] for k in ("algo", "n_envs", "net_arch", "hyperparams")},
        "env_steps": int(model.num_timesteps),
        "learn_seconds": wall,
        "env_seconds": Timed.seconds,
        "env_share_of_learn": Timed.seconds / wall,
        "env_steps_per_s": model.num_timesteps / wall,
        "resets_per_env_step": Timed.resets / model.num_timesteps,
        "stand_in": None if args.world == "true" or args.simulator_dir else args.stand_in,
        "ensemble_size": int(getattr(world, "n_members", 1)),
        "pessimism": None if args.world == "true" else vars(pessimism),
        "stand_in_base_rates": None if rates is None else dict(zip(("click", "convert_given_click", "churn"), rates, strict=True)),
        "target": {"env_share_of_learn": 0.2},
        "method": __doc__.split("\n\n")[2].replace("\n", " "),
        "metadata": {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                     "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
    }


def _truth_base_rates(world_config) -> list[float]:
    """p(click | offer), p(conversion | click), p(churn) per step in TrueWorld logs of the
    logging policy (4,000 users): the base rates a simulator fitted on such logs reproduces."""
    import numpy as np

    from agents.reference import LoggingPolicy
    from envs.campaign import CampaignConfig
    from envs.true_world import TrueWorld
    from experiments.collect import generate_logs, make_env_factory

    make_env = make_env_factory(lambda n: TrueWorld(world_config, n), CampaignConfig())
    logs = generate_logs(make_env, lambda env: LoggingPolicy(env), n_users=4000, seed=0)
    c = {k: logs.column(k).to_numpy() for k in ("action", "click", "conversion", "churned")}
    sent = c["action"] > 0
    return [float(c["click"][sent].mean()), float(c["conversion"][sent].sum() / max(c["click"][sent].sum(), 1)),
            float(np.mean(c["churned"]))]


if __name__ == "__main__":
    result = main()
    from recsys.artifacts import json_bytes  # after main(): numpy loads after the thread settings

    print(json_bytes(result).decode(), end="")  # strict JSON: NaN -> null
