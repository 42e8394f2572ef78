"""Open Bandit Dataset (OBD) loader: the CSV format mapped into the campaign-gym logs schema.

OBD (Saito et al., ZOZOTOWN) logs which fashion item a policy showed in which of three
slots, with the exact propensity of the showing policy (``random`` or ``bts``) and whether it
was clicked. Clicks only: there are no conversions, revenue or costs.

Mapping (see ``recsys.data.schema`` for the schema):

* ``user_id`` = row number; OBD rows are independent impressions with no user id, so each row
  is its own one-step "user" and ``step`` = 0.
* ``action`` = ``item_id`` (0 .. n_items - 1). Unlike campaign-gym worlds there is no
  "no offer" action: action 0 is item 0.
* ``position`` = OBD's slot, kept as in the files: 1, 2 or 3 (obp itself re-indexes to 0..2).
* ``propensity`` = ``propensity_score`` (the probability of the item *at that position*).
* ``click`` as logged.
* ``cat_user_feature_k`` = codes of the hashed ``user_feature_k`` strings, numbered in sorted
  order of the strings present in the file (deterministic; the vocabulary is stored in the
  metadata under ``categories`` so codes can be re-mapped across files, whose vocabularies
  differ).
* ``num_affinity_j`` = ``user-item_affinity_j`` (only with ``include_affinity=True``).
* ``timestamp`` is carried along as an extra column (for time-based splits).

Metadata: ``n_actions`` = number of items (rows of ``item_context.csv``: 80 for ``all``, 34 for
``men``, 46 for ``women``), ``categorical_cardinality``, ``source`` = ``obd/<policy>/<campaign>``,
``no_offer_action`` = null (so clicks on action 0, a real item, are valid).

Data: by default the 10,000-row samples shipped in the ``obp==0.4.1`` wheel, located without
importing obp (install with ``pip install --no-deps obp==0.4.1``; obp itself is not importable
on current pandas). For the full dataset pass ``path=`` the folder that holds
``<policy>/<campaign>/<campaign>.csv`` (obp's ``data_path`` layout), or a CSV file directly.
"""

from __future__ import annotations

from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from recsys.data.schema import CAT_PREFIX, NUM_PREFIX, validate_logs, with_metadata

BEHAVIOR_POLICIES = ("random", "bts")
CAMPAIGNS = ("all", "men", "women")
N_USER_FEATURES = 4
N_ITEM_FEATURES = 4
_AFFINITY_PREFIX = "user-item_affinity_"
_INSTALL_HINT = "pip install --no-deps obp==0.4.1"


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: got {value!r}, expected one of {', '.join(choices)}")


def _obp_root() -> Path:
    """The ``obp/dataset/obd`` folder of the installed obp wheel (obp is not imported)."""
    try:
        dist = importlib_metadata.distribution("obp")
    except importlib_metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"obd: the Open Bandit Dataset sample files come with the obp wheel, which is not "
            f"installed; run `{_INSTALL_HINT}` or pass path= to a copy of the dataset"
        ) from None
    return Path(str(dist.locate_file("obp/dataset/obd")))


def obd_files(
    behavior_policy: str = "random", campaign: str = "all", path: str | Path | None = None
) -> tuple[Path, Path]:
    """(log CSV, item_context.csv) for a behaviour policy and campaign.

    ``path`` is the dataset root (holding ``<policy>/<campaign>/<campaign>.csv``) or the log
    CSV itself; ``item_context.csv`` is looked up in the CSV's folder. Defaults to the obp wheel.
    """
    _check_choice("behavior_policy", behavior_policy, BEHAVIOR_POLICIES)
    _check_choice("campaign", campaign, CAMPAIGNS)
    if path is None:
        csv = _obp_root() / behavior_policy / campaign / f"{campaign}.csv"
    else:
        path = Path(path)
        csv = path if path.suffix == ".csv" else path / behavior_policy / campaign / f"{campaign}.csv"
    if not csv.is_file():
        where = (
            f"; reinstall the data with `{_INSTALL_HINT}` or pass path=" if path is None
            else "; pass the dataset root (holding <policy>/<campaign>/<campaign>.csv) or the CSV file"
        )
        raise FileNotFoundError(f"obd: no log file at {str(csv)!r}{where}")
    items = csv.parent / "item_context.csv"
    if not items.is_file():
        raise FileNotFoundError(
            f"obd: no item_context.csv next to {str(csv)!r}; OBD ships one per <policy>/<campaign> folder"
        )
    return csv, items


