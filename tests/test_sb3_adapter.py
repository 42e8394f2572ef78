"""The SB3 ``VecEnv`` adapter over the batched core: same-step autoreset with
``terminal_observation``, per-env action masks, and real SB3 / sb3-contrib training on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import VecMonitor

from envs import CampaignConfig, CampaignEnv, CampaignVectorEnv, TrueWorld
from envs.sb3 import SB3VecEnv

N = 8


def random_allowed(masks: np.ndarray, g: np.random.Generator) -> np.ndarray:
    k = (g.random(len(masks)) * masks.sum(axis=1)).astype(np.int64)
    return (masks.cumsum(axis=1) <= k[:, None]).sum(axis=1)


def make_venv(n: int = N, campaign: CampaignConfig | None = None, mode=AutoresetMode.NEXT_STEP) -> SB3VecEnv:
    return SB3VecEnv(CampaignVectorEnv(TrueWorld(n_users=n), campaign or CampaignConfig(), mode))


@pytest.fixture(autouse=True)
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_adapter_runs_the_core_in_same_step_mode():
    venv = make_venv(mode=AutoresetMode.NEXT_STEP)
    assert venv.core.autoreset_mode is AutoresetMode.SAME_STEP
    assert venv.num_envs == N and venv.action_space.n == venv.core.catalog.n_actions


@pytest.mark.parametrize("horizon", [5, 20])
def test_terminal_observation_exactly_on_done_envs_and_equal_to_the_final_obs(horizon):
    """Each SB3 slot i is replayed by a single env seeded seed + i that is reset exactly when
    SB3 reports done: the single env's last observation is the terminal observation, and its
    reset observation is what SB3 returns for the new episode."""
    seed, steps = 17, 60
    campaign = CampaignConfig(horizon=horizon)
    venv = make_venv(campaign=campaign)
    venv.seed(seed)
    obs = venv.reset()
    singles = [CampaignEnv(campaign=campaign) for _ in range(N)]
    for i, env in enumerate(singles):
        np.testing.assert_array_equal(env.reset(seed=seed + i)[0], obs[i])
    g = np.random.default_rng(seed)
    time_left = venv.core.layout.time_left
    n_done = 0
    for _ in range(steps):
        masks = np.stack(venv.env_method("action_masks"))
        actions = random_allowed(masks, g)
        obs, rewards, dones, infos = venv.step(actions)
        assert obs.shape == (N, venv.observation_space.shape[0]) and rewards.dtype == np.float32
        for i, env in enumerate(singles):
            o, r, terminated, truncated, info = env.step(actions[i])
            assert terminated == dones[i] and np.float32(r) == rewards[i]
            assert info["click"] == infos[i]["click"] and info["profit"] == infos[i]["profit"]
            if dones[i]:
                n_done += 1
                np.testing.assert_array_equal(infos[i]["terminal_observation"], o)
                assert infos[i]["TimeLimit.truncated"] is False
                assert obs[i][time_left] == 1.0  # a fresh episode
                np.testing.assert_array_equal(env.reset()[0], obs[i])
            else:
                assert "terminal_observation" not in infos[i]
                np.testing.assert_array_equal(o, obs[i])
    assert n_done >= N  # several episodes ended, on both churn and horizon


def test_action_masks_via_env_method_are_per_env_rows():
    venv = make_venv(campaign=CampaignConfig(frequency_cap=1))
    venv.seed(0)
    venv.reset()
    venv.step(np.arange(1, N + 1))  # every env uses up a different offer
    rows = venv.env_method("action_masks")
    assert len(rows) == N and all(r.shape == (venv.action_space.n,) for r in rows)
    np.testing.assert_array_equal(np.stack(rows), venv.core.action_masks())
    np.testing.assert_array_equal(np.stack(rows), venv.action_masks())
    for i, row in enumerate(rows):
        if not venv.core.done[i]:
            assert not row[i + 1]
    picked = venv.env_method("action_masks", indices=[2, 5])
    np.testing.assert_array_equal(np.stack(picked), venv.core.action_masks()[[2, 5]])


def test_vecenv_attributes_and_seeding():
    venv = make_venv()
    assert venv.get_attr("num_envs") == [N] * N
    assert venv.get_attr("num_envs", indices=[0, 1]) == [N, N]
    assert venv.env_is_wrapped(Monitor) == [False] * N
    venv.set_attr("render_mode", None)
    with pytest.raises(ValueError, match="set all envs at once"):
        venv.set_attr("render_mode", None, indices=[0])
    assert venv.seed(5) == [5 + i for i in range(N)]
    first = venv.reset()
    venv.seed(5)
    np.testing.assert_array_equal(venv.reset(), first)
    assert not np.array_equal(venv.reset(), first)  # unseeded reset: next users
    venv.close()


def test_vec_monitor_reports_episode_returns_equal_to_summed_rewards():
    venv = VecMonitor(make_venv(campaign=CampaignConfig(horizon=8)))
    venv.seed(1)
    venv.reset()
    g = np.random.default_rng(1)
    ret, length, episodes = np.zeros(N), np.zeros(N, dtype=int), 0
    for _ in range(40):
        actions = random_allowed(np.stack(venv.env_method("action_masks")), g)
        _, rewards, dones, infos = venv.step(actions)
        ret += rewards
        length += 1
        for i in np.flatnonzero(dones):
            # VecMonitor sums float32 rewards and rounds to 6 decimals
            assert infos[i]["episode"]["r"] == pytest.approx(ret[i], abs=1e-4)
            assert infos[i]["episode"]["l"] == length[i]
            ret[i], length[i] = 0.0, 0
            episodes += 1
    assert episodes >= N


def paired_returns(model, campaign: CampaignConfig, n_users: int = 2000, seed: int = 1_000_000) -> np.ndarray:
    """Return per user of ``model``'s sampled policy on fixed users (slot seeds ``seed ..``)
    with a fixed policy seed: two models evaluated this way face the same users and draws."""
    from agents.sb3.policy import SB3Policy

    env = CampaignVectorEnv(TrueWorld(n_users=n_users), campaign, AutoresetMode.DISABLED)
    policy = SB3Policy(model, "ppo", seed=0)
    obs, _ = env.reset(seed=seed)
    ret, done = np.zeros(n_users), np.zeros(n_users, dtype=bool)
    while not done.all():
        obs, reward, terminated, truncated, _ = env.step(policy.act(obs, env.action_masks()))
        ret += reward
        done |= terminated | truncated
    return ret


def test_ppo_learns_on_the_adapter():
    """8,192 steps of PPO on the adapter raise the return on held-out users by far more than the
    noise: the paired per-user difference (trained - untrained) has mean > 4 standard errors.
    (It is ~12 SE at seeds 0-2: the untrained policy sends offers at random, the trained one
    learns whom to send what; a broken adapter — wrong rewards, obs or dones — learns nothing.)"""
    from stable_baselines3 import PPO

    campaign = CampaignConfig(invalid_action="penalize")  # PPO ignores masks
    venv = SB3VecEnv(CampaignVectorEnv(TrueWorld(n_users=64), campaign))
    model = PPO("MlpPolicy", venv, n_steps=16, batch_size=256, n_epochs=5, learning_rate=1e-3, seed=0, device="cpu")
    before = paired_returns(model, campaign)
    model.learn(total_timesteps=8192)
    assert model.num_timesteps == 8192
    gain = paired_returns(model, campaign) - before
    standard_error = gain.std(ddof=1) / np.sqrt(len(gain))
    assert gain.mean() > 4 * standard_error, (gain.mean(), standard_error)


def test_maskable_ppo_learns_on_the_adapter_and_respects_masks():
    from sb3_contrib import MaskablePPO

    venv = make_venv(campaign=CampaignConfig(frequency_cap=1, budget=10.0))  # invalid_action="error"
    model = MaskablePPO("MlpPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=512)  # a masked action would raise ValueError in the core
    assert model.num_timesteps >= 512
    obs = venv.reset()
    masks = venv.action_masks()
    actions, _ = model.predict(obs, action_masks=masks)
    assert masks[np.arange(N), actions].all()


def test_reward_scale_scales_only_what_the_learner_sees_and_survives_resume(tmp_path):
    """``reward_scale`` in an agent's hyperparams (agents.sb3.algorithms.ScaledReward): the learner
    gets scaled rewards, the episode returns and infos keep real units, a resumed model keeps it."""
    from agents.sb3.algorithms import ScaledReward, build_agent, resume_from_checkpoint

    def env() -> CampaignVectorEnv:
        return CampaignVectorEnv(TrueWorld(n_users=N), CampaignConfig(invalid_action="penalize"))

    model = build_agent("dqn", env(), {"reward_scale": 0.1, "learning_starts": 16, "buffer_size": 1000}, [16], 0, None)
    assert isinstance(model.env, ScaledReward) and model.reward_scale == 0.1
    venv = model.env
    venv.seed(5)
    venv.reset()
    g = np.random.default_rng(0)
    for _ in range(30):
        _, reward, _, infos = venv.step(g.integers(0, venv.action_space.n, N))
        real = np.array([i["profit"] - venv.venv.venv.core.campaign.invalid_action_penalty * i["invalid_action"]
                         for i in infos], dtype=np.float32)
        np.testing.assert_allclose(reward, 0.1 * real, rtol=1e-5, atol=1e-6)
    model.learn(64)
    model.save(tmp_path / "dqn.zip")
    params = {"reward_scale": 0.1, "learning_starts": 16, "buffer_size": 1000}
    resumed = resume_from_checkpoint(build_agent("dqn", env(), params, [16], 0, None), tmp_path / "dqn.zip")
    assert isinstance(resumed.env, ScaledReward) and resumed.env.scale == 0.1
    assert resumed.num_timesteps == model.num_timesteps
    plain = build_agent("dqn", env(), {"learning_starts": 16, "buffer_size": 1000}, [16], 0, None)
    assert not isinstance(plain.env, ScaledReward) and plain.reward_scale == 1.0
    with pytest.raises(ValueError, match="reward_scale=0.1"):  # resumed with another config: refused
        resume_from_checkpoint(plain, tmp_path / "dqn.zip")


def test_policy_kwargs_reach_the_policy_beside_net_arch():
    """``hyperparams.policy_kwargs`` (e.g. the LSTM size conf/agent/recurrent_ppo.yaml sets) is
    merged with ``net_arch``, not replaced by it."""
    from agents.sb3.algorithms import build_agent

    env = CampaignVectorEnv(TrueWorld(n_users=4), CampaignConfig(invalid_action="penalize"))
    model = build_agent("recurrent_ppo", env, {"n_steps": 8, "batch_size": 32, "policy_kwargs": {"lstm_hidden_size": 8}},
                        [16], 0, None)
    assert model.policy.lstm_actor.hidden_size == 8
    assert model.policy.net_arch == [16]
