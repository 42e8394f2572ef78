"""The report of a sweep (``experiments.aggregate``), built from ``aggregate.json``'s content:
``aggregate.md`` / ``.html``, ``aggregate.csv``, ``aggregate.tex`` and the plots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.report.html import Section, write_report
from experiments.report.markdown import METRIC_LABELS, interval, num, table
from experiments.report.plots import plot_curves_across_seeds, plot_objectives, plot_policy_metrics
from experiments.report.tables import (
    TABLE_METRICS,
    Column,
    by_profit,
    interval_rows,
    latex_table,
    markdown_table,
    policy_columns,
    write_csv,
    write_latex,
)


def write_aggregate_report(summary: Mapping[str, Any], sweep_dir: Path) -> None:
    """Every file of the sweep's report besides ``aggregate.json``."""
    level = summary["ci"]["level"]
    pct = f"{level:.0%}"
    rows, tables, sections = [], [], [_sweep_section(summary)]
    for i, comparison in enumerate(summary["reward_objectives"]):
        ctx = ", ".join(f"{k}={v}" for k, v in comparison["context"].items())
        ctx = f" ({ctx})" if ctx else ""
        png = f"aggregate_objectives_{i}.png"
        plot_objectives(comparison, win_rows(comparison), win_metrics(comparison), sweep_dir / png, level)
        sections.append((f"Which policy wins under which reward objective{ctx}",
                         best_md(comparison) + "\n\nEvery policy under each objective (TrueWorld, mean "
                         f"[{pct} CI over seeds], best per column in bold):\n\n"
                         + markdown_table(win_rows(comparison), win_columns(comparison))
                         + f"\n\n![policies by objective]({png})"))
        tables.append(latex_table(win_rows(comparison), win_columns(comparison, prefix=False),
                                  f"TrueWorld metrics of every policy under each reward objective{ctx}: "
                                  f"mean [{pct} CI over seeds].", f"tab:objectives_{i}",
                                  spans=[(f"reward = {o}", len(win_metrics(comparison)))
                                         for o in comparison["objectives"]]))
    for g in summary["groups"]:
        if g.get("claims"):
            sections.append((f"{g['label']}: simulator-trained agents vs the best recommender, across seeds",
                             claims_md(g["claims"], pct)))
    for i, g in enumerate(summary["groups"]):
        png = f"aggregate_group{i}_curves.png"
        if plot_curves_across_seeds(g.get("curves") or {}, sweep_dir / png, f"{g['label']}: evaluation during "
                                    f"training, mean over {len(g['seeds'])} seeds, {pct} t-interval",
                                    _best_recommender(g.get("claims") or {})):
            sections.append((f"{g['label']}: learning curves in both worlds, across seeds",
                             curves_md(g["curve_summary"]) + f"\n\n![learning curves]({png})"))
        for world, w in g["worlds"].items():
            keys = {**g["overrides"], "objective": g["objective"], "world": world}
            rows += interval_rows(w["policies"], ("n_seeds", "mean", "ci_low", "ci_high"), **keys)
            order = by_profit(w["policies"])
            caption = f"Policies in the {world} world, {g['label']} ({len(g['seeds'])} seeds): mean [{pct} CI over seeds]."
            tables.append(latex_table(order, policy_columns(w["policies"]), caption, f"tab:group{i}_{world}"))
            body = markdown_table(order, policy_columns(w["policies"], (*TABLE_METRICS, "return")))
            if world == "true":
                png = f"aggregate_group{i}_true.png"
                plot_policy_metrics(_plottable(w["policies"]), sweep_dir / png,
                                    f"{g['label']}: TrueWorld, mean over {len(g['seeds'])} seeds, {pct} t-interval")
                body += f"\n\n![policies]({png})"
            tau = g["sim_to_real"]["kendall_tau"]
            if world == "learned" and tau:
                body += f"\n\nSim-to-real Kendall tau (ranking by return): {seed_interval_md(tau)}."
            sections.append((f"{g['label']}: {world} world (seeds {g['seeds']}, jobs {g['jobs']})", body))
    sections.append(("Failed jobs", failed_md(summary["failed_jobs"])))
    write_csv(sweep_dir / "aggregate.csv", rows)
    write_latex(sweep_dir / "aggregate.tex", tables)
    write_report(sweep_dir, sections, f"campaign-gym sweep: {Path(summary['sweep_dir']).name}", stem="aggregate")


