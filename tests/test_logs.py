"""Logs schema, validator, TrueWorld log generation, user splits, atomic writes and the CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from gymnasium.vector import AutoresetMode

from agents.base import StochasticPolicy
from agents.reference import LoggingPolicy
from envs.campaign import CampaignConfig
from envs.true_world import TrueWorld, TrueWorldConfig
from envs.vector_env import CampaignVectorEnv
from experiments.collect import generate_logs
from recsys.data.io import read_logs, write_logs
from recsys.data.schema import LogSchemaError, log_metadata, validate_logs, with_metadata
from recsys.data.splits import split_users

REPO = Path(__file__).resolve().parents[1]
WORLD, CAMPAIGN = TrueWorldConfig(seed=0), CampaignConfig()
N_USERS, SEED = 300, 11


def make_env(n: int) -> CampaignVectorEnv:
    return CampaignVectorEnv(TrueWorld(WORLD, n_users=n), CAMPAIGN, AutoresetMode.DISABLED)


def logs(n_users: int = N_USERS, seed: int = SEED, batch_size: int = 4096, make_policy=LoggingPolicy) -> pa.Table:
    return generate_logs(make_env, make_policy, n_users=n_users, seed=seed, batch_size=batch_size)


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return logs()


# ------------------------------------------------------------------------------------ generation
def test_generated_logs_validate_and_follow_the_schema(table):
    s = validate_logs(table)
    assert s.n_users == N_USERS and s.n_rows == table.num_rows
    assert s.n_actions == 25 and s.source == "true_world"
    assert s.categorical_features == ("region", "device")
    assert s.numeric_features == ("age", "tenure_months", "activity")
    assert s.extra_columns == ()
    meta = log_metadata(table)
    assert meta["n_actions"] == 25 and meta["categorical_cardinality"] == {"region": 6, "device": 3}
    assert meta["no_offer_action"] == 0
    users, steps = table["user_id"].to_numpy(), table["step"].to_numpy()
    assert set(users) == set(range(SEED, SEED + N_USERS))
    # each user's steps are 0 .. length-1, rows sorted by (user, step)
    assert np.all(np.lexsort((steps, users)) == np.arange(len(users)))
    starts = np.r_[True, users[1:] != users[:-1]]
    assert np.all(steps[starts] == 0) and np.all(steps[~starts] == steps[np.flatnonzero(~starts) - 1] + 1)
    # an episode ends on churn or at the horizon, and only then
    churned = table["churned"].to_numpy().astype(bool)
    last = np.r_[users[1:] != users[:-1], True]
    assert np.all(churned[~last] == 0)
    assert np.all(churned[last] | (steps[last] == CAMPAIGN.horizon - 1))
    # conversion implies click; no offer (action 0) means no click and no cost
    click, conv = table["click"].to_numpy(), table["conversion"].to_numpy()
    assert np.all(conv <= click)
    rest = table["action"].to_numpy() == 0
    assert np.all(click[rest] == 0) and np.all(table["cost"].to_numpy()[rest] == 0)


def test_same_seed_identical_other_seed_differs_batch_size_irrelevant(table):
    assert logs().equals(table, check_metadata=True)
    assert logs(batch_size=37).equals(table)
    other = logs(seed=SEED + 1000)
    assert not other.equals(table)
    assert not np.array_equal(other["action"].to_numpy()[:50], table["action"].to_numpy()[:50])


def test_propensity_is_logging_policy_prob_of_logged_action(table):
    """Replay a few users alone (slot seed = user_id) and recompute LoggingPolicy's probs."""
    users = table["user_id"].to_numpy()
    for user in (SEED, SEED + 7, SEED + 123, SEED + N_USERS - 1):
        rows = table.filter(pc.equal(table["user_id"], user))
        env = make_env(1)
        policy = LoggingPolicy(env)
        obs, _ = env.reset(seed=int(user))
        for r in range(rows.num_rows):
            action = rows["action"][r].as_py()
            probs = policy.action_probs(obs, env.action_masks())
            assert rows["propensity"][r].as_py() == pytest.approx(probs[0, action], rel=1e-12)
            obs, _, terminated, _, info = env.step(np.array([action]))
            assert int(info["click"][0]) == rows["click"][r].as_py()
            assert int(info["churned"][0]) == rows["churned"][r].as_py()
        assert terminated[0]
    assert len(users) == table.num_rows


