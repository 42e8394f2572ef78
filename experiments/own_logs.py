"""Your own logs, end to end: fit, train, compare and evaluate from one parquet file.

    python -m experiments.run experiment=own_logs experiment.logs.path=LOGS.parquet \\
        experiment.logs.catalog=CATALOG.json        # catalog optional: inferred when null
    python -m experiments.run experiment=movielens  # MovieLens-100k (recsys.data.movielens)

The main job (``experiments.run``) with TrueWorld taken out. Reads top to bottom:
(1) the logs, validated and parsed once, with their catalog (``catalog.json``, or inferred:
``recsys.data.catalog``); (2) the learned simulator fitted on them (``experiments.fit_simulator``;
its truth-based checks skip themselves); (3) supervised recommenders on the replayed logs;
(4) SB3 agents in the learned world; (5) every policy in the learned world on the same users
with CIs, the logging policy being the logs' estimated behaviour (``agents.behaviour``);
(6) the checks that need no truth (``experiments.truth_free``): held-out outcomes, profiles,
session statistics under the logging policy; (7) OPE on held-out logged users, beside each
policy's learned-world value; (8) results.json and the report (``experiments.report.own_logs``).

Propensities: logged ones are used as they are; estimated ones (MovieLens) are used and flagged;
a file without a ``propensity`` column gets placeholders and only the estimators that need no
propensities (``truth_free.MODEL_ONLY``) run.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from agents.behaviour import EstimatedLoggingPolicy, behaviour_table
from envs.vector_env import CampaignVectorEnv
from experiments import config as config_module
from experiments import setup_torch
from experiments.artifacts import StageTimer, provenance
from experiments.collect import generate_logs, make_env_factory
from experiments.evaluate import evaluate_worlds
from experiments.fit_simulator import fit_simulator
from experiments.learned_worlds import LearnedWorlds
from experiments.ope.evaluate import ResponseModelRewards, logged_rewards
from experiments.ope.registry import SEQUENTIAL_ESTIMATORS, EstimatorConfig
from experiments.parallel import Workers, worker_count
from experiments.policies import BANDITS, check_ope_policies, comparison_roster, ope_roster
from experiments.report.fidelity import target_checks
from experiments.report.own_logs import write_own_logs_report
from experiments.report.plots import read_scalars
from experiments.train import train_agents, train_recommenders
from experiments.truth_free import (
    MODEL_ONLY,
    compare_sequences,
    held_out_ope,
    observed_fidelity,
    ope_agreement,
    sequence_stats,
)
from recsys.artifacts import atomic_write_json
from recsys.data.catalog import infer_catalog, read_catalog
from recsys.data.dataset import LoggedDataset
from recsys.data.io import read_parquet, write_logs
from recsys.data.movielens import load_movielens
from recsys.data.schema import log_metadata, validate_logs, with_metadata
from recsys.data.sequences import sequences_from_logs
from recsys.data.splits import SPLITS
from recsys.recommenders import evaluate_recommenders
from recsys.simulator.io import load_simulator

log = logging.getLogger("campaign_gym")
LEARNING_CURVE_TAGS = ("campaign/profit_per_episode", "eval_learned/return_per_user", "campaign/click_rate")
MAX_BANDIT_BYTES = 2e9  # linear bandits keep a (d x d) matrix per action: left out above this (MovieLens: 145 GB)
NO_PROPENSITY = "absent (the file has no propensity column; placeholders 1.0, only model-based OPE)"


def propensity_status(meta: dict[str, Any]) -> str:
    """logged | estimated | absent: what the logs' propensities are, from their metadata."""
    note = str(meta.get("propensity", ""))
    return "absent" if note.startswith("absent") else "estimated" if note.startswith("estimated") else "logged"


def read_own_logs(path: str) -> pa.Table:
    """The logs file, validated; without a propensity column, placeholders marked in the metadata."""
    table = read_parquet(path)
    if "propensity" not in table.column_names and "user_id" in table.column_names:
        table = with_metadata(table.append_column("propensity", pa.array(np.ones(table.num_rows))),
                              {**log_metadata(table), "propensity": NO_PROPENSITY})
    validate_logs(table)
    return table


