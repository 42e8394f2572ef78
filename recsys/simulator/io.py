"""A fitted simulator on disk, and the ``campaign/LearnedWorld-v0`` entry points that load it.

A simulator directory holds ``response_model/``, ``user_gan/`` and ``catalog.json`` (the
business's offers: category, value, discount, contact cost), as ``experiments.fit_simulator``
writes it. Every file is plain JSON or a ``state_dict`` loaded with ``weights_only=True``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from envs.campaign import CampaignConfig
from envs.campaign_env import CampaignEnv
from envs.learned_world import LearnedWorld
from envs.vector_env import CampaignVectorEnv
from envs.world import Catalog
from recsys.artifacts import atomic_write_json
from recsys.simulator.response_model import BaseResponseModel, load_response_model, save_response_model
from recsys.simulator.user_gan import UserGAN

CATALOG_FILE, RESPONSE_MODEL_DIR, USER_GAN_DIR = "catalog.json", "response_model", "user_gan"


def save_simulator(directory: str | Path, response_model: BaseResponseModel, user_gan: UserGAN, catalog: Catalog,
                   metrics: dict[str, Any] | None = None) -> Path:
    """Write the three parts (each atomically) and return ``directory``."""
    directory = Path(directory)
    save_response_model(response_model, directory / RESPONSE_MODEL_DIR, metrics)
    user_gan.save(directory / USER_GAN_DIR)
    atomic_write_json(directory / CATALOG_FILE, catalog.to_json())
    return directory


def load_simulator(directory: str | Path, n_users: int = 1) -> LearnedWorld:
    """The ``LearnedWorld`` of N users a simulator directory describes."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"simulator_dir: {directory} does not exist; run python -m experiments.fit_simulator")
    if not (directory / CATALOG_FILE).is_file():
        raise FileNotFoundError(f"{directory / CATALOG_FILE}: missing; the simulator directory is incomplete")
    try:
        catalog = Catalog.from_json(json.loads((directory / CATALOG_FILE).read_text()))
    except ValueError as exc:  # JSON syntax errors are ValueErrors too
        raise ValueError(f"{directory / CATALOG_FILE}: {str(exc).splitlines()[0]}") from None
    return LearnedWorld(load_response_model(directory / RESPONSE_MODEL_DIR), UserGAN.load(directory / USER_GAN_DIR),
                        catalog, n_users)


def make_learned_env(simulator_dir: str | Path, campaign: Any = None, **_: object) -> CampaignEnv:
    """Entry point of ``campaign/LearnedWorld-v0``: one user of a fitted simulator."""
    return CampaignEnv(world=load_simulator(simulator_dir, n_users=1), campaign=campaign)


def make_learned_vector_env(
    num_envs: int = 1, simulator_dir: str | Path = "", campaign: Any = None, autoreset_mode: str = "NextStep",
    **_: object,
) -> CampaignVectorEnv:
    """Vector entry point of ``campaign/LearnedWorld-v0``: N users in one batched env."""
    cc = campaign if isinstance(campaign, CampaignConfig) else CampaignConfig(**(campaign or {}))
    return CampaignVectorEnv(load_simulator(simulator_dir, n_users=num_envs), cc, autoreset_mode)
