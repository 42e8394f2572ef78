"""The one ``Policy`` protocol: everything that acts (SB3 agents, recommenders, bandits,
reference policies) maps a batch of observations to actions and to action probabilities
(the latter is what off-policy evaluation needs)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from envs import rng
from recsys.data.replay import LoggedData, replay_history


@runtime_checkable
class Policy(Protocol):
    name: str

    def act(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        """(N,) int64 actions for a batch of observations (N, obs_dim)."""
        ...

    def action_probs(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        """(N, n_actions) probabilities; rows sum to 1, zero on masked actions."""
        ...


@runtime_checkable
class OnlinePolicy(Policy, Protocol):
    """A policy that learns or keeps per-user state while it acts (bandits, session models).
    Rollouts call ``observe`` after every step with the observations the actions were chosen
    on, the actions, the rewards and the env's info dict (``click``, ``conversion``,
    ``profit``, ``active`` = users whose step was real, ...), all batched over users."""

    def observe(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, info: dict[str, np.ndarray]) -> None: ...


class StochasticPolicy:
    """Base for policies defined by ``action_probs``: ``act`` samples from it."""

    name = "stochastic"

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def action_probs(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def act(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        probs = self.action_probs(obs, masks)
        return rng.inverse_cdf(probs, self.rng.random(len(probs)))


class DeterministicPolicy:
    """Base for policies defined by ``act``: ``action_probs`` is one-hot."""

    name = "deterministic"

    def act(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def action_probs(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        actions = self.act(obs, masks)
        n_actions = masks.shape[1] if masks is not None else self.n_actions
        probs = np.zeros((len(actions), n_actions))
        probs[np.arange(len(actions)), actions] = 1.0
        return probs

    n_actions: int = 0


class Frozen:
    """A policy as it is now, without learning: ``act`` and ``action_probs`` delegate, and
    there is no ``observe``, so rollouts and off-policy evaluation cannot change it (a bandit
    evaluated on logs must not train on them)."""

    def __init__(self, policy: Policy) -> None:
        self.policy, self.name = policy, policy.name

    def act(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        return self.policy.act(obs, masks)

    def action_probs(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        return self.policy.action_probs(obs, masks)


def masked_argmax(scores: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
    """Argmax over allowed actions (action 0, "no offer", is always allowed)."""
    if masks is not None:
        scores = np.where(masks, scores, -np.inf)
    return scores.argmax(axis=1).astype(np.int64)


def masked_softmax(scores: np.ndarray, masks: np.ndarray | None, temperature: float) -> np.ndarray:
    """Softmax of ``scores / temperature`` over allowed actions."""
    z = scores / temperature
    if masks is not None:
        z = np.where(masks, z, -np.inf)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def logged_action_probs(policy: Policy, logged: LoggedData, rewards: np.ndarray | None = None) -> np.ndarray:
    """(U, T, A) ``policy.action_probs`` at every logged step (what off-policy estimators need).

    An ``OnlinePolicy`` is told the *logged* action and outcome after each step through
    ``observe``, so per-user state (stateful recommenders, recurrent agents) follows the logged
    history. A policy that learns from rewards (a bandit) learns from the logged ``rewards``
    this way (a warm start); to evaluate one, wrap it in ``Frozen`` first, or it would train on
    the evaluation logs."""
    d = logged.data
    only_rest = np.eye(logged.masks.shape[-1], dtype=bool)[0]

    def evaluate(t: int, active: np.ndarray) -> np.ndarray:
        return policy.action_probs(logged.obs[:, t], np.where(active[:, None], logged.masks[:, t], only_rest))

    def advance(t: int, active: np.ndarray) -> None:
        if isinstance(policy, OnlinePolicy):
            info = {"click": d.click[:, t] > 0, "conversion": d.conversion[:, t] > 0, "active": active}
            r = np.zeros(d.n_users) if rewards is None else rewards[:, t]
            policy.observe(logged.obs[:, t], np.where(active, d.actions[:, t], 0), r, info)

    return replay_history(logged, evaluate, advance, logged.masks.shape[-1])
