"""Contextual bandits that learn online, behind the ``Policy`` / ``OnlinePolicy`` protocol.

All three keep one ridge-regression model of the immediate reward per action ("disjoint"
linear models): for action ``a``, ``A_a = l2 * I + sum x x^T`` and ``b_a = sum r x`` over the
rounds in which ``a`` was taken, and ``theta_a = A_a^-1 b_a``. The context ``x`` is the
observation (plus a constant 1 when ``bias=True``); the reward ``r`` is whatever the env
passes to ``observe`` (its configured reward, e.g. profit), on rows whose ``info["active"]``
is True. They differ only in how they pick an action from the models:

* ``epsilon_greedy``: the best predicted reward, or with probability ``epsilon`` an action
  uniform over the allowed ones. ``contextual=False`` drops the observation and keeps only the
  constant: a context-free epsilon-greedy over per-action mean rewards.
* ``linucb``: disjoint LinUCB (Li, Chu, Langford & Schapire, "A contextual-bandit approach to
  personalized news article recommendation", WWW 2010, Algorithm 1): the best
  ``theta_a^T x + alpha * sqrt(x^T A_a^-1 x)``.
* ``thompson``: linear Thompson sampling (Agrawal & Goyal, "Thompson sampling for contextual
  bandits with linear payoffs", ICML 2013): draw ``theta_a ~ N(A_a^-1 b_a, v^2 A_a^-1)`` for
  every decision and take the best ``theta_a^T x``.

Batched: a call to ``act`` decides for N users at once with the current models, and
``observe`` adds the whole batch to the sufficient statistics (one ``X^T X`` per action
taken) and re-solves the touched actions, so the only Python loop is over actions.
Unavailable actions (``masks`` False) are never chosen and get probability 0.

Why written here: the maintained bandit libraries either are context-free, decide for one
context at a time, or pull incompatible pins (Open Bandit Pipeline: obp 0.5.7 needs Python < 3.11 with exact old pins, 0.4.1 breaks on pandas 3); none fits
a batched Gymnasium env with action masks, and each policy here is ~40 lines on a shared
ridge-regression base.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from agents.base import StochasticPolicy
from envs import rng

if TYPE_CHECKING:
    from envs.vector_env import CampaignVectorEnv

# Scores this close (relative) count as tied, and ties are broken uniformly: untouched actions
# share the prior, so their scores are equal up to the rounding of the blocked matrix product.
_TIE_TOL = 1e-9
_QUADFORM_FLOATS = 2**21  # intermediate (users x actions x features) floats per chunk: 16 MB
_PROB_DRAWS_PER_CHUNK = 2**22  # Thompson action_probs draws per chunk: ~32 MB of float64


def _allowed(masks: np.ndarray | None, n: int, n_actions: int) -> np.ndarray:
    if masks is None:
        return np.ones((n, n_actions), dtype=bool)
    masks = np.asarray(masks, dtype=bool)
    if masks.shape != (n, n_actions):
        raise ValueError(f"masks: expected shape ({n}, {n_actions}), got {masks.shape}")
    if not masks.any(axis=1).all():
        raise ValueError(f"masks: row {int(np.flatnonzero(~masks.any(axis=1))[0])} allows no action")
    return masks


def _best_set(scores: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """(N, A) bool: the allowed actions whose score ties the allowed maximum."""
    scores = np.where(allowed, scores, -np.inf)
    top = scores.max(axis=1, keepdims=True)
    return allowed & (scores >= top - _TIE_TOL * np.maximum(np.abs(top), 1.0))


def _uniform_pick(choices: np.ndarray, generator: np.random.Generator) -> np.ndarray:
    """One action per row, uniform over the True entries of ``choices`` (N, A)."""
    return rng.inverse_cdf(choices, generator.random(len(choices)))


class _LinearBandit:
    """Per-action ridge regression of the reward on the context; the shared base."""

    name = "linear_bandit"

    def __init__(self, n_actions: int, obs_dim: int, l2: float = 1.0, bias: bool = True, seed: int = 0) -> None:
        if n_actions < 1:
            raise ValueError(f"{self.name}.n_actions: must be >= 1, got {n_actions}")
        if obs_dim < 0:
            raise ValueError(f"{self.name}.obs_dim: must be >= 0, got {obs_dim}")
        if not l2 > 0:
            raise ValueError(f"{self.name}.l2: must be > 0, got {l2}")
        if obs_dim == 0 and not bias:
            raise ValueError(f"{self.name}.bias: must be True when there are no observation features")
        self.n_actions, self.obs_dim, self.l2, self.bias = n_actions, obs_dim, l2, bias
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        d = self.n_features
        self.A = np.broadcast_to(l2 * np.eye(d), (n_actions, d, d)).copy()  # l2 I + sum x x^T
        self.b = np.zeros((n_actions, d))  # sum r x
        self.A_inv = np.broadcast_to(np.eye(d) / l2, (n_actions, d, d)).copy()
        self.theta = np.zeros((n_actions, d))  # A^-1 b
        self.counts = np.zeros(n_actions, dtype=np.int64)  # observed rounds per action

    @classmethod
    def for_env(cls, env: CampaignVectorEnv, **hyperparameters):
        """The bandit sized for a ``CampaignVectorEnv`` (its actions and observation width)."""
        return cls(env.catalog.n_actions, env.single_observation_space.shape[0], **hyperparameters)

    @property
    def n_features(self) -> int:
        return self.obs_dim + int(self.bias)

    def features(self, obs: np.ndarray) -> np.ndarray:
        """(N, n_features) float64 contexts: the observation, then a constant 1 if ``bias``."""
        obs = np.asarray(obs, dtype=np.float64)
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(f"{self.name}: obs must have shape (N, {self.obs_dim}), got {obs.shape}")
        return np.concatenate([obs, np.ones((len(obs), 1))], axis=1) if self.bias else obs

    def _mean_and_var(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, A) predicted reward theta_a^T x and its scaled variance x^T A_a^-1 x."""
        n, d = x.shape
        k = self.n_actions
        stacked = self.A_inv.transpose(1, 0, 2).reshape(d, k * d)  # column block a is A_a^-1
        var = np.empty((n, k))
        rows = max(1, _QUADFORM_FLOATS // (k * d))
        for start in range(0, n, rows):  # one matrix product per chunk of users, all actions at once
            xs = x[start:start + rows]
            var[start:start + rows] = np.einsum("nkd,nd->nk", (xs @ stacked).reshape(len(xs), k, d), xs)
        return x @ self.theta.T, np.maximum(var, 0.0)

    def observe(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, info: dict | None = None) -> None:
        """Add the active rows of one batched step to the statistics and re-solve."""
        actions, rewards = np.asarray(actions, dtype=np.int64), np.asarray(rewards, dtype=np.float64)
        x = self.features(obs)
        if info is not None and "active" in info:
            keep = np.asarray(info["active"], dtype=bool)
            x, actions, rewards = x[keep], actions[keep], rewards[keep]
        touched = np.unique(actions)
        for a in touched:
            rows = actions == a
            xa = x[rows]
            self.A[a] += xa.T @ xa
            self.b[a] += xa.T @ rewards[rows]
            self.counts[a] += len(xa)
        if len(touched):
            inv = np.linalg.inv(self.A[touched])
            self.A_inv[touched] = 0.5 * (inv + inv.transpose(0, 2, 1))  # keep it exactly symmetric
            self.theta[touched] = np.einsum("kij,kj->ki", self.A_inv[touched], self.b[touched])


class EpsilonGreedyBandit(_LinearBandit, StochasticPolicy):
    """Best predicted reward with probability ``1 - epsilon``, else uniform over allowed
    actions. ``contextual=False`` learns one mean reward per action (the observation is
    ignored). Ties between best actions are broken uniformly."""

    name = "epsilon_greedy"

    def __init__(
        self, n_actions: int, obs_dim: int, epsilon: float = 0.1, l2: float = 1.0, bias: bool = True,
        contextual: bool = True, seed: int = 0,
    ) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"{self.name}.epsilon: must be in [0, 1], got {epsilon}")
        self.epsilon, self.contextual, self._full_dim = epsilon, contextual, obs_dim
        super().__init__(n_actions, obs_dim if contextual else 0, l2, bias or not contextual, seed)

    def features(self, obs: np.ndarray) -> np.ndarray:
        if self.contextual:
            return super().features(obs)
        obs = np.asarray(obs)
        if obs.ndim != 2 or obs.shape[1] != self._full_dim:
            raise ValueError(f"{self.name}: obs must have shape (N, {self._full_dim}), got {obs.shape}")
        return np.ones((len(obs), 1))

    def action_probs(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        x = self.features(obs)
        allowed = _allowed(masks, len(x), self.n_actions)
        best = _best_set(x @ self.theta.T, allowed)
        greedy = best / best.sum(axis=1, keepdims=True)
        return (1.0 - self.epsilon) * greedy + self.epsilon * allowed / allowed.sum(axis=1, keepdims=True)


class LinUCBBandit(_LinearBandit):
    """Disjoint LinUCB: argmax of ``theta_a^T x + alpha * sqrt(x^T A_a^-1 x)`` over allowed
    actions. Deterministic except for exact ties (e.g. the first round, when every action has
    the same prior), which are broken uniformly at random; ``action_probs`` is the
    corresponding exact distribution (one-hot when there is no tie)."""

    name = "linucb"

    def __init__(
        self, n_actions: int, obs_dim: int, alpha: float = 1.0, l2: float = 1.0, bias: bool = True, seed: int = 0,
    ) -> None:
        if not alpha > 0:
            raise ValueError(f"{self.name}.alpha: must be > 0, got {alpha}")
        self.alpha = alpha
        super().__init__(n_actions, obs_dim, l2, bias, seed)

    def _best(self, obs: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
        x = self.features(obs)
        mean, var = self._mean_and_var(x)
        return _best_set(mean + self.alpha * np.sqrt(var), _allowed(masks, len(x), self.n_actions))

    def act(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        return _uniform_pick(self._best(obs, masks), self.rng)

    def action_probs(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        best = self._best(obs, masks)
        return best / best.sum(axis=1, keepdims=True)


class LinearThompsonBandit(_LinearBandit):
    """Linear Thompson sampling with one posterior draw per decision.

    With disjoint per-action models, drawing ``theta_a ~ N(A_a^-1 b_a, v^2 A_a^-1)`` and scoring
    ``theta_a^T x`` is the same in distribution as drawing each action's score from
    ``N(theta_a^T x, v^2 x^T A_a^-1 x)`` independently, which is what ``act`` does (N x A
    normal draws instead of N x A x d).

    ``action_probs`` is a Monte-Carlo estimate from ``n_prob_samples`` draws per row (default
    1,000: standard error <= 0.5 / sqrt(1000) ~ 0.016 per probability). It uses its own
    generator seeded from ``seed``, so it is a deterministic function of the state and the
    inputs and does not shift the draws ``act`` makes. An action with a probability far below
    1 / n_prob_samples can be estimated as 0.
    """

    name = "thompson"

    def __init__(
        self, n_actions: int, obs_dim: int, v: float = 1.0, l2: float = 1.0, bias: bool = True,
        n_prob_samples: int = 1000, seed: int = 0,
    ) -> None:
        if not v > 0:
            raise ValueError(f"{self.name}.v: must be > 0, got {v}")
        if n_prob_samples < 1:
            raise ValueError(f"{self.name}.n_prob_samples: must be >= 1, got {n_prob_samples}")
        self.v, self.n_prob_samples = v, n_prob_samples
        super().__init__(n_actions, obs_dim, l2, bias, seed)

    @staticmethod
    def _sample_best(mean: np.ndarray, sd: np.ndarray, allowed: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Argmax over allowed actions of the sampled scores ``mean + sd * noise``."""
        return np.where(allowed, mean + sd * noise, -np.inf).argmax(axis=-1).astype(np.int64)

    def act(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        x = self.features(obs)
        mean, var = self._mean_and_var(x)
        allowed = _allowed(masks, len(x), self.n_actions)
        return self._sample_best(mean, self.v * np.sqrt(var), allowed, self.rng.standard_normal(mean.shape))

    def action_probs(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        x = self.features(obs)
        mean, var = self._mean_and_var(x)
        allowed = _allowed(masks, len(x), self.n_actions)
        sd = self.v * np.sqrt(var)
        draws = np.random.default_rng([self.seed, 1])
        n, n_actions = mean.shape
        flat_rows = np.arange(n) * n_actions
        counts = np.zeros(n * n_actions)
        chunk = max(1, _PROB_DRAWS_PER_CHUNK // max(1, mean.size))
        for start in range(0, self.n_prob_samples, chunk):
            k = min(chunk, self.n_prob_samples - start)
            best = self._sample_best(mean[None], sd[None], allowed[None], draws.standard_normal((k, n, n_actions)))
            counts += np.bincount((flat_rows[None] + best).ravel(), minlength=n * n_actions)
        return counts.reshape(n, n_actions) / self.n_prob_samples
