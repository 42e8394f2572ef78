"""Pessimism in the learned world (envs.pessimism): MOPO's penalty, MOReL's halting, one member
per user, the threshold calibrated on logged data, and resampled logged users."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.campaign import CampaignConfig
from envs.learned_world import LearnedWorld, reward_spread
from envs.pessimism import Pessimism
from envs.true_world import TrueWorld, TrueWorldConfig
from envs.vector_env import CampaignVectorEnv
from recsys.data.profiles import profiles_from_logs
from recsys.simulator.response_model import ResponseModelConfig, fit_response_model, predict
from recsys.simulator.uncertainty import LoggedUncertainty
from recsys.simulator.user_gan import IndependentMarginalsSampler, ResampledProfiles

TINY_ENSEMBLE = ResponseModelConfig(epochs=2, patience=1, hidden_dim=16, embed_dim=8, ensemble_size=3, seed=7)
CAMPAIGN = CampaignConfig(invalid_action="penalize")
N = 64


@pytest.fixture(scope="module")
def parts(logged_splits):
    logs, train, validation, _ = logged_splits(600)
    ensemble = fit_response_model(train, validation, TINY_ENSEMBLE, progress=False,
                                  offer_category=TrueWorld(TrueWorldConfig()).catalog.category)
    return ensemble, IndependentMarginalsSampler(profiles_from_logs(logs)), TrueWorld(TrueWorldConfig()).catalog, validation


def _pair(parts, pessimism: Pessimism) -> tuple[CampaignVectorEnv, CampaignVectorEnv]:
    ensemble, sampler, catalog, _ = parts
    plain = CampaignVectorEnv(LearnedWorld(ensemble, sampler, catalog, N), CAMPAIGN)
    other = CampaignVectorEnv(LearnedWorld(ensemble, sampler, catalog, N, pessimism), CAMPAIGN)
    plain.reset(seed=3)
    other.reset(seed=3)
    return plain, other


def test_reward_penalty_charges_lambda_times_the_members_disagreement(parts):
    """MOPO: the reward is the plain reward minus lambda * std over members of the action's
    expected reward, computed on the state the action was chosen in; outcomes (same coin flips)
    and profit are unchanged."""
    lam = 2.0
    plain, pessimistic = _pair(parts, Pessimism(reward_penalty=lam))
    g = np.random.default_rng(0)
    charged = 0.0
    for _ in range(5):
        actions = g.integers(0, plain.catalog.n_actions, N)
        actions[:8] = 0  # "no offer" is never charged
        u = pessimistic.world.reward_uncertainty(actions, CAMPAIGN)
        assert np.all(u[:8] == 0.0) and np.all(u >= 0)
        _, r_plain, _, _, info_plain = plain.step(actions)
        _, r_pess, _, _, info_pess = pessimistic.step(actions)
        active = info_pess["active"]
        np.testing.assert_array_equal(info_plain["click"], info_pess["click"])
        np.testing.assert_array_equal(info_plain["profit"], info_pess["profit"])
        np.testing.assert_allclose(r_pess[active], (r_plain - lam * u)[active], rtol=1e-12, atol=1e-12)
        charged += float((lam * u)[active].sum())
    assert charged > 0  # the members do disagree somewhere


def test_halting_ends_exactly_the_steps_above_the_threshold_and_charges_kappa(parts):
    """MOReL: a user whose step has u above the threshold terminates on that step with reward
    r - kappa; the others go on exactly as in the plain world."""
    ensemble, sampler, catalog, _ = parts
    probe = CampaignVectorEnv(LearnedWorld(ensemble, sampler, catalog, N), CAMPAIGN)
    probe.reset(seed=3)
    actions = np.random.default_rng(1).integers(1, catalog.n_actions, N)
    u = probe.world.reward_uncertainty(actions, CAMPAIGN)
    threshold, kappa = float(np.median(u)), 5.0
    plain, halting = _pair(parts, Pessimism(threshold=threshold, halt=True, halt_penalty=kappa))
    _, r_plain, term_plain, _, _ = plain.step(actions)
    _, r_halt, term_halt, _, info = halting.step(actions)
    above = u > threshold
    assert 0 < above.sum() < N
    np.testing.assert_array_equal(info["halted"], above)
    np.testing.assert_array_equal(info["uncertain"], above)
    np.testing.assert_array_equal(term_halt, term_plain | above)
    np.testing.assert_allclose(r_halt, r_plain - kappa * above, rtol=1e-12, atol=1e-12)


def test_a_threshold_without_halting_only_marks_steps(parts):
    ensemble, sampler, catalog, _ = parts
    plain, marking = _pair(parts, Pessimism(threshold=0.0))
    actions = np.random.default_rng(2).integers(0, catalog.n_actions, N)
    _, r_plain, t_plain, _, _ = plain.step(actions)
    _, r_mark, t_mark, _, info = marking.step(actions)
    np.testing.assert_array_equal(r_plain, r_mark)
    np.testing.assert_array_equal(t_plain, t_mark)
    np.testing.assert_array_equal(info["uncertain"], (actions > 0) & (marking.world.reward_uncertainty(actions, CAMPAIGN) > 0))
    assert "halted" not in info


def test_member_per_user_responds_like_one_member_fixed_per_user(parts):
    """Each user follows one member drawn from its key: its probabilities are exactly that
    member's (not the mean), users do not all share one member, and the draw repeats."""
    ensemble, sampler, catalog, _ = parts
    world = LearnedWorld(ensemble, sampler, catalog, N, Pessimism(member_per_user=True))
    env = CampaignVectorEnv(world, CAMPAIGN)
    env.reset(seed=11)
    member = world._member.clone()
    assert len(set(member.tolist())) > 1
    actions = np.random.default_rng(3).integers(1, catalog.n_actions, N)
    with torch.inference_mode():
        every = torch.sigmoid(ensemble.member_logits(world._u, world._state, torch.as_tensor(actions))).double().numpy()
    p = world.response_probs(actions)
    np.testing.assert_allclose(p.click, every[member.numpy(), np.arange(N), 0], rtol=1e-6)
    assert not np.allclose(p.click, every[:, :, 0].mean(axis=0))
    again = CampaignVectorEnv(LearnedWorld(ensemble, sampler, catalog, N, Pessimism(member_per_user=True)), CAMPAIGN)
    again.reset(seed=11)
    assert torch.equal(again.world._member, member)


