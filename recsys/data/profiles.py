"""One observable profile per user, as read from logs (what the user GAN fits and is judged on)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from recsys.data.schema import CAT_PREFIX, NUM_PREFIX, log_metadata

MIN_USERS = 100


@dataclass(frozen=True)
class ProfileData:
    """One observable profile per user: categorical codes, numeric values and their names."""

    categorical: np.ndarray  # (n, n_cat) int64 codes in [0, cardinality)
    numeric: np.ndarray  # (n, n_num) float64
    categorical_names: tuple[str, ...]  # without the cat_ prefix
    numeric_names: tuple[str, ...]  # without the num_ prefix
    cardinalities: tuple[int, ...]  # number of codes of each categorical feature
    user_ids: np.ndarray | None = None  # (n,) int64, when the rows come from logs

    def __post_init__(self) -> None:
        cat = np.asarray(self.categorical, dtype=np.int64)
        num = np.asarray(self.numeric, dtype=np.float64)
        if cat.ndim != 2 or num.ndim != 2:
            raise ValueError(f"profiles: categorical and numeric must be 2-d, got shapes {cat.shape} and {num.shape}")
        object.__setattr__(self, "categorical", cat)
        object.__setattr__(self, "numeric", num)
        object.__setattr__(self, "categorical_names", tuple(self.categorical_names))
        object.__setattr__(self, "numeric_names", tuple(self.numeric_names))
        object.__setattr__(self, "cardinalities", tuple(int(c) for c in self.cardinalities))
        if len(cat) != len(num):
            raise ValueError(f"profiles: categorical has {len(cat)} rows but numeric has {len(num)}")
        if cat.shape[1] != len(self.categorical_names) or len(self.cardinalities) != len(self.categorical_names):
            raise ValueError(
                f"profiles.categorical: {cat.shape[1]} columns, {len(self.categorical_names)} names and "
                f"{len(self.cardinalities)} cardinalities; they must match"
            )
        if num.shape[1] != len(self.numeric_names):
            raise ValueError(f"profiles.numeric: {num.shape[1]} columns but {len(self.numeric_names)} names")
        for j, (name, card) in enumerate(zip(self.categorical_names, self.cardinalities, strict=True)):
            if len(cat) and (cat[:, j].min() < 0 or cat[:, j].max() >= card):
                raise ValueError(f"profiles.categorical.{name}: codes must be in [0, {card})")
        if not np.all(np.isfinite(num)):
            raise ValueError("profiles.numeric: values must be finite")
        if self.user_ids is not None:
            ids = np.asarray(self.user_ids, dtype=np.int64)
            if ids.shape != (len(cat),):
                raise ValueError(f"profiles.user_ids: expected shape ({len(cat)},), got {ids.shape}")
            object.__setattr__(self, "user_ids", ids)

    def __len__(self) -> int:
        return len(self.categorical)

    @property
    def n_users(self) -> int:
        return len(self.categorical)

    def subset(self, rows: np.ndarray) -> ProfileData:
        """The profiles of ``rows`` (a boolean mask or integer indices)."""
        return ProfileData(
            self.categorical[rows], self.numeric[rows], self.categorical_names, self.numeric_names,
            self.cardinalities, None if self.user_ids is None else self.user_ids[rows],
        )


def profiles_from_logs(table: pa.Table, min_users: int = MIN_USERS) -> ProfileData:
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
    return ProfileData(
        categorical=cat.astype(np.int64), numeric=num.astype(np.float64), categorical_names=cat_names,
        numeric_names=tuple(c[len(NUM_PREFIX):] for c in num_cols), cardinalities=cards, user_ids=users[first],
    )
