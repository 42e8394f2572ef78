"""SB3 algorithms built from config, trained on the batched env, checkpointed and resumed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sb3_contrib import MaskablePPO, RecurrentPPO
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, CheckpointCallback
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from agents.sb3.callbacks import CampaignMetricsCallback
from envs.sb3 import SB3VecEnv
from envs.vector_env import CampaignVectorEnv
from recsys.numerics import flush_denormals

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {
    "ppo": PPO, "a2c": A2C, "dqn": DQN, "maskable_ppo": MaskablePPO, "recurrent_ppo": RecurrentPPO,
}


def algorithm_class(algo: str) -> type[BaseAlgorithm]:
    if algo not in ALGORITHMS:
        raise ValueError(f"agent.algo: got {algo!r}, expected one of {tuple(ALGORITHMS)}")
    return ALGORITHMS[algo]


class ScaledReward(VecEnvWrapper):
    """The learner sees rewards times ``scale`` (``reward_scale`` in an agent's hyperparams;
    the infos, hence the campaign metrics and VecMonitor's episode returns, keep real units).

    Why: SB3's DQN fits Q-values with a Huber loss, which is an L1 loss for TD errors above 1,
    and L1 regression estimates medians. A profit reward is sparse and large (most offers cost
    the contact fee; a few convert for tens), so the median return of an offer is negative
    and an unscaled DQN learns to rest. Scaled so TD errors stay mostly below 1, the loss is
    quadratic and the Q-values estimate expected returns."""

    def __init__(self, venv: VecEnv, scale: float) -> None:
        super().__init__(venv)
        self.scale = float(scale)

    def reset(self) -> np.ndarray:
        return self.venv.reset()

    def step_wait(self) -> VecEnvStepReturn:
        obs, reward, done, infos = self.venv.step_wait()
        return obs, reward * np.float32(self.scale), done, infos


def _wrap(env: CampaignVectorEnv, reward_scale: float) -> VecEnv:
    vec: VecEnv = VecMonitor(SB3VecEnv(env))
    return vec if reward_scale == 1.0 else ScaledReward(vec, reward_scale)


def build_agent(
    algo: str,
    env: CampaignVectorEnv,
    hyperparams: dict[str, Any],
    net_arch: list[int],
    seed: int,
    tensorboard_dir: Path | None,
) -> BaseAlgorithm:
    """An untrained SB3 model on the batched env (wrapped for SB3 and monitored). Every
    hyperparameter goes to the SB3 constructor except ``reward_scale`` (see ``ScaledReward``;
    kept on the model, so a resumed model trains on the same scale)."""
    params = dict(hyperparams)
    reward_scale = float(params.pop("reward_scale", 1.0))
    policy = "MlpLstmPolicy" if algo == "recurrent_ppo" else "MlpPolicy"
    model = algorithm_class(algo)(
        policy,
        _wrap(env, reward_scale),
        policy_kwargs={"net_arch": list(net_arch)},
        tensorboard_log=str(tensorboard_dir) if tensorboard_dir else None,
        seed=seed,
        verbose=0,
        device="cpu",
        **params,
    )
    model.reward_scale = reward_scale  # saved and loaded with the model's other attributes
    return model


def train_agent(
    model: BaseAlgorithm, total_timesteps: int, name: str, progress: bool = True,
    callbacks: list[BaseCallback] | None = None, checkpoint_dir: Path | None = None, checkpoint_every: int = 0,
) -> BaseAlgorithm:
    """Train up to ``total_timesteps`` env steps in all (a resumed model continues from its
    own count) with TensorBoard scalars (SB3's plus campaign metrics), a progress bar and,
    when ``checkpoint_every`` > 0, a checkpoint every that many env steps plus a final one."""
    extra: list[BaseCallback] = []
    if checkpoint_dir is not None and checkpoint_every > 0:
        per_call = max(checkpoint_every // model.n_envs, 1)  # CheckpointCallback counts env.step calls
        extra.append(CheckpointCallback(per_call, str(checkpoint_dir), name_prefix=name))
    callback = CallbackList([CampaignMetricsCallback(), *extra, *(callbacks or [])])
    remaining = max(total_timesteps - model.num_timesteps, 0)
    with flush_denormals():
        model.learn(remaining, callback=callback, tb_log_name=name, progress_bar=progress,
                    reset_num_timesteps=model.num_timesteps == 0)
    if checkpoint_dir is not None:
        model.save(Path(checkpoint_dir) / f"{name}_final")
    return model


def resume_agent(algo: str, path: Path, env: CampaignVectorEnv, tensorboard_dir: Path | None) -> BaseAlgorithm:
    """Reload a checkpoint (``<name>_<steps>_steps.zip``) to continue an interrupted training."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"agent.resume_from: {path} does not exist (checkpoints are in <run>/checkpoints/)")
    model = algorithm_class(algo).load(path, env=VecMonitor(SB3VecEnv(env)), device="cpu",
                                       tensorboard_log=str(tensorboard_dir) if tensorboard_dir else None)
    reward_scale = float(getattr(model, "reward_scale", 1.0))
    if reward_scale != 1.0:
        model.set_env(_wrap(env, reward_scale))
    return model
