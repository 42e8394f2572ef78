"""Supervised recommenders: offline quality on held-out users, as policies in TrueWorld,
persistence and config validation (all fitted once on tiny TrueWorld logs)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from agents.base import OnlinePolicy, Policy, logged_action_probs
from agents.recommender_policy import RecommenderPolicy, StatefulRecommenderPolicy
from agents.reference import LoggingPolicy
from envs.campaign import CampaignConfig
from envs.true_world import TrueWorld, TrueWorldConfig
from envs.vector_env import CampaignVectorEnv
from experiments.collect import generate_logs, make_env_factory, rollout
from recsys.data.replay import LoggedData
from recsys.data.sequences import sequences_from_logs
from recsys.data.splits import split_users
from recsys.recommenders import (
    RECOMMENDERS,
    DeepFMConfig,
    GRU4RecConfig,
    LogisticConfig,
    MFConfig,
    PopularityConfig,
    ValueRankerConfig,
    evaluate_recommenders,
    fit_recommenders,
    load_recommender,
    make_recommender,
)
from recsys.stats import roc_auc

NAMES = tuple(RECOMMENDERS)
STATEFUL = ("mf", "gru4rec")
Z = 4.0  # a random scorer exceeds 0.5 + Z standard errors with probability ~3e-5


def _make_env(n: int) -> CampaignVectorEnv:
    return make_env_factory(lambda k: TrueWorld(TrueWorldConfig(), k), CampaignConfig())(n)


@pytest.fixture(scope="module")
def splits() -> dict[str, LoggedData]:
    torch.set_num_threads(1)
    world = TrueWorld(TrueWorldConfig())
    seq = sequences_from_logs(generate_logs(_make_env, lambda e: LoggingPolicy(e), n_users=2000, seed=0, progress=False))
    split = split_users(seq.user_ids, (0.7, 0.1, 0.2), seed=0)
    logged = LoggedData.replay(seq, world.catalog, world.profile_schema, CampaignConfig())
    return {name: logged.subset(rows) for name, rows in split.items()}


@pytest.fixture(scope="module")
def fitted(splits):
    return fit_recommenders(splits["train"], splits["validation"], progress=False)


@pytest.fixture(scope="module")
def metrics(fitted, splits):
    return evaluate_recommenders(fitted, splits["test"])


@pytest.mark.parametrize("name", NAMES)
def test_click_auc_beats_a_random_scorer_and_logloss_beats_the_base_rate(name, metrics, fitted):
    m = metrics[name]
    n_pos, n_neg = m["n_click_positives"], m["n_click_rows"] - m["n_click_positives"]
    assert n_pos >= 100 and n_neg >= 100
    # standard error of the AUC of a scorer independent of the labels (Mann-Whitney null)
    se = math.sqrt((n_pos + n_neg + 1) / (12.0 * n_pos * n_neg))
    assert m["click_auc"] > 0.5 + Z * se, (m["click_auc"], se)
    if fitted[name].predicts_probabilities:
        assert m["click_logloss"] < m["click_logloss_base"]
    else:
        assert "click_logloss" not in m
    assert 0.0 <= m["ndcg_at_5"] <= m["hr_at_5"] <= 1.0


def test_value_ranker_also_reports_its_conversion_model(metrics):
    m = metrics["value_ranker"]
    assert m["n_conversion_rows"] == m["n_click_positives"] and m["n_conversion_positives"] > 0
    assert 0.0 <= m["conversion_auc"] <= 1.0 and math.isfinite(m["conversion_logloss"])


def test_roc_auc_handles_ties_and_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    y, s = rng.random(300) < 0.3, rng.integers(0, 5, 300).astype(float)
    pairs = (s[y][:, None] > s[~y][None]).mean() + 0.5 * (s[y][:, None] == s[~y][None]).mean()
    assert roc_auc(y, s) == pytest.approx(pairs)
    assert math.isnan(roc_auc(np.zeros(5), np.arange(5.0)))


@pytest.mark.parametrize("name", NAMES)
def test_each_recommender_runs_as_a_policy_in_true_world(name, fitted):
    rec = fitted[name]
    policy = RecommenderPolicy(rec, _make_env(1))
    assert isinstance(policy, Policy) and policy.name == name
    assert isinstance(policy, OnlinePolicy) == (name in STATEFUL)
    # campaign.invalid_action="error" (the default): any masked action would raise
    stats = rollout(_make_env, lambda env: RecommenderPolicy(rec, env), n_users=300, seed=5_000_000)
    assert stats.offers_sent.sum() > 0 and np.all(stats.length >= 1)
    soft = rollout(_make_env, lambda env: RecommenderPolicy(rec, env, mode="softmax", temperature=0.5),
                   n_users=100, seed=5_000_000)
    assert soft.offers_sent.sum() > 0


def _obs_and_masks(n: int = 64, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    env = _make_env(n)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    masks = rng.random((n, env.catalog.n_actions)) < 0.5
    masks[:, 0] = True
    masks[:4, 1:] = False  # nothing to send
    return obs, masks


@pytest.mark.parametrize("name", NAMES)
def test_greedy_probs_are_one_hot_and_softmax_probs_respect_masks(name, fitted):
    obs, masks = _obs_and_masks()
    rec = fitted[name]
    greedy = RecommenderPolicy(rec).action_probs(obs, masks)
    assert set(np.unique(greedy)) <= {0.0, 1.0} and np.all(greedy.sum(axis=1) == 1.0)
    assert np.array_equal(greedy.argmax(axis=1), RecommenderPolicy(rec).act(obs, masks))
    soft = RecommenderPolicy(rec, mode="softmax", temperature=2.0).action_probs(obs, masks)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0)
    assert np.all(soft[~masks] == 0.0)
    assert np.all(soft[:4, 0] == 1.0)  # every offer masked: no offer
    if rec.always_sends:  # click rankers send whenever they can
        assert np.all(soft[4:, 0] == 0.0) and np.all(greedy[4:, 0] == 0.0)
    actions = RecommenderPolicy(rec, mode="softmax", seed=3).act(obs, masks)
    assert masks[np.arange(len(obs)), actions].all()


def test_value_ranker_rests_when_no_offer_pays_for_its_contact(fitted):
    rec = fitted["value_ranker"]
    obs, masks = _obs_and_masks()
    expensive = make_recommender("value_ranker")
    expensive.__dict__.update(rec.__dict__)
    expensive.spec = replace(rec.spec, catalog={**rec.spec.catalog, "contact_cost": 1e6})
    assert np.all(RecommenderPolicy(expensive).act(obs, masks) == 0)
    assert np.all(rec.scores(obs)[:, 0] == 0.0)


@pytest.mark.parametrize("reward", ["click", "conversion", "profit"])
def test_value_ranker_ranks_by_the_campaign_reward(fitted, reward):
    """The value ranker maximises the campaign's reward (it used to rank by profit whatever
    ``campaign.reward`` said): p(click) for clicks, p(click) p(convert | click) for conversions."""
    rec = fitted["value_ranker"]
    obs, _ = _obs_and_masks()
    ranker = make_recommender("value_ranker")
    ranker.__dict__.update(rec.__dict__)
    ranker.spec = replace(rec.spec, reward=reward)
    p_click, p_convert = rec.models["click"].predict(obs), rec.models["conversion"].predict(obs)
    cat = rec.spec.catalog
    margin = np.concatenate([[0.0], np.array(cat["value"]) - np.array(cat["discount"])])
    expected = {"click": p_click, "conversion": p_click * p_convert,
                "profit": p_click * p_convert * margin - cat["contact_cost"]}
    want = expected[reward].copy()
    want[:, 0] = 0.0
    np.testing.assert_allclose(ranker.scores(obs), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_save_and_load_give_identical_scores(name, fitted, splits, tmp_path):
    rec = fitted[name]
    rec.save(tmp_path / name)
    loaded = load_recommender(tmp_path / name)
    assert type(loaded) is type(rec) and loaded.config == rec.config and loaded.spec == rec.spec
    test = splits["test"].subset(np.arange(50))
    for method in ("predict", "scores"):
        np.testing.assert_array_equal(loaded.logged(test, method), rec.logged(test, method))
    with pytest.raises(ValueError, match="holds recommender"):
        RECOMMENDERS["popularity" if name != "popularity" else "mf"].load(tmp_path / name)
    (tmp_path / name / "weights.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="weights.pt: cannot load"):
        load_recommender(tmp_path / name)


@pytest.mark.parametrize("name", STATEFUL)
def test_stateful_policy_tracks_users_and_resets_new_episodes(name, fitted):
    rec = fitted[name]
    env = CampaignVectorEnv(TrueWorld(TrueWorldConfig(), 32), CampaignConfig(), AutoresetMode.NEXT_STEP)
    policy = RecommenderPolicy(rec, env)
    assert isinstance(policy, StatefulRecommenderPolicy)
    obs, _ = env.reset(seed=7)
    fresh = policy.action_probs(obs, env.action_masks())
    for _ in range(env.campaign.horizon + 3):  # long enough for episodes to end and restart
        actions = policy.act(obs, env.action_masks())
        previous = obs
        obs, reward, _, _, info = env.step(actions)
        policy.observe(previous, actions, reward, info)
    restarted = obs[:, rec.spec.time_left] >= 1.0
    assert restarted.any() and (~restarted).any()
    # a restarted user is scored like a new policy scores it; the others carry history
    new = RecommenderPolicy(rec, env, mode="softmax")
    old = RecommenderPolicy(rec, env, mode="softmax")
    old._state = policy._state
    np.testing.assert_allclose(old.action_probs(obs)[restarted], new.action_probs(obs)[restarted])
    assert fresh.shape == (32, env.catalog.n_actions)
    # a different batch size starts over instead of failing
    assert policy.act(obs[:5], env.action_masks()[:5]).shape == (5,)


@pytest.mark.parametrize("name", NAMES)
def test_logged_action_probs_cover_every_logged_step(name, fitted, splits):
    test = splits["test"].subset(np.arange(40))
    policy = RecommenderPolicy(fitted[name], mode="softmax")
    probs = logged_action_probs(policy, test)
    mask = test.data.mask
    np.testing.assert_allclose(probs[mask].sum(axis=1), 1.0)
    assert np.all(probs[mask][~test.masks[mask]] == 0.0) and not probs[~mask].any()
    # the replay is the policy's own computation: the same scores the recommender gives on the
    # logged history (stateful models replay it), through the policy's softmax
    scores = fitted[name].logged(test, "scores")[mask]
    expected = policy._probs(scores, policy._allowed(test.masks[mask], int(mask.sum())))
    np.testing.assert_allclose(probs[mask], expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: PopularityConfig(prior_shows=-1.0), "recommender.popularity.prior_shows"),
        (lambda: LogisticConfig(target="revenue"), "recommender.logistic.target"),
        (lambda: LogisticConfig(l2=()), "recommender.logistic.l2"),
        (lambda: DeepFMConfig(embed_dim=0), "recommender.deepfm.embed_dim"),
        (lambda: DeepFMConfig(lr=0.0), "recommender.deepfm.lr"),
        (lambda: MFConfig(factors=0), "recommender.mf.factors"),
        (lambda: MFConfig(regularization=(1.0, -1.0)), "recommender.mf.regularization"),
        (lambda: GRU4RecConfig(batch_size=0), "recommender.gru4rec.batch_size"),
        (lambda: ValueRankerConfig(model="svm"), "recommender.value_ranker.model"),
        (lambda: ValueRankerConfig(click={"epochs": 3}), "recommender.value_ranker.click"),
        (lambda: ValueRankerConfig(model="deepfm", conversion={"hidden_dim": 1}), "recommender.deepfm.hidden_dim"),
    ],
)
def test_config_errors_are_one_line_and_name_the_field(make, field):
    with pytest.raises(ValueError, match=rf"^{field}: ") as err:
        make()
    assert "\n" not in str(err.value)


def test_misuse_is_reported_with_the_field(fitted, splits):
    with pytest.raises(ValueError, match="recommender_policy.mode"):
        RecommenderPolicy(fitted["logistic"], mode="thompson")
    with pytest.raises(ValueError, match="recommender_policy.temperature"):
        RecommenderPolicy(fitted["logistic"], mode="softmax", temperature=0.0)
    with pytest.raises(ValueError, match="not fitted"):
        RecommenderPolicy(make_recommender("popularity"))
    small = CampaignVectorEnv(TrueWorld(TrueWorldConfig(n_offers=10), 1), CampaignConfig())
    with pytest.raises(ValueError, match="^env: obs_dim"):
        RecommenderPolicy(fitted["logistic"], small)
    other_world = CampaignVectorEnv(TrueWorld(TrueWorldConfig(seed=1), 1), CampaignConfig())
    with pytest.raises(ValueError, match="^env: "):
        RecommenderPolicy(fitted["value_ranker"], other_world)
    with pytest.raises(ValueError, match="unknown or unselected"):
        fit_recommenders(splits["train"], splits["validation"], names=["popularity", "svd"], progress=False)
    with pytest.raises(ValueError, match="recommender.mf.cohort"):
        make_recommender("mf", {"cohort": "planet"}).fit(splits["train"], splits["validation"])
