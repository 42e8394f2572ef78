"""The ensemble response model: one batched forward equals its members run one by one, the
members differ, it round-trips through the model directory and LearnedWorld runs it."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from envs.campaign import CampaignConfig
from envs.campaign_env import CampaignEnv
from envs.true_world import TrueWorld, TrueWorldConfig
from recsys.data.profiles import profiles_from_logs
from recsys.simulator.io import CATALOG_FILE, load_simulator
from recsys.simulator.response_model import (
    EnsembleResponseModel,
    ResponseModelConfig,
    fit_response_model,
    load_response_model,
    predict,
    save_response_model,
)
from recsys.simulator.response_model import ensemble as ensemble_module
from recsys.simulator.user_gan import UserGANConfig, fit_user_gan

TINY_ENSEMBLE = ResponseModelConfig(epochs=2, patience=1, hidden_dim=16, embed_dim=8, ensemble_size=3, seed=7)


@pytest.fixture(scope="module")
def data(logged_splits):
    logs, train, validation, _ = logged_splits(600)
    return logs, train, validation


@pytest.fixture(scope="module", params=[False, True], ids=["per_offer", "category_sharing"])
def ensemble(data, request):
    _, train, validation = data
    return fit_response_model(train, validation, replace(TINY_ENSEMBLE, category_sharing=request.param),
                              progress=False, offer_category=TrueWorld(TrueWorldConfig()).catalog.category)


def _rollout(model, n_users: int = 40, steps: int = 6, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(member probabilities or None, step probabilities) of a fixed random rollout."""
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(0, c, (n_users,), generator=g) for c in model.spec.cardinalities], dim=1)
    num = torch.as_tensor(model.spec.num_loc, dtype=torch.float32) + torch.randn(n_users, len(model.spec.num_names),
                                                                                 generator=g)
    out = []
    with torch.inference_mode():
        u, state = model.initial_state(cat, num)
        for _ in range(steps):
            a = torch.randint(0, model.spec.n_actions, (n_users,), generator=g)
            click, convert = (torch.rand(n_users, generator=g) < 0.5).float(), (torch.rand(n_users, generator=g) < 0.5).float()
            members = model.member_probs(u, state, a) if isinstance(model, EnsembleResponseModel) else None
            out.append((members, torch.sigmoid(model.step_logits(u, state, a))))
            state = model.advance(state, a, click, convert)
    return out


def test_fit_returns_an_ensemble_of_distinct_members(ensemble, data):
    assert isinstance(ensemble, EnsembleResponseModel) and ensemble.n_members == 3
    assert ensemble.config.ensemble_size == 3 and ensemble.config.seed == 7
    assert [m.config.seed for m in ensemble.members] == [7, 8, 9]
    assert all(m.spec == ensemble.spec for m in ensemble.members)
    w = [m.heads.weight for m in ensemble.members]
    assert not torch.allclose(w[0], w[1]) and not torch.allclose(w[1], w[2])
    # the bootstrap resamples differ: same seed, another user sample, gives other weights
    _, train, validation = data
    other = fit_response_model(train, validation, replace(ensemble.members[0].config, ensemble_size=1, seed=7),
                               progress=False, offer_category=TrueWorld(TrueWorldConfig()).catalog.category)
    assert not torch.allclose(other.heads.weight, w[0])


@pytest.mark.parametrize("batched", ["fused", "vmap", "fused_in_chunks"])
def test_batched_step_equals_the_members_one_by_one(ensemble, batched, monkeypatch):
    chunked = batched == "fused_in_chunks"
    if chunked:  # 40 users in uneven chunks of 7 rows (the GRU update; fewer for the heads)
        monkeypatch.setattr(ensemble_module, "_CACHE_FLOATS", 7 * 3 * 3 * TINY_ENSEMBLE.hidden_dim)
    model = EnsembleResponseModel(list(ensemble.members), batched="fused" if chunked else batched).eval()
    if chunked:
        assert [r.stop - r.start for r in model._chunks(40, 3 * TINY_ENSEMBLE.hidden_dim)] == [7] * 5 + [5]
    ours = _rollout(model)
    singles = [_rollout(m) for m in ensemble.members]
    for t, (members, mean) in enumerate(ours):
        one_by_one = torch.stack([s[t][1] for s in singles])
        torch.testing.assert_close(members, one_by_one, atol=2e-6, rtol=1e-5)
        torch.testing.assert_close(mean, one_by_one.mean(0), atol=2e-6, rtol=1e-5)


def test_stacked_weights_follow_member_changes(ensemble):
    model = EnsembleResponseModel([m.__class__(m.spec, m.config).eval() for m in ensemble.members])
    before = _rollout(model)[0][1]
    for mine, fitted in zip(model.members, ensemble.members, strict=True):
        mine.load_state_dict(fitted.state_dict())
    model.calib_scale.copy_(ensemble.calib_scale)
    model.calib_shift.copy_(ensemble.calib_shift)
    torch.testing.assert_close(_rollout(model)[0][1], _rollout(ensemble)[0][1])
    assert not torch.allclose(before, _rollout(model)[0][1])


