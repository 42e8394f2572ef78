"""What every off-policy estimator reads: logged episodes plus one evaluation policy.

Arrays are users x steps (``U, T``), padded after a user's last logged step (``mask``
False). Per-decision quantities with an action axis are ``(U, T, A)``. The evaluation
policy's probabilities ``pi`` are taken on the *logged* states (``agents.base.logged_action_probs``
replays each user's logged history through the policy, so stateful policies see the same
history they would have seen online).

Validation happens once, in ``__post_init__``, so estimators can assume clean inputs and a
bad input fails with one line naming the field and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

_ATOL = 1e-6


@dataclass(frozen=True)
class OPEData:
    """Logged episodes (``actions``, ``rewards``, logging ``propensities``, ``mask``), the
    evaluation policy's probabilities ``pi`` on the logged states and, optionally, model
    predictions: ``q_hat`` the expected *immediate* reward of every action (the reward model
    of DM/DR) and ``q_pi`` the expected *return* of every action when ``pi`` acts afterwards
    (a Q-function, e.g. from FQE; WDR's control variate)."""

    actions: np.ndarray  # (U, T) int
    rewards: np.ndarray  # (U, T) float
    propensities: np.ndarray  # (U, T) logging probability of the logged action, in (0, 1]
    mask: np.ndarray  # (U, T) bool
    pi: np.ndarray  # (U, T, A) evaluation policy probabilities on the logged states
    q_hat: np.ndarray | None = None  # (U, T, A) expected immediate reward
    q_pi: np.ndarray | None = None  # (U, T, A) expected return under pi from (s_t, a)
    gamma: float = 1.0

    def __post_init__(self) -> None:
        mask = np.asarray(self.mask)
        if mask.ndim != 2 or mask.dtype != bool:
            raise ValueError(f"ope.mask: expected a (users, steps) bool array, got {mask.dtype} {mask.shape}")
        if mask.shape[0] < 2 or not mask[:, 0].all():
            raise ValueError("ope.mask: need >= 2 users, each with a logged first step (mask[:, 0] all True)")
        shape = mask.shape
        for name in ("actions", "rewards", "propensities"):
            if np.shape(getattr(self, name)) != shape:
                raise ValueError(f"ope.{name}: expected shape {shape} (like mask), got {np.shape(getattr(self, name))}")
        n_actions = np.shape(self.pi)[-1] if np.ndim(self.pi) == 3 else -1
        for name in ("pi", "q_hat", "q_pi"):
            value = getattr(self, name)
            if value is not None and np.shape(value) != (*shape, n_actions):
                raise ValueError(f"ope.{name}: expected shape {(*shape, 'n_actions')}, got {np.shape(value)}")
            if value is not None and not np.isfinite(value[mask]).all():
                raise ValueError(f"ope.{name}: contains NaN or inf on logged steps; check the model/policy producing it")
        a = self.actions[mask]
        if (a < 0).any() or (a >= n_actions).any():
            raise ValueError(f"ope.actions: logged actions must be in [0, {n_actions - 1}] (pi has {n_actions} columns)")
        p = self.propensities[mask]
        if not np.isfinite(p).all() or (p <= 0).any() or (p > 1 + _ATOL).any():
            bad = p[~(np.isfinite(p) & (p > 0) & (p <= 1 + _ATOL))][0]
            raise ValueError(f"ope.propensities: must be in (0, 1] on logged steps, found {bad}; "
                             "IPS-type estimators need the logging probability of every logged action")
        if not np.isfinite(self.rewards[mask]).all():
            raise ValueError("ope.rewards: contains NaN or inf on logged steps")
        pi = self.pi[mask]
        if (pi < -_ATOL).any() or not np.allclose(pi.sum(axis=1), 1.0, atol=1e-5):
            row = int(np.argmax(np.abs(pi.sum(axis=1) - 1.0)))
            raise ValueError(f"ope.pi: rows must be probabilities summing to 1 on logged steps "
                             f"(row {row} sums to {pi[row].sum():.6f}); check the policy's action_probs")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"ope.gamma: must be in (0, 1], got {self.gamma}")

    # ------------------------------------------------------------------ derived
    @property
    def n_users(self) -> int:
        return self.mask.shape[0]

    @property
    def n_actions(self) -> int:
        return self.pi.shape[-1]

    def with_policy(self, pi: np.ndarray, q_pi: np.ndarray | None = None) -> OPEData:
        """The same logs for another evaluation policy."""
        return replace(self, pi=pi, q_pi=q_pi)

    def weights(self) -> np.ndarray:
        """(U, T) per-decision importance weights pi(a_t|s_t) / mu(a_t|s_t); 0 on padding."""
        pi_a = np.take_along_axis(self.pi, self.actions[..., None], axis=-1)[..., 0]
        return np.where(self.mask, pi_a / np.where(self.mask, self.propensities, 1.0), 0.0)

    def cumulative_weights(self) -> np.ndarray:
        """(U, T) rho_{0:t}: products of the weights up to t. After a user's last step the
        episode sits in an absorbing state where pi = mu, so rho stays at its final value
        (the fixed-horizon convention of Thomas & Brunskill 2016)."""
        return np.cumprod(np.where(self.mask, self.weights(), 1.0), axis=1)

    def discounts(self) -> np.ndarray:
        return self.gamma ** np.arange(self.mask.shape[1])

    def model_value(self, q: np.ndarray) -> np.ndarray:
        """(U, T) sum_a pi(a|s_t) q(s_t, a); 0 on padding."""
        return np.where(self.mask, (self.pi * q).sum(axis=-1), 0.0)

    def logged_model(self, q: np.ndarray) -> np.ndarray:
        """(U, T) q(s_t, a_t) of the logged action; 0 on padding."""
        return np.where(self.mask, np.take_along_axis(q, self.actions[..., None], axis=-1)[..., 0], 0.0)

