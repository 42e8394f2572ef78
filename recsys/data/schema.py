"""The logs schema and its validator.

The schema is the contract a user with their own data must produce (one parquet file; TrueWorld
logs and real logs such as the Open Bandit Dataset, see ``recsys.data.obd``, use the same one). One
row is one decision the logging policy took for one user.

Required columns

=============  ===============  ===================================================================
column         type             meaning
=============  ===============  ===================================================================
``user_id``    integer          who the decision was for
``step``       integer >= 0     position in the user's sequence (or a timestamp rank); unique per
                                user: no two rows share ``(user_id, step)``
``action``     integer          what was logged, in ``[0, n_actions)``; in campaign-gym worlds 0 is
                                "no offer" and ``a >= 1`` is catalog offer ``a - 1`` (see
                                ``no_offer_action`` below)
``propensity`` float in (0, 1]  probability with which the logging policy chose the logged action
``click``      0/1 int or bool  whether the user clicked
=============  ===============  ===================================================================

Optional columns (validated when present): ``conversion`` (0/1), ``revenue`` (float >= 0),
``cost`` (float >= 0), ``churned`` (0/1), ``position`` (integer, a slot on the page).

Declared profile features: any number of ``cat_<name>`` columns (non-negative integer codes) and
``num_<name>`` columns (finite floats). They describe the user at decision time.

No known column may hold nulls (or NaN). Other columns (e.g. a raw ``timestamp``) are allowed,
carried along and not validated; ``LogSummary.extra_columns`` lists them so a typo such as
``convertion`` is visible.

Parquet key-value metadata (optional): key ``campaign_gym`` holding a JSON object such as
``{"n_actions": 25, "categorical_cardinality": {"region": 6}, "no_offer_action": 0, "source": "true_world"}``.
When present, ``n_actions`` bounds ``action`` and each declared cardinality bounds its
``cat_<name>`` column (which must exist). ``no_offer_action`` is the integer action that means
"nothing was sent", or JSON null for logs without one (the Open Bandit Dataset: action 0 is item
0); absent, it defaults to 0 (campaign-gym's convention). Other keys are informational.

Event semantics (``recsys.data.semantics``): a conversion needs a click; the no-offer action gets
no click or conversion; within a user, ``step`` strictly increases in file order (sort rows by
``(user_id, step)``); a ``churned`` = 1 row is the user's last; every ``cat_*`` / ``num_*``
column is constant within a user. Errors name the first offending user and step.

Entry points: ``validate_logs`` (one-line ``LogSchemaError`` on the first problem) here;
``recsys.data.io.read_logs``/``write_logs`` (atomic); ``recsys.data.splits.split_users``;
``experiments.collect.generate_logs`` (a stochastic policy in a ``CampaignVectorEnv``;
propensities are exact); ``python -m recsys.logs validate PATH``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys.data.semantics import first_violation

METADATA_KEY = b"campaign_gym"
REQUIRED = ("user_id", "step", "action", "propensity", "click")
OPTIONAL = ("conversion", "revenue", "cost", "churned", "position")
CAT_PREFIX, NUM_PREFIX = "cat_", "num_"


class LogSchemaError(ValueError):
    """Logs that break the schema. The message is one line: the field, the problem, the fix."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class LogSummary:
    """What ``validate_logs`` learned about a valid table."""

    n_rows: int
    n_users: int
    n_actions: int  # from the argument, else the metadata, else max(action) + 1
    click_rate: float  # clicks per row
    conversion_rate: float | None  # conversions per row; None without a conversion column
    categorical_features: tuple[str, ...]  # names without the cat_ prefix
    numeric_features: tuple[str, ...]  # names without the num_ prefix
    mean_episode_length: float  # rows per user
    extra_columns: tuple[str, ...] = ()
    source: str | None = None

    @property
    def profile_features(self) -> tuple[str, ...]:
        return tuple(CAT_PREFIX + n for n in self.categorical_features) + tuple(
            NUM_PREFIX + n for n in self.numeric_features
        )

    def format(self) -> str:
        """A short human-readable summary (what the CLI prints)."""
        conv = "n/a" if self.conversion_rate is None else f"{self.conversion_rate:.4f}"
        lines = [
            f"rows              {self.n_rows:,}",
            f"users             {self.n_users:,}",
            f"actions           {self.n_actions}",
            f"click rate        {self.click_rate:.4f}",
            f"conversion rate   {conv}",
            f"mean episode len  {self.mean_episode_length:.2f}",
            f"profile features  {', '.join(self.profile_features) or 'none'}",
        ]
        if self.extra_columns:
            lines.append(f"extra columns     {', '.join(self.extra_columns)} (not validated)")
        if self.source:
            lines.append(f"source            {self.source}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------- metadata
def log_metadata(table_or_schema: pa.Table | pa.Schema) -> dict[str, Any]:
    """The ``campaign_gym`` metadata of a table as a dict ({} when absent)."""
    schema = table_or_schema.schema if isinstance(table_or_schema, pa.Table) else table_or_schema
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        return {}
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise LogSchemaError(
            f"metadata: key 'campaign_gym' is not valid JSON ({e}); store a JSON object or drop the key"
        ) from None
    if not isinstance(meta, dict):
        raise LogSchemaError(
            f"metadata: key 'campaign_gym' holds a {type(meta).__name__}, expected a JSON object "
            'like {"n_actions": 25}'
        )
    return meta


def with_metadata(table: pa.Table, meta: dict[str, Any]) -> pa.Table:
    """``table`` with its ``campaign_gym`` metadata replaced by ``meta`` (other keys kept)."""
    existing = dict(table.schema.metadata or {})
    existing[METADATA_KEY] = json.dumps(meta, sort_keys=True).encode()
    return table.replace_schema_metadata(existing)


def _check_metadata(meta: dict[str, Any], columns: list[str]) -> tuple[int | None, dict[str, int], int | None]:
    n_actions = meta.get("n_actions")
    if n_actions is not None and (not _is_int(n_actions) or n_actions < 1):
        raise LogSchemaError(
            f"metadata.n_actions: got {n_actions!r}, expected a positive integer (the size of the action space)"
        )
    no_offer = meta.get("no_offer_action", 0)
    bad_no_offer = not _is_int(no_offer) or no_offer < 0 or (n_actions is not None and no_offer >= n_actions)
    if no_offer is not None and bad_no_offer:
        raise LogSchemaError(
            f"metadata.no_offer_action: got {no_offer!r}, expected an action in [0, n_actions) that means "
            "'nothing was sent', or null when the logs have no such action"
        )
    cards = meta.get("categorical_cardinality", {})
    if not isinstance(cards, dict):
        raise LogSchemaError(
            "metadata.categorical_cardinality: expected an object {feature name: number of codes}, "
            f"got {type(cards).__name__}"
        )
    for name, card in cards.items():
        if not _is_int(card) or card < 1:
            raise LogSchemaError(
                f"metadata.categorical_cardinality.{name}: got {card!r}, expected a positive integer"
            )
        if CAT_PREFIX + name not in columns:
            raise LogSchemaError(
                f"metadata.categorical_cardinality.{name}: declared but there is no column "
                f"{CAT_PREFIX}{name}; add the column or drop the declaration"
            )
    return n_actions, dict(cards), no_offer


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# -------------------------------------------------------------------------------------- validation
def _np(col: pa.ChunkedArray) -> np.ndarray:
    return col.to_numpy(zero_copy_only=False) if isinstance(col, pa.ChunkedArray) else np.asarray(col)


def _where(bad: np.ndarray | pa.ChunkedArray) -> tuple[int, int]:
    """(count, first row) of a boolean mask."""
    mask = _np(bad) if not isinstance(bad, np.ndarray) else bad
    rows = np.flatnonzero(mask)
    return len(rows), int(rows[0]) if len(rows) else -1


def _rows(count: int) -> str:
    return f"{count} row has" if count == 1 else f"{count} rows have"


_INTEGER, _BINARY, _NUMBER = "integer", "0/1 integer or bool", "number"
_FIX = {
    "user_id": "map user keys to integer codes (e.g. pyarrow.compute.dictionary_encode(...).indices)",
    "step": "use the position in the user's sequence or the rank of the timestamp within the user",
    "action": "encode actions as integer codes in [0, n_actions)",
    "propensity": "log the probability of the logged action",
    "click": "log 1 for a click and 0 otherwise",
    "conversion": "log 1 for a conversion and 0 otherwise (or drop the optional column)",
    "churned": "log 1 when the user churned at this step and 0 otherwise (or drop the optional column)",
    "revenue": "log revenue as a non-negative amount (or drop the optional column)",
    "cost": "log cost as a non-negative amount (or drop the optional column)",
    "position": "log the slot as an integer (or drop the optional column)",
}
_KIND = {
    "user_id": _INTEGER, "step": _INTEGER, "action": _INTEGER, "propensity": _NUMBER, "click": _BINARY,
    "conversion": _BINARY, "revenue": _NUMBER, "cost": _NUMBER, "churned": _BINARY, "position": _INTEGER,
}


def _type_ok(kind: str, t: pa.DataType) -> bool:
    if kind == _INTEGER:
        return pa.types.is_integer(t)
    if kind == _BINARY:
        return pa.types.is_integer(t) or pa.types.is_boolean(t)
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _check_column(table: pa.Table, name: str, kind: str, fix: str) -> np.ndarray:
    """Type and null/NaN checks; returns the column as a numpy array."""
    col = table.column(name)
    if not _type_ok(kind, col.type):
        hint = "; cast it to an integer type first" if kind != _NUMBER and pa.types.is_floating(col.type) else ""
        raise LogSchemaError(f"{name}: expected {kind} values, got {col.type}{hint}; {fix}")
    if col.null_count:
        n, i = _where(pc.is_null(col))
        raise LogSchemaError(f"{name}: {_rows(n)} a missing value (first at row {i}); {fix}")
    values = _np(col)
    if values.dtype.kind == "f":
        n, i = _where(np.isnan(values))
        if n:
            raise LogSchemaError(f"{name}: {_rows(n)} NaN (first at row {i}); {fix}")
    return values


def _check_bad(name: str, bad: np.ndarray, what: str, fix: str) -> None:
    n, i = _where(bad)
    if n:
        raise LogSchemaError(f"{name}: {_rows(n)} {what} (first at row {i}); {fix}")


def validate_logs(table: pa.Table, n_actions: int | None = None) -> LogSummary:
    """Check ``table`` against the schema (module docstring); return a summary.

    ``n_actions`` bounds ``action`` from above; without it the metadata's ``n_actions`` does,
    and without either only ``action >= 0`` is checked. Raises ``LogSchemaError`` (one line:
    field, problem, fix) on the first problem found. Vectorised: O(rows log rows) for the
    duplicate and event-semantics checks (``recsys.data.semantics``), linear otherwise.
    """
    if not isinstance(table, pa.Table):
        raise TypeError(f"table: expected a pyarrow.Table, got {type(table).__name__}")
    columns = table.column_names
    dup_names = sorted({c for c in columns if columns.count(c) > 1})
    if dup_names:
        raise LogSchemaError(f"{dup_names[0]}: the column appears more than once; column names must be unique")
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise LogSchemaError(
            f"{', '.join(missing)}: required column{'s' if len(missing) > 1 else ''} missing; "
            f"logs need {', '.join(REQUIRED)} (have: {', '.join(columns) or 'no columns'})"
        )
    if table.num_rows == 0:
        raise LogSchemaError("logs: the table has 0 rows; log at least one decision")
    meta = log_metadata(table)
    meta_actions, cards, no_offer = _check_metadata(meta, columns)
    if n_actions is not None:
        if not (_is_int(n_actions) or isinstance(n_actions, np.integer)) or n_actions < 1:
            raise ValueError(f"n_actions: expected a positive integer, got {n_actions!r}")
        if meta_actions is not None and int(n_actions) != meta_actions:
            raise LogSchemaError(
                f"action: n_actions={n_actions} was requested but the file's metadata declares "
                f"n_actions={meta_actions}; pass the matching n_actions or fix the metadata"
            )
    bound = int(n_actions) if n_actions is not None else meta_actions

    values = {name: _check_column(table, name, _KIND[name], _FIX[name]) for name in (*REQUIRED, *OPTIONAL) if name in columns}

    step, action, prop = values["step"], values["action"], values["propensity"]
    _check_bad("step", step < 0, "a negative step", _FIX["step"])
    _check_bad("action", action < 0, "a negative action", _FIX["action"])
    if bound is not None:
        _check_bad(
            "action", action >= bound, f"an action >= n_actions={bound}",
            f"actions must be in [0, {bound}) — check the action encoding or n_actions",
        )
    _check_bad("propensity", prop <= 0, "propensity <= 0",
               "propensities must be in (0, 1] — log the probability of the logged action")
    _check_bad("propensity", prop > 1, "propensity > 1",
               "propensities must be in (0, 1] — log a probability, not a score or a percentage")
    for name in ("click", "conversion", "churned"):
        if name in values and values[name].dtype != np.bool_:
            _check_bad(name, (values[name] != 0) & (values[name] != 1), "a value other than 0 or 1", _FIX[name])
    for name in ("revenue", "cost"):
        if name in values:
            _check_bad(name, values[name] < 0, f"negative {name}", _FIX[name])

    cat_names, num_names, profile = [], [], {}
    for col in columns:
        for prefix, kind in ((CAT_PREFIX, "cat"), (NUM_PREFIX, "num")):
            if not col.startswith(prefix):
                continue
            feature = col[len(prefix):]
            if not feature:
                raise LogSchemaError(f"{col}: a profile feature column needs a name after the prefix, e.g. {prefix}region")
            if kind == "cat":
                fix = "profile categoricals must be non-negative integer codes"
                codes = _check_column(table, col, _INTEGER, fix)
                _check_bad(col, codes < 0, "a negative code", fix)
                if feature in cards:
                    _check_bad(
                        col, codes >= cards[feature], f"a code >= the declared cardinality {cards[feature]}",
                        f"codes must be in [0, {cards[feature]}) — fix the codes or "
                        "metadata.categorical_cardinality",
                    )
                cat_names.append(feature)
                profile[col] = codes
            else:
                fix = "profile numerics must be finite floats"
                x = _check_column(table, col, _NUMBER, fix)
                _check_bad(col, ~np.isfinite(x), "a non-finite value", fix)
                num_names.append(feature)
                profile[col] = x

    users = values["user_id"]
    order = np.lexsort((step, users))
    su, ss = users[order], step[order]
    dup = (su[1:] == su[:-1]) & (ss[1:] == ss[:-1])
    if dup.any():
        first = int(np.flatnonzero(dup)[0])
        row_a, row_b = sorted((int(order[first]), int(order[first + 1])))
        raise LogSchemaError(
            f"step: {int(dup.sum())} duplicate (user_id, step) pair(s), e.g. user {su[first]} step {ss[first]} "
            f"at rows {row_a} and {row_b}; each user's steps must be unique — number them by timestamp rank"
        )
    problem = first_violation(values, profile, no_offer)
    if problem:
        raise LogSchemaError(problem)

    known = set(REQUIRED) | set(OPTIONAL)
    extra = tuple(c for c in columns if c not in known and not c.startswith((CAT_PREFIX, NUM_PREFIX)))
    n_users = int(np.count_nonzero(su[1:] != su[:-1]) + 1)
    conv = values.get("conversion")
    source = meta.get("source")
    return LogSummary(
        n_rows=table.num_rows,
        n_users=n_users,
        n_actions=bound if bound is not None else int(action.max()) + 1,
        click_rate=float(np.mean(values["click"])),
        conversion_rate=None if conv is None else float(np.mean(conv)),
        categorical_features=tuple(cat_names),
        numeric_features=tuple(num_names),
        mean_episode_length=table.num_rows / n_users,
        extra_columns=extra,
        source=str(source) if source is not None else None,
    )
