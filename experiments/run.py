"""Main job: logs -> learned simulator -> agent -> evaluation in both worlds -> report.

    python -m experiments.run                      # default config
    python -m experiments.run experiment=smoke     # whole pipeline, tiny sizes
    python -m experiments.run -m experiment.seed=0,1,2

Reads top to bottom: (1) generate logs from TrueWorld with the logging policy, (2) fit the
learned simulator on them and judge it (``experiments.fit_simulator``), (3) train an SB3
agent on the batched LearnedWorld (or TrueWorld, ``agent.train_world=true``) with
TensorBoard, (4) evaluate it and the reference policies in both worlds on the same users with
the same random draws, (5) write results.json, plots and the report.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from scipy.stats import kendalltau

from agents.bandits import EpsilonGreedyBandit, LinearThompsonBandit, LinUCBBandit
from agents.base import Frozen
from agents.recommender_policy import RecommenderPolicy
from agents.reference import NurturePolicy, OracleGreedyPolicy
from agents.sb3 import PeriodicEvalCallback, SB3Policy, build_agent, resume_agent, train_agent
from envs.campaign import CampaignConfig
from envs.learned_world import LearnedWorld
from envs.true_world import TrueWorld
from envs.vector_env import CampaignVectorEnv
from experiments import config as config_module
from experiments import obd, setup_torch
from experiments.aggregate import write_failure_marker
from experiments.artifacts import provenance
from experiments.collect import make_env_factory, rollout
from experiments.fit_simulator import fit_simulator, fixed_policies, make_logs, split_logs
from experiments.ope.evaluate import ResponseModelRewards, logged_rewards, policy_probs
from experiments.ope.study import ope_study
from experiments.report.fidelity import target_checks
from experiments.report.plots import read_scalars
from experiments.report.run import write_run_report
from experiments.segments import fit_segments, segment_breakdown
from recsys.artifacts import atomic_write_json
from recsys.data.io import write_logs
from recsys.data.replay import LoggedData
from recsys.data.schema import validate_logs
from recsys.recommenders import evaluate_recommenders, fit_recommenders
from recsys.simulator.io import load_simulator
from recsys.stats import bootstrap_mean

log = logging.getLogger("campaign_gym")
config_module.register()

BANDITS = (EpsilonGreedyBandit, LinUCBBandit, LinearThompsonBandit)
LEARNING_CURVE_TAGS = ("campaign/profit_per_episode", "eval_learned/profit_per_user", "eval_true/profit_per_user",
                       "campaign/click_rate")


def run(cfg: DictConfig, out: Path) -> dict[str, Any]:
    if cfg.experiment.kind == "obd":  # the Open Bandit Dataset OPE experiment, on its own (experiment=obd)
        return obd.run(cfg, out)
    config = config_module.load(cfg)
    exp, seed = config.experiment, config.experiment.seed
    setup_torch(exp.torch_threads)
    check_ope_policies(config)
    _, eval_users_from = config_module.user_blocks(seed)

    # 1. Logged data: the logging policy in TrueWorld.
    log.info("generating logs for %d users", exp.logs.n_users)
    logs = make_logs(config, exp.progress)
    write_logs(logs, out / "logs.parquet")

    # 2. The learned simulator, fitted on the logs only and judged against the truth.
    sim_dir, fidelity = fit_simulator(config, out, logs)
    learned = load_simulator(sim_dir, n_users=1)
    world_factories = {
        "true": lambda n: TrueWorld(config.world, n_users=n),
        "learned": lambda n: LearnedWorld(learned.model, learned.sampler, learned.catalog, n),
    }

    # 3. Supervised recommenders, trained on the logs only (features = the replayed observations).
    splits = split_logs(logs, learned.catalog.n_actions, seed)
    logged = [LoggedData.replay(d, learned.catalog, learned.profile_schema, config.campaign) for d in splits]
    recommenders = fit_recommenders(logged[0], logged[1], config.recommender.names, config.recommender.configs(),
                                    progress=exp.progress)
    offline = evaluate_recommenders(recommenders, logged[2])

    # 4. Train every agent on the batched env (plain algorithms learn the masks via a penalty).
    models = {name: train(name, config.agents[name], world_factories, config, out) for name in exp.agents}

    # 5. Paired evaluation in both worlds: every policy meets the same users with the same draws.
    policies = {
        **{name: (lambda env, m=m, name=name: SB3Policy(m, name, config.agents[name].deterministic_eval, seed))
           for name, m in models.items()},
        **{name: (lambda env, r=r: RecommenderPolicy(r, env)) for name, r in recommenders.items()},
        **fixed_policies(config),
        **{cls.name: (lambda env, cls=cls: cls.for_env(env, seed=seed)) for cls in BANDITS},
    }
    oracles = {"oracle_greedy": OracleGreedyPolicy, "nurture": NurturePolicy}  # read TrueWorld's hidden state
    ev = exp.evaluation
    worlds: dict[str, Any] = {}
    stats_by_world: dict[str, dict[str, Any]] = {}
    for world, factory in world_factories.items():
        make_env = make_env_factory(factory, config.campaign)
        roster = {**policies, **(oracles if world == "true" else {})}
        stats = {name: rollout(make_env, f, ev.n_users, eval_users_from) for name, f in roster.items()}
        stats_by_world[world] = stats
        summary = {name: {m: iv.as_dict() for m, iv in s.summarise(ev.n_bootstrap, ev.ci_level, seed).items()}
                   for name, s in stats.items()}
        worlds[world] = {"policies": summary,
                         "paired_differences": _paired_differences(
                             stats, {n: config.agents[n] for n in models}, ev, seed)}

    # Per segment (k-means on the observable profiles): where does the best agent gain or lose
    # against the best non-RL, non-oracle policy?
    true_stats = stats_by_world["true"]
    profile_cols = CampaignVectorEnv(world_factories["true"](1), config.campaign).layout.profile
    segments = fit_segments(true_stats["random"].first_obs[:, profile_cols], ev.n_segments, seed)
    labels = segments.predict(true_stats["random"].first_obs[:, profile_cols])
    # the challenger: the best agent that never saw TrueWorld (the question the simulator answers)
    sim_trained = [n for n in models if config.agents[n].train_world == "learned"] or list(models)
    best_agent = max(sim_trained, key=lambda n: worlds["true"]["policies"][n]["profit"]["mean"]) if models else None
    baseline = _best_baseline(worlds["true"]["policies"], models)
    breakdown = (segment_breakdown(true_stats, labels, best_agent, baseline, ev.n_bootstrap, ev.ci_level, seed)
                 if best_agent else None)

    # 6. Off-policy evaluation: every estimator on fresh TrueWorld logs, against the true values.
    ope, ope_summary = {}, None
    if exp.ope.draws:
        roster, kinds = _ope_roster(config, policies, models, recommenders, logged[0])
        logs_from, _ = config_module.user_blocks(seed)
        first = logs_from + exp.logs.n_users
        ope, ope_summary = ope_study(
            config, roster, kinds,
            lambda d: make_logs(config, False, n_users=exp.ope.n_users, first_user=first + d * exp.ope.n_users),
            ResponseModelRewards(learned.model, learned.catalog, config.campaign), eval_users_from, exp.progress)

    # 7. Results, plots, report.
    both = [p for p in worlds["learned"]["policies"] if p in worlds["true"]["policies"]]
    true_ret = [worlds["true"]["policies"][p]["return"]["mean"] for p in both]
    sim_ret = [worlds["learned"]["policies"][p]["return"]["mean"] for p in both]
    sim_to_real = {
        "kendall_tau": float(kendalltau(true_ret, sim_ret).statistic),
        "rel_error": {p: abs(s - t) / abs(t) if t else None for p, t, s in zip(both, true_ret, sim_ret, strict=True)},
    }
    fidelity_summary = {k: v for k, v in fidelity.items() if isinstance(v, float)}
    results = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "seeds": {"experiment": seed, "logs_users_from": config_module.user_blocks(seed)[0],
                  "evaluation_users_from": eval_users_from},
        "provenance": provenance(),
        "data": {"logs": vars(validate_logs(logs))},
        "worlds": worlds,
        "sim_to_real": sim_to_real,
        "simulator": {"fidelity": fidelity_summary, "targets_met": target_checks(fidelity)},
        "segments": breakdown,
        "recommenders": {"offline_metrics": offline},
        "ope": ope,
        "ope_validation": ope_summary and {**ope_summary, "n_users": exp.ope.n_users,
                                           "truth_users": exp.ope.truth_users},
    }
    atomic_write_json(out / "results.json", results)
    # policies.csv, policies.tex, plots, report.md, report.html
    write_run_report(out, results, read_scalars(out / "tensorboard", LEARNING_CURVE_TAGS))
    log.info("wrote %s", out)
    return results


def _ope_roster(config: config_module.Config, policies: dict[str, Any], models: dict[str, Any],
                recommenders: dict[str, Any], train: LoggedData) -> tuple[dict[str, Any], dict[str, str]]:
    """The policies named in ``experiment.ope.policies`` and their kinds. Besides the
    evaluated roster: ``<recommender>_softmax`` (stochastic, full support) and
    ``<bandit>_frozen`` (warm-started on the training logs, then frozen: a bandit that keeps
    learning has no fixed value to estimate)."""
    ope, seed = config.experiment.ope, config.experiment.seed
    available: dict[str, Any] = {name: f for name, f in policies.items() if name not in {c.name for c in BANDITS}}
    kinds = {name: "RL agent" if name in models else "recommender (greedy)" if name in recommenders else "baseline"
             for name in available}
    for name, rec in recommenders.items():
        available[f"{name}_softmax"] = lambda env, r=rec: RecommenderPolicy(r, env, "softmax", ope.softmax_temperature, seed)
        kinds[f"{name}_softmax"] = "recommender (softmax)"
    for cls in BANDITS:
        available[f"{cls.name}_frozen"] = _warm_frozen_bandit(cls, config, train)
        kinds[f"{cls.name}_frozen"] = "bandit (frozen)"
    return {p: available[p] for p in ope.policies}, {p: kinds[p] for p in ope.policies}


def check_ope_policies(config: config_module.Config) -> None:
    """Fail before any work if ``experiment.ope.policies`` names a policy the run will not have."""
    exp = config.experiment
    names = config.recommender.names
    available = ({*fixed_policies(config), *exp.agents, *names} | {f"{r}_softmax" for r in names}
                 | {f"{b.name}_frozen" for b in BANDITS})
    unknown = [p for p in exp.ope.policies if p not in available] if exp.ope.draws else []
    if unknown:
        raise ValueError(f"experiment.ope.policies: unknown {unknown}; available: {sorted(available)}")


def _warm_frozen_bandit(cls: Any, config: config_module.Config, train: LoggedData) -> Any:
    """A factory returning one bandit that learned from the training logs' rewards, frozen."""
    built: list[Any] = []

    def make(env: CampaignVectorEnv) -> Any:
        if not built:
            bandit = cls.for_env(env, seed=config.experiment.seed)
            policy_probs(bandit, train, logged_rewards(config.campaign, env.catalog, train.data))
            built.append(Frozen(bandit))
        return built[0]
    return make