def _best_recommender(claims: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The best recommender's TrueWorld profit across seeds (the same for every agent's row)."""
    return next((row["best_recommender_profit"] for row in claims.values() if "best_recommender_profit" in row), None)


def curves_md(summary: Mapping[str, Any]) -> str:
    """Where each agent's mean evaluation curve peaks, and where it ends, in each world."""
    rows = [(f"`{agent}`", world, num(c["peak_mean"]), f"{c['peak_step']:,}", num(c["last_mean"]), f"{c['last_step']:,}")
            for agent, worlds in summary.items() for world, c in worlds.items()]
    return ("Profit per user of the periodic evaluations during training (held-out users; learned world = "
            "what the data can see, true world = the referee). A learned curve still rising at the last step "
            "says more steps may pay; a true curve that peaks earlier says the agent started exploiting the "
            "simulator.\n\n" + table(("agent", "world", "peak mean", "at step", "last mean", "last step"), rows))


def claims_md(claims: Mapping[str, Any], level: str) -> str:
    """One row per simulator-trained agent: the sweep's answer to "does it beat the recommender",
    on the runs' own objective (``claims.claim_metric``), then the agent minus each recommender."""
    def cell(row: Mapping[str, Any], key: str, fmt: str = "") -> str:
        iv = row.get(key)
        if not iv or iv.get("mean") is None:
            return "–"
        if fmt == "pct":
            return (f"{iv['mean']:+.0%}" + (f" [{iv['ci_low']:+.0%}, {iv['ci_high']:+.0%}]"
                                            if iv.get("ci_low") is not None else ""))
        return interval(iv, sign=key in ("minus_best_recommender", "gap_to_true_trained"))

    def value(row: Mapping[str, Any]) -> Mapping[str, Any]:
        return row.get("true_value") or row["true_profit"]

    metric = next((row.get("metric", "profit") for row in claims.values()), "profit")
    what = "profit" if metric == "profit" else "return (the objective's reward per user)"
    order = sorted(claims, key=lambda a: -(value(claims[a])["mean"] or 0.0))
    rows = [(f"`{a}`", cell(claims[a], "true_value" if "true_value" in claims[a] else "true_profit"),
             cell(claims[a], "minus_best_recommender"),
             cell(claims[a], "probability_of_improvement"), cell(claims[a], "overrating", "pct"),
             cell(claims[a], "gap_to_true_trained"), str(value(claims[a])["n_seeds"])) for a in order]
    text = (table(("agent", f"TrueWorld {metric}", "− best recommender", "P(agent > best rec.)", "overrating",
                   "ppo_true − agent", "seeds"), rows)
            + f"\n\nMean [{level} Student-t interval over seeds]; each seed refits logs, simulator and agents. "
            f"Compared on TrueWorld {what}. The best recommender is the best supervised recommender of each "
            "seed (same users). "
            "P(agent > best rec.): the probability that a seed of the agent beats a seed of the recommender "
            "(rliable's probability of improvement; interval from resampling seeds). Overrating: the value in "
            "the world the agent trained in / its true value − 1.")
    recs = list(dict.fromkeys(n for a in order for n in claims[a].get("minus_recommender", {})))
    if recs:
        per = [(f"`{a}`", *(interval(claims[a]["minus_recommender"][n], sign=True)
                            if n in claims[a].get("minus_recommender", {}) else "–" for n in recs)) for a in order]
        text += (f"\n\nAgent minus each recommender (TrueWorld {metric}, paired by seed):\n\n"
                 + table(("agent", *(f"− `{n}`" for n in recs)), per))
    return text


