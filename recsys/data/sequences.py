"""Logged rows -> padded per-user sequences, the shape sequence models train on."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import pyarrow as pa

from recsys.data.schema import log_metadata


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
    """Group a validated logs table by user, ordered by step (vectorised, no per-user loop).
    Missing optional outcome columns are filled with zeros."""
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
    cat_cols = [c for c in table.column_names if c.startswith("cat_")]
    num_cols = [c for c in table.column_names if c.startswith("num_")]
    first_rows = order[first]
    cardinality = meta.get("categorical_cardinality", {})
    cat = np.stack([table[c].to_numpy()[first_rows] for c in cat_cols], axis=1) if cat_cols else np.zeros((len(uniq), 0), np.int64)
    num = np.stack([table[c].to_numpy()[first_rows] for c in num_cols], axis=1) if num_cols else np.zeros((len(uniq), 0))
    return SequenceData(
        user_ids=uniq,
        actions=column("action", np.int64),
        click=column("click", np.float32),
        conversion=column("conversion", np.float32),
        churned=column("churned", np.float32),
        propensity=column("propensity", np.float64),
        mask=mask,
        profile_cat=cat.astype(np.int64),
        profile_num=num.astype(np.float32),
        cat_names=tuple(c[4:] for c in cat_cols),
        cardinalities=tuple(int(cardinality.get(c[4:], int(cat[:, j].max()) + 1)) for j, c in enumerate(cat_cols)),
        num_names=tuple(c[4:] for c in num_cols),
        n_actions=int(n_actions),
    )
