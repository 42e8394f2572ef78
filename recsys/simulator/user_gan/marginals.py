"""Profile samplers that are not the GAN: the independent-marginals baseline its fidelity is
compared with, and resampling of the logged profiles (an option for LearnedWorld's users)."""

from __future__ import annotations

import numpy as np

from envs import rng
from envs.world import Profiles
from recsys.simulator.user_gan.keys import STREAM_MARGINAL, STREAM_RESAMPLE, as_keys, sample_keys_for


class IndependentMarginalsSampler:
    """Baseline: each feature drawn independently from its empirical marginal (code
    frequencies for categoricals, a uniformly chosen training value for numerics). Matches
    every marginal and destroys every dependence between features. Same interface as
    ``UserGAN`` (per-key draws from ``envs.rng``)."""

    def __init__(self, data: Profiles) -> None:
        data = data.described("IndependentMarginalsSampler")
        self.categorical_names, self.numeric_names = data.categorical_names, data.numeric_names
        self.cardinalities = data.cardinalities
        self.frequencies = [
            np.bincount(data.categorical[:, j], minlength=k) / len(data) for j, k in enumerate(data.cardinalities)
        ]
        self.values = data.numeric.copy()

    def sample_keys(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keys = as_keys(keys)
        n, n_cat = len(keys), len(self.frequencies)
        cat = np.zeros((n, n_cat), dtype=np.int64)
        for j, p in enumerate(self.frequencies):
            cat[:, j] = rng.categorical(keys, np.broadcast_to(p, (n, len(p))), STREAM_MARGINAL, j)
        num = np.zeros((n, self.values.shape[1]))
        for j in range(self.values.shape[1]):
            row = (rng.uniform(keys, STREAM_MARGINAL, n_cat + j) * len(self.values)).astype(np.int64)
            num[:, j] = self.values[np.minimum(row, len(self.values) - 1), j]
        return cat, num

    def sample(self, n: int, seed: int = 0) -> Profiles:
        cat, num = self.sample_keys(sample_keys_for(n, seed))
        return Profiles(cat, num, self.categorical_names, self.numeric_names, self.cardinalities)


class ResampledProfiles:
    """Each user key picks one logged profile uniformly (the bootstrap of the logged users):
    exactly the logged joint distribution, but only the profiles that were logged. The
    alternative to the GAN for ``simulator.learned_world.users=logged``."""

    def __init__(self, data: Profiles) -> None:
        data = data.described("ResampledProfiles")
        if len(data) == 0:
            raise ValueError("profiles: ResampledProfiles needs at least one logged profile")
        self.categorical_names, self.numeric_names = data.categorical_names, data.numeric_names
        self.cardinalities = data.cardinalities
        self._cat, self._num = data.categorical.copy(), data.numeric.copy()

    def sample_keys(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keys = as_keys(keys)
        rows = np.minimum((rng.uniform(keys, STREAM_RESAMPLE) * len(self._cat)).astype(np.int64), len(self._cat) - 1)
        return self._cat[rows], self._num[rows]

    def sample(self, n: int, seed: int = 0) -> Profiles:
        cat, num = self.sample_keys(sample_keys_for(n, seed))
        return Profiles(cat, num, self.categorical_names, self.numeric_names, self.cardinalities)
