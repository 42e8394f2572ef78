"""Merge a Hydra sweep into one report: mean and CI across seeds per group of overrides.

    python -m experiments.run -m experiment=smoke experiment.seed=0,1,2 campaign.reward=click,profit
    python -m experiments.aggregate multirun/smoke__<time>

Writes, in the sweep directory: ``aggregate.json``, and from it (``experiments.report.aggregate``)
``aggregate.md``, ``aggregate.html`` (the same, plots embedded), ``aggregate.csv`` (long: group
overrides, objective, world, policy, metric, n_seeds, mean, ci_low, ci_high), ``aggregate.tex``
(booktabs tables) and plots.

**Groups.** Each job's ``.hydra/overrides.yaml`` gives its overrides; jobs whose overrides
differ only in a seed key (``experiment.seed``; ``--seed-key`` to change) form one group.
Overrides shared by every job are listed once, not in the group names.

**Statistics.** A job contributes one number per (world, policy, metric): the mean over its
evaluation users. Across the seeds of a group the table gives the mean of those numbers and a
Student-t interval, mean ± t_{0.975, n-1} · sd / sqrt(n) (``--level``), i.e. seeds are the
independent replicates and the CI covers seed-to-seed variation (logs, simulator, training
and evaluation users all change with the seed). A bootstrap over 2–10 seeds would be too
narrow, hence t. A group with one seed gets its mean and no CI.

**Reward objectives.** When the groups differ in ``campaign.reward``, a "which policy wins
under which objective" section gives, per objective, the best policy by TrueWorld return
(also the best one that does not read the hidden state, i.e. not an oracle) and every policy's
click rate, conversion rate and profit under each objective, with a plot.

**Failed jobs.** A job without a readable ``results.json``, or with a ``FAILED.txt`` (it raised,
was killed, timed out, or is still running; a re-run retires the previous results first) does not stop the aggregation; it is named in a "Failed jobs" section
and in ``aggregate.json`` with its job number, overrides and error: the last line of the
``FAILED.txt`` that ``experiments.run`` writes into a job that raised (full traceback inside),
else an error line of the job's Hydra log, else "no results.json". Jobs the sweep defined
but that never got a directory (sweep interrupted) are named too (basic sweeper only).

**What Hydra 1.3.8 does with a failing job.** ``hydra.core.utils.run_job`` catches the task's
exception and stores it in the ``JobReturn`` (status FAILED); the basic launcher (and the
joblib and submitit launchers, which call ``run_job`` in each worker) goes on with the other
jobs of the batch; only afterwards does ``BasicSweeper.sweep`` read ``return_value``, which
re-raises the *first* failure, so the command exits 1 once the whole batch is done (verified
here; since Hydra 1.1, PR #1465; Hydra issues #2284 and #2551). With
``hydra.sweeper.max_batch_size`` set, later batches are not launched after a failed batch.
Hydra writes no trace of the error in the job's directory or ``.log`` (#2284), hence
``FAILED.txt`` and the logged traceback from ``experiments.run``.

Exit code 0 if at least one job was aggregated; 1 with a one-line message otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from scipy.stats import t as student_t
from tqdm import tqdm

from experiments.claims import agent_claims, seed_interval
from experiments.curves import curve_summary, curves_across_seeds
from experiments.report.aggregate import write_aggregate_report
from recsys.artifacts import atomic_write_json, atomic_write_text

FAILED_MARKER = "FAILED.txt"
SEED_KEYS = ("experiment.seed",)
REWARD_KEYS = ("campaign.reward", "campaign.reward_weights")
ORACLES = ("oracle_greedy", "nurture")  # read TrueWorld's hidden state: references, not deployable
WIN_METRICS = ("click_rate", "conversion_rate", "profit")  # comparable across objectives (return is not)
_ERROR_LINE = re.compile(r"(\[ERROR\]|Error|Exception|Traceback|Killed|CANCELLED|TIMEOUT)")


class AggregateError(Exception):
    """Nothing to aggregate: not a multirun directory, or no job finished."""


def write_failure_marker(job_dir: Path) -> Path:
    """Put the exception being handled (its traceback) in ``<job_dir>/FAILED.txt``."""
    return atomic_write_text(Path(job_dir) / FAILED_MARKER, traceback.format_exc())


def retire_previous_results(job_dir: Path) -> None:
    """Before a job (re)runs in ``job_dir``: an earlier run's ``results.json`` becomes
    ``results.previous.json`` (kept, never aggregated) and its ``FAILED.txt`` goes, so what the
    directory holds afterwards is this run's outcome only."""
    job_dir = Path(job_dir)
    if (job_dir / "results.json").is_file():
        os.replace(job_dir / "results.json", job_dir / "results.previous.json")
    (job_dir / FAILED_MARKER).unlink(missing_ok=True)


