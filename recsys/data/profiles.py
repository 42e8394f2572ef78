"""One observable profile per user, as read from logs (what the user GAN fits and is judged on),
in the one profile container, ``envs.world.Profiles``."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from envs.world import Profiles
from recsys.data.schema import CAT_PREFIX, NUM_PREFIX, log_metadata

MIN_USERS = 100


def profiles_from_logs(table: pa.Table, min_users: int = MIN_USERS) -> Profiles:
    """One profile per user from a logs table (``recsys.data.schema``): the ``cat_<name>`` and
    ``num_<name>`` columns of each user's first logged row (lowest ``step``). Cardinalities
    come from the ``campaign_gym`` metadata's ``categorical_cardinality`` when declared, else
    max code + 1. Rows are ordered by user id."""
    columns = table.column_names
    if "user_id" not in columns:
        raise ValueError("user_id: column missing; profiles are taken per user (see recsys.data.schema)")
    cat_cols = [c for c in columns if c.startswith(CAT_PREFIX) and len(c) > len(CAT_PREFIX)]
    num_cols = [c for c in columns if c.startswith(NUM_PREFIX) and len(c) > len(NUM_PREFIX)]
    if not cat_cols and not num_cols:
        raise ValueError(
            f"logs: no profile columns; a user GAN needs {CAT_PREFIX}<name> and/or {NUM_PREFIX}<name> columns"
        )

    def col(name: str) -> np.ndarray:
        return table.column(name).to_numpy()

    users = col("user_id").astype(np.int64)
    step = col("step").astype(np.int64) if "step" in columns else np.zeros(len(users), dtype=np.int64)
    order = np.lexsort((step, users))
    first = order[np.concatenate([[True], users[order][1:] != users[order][:-1]])] if len(order) else order
    if len(first) < min_users:
        raise ValueError(f"logs: {len(first)} users, need at least {min_users} to fit or judge a profile model")
    cat = np.stack([col(c)[first] for c in cat_cols], axis=1) if cat_cols else np.zeros((len(first), 0))
    num = np.stack([col(c)[first] for c in num_cols], axis=1) if num_cols else np.zeros((len(first), 0))
    cat_names = tuple(c[len(CAT_PREFIX):] for c in cat_cols)
    declared = log_metadata(table).get("categorical_cardinality", {})
    cards = tuple(
        int(declared[name]) if name in declared else int(cat[:, j].max()) + 1 for j, name in enumerate(cat_names)
    )
    return Profiles(
        categorical=cat.astype(np.int64), numeric=num.astype(np.float64), categorical_names=cat_names,
        numeric_names=tuple(c[len(NUM_PREFIX):] for c in num_cols), cardinalities=cards, user_ids=users[first],
    )