class _HalfRestPolicy(StochasticPolicy):
    """p(no offer) = 1/2, the rest uniform over allowed offers."""

    name = "half_rest"

    def __init__(self, env: CampaignVectorEnv) -> None:
        super().__init__(0)

    def action_probs(self, obs, masks=None):
        offers = masks[:, 1:] / masks[:, 1:].sum(axis=1, keepdims=True)
        return np.concatenate([np.full((len(obs), 1), 0.5), 0.5 * offers], axis=1)


def test_actions_are_sampled_from_the_policy_probs():
    t = logs(n_users=400, make_policy=_HalfRestPolicy)
    action, prop = t["action"].to_numpy(), t["propensity"].to_numpy()
    assert np.all(prop[action == 0] == 0.5)
    share, n = np.mean(action == 0), len(action)
    assert abs(share - 0.5) <= 3 * math.sqrt(0.25 / n), (share, n)
    assert validate_logs(t).source == "true_world"


def test_policy_putting_mass_on_masked_actions_is_rejected():
    class Uniform(StochasticPolicy):
        name = "ignores_masks"

        def __init__(self, env):
            super().__init__(0)
            self.n = env.catalog.n_actions

        def action_probs(self, obs, masks=None):
            return np.full((len(obs), self.n), 1.0 / self.n)

    def capped(n):
        return CampaignVectorEnv(TrueWorld(TrueWorldConfig(), n), CampaignConfig(frequency_cap=1), AutoresetMode.DISABLED)

    with pytest.raises(ValueError, match="masked"):  # with a cap of 1, every sent offer is masked next step
        generate_logs(capped, Uniform, n_users=50, seed=SEED)


# ------------------------------------------------------------------------------------ validation
def _set(t: pa.Table, name: str, values) -> pa.Table:
    arr = pa.array(values) if not isinstance(values, pa.Array) else values
    if name in t.column_names:
        return t.set_column(t.column_names.index(name), name, arr)
    return t.append_column(name, arr)


def _patch(t: pa.Table, name: str, rows, value, dtype=None) -> pa.Table:
    """``t`` with ``t[name][rows] = value`` (optionally cast to ``dtype`` first)."""
    x = t[name].to_numpy().astype(dtype or t[name].to_numpy().dtype, copy=True)
    x[rows] = value
    return _set(t, name, x)


@pytest.fixture(scope="module")
def small(table) -> pa.Table:
    return table.slice(0, 60).combine_chunks()


def _meta(t: pa.Table, **changes) -> pa.Table:
    return with_metadata(t, {**log_metadata(t), **changes})