def test_pessimism_needs_an_ensemble(parts):
    ensemble, sampler, catalog, _ = parts
    for pessimism in (Pessimism(reward_penalty=1.0), Pessimism(member_per_user=True)):
        with pytest.raises(ValueError, match="needs an ensemble"):
            LearnedWorld(ensemble.members[0], sampler, catalog, N, pessimism)
    with pytest.raises(ValueError, match="halt"):
        Pessimism(halt=True)


def test_logged_uncertainty_is_the_spread_of_the_members_on_logged_sends(parts):
    """The calibration replays each logged send through every member; its quantiles order as
    quantiles do and the largest logged value is the 1.0 quantile."""
    ensemble, _, catalog, validation = parts
    logged = LoggedUncertainty.measure(ensemble, validation, catalog, CAMPAIGN)
    sends = validation.mask & (validation.actions > 0)
    assert len(logged.values) == sends.sum()
    members = [predict(m, validation) for m in ensemble.members]
    expected = reward_spread(np.stack([m["click"] for m in members]), np.stack([m["convert"] for m in members]),
                             validation.actions, catalog, CAMPAIGN)[sends]
    np.testing.assert_allclose(logged.values, expected)
    assert logged.threshold(0.5) <= logged.threshold(0.99) <= logged.threshold(1.0) == logged.values.max()
    with pytest.raises(ValueError, match="threshold_quantile"):
        logged.threshold(0.0)
    with pytest.raises(ValueError, match="ensemble"):
        LoggedUncertainty.measure(ensemble.members[0], validation, catalog, CAMPAIGN)


