"""The main job's report, built from ``results.json`` alone: answers first, details after.

Order: a **Summary** of the run's answers (does the best simulator-trained agent beat the best
recommender in TrueWorld; how faithful is the simulator on the logged distribution and off it;
which OPE estimator to trust), the TrueWorld policy plot, then compact tables (policies in both
worlds, paired differences, sim to real, simulator targets, recommenders, segments, OPE), and
the setup and logged data last.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from experiments.report.fidelity import TARGETS
from experiments.report.html import Section, write_report
from experiments.report.markdown import (
    MISSING,
    excludes_zero,
    interval,
    interval_parts,
    num,
    pct,
    table,
    value,
)
from experiments.report.ope import ope_markdown
from experiments.report.pessimism import SCATTER, pessimism_md, plot_pessimism
from experiments.report.plots import Curves, plot_learning_curves, plot_ope, plot_policy_metrics
from experiments.report.tables import TABLES_LINK, markdown_table, policy_columns, write_policy_tables

ORACLES = ("oracle_greedy", "nurture")  # read TrueWorld's hidden state
ORACLE_NOTE = ("`nurture` and `oracle_greedy` both read the hidden state; `nurture` plans (rests, rotates, "
               "nurtures) while `oracle_greedy` maximises the immediate expected reward. A positive difference "
               "means long-term effects make one-step greedy beatable.")


def write_run_report(out: Path, results: Mapping[str, Any], curves: Curves) -> None:
    """Everything a run writes besides ``results.json``: ``policies.csv``/``.tex``, the plots
    (``curves``: TensorBoard scalars for the learning curves) and ``report.md``/``.html``."""
    cfg = results["config"]
    exp, ev, agents = cfg["experiment"], cfg["experiment"]["evaluation"], cfg["experiment"]["agents"]
    level = f"{ev['ci_level']:.0%}"
    write_policy_tables(results["worlds"], out, ev["ci_level"])
    for world, w in results["worlds"].items():
        plot_policy_metrics(w["policies"], out / f"policy_metrics_{world}.png",
                            f"{world} world, {ev['n_users']} paired users, {level} CI", agents=agents)
    if results["ope"]:
        plot_ope(results["ope"], out / "ope.png")
    if results.get("pessimism", {}).get("agents"):
        plot_pessimism(results, out / SCATTER)
    has_curves = plot_learning_curves(curves, out / "learning_curves.png", agents)
    write_report(out, run_sections(results, has_curves), f"campaign-gym run: {exp['name']}, seed {exp['seed']}")


def by_true_profit(results: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """The names present in TrueWorld, best mean profit first."""
    true = results["worlds"]["true"]["policies"]
    return sorted((n for n in names if n in true), key=lambda n: -true[n]["profit"]["mean"])


def sim_trained_agents(results: Mapping[str, Any]) -> list[str]:
    """Agents trained in the learned simulator (all agents if none was)."""
    cfg = results["config"]
    agents = cfg["experiment"]["agents"]
    return [a for a in agents if cfg["agents"][a]["train_world"] == "learned"] or list(agents)


def summary_md(results: Mapping[str, Any]) -> str:
    """The run's answers as bullets, each with the number behind it."""
    cfg, worlds = results["config"], results["worlds"]
    level = f"{cfg['experiment']['evaluation']['ci_level']:.0%}"
    true, diffs = worlds["true"]["policies"], worlds["true"]["paired_differences"]
    bullets = [f"Reward `{cfg['campaign']['reward']}`; every policy meets the same "
               f"{num(cfg['experiment']['evaluation']['n_users'])} TrueWorld users; {level} bootstrap CIs over users."]
    agents = by_true_profit(results, sim_trained_agents(results))
    recommenders = by_true_profit(results, list(results["recommenders"]["offline_metrics"]))
    if agents:
        bullets.append(_agent_vs_recommender(agents[0], recommenders, true, diffs, level))
    bullets += _simulator_bullets(results)
    if results.get("ope_validation"):
        bullets.append(_ope_bullet(results["ope_validation"]))
    return "\n".join(f"- {b}" for b in bullets)


