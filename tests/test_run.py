"""The main job end to end on tiny sizes: artifacts, contract shape, determinism, config errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hydra import compose, initialize_config_dir
from scipy.stats import kendalltau

from agents.sb3 import build_agent, resume_from_checkpoint, train_agent
from envs.campaign import CampaignConfig
from envs.true_world import TrueWorld
from envs.vector_env import CampaignVectorEnv
from experiments import run as run_module
from experiments.parallel import available_cpus
from recsys.artifacts import json_bytes

CONF = str(Path(__file__).resolve().parent.parent / "conf")
TINY = [
    "experiment=smoke", "experiment.progress=false",
    "experiment.evaluation.n_users=300", "experiment.evaluation.n_bootstrap=100",
    "experiment.ope.policies=[random,logging,ppo,recurrent_ppo,dqn,gru4rec_softmax,value_ranker,epsilon_greedy_frozen]",
    "agents.ppo.eval_every=1024", "experiment.workers=2",
]
ESTIMATORS = {"dm", "ips", "snips", "dr", "sndr", "switch_dr", "dr_os", "pdis", "wdr", "fqe"}


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=overrides)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("run")
    return out, run_module.run(_compose(TINY), out)


def test_run_writes_every_artifact(tiny_run):
    out, _ = tiny_run
    for name in ("logs.parquet", "results.json", "report.md", "report.html", "policy_metrics_true.png",
                 "policy_metrics_learned.png", "fidelity.json", "fidelity.md", "calibration.png", "marginals.png",
                 "policy_values.png", "simulator/catalog.json", "simulator/response_model/model.pt",
                 "simulator/user_gan/config.json"):
        assert (out / name).stat().st_size > 0, name
    assert list((out / "tensorboard").rglob("events.out.tfevents.*")), "no TensorBoard event file"
    # the evaluation callback: ppo every 1,024 steps of 2,048 (2 points), the others once at the end,
    # in both worlds, on the same held-out users each time
    from experiments.report.plots import read_scalars

    curves = read_scalars(out / "tensorboard", ("eval_true/profit_per_user", "eval_learned/profit_per_user"))
    assert [step for step, _ in curves["eval_true/profit_per_user"]["ppo"]] == [1024, 2048]
    assert len(curves["eval_learned/profit_per_user"]["a2c"]) == 1
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and 'src="policy_metrics_true.png"' not in html


def test_results_follow_the_contract(tiny_run):
    out, results = tiny_run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == json.loads(json_bytes(results))  # the one JSON writer
    true, learned = on_disk["worlds"]["true"]["policies"], on_disk["worlds"]["learned"]["policies"]
    agents = {"ppo", "a2c", "dqn", "maskable_ppo", "recurrent_ppo", "ppo_true"}
    bandits = {"epsilon_greedy", "linucb", "thompson"}
    fixed = {"random", "greedy", "logging", "no_offer", "softmax"}
    recommenders = {"popularity", "logistic", "deepfm", "mf", "gru4rec", "value_ranker"}
    assert agents | bandits | fixed | recommenders | {"oracle_greedy", "nurture"} == set(true)
    assert set(on_disk["recommenders"]["offline_metrics"]) == recommenders
    for name, metrics in on_disk["recommenders"]["offline_metrics"].items():
        assert 0.5 < metrics["click_auc"] <= 1.0, name  # trained on logs, judged on held-out users
    assert set(learned) == set(true) - {"oracle_greedy", "nurture"}  # oracles need TrueWorld's hidden state
    for world in (true, learned):
        for name, metrics in world.items():
            for metric in ("click_rate", "conversion_rate", "return", "profit", "episode_length", "roi", "coverage"):
                iv = metrics[metric]
                assert iv["ci_low"] <= iv["ci_high"], (name, metric, iv)  # coverage itself: tests/test_stats.py
        # users differ, so a working bootstrap gives a CI of positive width; a policy that never
        # sends has exactly zero clicks in every resample
        assert world["random"]["return"]["ci_low"] < world["random"]["return"]["ci_high"]
        assert world["no_offer"]["click_rate"] == {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    segments = on_disk["segments"]["segments"]
    assert sum(seg["share"] for seg in segments.values()) == pytest.approx(1.0)
    assert on_disk["segments"]["challenger"] in agents
    s2r = on_disk["sim_to_real"]
    true_ret = [true[p]["return"]["mean"] for p in learned]
    sim_ret = [learned[p]["return"]["mean"] for p in learned]
    assert s2r["kendall_tau"] == pytest.approx(kendalltau(true_ret, sim_ret).statistic, abs=1e-12)
    assert s2r["rel_error"] == pytest.approx({p: abs(s - t) / abs(t) if t else None
                                              for p, t, s in zip(learned, true_ret, sim_ret, strict=True)})
    fidelity = json.loads((out / "fidelity.json").read_text())
    for key in ("click_auc", "click_auc_no_history", "click_auc_logistic", "segment_oracle_click_auc",
                "oracle_click_auc", "click_ece", "conversion_auc", "segment_oracle_conversion_auc",
                "oracle_conversion_auc", "conversion_ece", "c2st_auc", "c2st_auc_marginals_baseline",
                "kendall_tau", "logging_ctr_rel_error", "logging_cvr_rel_error"):
        assert isinstance(fidelity[key], float) and math.isfinite(fidelity[key]), key
        if "auc" in key:
            assert 0.0 <= fidelity[key] <= 1.0, key
        if key.endswith(("ece", "rel_error")):
            assert fidelity[key] >= 0.0, key
    # the oracle sees the hidden latent: on the same rows nothing learned from logs can beat it by much
    assert fidelity["oracle_click_auc"] > fidelity["click_auc_logistic"]
    assert on_disk["config"]["experiment"]["seed"] == 0
    assert on_disk["provenance"]["packages"]["torch"]


def test_ope_section_estimates_every_policy_with_every_estimator(tiny_run):
    out, results = tiny_run
    ope = results["ope"]
    assert set(ope) == {"random", "logging", "ppo", "recurrent_ppo", "dqn", "gru4rec_softmax", "value_ranker",
                        "epsilon_greedy_frozen"}
    for name, entry in ope.items():
        assert set(entry["estimators"]) == ESTIMATORS, name
        lo, hi = entry["true_value_ci"]
        assert lo < hi, name
        for est, e in entry["estimators"].items():
            assert e["ci_low"] <= e["ci_high"], (name, est, e)
            assert e["target"] == ("sequential" if est in {"pdis", "wdr", "fqe"} else "per_decision")
            # one draw: the error statistics are those of the first draw's estimate
            assert e["draws"] == 1 and e["bias"] == pytest.approx(e["estimate"] - entry["true_value"])
            assert e["coverage"] == float(e["ci_low"] <= entry["true_value"] <= e["ci_high"])
    # the logging policy evaluated on its own logs: every weight is exactly 1 (the logged
    # propensities are reproduced bit-exactly), so IPS = SNIPS = PDIS = the mean logged return
    logging = ope["logging"]["estimators"]
    assert logging["ips"]["estimate"] == pytest.approx(logging["snips"]["estimate"], rel=1e-9)
    assert logging["ips"]["estimate"] == pytest.approx(logging["pdis"]["estimate"], rel=1e-9)
    assert set(results["ope_validation"]["by_kind"]) == {"baseline", "RL agent", "recommender (softmax)",
                                                         "recommender (greedy)", "bandit (frozen)"}
    assert (out / "ope.png").stat().st_size > 0
    assert "Off-policy evaluation" in (out / "report.md").read_text()


def test_json_writer_turns_nan_and_numpy_into_plain_strict_json():
    """One policy for every JSON artifact: NaN/inf -> null, numpy -> Python, strict JSON out."""
    text = json_bytes({"auc": float("nan"), "inf": -np.inf, "n": np.int64(3), "x": np.float32(0.5),
                       "ok": np.bool_(True), "v": np.array([0.25, np.nan]), "t": (1, 2)}).decode()

    def refuse(constant: str) -> None:
        raise AssertionError(f"non-strict JSON constant {constant}")

    assert json.loads(text, parse_constant=refuse) == {"auc": None, "inf": None, "n": 3, "x": 0.5, "ok": True,
                                                       "v": [0.25, None], "t": [1, 2]}
    assert json_bytes({"p": 0.1 + 0.2}) == (json.dumps({"p": 0.1 + 0.2}, indent=2) + "\n").encode()  # finite: as before
    with pytest.raises(TypeError):
        json_bytes({"path": Path("x")})


def test_same_seed_same_results_with_any_number_of_workers(tiny_run, tmp_path):
    out, _ = tiny_run  # 2 worker processes; this run does every job inline, one after another
    run_module.run(_compose([*TINY, "experiment.workers=1"]), tmp_path)
    first = json.loads((out / "results.json").read_text())
    second = json.loads((tmp_path / "results.json").read_text())
    assert first["worlds"] == second["worlds"]
    assert first["ope"] == second["ope"]
    assert (out / "logs.parquet").read_bytes() == (tmp_path / "logs.parquet").read_bytes()


def test_wrong_config_key_and_value_fail_clearly(tmp_path):
    with pytest.raises(Exception, match="n_ofers"):
        _compose(TINY + ["world.n_ofers=3"])
    with pytest.raises(ValueError, match="campaign.reward"):
        run_module.run(_compose(TINY + ["campaign.reward=clicks"]), tmp_path)
    with pytest.raises(ValueError, match="agent.algo"):
        run_module.run(_compose(TINY + ["agents.ppo.algo=sac"]), tmp_path)
    # an unknown SB3 hyperparameter and a missing checkpoint fail before logs or a simulator exist
    with pytest.raises(ValueError, match="n_stepz.*PPO"):
        run_module.run(_compose(TINY + ["+agents.ppo.hyperparams.n_stepz=3"]), tmp_path)
    with pytest.raises(ValueError, match="agent.resume_from: .*missing.zip is not a file"):
        run_module.run(_compose(TINY + [f"agents.ppo.resume_from={tmp_path / 'missing.zip'}"]), tmp_path)
    assert not (tmp_path / "logs.parquet").exists()
    with pytest.raises(ValueError, match="experiment.agents"):
        run_module.run(_compose(TINY + ["experiment.agents=[ppo,sac]"]), tmp_path)
    with pytest.raises(ValueError, match="experiment.ope.policies: unknown \\['lightgbm'\\]"):
        run_module.run(_compose(TINY + ["experiment.ope.policies=[random,lightgbm]"]), tmp_path)
    with pytest.raises(ValueError, match="experiment.ope.estimators.names"):
        run_module.run(_compose(TINY + ["experiment.ope.estimators.names=[ips,magic]"]), tmp_path)


def test_checkpoints_are_written_and_training_resumes_from_them(tiny_run, tmp_path, monkeypatch):
    out, _ = tiny_run
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where SB3 makes its default log folders
    final = out / "checkpoints" / "ppo_final.zip"
    assert final.is_file()
    config = run_module.config_module.load(_compose(TINY))
    campaign = CampaignConfig(invalid_action="penalize")  # plain PPO learns the masks via a penalty
    env = CampaignVectorEnv(TrueWorld(config.world, n_users=32), campaign)
    agent = config.agents["ppo"]
    model = resume_from_checkpoint(build_agent("ppo", env, agent.hyperparams, agent.net_arch, 0, None), final)
    assert model.num_timesteps == 2048  # the checkpoint's count (smoke: 2048 steps)
    train_agent(model, 4096, "ppo", progress=False, checkpoint_dir=tmp_path)
    assert model.num_timesteps == 4096  # continued: 2048 more, not 4096 from zero
    assert (tmp_path / "ppo_final.zip").is_file()
    assert not list(tmp_path.glob("SB3-*")), "training without TensorBoard must not leave SB3 log folders"
    with pytest.raises(FileNotFoundError, match="resume_from"):
        resume_from_checkpoint(model, tmp_path / "missing.zip")


@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]], ids=["basic", "joblib"])
def test_multirun_over_seeds(tmp_path, launcher):
    cmd = [sys.executable, "-m", "experiments.run", "-m", *TINY, *launcher, "experiment.seed=0,1",
           "experiment.workers=0", f"hydra.sweep.dir={tmp_path}"]
    subprocess.run(cmd, check=True, capture_output=True, cwd=Path(__file__).resolve().parent.parent, timeout=600)
    results = [json.loads(p.read_text()) for p in sorted(tmp_path.rglob("results.json"))]
    assert len(results) == 2
    assert {r["config"]["experiment"]["seed"] for r in results} == {0, 1}
    # workers=0: one per CPU, but one inside a parallel launcher's job (the launcher fills the cores)
    assert {r["jobs"]["workers"] for r in results} == {1 if launcher else available_cpus()}


def test_fit_simulator_rejects_too_few_users_and_malformed_logs(tmp_path):
    from experiments.collect import collect_logs
    from recsys.data.dataset import LoggedDataset
    from recsys.data.schema import LogSchemaError

    config = run_module.config_module.load(_compose(TINY))
    logs = collect_logs(config, progress=False, n_users=50)
    catalog = TrueWorld(config.world).catalog
    with pytest.raises(ValueError, match="50 users, need at least 100"):
        LoggedDataset.from_table(logs, catalog)
    broken = logs.set_column(logs.column_names.index("propensity"), "propensity",
                             pa.array([0.0] * logs.num_rows))
    with pytest.raises(LogSchemaError, match="propensity"):
        LoggedDataset.from_table(broken, catalog)
    small = TrueWorld(replace(config.world, n_offers=config.world.n_offers - 4)).catalog
    with pytest.raises(ValueError, match="declares n_actions=25 but the catalog has 20 offers"):
        LoggedDataset.from_table(logs, small)
    larger = TrueWorld(replace(config.world, n_offers=30)).catalog  # 24-offer logs, a 30-offer world: refused too
    with pytest.raises(ValueError, match="declares n_actions=25 but the catalog has 30 offers"):
        LoggedDataset.from_table(logs, larger)
    undeclared = logs.replace_schema_metadata(None)  # without metadata only the range can be checked
    with pytest.raises(ValueError, match="actions go up to 24 but the catalog has 20 offers"):
        LoggedDataset.from_table(undeclared, small)


def test_recommender_group_and_ope_validation_config_compose():
    from experiments import config as config_module

    fast = config_module.load(_compose(["recommender=fast"])).recommender
    assert fast.configs()["deepfm"] == {"epochs": 5} and fast.names[-1] == "value_ranker"
    with pytest.raises(ValueError, match="recommender.hyperparams.deepfm: .*embed_dimm"):
        config_module.load(_compose(["+recommender.hyperparams.deepfm.embed_dimm=3"]))
    with pytest.raises(ValueError, match="recommender: unknown \\['lightgbm'\\]"):
        config_module.load(_compose(["recommender.names=[logistic,lightgbm]"]))
    validation = config_module.load(_compose(["experiment=ope_validation"]))
    assert validation.experiment.ope.draws > 1
    run_module.check_ope_policies(validation)  # every policy it names exists in that run


def test_results_carry_seconds_per_stage(tiny_run):
    _, results = tiny_run
    timings = results["timings"]
    assert set(timings) == {"logs", "simulator_and_recommenders", "agents", "evaluation", "ope", "total"}
    assert all(v >= 0 for v in timings.values())
    assert timings["total"] == pytest.approx(sum(v for k, v in timings.items() if k != "total"), abs=0.05)
    jobs = results["jobs"]  # each parallel job's own seconds, where it ran
    agents = results["config"]["experiment"]["agents"]
    assert jobs["workers"] == 2 and {f"train_{a}" for a in agents} | {"user_gan"} <= set(jobs["seconds"])
    assert sum(jobs["seconds"][f"train_{a}"] for a in agents) > 0
    assert jobs["engine"] == "processes"
    report = (tiny_run[0] / "report.md").read_text().split("## Parallel jobs")[1]
    longest = max(jobs["seconds"], key=jobs["seconds"].get)
    assert "on 2 worker(s) (processes)" in report and longest in report.split("\n| ")[2]  # largest first
