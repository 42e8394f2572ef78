"""MovieLens-100k loader: explicit ratings mapped into the campaign-gym logs schema.

MovieLens-100k (GroupLens; 100,000 ratings 1..5 of 1,682 movies by 943 users, each user with at
least 20 ratings) is a rating log, not a campaign log. It is read as one: every rating is an
*exposure* of the user to an item, and the rated items in time order are the user's sequence.

Mapping (see ``recsys.data.schema`` for the schema):

* ``user_id`` = MovieLens user id (1..943). Rows are sorted by ``(user_id, step)``.
* ``step`` = rank of the rating's timestamp within the user, ties broken by item id (0, 1, ...).
  Only the first ``max_steps`` ratings of each user are kept (default 20 = the default campaign
  horizon: MovieLens users rate up to ~700 items, the simulator's sequences are campaign-sized);
  ``max_steps=None`` keeps them all. Users with fewer than ``min_ratings`` ratings are dropped
  (default 20: MovieLens-100k guarantees 20 per user, so all 943 are kept, each with 20 rows).
* ``action`` = item index + 1, the item index being the position of the movie id in the sorted
  ids of ``ml-100k.item`` (movie ids 1..1682 give index = id - 1). Action 0 (no offer) is never
  logged: every row is something the user was exposed to. ``n_actions`` = 1,683.
* ``click`` = ``rating >= 4``: the user *liked* the item (the usual implicit-feedback threshold).
  There is no conversion, revenue, cost or churn in MovieLens, so those columns are absent.
* ``cat_gender`` (F = 0, M = 1), ``cat_occupation`` (21 codes, sorted occupation names),
  ``num_age`` (years); the vocabularies are in the metadata under ``categories``.
* ``rating`` and ``timestamp`` are carried along as extra (unvalidated) columns.

Propensities: MovieLens logs none (the "logging policy" is the user's own choice of what to
watch and rate). They are *estimated* with a per-step popularity behaviour model fitted on the
kept rows: ``p(a | step) = (n(a, step) + k p(a)) / (n(step) + k)``, with ``n`` counts of the
logged actions, ``p(a)`` the item's share of all kept rows and ``k`` = ``prior_strength``
pseudo-counts (the item's per-step share shrunk towards its overall popularity), clipped to
(0, 1]. The metadata's ``propensity`` key says ``estimated (...)`` so reports can say that
importance-weighted estimates on these logs rest on a fitted, not a known, logging policy.

Catalog (``envs.world.Catalog``): one offer per movie; ``category`` = the movie's first listed
genre (``ml-100k.item``'s ``class``, in MovieLens' fixed genre order), the ``n_categories - 1``
most common first genres (by number of movies, ties by name) keep a code 0.. in that order and
the rest share the last code ("other"); ``n_categories=None`` keeps all 19 first genres. Codes
are contiguous 0..C-1, names in the metadata under ``item_categories``. MovieLens has no money:
``value`` = 1.0 per movie, ``discount`` = 0, ``contact_cost`` = 0. As the logs have no
conversions, a simulator fitted on them predicts none, so the profit (and conversion) reward is
0 here: run campaigns on MovieLens with ``campaign.reward=click`` (reward = liked items).

Data: the files shipped in the ``recbole==1.2.1`` wheel (``recbole/dataset_example/ml-100k``),
located without importing recbole (install with ``pip install --no-deps recbole==1.2.1``), or
``path=`` a folder holding ``ml-100k.inter``, ``ml-100k.user`` and ``ml-100k.item`` in that
(tab-separated, RecBole atomic-file) format. Nothing is downloaded. MovieLens terms allow
research use and forbid redistribution: never commit the files or tables derived from them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from envs.world import Catalog
from recsys.data.behaviour import step_popularity
from recsys.data.schema import CAT_PREFIX, NUM_PREFIX, validate_logs, with_metadata

SOURCE = "movielens_100k"
FILES = ("ml-100k.inter", "ml-100k.user", "ml-100k.item")
LIKED_RATING = 4  # click = rating >= LIKED_RATING
_INSTALL_HINT = "pip install --no-deps recbole==1.2.1"
_OTHER = "other"


def movielens_files(path: str | Path | None = None) -> Path:
    """The folder holding ``ml-100k.{inter,user,item}``: ``path``, else the recbole wheel's copy.

    recbole is located with ``importlib.util.find_spec`` (which does not import a top-level
    package). Raises a one-line ``FileNotFoundError`` naming the fix when the files are missing.
    """
    if path is None:
        spec = importlib.util.find_spec("recbole")
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if not locations:
            raise FileNotFoundError(
                f"movielens: the MovieLens-100k files come with the recbole wheel, which is not installed; "
                f"run `{_INSTALL_HINT}` or pass path= to a folder holding {', '.join(FILES)}"
            )
        folder = Path(locations[0]) / "dataset_example" / "ml-100k"
        where = f"reinstall them with `{_INSTALL_HINT}` or pass path="
    else:
        folder = Path(path)
        where = f"pass a folder holding {', '.join(FILES)}"
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"movielens: no {', '.join(missing)} in {str(folder)!r}; {where}")
    return folder


def _read(path: Path, names: list[str], types: dict[str, pa.DataType]) -> pa.Table:
    """A RecBole atomic file (tab-separated, one ``name:type`` header line) with our own column names."""
    try:
        return pcsv.read_csv(
            path,
            read_options=pcsv.ReadOptions(skip_rows=1, column_names=names),
            parse_options=pcsv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=pcsv.ConvertOptions(column_types=types, include_columns=list(types)),
        )
    except (pa.ArrowInvalid, KeyError) as e:
        raise ValueError(f"movielens: {str(path)!r} is not a MovieLens-100k atomic file ({' '.join(str(e).split())})") from None


def _codes(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Integer codes of strings, numbered in sorted order of the distinct values."""
    vocab, codes = np.unique(values.astype(str), return_inverse=True)
    return codes.astype(np.int64), vocab.tolist()


