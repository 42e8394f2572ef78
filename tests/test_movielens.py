"""MovieLens-100k loader on the files shipped in the recbole==1.2.1 wheel (recbole is never imported)."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from recsys.data import movielens
from recsys.data.movielens import load_movielens, movielens_files
from recsys.data.schema import log_metadata, validate_logs

if importlib.util.find_spec("recbole") is None:  # pragma: no cover
    pytest.skip("recbole wheel (MovieLens-100k files) not installed: pip install --no-deps recbole==1.2.1",
                allow_module_level=True)

N_USERS, N_ITEMS, MAX_STEPS = 943, 1682, 20


@pytest.fixture(scope="module")
def loaded():
    return load_movielens()


@pytest.fixture(scope="module")
def raw_by_user() -> dict[int, list[tuple[int, int, float]]]:
    """Straight from ml-100k.inter: user -> [(timestamp, item_id, rating)] in time order, ties by item."""
    out: dict[int, list[tuple[int, int, float]]] = defaultdict(list)
    with open(movielens_files() / "ml-100k.inter", newline="") as f:
        rows = csv.reader(f, delimiter="\t")
        next(rows)
        for user, item, rating, ts in rows:
            out[int(user)].append((int(float(ts)), int(item), float(rating)))
    return {u: sorted(v) for u, v in out.items()}


def test_the_table_validates_with_every_user(loaded):
    table, catalog = loaded
    s = validate_logs(table)
    meta = log_metadata(table)
    assert s.n_users == N_USERS and table.num_rows == N_USERS * MAX_STEPS  # every user has >= 20 ratings
    assert s.n_actions == meta["n_actions"] == catalog.n_actions == N_ITEMS + 1
    assert meta["source"] == "movielens_100k" and meta["no_offer_action"] == 0
    assert meta["propensity"].startswith("estimated (")
    assert meta["categorical_cardinality"] == {"gender": 2, "occupation": 21}
    assert s.categorical_features == ("gender", "occupation") and s.numeric_features == ("age",)
    assert s.conversion_rate is None and "churned" not in table.column_names


def test_click_rate_is_the_share_of_ratings_of_4_or_more(loaded, raw_by_user):
    table, _ = loaded
    kept = [r for rows in raw_by_user.values() for _, _, r in rows[:MAX_STEPS]]
    assert validate_logs(table).click_rate == pytest.approx(np.mean(np.asarray(kept) >= 4), abs=1e-12)
    assert np.array_equal(table["click"].to_numpy(), (table["rating"].to_numpy() >= 4).astype(np.int8))


def test_steps_are_the_time_rank_within_a_user(loaded, raw_by_user):
    table, _ = loaded
    user, step = table["user_id"].to_numpy(), table["step"].to_numpy()
    for u in np.unique(user):
        assert np.array_equal(step[user == u], np.arange(MAX_STEPS))
    u = 1  # by hand: user 1's first 20 ratings in time order (ties by item id)
    mine = user == u
    expected = raw_by_user[u][:MAX_STEPS]
    assert table["timestamp"].to_numpy()[mine].tolist() == [ts for ts, _, _ in expected]
    assert table["action"].to_numpy()[mine].tolist() == [item for _, item, _ in expected]  # ids 1..1682 = index + 1
    assert table["rating"].to_numpy()[mine].tolist() == [int(r) for _, _, r in expected]


def test_profiles_come_from_the_user_file(loaded):
    table, _ = loaded
    meta = log_metadata(table)
    with open(movielens_files() / "ml-100k.user", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))[1:]
    raw = {int(r[0]): (float(r[1]), r[2], r[3]) for r in rows}
    first = np.flatnonzero(table["step"].to_numpy() == 0)
    for i in first[:50]:
        age, gender, occupation = raw[int(table["user_id"][i].as_py())]
        assert table["num_age"][i].as_py() == age
        assert meta["categories"]["gender"][table["cat_gender"][i].as_py()] == gender
        assert meta["categories"]["occupation"][table["cat_occupation"][i].as_py()] == occupation


def test_catalog_categories_are_contiguous_first_genres(loaded):
    table, catalog = loaded
    names = log_metadata(table)["item_categories"]
    assert catalog.n_offers == N_ITEMS and catalog.n_categories == len(names) == 6 and names[-1] == "other"
    assert set(np.unique(catalog.category)) == set(range(catalog.n_categories))
    assert np.all(catalog.value == 1.0) and np.all(catalog.discount == 0) and catalog.contact_cost == 0
    action = table["action"].to_numpy()
    assert action.min() >= 1 and action.max() < catalog.n_actions  # action 0 (no offer) is never logged
    all_genres, every = load_movielens(n_categories=None)
    assert every.n_categories == 19 and set(np.unique(every.category)) == set(range(19))
    names = log_metadata(all_genres)["item_categories"]
    assert names[every.category[0]] == "Animation"  # item 1, Toy Story: "Animation Children's Comedy"
    assert names[every.category[1]] == "Action"  # item 2, GoldenEye: "Action Adventure Thriller"


def test_propensities_are_estimated_probabilities(loaded):
    table, _ = loaded
    p = table["propensity"].to_numpy()
    assert np.all((p > 0) & (p <= 1))
    step, action = table["step"].to_numpy(), table["action"].to_numpy()
    at0 = step == 0  # per step, the model's probabilities over the distinct logged actions sum to <= 1
    _, first = np.unique(action[at0], return_index=True)
    assert p[at0][first].sum() <= 1 + 1e-9


def test_max_steps_and_min_ratings():
    table, _ = load_movielens(max_steps=None)
    assert table.num_rows == 100_000 and validate_logs(table).n_users == N_USERS
    table, _ = load_movielens(min_ratings=100, max_steps=5)
    s = validate_logs(table)
    assert 0 < s.n_users < N_USERS and s.mean_episode_length == 5
    with pytest.raises(ValueError, match="max_steps"):
        load_movielens(max_steps=0)


def test_missing_files_are_one_line_errors(tmp_path: Path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="ml-100k.inter") as e:
        movielens_files(tmp_path)
    assert "\n" not in str(e.value)
    monkeypatch.setattr(movielens.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps recbole==1\.2\.1") as e:
        movielens_files()
    assert "\n" not in str(e.value)


def test_recbole_is_never_imported():
    code = ("import sys; from recsys.data.movielens import load_movielens; load_movielens(max_steps=2); "
            "assert 'recbole' not in sys.modules, 'recbole was imported'")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
