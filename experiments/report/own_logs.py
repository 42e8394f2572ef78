"""The report of a run on a user's own logs (``experiments.own_logs``), from ``results.json`` alone.

No section needs a ground truth: the response model is judged against observed held-out
outcomes, synthetic users against held-out real profiles, the simulator's sequences against
the logs' sequences under the (estimated) logging policy, and every policy's learned-world
value against OPE estimates on held-out logs. A section says what cannot be claimed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from experiments.report.html import Section, write_report
from experiments.report.markdown import MISSING, interval, num, pct, table
from experiments.report.plots import Curves, plot_learning_curves, plot_policy_metrics, plt, save_figure
from experiments.report.run import jobs_md, recommenders_md, timings_md
from experiments.report.tables import TABLES_LINK, markdown_table, policy_columns, write_policy_tables

CANNOT_CLAIM = """Without a ground truth this run **cannot** show:

- that any policy's learned-world value is its real value: the simulator was fitted on the logs
  and is only checked on the logged distribution (held-out outcomes, profiles, sequences under
  the logging policy). A policy that sends what the logs rarely sent is evaluated where the
  simulator was never checked, and agents trained in the simulator are the most likely to exploit
  its errors;
- that the policy ranking in the learned world is the real ranking (no sim-to-real Kendall tau);
- that OPE estimates are right: they are independent evidence (they use the logs, not the
  simulator's rollouts), but they rest on the propensities{estimated} and, for DM, DR and FQE,
  on a reward model fitted to the same logs; their CIs leave out that model's error;
- that held-out AUC and calibration measure the truth: they are measured against noisy observed
  outcomes, so an ECE near the binomial noise floor is as good as it can look.

What the run **can** show: how well the simulator reproduces held-out logged users; where the
learned-world value of a policy and independent OPE estimates agree (their CIs overlap), which is
the trust signal for that policy, and where they disagree, which is a warning."""


def write_own_logs_report(out: Path, results: Mapping[str, Any], curves: Curves) -> None:
    """Tables, plots and ``report.md``/``report.html`` of an own-logs run."""
    exp = results["config"]["experiment"]
    level = f"{exp['evaluation']['ci_level']:.0%}"
    write_policy_tables(results["worlds"], out, exp["evaluation"]["ci_level"])
    plot_policy_metrics(results["worlds"]["learned"]["policies"], out / "policy_metrics_learned.png",
                        f"learned world, {exp['evaluation']['n_users']} paired users, {level} CI", agents=exp["agents"])
    plot_observed_calibration(results["observed"]["calibration"], out / "observed_calibration.png")
    plot_sequences(results["sequences"], out / "sequences.png")
    if results["ope"]:
        plot_ope_vs_learned(results["ope"], out / "ope_vs_learned.png")
    has_curves = plot_learning_curves(curves, out / "learning_curves.png", exp["agents"])
    title = f"campaign-gym on your own logs: {exp['name']}, seed {exp['seed']}"
    write_report(out, own_logs_sections(results, has_curves), title)


def by_return(policies: Mapping[str, Any]) -> list[str]:
    return sorted(policies, key=lambda p: -policies[p]["return"]["mean"])


def summary_md(results: Mapping[str, Any]) -> str:
    d, f = results["data"], results["simulator"]["fidelity"]
    logs, obs, seq = d["logs"], results["observed"], results["sequences"]
    where = d["source"].get("path") or d["source"].get("dataset")
    bullets = [f"**No ground truth**: every check compares with the logs themselves ({where}: {num(logs['n_users'])} "
               f"users, {num(logs['n_rows'])} rows, click rate {num(logs['click_rate'])}; propensities "
               f"**{d['source']['propensity']}**; reward `{results['config']['campaign']['reward']}`)."]
    gain = f.get("click_auc_gain_logistic")
    gain_txt = (f"; gain over logistic regression {interval(gain, sign=True)} "
                f"({'CI above 0' if gain['ci_low'] > 0 else 'CI not above 0'})") if gain else ""
    bullets.append(f"**Response model on {num(d['test_users'])} held-out users** (observed clicks): AUC "
                   f"{num(obs['click']['auc'])}{gain_txt}; log-loss {num(obs['click']['log_loss'])}; "
                   f"calibration error {num(obs['click']['ece'])}.")
    p = results["simulator"]["profiles"]
    bullets.append(f"**Synthetic users**: C2ST AUC {num(p['c2st_auc'])} against held-out real profiles "
                   f"(0.5 = indistinguishable; target ≤ 0.6: {'met' if p['c2st_auc'] <= 0.6 else '**missed**'}; "
                   f"independent marginals {num(p['c2st_auc_marginals_baseline'])}).")
    off = [k for k, v in seq["stats"].items() if v["within_tolerance"] is False]
    bullets.append("**Sequences under the logging policy**, simulated vs real: "
                   + ("all defined statistics within 10%" if seq["within_tolerance"] else
                      f"outside 10%: {', '.join(off) or 'none defined'}")
                   + "; " + ", ".join(f"{k.replace('_', ' ')} {num(v['real'])} vs {num(v['simulated'])}"
                                      for k, v in seq["stats"].items()) + ".")
    learned = results["worlds"]["learned"]["policies"]
    best = next((n for n in by_return(learned) if n != "no_offer"), None)
    if best:
        bullets.append(f"**Best policy in the learned world**: `{best}` (return / user {interval(learned[best]['return'])})"
                       + _trust(results, best) + ".")
    bullets.append("What this cannot claim without a ground truth: see the last section.")
    return "\n".join(f"- {b}" for b in bullets)


def _trust(results: Mapping[str, Any], policy: str) -> str:
    agreement = results.get("ope_agreement") or {"policies": {}}
    rows = agreement["policies"].get(policy, {}).get("estimators", {})
    if not rows:
        return "; not evaluated off-policy (add it to experiment.ope.policies)"
    agree = [e for e, r in rows.items() if r["cis_overlap"]]
    text = (f"; OPE on held-out logs agrees (CIs overlap) with {len(agree)} of the {len(rows)} sequential "
            f"estimators ({', '.join(rows)})" + (f": {', '.join(agree)}" if agree else ""))
    known = agreement.get("known_answer", {})
    failed = [e for e in agree if known.get(e) is False]
    if failed:
        text += (f", but {', '.join(failed)} {'fails' if len(failed) == 1 else 'fail'} the known-answer check on the "
                 "logging policy, so " + ("no estimator vouches for it" if len(failed) == len(agree) else
                                          f"only {', '.join(e for e in agree if e not in failed)} counts"))
    return text


def observed_md(obs: Mapping[str, Any], fidelity: Mapping[str, Any]) -> str:
    heads = [h for h in ("click", "conversion", "churn") if h in obs]
    cols = ("rows", "observed_rate", "mean_prediction", "auc", "log_loss", "ece")
    main = table(("outcome", *cols), [(h, *(num(obs[h][c]) for c in cols)) for h in heads])
    gains = [(label, interval(fidelity[k], sign=True)) for label, k in
             (("logistic regression", "click_auc_gain_logistic"), ("no history", "click_auc_gain_no_history"))
             if k in fidelity]
    seg = table(("segment", "users", *cols), [(n, num(s["users"]), *(num(s[c]) for c in cols))
                                              for n, s in obs["segments"].items()])
    return (main + "\n\nECE: 20 equal-mass bins of the prediction against the observed rate; outcomes are 0/1, "
            "so even a perfect model has an ECE of about the binomial noise of a bin.\n\n"
            + ("Click AUC gain of the main model (95% bootstrap CI over users):\n\n"
               + table(("baseline", "gain"), gains) + "\n\n" if gains else "")
            + "![calibration against observed clicks](observed_calibration.png)\n\nPer segment (clicks):\n\n" + seg)


def profiles_md(p: Mapping[str, Any]) -> str:
    rows = [(n, num(v), "TV") for n, v in p["marginal_tv"].items()]
    rows += [(n, num(v), "KS") for n, v in p["marginal_ks"].items()]
    return (f"C2ST AUC (a classifier telling real from synthetic, 5-fold): GAN {num(p['c2st_auc'])}, independent "
            f"marginals {num(p['c2st_auc_marginals_baseline'])}; {num(p['n_real'])} held-out real users. "
            f"Correlation-matrix difference {num(p['correlation_diff'])}.\n\n"
            + table(("feature", "distance", "kind"), rows) + "\n\n![marginals](marginals.png)")


def sequences_md(seq: Mapping[str, Any]) -> str:
    rows = [(k.replace("_", " "), num(v["real"]), num(v["simulated"]), pct(v["rel_diff"], sign=True),
             MISSING if v["within_tolerance"] is None else "yes" if v["within_tolerance"] else "**no**")
            for k, v in seq["stats"].items()]
    return ("Real: the held-out users' logs. Simulated: the learned world under the estimated logging policy "
            "(`logging`: the logs' per-step action frequencies, `agents.behaviour`), "
            f"{num(seq['simulated']['users'])} users. Rates are per send; time between sends in steps. "
            "A relative difference is undefined when the real value is 0.\n\n"
            + table(("statistic", "real", "simulated", "difference", "within 10%"), rows)
            + "\n\n![sequence statistics by step](sequences.png)")


def policies_md(results: Mapping[str, Any]) -> str:
    policies = results["worlds"]["learned"]["policies"]
    no_money = not results["data"]["logs"]["conversion_rate"]  # no conversions logged: no revenue, ROI or CVR
    metrics = [m for m in next(iter(policies.values())) if not (no_money and m in ("profit", "roi", "conversion_rate"))]
    return ("Mean [95% CI] per user, the same simulated users for every policy, best return first. These are the "
            "simulator's numbers, not real ones.\n\n" + markdown_table(by_return(policies), policy_columns(policies, metrics),
                                                                       bold=False)
            + f"\n\n![policy metrics](policy_metrics_learned.png)\n\n{TABLES_LINK}")


def ope_md(results: Mapping[str, Any]) -> str:
    ope, agreement = results["ope"], results["ope_agreement"]
    sequential = sorted({e for p in ope.values() for e, v in p["estimators"].items() if v["target"] == "sequential"})
    one_step = sorted({e for p in ope.values() for e, v in p["estimators"].items() if v["target"] != "sequential"})

    def cell(p: str, e: str) -> str:
        v = ope[p]["estimators"].get(e)
        if v is None:
            return MISSING
        mark = agreement["policies"].get(p, {}).get("estimators", {}).get(e, {}).get("cis_overlap")
        text = interval({"mean": v["estimate"], "ci_low": v["ci_low"], "ci_high": v["ci_high"]})
        return text + (" ✓" if mark else " ✗" if mark is False else "")

    rows = [(f"`{p}`", interval(ope[p]["learned_value"]), *(cell(p, e) for e in sequential)) for p in ope]
    taus = ", ".join(f"{e} {num(t)}" for e, t in agreement["kendall_tau"].items()) or MISSING
    prop = results["data"]["source"]["propensity"]
    note = {"estimated": " Propensities are **estimated** (a behaviour model), so every importance-weighted estimate "
                         "rests on that model.",
            "absent": " The file has no propensities: only model-based estimators ran.", "logged": ""}[prop]
    lv = results["ope_logged_value"]
    text = (f"{num(results['data']['test_users'])} held-out logged users, never used to fit the simulator. Return per "
            f"user; ✓: the learned-world CI and the estimator's CI overlap (agreement, the trust signal), ✗: they do "
            f"not. The logs' own mean return (the logging policy's on-policy value, the one value the data knows): "
            f"{interval(lv)}.{note}\n\n"
            + table(("policy", "learned world", *sequential), rows)
            + f"\n\nKendall tau between the learned-world and each estimator's policy ranking: {taus}.")
    if "logging" in ope and lv:
        text += "\n\n" + logging_check_md(ope["logging"], lv)
    if one_step:
        rows = [(f"`{p}`", *(cell(p, e) for e in one_step)) for p in ope]
        text += ("\n\nPer-decision estimators target the one-step value (act once, then follow the logs), not the "
                 "return, so they are shown apart:\n\n" + table(("policy", *one_step), rows))
    return text + "\n\n![learned world vs OPE](ope_vs_learned.png)"


def logging_check_md(logging: Mapping[str, Any], logged: Mapping[str, Any]) -> str:
    """The one check with a known answer: each estimator on the (estimated) logging policy against
    the logs' own return. Per-decision estimators target a different quantity, but on the logging
    policy itself the one-step value equals the return too."""
    rows = [(e, interval({"mean": v["estimate"], "ci_low": v["ci_low"], "ci_high": v["ci_high"]}),
             "yes" if v["ci_low"] <= logged["mean"] <= v["ci_high"] else "**no**") for e, v in logging["estimators"].items()]
    return (f"**Check with a known answer**: every estimator on `logging` (the estimated logging policy) against the "
            f"logs' own return {interval(logged)}. An estimator that misses it here is not to be trusted for the "
            "other policies either.\n\n" + table(("estimator", "estimate on `logging`", "CI covers the logged return"),
                                                  rows))


def setup_md(results: Mapping[str, Any]) -> str:
    cfg, d = results["config"], results["data"]
    agents = ", ".join(f"`{n}` ({num(cfg['agents'][n]['total_timesteps'])} steps)" for n in cfg["experiment"]["agents"])
    notes = "\n".join(f"- {n}" for n in d["source"]["catalog"])
    return (f"Horizon {cfg['campaign']['horizon']}, reward `{cfg['campaign']['reward']}`; agents trained in the learned "
            f"world: {agents or 'none'}. Code `{results['provenance']['git_commit']}`.\n\nCatalog:\n\n{notes}")


def own_logs_sections(results: Mapping[str, Any], has_curves: bool) -> list[Section]:
    f = results["simulator"]["fidelity"]
    sections = [("Summary", summary_md(results)),
                ("Response model against observed outcomes (held-out users)", observed_md(results["observed"], f)),
                ("Synthetic vs real users (held-out profiles)", profiles_md(results["simulator"]["profiles"])),
                ("Sequences: real vs simulated under the logging policy", sequences_md(results["sequences"])),
                ("Policies in the learned world", policies_md(results))]
    if results["ope"]:
        sections.append(("Learned-world value vs OPE on held-out logs", ope_md(results)))
    sections.append(("Supervised recommenders: offline metrics on held-out users",
                     recommenders_md(results["recommenders"]["offline_metrics"])))
    if has_curves:
        sections.append(("Learning curves (TensorBoard event files in `tensorboard/`)", "![learning curves](learning_curves.png)"))
    sections += [("What cannot be claimed without a ground truth",
                  CANNOT_CLAIM.format(estimated=" (estimated here)" if results["data"]["source"]["propensity"] == "estimated"
                                      else "")),
                 ("Setup and data", setup_md(results)),
                 ("Stage timings (wall-clock seconds on this machine)", timings_md(results["timings"]))]
    if results.get("jobs"):
        sections.append(("Parallel jobs (seconds each took where it ran)", jobs_md(results["jobs"])))
    return sections


# ------------------------------------------------------------------------------------------------ plots
def plot_observed_calibration(cal: Mapping[str, Any], path: Path) -> None:
    """Reliability diagram of p(click) against observed held-out clicks."""
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
    w = np.asarray(cal["weight"])
    ax.scatter(cal["mean_prediction"], cal["observed_rate"], s=30 + 400 * w, alpha=0.7)
    ax.set(xlabel="predicted p(click)", ylabel="observed click rate", title="held-out calibration (observed)")
    save_figure(fig, path)


def plot_sequences(seq: Mapping[str, Any], path: Path) -> None:
    """Per step: share of users still active, send, click and repeat rates; real vs simulated."""
    keys = ("active_share", "send_rate", "click_rate", "repeat_rate")
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
    for ax, key in zip(axes, keys, strict=True):
        for label, stats in (("real", seq["real"]), ("simulated", seq["simulated"])):
            y = [np.nan if v is None else v for v in stats["by_step"][key]]
            ax.plot(range(len(y)), y, marker=".", label=label)
        ax.set(title=key.replace("_", " "), xlabel="step")
        ax.grid(alpha=0.3)
    axes[0].legend()
    save_figure(fig, path)


def plot_ope_vs_learned(ope: Mapping[str, Any], path: Path) -> None:
    """Per policy: the learned-world return and each sequential estimate, with CIs."""
    names = list(ope)
    ests = sorted({e for p in ope.values() for e, v in p["estimators"].items() if v["target"] == "sequential"})
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(names) + 1.5))
    series = [("learned world", {p: ope[p]["learned_value"] for p in names if ope[p]["learned_value"]})]
    series += [(e, {p: {"mean": ope[p]["estimators"][e]["estimate"], "ci_low": ope[p]["estimators"][e]["ci_low"],
                        "ci_high": ope[p]["estimators"][e]["ci_high"]} for p in names if e in ope[p]["estimators"]})
               for e in ests]
    for k, (label, vals) in enumerate(series):
        y = [names.index(p) + 0.8 * (k / max(len(series), 1) - 0.4) for p in vals]
        m = np.array([v["mean"] for v in vals.values()])
        err = [m - [v["ci_low"] for v in vals.values()], [v["ci_high"] for v in vals.values()] - m]
        ax.errorbar(m, y, xerr=err, fmt="o", capsize=3, label=label)
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="return per user", title="learned world vs OPE on held-out logs")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)