def _mutate(small: pa.Table, case: str) -> tuple[pa.Table, dict]:
    t, kw = small, {}
    if case == "missing_click":
        t = t.drop_columns(["click"])
    elif case == "nan_propensity":
        t = _patch(t, "propensity", 17, np.nan)
    elif case == "zero_propensity":
        t = _patch(t, "propensity", [17, 20, 40], 0.0)
    elif case == "propensity_above_one":
        t = _patch(t, "propensity", 5, 1.5)
    elif case == "action_out_of_range_arg":
        t, kw = _patch(t, "action", 3, 30).replace_schema_metadata(None), {"n_actions": 30}
    elif case == "action_out_of_range_metadata":
        t = _patch(t, "action", 3, 25)
    elif case == "negative_action":
        t = _patch(t, "action", 3, -1)
    elif case == "string_user_id":
        t = _set(t, "user_id", pa.array([f"u{u}" for u in t["user_id"].to_pylist()]))
    elif case == "float_action":
        t = _patch(t, "action", [], 0, np.float64)
    elif case == "duplicate_user_step":
        t = _patch(t, "step", 1, t["step"][0].as_py())
    elif case == "click_two":
        t = _patch(t, "click", 9, 2)
    elif case == "negative_cost":
        t = _patch(t, "cost", 2, -0.3)
    elif case == "null_conversion":
        t = _set(t, "conversion", pa.array([None if i == 4 else c for i, c in enumerate(t["conversion"].to_pylist())], pa.int8()))
    elif case == "cat_above_cardinality":
        t = _patch(t, "cat_region", 6, 6)
    elif case == "cat_negative":
        t = _patch(t, "cat_device", 6, -2)
    elif case == "num_infinite":
        t = _patch(t, "num_age", 8, np.inf)
    elif case == "empty":
        t = t.slice(0, 0)
    elif case == "metadata_undeclared_column":
        t = t.drop_columns(["cat_region"])
    elif case == "metadata_n_actions_mismatch":
        kw = {"n_actions": 30}
    elif case == "metadata_bad_json":
        t = t.replace_schema_metadata({b"campaign_gym": b"{not json"})
    elif case.startswith("metadata_no_offer_"):
        bad = {"metadata_no_offer_string": "0", "metadata_no_offer_bool": False, "metadata_no_offer_25": 25}[case]
        t = _meta(t, no_offer_action=bad)
    # event semantics (rows of small: user 12 = rows 3..13, 13 = 14..16, 15 = 19..32, 16 = 33..48)
    elif case == "conversion_without_click":
        t = _patch(t, "conversion", [40, 20, 25], 1)  # first in file order: row 20 = user 15 step 1
    elif case == "click_on_no_offer":
        assert t["action"][22].as_py() == t["action"][8].as_py() == 0
        t = _patch(t, "click", [22, 8], 1)  # row 8 = user 12 step 5
    elif case == "conversion_on_no_offer":
        t = _patch(_patch(t, "click", 8, 1), "conversion", 8, 1)
    elif case == "click_on_other_no_offer":
        assert t["action"][12].as_py() == 5 and t["click"][12].as_py() == 1  # user 12 step 9
        t = _meta(t, no_offer_action=5)
    elif case == "row_after_churn":
        t = _patch(t, "churned", 5, 1)  # user 12 churns at step 2: rows 6..13 (steps 3..10) follow
    elif case == "steps_out_of_order":
        t = t.take([*range(4), 5, 4, *range(6, t.num_rows)])  # user 12: steps 0, 2, 1, 3, ...
    elif case == "profile_cat_changes":
        t = _patch(t, "cat_region", 16, 5)  # user 13 step 2
    elif case == "profile_num_changes":
        t = _patch(t, "num_age", [45, 30], 1.0)  # row 30 = user 15 step 11
    else:  # pragma: no cover
        raise AssertionError(case)
    return t, kw


