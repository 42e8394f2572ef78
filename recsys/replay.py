"""Rebuild the observations (and action masks) every logged decision was taken on.

The observation is a deterministic function of the profile and the observable history, so
instead of storing it in the logs we replay each logged user through the same env code that
produces observations online: a ``LoggedWorld`` returns the logged profile and forces every
outcome to the logged one (probability 1 or 0). Recommenders train on exactly the features
they will see when acting, and off-policy estimators can ask any policy for its action
probabilities on logged rows.
"""

from __future__ import annotations

import numpy as np
from gymnasium.vector import AutoresetMode

from envs.vector_env import CampaignConfig, CampaignVectorEnv
from envs.world import Catalog, Profiles, ProfileSchema, ResponseProbs
from recsys.sequences import SequenceData


class LoggedWorld:
    """A ``World`` whose users are the logged ones and whose responses are the logged ones."""

    def __init__(self, data: SequenceData, catalog: Catalog, profile_schema: ProfileSchema) -> None:
        if data.n_actions > catalog.n_actions:
            raise ValueError(f"logs: actions up to {data.n_actions - 1} but the catalog has {catalog.n_offers} offers")
        self.data, self.catalog, self.profile_schema = data, catalog, profile_schema
        self.n_users = data.n_users
        self._t = np.zeros(self.n_users, dtype=np.int64)

    def reset_users(self, slots: np.ndarray, keys: np.ndarray) -> Profiles:
        self._t[slots] = 0
        return Profiles(categorical=self.data.profile_cat[slots], numeric=self.data.profile_num[slots].astype(np.float64))

    def _logged(self, values: np.ndarray) -> np.ndarray:
        t = np.minimum(self._t, self.data.horizon - 1)
        rows = np.arange(self.n_users)
        return np.where(self.data.mask[rows, t], values[rows, t], 0.0).astype(np.float64)

    def response_probs(self, actions: np.ndarray) -> ResponseProbs:
        return ResponseProbs(click=self._logged(self.data.click), convert=self._logged(self.data.conversion),
                             churn=self._logged(self.data.churned))

    def advance(self, actions: np.ndarray, click: np.ndarray, convert: np.ndarray, active: np.ndarray) -> None:
        self._t += active


def replay_observations(
    data: SequenceData, catalog: Catalog, profile_schema: ProfileSchema, campaign: CampaignConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(U, T, obs_dim) observations and (U, T, n_actions) action masks of every logged step
    (rows where ``data.mask`` is False are zeros)."""
    campaign = campaign or CampaignConfig()
    if data.horizon > campaign.horizon:
        raise ValueError(f"logs: users have up to {data.horizon} steps but campaign.horizon is {campaign.horizon}")
    env = CampaignVectorEnv(LoggedWorld(data, catalog, profile_schema), campaign, AutoresetMode.DISABLED)
    obs, _ = env.reset(seed=0)
    out = np.zeros((data.n_users, data.horizon, obs.shape[1]), dtype=np.float32)
    masks = np.zeros((data.n_users, data.horizon, catalog.n_actions), dtype=bool)
    for t in range(data.horizon):
        logged = data.mask[:, t]
        out[logged, t], masks[logged, t] = obs[logged], env.action_masks()[logged]
        actions = np.where(logged & ~env.done, data.actions[:, t], 0)
        obs, *_ = env.step(actions)
    return out, masks