@dataclass
class Job:
    num: int
    dir: Path | None
    overrides: list[str]
    results: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class Group:
    overrides: dict[str, str]  # the varying, non-seed overrides that define the group
    jobs: list[Job] = field(default_factory=list)

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.overrides.items()) or "all jobs"

    @property
    def objective(self) -> str:
        return objective(self.jobs[0].results.get("config", {}).get("campaign", {}))


def objective(campaign: Mapping[str, Any]) -> str:
    """The reward a run optimised: its name, with the weights when it is a weighted sum."""
    if campaign.get("reward") != "weighted":
        return str(campaign.get("reward"))
    return "weighted(" + ",".join(f"{k}={v:g}" for k, v in campaign.get("reward_weights", {}).items()) + ")"


def split_override(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


# ---------------------------------------------------------------- reading the sweep
def find_job_dirs(sweep_dir: Path) -> list[Path]:
    """Job directories of a sweep: those with a ``.hydra/overrides.yaml`` (any depth, so a
    custom ``hydra.sweep.subdir`` works too)."""
    return sorted({p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")})


def read_job(job_dir: Path) -> Job:
    overrides = [str(o) for o in yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []]
    num = _job_num(job_dir)
    results_path = job_dir / "results.json"
    if not results_path.is_file() or (job_dir / FAILED_MARKER).is_file():  # a failed re-run beside old results
        return Job(num, job_dir, overrides, error=job_error(job_dir))
    try:
        results = json.loads(results_path.read_text())
    except ValueError as exc:
        return Job(num, job_dir, overrides, error=f"unreadable results.json: {exc}")
    if not isinstance(results, dict) or "true" not in (results.get("worlds") or {}):
        return Job(num, job_dir, overrides, error="results.json has no worlds.true section (not a campaign run?)")
    return Job(num, job_dir, overrides, results=results)


def _job_num(job_dir: Path) -> int:
    try:
        hydra_cfg = yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())
        return int(hydra_cfg["hydra"]["job"]["num"])
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return int(job_dir.name) if job_dir.name.isdigit() else -1


def job_error(job_dir: Path) -> str:
    """Why a job has no results: FAILED.txt's last line, else the job log's error lines."""
    marker = job_dir / FAILED_MARKER
    if marker.is_file():
        lines = [ln for ln in marker.read_text().splitlines() if ln.strip()]
        return lines[-1].strip() if lines else "FAILED.txt (empty)"
    for log in sorted(job_dir.glob("*.log")):
        hits = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if _ERROR_LINE.search(ln)]
        if hits:
            return f"{log.name}: {hits[-1]}"
    return "no results.json and no error recorded (killed, timed out or still running?)"


def expected_jobs(sweep_dir: Path) -> list[list[str]] | None:
    """The jobs a basic-sweeper multirun defined (index = job number), from multirun.yaml;
    None when that cannot be known (other sweepers, no multirun.yaml)."""
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        cfg = yaml.safe_load((sweep_dir / "multirun.yaml").read_text())["hydra"]
        if not str(cfg["sweeper"]["_target_"]).endswith("BasicSweeper"):
            return None
        params = [f"{k}={v}" for k, v in (cfg["sweeper"].get("params") or {}).items()]
        overrides = OverridesParser.create().parse_overrides(params + list(cfg["overrides"]["task"]))
        return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
    except Exception:  # noqa: BLE001  (best effort: the count is informative, not essential)
        return None


def read_sweep(sweep_dir: Path, progress: bool = False) -> list[Job]:
    """Every job of the sweep, in job order, with its results or its error."""
    if not sweep_dir.is_dir():
        raise AggregateError(f"{sweep_dir}: no such directory")
    if not (sweep_dir / "multirun.yaml").is_file():
        raise AggregateError(f"{sweep_dir}: not a Hydra multirun directory (no multirun.yaml)")
    dirs = find_job_dirs(sweep_dir)
    if not dirs:
        raise AggregateError(f"{sweep_dir}: no job directories (no <job>/.hydra/overrides.yaml) yet")
    jobs = [read_job(d) for d in tqdm(dirs, desc="reading jobs", unit="job", disable=not progress)]
    if (sweep_dir / ".submitit").is_dir():  # submitit launchers keep each job's stdout/stderr there
        for job in jobs:
            if job.error and job.error.startswith("no results.json"):
                job.error += "; see the job's .submitit/<id>/*_log.err"
    found = {j.num for j in jobs}
    for num, overrides in enumerate(expected_jobs(sweep_dir) or []):
        if num not in found:
            jobs.append(Job(num, None, overrides, error="never started (no job directory)"))
    return sorted(jobs, key=lambda j: j.num)


# ---------------------------------------------------------------- statistics across seeds
def group_jobs(jobs: Sequence[Job], seed_keys: Sequence[str] = SEED_KEYS) -> tuple[list[Group], list[str]]:
    """Finished jobs grouped by their non-seed overrides that vary across the sweep; also the
    overrides every job shares."""
    parsed = [dict(split_override(o) for o in j.overrides) for j in jobs]
    keys = list(dict.fromkeys(k for p in parsed for k in p))
    varying = [k for k in keys if k not in seed_keys and len({p.get(k) for p in parsed}) > 1]
    constant = [f"{k}={parsed[0][k]}" for k in keys
                if k not in varying and k not in seed_keys and all(k in p for p in parsed)]
    groups: dict[tuple, Group] = {}
    for job, p in zip(jobs, parsed, strict=True):
        if job.results is None:
            continue
        key = tuple((k, p.get(k, "")) for k in varying)
        groups.setdefault(key, Group(dict(key))).jobs.append(job)
    return list(groups.values()), constant


def across_seeds(results: Sequence[Mapping[str, Any]], level: float) -> dict[str, Any]:
    """``{"worlds": {world: {"policies": {policy: {metric: interval}}}}, "sim_to_real": ...}``
    over the given runs; an interval has mean, ci_low, ci_high (None for one seed), n_seeds
    and the per-seed values."""
    worlds: dict[str, Any] = {}
    for world in dict.fromkeys(w for r in results for w in r["worlds"]):
        policies: dict[str, dict[str, Any]] = {}
        runs = [r["worlds"][world]["policies"] for r in results if world in r["worlds"]]
        for policy in dict.fromkeys(p for run in runs for p in run):
            metrics = dict.fromkeys(m for run in runs if policy in run for m in run[policy])
            policies[policy] = {m: seed_interval([run[policy][m]["mean"] for run in runs
                                                  if m in run.get(policy, {})], level) for m in metrics}
        worlds[world] = {"policies": policies}
    taus = [r["sim_to_real"]["kendall_tau"] for r in results if r.get("sim_to_real")]
    return {"worlds": worlds, "sim_to_real": {"kendall_tau": seed_interval(taus, level) if taus else None},
            "claims": agent_claims([r for r in results if "recommenders" in r], level)}


def reward_comparisons(groups: Sequence[Group], stats: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per context (the group overrides other than the reward), when it holds more than one
    objective: the best policy per objective by TrueWorld return, and every policy's
    click rate, conversion rate and profit under each objective."""
    contexts: dict[tuple, dict[str, Mapping[str, Any]]] = {}
    for group, st in zip(groups, stats, strict=True):
        ctx = tuple((k, v) for k, v in group.overrides.items() if k not in REWARD_KEYS)
        contexts.setdefault(ctx, {})[group.objective] = st["worlds"]["true"]["policies"]
    out = []
    for ctx, by_objective in contexts.items():
        if len(by_objective) < 2:
            continue
        best = {}
        for obj, policies in by_objective.items():
            ranked = sorted(policies, key=lambda p: -policies[p]["return"]["mean"])
            deployable = [p for p in ranked if p not in ORACLES]
            best[obj] = {"policy": ranked[0], "return": policies[ranked[0]]["return"],
                         "best_non_oracle": deployable[0] if deployable else None,
                         "best_non_oracle_return": policies[deployable[0]]["return"] if deployable else None,
                         "ranking": [(p, policies[p]["return"]["mean"]) for p in deployable[:6]]}
        names = list(dict.fromkeys(p for policies in by_objective.values() for p in policies))
        out.append({"context": dict(ctx), "objectives": list(by_objective), "best": best,
                    "policies": {p: {obj: {m: pol[p][m] for m in WIN_METRICS if m in pol.get(p, {})}
                                     for obj, pol in by_objective.items() if p in pol} for p in names}})
    return out


# ---------------------------------------------------------------- the whole sweep
def aggregate(sweep_dir: Path, level: float = 0.95, seed_keys: Sequence[str] = SEED_KEYS,
              progress: bool = False) -> dict[str, Any]:
    """Read the sweep, write aggregate.{json,md,html,csv,tex} and plots; return the JSON."""
    sweep_dir = Path(sweep_dir)
    jobs = read_sweep(sweep_dir, progress)
    groups, constant = group_jobs([j for j in jobs if j.dir is not None], seed_keys)
    failed = [{"job": j.num, "overrides": j.overrides, "error": j.error, "dir": str(j.dir) if j.dir else None}
              for j in jobs if j.results is None]
    if not groups:
        raise AggregateError(f"{sweep_dir}: none of {len(jobs)} jobs has usable results "
                             f"(first error: {failed[0]['error'] if failed else 'none'})")
    stats = [across_seeds([j.results for j in g.jobs], level) for g in groups]
    for g, st in zip(groups, stats, strict=True):
        st["curves"] = curves_across_seeds([j.dir for j in g.jobs], level)
        st["curve_summary"] = curve_summary(st["curves"])
    comparisons = reward_comparisons(groups, stats)
    summary = {
        "sweep_dir": str(sweep_dir),
        "ci": {"method": "student_t_over_seeds", "level": level,
               "note": "per job: mean over its evaluation users; across the seeds of a group: mean ± t·sd/sqrt(n)",
               "t_multipliers": {str(n): float(student_t.ppf((1 + level) / 2, n - 1)) for n in (2, 3)}},
        "seed_keys": list(seed_keys),
        "constant_overrides": constant,
        "n_jobs": {"found": sum(j.dir is not None for j in jobs), "aggregated": sum(len(g.jobs) for g in groups),
                   "failed": len(failed), "expected": len(jobs)},
        "groups": [{"overrides": g.overrides, "label": g.label, "objective": g.objective,
                    "jobs": [j.num for j in g.jobs],
                    "seeds": [j.results.get("config", {}).get("experiment", {}).get("seed") for j in g.jobs], **st}
                   for g, st in zip(groups, stats, strict=True)],
        "reward_objectives": comparisons,
        "failed_jobs": failed,
    }
    atomic_write_json(sweep_dir / "aggregate.json", summary)

    write_aggregate_report(summary, sweep_dir)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.aggregate", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a Hydra multirun directory (multirun/<name>__<time>)")
    parser.add_argument("--level", type=float, default=0.95, help="confidence level of the across-seed CI")
    parser.add_argument("--seed-key", action="append", dest="seed_keys",
                        help=f"override key that only changes the seed (repeatable; default {SEED_KEYS[0]})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        summary = aggregate(args.sweep_dir, args.level, tuple(args.seed_keys or SEED_KEYS),
                            progress=not args.no_progress)
    except AggregateError as exc:
        print(f"experiments.aggregate: {exc}", file=sys.stderr)
        return 1
    n = summary["n_jobs"]
    print(f"aggregated {n['aggregated']} job(s) in {len(summary['groups'])} group(s) ({n['failed']} failed): "
          f"{args.sweep_dir / 'aggregate.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