def test_save_load_round_trip_and_predict(ensemble, data, tmp_path):
    save_response_model(ensemble, tmp_path / "rm")
    assert json.loads((tmp_path / "rm" / "config.json").read_text())["model"]["ensemble_size"] == 3
    loaded = load_response_model(tmp_path / "rm")
    assert isinstance(loaded, EnsembleResponseModel) and [m.config.seed for m in loaded.members] == [7, 8, 9]
    for (m1, p1), (m2, p2) in zip(_rollout(ensemble), _rollout(loaded), strict=True):
        assert torch.equal(m1, m2) and torch.equal(p1, p2)
    _, _, validation = data
    p = predict(loaded, validation)
    mean = np.mean([predict(m, validation)["click"] for m in ensemble.members], axis=0)[validation.mask]
    scale, shift = float(loaded.calib_scale[0]), float(loaded.calib_shift[0])  # the mean's own recalibration
    expected = 1 / (1 + np.exp(-(np.log(mean / (1 - mean)) * scale + shift)))
    np.testing.assert_allclose(p["click"][validation.mask], expected, atol=1e-5)


def test_learned_world_on_the_ensemble_passes_the_env_checker(ensemble, data, tmp_path):
    logs, _, _ = data
    save_response_model(ensemble, tmp_path / "response_model")
    fit_user_gan(profiles_from_logs(logs), UserGANConfig(steps=10, batch_size=100), progress=False).save(
        tmp_path / "user_gan")
    (tmp_path / CATALOG_FILE).write_text(json.dumps(TrueWorld(TrueWorldConfig()).catalog.to_json()))
    world = load_simulator(tmp_path, n_users=1)
    assert isinstance(world.model, EnsembleResponseModel)
    env = CampaignEnv(world=world, campaign=CampaignConfig())
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    for _ in range(5):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert np.isfinite(reward)
        if terminated or truncated:
            break


def test_small_logs_train_in_smaller_batches_and_the_saved_config_says_so(data, ensemble):
    """An epoch of fewer than ``min_steps_per_epoch`` gradient steps leaves the model
    undertrained when early stopping judges it (MovieLens: 3 steps an epoch at 256 users)."""
    import math

    from recsys.simulator.response_model.fit import batch_size_for

    _, train, _ = data
    expected = math.ceil(train.n_users / TINY_ENSEMBLE.min_steps_per_epoch)
    assert expected < TINY_ENSEMBLE.batch_size
    assert all(m.config.batch_size == expected for m in ensemble.members)
    assert batch_size_for(TINY_ENSEMBLE, TINY_ENSEMBLE.batch_size * TINY_ENSEMBLE.min_steps_per_epoch) == 256
    assert batch_size_for(replace(TINY_ENSEMBLE, min_steps_per_epoch=1), train.n_users) == 256


def test_the_members_mean_gets_its_own_recalibration_on_validation_users(ensemble, data, tmp_path):
    """Averaging calibrated members blurs their probabilities, so the ensemble's mean is Platt-
    recalibrated on the validation users: fitted (not the identity), no worse there than the raw
    mean, used by the whole-sequence and the step-by-step forwards alike, and an ensemble saved
    before it existed loads with the identity."""
    _, _, validation = data
    assert not torch.allclose(ensemble.calib_scale, torch.ones(3))
    raw = EnsembleResponseModel(list(ensemble.members)).eval()  # identity recalibration
    exposed = validation.mask & (validation.actions > 0)
    y = validation.click[exposed]

    def nll(model) -> float:
        q = np.clip(predict(model, validation)["click"][exposed], 1e-7, 1 - 1e-7)
        return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))

    assert nll(ensemble) <= nll(raw) + 1e-6
    first = validation.subset(np.arange(8))
    cat, num = torch.as_tensor(first.profile_cat), torch.as_tensor(first.profile_num, dtype=torch.float32)
    with torch.no_grad():
        u, state = ensemble.initial_state(cat, num)
        step = ensemble.step_logits(u, state, torch.as_tensor(first.actions[:, 0]))
        whole = ensemble(cat, num, torch.as_tensor(first.actions), torch.as_tensor(first.click),
                         torch.as_tensor(first.conversion))[:, 0]
    torch.testing.assert_close(step, whole, atol=1e-5, rtol=1e-5)
    save_response_model(ensemble, tmp_path / "rm")
    state_dict = torch.load(tmp_path / "rm" / "model.pt", weights_only=True)
    torch.save({k: v for k, v in state_dict.items() if not k.startswith("calib_")}, tmp_path / "rm" / "model.pt")
    old = load_response_model(tmp_path / "rm")
    assert torch.equal(old.calib_scale, torch.ones(3)) and torch.equal(old.calib_shift, torch.zeros(3))
