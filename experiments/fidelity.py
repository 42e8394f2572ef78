"""How faithful is the learned simulator? Every number is checked against TrueWorld's truth.

* response model: AUC on held-out users against the oracle and the segment oracle, expected
  calibration error against the *true* probabilities (not sampled outcomes, whose noise floor
  is ~0.005 at this test size), and bootstrap CIs (over users) of AUC gains over baselines;
* whole simulator: fixed policies run in both worlds with paired users; relative errors of
  their click rate, conversion rate and return, and Kendall tau of the policy ranking;
* off the logs (``repeat_probe``): for every offer k the policy that sends k at every step, in
  TrueWorld and in a LearnedWorld of the response model whose users are the logged profiles
  resampled (so the probe judges the response model, not the GAN); learned / true clicks per
  user. Greedy policies repeat offers far more than any logging policy, and a simulator that
  extrapolates fatigue wrongly overrates them (docs/experiments.md, 2026-12-04 (c)).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.stats import kendalltau

from agents.base import DeterministicPolicy, Policy
from envs.vector_env import CampaignVectorEnv
from experiments.collect import rollout
from experiments.evaluate import sharded_rollouts
from experiments.parallel import Workers
from recsys.data.sequences import SequenceData
from recsys.stats import (
    Interval,
    bootstrap_counts,
    expected_calibration_error,
    percentile_interval,
    roc_auc,
)


def paired_auc_difference(
    y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, users: np.ndarray, n_boot: int = 200,
    level: float = 0.95, seed: int = 0,
) -> Interval:
    """AUC(p_a) - AUC(p_b) on the same rows, with a percentile-bootstrap CI that resamples
    users (rows of a user move together, as they are not independent)."""
    point = roc_auc(y, p_a) - roc_auc(y, p_b)
    _, inverse = np.unique(users, return_inverse=True)
    counts = bootstrap_counts(int(inverse.max()) + 1, n_boot, seed)
    diffs = np.array([roc_auc(y, p_a, sample_weight=c[inverse]) - roc_auc(y, p_b, sample_weight=c[inverse])
                      for c in counts])
    return percentile_interval(point, diffs, level)


def response_model_fidelity(
    predictions: dict[str, dict[str, np.ndarray]], test: SequenceData, oracle: dict[str, np.ndarray] | None,
    main: str = "gru", n_boot: int = 200, seed: int = 0,
) -> dict[str, Any]:
    """Metrics of every model's (U, T) predictions on the test users. ``predictions[name]``
    holds ``click``, ``convert`` (given click) and ``churn``; ``oracle`` is
    ``envs.true_world.replay_oracle`` output (None for real logs: no truth-based metrics)."""
    exposed = test.mask & (test.actions > 0)
    users = np.broadcast_to(test.user_ids[:, None], test.actions.shape)[exposed]
    y_click = test.click[exposed]
    y_conv = (test.click * test.conversion)[exposed]

    def ctcvr(p: dict[str, np.ndarray]) -> np.ndarray:
        return (p["click"] * p["convert"])[exposed]

    out: dict[str, Any] = {"n_test_users": int(test.n_users), "n_test_exposures": int(exposed.sum())}
    suffix = {main: "", "none": "_no_history", "logistic": "_logistic", "attention": "_attention"}
    for name, p in predictions.items():
        out[f"click_auc{suffix.get(name, '_' + name)}"] = roc_auc(y_click, p["click"][exposed])
        out[f"conversion_auc{suffix.get(name, '_' + name)}"] = roc_auc(y_conv, ctcvr(p))
    m = predictions[main]
    for baseline in ("none", "logistic"):
        if baseline in predictions:
            b = predictions[baseline]
            key = suffix[baseline]
            out[f"click_auc_gain{key}"] = paired_auc_difference(
                y_click, m["click"][exposed], b["click"][exposed], users, n_boot, seed=seed).as_dict()
            out[f"conversion_auc_gain{key}"] = paired_auc_difference(
                y_conv, ctcvr(m), ctcvr(b), users, n_boot, seed=seed).as_dict()
    if oracle is not None:
        true_ctcvr = (oracle["click"] * oracle["convert"])[exposed]
        seg_ctcvr = (oracle["segment_click"] * oracle["segment_convert"])[exposed]
        out.update({
            "oracle_click_auc": roc_auc(y_click, oracle["click"][exposed]),
            "segment_oracle_click_auc": roc_auc(y_click, oracle["segment_click"][exposed]),
            "oracle_conversion_auc": roc_auc(y_conv, true_ctcvr),
            "segment_oracle_conversion_auc": roc_auc(y_conv, seg_ctcvr),
            "click_ece": expected_calibration_error(m["click"][exposed], oracle["click"][exposed]),
            "conversion_ece": expected_calibration_error(ctcvr(m), true_ctcvr),
            "churn_ece": expected_calibration_error(m["churn"][test.mask], oracle["churn"][test.mask]),
        })
    return out


def policy_fidelity(
    make_true_env: Callable[[int], CampaignVectorEnv],
    make_learned_env: Callable[[int], CampaignVectorEnv],
    policies: dict[str, Callable[[CampaignVectorEnv], Policy]],
    n_users: int, seed: int, n_boot: int = 500, workers: Workers | None = None,
) -> dict[str, Any]:
    """Run each fixed policy in both worlds on the same user seeds (each rollout a job on
    ``workers``); compare."""
    worlds = {"true": make_true_env, "learned": make_learned_env}
    values = {
        world: {name: {k: iv.as_dict() for k, iv in stats.summarise(n_boot).items()}
                for name, stats in sharded_rollouts(make, policies, n_users, seed, workers=workers).items()}
        for world, make in worlds.items()
    }
    rel_error = {}
    for name in policies:
        rel_error[name] = {}
        for metric in ("click_rate", "conversion_rate", "return"):
            t, s = values["true"][name][metric]["mean"], values["learned"][name][metric]["mean"]
            rel_error[name][metric] = float(abs(s - t) / abs(t)) if t != 0 else (0.0 if s == 0 else float("inf"))
    names = list(policies)
    tau = kendalltau([values["true"][n]["return"]["mean"] for n in names],
                     [values["learned"][n]["return"]["mean"] for n in names]).statistic
    return {"policies": values, "rel_error": rel_error, "kendall_tau": float(tau)}


class AlwaysOffer(DeterministicPolicy):
    """Sends one offer at every step ("no offer" where the campaign's rules forbid it)."""

    name = "always_offer"

    def __init__(self, offer: int, n_actions: int) -> None:
        self.offer, self.n_actions = offer, n_actions

    def act(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        a = np.full(len(obs), self.offer)
        return a if masks is None else np.where(masks[:, self.offer], a, 0)


def repeat_probe(make_true_env: Callable[[int], CampaignVectorEnv],
                 make_learned_env: Callable[[int], CampaignVectorEnv], n_actions: int, n_users: int,
                 seed: int) -> dict[str, Any]:
    """Clicks per user of "always send offer k" for every offer, in both worlds on the same user
    seeds: ``ratio`` = learned / true per offer, its median and mean |log ratio| (0 = the
    simulator extrapolates repetition like the world)."""
    clicks = {}
    for world, make in (("true", make_true_env), ("learned", make_learned_env)):
        clicks[world] = [float(rollout(make, lambda env, k=k: AlwaysOffer(k, n_actions), n_users, seed).clicks.mean())
                         for k in range(1, n_actions)]
    ratio = np.array(clicks["learned"]) / np.maximum(np.array(clicks["true"]), 1e-9)
    return {"n_users": n_users, "offers": list(range(1, n_actions)), "true_clicks": clicks["true"],
            "learned_clicks": clicks["learned"], "ratio": ratio.tolist(), "median_ratio": float(np.median(ratio)),
            "mean_abs_log_ratio": float(np.mean(np.abs(np.log(np.maximum(ratio, 1e-9)))))}