def _best_baseline(policies: dict[str, Any], agents: Any) -> str:
    """The best policy on TrueWorld profit that is neither an RL agent nor an oracle."""
    excluded = set(agents) | {"oracle_greedy", "nurture", "no_offer"}
    return max((p for p in policies if p not in excluded), key=lambda p: policies[p]["profit"]["mean"])


def _paired_differences(stats: dict[str, Any], agents: dict[str, config_module.AgentConfig], ev: Any,
                        seed: int) -> dict[str, Any]:
    """Profit differences on the same users: nurture vs oracle_greedy; every agent vs the
    best baseline, the greedy heuristic and oracle_greedy (when present); and an agent trained
    in TrueWorld vs the same algorithm trained in the learned simulator (what the simulator's
    errors cost)."""
    summary = {name: {"profit": {"mean": float(s.profit.mean())}} for name, s in stats.items()}
    best = _best_baseline(summary, agents)
    pairs = [("nurture", "oracle_greedy")] + [(a, b) for a in agents for b in dict.fromkeys((best, "greedy", "oracle_greedy"))]
    pairs += [(a, b) for a, ca in agents.items() for b, cb in agents.items()
              if ca.algo == cb.algo and ca.train_world == "true" and cb.train_world == "learned"]
    out = {}
    for challenger, baseline in pairs:
        if challenger in stats and baseline in stats:
            d = stats[challenger].profit - stats[baseline].profit
            out[f"{challenger}_minus_{baseline}"] = {"profit": bootstrap_mean(d, ev.n_bootstrap, ev.ci_level, seed).as_dict()}
    return out


