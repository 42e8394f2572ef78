"""Hostile or careless input, table-driven: every case gets one clear line naming the field,
before any work starts. pytest's count of this module is the number of cases the suite keeps (log
corruptions and checkpoints have their own tables in test_logs.py and test_checkpoints.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from envs.campaign import CampaignConfig
from envs.campaign_env import CampaignEnv
from envs.true_world import TrueWorld, TrueWorldConfig
from envs.vector_env import CampaignVectorEnv
from envs.world import Catalog
from experiments import config as config_module
from recsys.simulator.io import CATALOG_FILE, load_simulator
from recsys.simulator.response_model import ResponseModelConfig

ROOT = Path(__file__).resolve().parent.parent
CONF = str(ROOT / "conf")
config_module.register()  # the structured configs behind conf/

# (overrides, the field the one-line message must name)
CONFIG_CASES = [
    (["experiment.evaluation.n_bootstrap=0"], "experiment.evaluation.n_bootstrap"),
    (["experiment.ope.n_bootstrap=0"], "experiment.ope.n_bootstrap"),
    (["world.value_min=100", "world.value_max=10"], "world.value_min"),
    (["world.incentive_max=1.5"], "world.incentive_max"),
    (["experiment.logs.n_users=20"], "experiment.logs.n_users"),
    (["+agents.ppo.hyperparams.n_stepz=3"], "agent.hyperparams"),
    (["+agents.recurrent_ppo.hyperparams.policy_kwargs.lstm_hiden_size=8"], "agent.hyperparams.policy_kwargs"),
    (["agents.ppo.resume_from=/nonexistent/ppo.zip"], "agent.resume_from"),
    (["campaign.invalid_action_penalty=-5"], "campaign.invalid_action_penalty"),
    (["campaign.reward=weighted", "campaign.reward_weights={click: 0, conversion: 0, profit: 0}"],
     "campaign.reward_weights"),
    (["experiment.seed=1000000000"], "experiment.seed"),
    (["campaign.reward=clicks"], "campaign.reward"),
    (["experiment.agents=[ppo,sac]"], "experiment.agents"),
    (["simulator.learned_world.reward_penalty=1.0"], "simulator.learned_world"),  # pessimism needs an ensemble
    (["simulator.learned_world.halt=true"], "simulator.learned_world"),
    (["simulator.learned_world.threshold_quantile=1.5"], "simulator.learned_world.threshold_quantile"),
    (["simulator.learned_world.users=gann"], "simulator.learned_world.users"),
]


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=["experiment=smoke", *overrides])


@pytest.mark.parametrize(("overrides", "field"), CONFIG_CASES, ids=[c[1] + ":" + c[0][0] for c in CONFIG_CASES])
def test_bad_config_values_are_refused_at_load(overrides, field):
    with pytest.raises(ValueError) as err:
        config_module.load(_compose(overrides))
    message = str(err.value)
    assert field in message and "\n" not in message, message


def test_a_broken_checkpoint_is_refused_at_load(tmp_path):
    """A checkpoint left at 0 bytes (what a kill mid-write used to leave) fails when the config is
    loaded, not after logs and a simulator were built."""
    empty = tmp_path / "ppo_250000_steps.zip"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="is not a readable SB3 checkpoint"):
        config_module.load(_compose([f"agents.ppo.resume_from={empty}"]))


def test_a_bad_value_ends_the_job_with_one_line_and_no_traceback(tmp_path):
    """The entry point prints ``error: <field> ...`` on stderr, exits 2, and has done no work."""
    proc = subprocess.run([sys.executable, "-m", "experiments.run", "experiment=smoke", "experiment.ope.n_bootstrap=0",
                           f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip() == "error: experiment.ope.n_bootstrap: must be >= 10, got 0"
    assert not (tmp_path / "logs.parquet").exists()


def test_every_problem_of_a_config_is_listed_one_line_each(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "experiments.run", "experiment=smoke", "experiment.ope.n_bootstrap=0",
                           "world.value_min=100", "world.value_max=10", "campaign.invalid_action_penalty=-5",
                           f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines), proc.stderr[-2000:]
    for field in ("experiment.ope.n_bootstrap", "world.value_min", "campaign.invalid_action_penalty"):
        assert sum(field in line for line in lines) == 1, (field, lines)


# ---------------------------------------------------------------------------------------- env misuse
def _env(n: int = 8) -> CampaignVectorEnv:
    return CampaignVectorEnv(TrueWorld(n_users=n))


ENV_CASES = [
    ("step before reset", lambda env: env.step(np.zeros(8, dtype=np.int64)), RuntimeError, "reset()"),
    ("a (2, 4) array for 8 users", lambda env: (env.reset(seed=0), env.step(np.zeros((2, 4), dtype=np.int64))),
     ValueError, "expected shape (8,)"),
    ("booleans as actions", lambda env: (env.reset(seed=0), env.step(np.ones(8, dtype=bool))), ValueError, "dtype bool"),
    ("a seed beyond int64", lambda env: env.reset(seed=2**70), ValueError, "seed"),
    ("an action out of range", lambda env: (env.reset(seed=0), env.step(np.full(8, 99))), ValueError, "actions[0]"),
]


@pytest.mark.parametrize(("case", "misuse", "error", "names"), ENV_CASES, ids=[c[0] for c in ENV_CASES])
def test_env_misuse_gets_a_clear_error(case, misuse, error, names):
    with pytest.raises(error) as err:
        misuse(_env())
    assert names in str(err.value) and "\n" not in str(err.value)


def test_single_env_refuses_a_bool_action():
    env = CampaignEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="dtype bool"):
        env.step(True)


def test_an_env_with_no_users_is_refused():
    with pytest.raises(ValueError, match="num_envs: a batched env needs at least 1 user"):
        CampaignVectorEnv(TrueWorld(n_users=0))


# -------------------------------------------------------------------------------- catalogs, configs
GOOD_CATALOG = {"category": [0, 1, 1], "value": [10.0, 20.0, 30.0], "discount": [1.0, 2.0, 3.0], "contact_cost": 0.3}
CATALOG_CASES = [
    ({**GOOD_CATALOG, "category": [0, 99, 1]}, "catalog.category: codes must be 0..99"),
    ({k: v for k, v in GOOD_CATALOG.items() if k != "value"}, "catalog: missing ['value']"),
    ({**GOOD_CATALOG, "category": ["a", "b", "c"]}, "catalog: category codes must be integers"),
    ({**GOOD_CATALOG, "value": [10.0, -1.0, 3.0]}, "catalog.value: must be finite and >= 0"),
    ({**GOOD_CATALOG, "discount": [1.0]}, "catalog.discount: expected shape (3,)"),
]


@pytest.mark.parametrize(("catalog", "message"), CATALOG_CASES, ids=[m for _, m in CATALOG_CASES])
def test_bad_catalogs_are_refused(catalog, message):
    with pytest.raises(ValueError) as err:
        Catalog.from_json(catalog)
    assert str(err.value).startswith(message), str(err.value)


def test_a_simulator_catalog_that_is_not_json_names_the_file(tmp_path):
    (tmp_path / CATALOG_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=f"{CATALOG_FILE}: .*"):
        load_simulator(tmp_path)


@pytest.mark.parametrize(("make", "field"), [
    (lambda: ResponseModelConfig(hidden_dim="sixty-four"), "response_model.hidden_dim"),
    (lambda: ResponseModelConfig(lr=float("nan")), "response_model.lr"),
    (lambda: ResponseModelConfig(max_seconds=0.0), "response_model.max_seconds"),
    (lambda: ResponseModelConfig(min_steps_per_epoch=0), "response_model.min_steps_per_epoch"),
    (lambda: TrueWorldConfig(n_offers=2.5), "world.n_offers"),
    (lambda: CampaignConfig(horizon=True), "campaign.horizon"),
], ids=["string width", "nan learning rate", "zero time cap", "zero steps an epoch", "fractional offers", "bool horizon"])
def test_config_fields_of_the_wrong_type_name_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_a_simulator_config_with_a_negative_horizon_is_refused(tmp_path):
    from recsys.simulator.response_model import DataSpec

    spec = dict(n_actions=3, cat_names=[], cardinalities=[], num_names=[], num_loc=[], num_scale=[], horizon=-1)
    with pytest.raises(ValueError, match="horizon"):
        DataSpec(**spec)  # what load_response_model does with a config.json's "data" section
