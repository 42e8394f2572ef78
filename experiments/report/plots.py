"""Every figure of the reports: policies with CIs, learning curves, calibration, OPE estimates.

Each function draws one PNG from a results dict (or, for ``read_scalars``, TensorBoard event
files) and writes it atomically; none computes a statistic.
"""

from __future__ import annotations

import io
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from envs.world import Profiles  # noqa: E402
from experiments.config import ALGOS  # noqa: E402
from experiments.report.markdown import METRIC_LABELS  # noqa: E402
from recsys.artifacts import atomic_write_bytes  # noqa: E402
from recsys.stats import calibration_bins  # noqa: E402

RL_AGENTS = ALGOS  # drawn in orange

_MARGINAL_BINS = 50  # histogram bins per numeric profile feature
_PANELS = (("profit", "profit per user"), ("click_rate", "click rate per offer"),
           ("conversion_rate", "conversion rate per offer"), ("episode_length", "episode length (retention)"))


def save_figure(fig: plt.Figure, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_policy_metrics(policies: dict[str, dict[str, dict[str, float]]], path: Path, title: str,
                        agents: Collection[str] = RL_AGENTS) -> None:
    """One panel per metric: a bar per policy with its 95% CI; RL ``agents`` in orange."""
    names = sorted(policies, key=lambda p: policies[p]["profit"]["mean"])
    fig, axes = plt.subplots(1, len(_PANELS), figsize=(4.2 * len(_PANELS), 0.45 * len(names) + 1.6), sharey=True)
    for ax, (metric, label) in zip(axes, _PANELS, strict=True):
        means = [policies[p][metric]["mean"] for p in names]
        lo = [policies[p][metric]["mean"] - policies[p][metric]["ci_low"] for p in names]
        hi = [policies[p][metric]["ci_high"] - policies[p][metric]["mean"] for p in names]
        colors = ["tab:orange" if p in agents else "tab:blue" for p in names]
        ax.barh(names, means, xerr=[lo, hi], color=colors, capsize=3)
        ax.set_title(label)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title)
    save_figure(fig, path)


Curves = dict[str, dict[str, list[tuple[int, float]]]]  # tag -> run (agent) -> (step, value)


def plot_learning_curves(curves: Curves, path: Path, agents: Collection[str] | None = None) -> bool:
    """One panel per scalar, one line per agent (``agents``: which runs, in this order);
    False if there is nothing to plot."""
    curves = {tag: {run: pts for run, pts in runs.items() if pts and (agents is None or run in agents)}
              for tag, runs in curves.items()}
    curves = {tag: runs for tag, runs in curves.items() if runs}
    if not curves:
        return False
    fig, axes = plt.subplots(1, len(curves), figsize=(4.3 * len(curves), 3.4), squeeze=False)
    order = list(agents) if agents is not None else sorted({r for runs in curves.values() for r in runs})
    colors = {run: plt.get_cmap("tab10")(i % 10) for i, run in enumerate(order)}
    for ax, (tag, runs) in zip(axes[0], curves.items(), strict=True):
        for run in order:
            if run in runs:
                steps, values = zip(*sorted(runs[run]), strict=True)
                ax.plot(steps, values, label=run, color=colors[run], lw=1.2, marker="." if len(steps) < 20 else None)
        ax.set_title(tag, fontsize=9)
        ax.set_xlabel("env steps")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    save_figure(fig, path)
    return True


