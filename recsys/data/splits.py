"""Whole users to train / validation / test, by a hash of the user id."""

from __future__ import annotations

import numpy as np

from envs import rng

SPLITS = ("train", "validation", "test")


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