def train(name: str, agent: config_module.AgentConfig, world_factories: dict[str, Any],
          config: config_module.Config, out: Path) -> Any:
    """Build (or resume) and train one SB3 agent in the world it is configured for."""
    campaign = config.campaign
    if agent.algo != "maskable_ppo":
        campaign = CampaignConfig(**{**vars(config.campaign), "invalid_action": "penalize"})
    env = CampaignVectorEnv(world_factories[agent.train_world](agent.n_envs), campaign)
    if agent.resume_from:
        model = resume_agent(agent.algo, Path(agent.resume_from), env, out / "tensorboard")
    else:
        model = build_agent(agent.algo, env, agent.hyperparams, agent.net_arch, config.experiment.seed,
                            out / "tensorboard")
    log.info("training %s for %d steps in the %s world", name, agent.total_timesteps, agent.train_world)
    callbacks = [PeriodicEvalCallback(_evaluator(name, agent, world_factories, config), agent.eval_every)
                 ] if agent.eval_every else []
    return train_agent(model, agent.total_timesteps, name, progress=config.experiment.progress, callbacks=callbacks,
                       checkpoint_dir=out / "checkpoints", checkpoint_every=agent.checkpoint_every)


def _evaluator(name: str, agent: config_module.AgentConfig, world_factories: dict[str, Any],
               config: config_module.Config) -> Any:
    """Paired rollouts of the model in training on the first ``eval_users`` evaluation users,
    in both worlds: its sim-to-real learning curve (``eval_learned/*``, ``eval_true/*``)."""
    _, users_from = config_module.user_blocks(config.experiment.seed)
    envs = {world: make_env_factory(f, config.campaign) for world, f in world_factories.items()}

    def evaluate(model: Any) -> dict[str, dict[str, float]]:
        out = {}
        for world, make_env in envs.items():
            s = rollout(make_env, lambda env: SB3Policy(model, name, agent.deterministic_eval, config.experiment.seed),
                        agent.eval_users, users_from)
            out[world] = {"profit_per_user": float(s.profit.mean()), "return_per_user": float(s.ret.mean()),
                          "click_rate": float(s.clicks.sum() / max(s.offers_sent.sum(), 1.0)),
                          "episode_length": float(s.length.mean())}
        return out
    return evaluate


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    out = Path(HydraConfig.get().runtime.output_dir)
    try:
        results = run(cfg, out)
    except Exception:  # Hydra runs the sweep's other jobs, then exits 1 (experiments.aggregate docstring)
        write_failure_marker(out)  # FAILED.txt with the traceback, named by experiments.aggregate
        log.exception("job failed; traceback in %s", out / "FAILED.txt")
        raise
    if cfg.experiment.kind == "obd":  # sweeps minimise the mean relative error of the OPE estimates
        return float(results["summary"]["objective"])
    first = cfg.experiment.agents[0] if cfg.experiment.agents else "logging"
    return float(results["worlds"]["true"]["policies"][first]["profit"]["mean"])


if __name__ == "__main__":
    main()
