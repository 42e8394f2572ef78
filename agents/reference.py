"""Reference policies that need no training.

Observation-based (run in any world): ``random``, ``no_offer``, ``greedy`` (argmax of a
marketing heuristic: expected margin from the user's observed click rate per category, minus
a fatigue penalty) and ``logging`` (softmax of the same score mixed with uniform exploration;
it generates the logs, so its propensities are known exactly).

Oracle (TrueWorld only; they read the hidden state): ``oracle_greedy`` (argmax of the true
immediate expected reward) and ``nurture`` (same knowledge, but non-myopic: rests between
sends, rotates categories, nurtures with the most relevant offer before it pushes the most
profitable one). ``nurture`` beating ``oracle_greedy`` shows the long-term effects matter.
"""

from __future__ import annotations

import numpy as np

from agents.base import DeterministicPolicy, StochasticPolicy, masked_argmax, masked_softmax
from envs.true_world import TrueWorld
from envs.vector_env import CampaignVectorEnv

_PRIOR_CLICKS, _PRIOR_SHOWS = 1.0, 10.0  # Beta prior of the heuristic's click-rate estimate
_CONVERSION_GUESS = 0.1  # the heuristic's guess of p(convert | click)
_FATIGUE_PENALTY = 0.5  # heuristic margin lost per recent exposure of the same offer


class RandomPolicy(StochasticPolicy):
    name = "random"

    def __init__(self, n_actions: int, seed: int = 0) -> None:
        super().__init__(seed)
        self.n_actions = n_actions

    def action_probs(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        allowed = masks if masks is not None else np.ones((len(obs), self.n_actions), dtype=bool)
        return allowed / allowed.sum(axis=1, keepdims=True)


class NoOfferPolicy(DeterministicPolicy):
    name = "no_offer"

    def __init__(self, n_actions: int) -> None:
        self.n_actions = n_actions

    def act(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        return np.zeros(len(obs), dtype=np.int64)


def heuristic_scores(env: CampaignVectorEnv, obs: np.ndarray) -> np.ndarray:
    """(N, n_actions) expected-margin score a marketing team could compute from observables."""
    lay, cat = env.layout, env.catalog
    clicks = obs[:, lay.category_clicks][:, cat.category]
    shows = obs[:, lay.category_exposure][:, cat.category]
    ctr = (clicks + _PRIOR_CLICKS) / (shows + _PRIOR_SHOWS)
    margin = cat.value - cat.discount
    fatigue = obs[:, lay.offer_exposure]
    offer_score = ctr * _CONVERSION_GUESS * margin * np.exp(-_FATIGUE_PENALTY * fatigue) - cat.contact_cost
    return np.concatenate([np.zeros((len(obs), 1)), offer_score], axis=1)


class GreedyHeuristicPolicy(DeterministicPolicy):
    name = "greedy"

    def __init__(self, env: CampaignVectorEnv) -> None:
        self.env, self.n_actions = env, env.catalog.n_actions

    def act(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        return masked_argmax(heuristic_scores(self.env, obs), masks)


class LoggingPolicy(StochasticPolicy):
    """What generates the logs: with probability ``rest_probability`` send nothing (a
    contact-cadence rule), otherwise sample the softmax of the heuristic score mixed with
    ``epsilon`` uniform over allowed actions. Every allowed action has propensity >=
    (1 - rest_probability) * epsilon / n_actions, so off-policy estimators have support."""

    name = "logging"

    def __init__(
        self, env: CampaignVectorEnv, temperature: float = 0.5, epsilon: float = 0.2,
        rest_probability: float = 0.3, seed: int = 0,
    ) -> None:
        super().__init__(seed)
        if temperature <= 0:
            raise ValueError(f"logging.temperature: must be > 0, got {temperature}")
        if not 0.0 < epsilon <= 1.0:
            raise ValueError(f"logging.epsilon: must be in (0, 1], got {epsilon}")
        if not 0.0 <= rest_probability < 1.0:
            raise ValueError(f"logging.rest_probability: must be in [0, 1), got {rest_probability}")
        self.env, self.temperature, self.epsilon = env, temperature, epsilon
        self.rest_probability = rest_probability
        self.n_actions = env.catalog.n_actions

    def action_probs(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        soft = masked_softmax(heuristic_scores(self.env, obs), masks, self.temperature)
        allowed = masks if masks is not None else np.ones_like(soft, dtype=bool)
        uniform = allowed / allowed.sum(axis=1, keepdims=True)
        probs = (1.0 - self.rest_probability) * ((1.0 - self.epsilon) * soft + self.epsilon * uniform)
        probs[:, 0] += self.rest_probability
        return probs


def _true_world(env: CampaignVectorEnv) -> TrueWorld:
    if not isinstance(env.world, TrueWorld):
        raise TypeError(f"oracle policies need a TrueWorld env, got {type(env.world).__name__}")
    return env.world


class OracleGreedyPolicy(DeterministicPolicy):
    """Argmax of the true immediate expected reward (uses the hidden state)."""

    name = "oracle_greedy"

    def __init__(self, env: CampaignVectorEnv) -> None:
        self.env, self.world = env, _true_world(env)
        self.n_actions = env.catalog.n_actions

    def expected_reward(self) -> np.ndarray:
        p = self.world.probs_all()
        return self.env.campaign.expected_reward(self.env.catalog, p.click, p.convert)

    def act(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        return masked_argmax(self.expected_reward(), masks)


class NurturePolicy(DeterministicPolicy):
    """Non-myopic heuristic with the oracle's knowledge of affinities.

    Sends at most every ``rest`` + 1 steps; never repeats the last category; until the user
    has clicked ``nurture_clicks`` times it sends the most relevant cheap offer (nurturing
    interest), then the offer with the highest true expected margin.
    """

    name = "nurture"

    def __init__(self, env: CampaignVectorEnv, rest: int = 1, nurture_clicks: float = 1.0) -> None:
        self.env, self.world = env, _true_world(env)
        self.oracle = OracleGreedyPolicy(env)
        self.rest, self.nurture_clicks = rest, nurture_clicks
        self.n_actions = env.catalog.n_actions

    def act(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        lay, cat, horizon = self.env.layout, self.env.catalog, self.env.campaign.horizon
        since = np.rint(obs[:, lay.since_offer] * horizon)
        clicks = obs[:, lay.category_clicks].sum(axis=1)
        recent_cat = obs[:, lay.category_exposure][:, cat.category] > 0.9  # sent last step(s)
        relevance = self.world.probs_all().click[:, 1:] * (1.0 - 0.5 * cat.discount / cat.value)
        push = self.oracle.expected_reward()[:, 1:]
        score = np.where((clicks >= self.nurture_clicks)[:, None], push, relevance)
        score = np.where(recent_cat, -np.inf, score)
        scores = np.concatenate([np.full((len(obs), 1), -1e-9), score], axis=1)
        if masks is not None:
            scores = np.where(masks, scores, -np.inf)
        actions = scores.argmax(axis=1)
        resting = since < self.rest
        return np.where(resting, 0, actions).astype(np.int64)
