"""Throughput of TrueWorld in user-steps per second: one-user env (direct and through
``gymnasium.make``, wrappers included), gymnasium's SyncVectorEnv of one-user envs, and the
natively batched ``CampaignVectorEnv``; and where one step's time goes (``step_breakdown``,
``benchmarks.step_breakdown``) at N = 1 and N = 16,384.

    python -m benchmarks.throughput [--seconds 2.5] [--threads 1] [--sizes 1024 16384] [--skip-learned]

It also times one LearnedWorld env step with a K = 5 ``EnsembleResponseModel`` against the
same step with one model of the same architecture (``ensemble_vs_single_cost_ratio``).

Prints ONE JSON object on stdout; progress goes to stderr. Every variant is measured in the
same process, with the same world and campaign, the same action distribution and the same
autoreset semantics (see ``METHOD``), so the rates are comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

METHOD = (
    "Rate = simulated user-steps / wall seconds over a time-budgeted loop after a warm-up. "
    "Policy cost is excluded: actions are pre-generated uniformly over all n_actions (one pool "
    "per variant, cycled) and indexed per step, identical in cost and distribution across "
    "variants. campaign.invalid_action='penalize', so a masked draw is executed as 'no offer' "
    "by the env itself (every variant evaluates the masks inside step). Every variant resets "
    "finished users on the same step, so every counted user-step is a real simulated step: "
    "the single env calls reset() after terminated (reset time included), SyncVectorEnv and "
    "the native env run with autoreset_mode=SAME_STEP. user-steps = step calls x num_envs."
)
_ACTION_POOL_STEPS = 64  # rows of pre-generated actions, cycled
_WARMUP_SECONDS = 0.2
_ENSEMBLE_SIZE, _ENSEMBLE_USERS = 5, 4096


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=2.5, help="wall seconds measured per variant")
    p.add_argument("--threads", type=int, default=1, help="torch / OpenMP / MKL / OpenBLAS threads")
    p.add_argument("--sync-envs", type=int, default=16, help="one-user envs inside SyncVectorEnv")
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 16384], help="native batch sizes N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--learned-sizes", type=int, nargs="+", default=[1, 256, 4096], help="LearnedWorld batch sizes")
    p.add_argument("--breakdown-sizes", type=int, nargs="+", default=[1, 16384], help="N of the step time breakdowns")
    p.add_argument("--skip-learned", action="store_true", help="TrueWorld only (no LearnedWorld or ensemble timings)")
    p.add_argument("--ensemble-users", type=int, default=_ENSEMBLE_USERS, help="N of the ensemble-vs-single timing")
    p.add_argument("--simulator-dir", default=None,
                   help="a fitted simulator (experiments.fit_simulator); default: an untrained model of the "
                        "default architecture, which costs the same per step")
    return p.parse_args(argv)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _timed(step, user_steps_per_call: int, seconds: float) -> dict[str, float]:
    """Call ``step(i)`` for i = 0, 1, ... for ``seconds`` after a short warm-up."""
    i, end = 0, time.perf_counter() + _WARMUP_SECONDS
    while time.perf_counter() < end:
        step(i)
        i += 1
    calls, start = 0, time.perf_counter()
    end = start + seconds
    now = start
    while now < end:
        step(i + calls)
        calls += 1
        now = time.perf_counter()
    elapsed = now - start
    return {
        "user_steps_per_s": calls * user_steps_per_call / elapsed,
        "step_calls": calls,
        "user_steps": calls * user_steps_per_call,
        "seconds": elapsed,
    }


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before numpy / torch load their BLAS
    import gymnasium
    import numpy as np
    import torch
    from gymnasium.vector import AutoresetMode, SyncVectorEnv

    from benchmarks.step_breakdown import step_breakdown
    from envs import CampaignConfig, CampaignEnv, CampaignVectorEnv, TrueWorld, TrueWorldConfig

    torch.set_num_threads(args.threads)
    world_config, campaign = TrueWorldConfig(), CampaignConfig(invalid_action="penalize")
    n_actions = TrueWorld(world_config).catalog.n_actions
    g = np.random.default_rng(args.seed)

    def pool(n: int) -> np.ndarray:
        return g.integers(0, n_actions, size=(_ACTION_POOL_STEPS, n), dtype=np.int64)

    results: dict[str, dict] = {}

    # one user, gymnasium API loop
    _log("single CampaignEnv ...")
    env = CampaignEnv(campaign=campaign, world_config=world_config)
    env.reset(seed=args.seed)
    single_actions = [int(a) for a in pool(1)[:, 0]]

    def single_step(i: int) -> None:
        terminated = env.step(single_actions[i % _ACTION_POOL_STEPS])[2]
        if terminated:
            env.reset()

    results["single_env"] = {"num_envs": 1, **_timed(single_step, 1, args.seconds)}

    # the same through gymnasium.make (PassiveEnvChecker and OrderEnforcing wrappers): what users call
    _log("gymnasium.make('campaign/TrueWorld-v0') ...")
    made = gymnasium.make("campaign/TrueWorld-v0", campaign=campaign, world_config=world_config)
    made.reset(seed=args.seed)

    def made_step(i: int) -> None:
        if made.step(single_actions[i % _ACTION_POOL_STEPS])[2]:
            made.reset()

    results["gym_make_single_env"] = {"num_envs": 1, **_timed(made_step, 1, args.seconds)}

    # gymnasium SyncVectorEnv of one-user envs
    k = args.sync_envs
    _log(f"SyncVectorEnv x {k} ...")
    sync = SyncVectorEnv(
        [lambda: CampaignEnv(campaign=campaign, world_config=world_config) for _ in range(k)],
        autoreset_mode=AutoresetMode.SAME_STEP,
    )
    sync.reset(seed=args.seed)
    sync_actions = pool(k)
    results[f"sync_vector_env_{k}"] = {
        "num_envs": k, **_timed(lambda i: sync.step(sync_actions[i % _ACTION_POOL_STEPS]), k, args.seconds)
    }
    sync.close()

    # the natively batched core
    for n in args.sizes:
        _log(f"native CampaignVectorEnv N={n} ...")
        native = CampaignVectorEnv(TrueWorld(world_config, n_users=n), campaign, AutoresetMode.SAME_STEP)
        native.reset(seed=args.seed)
        native_actions = pool(n)
        results[f"native_{n}"] = {
            "num_envs": n,
            **_timed(lambda i, e=native, a=native_actions: e.step(a[i % _ACTION_POOL_STEPS]), n, args.seconds),
        }

    breakdown = {}
    for n in args.breakdown_sizes:
        _log(f"step time breakdown N={n} ...")
        env_n = CampaignVectorEnv(TrueWorld(world_config, n_users=n), campaign, AutoresetMode.SAME_STEP)
        env_n.reset(seed=args.seed)
        breakdown[str(n)] = step_breakdown(env_n, pool(n), args.seconds)

    # the learned simulator: env around the response model vs the model's raw step
    learned = _learned_world_factory(args.simulator_dir, world_config)
    for n in [] if args.skip_learned else args.learned_sizes:
        _log(f"LearnedWorld N={n} ...")
        env_n = CampaignVectorEnv(learned(n), campaign, AutoresetMode.SAME_STEP)
        env_n.reset(seed=args.seed)
        acts = pool(n)
        results[f"learned_{n}"] = {
            "num_envs": n, **_timed(lambda i, e=env_n, a=acts: e.step(a[i % _ACTION_POOL_STEPS]), n, args.seconds)
        }
        _log(f"raw response-model step N={n} ...")
        results[f"raw_forward_{n}"] = {"num_envs": n, **_timed(_raw_step(env_n.world, acts), n, args.seconds)}

    # one env step with a K = 5 ensemble vs with one model (the ensemble's first member)
    ens = None if args.skip_learned else _ensemble_vs_single(learned, args.ensemble_users, campaign, pool,
                                                             args.seconds, args.seed)
    results.update(ens["results"] if ens else {})

    sync_rate = results[f"sync_vector_env_{k}"]["user_steps_per_s"]
    out: dict = {
        "benchmark": "throughput",
        "unit": "user_steps_per_s",
        "world": "TrueWorld (default TrueWorldConfig)",
        "campaign": {"horizon": campaign.horizon, "budget": campaign.budget, "invalid_action": campaign.invalid_action},
        "method": METHOD,
        "results": results,
        "step_breakdown": breakdown,
    }
    for n in args.sizes:
        out[f"native_vs_sync_ratio_{n}"] = results[f"native_{n}"]["user_steps_per_s"] / sync_rate
    out["native_vs_single_ratio"] = {
        str(n): results[f"native_{n}"]["user_steps_per_s"] / results["single_env"]["user_steps_per_s"]
        for n in args.sizes
    }
    big, one = max(args.learned_sizes), min(args.learned_sizes)
    out["target"] = {"native_vs_sync_ratio": 100.0, "gym_make_single_env_user_steps_per_s": 30_000.0,
                     "native_16384_user_steps_per_s": 2_500_000.0}
    if ens:
        out[f"learned_vs_raw_forward_ratio_{big}"] = (
            results[f"learned_{big}"]["user_steps_per_s"] / results[f"raw_forward_{big}"]["user_steps_per_s"])
        out["learned_vs_raw_forward_ratio"] = out[f"learned_vs_raw_forward_ratio_{big}"]
        out[f"learned_{big}_vs_learned_{one}_ratio"] = (
            results[f"learned_{big}"]["user_steps_per_s"] / results[f"learned_{one}"]["user_steps_per_s"])
        out["ensemble_vs_single_cost_ratio"] = ens["ratio"]
        out["ensemble_step_ms"] = ens["step_ms"]
        out["learned_simulator"] = args.simulator_dir or "untrained default architecture (same cost per step)"
        out["target"].update({"learned_vs_raw_forward_ratio": 0.5, f"learned_{big}_vs_learned_{one}_ratio": 50.0,
                              "ensemble_vs_single_cost_ratio": 2.0})
    out["metadata"] = {
        "torch_threads": torch.get_num_threads(),
        "thread_env": {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
        "numpy_version": np.__version__,
        "torch_version": torch.__version__,
        "gymnasium_version": gymnasium.__version__,
        "python_version": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "seconds_per_variant": args.seconds,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return out


def _learned_world_factory(simulator_dir: str | None, world_config):
    """``n -> LearnedWorld``: from a fitted simulator, or an untrained model of the default
    architecture with an independent-marginals user sampler (throughput does not depend on
    the weights)."""
    import numpy as np

    from envs import rng
    from envs.learned_world import LearnedWorld
    from envs.true_world import TrueWorld
    from envs.world import Profiles
    from recsys.simulator.io import load_simulator
    from recsys.simulator.response_model import DataSpec, ResponseModel, ResponseModelConfig
    from recsys.simulator.user_gan import IndependentMarginalsSampler

    if simulator_dir:
        base = load_simulator(simulator_dir)
        return lambda n: LearnedWorld(base.model, base.sampler, base.catalog, n)
    truth = TrueWorld(world_config, n_users=2000)
    profiles = truth.reset_users(np.arange(2000), rng.seed_key(np.arange(2000)))
    schema = truth.profile_schema
    data = Profiles(profiles.categorical, profiles.numeric, tuple(schema.categorical), tuple(schema.numeric),
                       tuple(schema.categorical.values()))
    spec = DataSpec(n_actions=truth.catalog.n_actions, cat_names=list(schema.categorical),
                    cardinalities=list(schema.categorical.values()), num_names=list(schema.numeric),
                    num_loc=[v[0] for v in schema.numeric.values()], num_scale=[v[1] for v in schema.numeric.values()],
                    horizon=20, action_category=[0, *(truth.catalog.category + 1).tolist()])
    model = ResponseModel(spec, ResponseModelConfig()).eval()
    sampler = IndependentMarginalsSampler(data)
    return lambda n: LearnedWorld(model, sampler, truth.catalog, n)


def _ensemble_vs_single(learned, n: int, campaign, pool, seconds: float, seed: int) -> dict:
    """Wall time of one ``CampaignVectorEnv`` step over a LearnedWorld of ``n`` users with a
    K = 5 ensemble (batched "fused", the default for GRU members, and "vmap") vs with its
    first member alone. Members 1..4 are untrained copies of the architecture (seeds 1..4):
    the cost of a step does not depend on the weights."""
    from gymnasium.vector import AutoresetMode

    from envs import CampaignVectorEnv
    from envs.learned_world import LearnedWorld
    from recsys.simulator.response_model import EnsembleResponseModel

    base = learned(1)
    single = base.model.members[0] if isinstance(base.model, EnsembleResponseModel) else base.model
    members = stand_in_members(single, _ENSEMBLE_SIZE, seed)
    models = {"single": single, "ensemble": EnsembleResponseModel(members, batched="fused"),
              "ensemble_vmap": EnsembleResponseModel(members, batched="vmap")}
    acts, results, step_ms = pool(n), {}, {}
    for name, model in models.items():
        _log(f"LearnedWorld N={n}, {name} response model ...")
        env = CampaignVectorEnv(LearnedWorld(model, base.sampler, base.catalog, n), campaign, AutoresetMode.SAME_STEP)
        env.reset(seed=seed)
        r = _timed(lambda i, e=env: e.step(acts[i % _ACTION_POOL_STEPS]), n, seconds)
        results[f"learned_{n}_{name}"] = {"num_envs": n, "ensemble_size": 1 if name == "single" else _ENSEMBLE_SIZE, **r}
        step_ms[name] = 1000 * r["seconds"] / r["step_calls"]
    return {"results": results, "step_ms": {**step_ms, "num_envs": n, "ensemble_size": _ENSEMBLE_SIZE},
            "ratio": step_ms["ensemble"] / step_ms["single"]}


def stand_in_members(first, k: int, seed: int = 0) -> list:
    """``first`` and k - 1 untrained copies of its architecture (seeds seed+1..seed+k-1): an
    ensemble costs the same per step whatever its weights."""
    import torch

    from recsys.simulator.response_model import build_response_model

    members = [first]
    for j in range(1, k):
        torch.manual_seed(seed + j)
        members.append(build_response_model(first.spec, first.config).eval())
    return members


def _raw_step(world, action_pool):
    """One step of the bare response model for N users: probabilities for the chosen actions
    and the history update, no env bookkeeping, no sampling."""
    import torch

    model, u, state = world.model, world._u, world._state
    pool = torch.as_tensor(action_pool)
    ones = torch.ones(pool.shape[1])

    def step(i: int) -> None:
        nonlocal state
        a = pool[i % len(pool)]
        with torch.inference_mode():
            torch.sigmoid(model.step_logits(u, state, a))
            state = model.advance(state, a, ones, ones)

    return step


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