def load_logs(config: config_module.Config) -> tuple[LoggedDataset, dict[str, Any]]:
    """The logged data and where it and its catalog came from (``source`` of results.json)."""
    logs, seed = config.experiment.logs, config.experiment.seed
    if logs.dataset == "movielens":
        table, catalog = load_movielens()
        source = {"dataset": "movielens", "catalog": ["one offer per movie; category = first genre (6 groups); "
                                                       "value 1.0, no discount, no contact cost (no money in MovieLens)"]}
    else:
        assert logs.path is not None
        table = read_own_logs(logs.path)
        if logs.catalog:
            catalog, notes = read_catalog(logs.catalog), [f"read from {logs.catalog}"]
        else:
            money = config.campaign.weights()[2] != 0
            catalog, notes = infer_catalog(table, validate_logs(table), money_needed=money)
            log.info("catalog inferred from the logs: %s", "; ".join(notes))
        source = {"path": logs.path, "catalog": notes}
    data = LoggedDataset.from_table(table, catalog, seed)
    longest = int(data.sequences.mask.sum(axis=1).max())
    if longest > config.campaign.horizon:
        raise ValueError(f"campaign.horizon: a logged user has {longest} steps but the horizon is "
                         f"{config.campaign.horizon}; set campaign.horizon={longest} or cut the sequences")
    return data, {**source, "propensity": propensity_status(data.metadata)}


def exit_on_bad_input(exc: ValueError) -> None:
    """A bad file ends a single run with its one-line message on stderr and exit code 2 (as a bad
    config value does, ``config.load_or_exit``); in a multirun or outside Hydra it is raised."""
    if (HydraConfig.initialized() and HydraConfig.get().mode != RunMode.MULTIRUN
            and os.environ.get("HYDRA_FULL_ERROR") != "1"):
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    raise exc


def check(config: config_module.Config) -> None:
    """Before any work: own logs have no TrueWorld to train in."""
    in_truth = [n for n in config.experiment.agents if config.agents[n].train_world != "learned"]
    if in_truth:
        raise ValueError(f"experiment.agents: {in_truth} train in TrueWorld, which own logs do not have; "
                         "drop them or set agents.<name>.train_world=learned")
    check_ope_policies(config)


def run(cfg: DictConfig, out: Path) -> dict[str, Any]:
    config = config_module.load(cfg)
    exp = config.experiment
    setup_torch(exp.torch_threads)
    check(config)
    with Workers(worker_count(exp.workers), exp.torch_threads, ray=True) as workers:
        return _run(cfg, config, out, workers)


