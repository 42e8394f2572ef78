"""experiments.fidelity.repeat_probe: "always send offer k" in both worlds on the same users,
learned / true clicks per offer (the off-log check of the simulator)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from envs.campaign import CampaignConfig
from envs.true_world import TrueWorld, TrueWorldConfig
from experiments.collect import make_env_factory
from experiments.fidelity import repeat_probe


def _env(config: TrueWorldConfig):
    return make_env_factory(lambda n: TrueWorld(config, n), CampaignConfig())


def test_the_world_against_itself_gives_ratio_one_for_every_offer():
    world = TrueWorldConfig()
    n_actions = TrueWorld(world).catalog.n_actions
    out = repeat_probe(_env(world), _env(world), n_actions, n_users=300, seed=5)
    assert out["offers"] == list(range(1, n_actions))
    np.testing.assert_array_equal(out["ratio"], np.ones(n_actions - 1))  # same users, same coin flips
    assert out["median_ratio"] == 1.0 and out["mean_abs_log_ratio"] == 0.0
    assert min(out["true_clicks"]) > 0


def test_a_world_without_fatigue_is_caught_overrating_repeated_offers():
    """The bias the probe exists for: a simulator that forgets fatigue gives repeated offers more
    clicks than the world (TrueWorld with its fatigue switched off plays that simulator)."""
    world = TrueWorldConfig()
    tireless = replace(world, fatigue_offer=0.0, fatigue_category=0.0)
    out = repeat_probe(_env(world), _env(tireless), TrueWorld(world).catalog.n_actions, n_users=300, seed=5)
    assert min(out["ratio"]) > 1.0 and out["median_ratio"] > 1.2
