"""Main job: logs -> learned simulator -> agents and recommenders -> both worlds -> OPE -> report.

    python -m experiments.run                      # default config
    python -m experiments.run experiment=smoke     # whole pipeline, tiny sizes
    python -m experiments.run -m experiment.seed=0,1,2
    python -m experiments.run experiment=obd       # the Open Bandit Dataset study (experiments.obd)
    python -m experiments.run experiment=own_logs experiment.logs.path=LOGS.parquet  # experiments.own_logs

Reads top to bottom: (1) logs from TrueWorld with the logging policy, validated and parsed
once; (2) the learned simulator fitted on them and judged (``experiments.fit_simulator``);
(3) supervised recommenders on the replayed logs; (4) SB3 agents on the batched LearnedWorld
(or TrueWorld, ``agents.<name>.train_world=true``); (5) every policy in both worlds on the same
users with the same draws; (6) off-policy evaluation on fresh logs against the truth;
(7) results.json, plots and the report.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from envs.true_world import TrueWorld
from envs.vector_env import CampaignVectorEnv
from experiments import config as config_module
from experiments import obd, own_logs, setup_torch
from experiments.aggregate import retire_previous_results, write_failure_marker
from experiments.artifacts import StageTimer, provenance
from experiments.collect import collect_logs
from experiments.evaluate import best_baseline, best_sim_trained_agent, evaluate_worlds, sim_to_real
from experiments.fit_simulator import queue_simulator
from experiments.learned_worlds import LearnedWorlds, ablation, variants
from experiments.ope.evaluate import ResponseModelRewards
from experiments.ope.study import ope_study
from experiments.parallel import Workers, worker_count
from experiments.policies import ORACLES, check_ope_policies, comparison_roster, ope_roster
from experiments.report.fidelity import target_checks
from experiments.report.plots import read_scalars
from experiments.report.run import write_run_report
from experiments.segments import segment_comparison
from experiments.train import gather_recommenders, queue_recommenders, train_agents
from recsys.artifacts import atomic_write_json
from recsys.data.dataset import LoggedDataset
from recsys.data.io import write_logs
from recsys.data.splits import SPLITS
from recsys.recommenders import evaluate_recommenders
from recsys.simulator.io import load_simulator
from recsys.simulator.response_model import DataSpec

log = logging.getLogger("campaign_gym")
config_module.register()

LEARNING_CURVE_TAGS = ("campaign/profit_per_episode", "eval_learned/profit_per_user", "eval_true/profit_per_user",
                       "campaign/click_rate")


def run(cfg: DictConfig, out: Path) -> dict[str, Any]:
    config = config_module.load(cfg)
    exp = config.experiment
    setup_torch(exp.torch_threads)
    check_ope_policies(config)
    with Workers(worker_count(exp.workers), exp.torch_threads, ray=True) as workers:
        return _run(cfg, config, out, workers)


def _run(cfg: DictConfig, config: config_module.Config, out: Path, workers: Workers) -> dict[str, Any]:
    exp, seed = config.experiment, config.experiment.seed
    logs_from, eval_users_from = config_module.user_blocks(seed)
    timer = StageTimer()

    # 1. Logged data: the logging policy in TrueWorld, validated and parsed once.
    log.info("generating logs for %d users", exp.logs.n_users)
    with timer.stage("logs"):
        data = LoggedDataset.from_table(collect_logs(config, exp.progress), TrueWorld(config.world).catalog, seed)
        write_logs(data.table, out / "logs.parquet", validate=False)

    # 2-3. The learned simulator, fitted on the logs only and judged against the truth, and the
    #      supervised recommenders, trained on the logs only (features = the replayed
    #      observations); their fits queue behind the simulator's, so they run while it is judged.
    with timer.stage("simulator_and_recommenders"):
        queued = queue_simulator(config, out, data, workers)
        schema = DataSpec.from_data(data.split("train")).profile_schema  # what the simulator exposes
        logged = {split: data.replayed(split, schema, config.campaign) for split in SPLITS}
        pending = queue_recommenders(logged["train"], logged["validation"], config, workers)
        sim_dir, fidelity = queued.finish()
        recommenders = gather_recommenders(pending, config, workers)
        offline = evaluate_recommenders(recommenders, logged["test"])
    # Its learned worlds: the shipped one (simulator.learned_world: users, pessimism) is what
    # agents train in and what the "learned" column reports; an agent may set its own.
    learned = load_simulator(sim_dir, n_users=1)
    if learned.profile_schema != schema:
        raise RuntimeError("simulator: its saved profile schema differs from the training split's "
                           "(the recommenders' features would not match the env's); please report this")
    learned_worlds = LearnedWorlds(learned, data, config.campaign)
    world_factories = {"true": lambda n: TrueWorld(config.world, n_users=n),
                       "learned": learned_worlds.factory(config.simulator.learned_world)}

    # 4. Every agent on the batched env of its training world (each a job; the trained model is
    #    rebuilt here from its final checkpoint).
    agents = {name: config.agents[name] for name in exp.agents}
    own_worlds = variants(agents)  # the agent-specific learned worlds (pessimism ablation)
    agent_worlds = {name: {**world_factories, **({"learned": learned_worlds.factory(agent.learned_world)}
                                                 if agent.learned_world else {})} for name, agent in agents.items()}
    with timer.stage("agents"):
        models = train_agents(agent_worlds, config, out, workers)

    # 5. Paired evaluation in both worlds: every policy meets the same users with the same draws;
    #    the oracles read TrueWorld's hidden state, so they run there only.
    roster = comparison_roster(config, models, recommenders)
    with timer.stage("evaluation"):
        worlds, stats = evaluate_worlds(world_factories, {"true": {**roster, **ORACLES}, "learned": roster},
                                        config.campaign, exp.evaluation, eval_users_from, agents, seed, workers)
    # Per segment: where does the best simulator-trained agent gain or lose against the best baseline?
    challenger = best_sim_trained_agent(worlds["true"]["policies"], agents)
    profile_columns = CampaignVectorEnv(world_factories["true"](1), config.campaign).layout.profile
    segments = (segment_comparison(stats["true"], profile_columns, challenger,
                                   best_baseline(worlds["true"]["policies"], agents), exp.evaluation, seed)
                if challenger else None)
    # Each agent-specific learned world judged like the shipped one: every policy in it.
    variant_worlds = {}
    if own_worlds:
        with timer.stage("ablation"):
            variant_worlds = evaluate_worlds({v: learned_worlds.factory(o) for v, (o, _) in own_worlds.items()},
                                             {v: roster for v in own_worlds}, config.campaign, exp.evaluation,
                                             eval_users_from, agents, seed, workers)[0]
    thresholds = {v: learned_worlds.pessimism(o).threshold for v, o in
                  [("learned", config.simulator.learned_world)] + [(v, o) for v, (o, _) in own_worlds.items()]}
    pessimism = ablation(worlds, variant_worlds, own_worlds, config.simulator.learned_world, agents,
                         stats["learned"], thresholds)

    # 6. Off-policy evaluation: every estimator on fresh TrueWorld logs, against the true values.
    ope, ope_summary = {}, None
    if exp.ope.draws:
        ope_policies, kinds = ope_roster(config, roster, models, recommenders, logged["train"])
        first = logs_from + exp.logs.n_users  # later users of the seed's block: never in the training logs
        with timer.stage("ope"):
            ope, ope_summary = ope_study(
                config, ope_policies, kinds,
                lambda d: collect_logs(config, False, n_users=exp.ope.n_users, first_user=first + d * exp.ope.n_users),
                ResponseModelRewards(learned.model, learned.catalog, config.campaign), eval_users_from, exp.progress,
                workers)

    # 7. Results, plots, report.
    results = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "seeds": {"experiment": seed, "logs_users_from": logs_from, "evaluation_users_from": eval_users_from},
        "provenance": provenance(),
        "data": {"logs": vars(data.summary)},
        "worlds": worlds,
        "sim_to_real": sim_to_real(worlds),
        "simulator": {"fidelity": {k: v for k, v in fidelity.items() if isinstance(v, float)},
                      "targets_met": target_checks(fidelity), "logged_uncertainty": learned_worlds.summary()},
        "pessimism": pessimism,
        "segments": segments,
        "recommenders": {"offline_metrics": offline},
        "ope": ope,
        "ope_validation": ope_summary and {**ope_summary, "n_users": exp.ope.n_users,
                                           "truth_users": exp.ope.truth_users},
        "timings": timer.as_dict(),  # seconds per stage (the report is written after this)
        "jobs": {"workers": workers.n, "engine": workers.engine, "seconds": {k: round(v, 2) for k, v in workers.job_seconds.items()}},
    }
    atomic_write_json(out / "results.json", results)
    write_run_report(out, results, read_scalars(out / "tensorboard", LEARNING_CURVE_TAGS))
    log.info("wrote %s", out)
    return results


EXPERIMENTS = {"main": run, "obd": obd.run, "own_logs": own_logs.run}  # experiment.kind -> what the job runs


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    out = Path(HydraConfig.get().runtime.output_dir)
    retire_previous_results(out)  # a failed re-run must not leave an old results.json to aggregate
    try:
        if cfg.experiment.kind in ("main", "own_logs"):
            config_module.load_or_exit(cfg)  # every value checked before any work: one line, no traceback
        results = EXPERIMENTS[cfg.experiment.kind](cfg, out)
    except Exception:  # Hydra runs the sweep's other jobs, then exits 1 (experiments.aggregate docstring)
        write_failure_marker(out)  # FAILED.txt with the traceback, named by experiments.aggregate
        log.exception("job failed; traceback in %s", out / "FAILED.txt")
        raise
    if cfg.experiment.kind == "own_logs":  # no TrueWorld: the first agent's learned-world return
        return float(results["objective"])
    if cfg.experiment.kind == "obd":  # sweeps minimise the mean relative error of the OPE estimates
        return float(results["summary"]["objective"])
    first = cfg.experiment.agents[0] if cfg.experiment.agents else "logging"
    return float(results["worlds"]["true"]["policies"][first]["profit"]["mean"])


if __name__ == "__main__":
    main()
