"""Logged interactions: the schema, its validator, generation from a world, user splits, a CLI.

The schema is the contract a user with their own data must produce (one parquet file; TrueWorld
logs and real logs such as the Open Bandit Dataset, see ``recsys.obd``, use the same one). One
row is one decision the logging policy took for one user.

Required columns

=============  ===============  ===================================================================
column         type             meaning
=============  ===============  ===================================================================
``user_id``    integer          who the decision was for
``step``       integer >= 0     position in the user's sequence (or a timestamp rank); unique per
                                user: no two rows share ``(user_id, step)``
``action``     integer          what was logged, in ``[0, n_actions)``; in campaign-gym worlds 0 is
                                "no offer" and ``a >= 1`` is catalog offer ``a - 1``
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
``{"n_actions": 25, "categorical_cardinality": {"region": 6}, "source": "true_world"}``.
When present, ``n_actions`` bounds ``action`` and each declared cardinality bounds its
``cat_<name>`` column (which must exist). Other keys are informational.

Entry points: ``validate_logs`` (one-line ``LogSchemaError`` on the first problem),
``read_logs``/``write_logs`` (atomic), ``generate_logs`` (a stochastic policy in a
``CampaignVectorEnv``; propensities are exact), ``split_users`` (per-user hash split) and
``python -m recsys.logs validate PATH`` / ``generate OUT --users N --seed S``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from gymnasium.vector import AutoresetMode

from agents.base import OnlinePolicy, Policy
from envs import rng
from envs.vector_env import CampaignVectorEnv, episode_batches
from recsys.artifacts import atomic_write

METADATA_KEY = b"campaign_gym"
REQUIRED = ("user_id", "step", "action", "propensity", "click")
OPTIONAL = ("conversion", "revenue", "cost", "churned", "position")
CAT_PREFIX, NUM_PREFIX = "cat_", "num_"
SPLITS = ("train", "validation", "test")

_STREAM_LOGGING = 0x4C4F47  # counter-based stream of the logging policy's action draws ("LOG")
_PROB_TOL = 1e-6  # how far a policy's action probabilities may sum from 1


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


def _check_metadata(meta: dict[str, Any], columns: list[str]) -> tuple[int | None, dict[str, int]]:
    n_actions = meta.get("n_actions")
    if n_actions is not None and (not _is_int(n_actions) or n_actions < 1):
        raise LogSchemaError(
            f"metadata.n_actions: got {n_actions!r}, expected a positive integer (the size of the action space)"
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
    return n_actions, dict(cards)


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
    duplicate check, linear otherwise.
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
    meta_actions, cards = _check_metadata(meta, columns)
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

    cat_names, num_names = [], []
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
            else:
                fix = "profile numerics must be finite floats"
                x = _check_column(table, col, _NUMBER, fix)
                _check_bad(col, ~np.isfinite(x), "a non-finite value", fix)
                num_names.append(feature)

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


# ---------------------------------------------------------------------------------------------- io
def read_logs(path: str | Path, n_actions: int | None = None) -> pa.Table:
    """Read a logs parquet file, validate it (``validate_logs``) and return the table."""
    table = _read_parquet(path)
    validate_logs(table, n_actions)
    return table


def _read_parquet(path: str | Path) -> pa.Table:
    path = Path(path)
    if not path.exists():
        raise LogSchemaError(f"path: no such file {str(path)!r}; pass the path of a logs parquet file")
    if path.is_dir():
        raise LogSchemaError(f"path: {str(path)!r} is a directory; pass the path of a logs parquet file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise LogSchemaError(
            f"path: {str(path)!r} is not a readable parquet file ({e}); write logs with "
            "recsys.logs.write_logs or pyarrow.parquet.write_table"
        ) from None
    return table


def write_logs(table: pa.Table, path: str | Path, validate: bool = True) -> Path:
    """Write ``table`` as parquet atomically: a temp file in the same directory, fsync'd, then
    ``os.replace``d over ``path``, so readers see the old file or the complete new one, never
    a partial one. Validates first unless ``validate=False``. Returns the path."""
    if validate:
        validate_logs(table)
    return atomic_write(path, lambda f: pq.write_table(table, f))


# -------------------------------------------------------------------------------------- generation
def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _sample(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw per row; never lands on a zero-probability action."""
    cdf = np.cumsum(probs, axis=1)
    cdf /= cdf[:, -1:]
    return np.minimum((u[:, None] > cdf).sum(axis=1), probs.shape[1] - 1).astype(np.int64)


