"""Fit the learned simulator from logs and judge it against the truth.

    python -m experiments.fit_simulator                  # default config
    python -m experiments.fit_simulator experiment=smoke

Top to bottom: (1) logs (generated in TrueWorld by the logging policy), split by user;
(2) response models: the main one (GRU) and the ablation baselines, trained by the same code;
(3) the user GAN on the training users' profiles, judged on held-out profiles; (4) the
artifacts (``simulator/``: response_model/, user_gan/, catalog.json); (5) the whole simulator
against TrueWorld: fixed policies in both worlds with paired users; (6) ``fidelity.json``,
``fidelity.md`` and plots.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pyarrow as pa
from gymnasium.vector import AutoresetMode
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from agents.reference import GreedyHeuristicPolicy, LoggingPolicy, NoOfferPolicy, RandomPolicy
from envs.learned_world import LearnedWorld
from envs.true_world import TrueWorld, replay_oracle
from envs.vector_env import CampaignVectorEnv
from experiments import config as config_module
from experiments import setup_torch
from experiments.collect import generate_logs, make_env_factory
from experiments.fidelity import policy_fidelity, response_model_fidelity
from experiments.report.fidelity import fidelity_markdown
from experiments.report.plots import plot_calibration, plot_policy_values
from recsys.artifacts import atomic_write_json, atomic_write_text
from recsys.data.profiles import MIN_USERS, profiles_from_logs
from recsys.data.schema import log_metadata, validate_logs
from recsys.data.sequences import SequenceData, sequences_from_logs
from recsys.data.splits import split_users
from recsys.simulator.io import load_simulator, save_simulator
from recsys.simulator.profile_fidelity import plot_marginals, profile_fidelity
from recsys.simulator.response_model import fit_response_model, predict
from recsys.simulator.user_gan import IndependentMarginalsSampler, fit_user_gan

log = logging.getLogger("campaign_gym")
config_module.register()
# Fixed policies whose values are compared in both worlds (names as in results.json).
FIDELITY_POLICIES = ("logging", "random", "greedy", "no_offer", "softmax")


def make_logs(config: config_module.Config, progress: bool, n_users: int | None = None,
              first_user: int | None = None) -> pa.Table:
    """Logged data: the logging policy run in TrueWorld on this seed's block of users (by
    default its first ``experiment.logs.n_users``; OPE draws take later users of the block)."""
    exp = config.experiment
    logs_from, _ = config_module.user_blocks(exp.seed)
    make_env = make_env_factory(lambda n: TrueWorld(config.world, n_users=n), config.campaign)
    return generate_logs(
        make_env,
        lambda env: LoggingPolicy(env, exp.logs.temperature, exp.logs.epsilon, exp.logs.rest_probability, seed=exp.seed),
        n_users=n_users or exp.logs.n_users, seed=logs_from if first_user is None else first_user, progress=progress,
    )


def fixed_policies(config: config_module.Config) -> dict[str, Any]:
    logs, seed = config.experiment.logs, config.experiment.seed
    return {
        "logging": lambda env: LoggingPolicy(env, logs.temperature, logs.epsilon, logs.rest_probability, seed=seed),
        "random": lambda env: RandomPolicy(env.catalog.n_actions, seed=seed),
        "greedy": GreedyHeuristicPolicy,
        "no_offer": lambda env: NoOfferPolicy(env.catalog.n_actions),
        "softmax": lambda env: LoggingPolicy(env, temperature=0.1, epsilon=0.05, rest_probability=0.0, seed=seed),
    }


def split_logs(logs: pa.Table, n_actions: int, seed: int) -> tuple[SequenceData, SequenceData, SequenceData]:
    """Per-user sequences, split train / validation / test by user (no user in two splits)."""
    data = sequences_from_logs(logs, n_actions=n_actions)
    if data.n_users < MIN_USERS:
        raise ValueError(f"logs: {data.n_users} users, need at least {MIN_USERS} to fit a simulator")
    split = split_users(data.user_ids, seed=seed)
    return tuple(data.subset(split[k]) for k in ("train", "validation", "test"))  # type: ignore[return-value]


def fit_simulator(config: config_module.Config, out: Path, logs: pa.Table) -> tuple[Path, dict[str, Any]]:
    """Fit and judge the simulator; returns its artifact directory and the fidelity dict."""
    sim, exp = config.simulator, config.experiment
    seed, progress = exp.seed, exp.progress
    summary = validate_logs(logs)
    meta = log_metadata(logs)
    true_world = TrueWorld(config.world, n_users=1)
    if summary.n_actions is not None and summary.n_actions > true_world.catalog.n_actions:
        raise ValueError(
            f"logs: actions go up to {summary.n_actions - 1} but the catalog has {true_world.catalog.n_offers} offers"
        )
    # (1) split by user
    train, validation, test = split_logs(logs, true_world.catalog.n_actions, seed)
    log.info("users: %d train, %d validation, %d test", train.n_users, validation.n_users, test.n_users)

    # (2) response models: main + ablation, same code and data
    main = sim.response_model.history_encoder
    encoders = [main] + [e for e in sim.ablation if e != main]
    models = {
        enc: fit_response_model(train, validation, replace(sim.response_model, history_encoder=enc), progress,
                                out / "tensorboard" / f"response_model_{enc}")
        for enc in encoders
    }
    truth_known = meta.get("source") == "true_world" and meta.get("world_seed") == config.world.seed
    oracle = replay_oracle(config.world, test.user_ids, test.actions, test.click, test.conversion, test.mask) \
        if truth_known else None
    predictions = {enc: predict(m, test) for enc, m in models.items()}
    response = response_model_fidelity(predictions, test, oracle, main=main, n_boot=sim.n_bootstrap, seed=seed)

    # (3) user GAN on training users, judged on held-out users
    profiles = profiles_from_logs(logs)
    in_train = np.isin(profiles.user_ids, train.user_ids)
    heldout = profiles.subset(np.isin(profiles.user_ids, test.user_ids))
    gan = fit_user_gan(profiles.subset(in_train), replace(sim.user_gan, seed=seed), progress,
                       out / "tensorboard" / "user_gan")
    marginals = IndependentMarginalsSampler(profiles.subset(in_train))
    synthetic = gan.sample(heldout.n_users, seed=seed)
    profile = profile_fidelity(heldout, synthetic, marginals.sample(heldout.n_users, seed=seed))

    # (4) artifacts
    sim_dir = save_simulator(out / "simulator", models[main], gan, true_world.catalog, response)

    # (5) the whole simulator vs the truth, paired users
    learned = load_simulator(sim_dir, n_users=1)  # round trip through the files
    _, eval_from = config_module.user_blocks(seed)
    policies = fixed_policies(config)
    worlds = policy_fidelity(
        make_env_factory(lambda n: TrueWorld(config.world, n_users=n), config.campaign),
        lambda n: CampaignVectorEnv(LearnedWorld(learned.model, learned.sampler, learned.catalog, n),
                                    config.campaign, AutoresetMode.DISABLED),
        policies, sim.fidelity_users, eval_from,
    )

    # (6) report
    fidelity = {
        **response,
        "c2st_auc": profile["c2st_auc"],
        "c2st_auc_marginals_baseline": profile["c2st_auc_marginals_baseline"],
        "kendall_tau": worlds["kendall_tau"],
        "logging_ctr_rel_error": worlds["rel_error"]["logging"]["click_rate"],
        "logging_cvr_rel_error": worlds["rel_error"]["logging"]["conversion_rate"],
        "profiles": profile,
        "policies": worlds,
        "data": {"train_users": train.n_users, "validation_users": validation.n_users, "test_users": test.n_users},
    }
    atomic_write_json(out / "fidelity.json", fidelity)
    if oracle is not None:
        exposed = test.mask & (test.actions > 0)
        plot_calibration(predictions[main], oracle, exposed, out / "calibration.png")
    plot_marginals(heldout, synthetic, out / "marginals.png")
    plot_policy_values(worlds["policies"], out / "policy_values.png")
    atomic_write_text(out / "fidelity.md", fidelity_markdown(fidelity, oracle is not None))
    return sim_dir, fidelity


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    config = config_module.load(cfg)
    setup_torch(config.experiment.torch_threads)
    out = Path(HydraConfig.get().runtime.output_dir)
    logs = make_logs(config, config.experiment.progress)
    _, fidelity = fit_simulator(config, out, logs)
    log.info("fidelity: %s", json.dumps({k: v for k, v in fidelity.items() if isinstance(v, float)}))
    return float(fidelity["click_auc"])


if __name__ == "__main__":
    main()
