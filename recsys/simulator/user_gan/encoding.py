"""The GAN's view of a profile: categoricals one-hot, numerics by mode-specific normalisation
(a Gaussian mixture per column: mode one-hot plus offset within the mode) or by a quantile
transform (empirical CDF, then the inverse normal CDF). ``ProfileEncoder`` maps profiles to
encoded rows and back; its parameters are plain lists saved in ``config.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

from envs.world import Profiles
from recsys.simulator.user_gan.config import UserGANConfig

ONEHOT_KINDS = ("category", "mode")  # span kinds sampled as one-hots
_QUANTILE_CLIP = 1e-4  # empirical CDF clipped to [q, 1 - q] before the inverse normal CDF
_MODE_SCALE = 4.0  # CTGAN: offset within a mode = (x - mean) / (4 sd), in (-1, 1)
_MODE_MIN_WEIGHT = 1e-3  # mixture components lighter than this are dropped
_MODE_SAMPLE = 5_000  # rows used to fit each column's Gaussian mixture


@dataclass(frozen=True)
class Span:
    """A block of the encoded row, for column ``column`` of its kind: ``category`` (a
    categorical's one-hot), ``mode`` (a numeric's mixture component, one-hot), ``offset`` (the
    position within that mode, tanh) or ``value`` (a quantile-normal number, linear)."""

    kind: str
    column: int
    start: int
    size: int

    @property
    def onehot(self) -> bool:
        return self.kind in ("category", "mode")


def quantile_cdf(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Empirical CDF level of ``x`` given quantiles ``q`` at evenly spaced levels; the average
    of the left and right interpolation, so tied knots map to their middle (as sklearn)."""
    refs = np.linspace(0.0, 1.0, len(q))
    return 0.5 * (np.interp(x, q, refs) - np.interp(-x, -q[::-1], -refs[::-1]))


