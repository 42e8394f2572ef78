"""The env contract: API checkers, batched == N single envs, autoreset modes, masks, budget,
caps, action validation, determinism, observation bounds and info consistency."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.vector import AutoresetMode
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs  # noqa: F401  (registers the campaign namespace)
from envs import CampaignConfig, CampaignEnv, CampaignVectorEnv, TrueWorld, TrueWorldConfig

_SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None)
_INFO_KEYS = ("click", "conversion", "revenue", "cost", "profit", "churned", "offer_sent", "invalid_action")
NO_CHURN = TrueWorldConfig(churn_base=-30.0, churn_rest=-30.0)  # users never leave: long episodes


def random_allowed(masks: np.ndarray, g: np.random.Generator) -> np.ndarray:
    """One uniformly chosen allowed action per row of ``masks`` (vectorised, cheap)."""
    k = (g.random(len(masks)) * masks.sum(axis=1)).astype(np.int64)  # pick the k-th allowed
    return (masks.cumsum(axis=1) <= k[:, None]).sum(axis=1)


def vec_env(n: int, campaign: CampaignConfig | None = None, mode=AutoresetMode.NEXT_STEP, world=None):
    return CampaignVectorEnv(TrueWorld(world or TrueWorldConfig(), n_users=n), campaign or CampaignConfig(), mode)


def run(env: CampaignVectorEnv, seed: int, steps: int, policy_seed: int = 0):
    """Trajectory of ``steps`` random allowed actions: list of (obs, reward, terminated, info)."""
    g = np.random.default_rng(policy_seed)
    obs, _ = env.reset(seed=seed)
    out = [(obs, None, None, None)]
    for _ in range(steps):
        obs, reward, terminated, _, info = env.step(random_allowed(env.action_masks(), g))
        out.append((obs, reward, terminated, info))
    return out


# ------------------------------------------------------------------ API checkers
def test_gymnasium_checker_passes_without_warnings():
    env = gym.make("campaign/TrueWorld-v0")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []


def test_sb3_checker_passes_without_warnings():
    env = CampaignEnv(campaign={"invalid_action": "penalize"})  # the checker sends random actions
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb3_check_env(env, warn=True)
    assert [str(w.message) for w in caught] == []


def test_make_and_make_vec_build_the_registered_envs():
    single = gym.make("campaign/TrueWorld-v0", campaign={"horizon": 5})
    assert single.unwrapped.core.campaign.horizon == 5
    vec = gym.make_vec("campaign/TrueWorld-v0", num_envs=4, vectorization_mode="vector_entry_point")
    assert isinstance(vec, CampaignVectorEnv) and vec.num_envs == 4
    assert vec.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (4, vec.single_observation_space.shape[0])


# ------------------------------------------------------------------ batched == N single envs
@pytest.mark.parametrize("seed, horizon", [(0, 6), (123, 20)])
def test_batched_env_equals_n_single_envs_with_next_step_autoreset(seed, horizon):
    n, steps = 8, 70
    campaign = CampaignConfig(horizon=horizon)
    vec = vec_env(n, campaign)  # NEXT_STEP
    singles = [CampaignEnv(campaign=campaign) for _ in range(n)]
    obs, _ = vec.reset(seed=seed)
    for i, env in enumerate(singles):
        o, _ = env.reset(seed=seed + i)
        np.testing.assert_array_equal(o, obs[i])
    g = np.random.default_rng(seed)
    resetting = np.zeros(n, dtype=bool)  # slots that terminated last step
    episodes, churned = np.zeros(n, dtype=int), 0
    for _ in range(steps):
        masks = vec.action_masks()
        for i, env in enumerate(singles):
            np.testing.assert_array_equal(env.action_masks(), masks[i])
        actions = random_allowed(masks, g)
        obs, reward, terminated, truncated, info = vec.step(actions)
        assert not truncated.any()
        for i, env in enumerate(singles):
            if resetting[i]:  # NEXT_STEP: this step resets the slot and ignores its action
                o, _ = env.reset()
                r, term = 0.0, False
                assert not info["active"][i] and not info["offer_sent"][i]
            else:
                o, r, term, _, single_info = env.step(actions[i])
                assert info["active"][i]
                for key in _INFO_KEYS:
                    assert single_info[key] == info[key][i], (key, i)
            np.testing.assert_array_equal(o, obs[i])
            assert r == reward[i] and term == terminated[i]
        churned += int((terminated & info["churned"]).sum())
        resetting = terminated
        episodes += terminated
    assert episodes.min() >= 2, "every slot should finish several episodes"
    assert churned > 0


def test_slot_draws_do_not_depend_on_the_batch():
    # slot i of a batch seeded s meets the user of slot 0 of a batch seeded s + i
    big, small = vec_env(16), vec_env(1)
    big_obs, _ = big.reset(seed=50)
    small_obs, _ = small.reset(seed=57)
    np.testing.assert_array_equal(big_obs[7], small_obs[0])
    assert big.user_keys[7] == small.user_keys[0]


# ------------------------------------------------------------------ autoreset modes
def _until_some_terminate(env, g, max_steps=100):
    for _ in range(max_steps):
        actions = random_allowed(env.action_masks(), g)
        obs, reward, terminated, truncated, info = env.step(actions)
        if terminated.any() and not terminated.all():
            return obs, reward, terminated, info
    raise AssertionError("no episode ended")


def _fresh(obs_row, env) -> bool:
    lay = env.layout
    return (
        obs_row[lay.time_left] == 1.0 and obs_row[lay.budget_left] == 1.0
        and not obs_row[lay.offer_exposure].any() and not obs_row[lay.sends].any()
    )


def test_next_step_autoreset_resets_on_the_following_step_and_ignores_the_action():
    env = vec_env(16)
    env.reset(seed=3)
    g = np.random.default_rng(3)
    _, _, done, _ = _until_some_terminate(env, g)
    assert np.array_equal(env.done, done)
    actions = np.ones(16, dtype=np.int64)  # offer 0 for everyone, allowed at the start of an episode
    obs, reward, terminated, truncated, info = env.step(actions)
    assert np.all(reward[done] == 0.0) and not terminated[done].any() and not truncated[done].any()
    assert not info["offer_sent"][done].any() and not info["active"][done].any()
    assert all(_fresh(obs[i], env) for i in np.flatnonzero(done))
    assert np.all(env.steps[done] == 0)  # the ignored action did not count as a step
    # the reset user is the next episode of that slot: what a single env seeded the same sees
    i = int(np.flatnonzero(done)[0])
    single = CampaignEnv()
    single.reset(seed=3 + i)
    np.testing.assert_array_equal(single.reset()[0], obs[i])
    # still-running slots acted as usual
    running = ~done & ~terminated
    assert np.all(info["active"][~done])
    assert np.all(env.steps[running] >= 2)


def test_same_step_autoreset_returns_final_obs_and_the_new_first_obs():
    n, seed = 16, 4
    same = vec_env(n, mode=AutoresetMode.SAME_STEP)
    nxt = vec_env(n, mode=AutoresetMode.NEXT_STEP)
    same.reset(seed=seed)
    nxt.reset(seed=seed)
    g = np.random.default_rng(seed)
    saw_final = False
    for _ in range(12):  # until the first episodes end the two modes are in lockstep
        actions = random_allowed(same.action_masks(), g)
        o_same, r_same, t_same, _, i_same = same.step(actions)
        o_next, r_next, t_next, _, _ = nxt.step(actions)
        np.testing.assert_array_equal(r_same, r_next)
        np.testing.assert_array_equal(t_same, t_next)
        if not t_same.any():
            assert "final_obs" not in i_same and "_final_obs" not in i_same
            np.testing.assert_array_equal(o_same, o_next)
            continue
        saw_final = True
        np.testing.assert_array_equal(i_same["_final_obs"], t_same)
        np.testing.assert_array_equal(i_same["final_obs"][t_same], o_next[t_same])
        np.testing.assert_array_equal(o_same[~t_same], o_next[~t_same])
        assert all(_fresh(o_same[i], same) for i in np.flatnonzero(t_same))
        assert not same.done.any()
        # the new first obs is what the NEXT_STEP env shows one step later
        o_after, *_ = nxt.step(actions)
        np.testing.assert_array_equal(o_same[t_same], o_after[t_same])
        break
    assert saw_final


def test_disabled_autoreset_keeps_finished_users_finished_until_reset_mask():
    n = 16
    env = vec_env(n, mode=AutoresetMode.DISABLED)
    env.reset(seed=5)
    g = np.random.default_rng(5)
    last_obs, _, done, _ = _until_some_terminate(env, g)
    for _ in range(3):
        obs, reward, terminated, _, info = env.step(random_allowed(env.action_masks(), g))
        assert np.all(reward[done] == 0.0) and np.all(terminated[done])
        assert not info["active"][done].any() and not info["offer_sent"][done].any()
        np.testing.assert_array_equal(obs[done], last_obs[done])
        assert env.done[done].all()
    before = obs.copy()
    steps_before = env.steps
    obs, _ = env.reset(options={"reset_mask": done})
    assert all(_fresh(obs[i], env) for i in np.flatnonzero(done))
    np.testing.assert_array_equal(obs[~done], before[~done])  # others untouched
    np.testing.assert_array_equal(env.steps[~done], steps_before[~done])
    assert not env.done[done].any()
    obs, reward, terminated, _, info = env.step(np.ones(n, dtype=np.int64) * ~env.done)
    assert info["active"][done].all()
    with pytest.raises(ValueError, match=r"reset_mask.*expected shape \(16,\)"):
        env.reset(options={"reset_mask": np.ones(3, dtype=bool)})


# ------------------------------------------------------------------ masks, budget, caps
def test_masked_action_raises_naming_the_index_and_leaves_the_env_untouched():
    campaign = CampaignConfig(frequency_cap=1)
    env = vec_env(4, campaign, world=NO_CHURN)
    twin = vec_env(4, campaign, world=NO_CHURN)
    env.reset(seed=9)
    twin.reset(seed=9)
    first = np.array([0, 0, 3, 0])
    env.step(first)
    twin.step(first)
    assert not env.action_masks()[2, 3]
    with pytest.raises(ValueError, match=r"actions\[2\]: action 3 \(offer 2\) is masked \(frequency cap reached\)"):
        env.step(np.array([0, 0, 3, 0]))
    # the failed step changed nothing: both envs continue identically
    a = np.array([1, 2, 0, 4])
    np.testing.assert_array_equal(env.step(a)[0], twin.step(a)[0])


def test_budget_mask_raises_when_worst_case_cost_exceeds_budget():
    env = vec_env(2, CampaignConfig(budget=1.0), world=NO_CHURN)
    env.reset(seed=0)
    worst = env.catalog.worst_case_cost()
    masks = env.action_masks()
    assert np.array_equal(masks[0], worst <= 1.0 + 1e-9)
    blocked = int(np.flatnonzero(~masks[1])[0])
    with pytest.raises(ValueError, match=rf"actions\[1\]: action {blocked} \(offer {blocked - 1}\) is masked \(worst-case cost"):
        env.step(np.array([0, blocked]))


def test_penalize_replaces_masked_action_by_no_offer_and_subtracts_the_penalty():
    penalty = 2.5
    campaign = CampaignConfig(frequency_cap=1, invalid_action="penalize", invalid_action_penalty=penalty)
    env, twin = vec_env(4, campaign, world=NO_CHURN), vec_env(4, campaign, world=NO_CHURN)
    env.reset(seed=11)
    twin.reset(seed=11)
    a = np.array([2, 3, 4, 5])
    env.step(a)
    twin.step(a)
    masked = np.array([2, 3, 1, 0])  # slots 0 and 1 repeat a capped offer
    obs, reward, _, _, info = env.step(masked)
    obs_t, reward_t, _, _, info_t = twin.step(np.array([0, 0, 1, 0]))  # what actually happens
    np.testing.assert_array_equal(info["invalid_action"], [True, True, False, False])
    np.testing.assert_array_equal(info["offer_sent"], [False, False, True, False])
    np.testing.assert_array_equal(obs, obs_t)
    np.testing.assert_allclose(reward, reward_t - penalty * info["invalid_action"], rtol=0, atol=1e-12)
    assert np.array_equal(env.world.offer_fatigue, twin.world.offer_fatigue)


@_SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    budget=st.floats(1.0, 60.0),
    cap=st.integers(1, 4),
    horizon=st.integers(1, 25),
    reward=st.sampled_from(["click", "conversion", "profit", "weighted"]),
    penalize=st.booleans(),
    p_any=st.floats(0.0, 0.5),
)
def test_trajectory_invariants(seed, budget, cap, horizon, reward, penalize, p_any):
    """Budget never negative nor exceeded, cap never exceeded, masked actions never executed,
    observations inside the space, info consistent. With ``penalize`` the policy sends any
    action (masked or not) with probability ``p_any``."""
    n, penalty = 16, 0.7
    campaign = CampaignConfig(
        horizon=horizon, budget=budget, frequency_cap=cap, reward=reward,
        reward_weights={"click": 0.5, "conversion": 2.0, "profit": 0.1},
        invalid_action="penalize" if penalize else "error", invalid_action_penalty=penalty,
    )
    env = vec_env(n, campaign, mode=AutoresetMode.DISABLED)
    g = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    worst = env.catalog.worst_case_cost()
    spent, sends = np.zeros(n), np.zeros((n, env.catalog.n_offers), dtype=int)
    w_click, w_conv, w_profit = campaign.weights()
    while not env.done.all():
        assert env.observation_space.contains(obs)
        masks = env.action_masks()
        actions = random_allowed(masks, g)
        if penalize:
            anything = g.random(n) < p_any
            actions = np.where(anything, g.integers(0, env.catalog.n_actions, n), actions)
        was_active = ~env.done
        obs, rew, terminated, _, info = env.step(actions)
        allowed = masks[np.arange(n), actions]
        sent, click, conv = info["offer_sent"], info["click"], info["conversion"]
        np.testing.assert_array_equal(info["active"], was_active)
        np.testing.assert_array_equal(sent, was_active & allowed & (actions > 0))  # masked never sent
        np.testing.assert_array_equal(info["invalid_action"], was_active & ~allowed)
        assert not (conv & ~click).any() and not (click & ~sent).any()
        assert not click[actions == 0].any()
        np.testing.assert_array_equal(info["profit"], info["revenue"] - info["cost"])
        assert np.all(info["cost"] <= worst[np.where(sent, actions, 0)] + 1e-12)
        assert np.all(info["cost"] >= 0)
        expected = w_click * click + w_conv * conv + w_profit * info["profit"] - penalty * info["invalid_action"]
        np.testing.assert_allclose(rew, np.where(was_active, expected, 0.0), rtol=0, atol=1e-9)
        spent += info["cost"]
        sends[np.flatnonzero(sent), actions[sent] - 1] += 1
        assert np.all(env.budget_left >= 0.0) and np.all(spent <= budget + 1e-9)
        np.testing.assert_allclose(env.budget_left, budget - spent, rtol=0, atol=1e-9)
        assert sends.max(initial=0) <= cap
        assert np.all(env.steps <= horizon)
    assert env.observation_space.contains(obs)


# ------------------------------------------------------------------ action validation
@pytest.mark.parametrize(
    "action, message",
    [
        (-1, r"actions\[0\]: got -1, expected an integer in \[0, 24\]"),
        (25, r"actions\[0\]: got 25, expected an integer in \[0, 24\]"),
        (2.5, r"actions: expected integers in \[0, 24\], got float64"),
        (float("nan"), r"actions: expected integers in \[0, 24\]"),
        ("3", r"actions: expected integers in \[0, 24\], got dtype <U1"),
        (None, r"actions: expected integers in \[0, 24\], got dtype object"),
        (np.array([1, 2]), r"action: expected a single integer, got shape \(2,\)"),
        (np.zeros((2, 2), dtype=int), r"action: expected a single integer, got shape \(2, 2\)"),
    ],
)
def test_single_env_rejects_bad_actions_with_a_clear_message(action, message):
    env = CampaignEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.step(action)


@pytest.mark.parametrize(
    "actions, message",
    [
        (np.array([0, 1, -1]), r"actions\[2\]: got -1"),
        (np.array([0, 25, 0]), r"actions\[1\]: got 25"),
        (np.array([0, 2.5, 1]), r"actions: expected integers"),
        (np.array([0, 1]), r"actions: expected shape \(3,\), got \(2,\)"),
        (np.zeros((3, 2), dtype=int), r"actions: expected shape \(3,\), got \(3, 2\)"),
    ],
)
def test_vector_env_rejects_bad_actions_with_a_clear_message(actions, message):
    env = vec_env(3)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.step(actions)


def test_integer_valued_actions_of_other_dtypes_are_accepted():
    a, b = vec_env(3), vec_env(3)
    a.reset(seed=1)
    b.reset(seed=1)
    np.testing.assert_array_equal(a.step(np.array([0.0, 1.0, 2.0]))[0], b.step(np.array([0, 1, 2], dtype=np.uint8))[0])


# ------------------------------------------------------------------ determinism
def _flatten(trajectory):
    parts = [trajectory[0][0].ravel()]
    for obs, reward, terminated, info in trajectory[1:]:
        parts += [obs.ravel(), reward, terminated] + [np.asarray(info[k], dtype=float) for k in _INFO_KEYS]
    return np.concatenate([np.asarray(p, dtype=float) for p in parts])


_SHARED: dict[str, CampaignVectorEnv] = {}


@_SETTINGS
@given(seed=st.integers(0, 2**40), policy_seed=st.integers(0, 2**31 - 1))
def test_same_seed_same_trajectory_different_seed_different(seed, policy_seed):
    # one env reused across examples: reset(seed=...) must also wipe whatever came before
    if "env" not in _SHARED:
        _SHARED["env"] = vec_env(4)
    env = _SHARED["env"]
    a = _flatten(run(env, seed, 15, policy_seed))
    c = _flatten(run(env, seed + 4, 15, policy_seed))  # disjoint slot seeds
    b = _flatten(run(env, seed, 15, policy_seed))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_fresh_and_reused_envs_give_the_same_trajectory():
    reused = vec_env(4)
    run(reused, 99, 30, 1)
    np.testing.assert_array_equal(_flatten(run(reused, 5, 15, 2)), _flatten(run(vec_env(4), 5, 15, 2)))


def test_unseeded_resets_draw_fresh_users_and_reseeding_replays():
    a, b = vec_env(4), vec_env(4)
    obs_a, _ = a.reset()
    obs_b, _ = b.reset()
    assert not np.array_equal(obs_a, obs_b)
    single = CampaignEnv()
    first, _ = single.reset(seed=21)
    second, _ = single.reset()  # next episode of the same slot: a new user
    again, _ = single.reset(seed=21)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, again)


def test_reset_validates_seed_shape():
    env = vec_env(3)
    with pytest.raises(ValueError, match=r"seed: expected an int or 3 ints, got shape \(2,\)"):
        env.reset(seed=[1, 2])
    obs, _ = env.reset(seed=[7, 8, 9])
    obs2, _ = vec_env(3).reset(seed=7)
    np.testing.assert_array_equal(obs, obs2)


def test_single_env_info_has_python_scalars():
    env = CampaignEnv()
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(1)
    assert obs.dtype == np.float32 and isinstance(reward, float)
    assert isinstance(terminated, bool) and isinstance(truncated, bool)
    assert set(_INFO_KEYS) <= set(info) and all(np.isscalar(v) for v in info.values())


def test_fast_allowed_check_agrees_with_action_masks() -> None:
    """``step`` checks actions with ``_allowed`` (no full mask); it must be the mask's rule:
    every action, for users at every stage of caps and budget."""
    env = CampaignVectorEnv(TrueWorld(TrueWorldConfig(), n_users=64), CampaignConfig(budget=6.0, frequency_cap=1),
                            AutoresetMode.DISABLED)
    env.reset(seed=3)
    g = np.random.default_rng(0)
    rows = np.arange(env.num_envs)
    while not env.done.all():
        masks = env.action_masks()
        for a in range(env.catalog.n_actions):
            actions = np.full(env.num_envs, a, dtype=np.int64)
            np.testing.assert_array_equal(env._allowed(actions), masks[rows, actions])
        env.step(random_allowed(masks, g))