def _agent_vs_recommender(agent: str, recommenders: Sequence[str], true: Mapping[str, Any],
                          diffs: Mapping[str, Any], level: str) -> str:
    """The headline: best simulator-trained agent minus the best recommender (or, if that pair
    was not evaluated, the best non-RL baseline), paired on the same users."""
    pairs = [k.removeprefix(f"{agent}_minus_") for k in diffs if k.startswith(f"{agent}_minus_")]
    others = [b for b in pairs if b not in ("greedy", *ORACLES)]
    baseline = next((r for r in recommenders if r in pairs), others[0] if others else None)
    head = f"**Best simulator-trained agent** `{agent}` (profit / user {interval(true[agent]['profit'])})"
    if baseline is None:
        return head + ": no paired difference against a recommender in this run."
    d = diffs[f"{agent}_minus_{baseline}"]["profit"]
    kind = "best recommender" if baseline in recommenders else "best non-RL policy"
    verdict = ((f"`{agent}` wins" if d["ci_low"] > 0 else f"`{baseline}` wins") if excludes_zero(d)
               else "no clear difference (the CI contains 0)")
    return (f"{head} vs **{kind}** `{baseline}` ({interval(true[baseline]['profit'])}) in TrueWorld: paired "
            f"difference **{interval(d, sign=True)}** ({level} CI): {verdict}.")


def _simulator_bullets(results: Mapping[str, Any]) -> list[str]:
    """Fidelity on the logged distribution (response model, GAN) and off it (policy ranking,
    the simulator's value of RL agents against TrueWorld's)."""
    f, met = results["simulator"]["fidelity"], results["simulator"]["targets_met"]
    out = []
    if "click_auc" in f:
        parts = [f"click AUC {num(f['click_auc'])} vs segment oracle {num(f.get('segment_oracle_click_auc'))}"
                 + _met(met, "click_auc")]
        if "click_ece" in f:
            parts.append(f"click ECE {num(f['click_ece'])}{_met(met, 'click_ece')}")
        if "c2st_auc" in f:
            parts.append(f"GAN users C2ST AUC {num(f['c2st_auc'])} (0.5 = indistinguishable; independent marginals "
                         f"{num(f.get('c2st_auc_marginals_baseline'))}){_met(met, 'c2st_auc')}")
        out.append("**Simulator on the logged distribution** (held-out users): " + "; ".join(parts) + ".")
    true, learned = results["worlds"]["true"]["policies"], results["worlds"]["learned"]["policies"]
    both = [p for p in learned if p in true]
    agents = [a for a in results["config"]["experiment"]["agents"] if a in both]
    gaps = ", ".join(f"`{a}` {pct(_overrating(learned[a], true[a]), sign=True)}" for a in agents)
    out.append(f"**Simulator off the logged distribution** (new policies): Kendall tau of the policy ranking "
               f"{num(results['sim_to_real']['kendall_tau'])} over {len(both)} policies"
               + (f"; RL agents' return in the simulator vs TrueWorld (learned / true − 1): {gaps}." if gaps else "."))
    return out


def _overrating(learned: Mapping[str, Any], true: Mapping[str, Any]) -> float | None:
    t = true["return"]["mean"]
    return learned["return"]["mean"] / t - 1 if t else None


def _met(met: Mapping[str, bool], key: str) -> str:
    return "" if key not in met else " (target met)" if met[key] else " (**target missed**)"


def _ope_bullet(validation: Mapping[str, Any]) -> str:
    draws = validation["draws"]
    per_kind = []
    for kind, row in validation["by_kind"].items():
        e = row["estimators"][row["best"]]
        cover = f", coverage {pct(e['coverage'])}" if draws > 1 else ""
        per_kind.append(f"{kind}: `{row['best']}` ({pct(e['median_rel_error'])} median error{cover})")
    pick = validation.get("selection", {})
    best = pick.get("best_sequential")
    choice = "" if not best else (f" Choosing a policy by `{best}` (the return estimator that ranks best): "
                                  f"Spearman {num(pick['estimators'][best]['spearman'])} with the true values, "
                                  f"regret@1 {num(pick['estimators'][best]['regret_at_1'])}.")
    return (f"**OPE estimator to trust** (from logs alone, against the true values; {draws} draw(s)): "
            + "; ".join(per_kind) + "." + choice)


