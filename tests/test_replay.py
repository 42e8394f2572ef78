"""Replaying logs rebuilds exactly the observations the logging policy acted on."""

import numpy as np
import pytest

from agents.reference import LoggingPolicy
from envs.campaign import CampaignConfig
from envs.true_world import TrueWorld, TrueWorldConfig
from experiments.collect import generate_logs, make_env_factory
from recsys.data.replay import replay_observations
from recsys.data.sequences import sequences_from_logs


def test_replayed_observations_reproduce_the_logged_propensities_exactly():
    world = TrueWorld(TrueWorldConfig())
    make_env = make_env_factory(lambda n: TrueWorld(TrueWorldConfig(), n), CampaignConfig())
    data = sequences_from_logs(generate_logs(make_env, lambda e: LoggingPolicy(e), n_users=300, seed=5))
    obs, masks = replay_observations(data, world.catalog, world.profile_schema)
    logged = data.mask
    probs = LoggingPolicy(make_env(1)).action_probs(obs[logged], masks[logged])
    # propensities depend on the whole observation and the masks: any replay error shows here
    np.testing.assert_array_equal(probs[np.arange(logged.sum()), data.actions[logged]], data.propensity[logged])
    assert masks[logged][np.arange(logged.sum()), data.actions[logged]].all()
    assert not obs[~logged].any()


def test_replay_rejects_logs_longer_than_the_campaign():
    world = TrueWorld(TrueWorldConfig())
    make_env = make_env_factory(lambda n: TrueWorld(TrueWorldConfig(), n), CampaignConfig())
    data = sequences_from_logs(generate_logs(make_env, lambda e: LoggingPolicy(e), n_users=50, seed=0))
    with pytest.raises(ValueError, match="campaign.horizon"):
        replay_observations(data, world.catalog, world.profile_schema, CampaignConfig(horizon=2))
