"""Sharded evaluation (experiment.evaluation.shards) equals the unsharded run exactly, for
stochastic, online-learning and torch policies, in TrueWorld and in a LearnedWorld."""

from __future__ import annotations

import numpy as np
import pytest

from agents.bandits import EpsilonGreedyBandit
from agents.reference import GreedyHeuristicPolicy, LoggingPolicy, RandomPolicy
from benchmarks.throughput import _learned_world_factory
from envs.campaign import CampaignConfig
from envs.true_world import TrueWorld, TrueWorldConfig
from experiments.collect import EpisodeStats, make_env_factory
from experiments.config import EvaluationConfig
from experiments.evaluate import shard_ranges, sharded_rollouts

N_USERS, BATCH = 300, 64  # 5 batches: shards cut between them


def _assert_identical(a: dict[str, EpisodeStats], b: dict[str, EpisodeStats]) -> None:
    assert list(a) == list(b)
    for name in a:
        for field in EpisodeStats.__dataclass_fields__:
            assert np.array_equal(getattr(a[name], field), getattr(b[name], field)), (name, field)


def test_shard_ranges_are_contiguous_and_cut_at_batch_boundaries():
    assert shard_ranges(300, 3, 64) == [(0, 128), (128, 256), (256, 300)]
    assert shard_ranges(300, 10, 64) == [(0, 64), (64, 128), (128, 192), (192, 256), (256, 300)]
    assert shard_ranges(100, 4, 4096) == [(0, 100)]
    with pytest.raises(ValueError, match="experiment.evaluation.shards: must be >= 1"):
        EvaluationConfig(shards=0)


def test_sharded_local_processes_equal_the_unsharded_run():
    roster = {"random": lambda env: RandomPolicy(env.catalog.n_actions, seed=3), "logging": LoggingPolicy,
              "greedy": GreedyHeuristicPolicy,
              "epsilon_greedy": lambda env: EpsilonGreedyBandit.for_env(env, seed=0)}  # learns within a batch
    worlds = {"true": lambda n: TrueWorld(TrueWorldConfig(), n_users=n),
              "learned": _learned_world_factory(None, TrueWorldConfig())}
    for world, factory in worlds.items():
        make_env = make_env_factory(factory, CampaignConfig())
        whole = sharded_rollouts(make_env, roster, N_USERS, seed=1000, shards=1, batch_size=BATCH)
        sharded = sharded_rollouts(make_env, roster, N_USERS, seed=1000, shards=3, batch_size=BATCH)
        _assert_identical(whole, sharded)
        assert whole["random"].length.sum() > N_USERS, world  # real episodes, not empty ones


@pytest.mark.slow  # Ray start-up and shutdown: ~20 s on 2 shared cores
def test_sharded_ray_tasks_equal_the_unsharded_run():
    ray = pytest.importorskip("ray")
    make_env = make_env_factory(lambda n: TrueWorld(TrueWorldConfig(), n_users=n), CampaignConfig())
    roster = {"random": lambda env: RandomPolicy(env.catalog.n_actions, seed=3), "greedy": GreedyHeuristicPolicy}
    whole = sharded_rollouts(make_env, roster, N_USERS, seed=7, shards=1, batch_size=BATCH)
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        _assert_identical(whole, sharded_rollouts(make_env, roster, N_USERS, seed=7, shards=2, batch_size=BATCH))
    finally:
        ray.shutdown()