def _checked_probs(policy: Policy, obs: np.ndarray, masks: np.ndarray, rows: np.ndarray) -> np.ndarray:
    name = getattr(policy, "name", type(policy).__name__)
    probs = np.asarray(policy.action_probs(obs, masks), dtype=np.float64)
    if probs.shape != masks.shape:
        raise ValueError(f"policy {name!r}: action_probs returned shape {probs.shape}, expected {masks.shape}")
    p, m = probs[rows], masks[rows]
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError(f"policy {name!r}: action_probs must be finite and >= 0")
    if np.any(np.abs(p.sum(axis=1) - 1.0) > _PROB_TOL):
        raise ValueError(f"policy {name!r}: action_probs rows must sum to 1")
    if np.any(p[~m] > 0):
        raise ValueError(f"policy {name!r}: action_probs puts probability on masked actions; respect masks")
    return probs


def generate_logs(
    make_env: Callable[[int], CampaignVectorEnv],
    make_policy: Callable[[CampaignVectorEnv], Policy],
    n_users: int,
    seed: int,
    batch_size: int = 4096,
    progress: bool = False,
) -> pa.Table:
    """Log one episode per user of a stochastic policy (normally ``agents.reference.LoggingPolicy``).

    Same conventions as ``experiments.rollout.rollout``: ``make_env(n)`` builds an env of n
    users (autoreset is forced to ``DISABLED``), ``make_policy(env)`` the policy for it; user
    ``i`` is the env slot seeded with ``seed + i`` and is logged with ``user_id = seed + i``.
    Actions are drawn here from ``policy.action_probs(obs, masks)`` with counter-based
    uniforms keyed by the user and step, so the logged ``propensity`` is exactly the
    probability of the logged action and the table depends only on ``seed`` and ``n_users``
    (not on ``batch_size``). Rows are sorted by ``(user_id, step)``; the result is validated.
    """
    if n_users < 1:
        raise ValueError(f"n_users: must be >= 1, got {n_users}")
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    from tqdm import tqdm

    parts: list[dict[str, np.ndarray]] = []
    env = policy = None
    with tqdm(total=n_users, desc="logging", unit="user", disable=not progress) as bar:
        for start, env in episode_batches(make_env, n_users, batch_size):
            policy = make_policy(env)
            parts.append(_log_batch(env, policy, seed + start))
            bar.update(env.num_envs)
    assert env is not None and policy is not None
    columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.lexsort((columns["step"], columns["user_id"]))
    table = pa.table({k: v[order] for k, v in columns.items()})
    schema = env.world.profile_schema
    meta = {
        "n_actions": int(env.catalog.n_actions),
        "categorical_cardinality": {k: int(v) for k, v in schema.categorical.items()},
        "source": _snake(type(env.world).__name__),
        "policy": getattr(policy, "name", type(policy).__name__),
        "seed": int(seed),
        "n_users": int(n_users),
        "horizon": int(env.campaign.horizon),
        "actions": "0 = no offer, a >= 1 = catalog offer a - 1",
    }
    world_config = getattr(env.world, "config", None)
    if world_config is not None and hasattr(world_config, "seed"):
        meta["world_seed"] = int(world_config.seed)
    table = with_metadata(table, meta)
    validate_logs(table)
    return table


