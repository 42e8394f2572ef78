"""The Open Bandit Dataset report (``experiments.obd``): BTS's click rate estimated from the
Random logs against its on-policy value, per campaign and estimator."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from experiments.report.html import Section
from experiments.report.markdown import interval, num, table

LOSS_DIGITS = 5  # log losses of a model and of the constant rate differ in the 4th digit


def _truth(res: Mapping[str, Any]) -> dict[str, float]:
    lo, hi = res["true_value_ci"]
    return {"mean": res["true_value"], "ci_low": lo, "ci_high": hi}


def _estimate(e: Mapping[str, Any]) -> dict[str, float]:
    return {"mean": e["estimate"], "ci_low": e["ci_low"], "ci_high": e["ci_high"]}

def obd_sections(results: Mapping[str, Any]) -> list[Section]:
    """The OBD report: setup, data, relative errors, per-campaign estimates, the BTS match and
    the reward model's fit, from the experiment's ``results.json``."""
    obd = results["config"]["experiment"]["obd"]
    ope = results["ope"]
    level = f"{obd['ci_level']:.0%}"
    setup = (
        "Bernoulli TS (production prior of the obp wheel, "
        f"{num(obd['n_sim'])} simulated rankings) evaluated from the **Random** logs; truth = mean click of the "
        "**BTS** logs of the same campaign. Each row (user, item, position) is one decision, weighted by "
        "pi(item | position) / propensity, and the reward model predicts p(click | user, item, position) "
        f"(logistic regression on one-hot user features, item, position and item context; "
        f"{obd['cross_fit_folds']}-fold cross-fitted, C = {obd['reward_l2']}). "
        f"CIs: {level} percentile bootstrap over rows ({obd['n_bootstrap']} resamples; reward model fixed). "
        f"Code `{results['provenance']['git_commit']}`."
    )
    data = table(("campaign", "items", "Random rows (clicks)", "BTS rows (clicks)"),
                 [(c, d["n_items"], f"{num(d['random_rows'])} ({d['random_clicks']})",
                   f"{num(d['bts_rows'])} ({d['bts_clicks']})") for c, d in results["data"].items()])
    campaigns = [p.removeprefix("bts_") for p in ope]
    names = list(next(iter(ope.values()))["estimators"])
    mean_rel = results["summary"]["mean_rel_error"]
    rel = table(("estimator", *campaigns, "mean"),
                [(n, *(num(ope[f"bts_{c}"]["estimators"][n]["rel_error"]) for c in campaigns), num(mean_rel[n]))
                 for n in names]
                + [("on-policy click rate", *(interval(_truth(ope[f"bts_{c}"])) for c in campaigns), "")])
    best = min(mean_rel, key=mean_rel.get)
    summary = (f"- Lowest mean relative error over {len(campaigns)} campaign(s): **`{best}`** ({num(mean_rel[best])}); "
               "with 40-70 clicks per campaign the on-policy CI alone spans about ±30%, so read the ranking loosely.\n"
               + "\n".join(f"- {c}: on-policy click rate {interval(_truth(ope[f'bts_{c}']))}, `{best}` "
                            f"{interval(_estimate(ope[f'bts_{c}']['estimators'][best]))}" for c in campaigns))
    sections = [("Summary", summary), ("Setup", setup), ("Data", data),
                ("Relative error |estimate − on-policy| / on-policy", rel)]
    for policy, res in ope.items():
        rows = [(n, interval(_estimate(e)), num(e["rel_error"]), "yes" if e["covers_true_value"] else "no")
                for n, e in res["estimators"].items()]
        sections.append((f"{policy}: on-policy {interval(_truth(res))}",
                         table(("estimator", f"estimate [{level} CI]", "rel. error", "CI covers on-policy"), rows)))
    match = results["bts_policy"]
    sections.append((
        "How close is the prior-only BTS to the BTS that logged?",
        table(("campaign", "corr. with logged (item, position) frequencies", "corr. with logged propensities",
               "mean TV distance per position", "max weight"),
              [(c, num(m["corr_with_logged_frequencies"]), num(m["corr_with_logged_propensities"]),
                num(m["total_variation_per_position"]), num(m["max_weight"])) for c, m in match.items()])
        + "\n\nThe production BTS updated its posterior during the week; the simulation uses the prior "
          "only (as obp's benchmark does), so the on-policy value belongs to a close, not identical, policy. "
          "With so few clicks the on-policy CI alone spans about ±30%: read relative errors with that in mind."))
    fit = results["reward_model"]
    tau = obd["estimators"]["switch_tau"]
    below = [c for c, m in match.items() if m["max_weight"] <= tau]
    sections.append((
        "Reward model (cross-fitted on the Random logs)",
        table(("campaign", "AUC", "log loss", "log loss of the constant rate"),
              [(c, num(m["auc"]), num(m["log_loss"], LOSS_DIGITS), num(m["log_loss_constant"], LOSS_DIGITS))
               for c, m in fit.items()])
        + "\n\nA reward model that does not beat the constant click rate out of fold carries no usable signal: "
          "DM then mostly returns the Random logs' click rate reweighted by position, and the DR family behaves "
          "like IPS. DM's CI resamples rows with the model fixed, so it leaves out the model's own error and is "
          "far too narrow."
        + (f" Switch-DR equals DR on {', '.join(below)}: no weight exceeds tau = {tau:g}." if below else "")))
    sections.append(("Estimates vs on-policy value", "![OPE estimates](obd_ope.png)"))
    return sections
