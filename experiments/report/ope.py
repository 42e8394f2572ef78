"""The OPE part of a report (the ``ope`` and ``ope_validation`` sections of ``results.json``).

The two families answer different questions, so they get separate tables, each scored against
its own target: "return" estimators (pdis, wdr, fqe) against the policy's true return;
"one-step value" estimators (dm ... dr_os) against the exact one-step value on the logged
states. Then OPE for decisions (regret@1, Spearman) and FQE's fitting diagnostics.
"""

from __future__ import annotations

from typing import Any

from experiments.report.markdown import MISSING, interval, num, pct, table

RETURN_QUESTION = ("**Return estimators** (`pdis`, `wdr`, `fqe`) answer *what would a user be worth if this "
                   "policy ran the whole campaign?* — the question a deployment decision needs.")
ONE_STEP_QUESTION = ("**One-step value estimators** (`dm`, `ips`, `snips`, `dr`, `sndr`, `switch_dr`, `dr_os`) "
                     "answer *what would the next decision earn on the users as logged?* — acting with the policy "
                     "once, then following the log. It is not the return whenever the policy changes users' future "
                     "(fatigue, annoyance, churn); read them as the contextual-bandit answer only.")


def ope_markdown(section: dict[str, Any], summary: dict[str, Any], config: dict[str, Any]) -> str:
    """Return estimators, one-step value estimators, which to trust per kind, selection, FQE fits."""
    first = next(iter(section.values()))["estimators"]
    returns = [e for e, v in first.items() if v["target"] != "per_decision"]
    one_step = [e for e, v in first.items() if v["target"] == "per_decision"]
    draws = summary["draws"]
    intro = (f"Each policy's value per user estimated from TrueWorld logs of the logging policy ({config['n_users']} "
             f"fresh users per draw, {draws} draw(s)), against the truth from on-policy TrueWorld rollouts "
             f"({config['truth_users']} users) and, for the one-step estimators, the exact one-step value from "
             "TrueWorld's oracle. FQE's and WDR's CIs come from bootstrap refits of FQE (the fitting variance is "
             "in them); the others resample users with their models fixed.")
    lines = [intro, "", RETURN_QUESTION, "", _per_policy(section, returns, "true_value", draws), "",
             ONE_STEP_QUESTION, "", _per_policy(section, one_step, "one_step_value", draws), "",
             "**Which estimator to trust**, per kind of policy: median relative error to the estimator's own target"
             + (" / mean CI coverage of it over draws" if draws > 1 else "") + " (the return for return estimators, "
             "the one-step value for one-step estimators; in brackets the one-step estimators' error to the return, "
             "the cost of their myopia).", "", _trust(summary, returns, one_step, draws)]
    if summary.get("selection", {}).get("estimators"):
        lines += ["", selection_markdown(summary["selection"])]
    if any("fqe_diagnostics" in e for e in section.values()):
        lines += ["", fqe_markdown(section)]
    if draws < 2:
        lines += ["", "One draw: coverage needs repeated draws (`experiment=ope_validation`)."]
    lines += ["", "![OPE estimates vs truth](ope.png)"]
    return "\n".join(lines)


def _per_policy(section: dict[str, Any], estimators: list[str], target: str, draws: int) -> str:
    def cell(e: dict[str, Any] | None) -> str:
        if e is None:
            return MISSING
        tail = f", {pct(e['target_coverage'])}" if draws > 1 else ""
        return f"{num(e['estimate'])} ({pct(e['target_rel_error'])}{tail})"

    header = ("policy", "kind", "true return [95% CI]", *(("one-step value",) if target == "one_step_value" else ()),
              *estimators)
    rows = [(f"`{name}`", e["kind"], interval({"mean": e["true_value"], "ci_low": e["true_value_ci"][0],
                                              "ci_high": e["true_value_ci"][1]}),
             *((num(e["one_step_value"]),) if target == "one_step_value" else ()),
             *(cell(e["estimators"].get(est)) for est in estimators)) for name, e in section.items()]
    note = ("Cells: first draw's estimate (relative error to the target, mean over draws" +
            (", CI coverage of the target over draws)." if draws > 1 else ")."))
    return table(header, rows) + "\n\n" + note


def _trust(summary: dict[str, Any], returns: list[str], one_step: list[str], draws: int) -> str:
    def cell(e: dict[str, Any] | None, own: bool) -> str:
        if e is None:
            return MISSING
        text = pct(e["target_median_rel_error"]) + (f" / {pct(e['target_coverage'])}" if draws > 1 else "")
        return text if own else f"{text} ({pct(e['median_rel_error'])})"

    rows = []
    for kind, row in summary["by_kind"].items():
        t = row["estimators"]
        best_return = min((e for e in returns if e in t), key=lambda e: t[e]["median_rel_error"], default=None)
        rows.append((kind, ", ".join(row["policies"]), f"`{best_return}`",
                     *(cell(t.get(e), True) for e in returns), *(cell(t.get(e), False) for e in one_step)))
    return table(("kind of policy", "policies", "best for the return", *returns, *one_step), rows)


def selection_markdown(selection: dict[str, Any]) -> str:
    """Per estimator: mean regret@1 and Spearman over draws, and the policy it picks."""
    est = selection["estimators"]
    order = sorted(est, key=lambda e: (est[e]["regret_at_1"], -est[e]["spearman"]))
    rows = [(f"`{e}`", "return" if est[e]["target"] != "per_decision" else "one-step", num(est[e]["regret_at_1"]),
             num(est[e]["spearman"]), f"`{est[e]['chosen_first_draw']}`") for e in order]
    return (f"**OPE for decisions**: choosing among the {len(selection['policies'])} evaluated policies by each "
            f"estimator (the truly best is `{selection['best_policy']}`). regret@1 = (true value of the best policy "
            "- true value of the estimator's top pick) / (best - worst true value), Fu et al. 2021; Spearman of "
            f"the estimates with the true values; both averaged over draws. Best return estimator by Spearman: "
            f"`{selection.get('best_sequential')}`.\n\n"
            + table(("estimator", "target", "regret@1", "Spearman", "top pick (first draw)"), rows))


def fqe_markdown(section: dict[str, Any]) -> str:
    """FQE's fitting diagnostics per policy (first draw's trace, final errors over draws)."""
    rows = []
    for name, e in section.items():
        d = e.get("fqe_diagnostics")
        if not d:
            continue
        values, k = d["value"], len(d["value"])
        trace = " → ".join(num(values[i]) for i in sorted({0, k // 4, k // 2, 3 * k // 4, k - 1}))
        held = [x for x in d["final_bellman_error_held_out"] if x is not None]
        rows.append((f"`{name}`", num(d["bellman_error_train"][-1]),
                     num(d["bellman_error_held_out"][-1]), num(sum(held) / len(held)) if held else MISSING,
                     pct(d["clipped_share"][-1]), trace, num(e["true_value"])))
    first = next(e["fqe_diagnostics"] for e in section.values() if e.get("fqe_diagnostics"))
    return (f"**FQE fitting diagnostics** ({first['iterations']} iterations x {first['steps_per_iteration']} "
            f"gradient steps of {first['batch_size']} transitions, whatever the data size; {first['n_refits']} "
            "bootstrap refits trained alongside). Bellman error = RMSE of Q against its target in reward units, "
            "on the training users and on the users each bootstrap resample left out; a held-out error well above "
            "the training one means overfitting; a value trace still moving at the end means too few iterations.\n\n"
            + table(("policy", "Bellman error (train)", "held out", "held out, mean over draws", "targets clipped",
                     "value by iteration (first draw)", "true return"), rows))
