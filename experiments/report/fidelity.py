"""``fidelity.md``: the simulator's fidelity against its targets, from ``fidelity.json``'s content.

``TARGETS`` names what "faithful enough" means for each headline number; ``target_checks``
applies them (a threshold per number, the ``targets_met`` of ``results.json``).
"""

from __future__ import annotations

from typing import Any

from experiments.report.markdown import interval, num

# (key, target description, check) rows of the fidelity table; checks mirror the targets
TARGETS = (
    ("click_auc", "≥ segment oracle − 0.01", lambda f: f["click_auc"] >= f["segment_oracle_click_auc"] - 0.01),
    ("conversion_auc", "≥ segment oracle − 0.01",
     lambda f: f["conversion_auc"] >= f["segment_oracle_conversion_auc"] - 0.01),
    ("click_ece", "≤ 0.005 (vs true probabilities)", lambda f: f["click_ece"] <= 0.005),
    ("conversion_ece", "≤ 0.005 (p(click & convert) vs truth)", lambda f: f["conversion_ece"] <= 0.005),
    ("c2st_auc", "≤ 0.6 and < marginals baseline",
     lambda f: f["c2st_auc"] <= 0.6 and f["c2st_auc"] < f["c2st_auc_marginals_baseline"]),
    ("logging_ctr_rel_error", "≤ 0.05", lambda f: f["logging_ctr_rel_error"] <= 0.05),
    ("logging_cvr_rel_error", "≤ 0.05", lambda f: f["logging_cvr_rel_error"] <= 0.05),
    ("kendall_tau", "≥ 0.8", lambda f: f["kendall_tau"] >= 0.8 - 1e-9),  # tau of 5 policies is a multiple of 0.2
)


def target_checks(fidelity: dict[str, Any]) -> dict[str, bool]:
    """Per headline number present in ``fidelity``: whether it meets its target."""
    out = {}
    for key, _, check in TARGETS:
        try:
            out[key] = bool(check(fidelity))
        except KeyError:
            continue
    return out


def fidelity_markdown(f: dict[str, Any], truth_known: bool) -> str:
    """The whole ``fidelity.md``; ``truth_known``: TrueWorld's oracle rows and calibration are shown."""
    lines = ["# Simulator fidelity", ""]
    d = f["data"]
    lines.append(f"Users: {d['train_users']} train, {d['validation_users']} validation, {d['test_users']} test "
                 f"({f['n_test_exposures']} held-out exposures).")
    lines += ["", "## Targets", "", "| metric | value | target | met |", "|---|---|---|---|"]
    checks = target_checks(f)
    for key, desc, _ in TARGETS:
        if key in checks:
            lines.append(f"| {key} | {num(f[key])} | {desc} | {'yes' if checks[key] else '**no**'} |")
    lines += ["", "## Response model on held-out users", "",
              "| model | click AUC | conversion AUC |", "|---|---|---|"]
    rows = [("GRU history (main)", "")] + [(n, s) for n, s in (("no history (same network)", "_no_history"),
                                                              ("logistic regression", "_logistic"),
                                                              ("causal self-attention history", "_attention"))]
    if truth_known:
        rows += [("segment oracle", "segment_oracle"), ("oracle (sees the hidden latent)", "oracle")]
    for label, sfx in rows:
        if sfx in ("segment_oracle", "oracle"):
            ck, vk = f"{sfx}_click_auc", f"{sfx}_conversion_auc"
        else:
            ck, vk = f"click_auc{sfx}", f"conversion_auc{sfx}"
        if ck in f:
            lines.append(f"| {label} | {num(f[ck])} | {num(f[vk])} |")
    lines += ["", "AUC gain of the main model (95% bootstrap CI over users):", "",
              "| baseline | click AUC gain | conversion AUC gain |", "|---|---|---|"]
    for label, sfx in (("no history", "_no_history"), ("logistic", "_logistic")):
        if f"click_auc_gain{sfx}" in f:
            lines.append(f"| {label} | {interval(f[f'click_auc_gain{sfx}'], sign=True)} | {interval(f[f'conversion_auc_gain{sfx}'], sign=True)} |")
    if truth_known:
        lines += ["", f"Calibration against the true probabilities (ECE, 20 equal-mass bins): click "
                      f"{num(f['click_ece'])}, p(click & convert) {num(f['conversion_ece'])}, churn {num(f['churn_ece'])}.",
                  "", "![calibration](calibration.png)"]
    p = f["profiles"]
    lines += ["", "## Synthetic users (held-out real profiles vs GAN)", "",
              f"C2ST AUC (gradient boosting, 5-fold; 0.5 = indistinguishable): GAN {num(p['c2st_auc'])}, "
              f"independent marginals {num(p['c2st_auc_marginals_baseline'])}. Correlation-matrix difference "
              f"{num(p['correlation_diff'])}.", "",
              "| feature | TV / KS | Wasserstein |", "|---|---|---|"]
    for name, tv in p["marginal_tv"].items():
        lines.append(f"| {name} | {num(tv)} (TV) | |")
    for name, ks in p["marginal_ks"].items():
        lines.append(f"| {name} | {num(ks)} (KS) | {num(p['marginal_wasserstein'][name])} |")
    lines += ["", "![marginals](marginals.png)", ""]
    if f["policies"] is None:  # own logs: no TrueWorld to compare with (experiments.own_logs reports instead)
        return "\n".join(lines)
    lines += ["## Fixed policies in both worlds (paired users)", "",
              "| policy | true return | learned return | rel. error CTR | rel. error CVR | rel. error return |",
              "|---|---|---|---|---|---|"]
    w = f["policies"]
    for name, err in w["rel_error"].items():
        lines.append(f"| {name} | {num(w['policies']['true'][name]['return']['mean'])} | "
                     f"{num(w['policies']['learned'][name]['return']['mean'])} | {num(err['click_rate'])} | "
                     f"{num(err['conversion_rate'])} | {num(err['return'])} |")
    lines += ["", f"Kendall tau of the policy ranking by return: {num(w['kendall_tau'])}.", "",
              "![policy values](policy_values.png)", ""]
    probe = f.get("repeat_probe")
    if probe:
        r = probe["ratio"]
        lines += ["## Off the logs: repeated offers", "",
                  f"Each offer sent at every step, {probe['n_users']:,} users per offer in both worlds (learned "
                  "users: the logged profiles resampled, so this judges the response model). Clicks per user, "
                  f"learned / true: median {num(probe['median_ratio'])}, range {num(min(r))}–{num(max(r))}, mean "
                  f"|log ratio| {num(probe['mean_abs_log_ratio'])}. Greedy recommenders repeat offers more than "
                  "the logging policy ever did; a ratio above 1 is a simulator that overrates them.", "",
                  "![repeated offers](repeat_probe.png)", ""]
    return "\n".join(lines)
