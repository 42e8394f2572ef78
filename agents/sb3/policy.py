"""An SB3 model behind the ``Policy`` protocol."""

from __future__ import annotations

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm

from agents.base import StochasticPolicy


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