def quantile_map(x: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Monotone map Q_target(F_source(x)) between two distributions given by quantiles."""
    return np.interp(quantile_cdf(x, source), np.linspace(0.0, 1.0, len(target)), target)


@dataclass
class ProfileEncoder:
    """Maps profiles to the GAN's encoded rows and encoded rows back to profiles. Every
    parameter is a plain list, so ``to_json``/``from_json`` round-trip exactly.

    Row layout (``spans``): one one-hot per categorical, then per numeric column either one
    ``value`` (quantile transform: Phi^-1 of the empirical CDF) or a mode one-hot followed by
    an ``offset`` (mode transform: (x - mean_k) / (4 sd_k) for the value's mode k)."""

    categorical_names: list[str]
    cardinalities: list[int]
    numeric_names: list[str]
    numeric: list[dict[str, Any]]  # {"kind": "quantile", "quantiles"} or {"kind": "mode", "means", "stds", "weights"}
    numeric_mean: list[float] = field(default_factory=list)  # of the training data (for ProfileSchema)
    numeric_std: list[float] = field(default_factory=list)

    @classmethod
    def fit(cls, data: Profiles, config: UserGANConfig) -> ProfileEncoder:
        data = data.described("fit_user_gan")
        cols = []
        for j in range(data.numeric.shape[1]):
            x = data.numeric[:, j]
            if config.numeric_transform == "quantile":
                q = np.quantile(x, np.linspace(0.0, 1.0, min(config.n_quantiles, len(x))))
                cols.append({"kind": "quantile", "quantiles": q.tolist()})
            else:
                cols.append(_fit_modes(x, config.max_modes, config.seed + j))
        return cls(
            list(data.categorical_names), list(data.cardinalities), list(data.numeric_names), cols,
            data.numeric.mean(axis=0).tolist(), data.numeric.std(axis=0).tolist(),
        )

    @property
    def spans(self) -> list[Span]:
        """Generation order: every one-hot first (categoricals, then numeric modes), then the
        numeric offsets/values, so each continuous part is conditioned on all discrete ones."""
        blocks = [("category", j, card) for j, card in enumerate(self.cardinalities)]
        blocks += [("mode", j, len(col["means"])) for j, col in enumerate(self.numeric) if col["kind"] == "mode"]
        blocks += [("offset" if col["kind"] == "mode" else "value", j, 1) for j, col in enumerate(self.numeric)]
        starts = np.cumsum([0] + [size for _, _, size in blocks])
        return [Span(kind, j, int(start), size) for (kind, j, size), start in zip(blocks, starts, strict=False)]

    @property
    def dim(self) -> int:
        return sum(s.size for s in self.spans)

    def encode(self, data: Profiles, seed: int) -> np.ndarray:
        """(n, dim) float32 encoded rows; ``seed`` draws each value's mode from its posterior
        (mode transform, as CTGAN)."""
        g = np.random.default_rng(seed)
        parts = {("category", j): np.eye(card)[data.categorical[:, j]] for j, card in enumerate(self.cardinalities)}
        for j, col in enumerate(self.numeric):
            x = data.numeric[:, j]
            if col["kind"] == "quantile":
                u = quantile_cdf(x, np.asarray(col["quantiles"]))
                parts["value", j] = ndtri(np.clip(u, _QUANTILE_CLIP, 1.0 - _QUANTILE_CLIP))[:, None]
                continue
            means, stds, w = (np.asarray(col[k]) for k in ("means", "stds", "weights"))
            logp = np.log(w) - np.log(stds) - 0.5 * ((x[:, None] - means) / stds) ** 2
            post = np.exp(logp - logp.max(axis=1, keepdims=True))
            post /= post.sum(axis=1, keepdims=True)
            mode = np.minimum((g.random(len(x))[:, None] > np.cumsum(post, axis=1)).sum(axis=1), len(means) - 1)
            parts["mode", j] = np.eye(len(means))[mode]
            parts["offset", j] = np.clip((x - means[mode]) / (_MODE_SCALE * stds[mode]), -0.99, 0.99)[:, None]
        out = np.zeros((len(data), self.dim), dtype=np.float32)
        for s in self.spans:
            out[:, s.start:s.start + s.size] = parts[s.kind, s.column]
        return out

    def decode(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(categorical codes, numeric values) of encoded rows (one-hots read by argmax)."""
        blocks = {(s.kind, s.column): rows[:, s.start:s.start + s.size] for s in self.spans}
        cat = np.zeros((len(rows), len(self.cardinalities)), dtype=np.int64)
        for j in range(len(self.cardinalities)):
            cat[:, j] = np.argmax(blocks["category", j], axis=1)
        num = np.zeros((len(rows), len(self.numeric)))
        for j, col in enumerate(self.numeric):
            if col["kind"] == "quantile":
                q = col["quantiles"]
                num[:, j] = np.interp(ndtr(blocks["value", j][:, 0]), np.linspace(0.0, 1.0, len(q)), q)
            else:
                mode = np.argmax(blocks["mode", j], axis=1)
                stds, means = np.asarray(col["stds"]), np.asarray(col["means"])
                num[:, j] = blocks["offset", j][:, 0] * _MODE_SCALE * stds[mode] + means[mode]
        return cat, num

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ProfileEncoder:
        return cls(**d)


def _fit_modes(x: np.ndarray, max_modes: int, seed: int) -> dict[str, Any]:
    """Mode-specific normalisation parameters: the BIC-best Gaussian mixture with at most
    ``max_modes`` components, fitted on up to ``_MODE_SAMPLE`` values."""
    from sklearn.mixture import GaussianMixture

    g = np.random.default_rng(seed)
    sample = (x if len(x) <= _MODE_SAMPLE else g.choice(x, _MODE_SAMPLE, replace=False))[:, None]
    best, best_bic = None, np.inf
    for k in range(1, min(max_modes, len(np.unique(sample))) + 1):
        gm = GaussianMixture(k, random_state=seed, reg_covar=1e-6 * max(float(np.var(sample)), 1e-12)).fit(sample)
        bic = gm.bic(sample)
        if bic < best_bic:
            best, best_bic = gm, bic
    assert best is not None
    keep = best.weights_ >= _MODE_MIN_WEIGHT
    order = np.argsort(best.means_[keep, 0])
    return {
        "kind": "mode",
        "means": best.means_[keep, 0][order].tolist(),
        "stds": np.sqrt(np.maximum(best.covariances_.reshape(-1)[keep], 1e-12))[order].tolist(),
        "weights": (best.weights_[keep] / best.weights_[keep].sum())[order].tolist(),
    }

