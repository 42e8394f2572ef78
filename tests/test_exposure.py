"""Exposure counts of the response model (``response_model.exposure_features``): the counts
themselves, whole-sequence training equal to step-by-step simulation, a zero start equal to the
model without them, the ensemble's fused step, and old model directories."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from recsys.simulator.response_model import (
    DataSpec,
    EnsembleResponseModel,
    ResponseModel,
    ResponseModelConfig,
    exposure,
    load_response_model,
    save_response_model,
)
from recsys.simulator.response_model import ensemble as ensemble_module

SPEC = DataSpec(n_actions=6, cat_names=["segment"], cardinalities=[3], num_names=["age"], num_loc=[0.0],
                num_scale=[1.0], horizon=5, action_category=[0, 1, 1, 2, 2, 3])
CONFIG = ResponseModelConfig(exposure_features=True, hidden_dim=8, embed_dim=4)


def _batch(b: int = 7, t: int = 5, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    click = (torch.rand(b, t, generator=g) < 0.5).float()
    return (torch.randint(0, 3, (b, 1), generator=g), torch.randn(b, 1, generator=g),
            torch.randint(0, SPEC.n_actions, (b, t), generator=g), click, click * (torch.rand(b, t, generator=g) < 0.5))


def _model(config: ResponseModelConfig = CONFIG, seed: int = 1, weights: bool = True) -> ResponseModel:
    torch.manual_seed(seed)
    model = ResponseModel(SPEC, config).eval()
    if weights and config.exposure_features:
        with torch.no_grad():
            model.exposure_weight.normal_()  # as if fitted: zero would hide a mis-indexed count
    return model


def test_counts_decay_per_scale_and_count_offer_and_category_but_never_no_offer():
    decays = torch.tensor(exposure.DECAYS)
    cols = exposure.columns(SPEC.action_category, SPEC.n_actions)
    x = exposure.before_each(torch.tensor([[2, 2, 0, 1, 4]]), decays, cols, SPEC.n_actions + SPEC.n_categories)[0]
    d0, d1 = exposure.DECAYS
    # offer 2 (category 1, column 6 + 1), twice, then nothing sent, then offer 1 of the same category
    torch.testing.assert_close(x[:, 0, 2], torch.tensor([0, 1, 1 + d0, (1 + d0) * d0, (1 + d0) * d0 ** 2]))
    torch.testing.assert_close(x[:, 1, 2], torch.tensor([0, 1, 1 + d1, (1 + d1) * d1, (1 + d1) * d1 ** 2]))
    torch.testing.assert_close(x[:, 0, 7], torch.tensor([0, 1, 1 + d0, (1 + d0) * d0, (1 + d0) * d0 ** 2 + 1]))
    assert x[:, :, 0].abs().sum() == 0 and x[:, :, SPEC.n_actions].abs().sum() == 0  # "no offer" and its category
    feats = exposure.features_all(x, cols)  # (T, A, 2D): [offer, category] x decay
    assert feats.shape == (5, SPEC.n_actions, 4)
    torch.testing.assert_close(feats[4, 1], torch.stack([x[4, 0, 1], x[4, 1, 1], x[4, 0, 7], x[4, 1, 7]]))
    shown = exposure.features_shown(x[4:5], cols, torch.tensor([2]))
    torch.testing.assert_close(shown[0], feats[4, 2])


@pytest.mark.parametrize("encoder", ["gru", "attention"])
def test_whole_sequences_equal_step_by_step_and_zero_weights_equal_no_counts(encoder):
    config = replace(CONFIG, history_encoder=encoder)
    cat, num, actions, click, convert = _batch()
    with torch.no_grad():
        plain = _model(replace(config, exposure_features=False))(cat, num, actions, click, convert)
        torch.testing.assert_close(_model(config, weights=False)(cat, num, actions, click, convert), plain)
        model = _model(config)
        seq = model(cat, num, actions, click, convert)
        assert not torch.allclose(seq, plain)
        every = model.forward_all(cat, num, actions, click, convert)
        torch.testing.assert_close(every.gather(2, actions[..., None, None].expand(-1, -1, 1, 3))[:, :, 0], seq)
        u, state = model.initial_state(cat, num)
        steps = []
        for t in range(actions.shape[1]):
            steps.append(model.step_logits(u, state, actions[:, t]))
            state = model.advance(state, actions[:, t], click[:, t], convert[:, t])
    torch.testing.assert_close(torch.stack(steps, 1), seq, atol=1e-6, rtol=1e-5)


def test_repeating_an_offer_moves_its_logit_by_the_learned_weight_and_spares_other_categories():
    model = _model()
    with torch.no_grad():
        model.exposure_weight.zero_()
        model.exposure_weight[0, 0] = -1.0  # click head, offer count at the fast decay
        cat, num, *_ = _batch(b=1)
        u, state = model.initial_state(cat, num)
        first = model.step_logits(u, state, torch.tensor([2]))[0, 0]
        state = model.advance(state, torch.tensor([2]), torch.zeros(1), torch.zeros(1))
        again, elsewhere = (model.step_logits(u, state, torch.tensor([a]))[0, 0] for a in (2, 5))
    # the GRU moved too; the counts' part is exactly -1 x calibration scale for the repeated offer
    plain = _model()
    with torch.no_grad():
        plain.exposure_weight.zero_()
        u0, s0 = plain.initial_state(cat, num)
        s0 = plain.advance(s0, torch.tensor([2]), torch.zeros(1), torch.zeros(1))
        base_again, base_elsewhere = (plain.step_logits(u0, s0, torch.tensor([a]))[0, 0] for a in (2, 5))
    assert float(again - base_again) == pytest.approx(-float(model.calib_scale[0]))
    assert float(elsewhere - base_elsewhere) == 0.0
    assert torch.isfinite(first)


@pytest.mark.parametrize("batched", ["fused", "vmap", "fused_in_chunks"])
def test_the_ensemble_step_equals_its_members_with_counts(batched, monkeypatch):
    if batched == "fused_in_chunks":  # 7 users in chunks of 2 rows: the counts must follow the rows
        monkeypatch.setattr(ensemble_module, "_CACHE_FLOATS", 2 * 3 * 3 * CONFIG.hidden_dim)
    members = [_model(replace(CONFIG, seed=k), seed=k) for k in range(3)]
    ensemble = EnsembleResponseModel(members, batched=batched.removesuffix("_in_chunks")).eval()
    if batched == "fused_in_chunks":
        assert len(ensemble._chunks(7, 3 * CONFIG.hidden_dim)) == 4
    cat, num, actions, click, convert = _batch()
    with torch.no_grad():
        u, state = ensemble.initial_state(cat, num)
        assert state["exposure"].shape == (7, len(exposure.DECAYS), SPEC.n_actions + SPEC.n_categories)
        singles = [m.initial_state(cat, num) for m in members]
        for t in range(actions.shape[1]):
            a = actions[:, t]
            ours = ensemble.member_logits(u, state, a)
            torch.testing.assert_close(ours, torch.stack([m.step_logits(mu, ms, a) for m, (mu, ms)
                                                          in zip(members, singles, strict=True)]),
                                       atol=2e-6, rtol=1e-5)
            state = ensemble.advance(state, a, click[:, t], convert[:, t])
            singles = [(mu, m.advance(ms, a, click[:, t], convert[:, t]))
                       for m, (mu, ms) in zip(members, singles, strict=True)]
            torch.testing.assert_close(state["exposure"], singles[0][1]["exposure"])


def test_round_trip_and_directories_from_before_the_counts_load_without_them(tmp_path):
    model = _model()
    cat, num, actions, click, convert = _batch()
    save_response_model(model, tmp_path / "rm")
    again = load_response_model(tmp_path / "rm")
    assert again.config.exposure_features
    with torch.no_grad():
        torch.testing.assert_close(again(cat, num, actions, click, convert), model(cat, num, actions, click, convert))
    plain = _model(replace(CONFIG, exposure_features=False))
    save_response_model(plain, tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "config.json").read_text())
    del meta["model"]["exposure_features"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(meta))
    old = load_response_model(tmp_path / "old")
    assert not old.config.exposure_features
    # without a catalog: offer counts only
    bare = ResponseModel(replace(SPEC, action_category=[]), replace(CONFIG, category_sharing=False))
    assert bare.exposure_weight.shape == (3, len(exposure.DECAYS)) and bare.exposure_width == SPEC.n_actions
    with torch.no_grad():
        bare.exposure_weight.normal_()
        u, state = bare.initial_state(cat[:, :], num)
        state = bare.advance(state, actions[:, 0], click[:, 0], convert[:, 0])
        assert torch.isfinite(bare.step_logits(u, state, actions[:, 1])).all()


def test_the_no_history_ablation_sees_no_counts_but_the_other_encoders_do():
    """Exposure counts are history: "the gain of history" is measured against a model without them."""
    from experiments.fit_simulator import ablation_config

    main = ResponseModelConfig()  # the default: GRU with counts
    assert main.exposure_features
    assert not ablation_config(main, "none", "gru").exposure_features
    assert ablation_config(main, "attention", "gru").exposure_features
    assert ablation_config(main, "gru", "gru") == main
    assert ablation_config(replace(main, history_encoder="none"), "none", "none").exposure_features  # a user's choice
