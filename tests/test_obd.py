"""Open Bandit Dataset loader on the samples shipped in the obp==0.4.1 wheel (obp is never imported)."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pytest

from recsys.data import obd
from recsys.data.obd import load_obd, obd_files, obd_item_context
from recsys.data.schema import LogSchemaError, log_metadata, validate_logs, with_metadata

try:
    importlib_metadata.distribution("obp")
except importlib_metadata.PackageNotFoundError:  # pragma: no cover
    pytest.skip("obp wheel (OBD sample files) not installed: pip install --no-deps obp==0.4.1", allow_module_level=True)

N_ROWS = 10_000
RANDOM_ALL_CLICK_RATE = 0.0038  # measured on the obp 0.4.1 sample: 38 clicks in 10,000 rows


@pytest.fixture(scope="module")
def random_all():
    return load_obd("random", "all")


def test_random_all_maps_into_the_schema(random_all):
    t = random_all
    s = validate_logs(t)
    assert t.num_rows == N_ROWS and s.n_users == N_ROWS and s.mean_episode_length == 1.0
    assert s.n_actions == 80 and log_metadata(t)["n_actions"] == 80
    assert log_metadata(t)["source"] == "obd/random/all"
    assert np.array_equal(t["user_id"].to_numpy(), np.arange(N_ROWS)) and np.all(t["step"].to_numpy() == 0)
    prop = t["propensity"].to_numpy()
    assert np.all((prop > 0) & (prop <= 1))
    assert np.allclose(prop, 1 / 80)  # the random policy's propensity of each item
    assert set(np.unique(t["position"].to_numpy())) == {1, 2, 3}  # OBD slots kept as 1..3
    assert set(np.unique(t["action"].to_numpy())) == set(range(80))
    assert s.categorical_features == tuple(f"user_feature_{k}" for k in range(4))
    assert s.numeric_features == () and s.conversion_rate is None
    assert "timestamp" in s.extra_columns


def test_action_0_is_a_real_item_that_may_be_clicked(random_all):
    """OBD has no 'no offer' action (metadata no_offer_action = null): a click on item 0 is valid;
    under campaign-gym's default (no_offer_action absent = 0) the same logs are rejected."""
    meta = log_metadata(random_all)
    assert "no_offer_action" in meta and meta["no_offer_action"] is None
    click = random_all["click"].to_numpy().copy()
    click[np.flatnonzero(random_all["action"].to_numpy() == 0)[:3]] = 1
    t = random_all.set_column(random_all.column_names.index("click"), "click", pa.array(click))
    assert validate_logs(t).click_rate > validate_logs(random_all).click_rate
    default = with_metadata(t, {k: v for k, v in meta.items() if k != "no_offer_action"})
    with pytest.raises(LogSchemaError, match="^click: .*'no offer' action 0 .*no_offer_action to null"):
        validate_logs(default)


def test_random_all_click_rate(random_all):
    rate = float(np.mean(random_all["click"].to_numpy()))
    sd = math.sqrt(RANDOM_ALL_CLICK_RATE * (1 - RANDOM_ALL_CLICK_RATE) / N_ROWS)
    assert abs(rate - RANDOM_ALL_CLICK_RATE) <= 3 * sd, rate
    assert 0.002 < rate < 0.006  # OBD's known order of magnitude (~0.35-0.5% CTR)


def test_user_feature_codes_follow_the_sorted_vocabulary(random_all):
    csv, _ = obd_files("random", "all")
    raw = pcsv.read_csv(csv, convert_options=pcsv.ConvertOptions(include_columns=["item_id", "user_feature_2"]))
    vocab = log_metadata(random_all)["categories"]["user_feature_2"]
    assert vocab == sorted(vocab) and len(vocab) == log_metadata(random_all)["categorical_cardinality"]["user_feature_2"]
    codes = random_all["cat_user_feature_2"].to_numpy()
    assert [vocab[c] for c in codes] == raw["user_feature_2"].to_pylist()
    assert np.array_equal(random_all["action"].to_numpy(), raw["item_id"].to_numpy())


@pytest.mark.parametrize(("policy", "campaign", "n_items"), [("bts", "all", 80), ("random", "men", 34), ("bts", "women", 46)])
def test_other_policies_and_campaigns(policy, campaign, n_items):
    t = load_obd(policy, campaign)
    s = validate_logs(t)
    assert t.num_rows == N_ROWS and s.n_actions == n_items
    assert obd_item_context(policy, campaign).num_rows == n_items
    prop = t["propensity"].to_numpy()
    assert np.all((prop > 0) & (prop <= 1))
    if policy == "bts":
        assert prop.std() > 0  # Bernoulli Thompson sampling: propensities vary per impression
    else:
        assert np.allclose(prop, 1 / n_items)  # uniform over the campaign's items


def test_affinity_columns_are_optional(random_all):
    t = load_obd(include_affinity=True)
    s = validate_logs(t)
    assert s.numeric_features == tuple(f"affinity_{j}" for j in range(80))
    assert t.select(random_all.column_names).equals(random_all)


def test_item_context():
    items = obd_item_context()
    assert items.num_rows == 80 and np.array_equal(items["item_id"].to_numpy(), np.arange(80))
    assert items.column_names == ["item_id", "num_item_feature_0", *(f"cat_item_feature_{k}" for k in (1, 2, 3))]
    cards = log_metadata(items)["categorical_cardinality"]
    for k in (1, 2, 3):
        codes = items[f"cat_item_feature_{k}"].to_numpy()
        assert codes.min() == 0 and codes.max() == cards[f"item_feature_{k}"] - 1


def test_explicit_path_root_or_csv(tmp_path, random_all):
    csv, _ = obd_files("random", "all")
    shutil.copytree(csv.parent, tmp_path / "random" / "all")
    assert load_obd("random", "all", path=tmp_path).equals(random_all, check_metadata=True)
    assert load_obd(path=tmp_path / "random" / "all" / "all.csv").equals(random_all)
    with pytest.raises(FileNotFoundError, match="obd: no log file") as err:
        load_obd("bts", "all", path=tmp_path)
    assert "\n" not in str(err.value)


def test_missing_obp_wheel_gives_install_hint(monkeypatch):
    def not_installed(name):
        raise importlib_metadata.PackageNotFoundError(name)

    monkeypatch.setattr(obd.importlib_metadata, "distribution", not_installed)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps obp==0\.4\.1.*path=") as err:
        load_obd()
    assert "\n" not in str(err.value)


def test_bad_choices_and_obp_never_imported():
    with pytest.raises(ValueError, match="behavior_policy"):
        load_obd("epsilon_greedy")
    with pytest.raises(ValueError, match="campaign"):
        load_obd("random", "kids")
    # obp is a test-only reference (tests/test_ope_reference.py imports it), so check the project's
    # own imports in a fresh interpreter: loading the OBD and every entry point never imports obp
    probe = ("import sys; from recsys.data.obd import load_obd; import experiments.run, experiments.obd; "
             "load_obd('random', 'all'); assert 'obp' not in sys.modules, 'obp imported'")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0, proc.stderr[-1000:]
