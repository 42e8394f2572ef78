"""TrueWorld: valid probabilities, a profile that hints at but does not reveal the latent,
long-term effects (fatigue, interest, annoyance) and the claim that they matter (a non-myopic
policy beats the one-step oracle).

The long-term-effect tests read the oracle probabilities before and after ``advance`` with
chosen outcomes, so they are exact (no sampling)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.reference import NurturePolicy, OracleGreedyPolicy
from envs import CampaignConfig, CampaignVectorEnv, TrueWorld, TrueWorldConfig, rng
from experiments.collect import make_env_factory, rollout

_SETTINGS = settings(max_examples=15, deadline=None, derandomize=True, database=None)
N_USERS = 256


def _world(n: int = N_USERS, seed: int = 0, **config) -> TrueWorld:
    world = TrueWorld(TrueWorldConfig(seed=seed, **config), n_users=n)
    world.reset_users(np.arange(n), rng.seed_key(np.arange(n) + 1000))
    return world


def _advance(world: TrueWorld, actions, click=False, convert=False) -> None:
    n = world.n_users
    actions = np.broadcast_to(np.asarray(actions, dtype=np.int64), (n,)).copy()
    world.advance(
        actions,
        np.full(n, click, dtype=bool) & (actions > 0),
        np.full(n, convert, dtype=bool) & (actions > 0),
        np.ones(n, dtype=bool),
    )


def _rows(p: np.ndarray, actions: np.ndarray) -> np.ndarray:
    return p[np.arange(len(actions)), actions]


def _all_probs(world: TrueWorld):
    out = [world.probs_all(), world.probs_all(segment_oracle=True)]
    a = np.arange(world.n_users) % world.catalog.n_actions
    out.append(world.response_probs(a))
    return out


# ------------------------------------------------------------------ probabilities
@_SETTINGS
@given(
    world_seed=st.integers(0, 10_000),
    policy_seed=st.integers(0, 10_000),
    steps=st.integers(0, 25),
    click_base=st.floats(-8.0, 3.0),
    conv_base=st.floats(-8.0, 3.0),
    churn_base=st.floats(-8.0, 3.0),
)
def test_all_probabilities_are_in_unit_interval(world_seed, policy_seed, steps, click_base, conv_base, churn_base):
    world = TrueWorld(
        TrueWorldConfig(seed=world_seed, click_base=click_base, conv_base=conv_base, churn_base=churn_base),
        n_users=16,
    )
    env = CampaignVectorEnv(world, CampaignConfig(horizon=30))
    env.reset(seed=policy_seed)
    g = np.random.default_rng(policy_seed)
    for _ in range(steps + 1):
        for p in _all_probs(world):
            for name in ("click", "convert", "churn"):
                v = getattr(p, name)
                assert np.all(np.isfinite(v)) and np.all((v >= 0.0) & (v <= 1.0)), name
        full = world.probs_all()
        assert np.all(full.click[:, 0] == 0.0) and np.all(full.convert[:, 0] == 0.0)
        masks = env.action_masks()
        env.step(np.array([g.choice(np.flatnonzero(m)) for m in masks]))


def test_response_probs_agree_with_probs_all_and_segment_oracle_differs():
    world = _world()
    full, seg = world.probs_all(), world.probs_all(segment_oracle=True)
    for a in (0, 1, world.catalog.n_actions - 1):
        p = world.response_probs(np.full(world.n_users, a))
        np.testing.assert_allclose(p.click, full.click[:, a], rtol=1e-12)
        np.testing.assert_allclose(p.convert, full.convert[:, a], rtol=1e-12)
        np.testing.assert_allclose(p.churn, full.churn[:, a], rtol=1e-12)
    # the segment oracle knows the segment, not the user: same shape, different numbers
    assert seg.click.shape == full.click.shape
    assert np.mean(np.abs(seg.click[:, 1:] - full.click[:, 1:])) > 1e-3


def test_world_is_a_function_of_its_seed():
    a, b, c = TrueWorld(TrueWorldConfig(seed=3)), TrueWorld(TrueWorldConfig(seed=3)), TrueWorld(TrueWorldConfig(seed=4))
    assert np.array_equal(a.catalog.value, b.catalog.value)
    assert np.array_equal(a.offer_embedding, b.offer_embedding)
    assert not np.array_equal(a.catalog.value, c.catalog.value)


# ------------------------------------------------------------------ profile vs latent
def _r2(x: np.ndarray, y: np.ndarray) -> float:
    x = np.column_stack([np.ones(len(x)), x])
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ beta
    return float(1.0 - (resid**2).sum() / ((y - y.mean(axis=0)) ** 2).sum())


def test_profile_is_correlated_with_latent_but_does_not_reveal_it():
    n = 20_000
    world = TrueWorld(n_users=n)
    env = CampaignVectorEnv(world)
    obs, _ = env.reset(seed=0)
    x = obs[:, : env.layout.profile_num.stop].astype(np.float64)  # encoded profile only
    latent = world.latent
    # Measured on the default world: pooled R^2 = 0.31, per dimension 0.08 .. 0.46. With
    # n = 20,000 the sampling sd of an R^2 is ~2 sqrt(R2) (1 - R2) / sqrt(n) < 0.01, so these
    # bounds test the design (informative but far from revealing), not sampling noise.
    pooled = _r2(x, latent)
    per_dim = [_r2(x, latent[:, j]) for j in range(latent.shape[1])]
    assert 0.1 < pooled < 0.6, pooled
    assert max(per_dim) < 0.75, per_dim
    assert min(per_dim) > 0.02, per_dim  # every latent dimension leaves some trace
    # a more flexible (quadratic) regression still cannot recover the latent
    num = x[:, env.layout.profile_num]
    quad = np.column_stack([x, num**2, num[:, [0]] * num[:, [1]], num[:, [0]] * num[:, [2]], num[:, [1]] * num[:, [2]]])
    assert _r2(quad, latent) < 0.7


# ------------------------------------------------------------------ long-term effects
def test_fatigue_lowers_click_probability_of_a_repeated_offer_and_its_category():
    world = _world()
    cat = world.catalog.category
    offer = 0  # action 1
    same_cat = int(np.flatnonzero(cat == cat[offer])[1])  # another offer of the same category
    other_cat = int(np.flatnonzero(cat != cat[offer])[0])
    before = world.probs_all().click
    _advance(world, 1 + offer)
    after_one = world.probs_all().click
    _advance(world, 1 + offer)
    after_two = world.probs_all().click
    assert np.all(after_one[:, 1 + offer] < before[:, 1 + offer])
    assert np.all(after_two[:, 1 + offer] < after_one[:, 1 + offer])
    assert np.all(after_one[:, 1 + same_cat] < before[:, 1 + same_cat])  # category fatigue
    # the shown offer loses more than its category siblings (offer + category fatigue), on the logit scale
    def logit(p):
        return np.log(p / (1 - p))

    assert np.all(
        logit(before[:, 1 + offer]) - logit(after_one[:, 1 + offer])
        > logit(before[:, 1 + same_cat]) - logit(after_one[:, 1 + same_cat]) + 0.5
    )
    assert np.array_equal(after_one[:, 1 + other_cat], before[:, 1 + other_cat])
    # fatigue decays while resting
    for _ in range(5):
        _advance(world, 0)
    rested = world.probs_all().click
    assert np.all(rested[:, 1 + offer] > after_two[:, 1 + offer])
    assert np.all(rested[:, 1 + offer] < before[:, 1 + offer])


def test_relevant_touches_build_interest_that_raises_conversion_probability():
    world = _world()
    best = world.affinity.argmax(axis=1) + 1  # most relevant offer per user
    assert np.all(world.affinity.max(axis=1) > 0)
    before = world.probs_all().convert
    _advance(world, best)  # sent, not clicked
    after_touch = world.probs_all().convert
    assert np.all(after_touch[:, 1:] > before[:, 1:])
    _advance(world, 0)
    _advance(world, best)
    after_two = world.probs_all().convert
    assert np.all(after_two[:, 1:] > after_touch[:, 1:])  # nurturing accumulates

    # a click adds interest on top of the touch
    clicked, plain = _world(), _world()
    _advance(clicked, best, click=True)
    _advance(plain, best, click=False)
    assert np.all(clicked.probs_all().convert[:, 1:] > plain.probs_all().convert[:, 1:])

    # an irrelevant touch (negative affinity) builds no interest
    irrelevant = _world()
    worst = irrelevant.affinity.argmin(axis=1) + 1
    assert np.all(irrelevant.affinity.min(axis=1) < 0)
    _advance(irrelevant, worst)
    np.testing.assert_array_equal(irrelevant.probs_all().convert[:, 1:], before[:, 1:])

    # satiation: converting spends part of the interest
    converted, kept = _world(), _world()
    for w, conv in ((converted, True), (kept, False)):
        _advance(w, best)
        _advance(w, best, click=True, convert=conv)
    assert np.all(converted.probs_all().convert[:, 1:] < kept.probs_all().convert[:, 1:])


def test_annoyance_from_repeated_sends_raises_churn():
    world = _world()
    cat = world.catalog.category
    a = np.ones(world.n_users, dtype=np.int64)  # always offer 0
    churn = [world.response_probs(a).churn]
    rest = [world.response_probs(np.zeros_like(a)).churn]
    for _ in range(3):
        _advance(world, a)
        churn.append(world.response_probs(a).churn)
        rest.append(world.response_probs(np.zeros_like(a)).churn)
    for k in range(3):
        assert np.all(churn[k + 1] > churn[k])
        assert np.all(rest[k + 1] > rest[k])
    assert np.all(rest[-1] < churn[-1])  # resting is always less risky than sending

    # irrelevant offers and repeated categories annoy more than relevant, fresh ones
    fresh = _world()
    p = fresh.probs_all()
    best, worst = fresh.affinity.argmax(axis=1) + 1, fresh.affinity.argmin(axis=1) + 1
    assert np.all(_rows(p.churn, worst) > _rows(p.churn, best))
    # repeating a category annoys more; without the irrelevance term the only difference
    # between two offers' churn is the category fatigue
    repeat = _world(annoy_irrelevant=0.0)
    same_cat = int(np.flatnonzero(cat == cat[0])[1]) + 1
    other_cat = int(np.flatnonzero(cat != cat[0])[0]) + 1
    _advance(repeat, 1)
    p = repeat.probs_all()
    assert np.all(p.churn[:, same_cat] > p.churn[:, other_cat])


# ------------------------------------------------------------------ the long term matters
@pytest.fixture(scope="module")
def paired_profits():
    n_users, seed = 4000, 0
    make_env = make_env_factory(lambda n: TrueWorld(TrueWorldConfig(), n_users=n), CampaignConfig())
    nurture = rollout(make_env, NurturePolicy, n_users, seed)
    greedy = rollout(make_env, OracleGreedyPolicy, n_users, seed)
    return nurture, greedy


def test_nurture_beats_oracle_greedy_on_paired_users(paired_profits):
    nurture, greedy = paired_profits
    diff = nurture.profit - greedy.profit
    n = len(diff)
    # 95% CI of the mean paired difference (CLT): mean +- 1.96 sd / sqrt(n). Measured on
    # the default world: 6.83 +- 0.87 profit per user and episode (n = 4000).
    half_width = 1.96 * diff.std(ddof=1) / np.sqrt(n)
    assert diff.mean() - half_width > 0, (diff.mean(), half_width)
    # pairing works: the same users are met, so episodes of both policies start identically
    # and the paired sd is smaller than the sd of independent samples would be
    assert diff.std(ddof=1) < np.sqrt(nurture.profit.var(ddof=1) + greedy.profit.var(ddof=1))


def test_nurture_sends_fewer_offers_and_keeps_users_longer(paired_profits):
    nurture, greedy = paired_profits
    assert nurture.length.mean() > greedy.length.mean()
    assert nurture.offers_sent.sum() / nurture.length.sum() < greedy.offers_sent.sum() / greedy.length.sum()
