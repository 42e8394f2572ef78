"""Worlds users live in, and the Gymnasium envs over them.

Importing this package registers the ``campaign`` namespace:

* ``campaign/TrueWorld-v0``: one user of the ground-truth world (``gymnasium.make``), or N
  users natively batched (``gymnasium.make_vec(..., vectorization_mode="vector_entry_point")``).
* ``campaign/LearnedWorld-v0``: the same for a fitted simulator; pass
  ``simulator_dir=<run dir>/simulator`` (written by ``experiments.fit_simulator``; loaded by ``recsys.simulator.io``).
"""

from gymnasium.envs.registration import register, registry

from envs.campaign import CampaignConfig
from envs.campaign_env import CampaignEnv
from envs.true_world import TrueWorld, TrueWorldConfig
from envs.vector_env import CampaignVectorEnv
from envs.world import Catalog, Profiles, ProfileSchema, ResponseProbs, World

__all__ = [
    "CampaignConfig", "CampaignEnv", "CampaignVectorEnv", "Catalog", "ProfileSchema", "Profiles",
    "ResponseProbs", "TrueWorld", "TrueWorldConfig", "World", "make_true_vector_env",
]


def make_true_vector_env(
    num_envs: int = 1,
    world_config: TrueWorldConfig | dict | None = None,
    campaign: CampaignConfig | dict | None = None,
    autoreset_mode: str = "NextStep",
    **_: object,
) -> CampaignVectorEnv:
    """Vector entry point of ``campaign/TrueWorld-v0``: N users in one batched env."""
    wc = world_config if isinstance(world_config, TrueWorldConfig) else TrueWorldConfig(**(world_config or {}))
    cc = campaign if isinstance(campaign, CampaignConfig) else CampaignConfig(**(campaign or {}))
    return CampaignVectorEnv(TrueWorld(wc, n_users=num_envs), cc, autoreset_mode)


if "campaign/TrueWorld-v0" not in registry:
    register(
        id="campaign/TrueWorld-v0",
        entry_point="envs.campaign_env:CampaignEnv",
        vector_entry_point="envs:make_true_vector_env",
    )
if "campaign/LearnedWorld-v0" not in registry:
    register(
        id="campaign/LearnedWorld-v0",
        # loading a fitted simulator is recsys's job; the string keeps envs free of recsys imports
        entry_point="recsys.simulator.io:make_learned_env",
        vector_entry_point="recsys.simulator.io:make_learned_vector_env",
    )
