"""Stable-Baselines3 agents built from config, trained on the batched env, used as Policies."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, CheckpointCallback
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from agents.base import StochasticPolicy
from envs.sb3 import SB3VecEnv
from envs.vector_env import CampaignVectorEnv
from recsys.numerics import flush_denormals

_MASKABLE = ("maskable_ppo",)


def algorithm_class(algo: str) -> type[BaseAlgorithm]:
    if algo in ("ppo", "a2c", "dqn"):
        return {"ppo": PPO, "a2c": A2C, "dqn": DQN}[algo]
    from sb3_contrib import MaskablePPO, RecurrentPPO

    return {"maskable_ppo": MaskablePPO, "recurrent_ppo": RecurrentPPO}[algo]


class CampaignMetricsCallback(BaseCallback):
    """Records campaign scalars to TensorBoard at the end of every rollout:
    ``campaign/click_rate``, ``campaign/conversion_rate`` (per offer sent),
    ``campaign/profit_per_episode``, ``campaign/episode_length`` and ``charts/SPS``, pooled
    over at least ``min_steps`` env steps (DQN's "rollouts" are single steps: too noisy alone)."""

    def __init__(self, min_steps: int = 16_384) -> None:
        super().__init__()
        self.min_steps = min_steps
        self._pooled = 0
        self._sums = np.zeros(4)  # clicks, conversions, offers sent, profit
        self._episodes = 0
        self._steps_in_episodes = 0
        self._start = time.perf_counter()
        self._length: np.ndarray | None = None

    def _on_step(self) -> bool:
        infos, dones = self.locals["infos"], self.locals["dones"]
        if self._length is None:
            self._length = np.zeros(len(infos), dtype=np.int64)
        self._sums += np.array(
            [sum(i["click"] for i in infos), sum(i["conversion"] for i in infos),
             sum(i["offer_sent"] for i in infos), sum(i["profit"] for i in infos)]
        )
        self._length += 1
        self._pooled += len(infos)
        self._episodes += int(dones.sum())
        self._steps_in_episodes += int(self._length[dones].sum())
        self._length[dones] = 0
        return True

    def _on_rollout_end(self) -> None:
        if self._pooled < self.min_steps:
            return
        self._pooled = 0
        clicks, conversions, sent, profit = self._sums
        self.logger.record("campaign/click_rate", clicks / max(sent, 1.0))
        self.logger.record("campaign/conversion_rate", conversions / max(sent, 1.0))
        if self._episodes:
            self.logger.record("campaign/profit_per_episode", profit / self._episodes)
            self.logger.record("campaign/episode_length", self._steps_in_episodes / self._episodes)
        self.logger.record("charts/SPS", int(self.num_timesteps / (time.perf_counter() - self._start)))
        self._sums[:] = 0.0
        self._episodes = self._steps_in_episodes = 0


class PeriodicEvalCallback(BaseCallback):
    """Every ``every`` env steps and at the end of training, evaluate the current model with
    ``evaluate`` and record its scalars to TensorBoard (``eval_<world>/<metric>``).

    ``evaluate(model)`` returns ``{world: {metric: value}}``; the main job passes paired
    rollouts on fixed held-out users in the learned *and* the true world, so the curves show
    when training in the simulator stops helping in reality. The numbers are only recorded,
    never used to pick a model, so they do not leak the truth into training."""

    def __init__(self, evaluate: Callable[[BaseAlgorithm], dict[str, dict[str, float]]], every: int) -> None:
        super().__init__()
        if every < 1:
            raise ValueError(f"agent.eval_every: must be >= 1 env steps, got {every}")
        self.evaluate, self.every = evaluate, every
        self.history: list[tuple[int, dict[str, dict[str, float]]]] = []
        self._next = every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next = (self.num_timesteps // self.every + 1) * self.every
            self._record()
        return True

    def _on_training_end(self) -> None:
        if not self.history or self.history[-1][0] != self.num_timesteps:
            self._record()

    def _record(self) -> None:
        results = self.evaluate(self.model)
        self.history.append((self.num_timesteps, results))
        for world, metrics in results.items():
            for metric, value in metrics.items():
                self.logger.record(f"eval_{world}/{metric}", float(value))
        self.logger.dump(self.num_timesteps)


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


class SB3Policy(StochasticPolicy):
    """An SB3 model behind the ``Policy`` protocol.

    ``action_probs`` is the model's action distribution restricted to allowed actions and
    renormalised (the business rules apply to every policy). ``act`` samples from it, or takes
    its argmax when ``deterministic``. DQN's distribution is the one-hot of its greedy
    Q-value. Recurrent models keep one LSTM state per row of the batch they act on: the state
    advances when ``act`` is called, and starts fresh for a batch of a new size.
    """

    def __init__(self, model: BaseAlgorithm, name: str, deterministic: bool = False, seed: int = 0) -> None:
        super().__init__(seed)
        self.model, self.name, self.deterministic = model, name, deterministic
        self.n_actions = int(model.action_space.n)
        self._recurrent = hasattr(model.policy, "lstm_actor")
        self._lstm: tuple[torch.Tensor, torch.Tensor] | None = None
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None
        self._starts: torch.Tensor | None = None

    def _raw_probs(self, obs: np.ndarray) -> np.ndarray:
        policy = self.model.policy
        with torch.no_grad():
            obs_t, _ = policy.obs_to_tensor(obs)
            if hasattr(policy, "q_net"):
                q = policy.q_net(obs_t).cpu().numpy()
                probs = np.zeros_like(q, dtype=np.float64)
                probs[np.arange(len(q)), q.argmax(axis=1)] = 1.0
                return probs
            if self._recurrent:
                n = len(obs)
                if self._lstm is None or self._lstm[0].shape[1] != n:
                    shape = (policy.lstm_hidden_state_shape[0], n, policy.lstm_hidden_state_shape[2])
                    self._lstm = (torch.zeros(shape), torch.zeros(shape))
                    self._starts = torch.ones(n)
                dist, self._pending = policy.get_distribution(obs_t, self._lstm, self._starts)
            else:
                dist = policy.get_distribution(obs_t)
            return dist.distribution.probs.cpu().numpy().astype(np.float64)

    def _masked_probs(self, obs: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
        probs = self._raw_probs(obs)
        if masks is not None:
            probs = np.where(masks, probs, 0.0)
            total = probs.sum(axis=1, keepdims=True)
            fallback = masks / masks.sum(axis=1, keepdims=True)
            probs = np.where(total > 0, probs / np.where(total > 0, total, 1.0), fallback)
        return probs

    def action_probs(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        """The distribution ``act`` draws from: one-hot on the argmax when ``deterministic``."""
        probs = self._masked_probs(obs, masks)
        if self.deterministic:
            probs = np.eye(probs.shape[1])[probs.argmax(axis=1)]
        return probs

    def act(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        if self.deterministic:
            actions = self._masked_probs(obs, masks).argmax(axis=1).astype(np.int64)
        else:
            actions = super().act(obs, masks)
        self._commit(len(obs))
        return actions

    def observe(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, info: dict[str, np.ndarray]) -> None:
        """Advance the LSTM state past a step whose action was not chosen by ``act`` (off-policy
        evaluation replays logged actions: ``action_probs`` then ``observe``)."""
        self._commit(len(obs))

    def _commit(self, n: int) -> None:
        if self._recurrent and self._pending is not None:
            self._lstm, self._starts, self._pending = self._pending, torch.zeros(n), None
