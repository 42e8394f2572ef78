"""Minimal API checks; the full env suite is in test_envs.py."""

import gymnasium as gym
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the campaign namespace)


def test_trueworld_registered_and_passes_gymnasium_checker():
    env = gym.make("campaign/TrueWorld-v0")
    check_env(env.unwrapped)
