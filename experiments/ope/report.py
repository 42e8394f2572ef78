"""The OPE part of a report: estimates vs truth per policy (a plot and tables) and which
estimator to trust for which kind of policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.report import save_figure  # noqa: E402


def plot_ope(section: dict[str, Any], path: Path) -> None:
    """One row per policy: each estimator's estimate with its CI, the true value as a line."""
    names = list(section)
    estimators = list(next(iter(section.values()))["estimators"])
    fig, axes = plt.subplots(len(names), 1, figsize=(9, 1.25 * len(names) + 1.0), squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, name in zip(axes[:, 0], names, strict=True):
        entry = section[name]
        truth = entry["true_value"]
        for i, est in enumerate(estimators):
            e = entry["estimators"].get(est)
            if e is None:
                continue
            ax.errorbar([e["estimate"]], [i], xerr=[[e["estimate"] - e["ci_low"]], [e["ci_high"] - e["estimate"]]],
                        fmt="o", color=colors(i % 10), capsize=2, markersize=4)
        ax.axvline(truth, color="black", lw=1.5)
        ax.axvspan(*entry["true_value_ci"], color="black", alpha=0.12)
        ax.axvline(entry["one_step_value"], color="grey", lw=1, ls="--")
        ax.set_yticks(range(len(estimators)), estimators, fontsize=7)
        ax.invert_yaxis()
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        spread = max(abs(truth), 1e-9)
        values = [v for e in entry["estimators"].values() for v in (e["ci_low"], e["ci_high"])] + [truth]
        lo, hi = max(min(values), truth - 3 * spread), min(max(values), truth + 3 * spread)
        ax.set_xlim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.05 * (hi - lo + 1e-9))
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].set_title("OPE estimate [95% CI] per estimator; black: true value (on-policy, CI shaded); "
                         "dashed: one-step value", fontsize=9)
    save_figure(fig, path)


def ope_markdown(section: dict[str, Any], summary: dict[str, Any], config: dict[str, Any]) -> str:
    estimators = list(next(iter(section.values()))["estimators"])
    draws = summary["draws"]
    lines = [
        f"Each policy's value per user estimated from TrueWorld logs of the logging policy "
        f"({config['n_users']} fresh users per draw, {draws} draw(s)), against its true value from on-policy "
        f"TrueWorld rollouts ({config['truth_users']} users). Per-decision estimators (dm … dr_os) target the "
        "one-step value on the logged states (acting with the policy for one step, then following the log); "
        "pdis, wdr and fqe target the return. Cells: estimate (relative error"
        + (", CI coverage over draws)." if draws > 1 else ")."),
        "",
        "| policy | kind | true value [95% CI] | one-step value | " + " | ".join(estimators) + " |",
        "|---|---|---|---|" + "---|" * len(estimators),
    ]
    for name, entry in section.items():
        lo, hi = entry["true_value_ci"]
        cells = []
        for est in estimators:
            e = entry["estimators"].get(est)
            if e is None:
                cells.append("–")
                continue
            cover = f", {e['coverage']:.0%}" if draws > 1 else ""
            cells.append(f"{e['estimate']:.2f} ({e['rel_error']:.0%}{cover})")
        lines.append(f"| {name} | {entry['kind']} | {entry['true_value']:.2f} [{lo:.2f}, {hi:.2f}] | "
                     f"{entry['one_step_value']:.2f} | " + " | ".join(cells) + " |")
    lines += ["", "**Which estimator to trust** (median relative error across the policies of each kind"
              + (", mean CI coverage" if draws > 1 else "") + "):", "",
              "| kind of policy | policies | best estimator | best per-decision | " + " | ".join(estimators) + " |",
              "|---|---|---|---|" + "---|" * len(estimators)]
    for kind, row in summary["by_kind"].items():
        cells = []
        for est in estimators:
            e = row["estimators"].get(est)
            cells.append("–" if e is None else f"{e['median_rel_error']:.0%}" + (f" / {e['coverage']:.0%}" if draws > 1 else ""))
        lines.append(f"| {kind} | {', '.join(row['policies'])} | {row['best']} | {row['best_per_decision']} | "
                     + " | ".join(cells) + " |")
    if draws < 2:
        lines += ["", "One draw: coverage needs repeated draws (`experiment=ope_validation`)."]
    lines += ["", "![OPE estimates vs truth](ope.png)"]
    return "\n".join(lines)