BAD_CASES = {  # case -> words the one-line message must contain (the field first)
    "missing_click": ["click", "missing"],
    "nan_propensity": ["propensity", "NaN", "row 17"],
    "zero_propensity": ["propensity", "3 rows", "<= 0", "first at row 17", "(0, 1]"],
    "propensity_above_one": ["propensity", "> 1", "row 5"],
    "action_out_of_range_arg": ["action", "n_actions=30", "row 3"],
    "action_out_of_range_metadata": ["action", "n_actions=25", "row 3"],
    "negative_action": ["action", "negative"],
    "string_user_id": ["user_id", "integer", "string"],
    "float_action": ["action", "integer", "double"],
    "duplicate_user_step": ["step", "duplicate", "rows 0 and 1"],
    "click_two": ["click", "0 or 1", "row 9"],
    "negative_cost": ["cost", "negative", "row 2"],
    "null_conversion": ["conversion", "missing", "row 4"],
    "cat_above_cardinality": ["cat_region", "cardinality 6", "row 6"],
    "cat_negative": ["cat_device", "negative", "row 6"],
    "num_infinite": ["num_age", "non-finite", "row 8"],
    "empty": ["logs", "0 rows"],
    "metadata_undeclared_column": ["metadata.categorical_cardinality.region", "cat_region"],
    "metadata_n_actions_mismatch": ["action", "n_actions=30", "n_actions=25"],
    "metadata_bad_json": ["metadata", "JSON"],
    "metadata_no_offer_string": ["metadata.no_offer_action", "'0'", "null"],
    "metadata_no_offer_bool": ["metadata.no_offer_action", "False"],
    "metadata_no_offer_25": ["metadata.no_offer_action", "25", "[0, n_actions)"],
    "conversion_without_click": ["conversion", "3 rows have a conversion without a click", "(first: user 15 step 1)",
                                 "log conversion only on clicked rows"],
    "click_on_no_offer": ["click", "2 rows", "'no offer' action 0", "(first: user 12 step 5)", "no_offer_action"],
    "conversion_on_no_offer": ["click", "1 row has", "'no offer' action 0", "(first: user 12 step 5)"],
    "click_on_other_no_offer": ["click", "1 row has", "'no offer' action 5", "(first: user 12 step 9)"],
    "row_after_churn": ["churned", "8 rows", "after their user churned", "(first: user 12 step 3)", "last step"],
    "steps_out_of_order": ["step", "1 row has", "(first: user 12 step 1)", "sort rows by (user_id, step)"],
    "profile_cat_changes": ["cat_region", "1 row has", "(first: user 13 step 2)", "constant within a user"],
    "profile_num_changes": ["num_age", "2 rows", "(first: user 15 step 11)", "constant within a user"],
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_malformed_logs_raise_one_line_naming_the_field(small, case):
    validate_logs(small)  # the unmutated table is fine
    bad, kw = _mutate(small, case)
    with pytest.raises(LogSchemaError) as err:
        validate_logs(bad, **kw)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(BAD_CASES[case][0]), msg
    for word in BAD_CASES[case]:
        assert word in msg, (word, msg)


def test_minimal_user_logs_without_metadata_validate():
    t = pa.table({
        "user_id": pa.array([5, 5, 9], pa.uint32()),
        "step": [0, 1, 0],
        "action": [2, 0, 7],
        "propensity": [0.25, 1.0, 0.5],
        "click": [True, False, False],
        "cat_country": [0, 0, 1],
        "num_spend": [1.5, 1.5, 2.0],
        "note": ["a", "b", "c"],
    })
    s = validate_logs(t)
    assert (s.n_users, s.n_actions, s.conversion_rate) == (2, 8, None)
    assert s.click_rate == pytest.approx(1 / 3) and s.mean_episode_length == 1.5
    assert s.profile_features == ("cat_country", "num_spend") and s.extra_columns == ("note",)
    with pytest.raises(LogSchemaError, match="^action: .*n_actions=5"):
        validate_logs(t, n_actions=5)


def test_event_semantics_what_stays_valid(small):
    # OBD-style logs (no_offer_action null: action 0 is a real item) may click and convert on action 0
    clicked = _patch(_patch(small, "click", [8, 22], 1), "conversion", 8, 1)
    with pytest.raises(LogSchemaError, match=r"^click: .*'no offer' action 0 \(first: user 12 step 5\)"):
        validate_logs(clicked)  # the default (key absent) is campaign-gym's 0, as is the generated metadata
    with pytest.raises(LogSchemaError, match="^click: "):
        validate_logs(_meta(clicked).replace_schema_metadata(None))
    assert validate_logs(_meta(clicked, no_offer_action=None)).click_rate > validate_logs(small).click_rate
    # a user's rows need not be contiguous: steps increase in file order within each user
    interleaved = small.take([0, 3, 1, 4, 2, *range(5, small.num_rows)])
    assert validate_logs(interleaved).n_users == validate_logs(small).n_users
    # a user need not churn: an unchurned last row (user 16) is the horizon
    assert validate_logs(_patch(small, "churned", 48, 0)).n_rows == small.num_rows


# ---------------------------------------------------------------------------------------- splits
def test_split_users_disjoint_covering_binomial_and_stable():
    ids = np.repeat(np.arange(20_000, dtype=np.int64), 3)  # 3 rows per user
    fractions = (0.7, 0.2, 0.1)
    masks = split_users(ids, fractions, seed=4)
    stacked = np.stack([masks[k] for k in ("train", "validation", "test")])
    assert np.all(stacked.sum(axis=0) == 1)  # every row in exactly one split
    per_user = stacked.reshape(3, -1, 3)
    assert np.all(per_user.min(axis=2) == per_user.max(axis=2))  # a user's rows stay together
    n = 20_000
    for k, f in zip(("train", "validation", "test"), fractions, strict=True):
        share = masks[k][::3].mean()
        assert abs(share - f) <= 3 * math.sqrt(f * (1 - f) / n), (k, share)
    # removing users moves nobody
    keep = np.random.default_rng(0).random(len(ids)) < 0.3
    sub = split_users(ids[keep], fractions, seed=4)
    for k in masks:
        assert np.array_equal(sub[k], masks[k][keep])
    # another seed gives another split
    assert not np.array_equal(split_users(ids, fractions, seed=5)["train"], masks["train"])


@pytest.mark.parametrize("fractions", [(0.8, 0.2, 0.0), (0.5, 0.3, 0.3), (0.9, 0.1), (1.2, -0.1, -0.1)])
def test_split_users_rejects_bad_fractions(fractions):
    with pytest.raises(ValueError, match="fractions"):
        split_users(np.arange(10), fractions)


# -------------------------------------------------------------------------------------------- io
def test_write_read_roundtrip_keeps_metadata(tmp_path, table):
    path = write_logs(table, tmp_path / "logs.parquet")
    back = read_logs(path)
    assert back.equals(table) and log_metadata(back) == log_metadata(table)
    assert os.listdir(tmp_path) == ["logs.parquet"]


def test_write_logs_is_atomic(tmp_path, table, monkeypatch):
    path = tmp_path / "logs.parquet"
    write_logs(table, path)
    before = path.read_bytes()

    def crash_mid_write(tbl, where, **kw):
        where.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        write_logs(table.slice(0, 10), path)
    monkeypatch.undo()
    assert path.read_bytes() == before  # the old file is intact
    assert os.listdir(tmp_path) == ["logs.parquet"]  # and no temp file is left
    write_logs(table.slice(0, 10), path)  # a complete write replaces it
    assert read_logs(path).num_rows == 10 and os.listdir(tmp_path) == ["logs.parquet"]


def test_write_logs_refuses_invalid_table(tmp_path, small):
    bad, _ = _mutate(small, "zero_propensity")
    with pytest.raises(LogSchemaError, match="^propensity"):
        write_logs(bad, tmp_path / "bad.parquet")
    assert os.listdir(tmp_path) == []


def test_read_logs_missing_or_not_parquet(tmp_path):
    with pytest.raises(LogSchemaError, match="^path: no such file"):
        read_logs(tmp_path / "nope.parquet")
    text = tmp_path / "logs.csv"
    text.write_text("user_id,step\n1,0\n")
    with pytest.raises(LogSchemaError, match="^path: .*not a readable parquet file") as err:
        read_logs(text)
    assert "\n" not in str(err.value)


def test_with_metadata_keeps_other_keys(small):
    t = small.replace_schema_metadata({b"other": b"x"})
    t = with_metadata(t, {"n_actions": 25})
    assert t.schema.metadata[b"other"] == b"x"
    assert json.loads(t.schema.metadata[b"campaign_gym"]) == {"n_actions": 25}


# ------------------------------------------------------------------------------------------- cli
def _cli(*args: str, module: str = "recsys.logs") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=60
    )


def test_cli_generate_validate_and_exit_codes(tmp_path, small):
    good = tmp_path / "good.parquet"
    gen = _cli(str(good), "--users", "40", "--seed", "3", "--no-progress", module="experiments.collect")
    assert gen.returncode == 0, gen.stderr
    assert read_logs(good).equals(logs(n_users=40, seed=3))

    ok = _cli("validate", str(good), "--n-actions", "25")
    assert ok.returncode == 0, ok.stderr
    assert "users" in ok.stdout and "40" in ok.stdout and "click rate" in ok.stdout

    bad_table, _ = _mutate(small, "zero_propensity")
    bad = tmp_path / "bad.parquet"
    pq.write_table(bad_table, bad)
    res = _cli("validate", str(bad))
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "propensity" in lines[0], res.stderr
    assert res.stdout == ""

    assert _cli("validate", str(tmp_path / "missing.parquet")).returncode == 1
    assert _cli("validate").returncode == 2  # usage error
