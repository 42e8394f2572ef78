"""The OPE part of a report: estimates vs truth per policy and which estimator to trust for
which kind of policy (the ``ope`` and ``ope_validation`` sections of ``results.json``)."""

from __future__ import annotations

from typing import Any

from experiments.report.markdown import MISSING, interval, num, pct, table


def ope_markdown(section: dict[str, Any], summary: dict[str, Any], config: dict[str, Any]) -> str:
    """Per policy each estimator's estimate and relative error (and CI coverage over draws), then
    per kind of policy the median relative error of each estimator and the best one."""
    estimators = list(next(iter(section.values()))["estimators"])
    draws = summary["draws"]

    def cell(e: dict[str, Any] | None) -> str:
        if e is None:
            return MISSING
        return f"{num(e['estimate'])} ({pct(e['rel_error'])}" + (f", {pct(e['coverage'])})" if draws > 1 else ")")

    intro = (f"Each policy's value per user estimated from TrueWorld logs of the logging policy "
             f"({config['n_users']} fresh users per draw, {draws} draw(s)), against its true value from on-policy "
             f"TrueWorld rollouts ({config['truth_users']} users). Per-decision estimators (dm … dr_os) target the "
             "one-step value on the logged states (acting with the policy for one step, then following the log); "
             "pdis, wdr and fqe target the return. Cells: estimate (relative error to the true value"
             + (", CI coverage over draws)." if draws > 1 else ")."))
    estimates = table(("policy", "kind", "true value [95% CI]", "one-step value", *estimators),
                      [(f"`{name}`", e["kind"], interval({"mean": e["true_value"], "ci_low": e["true_value_ci"][0],
                                                          "ci_high": e["true_value_ci"][1]}),
                        num(e["one_step_value"]), *(cell(e["estimators"].get(est)) for est in estimators))
                       for name, e in section.items()])
    trust = table(("kind of policy", "policies", "best estimator", "best per-decision", *estimators),
                  [(kind, ", ".join(row["policies"]), f"`{row['best']}`", f"`{row['best_per_decision']}`",
                    *(MISSING if (e := row["estimators"].get(est)) is None
                      else pct(e["median_rel_error"]) + (f" / {pct(e['coverage'])}" if draws > 1 else "")
                      for est in estimators))
                   for kind, row in summary["by_kind"].items()])
    lines = [intro, "", estimates, "", "**Which estimator to trust** (median relative error across the policies of "
             "each kind" + (", mean CI coverage" if draws > 1 else "") + "):", "", trust]
    if draws < 2:
        lines += ["", "One draw: coverage needs repeated draws (`experiment=ope_validation`)."]
    lines += ["", "![OPE estimates vs truth](ope.png)"]
    return "\n".join(lines)
