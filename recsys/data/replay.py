"""Rebuild the observations (and action masks) every logged decision was taken on, and the
``LoggedData`` (sequences + observations + masks) that recommenders, bandits and OPE learn from.

The observation is a deterministic function of the profile and the observable history, so
instead of storing it in the logs we replay each logged user through the same env code that
produces observations online: a ``LoggedWorld`` returns the logged profile and forces every
outcome to the logged one (probability 1 or 0). Recommenders train on exactly the features
they will see when acting, and off-policy estimators can ask any policy for its action
probabilities on logged rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode

from envs.campaign import CampaignConfig
from envs.vector_env import CampaignVectorEnv
from envs.world import Catalog, Profiles, ProfileSchema, ResponseProbs
from recsys.data.sequences import SequenceData


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


@dataclass
class FeatureSpec:
    """Where things are in an observation and what the business knows about each offer.
    Saved with every recommender, so a loaded one can check it acts on the right env."""

    obs_dim: int
    n_actions: int
    cat_names: list[str]
    cat_slices: list[list[int]]  # [start, stop) of each categorical profile feature's one-hot block
    profile: list[int]  # [start, stop) of the whole profile (one-hots, then standardised numerics)
    time_left: int  # column of "time left"; 1.0 exactly at the first step of an episode
    offer_category: list[int]
    catalog: dict[str, Any]  # ``Catalog.to_json()``: value, discount, contact cost of each offer
    reward: str  # ``campaign.reward`` of the logs' campaign: what a reward-ranking model maximises
    reward_weights: dict[str, float]

    @classmethod
    def from_env(cls, env: CampaignVectorEnv) -> FeatureSpec:
        lay, cat = env.layout, env.catalog
        start = lay.profile_cat[0].start if lay.profile_cat else lay.profile_num.start
        return cls(
            obs_dim=len(lay.names), n_actions=int(cat.n_actions),
            cat_names=list(env.world.profile_schema.categorical),
            cat_slices=[[s.start, s.stop] for s in lay.profile_cat], profile=[start, lay.profile_num.stop],
            time_left=int(lay.time_left), offer_category=[int(c) for c in cat.category],
            catalog=cat.to_json(), reward=env.campaign.reward, reward_weights=dict(env.campaign.reward_weights),
        )

    def expected_reward(self, p_click: np.ndarray, p_convert: np.ndarray) -> np.ndarray:
        """(N, n_actions) expected immediate reward under the logs' campaign (``campaign.reward``)."""
        campaign = CampaignConfig(reward=self.reward, reward_weights=self.reward_weights)
        return campaign.expected_reward(Catalog.from_json(self.catalog), p_click, p_convert)

    @property
    def n_offers(self) -> int:
        return self.n_actions - 1

    @property
    def dense(self) -> list[int]:
        """Columns that are not categorical one-hots: profile numerics and the history."""
        one_hot = {i for s, e in self.cat_slices for i in range(s, e)}
        return [i for i in range(self.obs_dim) if i not in one_hot]

    def check(self, env: CampaignVectorEnv) -> None:
        """Raise if ``env`` produces observations or actions this spec was not fitted on."""
        other = FeatureSpec.from_env(env)
        for name in ("obs_dim", "n_actions", "cat_slices", "time_left", "offer_category"):
            if getattr(other, name) != getattr(self, name):
                raise ValueError(
                    f"env: {name} is {getattr(other, name)} but the recommender was fitted on "
                    f"{getattr(self, name)}; fit it on logs of this env's world and campaign"
                )
        mine, theirs = Catalog.from_json(self.catalog), Catalog.from_json(other.catalog)
        if not all(np.allclose(getattr(mine, k), getattr(theirs, k), rtol=1e-6) for k in ("value", "discount", "contact_cost")):
            raise ValueError("env: the catalog's values, discounts or contact cost differ from the ones the "
                             "recommender was fitted with; fit it on logs of this env's world")


@dataclass
class LoggedData:
    """Logged sequences with the (U, T, obs_dim) observations and (U, T, n_actions) masks
    each decision was taken on (zeros where ``data.mask`` is False)."""

    data: SequenceData
    obs: np.ndarray
    masks: np.ndarray
    spec: FeatureSpec

    @classmethod
    def replay(
        cls, data: SequenceData, catalog: Catalog, profile_schema: ProfileSchema,
        campaign: CampaignConfig | None = None,
    ) -> LoggedData:
        """Rebuild the observations by replay (the same env code as online acting)."""
        campaign = campaign or CampaignConfig()
        obs, masks = replay_observations(data, catalog, profile_schema, campaign)
        probe = LoggedWorld(data.subset(np.arange(min(1, data.n_users))), catalog, profile_schema)
        return cls(data, obs, masks, FeatureSpec.from_env(CampaignVectorEnv(probe, campaign)))

    def subset(self, users: np.ndarray) -> LoggedData:
        """The same data for a boolean mask or index array over users."""
        return LoggedData(self.data.subset(users), self.obs[users], self.masks[users], self.spec)

    def selection(self, target: str) -> np.ndarray:
        """(U, T) rows a model of ``target`` learns from: exposures (an offer was sent) for
        clicks, clicked exposures for p(convert | click)."""
        d = self.data
        rows = d.mask & (d.actions > 0)
        return rows & (d.click > 0) if target == "conversion" else rows

    def rows(self, target: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(obs (M, obs_dim), offer index (M,) in [0, n_offers), label (M,)) of those rows."""
        sel = self.selection(target)
        label = self.data.conversion if target == "conversion" else self.data.click
        return self.obs[sel], self.data.actions[sel] - 1, label[sel].astype(np.float32)


def replay_history(logged: LoggedData, evaluate: Callable[[int, np.ndarray], np.ndarray],
                   advance: Callable[[int, np.ndarray], None], width: int) -> np.ndarray:
    """The one walk through the logged history: (U, T, width) ``evaluate(t, active)`` at every
    logged step ``t`` (``active``: users with a real step ``t``), each followed by
    ``advance(t, active)`` so that any per-user state (a stateful recommender's, a policy's)
    follows the *logged* actions and outcomes; zeros on padding."""
    d = logged.data
    out = np.zeros((*d.mask.shape, width))
    for t in range(d.horizon):
        active = d.mask[:, t]
        out[:, t] = np.where(active[:, None], evaluate(t, active), 0.0)
        advance(t, active)
    return out