def _codes(column: pa.ChunkedArray) -> tuple[pa.Array, list[str]]:
    """Integer codes of strings, numbered in sorted order of the distinct values."""
    distinct = pc.unique(column)
    categories = distinct.take(pc.array_sort_indices(distinct))
    codes = pc.index_in(column, value_set=categories)
    return pc.cast(codes, pa.int64()), categories.to_pylist()


def _read_csv(path: Path, columns: list[str], types: dict[str, pa.DataType]) -> pa.Table:
    try:
        return pcsv.read_csv(
            path, convert_options=pcsv.ConvertOptions(include_columns=columns, column_types=types)
        )
    except (pa.ArrowInvalid, KeyError) as e:
        raise ValueError(f"obd: {str(path)!r} is not in the Open Bandit Dataset CSV format ({' '.join(str(e).split())})") from None


def obd_item_context(
    behavior_policy: str = "random", campaign: str = "all", path: str | Path | None = None
) -> pa.Table:
    """The item features of a campaign, one row per ``item_id`` (= action), sorted by item.

    Columns: ``item_id``, ``num_item_feature_0`` (OBD's numeric price-like feature) and
    ``cat_item_feature_1..3`` (codes of the hashed strings, sorted-vocabulary order).
    """
    _, items = obd_files(behavior_policy, campaign, path)
    names = [f"item_feature_{k}" for k in range(N_ITEM_FEATURES)]
    types = {"item_id": pa.int64(), names[0]: pa.float64(), **{n: pa.string() for n in names[1:]}}
    raw = _read_csv(items, ["item_id", *names], types)
    raw = raw.take(pc.sort_indices(raw["item_id"]))
    out = {"item_id": raw["item_id"], NUM_PREFIX + names[0]: raw[names[0]]}
    cards, vocab = {}, {}
    for name in names[1:]:
        out[CAT_PREFIX + name], vocab[name] = _codes(raw[name])
        cards[name] = len(vocab[name])
    table = pa.table(out)
    return with_metadata(table, {"categorical_cardinality": cards, "categories": vocab})


def load_obd(
    behavior_policy: str = "random",
    campaign: str = "all",
    path: str | Path | None = None,
    include_affinity: bool = False,
) -> pa.Table:
    """Open Bandit Dataset logs in the campaign-gym logs schema (mapping in the module doc).

    ``behavior_policy``: ``random`` or ``bts``; ``campaign``: ``all``, ``men`` or ``women``;
    ``path``: dataset root or CSV file (default: the obp wheel's 10,000-row samples);
    ``include_affinity``: add the 80/34/46 ``num_affinity_j`` columns. The result is validated.
    """
    csv, _ = obd_files(behavior_policy, campaign, path)
    n_items = obd_item_context(behavior_policy, campaign, path).num_rows
    user_features = [f"user_feature_{k}" for k in range(N_USER_FEATURES)]
    affinity = [f"{_AFFINITY_PREFIX}{j}" for j in range(n_items)] if include_affinity else []
    types = {
        "item_id": pa.int64(), "position": pa.int64(), "click": pa.int8(), "propensity_score": pa.float64(),
        **{n: pa.string() for n in user_features}, **{n: pa.float64() for n in affinity},
    }
    raw = _read_csv(csv, ["timestamp", *types], types)
    n = raw.num_rows
    out = {
        "user_id": pa.array(np.arange(n, dtype=np.int64)),
        "step": pa.array(np.zeros(n, dtype=np.int64)),
        "action": raw["item_id"],
        "propensity": raw["propensity_score"],
        "click": raw["click"],
        "position": raw["position"],
    }
    cards, vocab = {}, {}
    for name in user_features:
        out[CAT_PREFIX + name], vocab[name] = _codes(raw[name])
        cards[name] = len(vocab[name])
    for j, name in enumerate(affinity):
        out[f"{NUM_PREFIX}affinity_{j}"] = raw[name]
    out["timestamp"] = raw["timestamp"]
    meta = {
        "n_actions": n_items,
        "categorical_cardinality": cards,
        "source": f"obd/{behavior_policy}/{campaign}",
        "actions": "item_id (no 'no offer' action)",
        "no_offer_action": None,
        "position": "OBD slot 1..3 as in the files",
        "categories": vocab,
    }
    table = with_metadata(pa.table(out), meta)
    validate_logs(table)
    return table
