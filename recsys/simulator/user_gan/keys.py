"""User keys and the ``envs.rng`` streams of the profile samplers: every random number a
sampled profile needs is keyed by its user, so a profile depends only on its key."""

from __future__ import annotations

import numpy as np

from envs import rng

STREAM_LATENT = 0x47414E5A  # "GANZ": latent noise of sample_keys
STREAM_GUMBEL = 0x47414E47  # "GANG": Gumbel noise of the one-hot blocks
STREAM_MARGINAL = 0x4D415247  # "MARG": IndependentMarginalsSampler draws
STREAM_RESAMPLE = 0x52534D50  # "RSMP": ResampledProfiles draws
STREAM_CALIBRATION = 0xCA1B  # user keys of the calibration sample


def as_keys(keys: np.ndarray) -> np.ndarray:
    k = np.asarray(keys)
    if k.ndim != 1:
        raise ValueError(f"keys: expected a 1-d array of uint64 user keys, got shape {k.shape}")
    if k.size and not np.issubdtype(k.dtype, np.integer):
        raise ValueError(f"keys: expected unsigned 64-bit integer keys, got {k.dtype}")
    return k.astype(np.uint64)


def sample_keys_for(n: int, seed: int) -> np.ndarray:
    """The ``n`` user keys ``sample(n, seed)`` uses (those of a smaller n are a prefix)."""
    if n < 0:
        raise ValueError(f"n: must be >= 0, got {n}")
    return rng.combine(rng.seed_key(seed), np.arange(n, dtype=np.uint64))
