"""Fit the learned simulator from logs and judge it against the truth.

    python -m experiments.fit_simulator                  # default config
    python -m experiments.fit_simulator experiment=smoke

Top to bottom: (1) the logged data, validated and parsed once, split by user; (2) response
models: the main one (GRU) and the ablation baselines, trained by the same code; (3) the user
GAN on the training users' profiles, judged on held-out profiles; (4) the artifacts
(``simulator/``: response_model/, user_gan/, catalog.json); (5) the whole simulator against
TrueWorld: fixed policies in both worlds with paired users; (6) ``fidelity.json``,
``fidelity.md`` and plots.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from envs.learned_world import LearnedWorld
from envs.true_world import TrueWorld, replay_oracle
from experiments import config as config_module
from experiments import setup_torch
from experiments.collect import collect_logs, make_env_factory
from experiments.fidelity import policy_fidelity, repeat_probe, response_model_fidelity
from experiments.parallel import Workers, longest_first, worker_count
from experiments.policies import fixed_policies
from experiments.report.fidelity import fidelity_markdown
from experiments.report.plots import plot_calibration, plot_marginals, plot_policy_values, plot_repeat_probe
from recsys.artifacts import atomic_write_json, atomic_write_text, json_bytes
from recsys.data.dataset import LoggedDataset
from recsys.simulator.io import load_simulator, save_simulator
from recsys.simulator.profile_fidelity import profile_fidelity
from recsys.simulator.response_model import (
    ResponseModelConfig,
    assemble_response_model,
    fit_member,
    member_jobs,
    predict,
)
from recsys.simulator.user_gan import IndependentMarginalsSampler, fit_user_gan
from recsys.simulator.user_gan.marginals import ResampledProfiles

log = logging.getLogger("campaign_gym")
config_module.register()


def fit_simulator(config: config_module.Config, out: Path, data: LoggedDataset,
                  workers: Workers | None = None) -> tuple[Path, dict[str, Any]]:
    """Fit and judge the simulator; returns its artifact directory and the fidelity dict."""
    return queue_simulator(config, out, data, workers).finish()


@dataclass
class QueuedSimulator:
    """The simulator's fits, queued on the workers (jobs queued after them run while
    ``finish`` judges the fitted simulator here)."""

    config: config_module.Config
    out: Path
    data: LoggedDataset
    workers: Workers
    encoders: dict[str, list[str]]  # history encoder -> the job names of its members
    futures: dict[str, Any]

    def finish(self) -> tuple[Path, dict[str, Any]]:
        """Gather the fits, save the simulator and judge it; (artifact directory, fidelity)."""
        return _judged(self, self.workers.gather(self.futures, "simulator", self.config.experiment.progress))


def queue_simulator(config: config_module.Config, out: Path, data: LoggedDataset,
                    workers: Workers | None = None) -> QueuedSimulator:
    """Queue the simulator's fits as jobs on ``workers``: every member of the response models
    (main + ablation, same code and data) and the user GAN, longest first."""
    sim, exp = config.simulator, config.experiment
    workers = workers or Workers(1, exp.torch_threads)
    progress = exp.progress and not workers.parallel  # each job's own bars; else one bar over the jobs
    # (1) split by user
    train, validation = data.split("train"), data.split("validation")
    log.info("users: %d train, %d validation, %d test", train.n_users, validation.n_users, data.split("test").n_users)
    # (2) response models and (3) the user GAN on the training users' profiles
    main = sim.response_model.history_encoder
    jobs = {"user_gan": (fit_user_gan, data.split_profiles("train"), replace(sim.user_gan, seed=exp.seed), progress,
                         out / "tensorboard" / "user_gan")}
    encoders = {}
    for enc in [main] + [e for e in sim.ablation if e != main]:
        members = member_jobs(train, validation, ablation_config(sim.response_model, enc, main), progress,
                              out / "tensorboard" / f"response_model_{enc}", data.catalog.category)
        encoders[enc] = [f"response_model_{enc}" + (f"_member_{k}" if len(members) > 1 else "")
                         for k in range(len(members))]
        jobs.update({name: (fit_member, *job) for name, job in zip(encoders[enc], members, strict=True)})
    futures = {name: workers.submit(*jobs[name]) for name in longest_first(jobs)}
    return QueuedSimulator(config, out, data, workers, encoders, futures)


def ablation_config(main_config: ResponseModelConfig, encoder: str, main: str) -> ResponseModelConfig:
    """The config of the model with history ``encoder``: the main model's, with that encoder. The
    "none" ablation also drops the exposure counts: they are history too, and "the gain of history"
    must compare against a model that sees none of it."""
    config = replace(main_config, history_encoder=encoder)
    return replace(config, exposure_features=False) if encoder == "none" and encoder != main else config


def _judged(queued: QueuedSimulator, fitted: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    config, out, data, workers = queued.config, queued.out, queued.data, queued.workers
    sim, seed = config.simulator, config.experiment.seed
    train, validation, test = (data.split(s) for s in ("train", "validation", "test"))
    main = sim.response_model.history_encoder
    gan = fitted["user_gan"]
    models = {enc: assemble_response_model([fitted[name] for name in names], validation)
              for enc, names in queued.encoders.items()}
    train_profiles, heldout = data.split_profiles("train"), data.split_profiles("test")

    truth = data.from_world(config.world.seed)  # TrueWorld made these logs: truth-based checks apply
    oracle = (replay_oracle(config.world, test.user_ids, test.actions, test.click, test.conversion, test.mask)
              if truth else None)
    predictions = {enc: predict(m, test) for enc, m in models.items()}
    response = response_model_fidelity(predictions, test, oracle, main=main, n_boot=sim.n_bootstrap, seed=seed)

    # the GAN judged on held-out users
    synthetic = gan.sample(heldout.n_users, seed=seed)
    marginals = IndependentMarginalsSampler(train_profiles).sample(heldout.n_users, seed=seed)
    profile = profile_fidelity(heldout, synthetic, marginals)

    # (4) artifacts
    sim_dir = save_simulator(out / "simulator", models[main], gan, data.catalog, response)

    # (5) the whole simulator vs the truth, paired users (own logs have no truth: experiments.own_logs)
    learned = load_simulator(sim_dir, n_users=1)  # round trip through the files
    _, eval_from = config_module.user_blocks(seed)
    worlds = policy_fidelity(
        make_env_factory(lambda n: TrueWorld(config.world, n_users=n), config.campaign),
        make_env_factory(lambda n: LearnedWorld(learned.model, learned.sampler, learned.catalog, n), config.campaign),
        fixed_policies(config), sim.fidelity_users, eval_from, workers=workers,
    ) if truth else None
    repeat = repeat_probe(
        make_env_factory(lambda n: TrueWorld(config.world, n_users=n), config.campaign),
        make_env_factory(lambda n: LearnedWorld(learned.model, ResampledProfiles(train_profiles), learned.catalog, n),
                         config.campaign),
        learned.catalog.n_actions, sim.repeat_probe_users, eval_from,
    ) if truth and sim.repeat_probe_users > 0 else None

    # (6) report
    fidelity = {
        **response,
        "c2st_auc": profile["c2st_auc"],
        "c2st_auc_marginals_baseline": profile["c2st_auc_marginals_baseline"],
        **({"kendall_tau": worlds["kendall_tau"],
            "logging_ctr_rel_error": worlds["rel_error"]["logging"]["click_rate"],
            "logging_cvr_rel_error": worlds["rel_error"]["logging"]["conversion_rate"]} if worlds else {}),
        "profiles": profile,
        "policies": worlds,
        "repeat_probe": repeat,
        "data": {"train_users": train.n_users, "validation_users": validation.n_users, "test_users": test.n_users},
    }
    atomic_write_json(out / "fidelity.json", fidelity)
    if oracle is not None:
        plot_calibration(predictions[main], oracle, test.mask & (test.actions > 0), out / "calibration.png")
    plot_marginals(heldout, synthetic, out / "marginals.png")
    if worlds:
        plot_policy_values(worlds["policies"], out / "policy_values.png")
    if repeat:
        plot_repeat_probe(repeat, out / "repeat_probe.png")
    atomic_write_text(out / "fidelity.md", fidelity_markdown(fidelity, oracle is not None))
    return sim_dir, fidelity


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    config = config_module.load_or_exit(cfg)
    setup_torch(config.experiment.torch_threads)
    out = Path(HydraConfig.get().runtime.output_dir)
    data = LoggedDataset.from_table(collect_logs(config, config.experiment.progress),
                                    TrueWorld(config.world).catalog, config.experiment.seed)
    with Workers(worker_count(config.experiment.workers), config.experiment.torch_threads, ray=True) as workers:
        _, fidelity = fit_simulator(config, out, data, workers)
    log.info("fidelity: %s", json_bytes({k: v for k, v in fidelity.items() if isinstance(v, float)}, indent=None).decode())
    return float(fidelity["click_auc"])


if __name__ == "__main__":
    main()