def item_categories(genres: list[str], n_categories: int | None) -> tuple[np.ndarray, list[str]]:
    """Category code per item from its first listed genre (module docstring), and the names.

    The ``n_categories - 1`` most common first genres (by count, ties by name) get codes 0..,
    the rest share the last code (``other``); with ``n_categories`` >= the number of distinct
    genres, or None, every genre keeps its own code. Codes are contiguous 0..C-1.
    """
    names, counts = np.unique(np.asarray(genres, dtype=str), return_counts=True)
    ranked = [str(names[i]) for i in sorted(range(len(names)), key=lambda i: (-counts[i], names[i]))]
    if n_categories is not None:
        if isinstance(n_categories, bool) or not isinstance(n_categories, int) or n_categories < 2:
            raise ValueError(f"n_categories: expected an integer >= 2 or None, got {n_categories!r}")
        if n_categories < len(ranked):
            ranked = [*ranked[: n_categories - 1], _OTHER]
    code = {g: i for i, g in enumerate(ranked)}
    other = code.get(_OTHER, len(ranked) - 1)
    return np.array([code.get(g, other) for g in genres], dtype=np.int64), ranked


def estimate_propensities(step: np.ndarray, action: np.ndarray, n_actions: int,
                          prior_strength: float = 100.0) -> np.ndarray:
    """p(logged action | step) under the per-step popularity model (``recsys.data.behaviour``)."""
    table = step_popularity(step, action, n_actions, prior_strength)
    return np.clip(table[step, action], np.finfo(np.float64).tiny, 1.0)


def _first_genre(genre_list: str | None) -> str:
    parts = (genre_list or "").split()
    return parts[0] if parts else "unknown"


