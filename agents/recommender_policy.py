"""A fitted recommender as a ``Policy``: greedy (argmax of its scores over allowed actions)
or softmax (``exp(score / temperature)`` over allowed actions, a stochastic policy with known
propensities for off-policy evaluation).

Which actions compete: click rankers (``recommender.always_sends``) only choose *which* offer
to send, so "no offer" is allowed only when every offer is masked; the value ranker scores
"no offer" as an expected profit of 0 and rests when no offer beats it.

Stateful recommenders (``mf``, ``gru4rec``) make the policy an ``OnlinePolicy``: rollouts call
``observe`` after every step and the policy advances each user's state. The state is created
lazily for the batch size ``act`` is called with (a new size starts fresh users), and a row
whose observation shows the first step of an episode (time left = 1) is reset to a new user,
so autoreset envs work too. For off-policy evaluation on logs, ``agents.base.logged_action_probs``
replays each logged user's history through ``observe``, the same state updates.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from agents.base import masked_argmax, masked_softmax
from envs import rng
from envs.vector_env import CampaignVectorEnv
from recsys.recommenders.base import Recommender, State

MODES = ("greedy", "softmax")


class RecommenderPolicy:
    """``Policy`` over a fitted ``Recommender`` (``StatefulRecommenderPolicy`` when it is
    stateful: constructing ``RecommenderPolicy`` returns that subclass automatically).

    ``env``: when given, checked against what the recommender was fitted on (observation
    layout, actions, catalog). ``mode``: ``greedy`` or ``softmax``. ``temperature``: softmax
    temperature on the recommender's score scale (log-odds for ``popularity``/``logistic``/
    ``deepfm``, ranking scores for ``mf``/``gru4rec``, expected profit in currency units for
    ``value_ranker``). ``seed``: of the softmax draws. ``name``: defaults to the
    recommender's name, with ``_softmax`` appended in softmax mode.
    """

    def __new__(cls, recommender: Recommender, *args: Any, **kwargs: Any) -> RecommenderPolicy:
        if cls is RecommenderPolicy and recommender.stateful:
            cls = StatefulRecommenderPolicy
        return super().__new__(cls)

    def __init__(
        self, recommender: Recommender, env: CampaignVectorEnv | None = None, mode: str = "greedy",
        temperature: float = 1.0, seed: int = 0, name: str | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"recommender_policy.mode: got {mode!r}, expected one of {MODES}")
        if not (isinstance(temperature, int | float) and math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"recommender_policy.temperature: must be a finite number > 0, got {temperature!r}")
        if recommender.spec is None:
            raise ValueError(f"recommender: {recommender.name} is not fitted; call fit() or load() first")
        if env is not None:
            recommender.spec.check(env)
        self.recommender, self.mode, self.temperature = recommender, mode, float(temperature)
        self.n_actions = recommender.spec.n_actions
        self.name = name or (recommender.name if mode == "greedy" else f"{recommender.name}_softmax")
        self.rng = np.random.default_rng(seed)

    # ---------------------------------------------------------------- Policy
    def act(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        if self.mode == "greedy":
            return masked_argmax(self._scores(obs), self._allowed(masks, len(obs)))
        return rng.inverse_cdf(self.action_probs(obs, masks), self.rng.random(len(obs)))

    def action_probs(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        return self._probs(self._scores(obs), self._allowed(masks, len(obs)))

    # ---------------------------------------------------------------- internals
    def _allowed(self, masks: np.ndarray | None, n: int) -> np.ndarray:
        allowed = np.ones((n, self.n_actions), dtype=bool) if masks is None else np.array(masks, dtype=bool)
        if allowed.shape != (n, self.n_actions):
            raise ValueError(f"masks: expected shape ({n}, {self.n_actions}), got {allowed.shape}")
        if self.recommender.always_sends:
            allowed[:, 0] = ~allowed[:, 1:].any(axis=1)
        return allowed

    def _probs(self, scores: np.ndarray, allowed: np.ndarray) -> np.ndarray:
        if self.mode == "softmax":
            return masked_softmax(scores, allowed, self.temperature)
        probs = np.zeros(scores.shape)
        probs[np.arange(len(scores)), masked_argmax(scores, allowed)] = 1.0
        return probs

    def _scores(self, obs: np.ndarray) -> np.ndarray:
        return self.recommender.scores(obs)


class StatefulRecommenderPolicy(RecommenderPolicy):
    """A ``RecommenderPolicy`` that keeps per-user recommender state (an ``OnlinePolicy``)."""

    _state: State | None = None

    def reset(self) -> None:
        """Forget every user (the next call starts fresh ones)."""
        self._state = None

    def _current_state(self, obs: np.ndarray) -> State:
        rec = self.recommender
        first = next(iter(self._state.values())) if self._state else None
        if first is None or len(first) != len(obs):
            self._state = rec.initial_state(obs)
            return self._state
        fresh = np.flatnonzero(obs[:, rec.spec.time_left] >= 1.0)  # first step of an episode
        if len(fresh):
            new = rec.initial_state(obs[fresh])
            for key, value in self._state.items():
                value[fresh] = new[key]
        return self._state

    def _scores(self, obs: np.ndarray) -> np.ndarray:
        return self.recommender.scores(obs, self._current_state(obs))

    def observe(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, info: dict[str, np.ndarray]) -> None:
        state = self._current_state(obs)
        active = np.asarray(info.get("active", np.ones(len(obs), dtype=bool)), dtype=bool)
        self._state = self.recommender.advance(state, obs, np.asarray(actions), np.asarray(info["click"], dtype=bool),
                                               np.asarray(info["conversion"], dtype=bool), active)
