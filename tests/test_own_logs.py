"""experiment=own_logs end to end on logs of a TrueWorld no other test uses, catalog inference,
and the clear errors for bad input."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_dir

from agents.behaviour import EstimatedLoggingPolicy, behaviour_table
from agents.reference import LoggingPolicy
from envs.campaign import CampaignConfig
from envs.true_world import TrueWorld, TrueWorldConfig
from experiments import own_logs
from experiments.collect import generate_logs, make_env_factory
from experiments.truth_free import compare_sequences, sequence_stats
from recsys.data.catalog import infer_catalog
from recsys.data.io import write_logs
from recsys.data.profiles import MIN_USERS
from recsys.data.schema import log_metadata, validate_logs, with_metadata
from recsys.data.sequences import sequences_from_logs

CONF = str(Path(__file__).resolve().parent.parent / "conf")
WORLD = TrueWorldConfig(seed=7, n_offers=9, n_categories=3)  # a world the other tests never use
N_USERS = 400


@pytest.fixture(scope="module")
def world_logs(tmp_path_factory) -> tuple[Path, pa.Table, Path]:
    """(logs path, table, catalog.json path) of WORLD's logging policy; the metadata's world_seed
    is dropped so nothing can mistake these logs for the run's TrueWorld."""
    make_env = make_env_factory(lambda n: TrueWorld(WORLD, n_users=n), CampaignConfig())
    table = generate_logs(make_env, lambda e: LoggingPolicy(e), n_users=N_USERS, seed=123)
    meta = {k: v for k, v in log_metadata(table).items() if k not in ("world_seed", "source")}
    table = with_metadata(table, meta)
    d = tmp_path_factory.mktemp("logs")
    write_logs(table, d / "logs.parquet")
    (d / "catalog.json").write_text(json.dumps(TrueWorld(WORLD).catalog.to_json()))
    return d / "logs.parquet", table, d / "catalog.json"


def _cfg(*overrides: str):
    tiny = ["experiment=own_logs", "experiment.progress=false", "experiment.agents=[ppo]",
            "experiment.evaluation.n_users=200", "experiment.evaluation.n_bootstrap=50",
            "experiment.ope.policies=[random,logging,ppo,value_ranker]", "experiment.ope.n_bootstrap=20",
            "experiment.ope.estimators.fqe_iterations=2", "experiment.ope.estimators.fqe_steps=10",
            "recommender=fast", "recommender.names=[popularity,value_ranker]",
            "simulator.response_model.epochs=2", "simulator.response_model.patience=1",
            "simulator.user_gan.steps=30", "simulator.user_gan.batch_size=100", "simulator.n_bootstrap=20",
            "agents.ppo.total_timesteps=1024", "agents.ppo.n_envs=32", "agents.ppo.eval_every=0",
            "agents.ppo.checkpoint_every=0",
            "agents.ppo.hyperparams={n_steps: 32, batch_size: 256, n_epochs: 1}"]
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=[*tiny, *overrides])


@pytest.fixture(scope="module")
def tiny_run(world_logs, tmp_path_factory) -> tuple[Path, dict]:
    path, _, catalog = world_logs
    out = tmp_path_factory.mktemp("run")
    return out, own_logs.run(_cfg(f"experiment.logs.path={path}", f"experiment.logs.catalog={catalog}"), out)


