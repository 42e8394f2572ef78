"""experiments.report: the run report puts its answers first, numbers get 3 significant digits,
and the HTML sets a cell's CI on a second line."""

from __future__ import annotations

import re

import pytest

from experiments.report.html import html_page
from experiments.report.markdown import interval, num, pct
from experiments.report.run import run_sections, summary_md


def _iv(mean: float, half: float = 0.5) -> dict[str, float]:
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half}


def _policy(profit: float, learned_return: float | None = None) -> dict[str, dict[str, float]]:
    r = profit if learned_return is None else learned_return
    return {"click_rate": _iv(0.123456, 0.01), "conversion_rate": _iv(0.0234567, 0.002), "return": _iv(r),
            "profit": _iv(r), "episode_length": _iv(7.3333), "offers_sent": _iv(4.5), "roi": _iv(2.0), "coverage": _iv(1.0, 0)}


@pytest.fixture
def results() -> dict:
    """A small results.json: two RL agents (one trained in TrueWorld), two recommenders, an oracle."""
    true_profit = {"ppo": 3.0, "a2c": 2.0, "ppo_true": 9.0, "logistic": 4.0, "mf": 1.0, "oracle_greedy": 20.0}
    learned_return = {"ppo": 4.5, "a2c": 1.0, "ppo_true": 3.0, "logistic": 2.0, "mf": 1.0}
    agents = {"ppo": "learned", "a2c": "learned", "ppo_true": "true"}
    return {
        "config": {"experiment": {"name": "t", "seed": 0, "agents": list(agents),
                                  "evaluation": {"n_users": 4000, "ci_level": 0.95}},
                   "agents": {a: {"train_world": w, "total_timesteps": 100} for a, w in agents.items()},
                   "campaign": {"reward": "profit", "horizon": 20}, "world": {"seed": 0, "n_offers": 24}},
        "provenance": {"git_commit": "abc"},
        "data": {"logs": {"n_rows": 10992, "click_rate": 0.0780567}},
        "worlds": {"true": {"policies": {p: _policy(v) for p, v in true_profit.items()},
                            "paired_differences": {"ppo_minus_logistic": {"profit": {"mean": -1.23456, "ci_low": -2.0,
                                                                                     "ci_high": -0.5}},
                                                   "ppo_minus_oracle_greedy": {"profit": _iv(-17.0)}}},
                   "learned": {"policies": {p: _policy(0, v) for p, v in learned_return.items()}}},
        "sim_to_real": {"kendall_tau": 0.4, "rel_error": {}},
        "simulator": {"fidelity": {"click_auc": 0.57007, "segment_oracle_click_auc": 0.7454, "click_ece": 0.02254,
                                   "c2st_auc": 0.699, "c2st_auc_marginals_baseline": 0.689},
                      "targets_met": {"click_auc": False, "click_ece": False, "c2st_auc": False}},
        "segments": None,
        "recommenders": {"offline_metrics": {"logistic": {"click_auc": 0.7}, "mf": {"click_auc": 0.6}}},
        "ope": {},
        "ope_validation": {"draws": 1, "by_kind": {"RL agent": {
            "policies": ["ppo"], "best": "dm", "best_per_decision": "dm",
            "estimators": {"dm": {"median_rel_error": 0.2154, "coverage": 0.0}}}}},
    }


def test_summary_comes_first_and_answers_the_question(results):
    sections = run_sections(results, has_curves=False)
    assert sections[0][0] == "Summary"
    summary = summary_md(results)
    headline = next(line for line in summary.splitlines() if "Best simulator-trained agent" in line)
    # ppo_true has the best profit but trained in TrueWorld; logistic is the best recommender
    assert "`ppo`" in headline and "`ppo_true`" not in headline
    assert "best recommender** `logistic`" in headline
    assert "-1.23 [-2.00, -0.50]" in headline and "`logistic` wins" in headline
    assert "click AUC 0.570 vs segment oracle 0.745" in summary and "C2ST AUC 0.699" in summary
    assert "Kendall tau of the policy ranking 0.400" in summary
    assert "`ppo` +50%" in summary and "`a2c` -50%" in summary  # learned / true - 1 of the return
    assert "RL agent: `dm` (22% median error)" in summary


def test_policy_table_has_3_significant_digits_and_no_duplicate_return(results):
    body = dict(run_sections(results, has_curves=False))["Policies in TrueWorld"]
    header = next(line for line in body.splitlines() if line.startswith("| policy"))
    assert "profit / user" in header and "return / user" not in header  # reward = profit: return is profit
    ppo = next(line for line in body.splitlines() if line.startswith("| `ppo` |"))
    cells = [c.strip() for c in ppo.strip("|").split("|")][1:]
    assert cells[:3] == ["0.123 [0.113, 0.133]", "0.0235 [0.0215, 0.0255]", "3.00 [2.50, 3.50]"]
    for cell in cells:
        mean = cell.split(" [")[0]
        assert len(re.sub(r"^[-+0.]*", "", mean).replace(".", "")) == 3, cell  # 3 significant digits
    results["config"]["campaign"]["reward"] = "conversion"
    body = dict(run_sections(results, has_curves=False))["Policies in TrueWorld"]
    assert "return / user" in body


@pytest.mark.parametrize("x, text", [(0.07805676, "0.0781"), (22.153, "22.2"), (6.723, "6.72"), (0.991, "0.991"),
                                     (10992, "10,992"), (25, "25"), (1234.4, "1,234"), (9.996, "10.0"), (0.0, "0"),
                                     (-0.0001234, "-0.000123"), (float("nan"), "–"), (None, "–")])
def test_numbers_have_3_significant_digits(x, text):
    assert num(x) == text


def test_intervals_and_percentages():
    assert interval({"mean": 6.723, "ci_low": 5.586, "ci_high": 8.211}) == "6.72 [5.59, 8.21]"
    assert interval({"mean": -0.499, "ci_low": -1.4997, "ci_high": 0.514}, sign=True) == "-0.499 [-1.50, +0.51]"
    assert interval({"mean": 2.0, "ci_low": None, "ci_high": None}) == "2.00"  # one seed: no CI
    assert pct(0.653) == "65%" and pct(-0.0096, sign=True) == "-0.96%"


def test_html_puts_the_ci_on_a_second_line():
    page = html_page("| policy | profit |\n|:---|---:|\n| `a` | 6.72 [5.59, 8.21] |\n", "t")
    assert '6.72<span class="ci">[5.59, 8.21]</span></td>' in page
    assert '<div class="scroll"><table>' in page
