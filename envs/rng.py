"""Counter-based random numbers: every draw is a pure function of (key, counter, stream).

Why not ``numpy.random.Generator``: a batched env must give user *i* exactly the draws a
single env seeded with the same seed would give, and two policies evaluated on the same seed
must meet the same users with the same coin flips (common random numbers). A stateful
generator shared by N users breaks both as soon as users finish at different steps; N
generators need a per-user Python loop. Hashing (SplitMix64 finaliser) gives independent,
reproducible streams for any set of users in one vectorised call.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_TWO_POW_M53 = 1.0 / float(1 << 53)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a bijective, well-avalanched 64-bit hash (vectorised)."""
    z = np.asarray(x, dtype=np.uint64)
    if z.ndim == 0:  # numpy scalars warn on wrap-around (the point of the hash); arrays never do
        with np.errstate(over="ignore"):
            z = z + _GOLDEN
            z = (z ^ (z >> _S30)) * _M1
            z = (z ^ (z >> _S27)) * _M2
            return z ^ (z >> _S31)
    z = z + _GOLDEN  # in place from here on: the same numbers, fewer temporaries
    z ^= z >> _S30
    z *= _M1
    z ^= z >> _S27
    z *= _M2
    z ^= z >> _S31
    return z


def combine(key: np.ndarray, *counters: int | np.ndarray) -> np.ndarray:
    """Derive a child key from ``key`` and any number of integer counters."""
    out = np.asarray(key, dtype=np.uint64)
    for counter in counters:
        out = mix64(out ^ mix64(np.asarray(counter).astype(np.uint64)))
    return out


def uniform(key: np.ndarray, *counters: int | np.ndarray) -> np.ndarray:
    """Uniform floats in (0, 1), one per element of the broadcast of key and counters."""
    bits = combine(key, *counters) >> np.uint64(11)
    return (bits.astype(np.float64) + 0.5) * _TWO_POW_M53


def normal(key: np.ndarray, *counters: int | np.ndarray) -> np.ndarray:
    """Standard normal floats (Box-Muller on two independent uniform streams)."""
    u1 = uniform(key, *counters, 0x6E6F726D)
    u2 = uniform(key, *counters, 0x616C)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def inverse_cdf(weights: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The one sampler: an index per row of non-negative ``weights`` (rows need not sum to 1),
    drawn by inverse CDF from uniforms ``u`` in [0, 1). The uniform is scaled by the row total
    rather than the CDF normalised, so rounding never picks a zero-weight tail."""
    cdf = np.cumsum(weights, axis=-1)
    picked = (np.asarray(u)[..., None] * cdf[..., -1:] >= cdf).sum(axis=-1)
    return np.minimum(picked, cdf.shape[-1] - 1).astype(np.int64)


def categorical(key: np.ndarray, probs: np.ndarray, *counters: int | np.ndarray) -> np.ndarray:
    """One category index per row of ``probs`` from the counter-based stream of ``key``."""
    return inverse_cdf(probs, uniform(key, *counters))


def seed_key(seed: int | np.ndarray) -> np.ndarray:
    """Turn user-facing integer seeds into 64-bit keys."""
    return mix64(np.asarray(seed, dtype=np.int64).astype(np.uint64) ^ np.uint64(0x5EED))
