"""Sim-to-real learning curves across the seeds of a sweep (``aggregate.json`` -> groups[].curves).

During training every agent is evaluated on held-out users in the learned world and in
TrueWorld (``agents.sb3.callbacks.PeriodicEvalCallback``: ``eval_learned/*``, ``eval_true/*``).
Averaged over seeds, the two curves show where more training in the simulator stops paying in
the true world: a learned curve that keeps rising while the true one flattens or falls is the
agent exploiting the simulator's errors. Only the learned curve is data a user has (so only it
may choose a training budget); the true curve is the referee.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments.claims import seed_interval
from experiments.report.plots import read_scalars

CURVE_TAGS = {"learned": "eval_learned/profit_per_user", "true": "eval_true/profit_per_user"}


def curves_across_seeds(job_dirs: Sequence[Path], level: float) -> dict[str, dict[str, dict[str, list]]]:
    """``{agent: {world: {"steps", "mean", "ci_low", "ci_high", "n_seeds"}}}``: at every
    evaluation step, the mean over the seeds that reached it with a Student-t interval
    (``seed_interval``); agents without periodic evaluation are absent."""
    runs = [read_scalars(Path(d) / "tensorboard", tuple(CURVE_TAGS.values())) for d in job_dirs]
    out: dict[str, dict[str, dict[str, list]]] = {}
    for world, tag in CURVE_TAGS.items():
        for agent in dict.fromkeys(a for run in runs for a in run[tag]):
            by_step: dict[int, list[float]] = {}
            for run in runs:
                for step, value in dict(run[tag].get(agent, [])).items():  # one value per step and seed
                    by_step.setdefault(int(step), []).append(float(value))
            steps = sorted(by_step)
            cells = [seed_interval(by_step[s], level) for s in steps]
            out.setdefault(agent, {})[world] = {"steps": steps, **{k: [c[k] for c in cells] for k in
                                                                   ("mean", "ci_low", "ci_high", "n_seeds")}}
    return out


def curve_summary(curves: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per agent and world: the step of the highest mean and the last step, with their means
    (does the curve still rise at the end of training, or did it peak earlier?)."""
    out: dict[str, dict[str, Any]] = {}
    for agent, worlds in curves.items():
        for world, c in worlds.items():
            if not c["steps"]:
                continue
            best = max(range(len(c["steps"])), key=lambda i: c["mean"][i])
            out.setdefault(agent, {})[world] = {"peak_step": c["steps"][best], "peak_mean": c["mean"][best],
                                                "last_step": c["steps"][-1], "last_mean": c["mean"][-1]}
    return out