def policy_md(results: Mapping[str, Any], world: str) -> str:
    """The policy table of one world, best profit first; ``return`` is left out when it is
    profit (``campaign.reward = profit``)."""
    policies = results["worlds"][world]["policies"]
    metrics = list(next(iter(policies.values())))
    if results["config"]["campaign"]["reward"] == "profit" and "return" in metrics:
        metrics.remove("return")
    order = sorted(policies, key=lambda p: -policies[p]["profit"]["mean"])
    return markdown_table(order, policy_columns(policies, metrics), bold=False)


def diff_md(diffs: Mapping[str, Any], agents: Sequence[str]) -> str:
    """Paired profit differences: one row per agent, one column per baseline it was compared
    with; the other comparisons (oracles, TrueWorld- vs simulator-trained) in a second table.
    Bold: the CI excludes 0."""
    pairs = {tuple(k.split("_minus_", 1)): d["profit"] for k, d in diffs.items()}
    baselines = list(dict.fromkeys(b for a, b in pairs if a in agents and b not in agents))
    def cell(iv: Mapping[str, Any]) -> str:
        mean, ci = interval_parts(iv, sign=True)
        mean = f"**{mean}**" if excludes_zero(iv) else mean
        return mean if ci is None else f"{mean} {ci}"
    grid = table(("agent", *(f"− {b}" for b in baselines)),
                 [(f"`{a}`", *(cell(pairs[a, b]) if (a, b) in pairs else MISSING for b in baselines))
                  for a in agents if any((a, b) in pairs for b in baselines)])
    others = [(f"`{a}` − `{b}`", cell(iv)) for (a, b), iv in pairs.items() if not (a in agents and b in baselines)]
    return grid + ("\n\n" + table(("other comparison", "difference"), others) if others else "") + \
        "\n\nMean difference per user [95% CI] on the same users; **bold**: the CI excludes 0."


def sim_to_real_md(results: Mapping[str, Any]) -> str:
    """Return in TrueWorld and in the learned simulator side by side, the rank in each and the
    simulator's error (learned / true − 1)."""
    true, learned = results["worlds"]["true"]["policies"], results["worlds"]["learned"]["policies"]
    both = sorted((p for p in learned if p in true), key=lambda p: -true[p]["return"]["mean"])
    rank_sim = {p: i + 1 for i, p in enumerate(sorted(both, key=lambda p: -learned[p]["return"]["mean"]))}
    rows = [(f"`{p}`", interval(true[p]["return"]), interval(learned[p]["return"]),
             pct(_overrating(learned[p], true[p]), sign=True), f"{i + 1} / {rank_sim[p]}") for i, p in enumerate(both)]
    return (table(("policy", "TrueWorld return", "learned-world return", "learned / true − 1", "rank true / learned"),
                  rows)
            + f"\n\nKendall tau of the two rankings: {num(results['sim_to_real']['kendall_tau'])} over {len(both)} policies.")


def targets_md(simulator: Mapping[str, Any]) -> str:
    """The simulator's headline numbers against their targets (details in fidelity.md)."""
    f, met = simulator["fidelity"], simulator["targets_met"]
    desc = {key: d for key, d, _ in TARGETS}
    return table(("metric", "value", "target", "met"),
                 [(k, num(f[k]), desc.get(k, ""), "yes" if ok else "**no**") for k, ok in met.items()])


def recommenders_md(offline: Mapping[str, Any]) -> str:
    keys = ("click_auc", "click_logloss", "hr_at_5", "ndcg_at_5")
    return table(("recommender", *keys), [(f"`{n}`", *(num(m.get(k)) for k in keys)) for n, m in offline.items()])


def breakdown_md(breakdown: Mapping[str, Any]) -> str:
    """Per segment: share, both policies' profit and their paired difference with a verdict."""
    c, b = breakdown["challenger"], breakdown["baseline"]
    rows = []
    for name, seg in breakdown["segments"].items():
        d = seg["difference"]
        verdict = ("gains" if d["ci_low"] > 0 else "loses") if excludes_zero(d) else "no clear difference"
        rows.append((name, num(seg["share"]), num(seg["profit"][c]["mean"]), num(seg["profit"][b]["mean"]),
                     interval(d, sign=True), verdict))
    return table(("segment", "share", f"{c} profit", f"{b} profit", f"{c} − {b} [95% CI]", "verdict"), rows)


