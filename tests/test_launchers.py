"""Hydra's three launchers live in one environment (`make install`), and a sweep runs on a
local Ray through conf/hydra/launcher/ray_cluster.yaml."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FAST = ["experiment=smoke", "experiment.progress=false", "experiment.evaluation.n_users=200",
        "experiment.evaluation.n_bootstrap=50", "experiment.agents=[ppo]", "experiment.ope.draws=0"]


def test_joblib_submitit_and_ray_launchers_import_together():
    for module in ("hydra_plugins.hydra_joblib_launcher.joblib_launcher",
                   "hydra_plugins.hydra_submitit_launcher.submitit_launcher",
                   "hydra_plugins.hydra_ray_launcher.ray_launcher"):
        importlib.import_module(module)


@pytest.mark.slow  # 2-3 min on 2 shared cores: Ray start-up and two smoke jobs
def test_ray_cluster_launcher_runs_a_sweep_on_local_ray(tmp_path):
    cmd = [sys.executable, "-m", "experiments.run", "-m", "hydra/launcher=ray_cluster", *FAST, "experiment.seed=0,1",
           f"hydra.sweep.dir={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Ray Launcher is launching 2 jobs" in proc.stdout + proc.stderr
    seeds = {json.loads((tmp_path / str(job) / "results.json").read_text())["config"]["experiment"]["seed"]
             for job in (0, 1)}
    assert seeds == {0, 1}
