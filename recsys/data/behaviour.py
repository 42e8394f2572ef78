"""The logs' own behaviour, estimated: how often each action was logged at each step.

Real logs rarely come with the logging policy's full distribution (at best the propensity of the
logged action), yet two things need one: propensities for logs that have none (MovieLens,
``recsys.data.movielens``) and a stand-in for the logging policy when a learned simulator is
replayed "under the logging policy" (``agents.behaviour``). Both use this one model, a
per-step popularity: ``p(a | t) = (n(a, t) + k p(a)) / (n(t) + k)``, with ``n`` counts of logged
actions, ``p(a)`` the action's share of all rows and ``k`` pseudo-counts shrinking the per-step
share towards the overall one. It ignores the user's profile and history: a context-free
approximation of what the logging policy did, to be reported as such.
"""

from __future__ import annotations

import numpy as np


def step_popularity(step: np.ndarray, action: np.ndarray, n_actions: int, prior_strength: float = 100.0) -> np.ndarray:
    """(max step + 1, n_actions) ``p(a | t)`` from logged rows (``step``, ``action``: 1-d, same length)."""
    if not prior_strength >= 0:
        raise ValueError(f"prior_strength: expected a number >= 0, got {prior_strength!r}")
    step, action = np.asarray(step, dtype=np.int64), np.asarray(action, dtype=np.int64)
    if not len(action):
        raise ValueError("step_popularity: needs at least one logged row")
    overall = np.bincount(action, minlength=n_actions) / len(action)
    n_steps = int(step.max()) + 1
    counts = np.bincount(step * n_actions + action, minlength=n_steps * n_actions).reshape(n_steps, n_actions)
    n_step = counts.sum(axis=1, keepdims=True)
    return (counts + prior_strength * overall[None, :]) / (n_step + prior_strength)