def _sweep_section(summary: Mapping[str, Any]) -> Section:
    n, ci = summary["n_jobs"], summary["ci"]
    t2, t3 = ci["t_multipliers"]["2"], ci["t_multipliers"]["3"]
    return ("Sweep", (
        f"`{summary['sweep_dir']}`: {n['aggregated']} job(s) aggregated in {len(summary['groups'])} group(s), "
        f"{n['failed']} failed (of {n['expected']}). Shared overrides: "
        f"`{' '.join(summary['constant_overrides']) or 'none'}`.\n\n"
        f"Each job gives one number per policy and metric (its mean over evaluation users); a group's "
        f"cell is the mean over its seeds (`{', '.join(summary['seed_keys'])}`) with a {ci['level']:.0%} Student-t "
        f"interval, mean ± t·sd/√n over seeds (no CI with one seed; t is {num(t2, 2)} for 2 seeds and "
        f"{num(t3, 2)} for 3, so few seeds give wide intervals by construction). Files: "
        "[aggregate.csv](aggregate.csv), [aggregate.tex](aggregate.tex) (booktabs), [aggregate.json](aggregate.json)."))


def win_metrics(comparison: Mapping[str, Any]) -> list[str]:
    """The metrics compared across objectives, in their results order."""
    return list(dict.fromkeys(m for objs in comparison["policies"].values() for ms in objs.values() for m in ms))


def win_columns(comparison: Mapping[str, Any], prefix: bool = True) -> list[Column]:
    """Per objective, a column per metric (headed "objective: metric" unless ``prefix`` is off)."""
    return [(f"{obj}: {METRIC_LABELS[m]}" if prefix else METRIC_LABELS[m],
             {p: objs[obj][m] for p, objs in comparison["policies"].items() if m in objs.get(obj, {})})
            for obj in comparison["objectives"] for m in win_metrics(comparison)]


def win_rows(comparison: Mapping[str, Any]) -> list[str]:
    """Policies by their mean profit across objectives, best first."""
    def score(p: str) -> float:
        return -np.mean([v["profit"]["mean"] for v in comparison["policies"][p].values() if "profit" in v])
    return sorted(comparison["policies"], key=score)


def seed_interval_md(iv: Mapping[str, Any] | None) -> str:
    """An across-seed interval; "(1 seed)" when there is no CI."""
    if iv is None or iv.get("mean") is None:
        return interval(None)
    return interval(iv) + (" (1 seed)" if iv.get("ci_low") is None else "")


def best_md(comparison: Mapping[str, Any]) -> str:
    rows = []
    for obj, b in comparison["best"].items():
        non_oracle = (f"`{b['best_non_oracle']}` {seed_interval_md(b['best_non_oracle_return'])}"
                      if b["best_non_oracle"] else "–")
        ranking = " > ".join(f"`{p}` {num(v)}" for p, v in b.get("ranking", []))
        rows.append((f"`{obj}`", f"`{b['policy']}` {seed_interval_md(b['return'])}", non_oracle, ranking))
    return table(("objective", "best policy (TrueWorld return)", "best non-oracle policy",
                  "non-oracle ranking by return"), rows)


def _plottable(policies: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Intervals without a CI (one seed) drawn as a point (no error bar)."""
    return {p: {m: {"mean": iv["mean"], "ci_low": iv["mean"] if iv["ci_low"] is None else iv["ci_low"],
                    "ci_high": iv["mean"] if iv["ci_high"] is None else iv["ci_high"]}
                for m, iv in ms.items() if iv["mean"] is not None}
            for p, ms in policies.items()}


def failed_md(failed: Sequence[Mapping[str, Any]]) -> str:
    if not failed:
        return "None: every job wrote its results.json."
    return table(("job", "overrides", "error", "directory"),
                 [(f["job"], f"`{' '.join(f['overrides'])}`", f["error"], f["dir"] or "–") for f in failed])
