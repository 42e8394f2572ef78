"""Plots and markdown for the simulator fidelity report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from experiments.report import plt, save_figure

# (key, target description, check) rows of the fidelity table; checks mirror the targets
_TARGETS = (
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
    out = {}
    for key, _, check in _TARGETS:
        try:
            out[key] = bool(check(fidelity))
        except KeyError:
            continue
    return out


def plot_calibration(pred: dict[str, np.ndarray], oracle: dict[str, np.ndarray], exposed: np.ndarray, path: Path,
                     n_bins: int = 20) -> None:
    """Reliability against the truth: mean predicted vs mean true probability per bin."""
    pairs = (("click", pred["click"][exposed], oracle["click"][exposed]),
             ("click & convert", (pred["click"] * pred["convert"])[exposed],
              (oracle["click"] * oracle["convert"])[exposed]))
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, (label, p, t) in zip(axes, pairs, strict=True):
        edges = np.quantile(p, np.linspace(0, 1, n_bins + 1)[1:-1])
        b = np.searchsorted(edges, p, side="right")
        count = np.maximum(np.bincount(b, minlength=n_bins), 1)
        mp, mt = np.bincount(b, p, n_bins) / count, np.bincount(b, t, n_bins) / count
        hi = max(mp.max(), mt.max()) * 1.05
        ax.plot([0, hi], [0, hi], color="grey", lw=1, ls="--")
        ax.plot(mp, mt, marker="o")
        ax.set_xlabel("predicted probability (bin mean)")
        ax.set_ylabel("true probability (bin mean)")
        ax.set_title(f"calibration vs truth: {label}")
        ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_policy_values(values: dict[str, dict[str, dict[str, dict[str, float]]]], path: Path) -> None:
    """Fixed policies in TrueWorld vs LearnedWorld (paired users), with 95% CIs."""
    metrics = (("return", "return per user"), ("click_rate", "click rate"), ("conversion_rate", "conversion rate"))
    names = list(values["true"])
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.6))
    x, w = np.arange(len(names)), 0.38
    for ax, (metric, label) in zip(axes, metrics, strict=True):
        for k, (world, color) in enumerate((("true", "tab:green"), ("learned", "tab:purple"))):
            iv = [values[world][n][metric] for n in names]
            mean = np.array([v["mean"] for v in iv])
            err = np.array([[v["mean"] - v["ci_low"] for v in iv], [v["ci_high"] - v["mean"] for v in iv]])
            ax.bar(x + (k - 0.5) * w, mean, w, yerr=err, capsize=2, color=color, label=f"{world} world")
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set_title(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    save_figure(fig, path)


def _iv(d: dict[str, float]) -> str:
    return f"{d['mean']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]"


def fidelity_markdown(f: dict[str, Any], truth_known: bool) -> str:
    lines = ["# Simulator fidelity", ""]
    d = f["data"]
    lines.append(f"Users: {d['train_users']} train, {d['validation_users']} validation, {d['test_users']} test "
                 f"({f['n_test_exposures']} held-out exposures).")
    lines += ["", "## Targets", "", "| metric | value | target | met |", "|---|---|---|---|"]
    checks = target_checks(f)
    for key, desc, _ in _TARGETS:
        if key in checks:
            lines.append(f"| {key} | {f[key]:.4f} | {desc} | {'yes' if checks[key] else '**no**'} |")
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
            lines.append(f"| {label} | {f[ck]:.4f} | {f[vk]:.4f} |")
    lines += ["", "AUC gain of the main model (95% bootstrap CI over users):", "",
              "| baseline | click AUC gain | conversion AUC gain |", "|---|---|---|"]
    for label, sfx in (("no history", "_no_history"), ("logistic", "_logistic")):
        if f"click_auc_gain{sfx}" in f:
            lines.append(f"| {label} | {_iv(f[f'click_auc_gain{sfx}'])} | {_iv(f[f'conversion_auc_gain{sfx}'])} |")
    if truth_known:
        lines += ["", f"Calibration against the true probabilities (ECE, 20 equal-mass bins): click "
                      f"{f['click_ece']:.4f}, p(click & convert) {f['conversion_ece']:.4f}, churn {f['churn_ece']:.4f}.",
                  "", "![calibration](calibration.png)"]
    p = f["profiles"]
    lines += ["", "## Synthetic users (held-out real profiles vs GAN)", "",
              f"C2ST AUC (gradient boosting, 5-fold; 0.5 = indistinguishable): GAN {p['c2st_auc']:.3f}, "
              f"independent marginals {p['c2st_auc_marginals_baseline']:.3f}. Correlation-matrix difference "
              f"{p['correlation_diff']:.3f}.", "",
              "| feature | TV / KS | Wasserstein |", "|---|---|---|"]
    for name, tv in p["marginal_tv"].items():
        lines.append(f"| {name} | {tv:.3f} (TV) | |")
    for name, ks in p["marginal_ks"].items():
        lines.append(f"| {name} | {ks:.3f} (KS) | {p['marginal_wasserstein'][name]:.3f} |")
    lines += ["", "![marginals](marginals.png)", "", "## Fixed policies in both worlds (paired users)", "",
              "| policy | true return | learned return | rel. error CTR | rel. error CVR | rel. error return |",
              "|---|---|---|---|---|---|"]
    w = f["policies"]
    for name, err in w["rel_error"].items():
        lines.append(f"| {name} | {w['policies']['true'][name]['return']['mean']:.3f} | "
                     f"{w['policies']['learned'][name]['return']['mean']:.3f} | {err['click_rate']:.3f} | "
                     f"{err['conversion_rate']:.3f} | {err['return']:.3f} |")
    lines += ["", f"Kendall tau of the policy ranking by return: {w['kendall_tau']:.3f}.", "",
              "![policy values](policy_values.png)", ""]
    return "\n".join(lines)
