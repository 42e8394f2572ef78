"""experiments.claims: across-seed sim-to-real claims (agent vs the best recommender of each
seed, probability of improvement, overrating, gap to the TrueWorld-trained agent)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import t as student_t

from experiments.claims import agent_claims, probability_of_improvement


def _iv(mean: float) -> dict[str, float]:
    return {"mean": mean, "ci_low": mean - 0.1, "ci_high": mean + 0.1}


def _run(agent: float, value_ranker: float, logistic: float, ppo_true: float, learned: float) -> dict:
    true = {"ppo": agent, "ppo_true": ppo_true, "value_ranker": value_ranker, "logistic": logistic, "greedy": 99.0}
    return {"config": {"experiment": {"agents": ["ppo", "ppo_true"]},
                       "agents": {"ppo": {"train_world": "learned"}, "ppo_true": {"train_world": True}}},
            "recommenders": {"offline_metrics": {"value_ranker": {}, "logistic": {}}},
            "worlds": {"true": {"policies": {p: {"profit": _iv(v), "return": _iv(v)} for p, v in true.items()}},
                       "learned": {"policies": {"ppo": {"profit": _iv(learned), "return": _iv(learned)}}}}}


def test_claims_compare_with_each_seeds_best_recommender_not_other_baselines():
    runs = [_run(12.0, 11.0, 11.5, 15.0, 13.2), _run(10.0, 10.5, 12.0, 14.0, 11.0), _run(13.0, 12.5, 11.0, 15.5, 13.0)]
    c = agent_claims(runs, 0.95)
    assert set(c) == {"ppo"}  # ppo_true trained in TrueWorld: not a simulator-trained agent
    row = c["ppo"]
    # best recommender per seed: 11.5 (logistic), 12.0 (logistic), 12.5 (value_ranker); greedy (99) is no recommender
    np.testing.assert_allclose(row["best_recommender_profit"]["values"], [11.5, 12.0, 12.5])
    d = np.array([0.5, -2.0, 0.5])
    np.testing.assert_allclose(row["minus_best_recommender"]["values"], d)
    half = student_t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert row["minus_best_recommender"]["ci_low"] == pytest.approx(d.mean() - half)
    np.testing.assert_allclose(row["overrating"]["values"], [13.2 / 12 - 1, 11 / 10 - 1, 0.0], atol=1e-12)
    np.testing.assert_allclose(row["gap_to_true_trained"]["values"], [3.0, 4.0, 2.5])
    # P(X > Y) over the 9 seed pairs: 12 beats 11.5 and ties 12 (1/2); 10 beats none; 13 beats all three
    assert row["probability_of_improvement"]["mean"] == pytest.approx(4.5 / 9)


def test_probability_of_improvement_counts_ties_half_and_its_interval_brackets_it():
    assert probability_of_improvement([1.0, 2.0], [1.0, 2.0], 0.95)["mean"] == pytest.approx(0.5)
    assert probability_of_improvement([3.0, 4.0], [1.0, 2.0], 0.95)["mean"] == 1.0
    p = probability_of_improvement([1.0, 3.0, 5.0, 2.0, 4.0], [2.5, 2.5, 2.5, 2.5, 2.5], 0.95)
    assert p["mean"] == pytest.approx(0.6) and p["ci_low"] <= 0.6 <= p["ci_high"] and p["ci_high"] - p["ci_low"] > 0.2


def test_claims_of_a_conversion_objective_compare_the_objective_not_profit():
    """With campaign.reward=conversion an agent that converts more wins even if a recommender
    makes more profit; the per-recommender differences answer "ppo >= logistic"."""
    runs = []
    for agent_conv, logistic_conv, ranker_conv in [(0.60, 0.55, 0.50), (0.58, 0.57, 0.52), (0.62, 0.56, 0.51)]:
        r = _run(10.0, 20.0, 11.0, 15.0, 10.0)  # profit: value_ranker far ahead
        r["config"]["campaign"] = {"reward": "conversion"}
        true = r["worlds"]["true"]["policies"]
        for name, conv in (("ppo", agent_conv), ("logistic", logistic_conv), ("value_ranker", ranker_conv),
                           ("ppo_true", 0.7)):
            true[name]["return"] = _iv(conv)
        r["worlds"]["learned"]["policies"]["ppo"]["return"] = _iv(agent_conv * 1.1)
        runs.append(r)
    row = agent_claims(runs, 0.95)["ppo"]
    assert row["metric"] == "return"
    np.testing.assert_allclose(row["best_recommender_value"]["values"], [0.55, 0.57, 0.56])  # logistic each seed
    np.testing.assert_allclose(row["minus_recommender"]["logistic"]["values"], [0.05, 0.01, 0.06], atol=1e-12)
    np.testing.assert_allclose(row["minus_recommender"]["value_ranker"]["values"], [0.10, 0.06, 0.11], atol=1e-12)
    assert row["probability_of_improvement"]["mean"] == pytest.approx(1.0)
    np.testing.assert_allclose(row["true_profit"]["values"], [10.0, 10.0, 10.0])  # still reported
    np.testing.assert_allclose(row["overrating"]["values"], [0.1, 0.1, 0.1], atol=1e-12)
    mixed = [runs[0], _run(12.0, 11.0, 11.5, 15.0, 13.2)]
    with pytest.raises(ValueError, match="group them by campaign.reward"):
        agent_claims(mixed, 0.95)