def load_movielens(
    n_categories: int | None = 6,
    min_ratings: int = 20,
    max_steps: int | None = 20,
    path: str | Path | None = None,
    prior_strength: float = 100.0,
) -> tuple[pa.Table, Catalog]:
    """MovieLens-100k logs in the campaign-gym schema and their catalog (mapping in the module doc).

    ``n_categories``: item categories (most common first genres + ``other``; None = all 19);
    ``min_ratings``: drop users with fewer ratings (counted before truncation); ``max_steps``:
    keep each user's first ratings in time order (None = all); ``path``: folder with the
    ``ml-100k.*`` files (default: the recbole wheel's); ``prior_strength``: pseudo-counts of the
    propensity model. The table is validated; its ``n_actions`` matches ``catalog.n_actions``.
    """
    if isinstance(min_ratings, bool) or not isinstance(min_ratings, int) or min_ratings < 1:
        raise ValueError(f"min_ratings: expected a positive integer, got {min_ratings!r}")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
        raise ValueError(f"max_steps: expected a positive integer or None, got {max_steps!r}")
    folder = movielens_files(path)
    inter = _read(folder / FILES[0], ["user_id", "item_id", "rating", "timestamp"],
                  {"user_id": pa.int64(), "item_id": pa.int64(), "rating": pa.float64(), "timestamp": pa.int64()})
    users = _read(folder / FILES[1], ["user_id", "age", "gender", "occupation", "zip_code"],
                  {"user_id": pa.int64(), "age": pa.float64(), "gender": pa.string(), "occupation": pa.string()})
    items = _read(folder / FILES[2], ["item_id", "title", "year", "genres"],
                  {"item_id": pa.int64(), "genres": pa.string()})

    item_ids = items["item_id"].to_numpy()
    order = np.argsort(item_ids, kind="stable")
    item_ids = item_ids[order]
    if len(np.unique(item_ids)) != len(item_ids):
        raise ValueError(f"movielens: {FILES[2]} lists an item id more than once")
    genres = [_first_genre(g) for g in np.asarray(items["genres"].to_pylist(), dtype=object)[order]]
    category, category_names = item_categories(genres, n_categories)

    user, item = inter["user_id"].to_numpy(), inter["item_id"].to_numpy()
    rating, ts = inter["rating"].to_numpy(), inter["timestamp"].to_numpy()
    index = np.searchsorted(item_ids, item)
    unknown = (index >= len(item_ids)) | (item_ids[np.minimum(index, len(item_ids) - 1)] != item)
    if unknown.any():
        raise ValueError(f"movielens: {int(unknown.sum())} ratings name an item missing from {FILES[2]} "
                         f"(first: item {int(item[unknown][0])})")

    rows = np.lexsort((item, ts, user))  # by user, then time, ties by item id
    user, index, rating, ts = user[rows], index[rows], rating[rows], ts[rows]
    starts = np.r_[True, user[1:] != user[:-1]]
    first = np.flatnonzero(starts)
    step = np.arange(len(user)) - first[np.cumsum(starts) - 1]
    n_rated = np.diff(np.r_[first, len(user)])
    keep = np.repeat(n_rated >= min_ratings, n_rated)
    if max_steps is not None:
        keep &= step < max_steps
    user, index, rating, ts, step = user[keep], index[keep], rating[keep], ts[keep], step[keep]
    if not len(user):
        raise ValueError(f"movielens: no user has min_ratings={min_ratings} ratings; lower min_ratings")

    profile_ids = users["user_id"].to_numpy()
    sorter = np.argsort(profile_ids, kind="stable")
    at = sorter[np.minimum(np.searchsorted(profile_ids[sorter], user), len(profile_ids) - 1)]
    if np.any(profile_ids[at] != user):
        raise ValueError(f"movielens: a rating's user is missing from {FILES[1]} "
                         f"(first: user {int(user[profile_ids[at] != user][0])})")
    gender, gender_vocab = _codes(np.asarray(users["gender"].to_pylist(), dtype=object))
    occupation, occupation_vocab = _codes(np.asarray(users["occupation"].to_pylist(), dtype=object))
    age = users["age"].to_numpy()

    n_actions = len(item_ids) + 1
    action = index + 1
    out = {
        "user_id": pa.array(user, pa.int64()),
        "step": pa.array(step, pa.int64()),
        "action": pa.array(action, pa.int64()),
        "propensity": pa.array(estimate_propensities(step, action, n_actions, prior_strength)),
        "click": pa.array((rating >= LIKED_RATING).astype(np.int8)),
        CAT_PREFIX + "gender": pa.array(gender[at]),
        CAT_PREFIX + "occupation": pa.array(occupation[at]),
        NUM_PREFIX + "age": pa.array(age[at].astype(np.float64)),
        "rating": pa.array(rating.astype(np.int64)),
        "timestamp": pa.array(ts),
    }
    meta = {
        "n_actions": n_actions,
        "no_offer_action": 0,
        "categorical_cardinality": {"gender": len(gender_vocab), "occupation": len(occupation_vocab)},
        "categories": {"gender": gender_vocab, "occupation": occupation_vocab},
        "source": SOURCE,
        "actions": "item index + 1 (item index = position in the sorted movie ids); 0 = no offer, never logged",
        "click": f"rating >= {LIKED_RATING} (liked)",
        "propensity": (f"estimated (per-step item popularity: p(a | step) = (n(a, step) + {prior_strength:g} p(a)) "
                       f"/ (n(step) + {prior_strength:g}), p(a) = the item's share of all rows)"),
        "item_categories": category_names,
        "max_steps": max_steps,
        "min_ratings": min_ratings,
    }
    table = with_metadata(pa.table(out), meta)
    validate_logs(table)
    catalog = Catalog(category=category, value=np.ones(len(item_ids)), discount=np.zeros(len(item_ids)),
                      contact_cost=0.0)
    return table, catalog
