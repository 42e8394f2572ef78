"""Everything that observes SB3 training, as callbacks: campaign scalars for TensorBoard,
periodic evaluation in both worlds, atomic checkpoints."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from recsys.artifacts import atomic_write_bytes


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


def save_checkpoint(model: BaseAlgorithm, path: Path) -> Path:
    """SB3's zip of ``model``, written atomically (``recsys.artifacts.atomic_write_bytes``)."""
    buffer = io.BytesIO()
    model.save(buffer)
    return atomic_write_bytes(path, buffer.getvalue())


class AtomicCheckpointCallback(BaseCallback):
    """``CheckpointCallback``'s schedule (every ``save_freq`` calls, ``<prefix>_<steps>_steps.zip``),
    with atomic writes."""

    def __init__(self, save_freq: int, save_path: Path, name_prefix: str) -> None:
        super().__init__()
        self.save_freq, self.save_path, self.name_prefix = save_freq, save_path, name_prefix

    def _on_step(self) -> bool:
        if self.n_calls % self.save_freq == 0:
            save_checkpoint(self.model, self.save_path / f"{self.name_prefix}_{self.num_timesteps}_steps.zip")
        return True
