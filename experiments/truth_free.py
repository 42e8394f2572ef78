"""What a simulator fitted on a user's own logs can be judged by when there is no ground truth.

TrueWorld runs check the simulator against the truth (``experiments.fidelity``). Real logs only
offer their own observed outcomes, so the checks here compare with the logs themselves:

* ``observed_fidelity``: the response model's held-out click (and, when logged, conversion and
  churn) AUC, log-loss and calibration against the *observed* outcomes of held-out users,
  overall and per segment. Outcomes are noisy, so the calibration error has a noise floor.
* ``sequence_stats`` / ``compare_sequences``: session length, send rate, click rate and repeat
  rate by step, and time between sends, in real held-out logs and in logs the learned world
  generates under the estimated logging policy (``agents.behaviour``).
* ``held_out_ope`` / ``ope_agreement``: every policy's OPE estimates on held-out logged users
  beside its value in the learned world; their agreement is the trust signal. The logs' own
  return is the one on-policy value the data knows (of the logging policy).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.stats import kendalltau

from agents.base import Policy, logged_action_probs
from envs.vector_env import CampaignVectorEnv
from experiments.ope.estimators import Estimator
from experiments.ope.evaluate import estimate_all
from experiments.parallel import Workers
from recsys.data.replay import LoggedData
from recsys.data.sequences import SequenceData
from recsys.simulator.response_model import predict
from recsys.stats import bootstrap_mean, calibration_bins, expected_calibration_error, log_loss, roc_auc

MODEL_ONLY = ("dm", "fqe")  # OPE estimators that need no propensities
MAX_SEGMENT_CODES = 8  # a categorical profile feature with more codes is not used as a segment
TOLERANCE = 0.10  # "simulated within 10% of real" (the target for session statistics)
SEQUENCE_STATS = ("session_length", "send_rate", "click_rate", "repeat_rate", "time_between_sends")


# ------------------------------------------------------------------ response model vs observed outcomes
def _scores(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    return {"rows": int(len(y)), "observed_rate": float(np.mean(y)) if len(y) else None,
            "mean_prediction": float(np.mean(p)) if len(y) else None, "auc": roc_auc(y, p) if len(y) else None,
            "log_loss": log_loss(y, p), "ece": expected_calibration_error(p, y) if len(y) else None}


def _segments(test: SequenceData) -> dict[str, np.ndarray]:
    """Boolean user masks: one per code of each categorical profile feature with at most
    ``MAX_SEGMENT_CODES`` codes, and the terciles of each numeric one."""
    out = {}
    for j, (name, card) in enumerate(zip(test.cat_names, test.cardinalities, strict=True)):
        if card <= MAX_SEGMENT_CODES:
            for code in range(card):
                out[f"{name}={code}"] = test.profile_cat[:, j] == code
    for j, name in enumerate(test.num_names):
        x = test.profile_num[:, j]
        lo, hi = np.quantile(x, [1 / 3, 2 / 3])
        out.update({f"{name} <= {lo:.4g}": x <= lo, f"{lo:.4g} < {name} <= {hi:.4g}": (x > lo) & (x <= hi),
                    f"{name} > {hi:.4g}": x > hi})
    return {k: v for k, v in out.items() if v.any()}


def observed_fidelity(model: Any, test: SequenceData) -> dict[str, Any]:
    """The response model on held-out users against their observed outcomes (module docstring);
    ``calibration``: equal-mass bins of p(click) (mean prediction, observed rate, share of rows)."""
    p = predict(model, test)
    exposed = test.mask & (test.actions > 0)
    heads = {"click": (test.click, p["click"], exposed)}
    if test.conversion[exposed].any():
        heads["conversion"] = (test.click * test.conversion, p["click"] * p["convert"], exposed)
    if test.churned[test.mask].any():
        heads["churn"] = (test.churned, p["churn"], test.mask)
    out: dict[str, Any] = {name: _scores(y[m], q[m]) for name, (y, q, m) in heads.items()}
    pred, obs, weight = calibration_bins(p["click"][exposed], test.click[exposed], n_bins=10)
    out["calibration"] = {"mean_prediction": pred.tolist(), "observed_rate": obs.tolist(), "weight": weight.tolist()}
    out["segments"] = {name: {"users": int(users.sum()),
                              **_scores(test.click[users][exposed[users]], p["click"][users][exposed[users]])}
                       for name, users in _segments(test).items()}
    return out


# ---------------------------------------------------------------------------------- sequence statistics
def sequence_stats(data: SequenceData) -> dict[str, Any]:
    """Session statistics of logged sequences: per-user means and per-step curves."""
    mask, sends = data.mask, data.mask & (data.actions > 0)
    repeat = np.zeros_like(sends)
    seen = np.zeros((data.n_users, data.n_actions), dtype=bool)
    rows = np.arange(data.n_users)
    for t in range(data.horizon):
        a = data.actions[:, t]
        repeat[:, t] = sends[:, t] & seen[rows, a]
        seen[rows[sends[:, t]], a[sends[:, t]]] = True
    users, steps = np.nonzero(sends)  # row-major: by user, then step
    same = users[1:] == users[:-1]
    gaps = (steps[1:] - steps[:-1])[same]
    n_sends, n_active = sends.sum(axis=0), mask.sum(axis=0)

    def per_step(x: np.ndarray, denom: np.ndarray) -> list[float | None]:
        return [float(v / d) if d else None for v, d in zip(x, denom, strict=True)]

    return {
        "users": int(data.n_users),
        "session_length": float(mask.sum(axis=1).mean()),
        "send_rate": float(sends.sum() / max(mask.sum(), 1)),
        "click_rate": float(data.click[sends].mean()) if sends.any() else None,
        "repeat_rate": float(repeat.sum() / sends.sum()) if sends.any() else None,
        "time_between_sends": float(gaps.mean()) if len(gaps) else None,
        "by_step": {"active_share": (n_active / max(data.n_users, 1)).tolist(),
                    "send_rate": per_step(n_sends, n_active),
                    "click_rate": per_step((data.click * sends).sum(axis=0), n_sends),
                    "repeat_rate": per_step(repeat.sum(axis=0), n_sends)},
    }


def compare_sequences(real: dict[str, Any], simulated: dict[str, Any]) -> dict[str, Any]:
    """Per statistic: real, simulated, relative difference (None when the real value is 0 or
    missing) and whether it is within ``TOLERANCE``; ``within_tolerance``: all defined ones are.
    A real 0 (e.g. MovieLens' repeat rate: nobody rates a movie twice) is matched only by a
    simulated 0: any other value is off by an unbounded ratio."""
    rows = {}
    for key in SEQUENCE_STATS:
        r, s = real[key], simulated[key]
        rel = (s - r) / abs(r) if r and s is not None else None
        within = None if rel is None else bool(abs(rel) <= TOLERANCE)
        if r == 0 and s is not None:
            within = s == 0
        rows[key] = {"real": r, "simulated": s, "rel_diff": rel,
                     "abs_diff": s - r if r is not None and s is not None else None, "within_tolerance": within}
    checked = [v["within_tolerance"] for v in rows.values() if v["within_tolerance"] is not None]
    return {"tolerance": TOLERANCE, "stats": rows, "within_tolerance": bool(checked) and all(checked),
            "real": real, "simulated": simulated}


# ------------------------------------------------------------------------------- OPE on held-out logs
def held_out_ope(policies: dict[str, Callable[[CampaignVectorEnv], Policy]], probe: Callable[[], CampaignVectorEnv],
                 logged: LoggedData, rewards: np.ndarray, q_hat: np.ndarray, estimators: list[Estimator],
                 n_boot: int, level: float, seed: int, workers: Workers | None = None) -> dict[str, Any]:
    """Every estimator for every policy on the held-out logged users (``probe()``: an env the
    policies are built for), one job per policy; ``logged_value``: the logs' own mean return
    per user."""
    jobs = workers or Workers(1)
    kind = {e.name: e.kind for e in estimators}
    estimates = jobs.gather({name: jobs.submit(_policy_estimates, factory, probe, logged, rewards, q_hat, estimators,
                                               n_boot, level, seed) for name, factory in policies.items()},
                            "ope: held-out logs", progress=False)
    return {"logged_value": bootstrap_mean(rewards.sum(axis=1), n_boot, level, seed).as_dict(),
            "policies": {name: {e: {**iv.as_dict(), "target": kind[e]} for e, iv in estimates[name].items()}
                         for name in policies}}


def _policy_estimates(factory: Callable[[CampaignVectorEnv], Policy], probe: Callable[[], CampaignVectorEnv],
                      logged: LoggedData, rewards: np.ndarray, q_hat: np.ndarray, estimators: list[Estimator],
                      n_boot: int, level: float, seed: int) -> dict[str, Any]:
    pi = logged_action_probs(factory(probe()), logged)
    return estimate_all(logged, rewards, pi, q_hat, estimators, n_boot, level, seed)


def ope_agreement(learned: dict[str, Any], ope: dict[str, Any], sequential: tuple[str, ...]) -> dict[str, Any]:
    """Per policy and sequential estimator (same target: the return per user): the learned-world
    return against the estimate, their relative gap and whether the two CIs overlap; per
    estimator, Kendall tau of the two policy rankings (3 or more policies), and whether it passes
    the one check with a known answer (``known_answer``: its CI on the ``logging`` policy covers
    the logs' own mean return; None when ``logging`` was not estimated). An estimator that fails
    it is no witness for the other policies, so its agreement is no trust signal."""
    logged, on_logging = ope.get("logged_value"), ope["policies"].get("logging", {})
    known: dict[str, bool | None] = {}
    for e in sequential:
        iv = on_logging.get(e)
        known[e] = None if not (logged and iv) else bool(iv["ci_low"] <= logged["mean"] <= iv["ci_high"])
    per_policy, names = {}, [p for p in ope["policies"] if p in learned]
    for p in names:
        lw = learned[p]["return"]
        rows = {}
        for e, iv in ope["policies"][p].items():
            if e in sequential:
                rows[e] = {"rel_gap": (lw["mean"] - iv["mean"]) / abs(iv["mean"]) if iv["mean"] else None,
                           "cis_overlap": bool(lw["ci_low"] <= iv["ci_high"] and iv["ci_low"] <= lw["ci_high"])}
        per_policy[p] = {"learned_return": lw, "estimators": rows}
    tau = {}
    for e in sequential:
        have = [p for p in names if e in ope["policies"][p]]
        if len(have) >= 3:
            t = kendalltau([learned[p]["return"]["mean"] for p in have],
                           [ope["policies"][p][e]["mean"] for p in have]).statistic
            tau[e] = None if np.isnan(t) else float(t)
    return {"policies": per_policy, "kendall_tau": tau, "known_answer": known}