def _log_batch(env: CampaignVectorEnv, policy: Policy, seed: int) -> dict[str, np.ndarray]:
    n = env.num_envs
    schema = env.world.profile_schema
    cat_names = [CAT_PREFIX + k for k in schema.categorical]
    num_names = [NUM_PREFIX + k for k in schema.numeric]
    out: dict[str, list[np.ndarray]] = {
        k: [] for k in ("user_id", "step", "action", "propensity", "click", "conversion",
                        "revenue", "cost", "churned", *cat_names, *num_names)
    }
    obs, _ = env.reset(seed=seed)
    user_ids = seed + np.arange(n, dtype=np.int64)
    while not env.done.all():
        rows = np.flatnonzero(~env.done)
        masks = env.action_masks()
        probs = _checked_probs(policy, obs, masks, rows)
        steps = env.steps
        u = rng.uniform(env.user_keys, steps, _STREAM_LOGGING)
        actions = np.zeros(n, dtype=np.int64)
        actions[rows] = _sample(probs[rows], u[rows])
        previous = obs
        obs, reward, _, _, info = env.step(actions)
        if isinstance(policy, OnlinePolicy):  # per-user state (session models, recurrent agents) follows the log
            policy.observe(previous, actions, reward, info)
        if not np.array_equal(np.flatnonzero(info["active"]), rows):
            raise RuntimeError("generate_logs: env's active users disagree with env.done; is autoreset disabled?")
        out["user_id"].append(user_ids[rows])
        out["step"].append(steps[rows])
        out["action"].append(actions[rows])
        out["propensity"].append(probs[rows, actions[rows]])
        for key in ("click", "conversion", "churned"):
            out[key].append(np.asarray(info[key])[rows].astype(np.int8))
        for key in ("revenue", "cost"):
            out[key].append(np.asarray(info[key], dtype=np.float64)[rows])
        for j, name in enumerate(cat_names):
            out[name].append(env.profile_categorical[rows, j])
        for j, name in enumerate(num_names):
            out[name].append(env.profile_numeric[rows, j])
    return {k: np.concatenate(v) for k, v in out.items()}


# ------------------------------------------------------------------------------------------ splits
def split_users(
    user_ids: np.ndarray, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, np.ndarray]:
    """Boolean row masks ``{"train", "validation", "test"}`` assigning whole users to splits.

    A user's split is a hash of ``(seed, user_id)``, so no user is in two splits and a user's
    split does not depend on which other users are present (adding or removing users, or
    reading a subset of the file, moves nobody). ``fractions`` are the expected shares of
    users (not rows); they must be positive and sum to 1.
    """
    fr = tuple(float(f) for f in fractions)
    if len(fr) != len(SPLITS):
        raise ValueError(f"fractions: expected 3 values (train, validation, test), got {len(fr)}")
    if not all(np.isfinite(f) and f > 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-9:
        raise ValueError(f"fractions: must be positive and sum to 1, got {fractions}")
    ids = np.asarray(user_ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"user_ids: expected a 1-d integer array, got {ids.dtype} with shape {ids.shape}")
    u = rng.uniform(rng.seed_key(seed), ids)
    cut_train, cut_val = fr[0], fr[0] + fr[1]
    return {"train": u < cut_train, "validation": (u >= cut_train) & (u < cut_val), "test": u >= cut_val}


# --------------------------------------------------------------------------------------------- cli
def _default_true_world_logs(n_users: int, seed: int, world_seed: int, batch_size: int, progress: bool) -> pa.Table:
    from agents.reference import LoggingPolicy
    from envs.true_world import TrueWorld, TrueWorldConfig
    from envs.vector_env import CampaignConfig

    world_config, campaign = TrueWorldConfig(seed=world_seed), CampaignConfig()
    return generate_logs(
        lambda n: CampaignVectorEnv(TrueWorld(world_config, n_users=n), campaign, AutoresetMode.DISABLED),
        LoggingPolicy, n_users=n_users, seed=seed, batch_size=batch_size, progress=progress,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys.logs", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_val = sub.add_parser("validate", help="check a logs parquet file against the schema")
    p_val.add_argument("path")
    p_val.add_argument("--n-actions", type=int, default=None, help="size of the action space (bounds action)")
    p_gen = sub.add_parser("generate", help="generate TrueWorld logs with the default LoggingPolicy")
    p_gen.add_argument("out")
    p_gen.add_argument("--users", type=int, default=1000)
    p_gen.add_argument("--seed", type=int, default=0, help="first user seed (user_id = seed + i)")
    p_gen.add_argument("--world-seed", type=int, default=0, help="TrueWorldConfig.seed (fixes the world)")
    p_gen.add_argument("--batch-size", type=int, default=4096)
    p_gen.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "validate" and args.n_actions is not None and args.n_actions < 1:
        parser.error("--n-actions: must be >= 1")
    if args.command == "generate" and (args.users < 1 or args.batch_size < 1):
        parser.error("--users and --batch-size: must be >= 1")

    try:
        if args.command == "validate":
            summary = validate_logs(_read_parquet(args.path), args.n_actions)
            print(f"{args.path}: valid campaign-gym logs")
        else:
            table = _default_true_world_logs(args.users, args.seed, args.world_seed, args.batch_size, not args.no_progress)
            write_logs(table, args.out)
            summary = validate_logs(table)
            print(f"wrote {args.out}")
    except LogSchemaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summary.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