def _run(cfg: DictConfig, config: config_module.Config, out: Path, workers: Workers) -> dict[str, Any]:
    exp, seed = config.experiment, config.experiment.seed
    _, eval_users_from = config_module.user_blocks(seed)
    timer = StageTimer()

    # 1. The logs, validated and parsed once, and their catalog.
    with timer.stage("logs"):
        try:
            data, source = load_logs(config)
        except ValueError as exc:
            exit_on_bad_input(exc)
        write_logs(data.table, out / "logs.parquet", validate=False)
    log.info("logs: %d users, %d rows, propensities %s", data.summary.n_users, data.summary.n_rows, source["propensity"])

    # 2. The learned simulator (no TrueWorld: fit_simulator skips its truth-based checks).
    with timer.stage("simulator"):
        sim_dir, fidelity = fit_simulator(config, out, data, workers)
    learned = load_simulator(sim_dir, n_users=1)
    learned_worlds = LearnedWorlds(learned, data, config.campaign)
    worlds_of = {"learned": learned_worlds.factory(config.simulator.learned_world)}

    # 3. Supervised recommenders on the replayed logs.
    with timer.stage("recommenders"):
        logged = {split: data.replayed(split, learned.profile_schema, config.campaign) for split in SPLITS}
        recommenders = train_recommenders(logged["train"], logged["validation"], config, workers)
        offline = evaluate_recommenders(recommenders, logged["test"])

    # 4. Agents in the learned world (an agent's own learned_world options apply, as in the main job).
    agents = {name: config.agents[name] for name in exp.agents}
    agent_worlds = {name: {"learned": learned_worlds.factory(agent.learned_world)} if agent.learned_world
                    else worlds_of for name, agent in agents.items()}
    with timer.stage("agents"):
        models = train_agents(agent_worlds, config, out, workers)

    # 5. Every policy in the learned world, paired users; "logging" = the logs' estimated behaviour.
    table = behaviour_table(data.split("train"))
    roster = {**comparison_roster(config, models, recommenders),
              "logging": lambda env: EstimatedLoggingPolicy(env, table, seed)}
    obs_dim = len(CampaignVectorEnv(worlds_of["learned"](1), config.campaign).layout.names)
    if data.catalog.n_actions * (obs_dim + 1) ** 2 * 8 > MAX_BANDIT_BYTES:  # one d x d matrix per action
        log.info("bandits left out: %d actions x %d features would need %.0f GB", data.catalog.n_actions, obs_dim,
                 data.catalog.n_actions * (obs_dim + 1) ** 2 * 8 / 1e9)
        roster = {n: f for n, f in roster.items() if n not in {cls.name for cls in BANDITS}}
    with timer.stage("evaluation"):
        worlds, _ = evaluate_worlds(worlds_of, {"learned": roster}, config.campaign, exp.evaluation,
                                    eval_users_from, agents, seed, workers)

    # 6. What the logs can show without a truth: held-out outcomes, session statistics.
    test = data.split("test")
    with timer.stage("truth_free_checks"):
        observed = observed_fidelity(learned.model, test)
        simulated = generate_logs(make_env_factory(worlds_of["learned"], config.campaign), roster["logging"],
                                  n_users=exp.evaluation.n_users, seed=eval_users_from)
        sequences = compare_sequences(sequence_stats(test),
                                      sequence_stats(sequences_from_logs(simulated, data.catalog.n_actions)))

    # 7. OPE on the held-out logged users, beside each policy's learned-world value.
    ope, agreement, logged_value = {}, None, None
    if exp.ope.draws:
        ope_policies, kinds = ope_roster(config, roster, models, recommenders, logged["train"])
        names = [n for n in exp.ope.estimators.names if source["propensity"] != "absent" or n in MODEL_ONLY]
        estimators = EstimatorConfig(**{**vars(exp.ope.estimators), "names": names}).build(seed)
        rewards = logged_rewards(config.campaign, data.catalog, test)
        q_hat = ResponseModelRewards(learned.model, learned.catalog, config.campaign)(test)
        with timer.stage("ope"):
            held = held_out_ope(ope_policies, lambda: CampaignVectorEnv(worlds_of["learned"](1), config.campaign),
                                logged["test"], rewards, q_hat, estimators, exp.ope.n_bootstrap,
                                exp.evaluation.ci_level, seed, workers)
        agreement = ope_agreement(worlds["learned"]["policies"], held, SEQUENTIAL_ESTIMATORS)
        logged_value = held["logged_value"]
        ope = {p: {"kind": kinds[p], "learned_value": worlds["learned"]["policies"].get(p, {}).get("return"),
                   "estimators": {e: {"estimate": iv["mean"], "ci_low": iv["ci_low"], "ci_high": iv["ci_high"],
                                      "target": iv["target"]} for e, iv in est.items()}}
               for p, est in held["policies"].items()}

    # 8. Results and report.
    learned_policies = worlds["learned"]["policies"]
    first = exp.agents[0] if exp.agents else "logging"
    results = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "seeds": {"experiment": seed, "evaluation_users_from": eval_users_from},
        "provenance": provenance(),
        "data": {"logs": vars(data.summary), "source": source, "test_users": int(test.n_users)},
        "worlds": worlds,
        "sim_to_real": None,  # no ground truth
        "simulator": {"fidelity": {k: v for k, v in fidelity.items() if isinstance(v, float | dict) and k != "data"
                                   and k != "profiles"},
                      "profiles": fidelity["profiles"], "targets_met": target_checks(fidelity)},
        "observed": observed,
        "sequences": sequences,
        "recommenders": {"offline_metrics": offline},
        "ope": ope,
        "ope_logged_value": logged_value,
        "ope_agreement": agreement,
        "objective": float(learned_policies[first]["return"]["mean"]),  # what a sweep maximises
        "timings": timer.as_dict(),
        "jobs": {"workers": workers.n, "engine": workers.engine, "seconds": {k: round(v, 2) for k, v in workers.job_seconds.items()}},
    }
    atomic_write_json(out / "results.json", results)
    write_own_logs_report(out, results, read_scalars(out / "tensorboard", LEARNING_CURVE_TAGS))
    log.info("wrote %s", out)
    return results
