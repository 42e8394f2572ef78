"""The pessimism ablation of a run (``results.json`` -> ``pessimism``, built by
``experiments.learned_worlds``): one row per simulator-trained agent, and the scatter of every
policy's learned-world value against its true value."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from experiments.report.markdown import interval, num, pct, table
from experiments.report.plots import plot_sim_vs_true

SCATTER = "sim_vs_true.png"


def _options_md(options: Mapping[str, Any]) -> str:
    parts = []
    if options["reward_penalty"]:
        parts.append(f"MOPO λ = {num(options['reward_penalty'])}")
    if options["halt"]:
        parts.append(f"MOReL halt at q{num(100 * options['threshold_quantile'])}, κ = {num(options['halt_penalty'])}")
    if options["member_per_user"]:
        parts.append("one member per user")
    if options["users"] != "gan":
        parts.append(f"{options['users']} users")
    return ", ".join(parts) or "none (members' mean, GAN users)"


def pessimism_md(results: Mapping[str, Any]) -> str:
    """Per agent: its learned world, true profit, value in its own world, overrating, the
    world's Kendall tau over all policies and the share of its steps above the threshold."""
    section = results["pessimism"]
    worlds, rows = section["worlds"], []
    for name, row in sorted(section["agents"].items(), key=lambda kv: -kv[1]["true_profit"]["mean"]):
        options = worlds[row["world"]]["options"]
        rows.append((f"`{name}`", _options_md(options), interval(row["true_profit"]), interval(row["own_world_return"]),
                     pct(row["overrating"], sign=True), num(row["kendall_tau"]),
                     pct(row["uncertain_share"]) if row["uncertain_share"] is not None else "–"))
    threshold = worlds["learned"]["threshold"]
    note = ("Overrating: the agent's return in the world it trained in / its TrueWorld return − 1 (≤ 0: the "
            "simulator's value is a lower bound). Kendall tau: that world's ranking of every policy against "
            "TrueWorld's. Off-distribution steps: share of the agent's steps in the shipped learned world whose "
            "ensemble disagreement u(s, a) exceeds the threshold "
            + (f"({num(threshold)}, the q{num(100 * worlds['learned']['options']['threshold_quantile'])} of u "
               "over held-out logged sends)." if threshold is not None else "(needs an ensemble)."))
    return (table(("agent", "pessimism", "TrueWorld profit", "own-world return", "overrating", "tau",
                   "off-distribution steps"), rows) + f"\n\n{note}\n\n![learned vs true]({SCATTER})")


def plot_pessimism(results: Mapping[str, Any], path: Path) -> None:
    """Every policy of the shipped learned world, and each agent in the world it trained in."""
    true, learned = results["worlds"]["true"]["policies"], results["worlds"]["learned"]["policies"]
    points = {p: (true[p]["return"]["mean"], learned[p]["return"]["mean"]) for p in learned if p in true}
    agents = results["pessimism"]["agents"]
    for name, row in agents.items():
        points[name] = (row["true_return"]["mean"], row["own_world_return"]["mean"])
    plot_sim_vs_true(points, path, highlight=set(agents))