def test_resampled_profiles_draw_logged_rows_by_key(logged_splits):
    logs = logged_splits(600)[0]
    profiles = profiles_from_logs(logs)
    sampler = ResampledProfiles(profiles)
    keys = np.arange(5000, dtype=np.uint64) * np.uint64(2654435761)
    cat, num = sampler.sample_keys(keys)
    rows = {tuple(r) for r in np.column_stack([profiles.categorical, profiles.numeric]).tolist()}
    drawn = np.column_stack([cat, num]).tolist()
    assert all(tuple(r) in rows for r in drawn)
    assert len({tuple(r) for r in drawn}) > 0.8 * (1 - np.exp(-5000 / len(profiles))) * len(profiles)
    cat2, num2 = sampler.sample_keys(keys[::-1])
    np.testing.assert_array_equal(cat2, cat[::-1])


SIM_TO_REAL_TINY = [
    "experiment=sim_to_real", "experiment.progress=false", "experiment.logs.n_users=1500",
    "experiment.evaluation.n_users=300", "experiment.evaluation.n_bootstrap=50", "simulator.response_model.epochs=2",
    "simulator.response_model.patience=1", "simulator.response_model.ensemble_size=3", "simulator.user_gan.steps=30",
    "simulator.fidelity_users=300", "simulator.n_bootstrap=30", "recommender.names=[popularity,value_ranker]",
    *(f"agents.{a}.total_timesteps=1024" for a in ("ppo", "ppo_mopo", "ppo_morel", "ppo_member", "ppo_logged",
                                                  "ppo_true")),
]


def test_sim_to_real_trains_each_agent_in_its_own_world_and_reports_the_ablation(tmp_path):
    """experiment=sim_to_real end to end (tiny): each pessimism variant is its own learned world,
    judged on every policy; thresholds are the logged quantile; the report shows the ablation."""
    from hydra import compose, initialize_config_dir

    from experiments import run as run_module
    from tests.test_run import CONF

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=SIM_TO_REAL_TINY)
    results = run_module.run(cfg, tmp_path)
    section = results["pessimism"]
    assert set(section["agents"]) == {"ppo", "ppo_mopo", "ppo_morel", "ppo_member", "ppo_logged"}
    assert section["agents"]["ppo_morel"]["world"] == "ppo_morel" and section["agents"]["ppo"]["world"] == "learned"
    assert section["worlds"]["ppo_morel"]["options"]["halt"] is True
    p99 = results["simulator"]["logged_uncertainty"]["p99"]
    assert all(w["threshold"] == pytest.approx(p99) for w in section["worlds"].values())
    for row in section["agents"].values():
        own = row["own_world_return"]["mean"]
        assert row["overrating"] == pytest.approx(own / row["true_return"]["mean"] - 1)
        assert 0.0 <= row["uncertain_share"] <= 1.0
    # MOPO charges a non-negative penalty: in its own world no policy earns more return than in the shipped one
    learned = results["worlds"]["learned"]["policies"]
    mopo = section["agents"]["ppo_mopo"]
    assert mopo["own_world_return"]["mean"] <= learned["ppo_mopo"]["return"]["mean"] + 1e-9
    report = (tmp_path / "report.md").read_text()
    assert "## Pessimism" in report and (tmp_path / "sim_vs_true.png").stat().st_size > 0


@pytest.mark.parametrize("world", ["validation", "wide", "narrow"])
def test_unseen_world_configs_differ_from_the_default(world):
    from hydra import compose, initialize_config_dir

    from experiments import config as config_module
    from tests.test_run import CONF

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        default = config_module.load(compose("config", overrides=[])).world
        other = config_module.load(compose("config", overrides=[f"world={world}"])).world
    assert other.seed != default.seed
    if world != "validation":
        assert other.n_offers != default.n_offers and other.n_segments != default.n_segments
        assert other.fatigue_offer != default.fatigue_offer
