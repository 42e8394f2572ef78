"""Paper tables: intervals as a long CSV, a booktabs LaTeX table and a Markdown table.

Every run writes ``policies.csv`` (world, policy, metric, mean, ci_low, ci_high; every metric
of ``results.json``) and ``policies.tex`` (one booktabs table per world, one row per policy,
"mean [low, high]" for the headline metrics, 3 significant digits, the best mean of each column
in bold) next to its ``results.json``; the sweep report (``experiments.report.aggregate``)
builds its tables across seeds from the same functions. An interval is the ``results.json`` dict ``{"mean", "ci_low", "ci_high"}``; the CI
bounds may be None (e.g. one seed only), printed as the mean alone.

    \\usepackage{booktabs}   % in the paper's preamble, then \\input{policies.tex}
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from experiments.report.markdown import METRIC_LABELS, MISSING, interval_parts, is_number
from recsys.artifacts import atomic_write_text

IntervalDict = Mapping[str, Any]  # {"mean": x, "ci_low": x | None, "ci_high": x | None, ...}
Column = tuple[str, Mapping[str, IntervalDict]]  # (header, row name -> interval)

TABLE_METRICS = ("click_rate", "conversion_rate", "profit", "episode_length")  # higher is better for each
CSV_FIELDS = ("mean", "ci_low", "ci_high")
_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def interval_rows(policies: Mapping[str, Mapping[str, IntervalDict]], fields: Sequence[str] = CSV_FIELDS,
                  **keys: Any) -> list[dict[str, Any]]:
    """Long rows ``{**keys, policy, metric, *fields}``: one per policy and metric."""
    return [{**keys, "policy": policy, "metric": metric, **{f: iv.get(f) for f in fields}}
            for policy, metrics in policies.items() for metric, iv in metrics.items()]


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Rows (dicts with the same keys, in order) as a CSV with a header; None is an empty cell."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def policy_columns(policies: Mapping[str, Mapping[str, IntervalDict]], metrics: Sequence[str] = TABLE_METRICS,
                   ) -> list[Column]:
    """One column per metric (header = its label), row name = policy."""
    return [(METRIC_LABELS.get(m, m), {p: ms[m] for p, ms in policies.items() if m in ms}) for m in metrics]


def by_profit(policies: Mapping[str, Mapping[str, IntervalDict]]) -> list[str]:
    """Policy names, best mean profit first."""
    return sorted(policies, key=lambda p: -policies[p]["profit"]["mean"])


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _best(column: Mapping[str, IntervalDict]) -> set[str]:
    means = {r: iv["mean"] for r, iv in column.items() if is_number(iv.get("mean"))}
    top = max(means.values(), default=None)
    return {r for r, m in means.items() if m == top}


def _cell(iv: IntervalDict | None, bold: bool, latex: bool) -> str:
    """"mean [low, high]" (``experiments.report.markdown.interval``), the mean in bold if ``bold``."""
    if iv is None:
        return "--" if latex else MISSING
    mean, ci = interval_parts(iv)
    if latex:
        mean, ci = mean.replace("-", "$-$"), ci and ci.replace("-", "$-$")
    mean = (rf"\textbf{{{mean}}}" if latex else f"**{mean}**") if bold else mean
    return mean if ci is None else f"{mean} {ci}"


def latex_table(rows: Iterable[str], columns: Sequence[Column], caption: str, label: str,
                row_header: str = "policy", spans: Sequence[tuple[str, int]] = ()) -> str:
    """A booktabs ``table``: one row per name in ``rows``, "mean [low, high]" cells, the best
    mean of each column in bold (ties: all of them). Names and headers are escaped. ``spans``
    (header, number of columns) adds a header row above the column headers, with cmidrules."""
    rows = list(rows)
    best = [_best(col) for _, col in columns]
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             rf"\caption{{{latex_escape(caption)}}}", rf"\label{{{label}}}",
             r"\begin{tabular}{l" + "r" * len(columns) + "}", r"\toprule"]
    if spans:
        starts = [2 + sum(n for _, n in spans[:i]) for i in range(len(spans))]
        lines.append(" & ".join([""] + [rf"\multicolumn{{{n}}}{{c}}{{{latex_escape(h)}}}" for h, n in spans]) + r" \\")
        lines.append(" ".join(rf"\cmidrule(lr){{{a}-{a + n - 1}}}" for a, (_, n) in zip(starts, spans, strict=True)))
    lines += [" & ".join([latex_escape(row_header)] + [latex_escape(h) for h, _ in columns]) + r" \\", r"\midrule"]
    for name in rows:
        cells = [_cell(col.get(name), name in b, latex=True) for (_, col), b in zip(columns, best, strict=True)]
        lines.append(" & ".join([latex_escape(name)] + cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def markdown_table(rows: Iterable[str], columns: Sequence[Column], row_header: str = "policy",
                   bold: bool = True) -> str:
    """The same table in Markdown (``bold``: the best mean per column in bold)."""
    best = [_best(col) if bold else set() for _, col in columns]
    lines = ["| " + " | ".join([row_header] + [h for h, _ in columns]) + " |", "|:---|" + "---:|" * len(columns)]
    for name in rows:
        cells = [_cell(col.get(name), name in b, latex=False) for (_, col), b in zip(columns, best, strict=True)]
        lines.append("| " + " | ".join([f"`{name}`"] + cells) + " |")
    return "\n".join(lines)


def write_latex(path: Path, tables: Sequence[str]) -> Path:
    header = "% campaign-gym tables; needs \\usepackage{booktabs}\n"
    return atomic_write_text(path, header + "\n".join(tables))


def write_policy_tables(worlds: Mapping[str, Mapping[str, Any]], out_dir: Path, ci_level: float) -> tuple[Path, Path]:
    """``policies.csv`` and ``policies.tex`` of one run, from ``results.json``'s ``worlds``."""
    pct = f"{ci_level:.0%}"
    rows = [r for world, w in worlds.items() for r in interval_rows(w["policies"], world=world)]
    tables = [latex_table(by_profit(w["policies"]), policy_columns(w["policies"]),
                          f"Policies in the {world} world: mean [{pct} CI over users], same users for every policy.",
                          f"tab:policies_{world}")
              for world, w in worlds.items()]
    return write_csv(out_dir / "policies.csv", rows), write_latex(out_dir / "policies.tex", tables)


TABLES_LINK = "Paper tables: [policies.csv](policies.csv) (every metric, long format), [policies.tex](policies.tex) (booktabs)."
