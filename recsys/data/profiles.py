"""One observable profile per user, as read from logs (what the user GAN fits and is judged on),
in the one profile container, ``envs.world.Profiles``."""

from __future__ import annotations

import pyarrow as pa

from envs.world import Profiles
from recsys.data.schema import CAT_PREFIX, NUM_PREFIX
from recsys.data.sequences import parse_logs

MIN_USERS = 100


def profiles_from_logs(table: pa.Table, min_users: int = MIN_USERS) -> Profiles:
    """One profile per user from a validated logs table (``recsys.data.sequences.parse_logs``:
    each user's first logged row), ordered by user id; a clear error when there is nothing to
    fit a profile model on."""
    columns = table.column_names
    if "user_id" not in columns:
        raise ValueError("user_id: column missing; profiles are taken per user (see recsys.data.schema)")
    if not any(c.startswith((CAT_PREFIX, NUM_PREFIX)) for c in columns):
        raise ValueError(
            f"logs: no profile columns; a user GAN needs {CAT_PREFIX}<name> and/or {NUM_PREFIX}<name> columns"
        )
    profiles = parse_logs(table)[1]
    if profiles.n_users < min_users:
        raise ValueError(f"logs: {profiles.n_users} users, need at least {min_users} to fit or judge a profile model")
    return profiles
