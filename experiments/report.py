"""Turn a run's results into plots, ``report.md`` and a self-contained ``report.html``."""

from __future__ import annotations

import base64
import io
from collections.abc import Collection
from pathlib import Path
from typing import Any

import markdown
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.config import ALGOS  # noqa: E402
from recsys.artifacts import atomic_write_bytes, atomic_write_text  # noqa: E402

RL_AGENTS = ALGOS  # drawn in orange
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


def _fmt(iv: dict[str, float]) -> str:
    return f"{iv['mean']:.3f} [{iv['ci_low']:.3f}, {iv['ci_high']:.3f}]"


def policy_table(policies: dict[str, dict[str, dict[str, float]]], metrics: tuple[str, ...]) -> str:
    rows = ["| policy | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for name in sorted(policies, key=lambda p: -policies[p]["profit"]["mean"]):
        rows.append(f"| {name} | " + " | ".join(_fmt(policies[name][m]) for m in metrics) + " |")
    return "\n".join(rows)


def write_report(out_dir: Path, sections: list[tuple[str, str]], title: str, stem: str = "report") -> None:
    """``<stem>.md`` from (heading, markdown body) sections; ``<stem>.html`` is the same
    content with every image embedded, so the file can be mailed or archived alone."""
    md = f"# {title}\n\n" + "\n\n".join(f"## {h}\n\n{body}" for h, body in sections) + "\n"
    atomic_write_text(out_dir / f"{stem}.md", md)
    html_body = markdown.markdown(md, extensions=["tables"])
    for png in sorted(out_dir.glob("*.png")):
        data = base64.b64encode(png.read_bytes()).decode()
        html_body = html_body.replace(f'src="{png.name}"', f'src="data:image/png;base64,{data}"')
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}img{max-width:100%}")
    html = (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{style}</style></head><body>{html_body}</body></html>\n")
    atomic_write_text(out_dir / f"{stem}.html", html)


def data_summary_md(summary: dict[str, Any]) -> str:
    return "\n".join(f"- **{k}**: {v}" for k, v in summary.items())
