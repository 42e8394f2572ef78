"""Train one SB3 agent in the world its config names, with its sim-to-real learning curve.

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

log = logging.getLogger("campaign_gym")
WorldFactory = Callable[[int], World]


def train(name: str, agent: config_module.AgentConfig, world_factories: dict[str, WorldFactory],
          config: config_module.Config, out: Path) -> Any:
    """Build (or resume) and train one SB3 agent in ``world_factories[agent.train_world]``."""
    campaign = config.campaign
    if agent.algo != "maskable_ppo":
        campaign = CampaignConfig(**{**vars(config.campaign), "invalid_action": "penalize"})
    env = CampaignVectorEnv(world_factories[agent.train_world](agent.n_envs), campaign)
    model = build_agent(agent.algo, env, agent.hyperparams, agent.net_arch, config.experiment.seed,
                        out / "tensorboard")
    if agent.resume_from:  # weights only: nothing in the checkpoint is unpickled
        resume_from_checkpoint(model, Path(agent.resume_from))
    log.info("training %s for %d steps in the %s world", name, agent.total_timesteps, agent.train_world)
    callbacks = [PeriodicEvalCallback(evaluator(name, agent, world_factories, config), agent.eval_every)
                 ] if agent.eval_every else []
    return train_agent(model, agent.total_timesteps, name, progress=config.experiment.progress, callbacks=callbacks,
                       checkpoint_dir=out / "checkpoints", checkpoint_every=agent.checkpoint_every)


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
