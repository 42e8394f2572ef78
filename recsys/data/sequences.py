"""Logged rows -> padded per-user sequences, the shape sequence models train on."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import pyarrow as pa

from envs.world import Profiles
from recsys.data.schema import CAT_PREFIX, NUM_PREFIX, log_metadata


@dataclass
class SequenceData:
    """Users x steps arrays (padded with 0 where ``mask`` is False) plus per-user profiles."""

    user_ids: np.ndarray  # (U,)
    actions: np.ndarray  # (U, T) int64, 0 = no offer
    click: np.ndarray  # (U, T) float32
    conversion: np.ndarray  # (U, T) float32
    churned: np.ndarray  # (U, T) float32
    propensity: np.ndarray  # (U, T) float64
    mask: np.ndarray  # (U, T) bool
    profile_cat: np.ndarray  # (U, n_cat) int64
    profile_num: np.ndarray  # (U, n_num) float32
    cat_names: tuple[str, ...]
    cardinalities: tuple[int, ...]
    num_names: tuple[str, ...]
    n_actions: int

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def horizon(self) -> int:
        return self.actions.shape[1]

    def subset(self, users: np.ndarray) -> SequenceData:
        """The same data for a boolean mask or index array over users."""
        per_user = {f.name for f in fields(self)} - {"cat_names", "cardinalities", "num_names", "n_actions"}
        return replace(self, **{name: getattr(self, name)[users] for name in per_user})


def sequences_from_logs(table: pa.Table, n_actions: int | None = None) -> SequenceData:
    """Group a validated logs table by user, ordered by step (see ``parse_logs``)."""
    return parse_logs(table, n_actions)[0]


def parse_logs(table: pa.Table, n_actions: int | None = None) -> tuple[SequenceData, Profiles]:
    """Per-user sequences and profiles of a validated logs table, in one pass (vectorised, no
    per-user loop), users ordered by id. A user's profile is their first logged row's
    ``cat_*`` / ``num_*`` columns; cardinalities come from the metadata's
    ``categorical_cardinality`` when declared, else max code + 1. Missing optional outcome
    columns are filled with zeros."""
    meta = log_metadata(table)
    n_actions = n_actions or meta.get("n_actions") or int(pa.compute.max(table["action"]).as_py()) + 1
    users = table["user_id"].to_numpy()
    steps = table["step"].to_numpy()
    order = np.lexsort((steps, users))
    users = users[order]
    uniq, first, counts = np.unique(users, return_index=True, return_counts=True)
    user_index = np.repeat(np.arange(len(uniq)), counts)
    position = np.arange(len(users)) - np.repeat(first, counts)
    shape = (len(uniq), int(counts.max()))

    def column(name: str, dtype: type) -> np.ndarray:
        out = np.zeros(shape, dtype=dtype)
        if name in table.column_names:
            out[user_index, position] = table[name].to_numpy(zero_copy_only=False)[order].astype(dtype)
        return out

    mask = np.zeros(shape, dtype=bool)
    mask[user_index, position] = True
    cat_cols = [c for c in table.column_names if c.startswith(CAT_PREFIX) and len(c) > len(CAT_PREFIX)]
    num_cols = [c for c in table.column_names if c.startswith(NUM_PREFIX) and len(c) > len(NUM_PREFIX)]
    first_rows = order[first]
    declared = meta.get("categorical_cardinality", {})
    cat = (np.stack([table[c].to_numpy()[first_rows] for c in cat_cols], axis=1) if cat_cols
           else np.zeros((len(uniq), 0))).astype(np.int64)
    num = (np.stack([table[c].to_numpy()[first_rows] for c in num_cols], axis=1) if num_cols
           else np.zeros((len(uniq), 0))).astype(np.float64)
    cat_names = tuple(c[len(CAT_PREFIX):] for c in cat_cols)
    num_names = tuple(c[len(NUM_PREFIX):] for c in num_cols)
    cards = tuple(int(declared.get(name, int(cat[:, j].max()) + 1)) for j, name in enumerate(cat_names))
    profiles = Profiles(categorical=cat, numeric=num, categorical_names=cat_names, numeric_names=num_names,
                        cardinalities=cards, user_ids=uniq)
    sequences = SequenceData(
        user_ids=uniq,
        actions=column("action", np.int64),
        click=column("click", np.float32),
        conversion=column("conversion", np.float32),
        churned=column("churned", np.float32),
        propensity=column("propensity", np.float64),
        mask=mask,
        profile_cat=cat,
        profile_num=num.astype(np.float32),
        cat_names=cat_names,
        cardinalities=cards,
        num_names=num_names,
        n_actions=int(n_actions),
    )
    return sequences, profiles