def test_own_logs_end_to_end(tiny_run):
    out, results = tiny_run
    for name in ("logs.parquet", "results.json", "report.md", "report.html", "fidelity.json", "marginals.png",
                 "observed_calibration.png", "sequences.png", "ope_vs_learned.png", "policy_metrics_learned.png",
                 "simulator/catalog.json"):
        assert (out / name).stat().st_size > 0, name
    assert list((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert json.loads((out / "results.json").read_text())["sim_to_real"] is None
    assert set(results["worlds"]) == {"learned"}
    assert {"ppo", "logging", "value_ranker", "random"} <= set(results["worlds"]["learned"]["policies"])
    click = results["observed"]["click"]
    assert 0.5 < click["auc"] < 1 and click["ece"] >= 0 and click["rows"] > 0
    assert results["observed"]["segments"]  # per segment, against observed outcomes
    assert "click_auc_gain_logistic" in results["simulator"]["fidelity"]
    assert results["data"]["source"]["propensity"] == "logged"
    ope = results["ope"]
    assert set(ope) == {"random", "logging", "ppo", "value_ranker"}
    assert {"ips", "wdr", "fqe", "dm"} <= set(ope["ppo"]["estimators"])
    assert ope["ppo"]["learned_value"]["mean"] == results["worlds"]["learned"]["policies"]["ppo"]["return"]["mean"]
    assert "cis_overlap" in results["ope_agreement"]["policies"]["ppo"]["estimators"]["wdr"]
    assert set(results["sequences"]["stats"]) == {"session_length", "send_rate", "click_rate", "repeat_rate",
                                                  "time_between_sends"}


def test_report_has_the_no_ground_truth_sections(tiny_run):
    out, _ = tiny_run
    md = (out / "report.md").read_text()
    for heading in ("## Response model against observed outcomes", "## Synthetic vs real users",
                    "## Sequences: real vs simulated under the logging policy", "## Policies in the learned world",
                    "## Learned-world value vs OPE on held-out logs", "## What cannot be claimed without a ground truth"):
        assert heading in md, heading
    assert "TrueWorld" not in md.split("## What cannot be claimed")[0]  # no truth-based section
    assert "data:image/png;base64" in (out / "report.html").read_text()


def test_catalog_inferred_from_revenue_and_cost(world_logs):
    _, table, _ = world_logs
    truth = TrueWorld(WORLD).catalog
    catalog, notes = infer_catalog(table, validate_logs(table), money_needed=True)
    converted = np.unique(table["action"].to_numpy()[table["conversion"].to_numpy() > 0]) - 1
    assert catalog.n_offers == truth.n_offers and catalog.n_categories == 1
    np.testing.assert_allclose(catalog.value[converted], truth.value[converted])
    np.testing.assert_allclose(catalog.discount[converted], truth.discount[converted], atol=1e-9)
    assert catalog.contact_cost == pytest.approx(truth.contact_cost)
    assert any("one category" in n for n in notes)


def test_catalog_without_money_needs_a_click_reward(world_logs, tmp_path):
    _, table, _ = world_logs
    clicks_only = table.drop_columns(["revenue", "cost"])
    with pytest.raises(ValueError, match="cannot infer offer values.*campaign.reward=click"):
        infer_catalog(clicks_only, validate_logs(clicks_only), money_needed=True)
    catalog, notes = infer_catalog(clicks_only, validate_logs(clicks_only), money_needed=False)
    assert np.all(catalog.value == 1.0) and catalog.contact_cost == 0.0
    path = tmp_path / "clicks.parquet"
    write_logs(clicks_only, path)
    with pytest.raises(ValueError, match="cannot infer offer values"):  # the default reward is profit
        own_logs.load_logs(own_logs.config_module.load(_cfg(f"experiment.logs.path={path}")))


def test_catalog_whose_offer_count_does_not_match(world_logs, tmp_path):
    path, _, _ = world_logs
    small = tmp_path / "catalog.json"
    small.write_text(json.dumps({"category": [0] * 4, "value": [1.0] * 4, "discount": [0.0] * 4, "contact_cost": 0.1}))
    cfg = _cfg(f"experiment.logs.path={path}", f"experiment.logs.catalog={small}")
    with pytest.raises(ValueError, match=r"declares n_actions=10 but the catalog has 4 offers"):
        own_logs.load_logs(own_logs.config_module.load(cfg))


def test_too_few_users(world_logs, tmp_path):
    _, table, catalog = world_logs
    users = table["user_id"].to_numpy()
    few = table.filter(pa.array(users < np.unique(users)[MIN_USERS - 1]))
    path = tmp_path / "few.parquet"
    write_logs(few, path)
    cfg = _cfg(f"experiment.logs.path={path}", f"experiment.logs.catalog={catalog}")
    with pytest.raises(ValueError, match=rf"{MIN_USERS - 1} users, need at least {MIN_USERS}"):
        own_logs.load_logs(own_logs.config_module.load(cfg))


def test_no_path_and_no_propensities(world_logs, tmp_path):
    with pytest.raises(ValueError, match="experiment.logs.path: experiment=own_logs needs a logs parquet file"):
        own_logs.config_module.load(_cfg())
    _, table, _ = world_logs
    path = tmp_path / "no_prop.parquet"
    pq.write_table(table.drop_columns(["propensity"]), path)
    read = own_logs.read_own_logs(str(path))
    assert own_logs.propensity_status(log_metadata(read)) == "absent"


def test_estimated_logging_policy_reproduces_the_logged_sequences(world_logs):
    """The behaviour model replayed in the world that made the logs gives back their per-step send rate."""
    _, table, _ = world_logs
    seq = sequences_from_logs(table)
    probs = behaviour_table(seq, prior_strength=0.0)
    make_env = make_env_factory(lambda n: TrueWorld(WORLD, n_users=n), CampaignConfig())
    again = generate_logs(make_env, lambda e: EstimatedLoggingPolicy(e, probs), n_users=N_USERS, seed=10_000)
    cmp = compare_sequences(sequence_stats(seq), sequence_stats(sequences_from_logs(again)))
    assert abs(cmp["stats"]["send_rate"]["rel_diff"]) < 0.1
    assert cmp["stats"]["time_between_sends"]["real"] > 1
    zero = {k: 0.0 for k in cmp["real"]}
    assert compare_sequences(zero, {**zero, "repeat_rate": 0.05})["stats"]["repeat_rate"]["within_tolerance"] is False
    assert compare_sequences(zero, zero)["stats"]["repeat_rate"]["within_tolerance"] is True


@pytest.mark.skipif(importlib.util.find_spec("recbole") is None, reason="recbole wheel (MovieLens files) not installed")
def test_movielens_smoke(tmp_path):
    """experiment=movielens on tiny sizes: real logs, estimated propensities, no money."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=["experiment=movielens_smoke", "experiment.progress=false"])
    results = own_logs.run(cfg, tmp_path)
    assert results["data"]["source"]["propensity"] == "estimated"
    assert results["data"]["logs"]["n_users"] == 943
    assert "click_auc_gain_logistic" in json.loads((tmp_path / "fidelity.json").read_text())
    assert {"ips", "wdr"} <= set(results["ope"]["logging"]["estimators"])
    assert "Propensities are **estimated**" in (tmp_path / "report.md").read_text()
    # nobody rates a movie twice: with the experiment's frequency cap of 1 neither does the simulation
    repeat = results["sequences"]["stats"]["repeat_rate"]
    assert repeat["real"] == 0 and repeat["simulated"] == 0


def _iv(mean: float, half: float) -> dict[str, float]:
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half}


def test_agreement_from_an_estimator_that_fails_the_known_answer_check_is_no_trust_signal():
    """The MovieLens case: WDR's CI overlaps the learned world's for ``popularity`` but misses the
    logs' own return on ``logging`` (3.4 vs 11.3), so the summary must not call it trust."""
    from experiments.report.own_logs import _trust
    from experiments.truth_free import ope_agreement

    learned = {"logging": {"return": _iv(11.3, 0.1)}, "popularity": {"return": _iv(15.7, 0.1)}}
    held = {"logged_value": _iv(11.3, 0.8),
            "policies": {"logging": {"wdr": _iv(3.4, 0.4), "fqe": _iv(11.0, 0.5)},
                         "popularity": {"wdr": _iv(5.0, 14.0), "fqe": _iv(9.0, 1.0)}}}
    agreement = ope_agreement(learned, held, ("fqe", "wdr", "pdis"))
    assert agreement["known_answer"] == {"fqe": True, "wdr": False, "pdis": None}
    assert agreement["policies"]["popularity"]["estimators"]["wdr"]["cis_overlap"]
    text = _trust({"ope_agreement": agreement}, "popularity")
    assert "1 of the 2 sequential estimators" in text and "no estimator vouches for it" in text

    held["policies"]["popularity"]["fqe"] = _iv(15.5, 1.0)  # a passing estimator agrees too
    text = _trust({"ope_agreement": ope_agreement(learned, held, ("fqe", "wdr"))}, "popularity")
    assert "2 of the 2" in text and "only fqe counts" in text
    assert ope_agreement(learned, {"policies": held["policies"]}, ("wdr",))["known_answer"] == {"wdr": None}
