"""The learned simulator: response model artifacts, LearnedWorld as a Gymnasium env, errors."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs  # noqa: F401  (registers the ids)
from envs.campaign import CampaignConfig
from envs.learned_world import LearnedWorld
from envs.true_world import TrueWorld, TrueWorldConfig
from envs.vector_env import CampaignVectorEnv
from experiments.fidelity import paired_auc_difference
from recsys.data.profiles import profiles_from_logs
from recsys.simulator.io import CATALOG_FILE, load_simulator
from recsys.simulator.response_model import (
    LogisticResponseModel,
    ResponseModel,
    ResponseModelConfig,
    fit_response_model,
    load_response_model,
    predict,
    predict_all_actions,
    save_response_model,
)
from recsys.simulator.user_gan import UserGANConfig, fit_user_gan
from recsys.stats import expected_calibration_error as ece_vs_truth

TINY_MODEL = ResponseModelConfig(epochs=3, patience=2, hidden_dim=16, embed_dim=8)
CATEGORY = TrueWorld(TrueWorldConfig()).catalog.category  # the logs' catalog (category sharing reads it)


@pytest.fixture(scope="module")
def data(logged_splits):
    return logged_splits(1500)


@pytest.fixture(scope="module")
def simulator_dir(data, tmp_path_factory):
    logs, train, validation, _ = data
    out = tmp_path_factory.mktemp("sim")
    save_response_model(fit_response_model(train, validation, TINY_MODEL, progress=False, offer_category=CATEGORY),
                        out / "response_model")
    gan = fit_user_gan(profiles_from_logs(logs), UserGANConfig(steps=20, batch_size=100), progress=False)
    gan.save(out / "user_gan")
    (out / CATALOG_FILE).write_text(json.dumps(TrueWorld(TrueWorldConfig()).catalog.to_json()))
    return out


def test_sequences_keep_every_logged_row(data):
    logs, train, validation, test = data
    assert train.mask.sum() + validation.mask.sum() + test.mask.sum() == logs.num_rows
    assert not set(train.user_ids) & set(test.user_ids)


def test_training_beats_an_untrained_model_and_artifact_round_trips(data, tmp_path):
    _, train, validation, test = data
    model = fit_response_model(train, validation, TINY_MODEL, progress=False, offer_category=CATEGORY)
    untrained = fit_response_model(train, validation, replace(TINY_MODEL, epochs=1, lr=1e-9, calibrate=False),
                                   progress=False, offer_category=CATEGORY)
    exposed = test.mask & (test.actions > 0)

    def nll(p):
        q = np.clip(p["click"][exposed], 1e-6, 1 - 1e-6)
        y = test.click[exposed]
        return -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))

    assert nll(predict(model, test)) < nll(predict(untrained, test)) - 0.05
    save_response_model(model, tmp_path / "rm", {"note": 1})
    state = torch.load(tmp_path / "rm" / "model.pt", weights_only=True)
    assert "heads.weight" in state
    again = load_response_model(tmp_path / "rm")
    np.testing.assert_array_equal(predict(model, test)["click"], predict(again, test)["click"])
    assert not list((tmp_path / "rm").glob("*.tmp"))


def test_logistic_response_model_is_its_own_class_and_round_trips(data, tmp_path):
    """``history_encoder="logistic"`` builds LogisticResponseModel (no history: the step-by-step
    state stays None), and save/load gives it back with the same probabilities."""
    _, train, validation, test = data
    model = fit_response_model(train, validation, replace(TINY_MODEL, history_encoder="logistic"), progress=False)
    assert type(model) is LogisticResponseModel and not isinstance(model, ResponseModel)
    save_response_model(model, tmp_path / "rm")
    again = load_response_model(tmp_path / "rm")
    assert type(again) is LogisticResponseModel and again.spec == model.spec
    for fn in (predict, predict_all_actions):
        for key, p in fn(model, test).items():
            np.testing.assert_array_equal(p, fn(again, test)[key], err_msg=key)
    u, state = again.initial_state(torch.as_tensor(test.profile_cat[:5]),
                                   torch.as_tensor(test.profile_num[:5], dtype=torch.float32))
    actions = torch.as_tensor(test.actions[:5, 0])
    assert state is None and again.advance(state, actions, torch.ones(5), torch.zeros(5)) is None
    with torch.no_grad():
        step = torch.sigmoid(again.step_logits(u, state, actions)).double().numpy()
    np.testing.assert_allclose(step[:, 0], predict(again, test.subset(np.arange(5)))["click"][:, 0], rtol=1e-6)


def test_category_sharing_ties_offers_of_a_category_and_round_trips(data, tmp_path):
    """With ``category_sharing`` an action's history embedding and head rows are its category's
    plus its own: with the offers' own parts zeroed, two offers of one category score and advance
    alike while offers of different categories do not (catches a mis-indexed category row)."""
    _, train, validation, test = data
    category = CATEGORY
    assert TINY_MODEL.category_sharing  # the default
    with pytest.raises(ValueError, match="category_sharing: the data spec has no action categories"):
        fit_response_model(train, validation, TINY_MODEL, progress=False)
    model = fit_response_model(train, validation, TINY_MODEL, progress=False, offer_category=category)
    assert model.spec.action_category == [0, *(category + 1).tolist()]
    save_response_model(model, tmp_path / "rm")
    np.testing.assert_array_equal(predict(model, test)["click"], predict(load_response_model(tmp_path / "rm"), test)["click"])
    with torch.no_grad():
        for p in (model.heads.weight, model.heads.bias, model.event_action.weight):
            p.zero_()
    same = [a + 1 for a in range(len(category)) if category[a] == category[0]][:2]
    other = 1 + int(np.flatnonzero(category != category[0])[0])
    assert len(same) == 2, "the default catalog has two offers in offer 0's category"
    n = 8
    cat = torch.as_tensor(test.profile_cat[:n])
    num = torch.as_tensor(test.profile_num[:n], dtype=torch.float32)
    with torch.no_grad():
        u, h = model.initial_state(cat, num)

        def after(action: int) -> tuple[torch.Tensor, torch.Tensor]:
            a = torch.full((n,), action)
            after = model.advance(h, a, torch.ones(n), torch.zeros(n))
            return model.step_logits(u, h, a), after["history"]  # the exposure counts are per offer by design

        (l0, h0), (l1, h1), (l2, h2) = after(same[0]), after(same[1]), after(other)
    torch.testing.assert_close(l0, l1)
    torch.testing.assert_close(h0, h1)
    assert not torch.allclose(l0, l2) and not torch.allclose(h0, h2)
    with pytest.raises(ValueError, match="catalog.category: 3 offers, but the logs have"):
        fit_response_model(train, validation, TINY_MODEL, progress=False, offer_category=category[:3])
    # a directory from before category sharing (no such field, no action categories) loads as it was saved
    plain = fit_response_model(train, validation, replace(TINY_MODEL, category_sharing=False), progress=False)
    save_response_model(plain, tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "config.json").read_text())
    del meta["model"]["category_sharing"], meta["data"]["action_category"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(meta))
    old = load_response_model(tmp_path / "old")
    assert not old.config.category_sharing
    np.testing.assert_array_equal(predict(old, test)["click"], predict(plain, test)["click"])


def test_missing_or_corrupt_artifacts_fail_with_the_file_name(simulator_dir, tmp_path):
    broken = tmp_path / "sim"
    shutil.copytree(simulator_dir, broken)
    (broken / "response_model" / "model.pt").unlink()
    with pytest.raises(FileNotFoundError, match="model.pt"):
        load_simulator(broken)
    with pytest.raises(FileNotFoundError, match="simulator_dir"):
        load_simulator(tmp_path / "nowhere")
    (broken / "response_model" / "model.pt").write_bytes(b"not a model")
    with pytest.raises(Exception, match="response_model"):
        load_simulator(broken)


def test_artifact_from_another_catalog_size_is_rejected(simulator_dir, tmp_path):
    other = tmp_path / "sim"
    shutil.copytree(simulator_dir, other)
    small = TrueWorld(TrueWorldConfig(n_offers=10)).catalog
    (other / CATALOG_FILE).write_text(json.dumps(small.to_json()))
    with pytest.raises(ValueError, match="trained for 24 offers but the catalog has 10"):
        load_simulator(other)


def test_learned_world_passes_both_env_checkers(simulator_dir):
    env = gym.make("campaign/LearnedWorld-v0", simulator_dir=str(simulator_dir))
    check_env(env.unwrapped)
    sb3_check_env(env.unwrapped)


def test_batched_learned_world_equals_single_envs(simulator_dir):
    """N users in one batched env follow the trajectories of N single envs with seeds s + i."""
    n, seed, steps = 6, 11, 25
    base = load_simulator(simulator_dir, n_users=1)
    batched = CampaignVectorEnv(LearnedWorld(base.model, base.sampler, base.catalog, n), CampaignConfig(),
                                AutoresetMode.DISABLED)
    singles = [CampaignVectorEnv(LearnedWorld(base.model, base.sampler, base.catalog, 1), CampaignConfig(),
                                 AutoresetMode.DISABLED) for _ in range(n)]
    obs, _ = batched.reset(seed=seed)
    single_obs = np.concatenate([e.reset(seed=seed + i)[0] for i, e in enumerate(singles)])
    np.testing.assert_allclose(obs, single_obs, atol=1e-6)
    gen = np.random.default_rng(0)
    for _ in range(steps):
        masks = batched.action_masks()
        actions = np.array([gen.choice(np.flatnonzero(m)) for m in masks])
        obs, reward, term, _, info = batched.step(actions)
        outs = [e.step(actions[i:i + 1]) for i, e in enumerate(singles)]
        np.testing.assert_allclose(obs, np.concatenate([o[0] for o in outs]), atol=1e-5)
        np.testing.assert_array_equal(term, np.concatenate([o[2] for o in outs]))
        np.testing.assert_array_equal(info["click"], np.concatenate([o[4]["click"] for o in outs]))


class _DrawOnArrival(LearnedWorld):
    """A LearnedWorld that cannot draw users ahead: every user is drawn when it arrives."""

    prefetch_users = None


def test_prefetched_users_give_the_same_trajectories(simulator_dir):
    """An autoresetting env draws every slot's next users ahead, in one batch
    (``LearnedWorld.prefetch_users``); users, outcomes and observations are those of an env
    that draws each user when it arrives."""
    n, seed, steps = 5, 3, 120
    base = load_simulator(simulator_dir, n_users=1)
    envs_ = [CampaignVectorEnv(cls(base.model, base.sampler, base.catalog, n), CampaignConfig(invalid_action="penalize"),
                               AutoresetMode.SAME_STEP) for cls in (LearnedWorld, _DrawOnArrival)]
    obs = [e.reset(seed=seed)[0] for e in envs_]
    np.testing.assert_array_equal(obs[0], obs[1])
    gen, episodes = np.random.default_rng(0), 0
    for _ in range(steps):
        actions = gen.integers(0, base.catalog.n_actions, n)
        (o0, r0, t0, _, i0), (o1, r1, t1, _, i1) = (e.step(actions) for e in envs_)
        np.testing.assert_allclose(o0, o1, atol=1e-6)
        np.testing.assert_array_equal(t0, t1)
        np.testing.assert_array_equal(i0["click"], i1["click"])
        np.testing.assert_allclose(r0, r1)
        np.testing.assert_array_equal(envs_[0].profile_categorical, envs_[1].profile_categorical)
        np.testing.assert_array_equal(envs_[0].profile_numeric, envs_[1].profile_numeric)
        episodes += int(t0.sum())
    assert episodes > 2 * n  # many autoresets happened
    assert len(envs_[0].world._cache_keys) > 0  # and the users came from the prefetched store


def test_learned_probabilities_are_valid_and_history_changes_them(simulator_dir):
    world = load_simulator(simulator_dir, n_users=64)
    world.reset_users(np.arange(64), np.arange(64, dtype=np.uint64) + 7)
    actions = np.full(64, 3)
    before = world.response_probs(actions)
    for p in (before.click, before.convert, before.churn):
        assert np.all((p >= 0) & (p <= 1))
    assert np.all(world.response_probs(np.zeros(64, dtype=np.int64)).click == 0)
    world.advance(actions, np.ones(64, bool), np.zeros(64, bool), np.ones(64, bool))
    after = world.response_probs(actions)
    assert np.abs(after.click - before.click).max() > 1e-4  # the GRU state moved
    frozen = world.response_probs(actions)
    world.advance(actions, np.ones(64, bool), np.zeros(64, bool), np.zeros(64, bool))  # nobody active
    np.testing.assert_array_equal(world.response_probs(actions).click, frozen.click)


def test_ece_against_truth_is_zero_for_the_truth_and_sees_a_shift():
    p = np.random.default_rng(0).uniform(0.01, 0.3, 10_000)
    assert ece_vs_truth(p, p) == pytest.approx(0.0, abs=1e-12)
    assert ece_vs_truth(p + 0.02, p) == pytest.approx(0.02, abs=1e-9)


def test_paired_auc_difference_of_a_model_with_itself_is_exactly_zero():
    gen = np.random.default_rng(1)
    y = gen.random(2000) < 0.2
    p = np.clip(0.2 + 0.2 * (y - 0.2) + gen.normal(0, 0.1, 2000), 0, 1)
    users = np.repeat(np.arange(400), 5)
    same = paired_auc_difference(y, p, p, users, n_boot=50)
    assert same.mean == same.ci_low == same.ci_high == 0.0
    better = paired_auc_difference(y, p, gen.random(2000), users, n_boot=100)
    assert better.ci_low > 0.0
