"""SB3 algorithms built from config, trained on the batched env, checkpointed and resumed."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sb3_contrib import MaskablePPO, RecurrentPPO
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from agents.sb3.callbacks import AtomicCheckpointCallback, CampaignMetricsCallback, save_checkpoint
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


def policy_name(algo: str) -> str:
    """The SB3 policy alias ``build_agent`` gives ``algo`` (an LSTM policy for RecurrentPPO)."""
    return "MlpLstmPolicy" if algo == "recurrent_ppo" else "MlpPolicy"


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
    kept on the model, so a resumed model trains on the same scale); ``policy_kwargs`` there
    joins ``net_arch`` (e.g. ``lstm_hidden_size`` for RecurrentPPO)."""
    params = dict(hyperparams)
    reward_scale = float(params.pop("reward_scale", 1.0))
    policy_kwargs = {**dict(params.pop("policy_kwargs", None) or {}), "net_arch": list(net_arch)}
    policy = policy_name(algo)
    model = algorithm_class(algo)(
        policy,
        _wrap(env, reward_scale),
        policy_kwargs=policy_kwargs,
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
    when ``checkpoint_every`` > 0, a checkpoint every that many env steps plus a final one
    (each written atomically: a kill mid-write leaves the previous checkpoint intact)."""
    extra: list[BaseCallback] = []
    if checkpoint_dir is not None and checkpoint_every > 0:
        per_call = max(checkpoint_every // model.n_envs, 1)  # counted in env.step calls, like SB3's
        extra.append(AtomicCheckpointCallback(per_call, Path(checkpoint_dir), name))
    callback = CallbackList([CampaignMetricsCallback(), *extra, *(callbacks or [])])
    if model.tensorboard_log is None:  # else SB3 leaves an empty tempdir/SB3-<time> folder per learn()
        model.set_logger(Logger(folder=None, output_formats=[]))
    remaining = max(total_timesteps - model.num_timesteps, 0)
    with flush_denormals():
        model.learn(remaining, callback=callback, tb_log_name=name, progress_bar=progress,
                    reset_num_timesteps=model.num_timesteps == 0)
    if checkpoint_dir is not None:
        save_checkpoint(model, Path(checkpoint_dir) / f"{name}_final.zip")
    return model


def check_checkpoint(path: Path | str) -> None:
    """Fail early (one line) unless ``path`` is a zip with SB3's ``data`` and ``policy.pth``
    entries; reads only the zip's directory (what config validation calls before any work)."""
    where = f"agent.resume_from: {path}"
    if not Path(path).is_file():
        raise ValueError(f"{where} is not a file (checkpoints are in <run>/checkpoints/)")
    try:
        with zipfile.ZipFile(path) as archive:
            missing = {"data", "policy.pth"} - set(archive.namelist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"{where} is not a readable SB3 checkpoint ({str(exc).splitlines()[0]})") from None
    if missing:
        raise ValueError(f"{where} is not a readable SB3 checkpoint (lacks {sorted(missing)})")


def resume_from_checkpoint(model: BaseAlgorithm, path: Path) -> BaseAlgorithm:
    """Continue an interrupted training: load a checkpoint's weights into ``model``, which was
    rebuilt from the same config (``build_agent``), without unpickling anything.

    SB3's own ``load`` unpickles the zip's ``data`` entries (schedules, spaces, buffers) with
    cloudpickle, so a crafted checkpoint could run code. Here only tensors are read, with
    ``torch.load(weights_only=True)`` (``policy.pth`` and, when present,
    ``policy.optimizer.pth``), and from ``data`` only plain JSON numbers (the step counters,
    ``reward_scale``); serialized entries are never decoded."""
    path = Path(path)
    where = f"agent.resume_from: {path}"
    if not path.is_file():
        raise FileNotFoundError(f"{where} does not exist (checkpoints are in <run>/checkpoints/)")
    check_checkpoint(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = {"data", "policy.pth"} - names
            if missing:
                raise ValueError(f"lacks {sorted(missing)}")
            data = json.loads(archive.read("data"))
            policy = torch.load(io.BytesIO(archive.read("policy.pth")), map_location="cpu", weights_only=True)
            optimizer = (torch.load(io.BytesIO(archive.read("policy.optimizer.pth")), map_location="cpu",
                                    weights_only=True) if "policy.optimizer.pth" in names else None)
    except Exception as exc:  # zipfile, JSON and torch errors come in many types; all mean "not a checkpoint"
        raise ValueError(f"{where} is not a readable SB3 checkpoint ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("num_timesteps"), int):
        raise ValueError(f"{where}: its data has no integer num_timesteps; not an SB3 checkpoint")
    saved_scale = data.get("reward_scale", 1.0)
    if not isinstance(saved_scale, int | float) or float(saved_scale) != float(getattr(model, "reward_scale", 1.0)):
        raise ValueError(f"{where} was trained with reward_scale={saved_scale!r}, the config says "
                         f"{getattr(model, 'reward_scale', 1.0)}; resume with the config it was trained with")
    try:
        model.policy.load_state_dict(policy)
        if optimizer is not None:
            model.policy.optimizer.load_state_dict(optimizer)
    except Exception as exc:  # key or shape mismatch: another algorithm or network
        raise ValueError(f"{where} does not fit this agent (another algorithm or net_arch?): "
                         f"{str(exc).splitlines()[0]}") from None
    model.num_timesteps = int(data["num_timesteps"])
    if isinstance(data.get("_n_updates"), int):
        model._n_updates = data["_n_updates"]
    return model
