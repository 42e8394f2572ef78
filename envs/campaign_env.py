"""``CampaignEnv``: one user, as a ``gymnasium.Env``. It is the batched core with N = 1."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from envs.campaign import CampaignConfig
from envs.true_world import TrueWorld, TrueWorldConfig
from envs.vector_env import CampaignVectorEnv
from envs.world import World


def _as(cls: type, value: Any) -> Any:
    return value if isinstance(value, cls) or value is None else cls(**dict(value))


class CampaignEnv(gym.Env):
    """A single user's campaign. ``info`` carries click, conversion, revenue, cost, profit."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        world: World | None = None,
        campaign: CampaignConfig | dict | None = None,
        world_config: TrueWorldConfig | dict | None = None,
    ) -> None:
        if world is None:
            world = TrueWorld(_as(TrueWorldConfig, world_config), n_users=1)
        if world.n_users != 1:
            raise ValueError(f"world.n_users: CampaignEnv needs a world with 1 user, got {world.n_users}")
        self.core = CampaignVectorEnv(world, _as(CampaignConfig, campaign), AutoresetMode.DISABLED)
        self.observation_space = self.core.single_observation_space
        self.action_space = self.core.single_action_space

    @property
    def world(self) -> World:
        return self.core.world

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        obs, _ = self.core.reset(seed=seed)
        return obs[0], {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if type(action) is not int and not np.isscalar(action) and np.shape(action) not in ((), (1,)):
            raise ValueError(f"action: expected a single integer, got shape {np.shape(action)}")
        obs, reward, terminated, truncated, info = self.core.step(np.asarray(action).reshape(1))
        info = {k: v.item() for k, v in info.items() if k[0] != "_"}  # one-element arrays: .item() is the value
        return obs[0], reward.item(), terminated.item(), truncated.item(), info

    def action_masks(self) -> np.ndarray:
        """(n_actions,) bool for sb3-contrib's MaskablePPO."""
        return self.core.action_masks()[0]
