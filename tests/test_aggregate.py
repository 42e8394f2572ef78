"""experiments.aggregate and experiments.report.tables: across-seed statistics, reward-objective
comparison, failed jobs, paper tables, and real multiruns (basic and submitit launchers) with a
failing job."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from experiments import aggregate as agg
from experiments.report.tables import (
    latex_escape,
    latex_table,
    markdown_table,
    policy_columns,
    write_policy_tables,
)
from recsys.stats import t_interval

ROOT = Path(__file__).resolve().parent.parent
METRICS = ("click_rate", "conversion_rate", "profit", "return", "episode_length")


def _iv(mean: float, half: float = 0.1) -> dict[str, float]:
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half}


def _results(seed: int, reward: str, profit: dict[str, float], ret: dict[str, float] | None = None) -> dict:
    """A results.json with the contract's shape: every policy's metrics in both worlds."""
    ret = ret or profit
    policies = {p: {"click_rate": _iv(0.1 + 0.01 * i), "conversion_rate": _iv(0.02 + 0.001 * i),
                    "profit": _iv(profit[p]), "return": _iv(ret[p]), "episode_length": _iv(5.0 + i)}
                for i, p in enumerate(profit)}
    return {"config": {"experiment": {"seed": seed}, "campaign": {"reward": reward}},
            "worlds": {"true": {"policies": policies},
                       "learned": {"policies": {p: v for p, v in policies.items() if p != "nurture"}}},
            "sim_to_real": {"kendall_tau": 0.5 + 0.1 * seed, "rel_error": {}}}


def _sweep(root: Path, task: list[str], jobs: list[tuple[list[str], dict | None]]) -> Path:
    """A directory laid out like a Hydra multirun: multirun.yaml and <num>/.hydra/*.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {
        "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": None},
        "overrides": {"task": task}}}))
    for num, (overrides, results) in enumerate(jobs):
        job = root / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"num": num}}}))
        if results is not None:
            (job / "results.json").write_text(json.dumps(results))
    return root


# ---------------------------------------------------------------- statistics
def test_t_interval_matches_hand_computation():
    iv = t_interval(np.array([1.0, 2.0, 3.0, 4.0]), 0.95)
    # mean 2.5, sd 1.290994, t(0.975, 3) = 3.182446: half-width 2.054260
    assert iv.mean == pytest.approx(2.5)
    assert (iv.ci_low, iv.ci_high) == pytest.approx((2.5 - 2.054260, 2.5 + 2.054260), abs=1e-5)
    assert t_interval(np.array([3.0]), 0.95) is None  # one seed: no spread, no CI
    assert t_interval(np.array([2.0, 2.0, np.nan]), 0.95).ci_high == 2.0  # NaN dropped, zero spread


@pytest.fixture
def reward_sweep(tmp_path) -> Path:
    """3 seeds x 2 rewards; job 5 (seed 2, profit) failed with a traceback in FAILED.txt; the
    sweep defined 8 jobs (seed 3 too) but jobs 6 and 7 never started."""
    profits = {0: 1.0, 1: 2.0, 2: 6.0}  # "earner"'s profit per seed
    jobs = []
    for seed in (0, 1, 2):
        for reward in ("click", "profit"):
            # under click, "clicker" has the best return; under profit, "earner" does; the oracle
            # "nurture" beats both but is not deployable
            ret = ({"earner": 1.0, "clicker": 3.0, "nurture": 9.0} if reward == "click"
                   else {"earner": profits[seed], "clicker": 0.5, "nurture": 9.0})
            res = _results(seed, reward, {"earner": profits[seed], "clicker": 0.5 + seed, "nurture": 9.0}, ret)
            jobs.append((["experiment=smoke", f"experiment.seed={seed}", f"campaign.reward={reward}"], res))
    jobs[5] = (jobs[5][0], None)
    root = _sweep(tmp_path / "sweep", ["experiment=smoke", "experiment.seed=0,1,2,3", "campaign.reward=click,profit"], jobs)
    (root / "5" / agg.FAILED_MARKER).write_text("Traceback (most recent call last):\n  File x\nValueError: boom at seed 2\n")
    return root


def test_aggregate_means_cis_and_groups(reward_sweep):
    summary = agg.aggregate(reward_sweep, level=0.95)
    assert summary["n_jobs"] == {"found": 6, "aggregated": 5, "failed": 3, "expected": 8}
    assert summary["constant_overrides"] == ["experiment=smoke"]
    groups = {g["label"]: g for g in summary["groups"]}
    assert set(groups) == {"campaign.reward=click", "campaign.reward=profit"}
    click = groups["campaign.reward=click"]
    assert click["seeds"] == [0, 1, 2] and click["jobs"] == [0, 2, 4]
    earner = click["worlds"]["true"]["policies"]["earner"]["profit"]
    # seeds give 1, 2, 6: mean 3, sd 2.645751, t(0.975, 2) = 4.302653 -> half-width 6.572411
    assert earner["mean"] == pytest.approx(3.0) and earner["n_seeds"] == 3
    assert (earner["ci_low"], earner["ci_high"]) == pytest.approx((3 - 6.572411, 3 + 6.572411), abs=1e-5)
    assert earner["values"] == [1.0, 2.0, 6.0]
    profit = groups["campaign.reward=profit"]["worlds"]["true"]["policies"]["earner"]["profit"]
    # seeds 0, 1 only (seed 2 failed): mean 1.5, sd 0.707107, t(0.975, 1) = 12.706205
    assert profit["mean"] == pytest.approx(1.5) and profit["n_seeds"] == 2
    assert profit["ci_high"] - profit["mean"] == pytest.approx(12.706205 * 0.707107 / np.sqrt(2), abs=1e-4)
    tau = click["sim_to_real"]["kendall_tau"]
    assert tau["mean"] == pytest.approx(0.6)
    assert "nurture" not in click["worlds"]["learned"]["policies"]


def test_reward_objective_winners(reward_sweep):
    summary = agg.aggregate(reward_sweep)
    (comparison,) = summary["reward_objectives"]
    assert comparison["objectives"] == ["click", "profit"]
    best = comparison["best"]
    assert best["click"]["policy"] == "nurture" and best["click"]["best_non_oracle"] == "clicker"
    assert best["profit"]["best_non_oracle"] == "earner"
    assert comparison["policies"]["clicker"]["click"]["profit"]["mean"] == pytest.approx(1.5)  # 0.5, 1.5, 2.5
    md = (reward_sweep / "aggregate.md").read_text()
    assert "Which policy wins under which reward objective" in md
    assert "| `click` | `nurture`" in md and "`clicker`" in md
    assert (reward_sweep / "aggregate_objectives_0.png").stat().st_size > 0
    html = (reward_sweep / "aggregate.html").read_text()
    assert "data:image/png;base64," in html and 'src="aggregate_objectives_0.png"' not in html


def test_failed_and_missing_jobs_are_named(reward_sweep):
    summary = agg.aggregate(reward_sweep)
    failed = {f["job"]: f for f in summary["failed_jobs"]}
    assert set(failed) == {5, 6, 7}
    assert failed[5]["error"] == "ValueError: boom at seed 2"
    assert failed[5]["overrides"] == ["experiment=smoke", "experiment.seed=2", "campaign.reward=profit"]
    assert failed[6]["error"].startswith("never started") and "experiment.seed=3" in failed[6]["overrides"]
    md = (reward_sweep / "aggregate.md").read_text()
    failed_section = md.split("## Failed jobs")[1]
    assert "| 5 |" in failed_section and "boom at seed 2" in failed_section and "| 7 |" in failed_section


def test_error_from_the_job_log_when_there_is_no_marker(tmp_path):
    root = _sweep(tmp_path / "s", ["experiment.seed=0,1"],
                  [(["experiment.seed=0"], _results(0, "profit", {"a": 1.0})), (["experiment.seed=1"], None)])
    (root / "1" / "run.log").write_text("[2026][campaign_gym][INFO] - generating logs\n"
                                        "[2026][campaign_gym][ERROR] - job failed: out of memory\n")
    (root / "0" / "results.json").write_text("{not json")
    jobs = agg.read_sweep(root)
    assert jobs[1].error == "run.log: [2026][campaign_gym][ERROR] - job failed: out of memory"
    assert jobs[0].error.startswith("unreadable results.json")
    (root / "0" / "results.json").write_text(json.dumps({"summary": {}}))  # e.g. an experiment=obd run
    assert agg.read_job(root / "0").error == "results.json has no worlds.true section (not a campaign run?)"


def test_csv_and_latex_of_the_aggregate(reward_sweep):
    agg.aggregate(reward_sweep)
    with open(reward_sweep / "aggregate.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["campaign.reward", "objective", "world", "policy", "metric", "n_seeds", "mean",
                             "ci_low", "ci_high"]
    row = next(r for r in rows if r["campaign.reward"] == "click" and r["world"] == "true"
               and r["policy"] == "earner" and r["metric"] == "profit")
    assert float(row["mean"]) == pytest.approx(3.0) and int(row["n_seeds"]) == 3
    assert len(rows) == 2 * (3 + 2) * len(METRICS)  # groups x (true + learned policies) x metrics
    tex = (reward_sweep / "aggregate.tex").read_text()
    assert tex.count(r"\toprule") == tex.count(r"\bottomrule") == 1 + 2 * 2  # objectives + groups x worlds
    assert r"\multicolumn{3}{c}{reward = click}" in tex


def test_exit_codes(tmp_path, reward_sweep, capsys):
    assert agg.main([str(reward_sweep), "--no-progress"]) == 0
    assert agg.main([str(tmp_path / "nowhere")]) == 1
    (tmp_path / "plain").mkdir()
    assert agg.main([str(tmp_path / "plain")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"experiments.aggregate: {tmp_path / 'plain'}: not a Hydra multirun directory (no multirun.yaml)"
    only_failures = _sweep(tmp_path / "failed", ["experiment.seed=0"], [(["experiment.seed=0"], None)])
    assert agg.main([str(only_failures), "--no-progress"]) == 1
    assert "none of 1 jobs has usable results (first error: no results.json" in capsys.readouterr().err


# ---------------------------------------------------------------- paper tables of one run
def test_policy_tables_of_a_run(tmp_path):
    results = _results(0, "profit", {"oracle_greedy": 3.0, "value_ranker": 5.0, "ppo": -1.25})
    csv_path, tex_path = write_policy_tables(results["worlds"], tmp_path, 0.95)
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["world", "policy", "metric", "mean", "ci_low", "ci_high"]
    assert len(rows) == (3 + 3) * len(METRICS)
    ppo = next(r for r in rows if (r["world"], r["policy"], r["metric"]) == ("true", "ppo", "profit"))
    assert [float(ppo[k]) for k in ("mean", "ci_low", "ci_high")] == pytest.approx([-1.25, -1.35, -1.15])
    tex = tex_path.read_text()
    assert tex.count(r"\toprule") == tex.count(r"\midrule") == tex.count(r"\bottomrule") == 2
    assert "oracle_greedy" not in tex and r"oracle\_greedy" in tex
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert [line.split(" & ")[0] for line in body] == ["value\\_ranker", "oracle\\_greedy", "ppo"]  # by profit
    cells = body[0].rstrip(" \\").split(" & ")
    assert cells[3] == r"\textbf{5.00} [4.90, 5.10]"  # profit: best in bold, [low, high]
    assert r"$-$1.25" in tex and r"\textbf" not in body[2].split(" & ")[3]
    # episode_length: 5 + index, so oracle_greedy (index 0) is not the best, ppo (index 2) is
    assert body[2].split(" & ")[4].startswith(r"\textbf{7.00}")


def test_table_helpers_escape_and_mark_ties():
    assert latex_escape("a_b & 50% #1 {x} $") == r"a\_b \& 50\% \#1 \{x\} \$"
    policies = {"a": {"profit": _iv(2.0)}, "b": {"profit": _iv(2.0)}, "c": {"profit": {"mean": 1.0, "ci_low": None,
                                                                                    "ci_high": None}}}
    md = markdown_table(["a", "b", "c"], policy_columns(policies, ("profit",)))
    assert md.count("**2.00**") == 2 and "| `c` | 1.00 |" in md  # ties both bold; no CI -> mean only
    tex = latex_table(["a", "c"], policy_columns(policies, ("profit",)), "caption_x", "tab:x")
    assert r"\caption{caption\_x}" in tex and r"c & 1.00 \\" in tex


# ---------------------------------------------------------------- real multiruns
FAST = ["experiment=smoke", "experiment.progress=false", "experiment.evaluation.n_users=200",
        "experiment.evaluation.n_bootstrap=50", "experiment.agents=[ppo]", "experiment.ope.draws=0"]
FAIL_THEN_OK = "experiment.logs.n_users=50,1500"  # 50 users: the job's config check raises


def _multirun(sweep_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "experiments.run", "-m", *FAST, *extra, FAIL_THEN_OK, f"hydra.sweep.dir={sweep_dir}"]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_multirun_with_a_failing_job_is_aggregated(tmp_path):
    """Basic launcher: job 0 raises, Hydra still runs job 1, then exits 1; the aggregate names job 0."""
    proc = _multirun(tmp_path)
    assert proc.returncode == 1 and "needs 100 users" in proc.stderr  # Hydra re-raises the failure at the end
    assert (tmp_path / "1" / "results.json").is_file()  # ... after running the other job
    assert "needs 100 users" in (tmp_path / "0" / agg.FAILED_MARKER).read_text()
    assert "job failed" in (tmp_path / "0" / "run.log").read_text()
    for name in ("policies.csv", "policies.tex"):
        assert (tmp_path / "1" / name).stat().st_size > 0
    assert "[policies.tex](policies.tex)" in (tmp_path / "1" / "report.md").read_text()
    assert agg.main([str(tmp_path), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "aggregate.json").read_text())
    (failed,) = summary["failed_jobs"]
    assert failed["job"] == 0 and "experiment.logs.n_users=50" in failed["overrides"]
    assert failed["error"] == ("ValueError: experiment.logs.n_users: must be in [100, 5000000] (fitting a simulator "
                               "needs 100 users), got 50")
    assert [g["label"] for g in summary["groups"]] == ["experiment.logs.n_users=1500"]
    for name in ("aggregate.md", "aggregate.html", "aggregate.csv", "aggregate.tex"):
        assert (tmp_path / name).stat().st_size > 0
    assert "needs 100 users" in (tmp_path / "aggregate.md").read_text().split("## Failed jobs")[1]


def test_submitit_local_launcher_runs_jobs(tmp_path):
    """hydra-submitit-launcher's local executor (what the SLURM config uses, minus SLURM)."""
    proc = _multirun(tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert (tmp_path / "1" / "results.json").is_file(), proc.stderr[-2000:]
    assert (tmp_path / "0" / agg.FAILED_MARKER).is_file()
    assert list((tmp_path / ".submitit").rglob("*_log.out"))


def test_a_failed_rerun_beside_old_results_is_a_failure_not_a_success(tmp_path):
    """A job re-run into its old directory that then fails: its previous results.json is
    retired (kept as results.previous.json) and never aggregated under the new overrides."""
    good = _results(0, "profit", {"ppo": 1.0, "logistic": 2.0})
    sweep = _sweep(tmp_path / "sweep", ["experiment.seed=0,1"],
                   [(["experiment.seed=0"], good), (["experiment.seed=1"], good)])
    job = sweep / "1"
    agg.retire_previous_results(job)  # what experiments.run does before the re-run starts
    assert not (job / "results.json").exists() and (job / "results.previous.json").is_file()
    (job / agg.FAILED_MARKER).write_text("Traceback ...\nValueError: the re-run failed\n")
    # even if an old results.json were still there, FAILED.txt wins
    (job / "results.json").write_text(json.dumps(good))
    assert agg.main([str(sweep), "--no-progress"]) == 0
    summary = json.loads((sweep / "aggregate.json").read_text())
    assert [f["job"] for f in summary["failed_jobs"]] == [1]
    assert summary["failed_jobs"][0]["error"] == "ValueError: the re-run failed"
    agg.retire_previous_results(job)  # the next attempt starts clean: no marker, no results
    assert not (job / agg.FAILED_MARKER).exists() and not (job / "results.json").exists()


# ---------------------------------------------------------------- learning curves across seeds
def _events(job_dir: Path, agent: str, tag: str, points: list[tuple[int, float]]) -> None:
    """TensorBoard event files as SB3 writes them: <job>/tensorboard/<agent>_1/events.out.tfevents.*"""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(job_dir / "tensorboard" / f"{agent}_1")) as writer:
        for step, value in points:
            writer.add_scalar(tag, value, step)


def test_learning_curves_across_seeds_and_their_plot(tmp_path):
    """Per agent and world: at each evaluation step the mean over the seeds that reached it,
    with the t-interval a hand computation gives; the peak and the last step summarised; the
    report gets the plot."""
    jobs = [([f"experiment.seed={s}"], _results(s, "profit", {"ppo": 10.0 + s, "logistic": 9.0})) for s in (0, 1, 2)]
    sweep = _sweep(tmp_path / "sweep", ["experiment.seed=0,1,2"], jobs)
    learned = {0: [(100, 5.0), (200, 7.0)], 1: [(100, 6.0), (200, 8.0)], 2: [(100, 7.0), (200, 9.0), (300, 9.5)]}
    true = {0: [(100, 6.0), (200, 5.0)], 1: [(100, 7.0), (200, 6.0)], 2: [(100, 8.0), (200, 7.0), (300, 6.5)]}
    for s in (0, 1, 2):
        _events(sweep / str(s), "ppo", "eval_learned/profit_per_user", learned[s])
        _events(sweep / str(s), "ppo", "eval_true/profit_per_user", true[s])
    summary = agg.aggregate(sweep)
    (group,) = summary["groups"]
    c = group["curves"]["ppo"]
    assert c["learned"]["steps"] == [100, 200, 300] and c["learned"]["n_seeds"] == [3, 3, 1]
    assert c["learned"]["mean"] == pytest.approx([6.0, 8.0, 9.5])
    iv = t_interval(np.array([6.0, 7.0, 8.0]), 0.95)
    assert (c["true"]["ci_low"][0], c["true"]["ci_high"][0]) == pytest.approx((iv.ci_low, iv.ci_high))
    assert c["true"]["ci_low"][2] is None  # one seed reached step 300: no interval
    assert group["curve_summary"]["ppo"]["true"] == {"peak_step": 100, "peak_mean": pytest.approx(7.0),
                                                     "last_step": 300, "last_mean": pytest.approx(6.5)}
    assert group["curve_summary"]["ppo"]["learned"]["peak_step"] == 300
    assert (sweep / "aggregate_group0_curves.png").stat().st_size > 5_000
    assert "learning curves in both worlds" in (sweep / "aggregate.md").read_text()


def test_a_sweep_without_event_files_has_no_curves(reward_sweep):
    summary = agg.aggregate(reward_sweep)
    assert all(g["curves"] == {} for g in summary["groups"])
    assert not list(reward_sweep.glob("*_curves.png"))
