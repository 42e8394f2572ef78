"""The logging policy of real logs, estimated: it acts like the logs did, step by step.

TrueWorld logs come from a known ``agents.reference.LoggingPolicy``; a user's own logs come
from a policy nobody handed over. To replay a learned simulator "under the logging policy"
(sequence statistics, real vs simulated) and to evaluate that policy in the simulator and
off-policy, this stand-in samples ``p(a | t)``, the per-step popularity of the logged actions
(``recsys.data.behaviour``), restricted to the allowed actions. It ignores profiles and history,
so it matches the logs' action frequencies per step, not their targeting.
"""

from __future__ import annotations

import numpy as np

from agents.base import StochasticPolicy
from envs.vector_env import CampaignVectorEnv
from recsys.data.behaviour import step_popularity
from recsys.data.sequences import SequenceData


def behaviour_table(data: SequenceData, prior_strength: float = 100.0) -> np.ndarray:
    """(T, A) ``p(a | t)`` of the logged rows of ``data`` (fit it on training users)."""
    steps = np.broadcast_to(np.arange(data.horizon), data.actions.shape)
    return step_popularity(steps[data.mask], data.actions[data.mask], data.n_actions, prior_strength)


class EstimatedLoggingPolicy(StochasticPolicy):
    """Samples the logs' per-step action frequencies (module docstring); past the last logged
    step it keeps the last step's frequencies."""

    name = "logging"

    def __init__(self, env: CampaignVectorEnv, table: np.ndarray, seed: int = 0) -> None:
        super().__init__(seed)
        if table.shape[1] != env.catalog.n_actions:
            raise ValueError(f"logging policy: the logs have {table.shape[1]} actions, the env {env.catalog.n_actions}")
        self.table, self.n_actions = table, env.catalog.n_actions
        self.time_left, self.horizon = env.layout.time_left, env.campaign.horizon

    def action_probs(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        step = np.rint((1.0 - obs[:, self.time_left]) * self.horizon).astype(np.int64)
        p = self.table[np.clip(step, 0, len(self.table) - 1)]
        if masks is not None:
            p = np.where(masks, p, 0.0)
            empty = p.sum(axis=1) <= 0  # every logged action is masked: rest
            p[empty, 0] = 1.0
        return p / p.sum(axis=1, keepdims=True)