def read_scalars(event_dir: Path, tags: tuple[str, ...]) -> Curves:
    """Scalars from every TensorBoard event file under ``event_dir``, per run directory
    (SB3 names them ``<agent>_<n>``; the suffix is dropped)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves: Curves = {t: {} for t in tags}
    for events in sorted(Path(event_dir).rglob("events.out.tfevents.*")):
        run = events.parent.name.rsplit("_", 1)[0] if events.parent.name[-1:].isdigit() else events.parent.name
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in tags:
            if tag in acc.Tags().get("scalars", []):
                curves[tag].setdefault(run, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return curves


def plot_calibration(pred: dict[str, np.ndarray], oracle: dict[str, np.ndarray], exposed: np.ndarray, path: Path,
                     n_bins: int = 20) -> None:
    """Reliability against the truth: mean predicted vs mean true probability per bin."""
    pairs = (("click", pred["click"][exposed], oracle["click"][exposed]),
             ("click & convert", (pred["click"] * pred["convert"])[exposed],
              (oracle["click"] * oracle["convert"])[exposed]))
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, (label, p, t) in zip(axes, pairs, strict=True):
        mp, mt, _ = calibration_bins(p, t, n_bins)
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


def plot_repeat_probe(probe: dict[str, Any], path: Path) -> None:
    """Per offer: clicks per user of "always send it", learned / true (1 = faithful off the logs)."""
    ratio = np.asarray(probe["ratio"])
    fig, ax = plt.subplots(figsize=(max(5.0, 0.25 * len(ratio) + 2.0), 3.2))
    colors = np.where(ratio > 1.1, "tab:red", np.where(ratio < 0.9, "tab:blue", "tab:grey"))
    ax.bar(probe["offers"], ratio, color=colors)
    ax.axhline(1.0, color="black", lw=1)
    ax.set_xlabel("offer sent at every step")
    ax.set_yscale("log")  # 2x too many and 2x too few are equally wrong
    ax.set_ylabel("clicks per user, learned / true")
    ax.set_title(f"Repeated offers: median {probe['median_ratio']:.2f}, mean |log ratio| "
                 f"{probe['mean_abs_log_ratio']:.2f} ({probe['n_users']:,} users per offer)")
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)


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


def plot_estimates(ope: dict[str, Any], path: Path, level: float) -> None:
    """One panel per campaign: every estimate with its CI, the on-policy value and its CI as a band."""
    fig, axes = plt.subplots(1, len(ope), figsize=(4.6 * len(ope), 3.4), squeeze=False)
    for ax, (policy, res) in zip(axes[0], ope.items(), strict=True):
        names = list(res["estimators"])[::-1]
        est = [res["estimators"][n] for n in names]
        x = [e["estimate"] for e in est]
        err = [[e["estimate"] - e["ci_low"] for e in est], [e["ci_high"] - e["estimate"] for e in est]]
        lo, hi = res["true_value_ci"]
        ax.axvspan(lo, hi, color="tab:green", alpha=0.15, label=f"on-policy {level:.0%} CI")
        ax.axvline(res["true_value"], color="tab:green", label="on-policy (BTS logs)")
        ax.errorbar(x, names, xerr=err, fmt="o", color="tab:blue", capsize=3, label="estimate from Random logs")
        ax.set_title(f"{policy.removeprefix('bts_')} campaign")
        ax.set_xlabel("click rate")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"BTS click rate: OPE from Random logs vs on-policy, {level:.0%} bootstrap CIs")
    fig.tight_layout()
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="upper center", ncol=3, fontsize=8,
               bbox_to_anchor=(0.5, 0.0))
    save_figure(fig, path)


def plot_objectives(comparison: Mapping[str, Any], names: Sequence[str], metrics: Sequence[str], path: Path,
                    level: float) -> None:
    """One panel per metric: per policy (``names``, best first) a bar per objective, with its
    across-seed CI."""
    names = list(names)[::-1]
    objectives = comparison["objectives"]
    height = 0.8 / len(objectives)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 0.32 * len(names) * len(objectives) ** 0.5 + 1.5),
                             sharey=True)
    for ax, metric in zip(axes, metrics, strict=True):
        for k, obj in enumerate(objectives):
            ivs = [comparison["policies"][p].get(obj, {}).get(metric) for p in names]
            means = [iv["mean"] if iv else np.nan for iv in ivs]
            err = [[iv["mean"] - iv["ci_low"] if iv and iv["ci_low"] is not None else 0 for iv in ivs],
                   [iv["ci_high"] - iv["mean"] if iv and iv["ci_high"] is not None else 0 for iv in ivs]]
            ax.barh(np.arange(len(names)) + (k - (len(objectives) - 1) / 2) * height, means, height,
                    xerr=err, capsize=2, label=f"reward = {obj}")
        ax.set_yticks(np.arange(len(names)), names)
        ax.set_title(METRIC_LABELS.get(metric, metric))
        ax.grid(axis="x", alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"TrueWorld, mean over seeds with {level:.0%} t-interval, by reward objective")
    save_figure(fig, path)


def plot_marginals(real: Profiles, synthetic: Profiles, path: Path, baseline: Profiles | None = None,
                   labels: tuple[str, str, str] = ("real", "synthetic", "independent marginals")) -> Path:
    """Real vs synthetic (and optionally baseline) profile marginals, one panel per feature:
    bars of code frequencies for categoricals, density histograms on shared bins for numerics."""
    sets = [real, synthetic] + ([baseline] if baseline is not None else [])
    cat_names = list(real.categorical_names or (f"cat_{j}" for j in range(real.categorical.shape[1])))
    num_names = list(real.numeric_names or (f"num_{j}" for j in range(real.numeric.shape[1])))
    n_panels = len(cat_names) + len(num_names)
    n_cols = min(3, n_panels)
    n_rows = -(-n_panels // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.2 * n_cols, 3.2 * n_rows), squeeze=False)
    flat = axes.ravel()
    width = 0.8 / len(sets)
    for j, name in enumerate(cat_names):
        ax = flat[j]
        k = int(max(d.categorical[:, j].max(initial=0) for d in sets)) + 1
        for i, d in enumerate(sets):
            freq = np.bincount(d.categorical[:, j], minlength=k) / max(len(d), 1)
            ax.bar(np.arange(k) + (i - (len(sets) - 1) / 2) * width, freq, width, label=labels[i])
        ax.set(title=name, xlabel="code", ylabel="share")
    for j, name in enumerate(num_names):
        ax = flat[len(cat_names) + j]
        lo, hi = np.quantile(real.numeric[:, j], [0.001, 0.999]) if len(real) else (0.0, 1.0)
        bins = np.linspace(lo, hi if hi > lo else lo + 1.0, _MARGINAL_BINS + 1)
        for i, d in enumerate(sets):
            ax.hist(np.clip(d.numeric[:, j], bins[0], bins[-1]), bins=bins, density=True, histtype="step",
                    linewidth=1.5, label=labels[i])
        ax.set(title=name, ylabel="density")
    for ax in flat[n_panels:]:
        ax.set_visible(False)
    flat[0].legend(fontsize="small")
    fig.tight_layout()
    save_figure(fig, path)
    return Path(path)


def plot_sim_vs_true(points: Mapping[str, tuple[float, float]], path: Path, highlight: Collection[str] = (),
                     title: str = "") -> None:
    """Learned-world vs TrueWorld value, one point per policy (``points[name] = (true, learned)``);
    the diagonal is perfect fidelity, points above it are overrated by the simulator.
    ``highlight`` (the simulator-trained agents) in orange."""
    fig, ax = plt.subplots(figsize=(6.4, 6.0))
    xs, ys = [p[0] for p in points.values()], [p[1] for p in points.values()]
    lo, hi = min(xs + ys), max(xs + ys)
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="gray", lw=1, ls="--", label="perfect fidelity")
    for name, (x, y) in points.items():
        agent = name in highlight
        ax.scatter([x], [y], color="tab:orange" if agent else "tab:blue", s=40 if agent else 25, zorder=3)
        ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("TrueWorld return per user")
    ax.set_ylabel("learned-world return per user (the world each agent trained in)")
    ax.set_title(title or "Simulator vs truth: above the diagonal = overrated")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    save_figure(fig, path)


def plot_curves_across_seeds(curves: Mapping[str, Mapping[str, Mapping[str, list]]], path: Path, title: str,
                             reference: Mapping[str, Any] | None = None) -> bool:
    """One panel per agent: its evaluation profit per user in the learned and the true world
    against training steps (mean over seeds, band = the across-seed interval); ``reference``
    (e.g. the best recommender's TrueWorld profit across seeds) as a horizontal band. False if
    there is nothing to plot."""
    agents = [a for a, worlds in curves.items() if any(c["steps"] for c in worlds.values())]
    if not agents:
        return False
    fig, axes = plt.subplots(1, len(agents), figsize=(4.6 * len(agents), 3.6), squeeze=False, sharey=True)
    for ax, agent in zip(axes[0], agents, strict=True):
        for world, color in (("learned", "tab:purple"), ("true", "tab:green")):
            c = curves[agent].get(world)
            if not c or not c["steps"]:
                continue
            steps = np.asarray(c["steps"])
            ax.plot(steps, c["mean"], color=color, marker=".", lw=1.4, label=f"{world} world")
            lo = np.array([np.nan if v is None else v for v in c["ci_low"]], dtype=float)
            hi = np.array([np.nan if v is None else v for v in c["ci_high"]], dtype=float)
            ax.fill_between(steps, lo, hi, color=color, alpha=0.18, lw=0)
        if reference and reference.get("mean") is not None:
            ax.axhline(reference["mean"], color="grey", ls="--", lw=1, label="best recommender (true)")
            if reference.get("ci_low") is not None:
                ax.axhspan(reference["ci_low"], reference["ci_high"], color="grey", alpha=0.12, lw=0)
        ax.set_title(agent)
        ax.set_xlabel("training env steps")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("profit per user (evaluation)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)
    return True