def setup_md(results: Mapping[str, Any]) -> str:
    cfg = results["config"]
    agents = ", ".join(f"`{n}` ({num(cfg['agents'][n]['total_timesteps'])} steps in the "
                       f"{str(cfg['agents'][n]['train_world']).lower()} world)" for n in cfg["experiment"]["agents"])
    logs = "\n".join(f"- {k.replace('_', ' ')}: {value(v)}" for k, v in results["data"]["logs"].items())
    return (f"World seed {cfg['world']['seed']}, {cfg['world']['n_offers']} offers, horizon "
            f"{cfg['campaign']['horizon']}, reward `{cfg['campaign']['reward']}`. Agents: {agents}. "
            f"Code `{results['provenance']['git_commit']}`.\n\nLogged data (TrueWorld, logging policy):\n\n{logs}")


def run_sections(results: Mapping[str, Any], has_curves: bool) -> list[Section]:
    """The report's sections, answers first."""
    worlds = results["worlds"]
    sections = [("Summary", summary_md(results)),
                ("Policies in TrueWorld", "![policy metrics](policy_metrics_true.png)\n\n"
                 "Mean [95% CI] per user, same users for every policy, best profit first.\n\n"
                 + policy_md(results, "true") + f"\n\n{TABLES_LINK}"),
                ("Paired differences in profit per user (TrueWorld)",
                 diff_md(worlds["true"]["paired_differences"], results["config"]["experiment"]["agents"])
                 + f"\n\n{ORACLE_NOTE}"),
                ("Sim to real: every policy in both worlds (return per user)", sim_to_real_md(results)),
                *([("Pessimism: what each simulator-trained agent learned in which world", pessimism_md(results))]
                  if results.get("pessimism", {}).get("agents") else []),
                ("Policies in the learned world", policy_md(results, "learned")
                 + "\n\n![policy metrics](policy_metrics_learned.png)"),
                ("Learned simulator against its targets (details in fidelity.md)", targets_md(results["simulator"])),
                ("Supervised recommenders: offline metrics on held-out users",
                 recommenders_md(results["recommenders"]["offline_metrics"]))]
    if results["segments"]:
        sections.append(("Per segment (k-means on observable profiles; TrueWorld, paired users)",
                         breakdown_md(results["segments"])))
    if results["ope"]:
        sections.append(("Off-policy evaluation against the truth",
                         ope_markdown(results["ope"], results["ope_validation"], results["ope_validation"])))
    if has_curves:
        sections.append(("Learning curves (from the TensorBoard event files in `tensorboard/`)",
                         "![learning curves](learning_curves.png)"))
    sections.append(("Setup and logged data", setup_md(results)))
    if results.get("timings"):
        sections.append(("Stage timings (wall-clock seconds on this machine)", timings_md(results["timings"])))
    if results.get("jobs"):
        sections.append(("Parallel jobs (seconds each took where it ran)", jobs_md(results["jobs"])))
    return sections


def jobs_md(jobs: Mapping[str, Any]) -> str:
    """Each job's own seconds, largest first: the long poles a stage waits for."""
    seconds = sorted(jobs["seconds"].items(), key=lambda kv: -kv[1])
    head = (f"{len(seconds)} jobs on {jobs['workers']} worker(s) ({jobs.get('engine', 'processes')}), "
            f"{num(sum(v for _, v in seconds))} job-seconds in all.\n\n")
    return head + table(["job", "seconds"], [[k, num(v)] for k, v in seconds])


def timings_md(timings: Mapping[str, float]) -> str:
    """Seconds per stage, largest first, with its share of the total."""
    total = timings.get("total") or sum(v for k, v in timings.items() if k != "total") or 1.0
    stages = sorted(((k, v) for k, v in timings.items() if k != "total"), key=lambda kv: -kv[1])
    return table(["stage", "seconds", "share"], [[k, num(v), pct(v / total)] for k, v in stages]
                 + [["total", num(total), pct(1.0)]])
