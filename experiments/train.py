"""Train the SB3 agents, each in the world its config names, with its sim-to-real learning
curve, and the supervised recommenders; every agent and recommender is one job on the run's
``experiments.parallel.Workers``.

Plain algorithms (everything but MaskablePPO) learn the business rules through a penalty:
their env replaces a masked action by "no offer" and costs ``invalid_action_penalty``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.sb3 import PeriodicEvalCallback, SB3Policy, build_agent, resume_from_checkpoint, train_agent
from envs.campaign import CampaignConfig
from envs.vector_env import CampaignVectorEnv
from envs.world import World
from experiments import config as config_module
from experiments.collect import make_env_factory, rollout
from experiments.parallel import Workers, longest_first
from recsys.data.replay import LoggedData
from recsys.recommenders import Recommender, make_recommender

log = logging.getLogger("campaign_gym")
WorldFactory = Callable[[int], World]


def train_agents(agent_worlds: dict[str, dict[str, WorldFactory]], config: config_module.Config, out: Path,
                 workers: Workers) -> dict[str, Any]:
    """Every agent named in ``agent_worlds`` (name -> its world factories), trained as one job
    each; the models come back rebuilt from their final checkpoints."""
    agents = {name: config.agents[name] for name in agent_worlds}
    progress = config.experiment.progress and not workers.parallel
    order = [job.removeprefix("train_") for job in longest_first(f"train_{name}" for name in agents)]
    queued = {f"train_{name}": workers.submit(train_job, name, agents[name], agent_worlds[name], config, out, progress)
              for name in order}
    checkpoints = workers.gather({f"train_{name}": queued[f"train_{name}"] for name in agents}, "agents",
                                 config.experiment.progress)
    return {name: load_trained(agent, agent_worlds[name], config, checkpoints[f"train_{name}"])
            for name, agent in agents.items()}


def train_recommenders(train_data: LoggedData, validation: LoggedData, config: config_module.Config,
                       workers: Workers) -> dict[str, Recommender]:
    """Every configured recommender fitted on the same logs, one job each."""
    return gather_recommenders(queue_recommenders(train_data, validation, config, workers), config, workers)


def queue_recommenders(train_data: LoggedData, validation: LoggedData, config: config_module.Config,
                       workers: Workers) -> dict[str, Any]:
    """The recommenders' fits queued on ``workers`` (longest first); ``gather_recommenders``
    collects them, in the configured order."""
    configs = config.recommender.configs()
    progress = config.experiment.progress and not workers.parallel
    queued = {name: workers.submit(make_recommender(name, configs.get(name)).fit, train_data, validation, progress)
              for name in longest_first(config.recommender.names)}
    return {name: queued[name] for name in config.recommender.names}


def gather_recommenders(queued: dict[str, Any], config: config_module.Config, workers: Workers) -> dict[str, Recommender]:
    return workers.gather(queued, "recommenders", config.experiment.progress)


def train(name: str, agent: config_module.AgentConfig, world_factories: dict[str, WorldFactory],
          config: config_module.Config, out: Path, progress: bool | None = None) -> Any:
    """Build (or resume) and train one SB3 agent in ``world_factories[agent.train_world]``;
    its final checkpoint is ``final_checkpoint(out, name)``."""
    env = CampaignVectorEnv(world_factories[agent.train_world](agent.n_envs), training_campaign(agent, config))
    model = build_agent(agent.algo, env, agent.hyperparams, agent.net_arch, config.experiment.seed,
                        out / "tensorboard")
    if agent.resume_from:  # weights only: nothing in the checkpoint is unpickled
        resume_from_checkpoint(model, Path(agent.resume_from))
    log.info("training %s for %d steps in the %s world", name, agent.total_timesteps, agent.train_world)
    callbacks = [PeriodicEvalCallback(evaluator(name, agent, world_factories, config), agent.eval_every)
                 ] if agent.eval_every else []
    progress = config.experiment.progress if progress is None else progress
    return train_agent(model, agent.total_timesteps, name, progress=progress, callbacks=callbacks,
                       checkpoint_dir=out / "checkpoints", checkpoint_every=agent.checkpoint_every)


def training_campaign(agent: config_module.AgentConfig, config: config_module.Config) -> CampaignConfig:
    """The campaign an agent trains under: plain algorithms pay for masked actions."""
    if agent.algo == "maskable_ppo":
        return config.campaign
    return CampaignConfig(**{**vars(config.campaign), "invalid_action": "penalize"})


def final_checkpoint(out: Path, name: str) -> Path:
    return out / "checkpoints" / f"{name}_final.zip"


def train_job(name: str, agent: config_module.AgentConfig, world_factories: dict[str, WorldFactory],
              config: config_module.Config, out: Path, progress: bool) -> Path:
    """``train`` as a job for ``experiments.parallel.Workers``: the trained model stays where it
    ran; the final checkpoint's path comes back (``load_trained`` rebuilds the model from it)."""
    train(name, agent, world_factories, config, out, progress)
    return final_checkpoint(out, name)


def load_trained(agent: config_module.AgentConfig, world_factories: dict[str, WorldFactory],
                 config: config_module.Config, checkpoint: Path) -> Any:
    """The agent ``train_job`` trained: rebuilt from its config and its checkpoint's weights
    (``resume_from_checkpoint``: nothing is unpickled), acting exactly as the trained one."""
    env = CampaignVectorEnv(world_factories[agent.train_world](agent.n_envs), training_campaign(agent, config))
    model = build_agent(agent.algo, env, agent.hyperparams, agent.net_arch, config.experiment.seed, None)
    return resume_from_checkpoint(model, checkpoint)


def evaluator(name: str, agent: config_module.AgentConfig, world_factories: dict[str, WorldFactory],
              config: config_module.Config) -> Callable[[Any], dict[str, dict[str, float]]]:
    """Paired rollouts of the model in training on the first ``eval_users`` evaluation users,
    in every world: its sim-to-real learning curve (``eval_learned/*``, ``eval_true/*``). The
    numbers are only recorded, never used to pick a model, so the truth does not leak into training."""
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
