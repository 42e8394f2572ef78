"""A GAN that generates user profiles like the logged population, and a marginals baseline.

Pipeline: ``profiles_from_logs`` (one row per user) -> ``fit_user_gan`` -> ``UserGAN``, whose
``sample_keys(keys)`` draws one profile per uint64 user key. Every random number a profile
needs (latent noise, Gumbel noise) comes from ``envs.rng`` keyed by the user, so a user's
profile depends only on its key, never on the batch it is drawn in.

Model (CTGAN-style WGAN-GP, Xu et al. 2019):

* Data encoding: categoricals are one-hot. Numerics are transformed so that skewed and
  multimodal columns become easy targets: ``"quantile"`` (default) maps a column through its
  empirical CDF to a standard normal (the inverse maps any normal draw back onto the logged
  marginal, so skew and several modes come for free); ``"mode"`` is CTGAN's mode-specific
  normalisation (a small Gaussian mixture per column, value = (mode one-hot, offset within the
  mode)).
* Generator: MLP with residual concatenation; one-hot blocks come out of a Gumbel-softmax
  (soft during training, hard = argmax(logits + Gumbel) at sampling), numeric values linear
  (quantile) or tanh (mode offsets).
* Critic: MLP over "packs" of ``pac`` rows (PacGAN), which punishes mode collapse; trained
  with the Wasserstein loss and a gradient penalty.

Artifacts (``UserGAN.save``/``load``): a directory with ``generator.pt`` (a state_dict, loads
with ``torch.load(..., weights_only=True)``), ``config.json`` (architecture, feature names,
cardinalities and numeric transform parameters, plain JSON) and ``metrics.json``.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from scipy.special import ndtr, ndtri
from torch import nn
from torch.nn import functional as F

from envs import rng
from envs.world import ProfileSchema

MIN_USERS = 100
TRANSFORMS = ("quantile", "mode")
_FORMAT, _VERSION = "campaign_gym.user_gan", 1
_GENERATOR_FILE, _CONFIG_FILE, _METRICS_FILE = "generator.pt", "config.json", "metrics.json"
_STREAM_LATENT = 0x47414E5A  # "GANZ": latent noise of sample_keys
_STREAM_GUMBEL = 0x47414E47  # "GANG": Gumbel noise of the one-hot blocks
_STREAM_MARGINAL = 0x4D415247  # "MARG": IndependentMarginalsSampler draws
_SAMPLE_CHUNK = 256  # sample_keys runs the generator on fixed-shape chunks (see _generate)
_ADAM_BETAS = (0.5, 0.9)  # WGAN-GP's Adam betas
_QUANTILE_CLIP = 1e-4  # empirical CDF clipped to [q, 1 - q] before the inverse normal CDF
_MODE_SCALE = 4.0  # CTGAN: offset within a mode = (x - mean) / (4 sd), in (-1, 1)
_MODE_MIN_WEIGHT = 1e-3  # mixture components lighter than this are dropped
_MODE_SAMPLE = 5_000  # rows used to fit each column's Gaussian mixture
_CALIBRATION_ITERS = 50  # fixed-point iterations fitting the one-hot logit offsets
_MAX_LOGIT_OFFSET = 30.0  # a code never seen in the data gets offset -30 (probability ~1e-13)


class UserGANLoadError(ValueError):
    """A saved UserGAN directory that cannot be loaded; one line naming the file."""


# ------------------------------------------------------------------------------------------- data
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
        cat = np.asarray(self.categorical, dtype=np.int64).reshape(len(self.categorical), -1)
        num = np.asarray(self.numeric, dtype=np.float64).reshape(len(self.numeric), -1)
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
    """One profile per user from a logs table (``recsys.logs`` schema): the ``cat_<name>`` and
    ``num_<name>`` columns of each user's first logged row (lowest ``step``). Cardinalities
    come from the ``campaign_gym`` metadata's ``categorical_cardinality`` when declared, else
    max code + 1. Rows are ordered by user id."""
    from recsys.logs import CAT_PREFIX, NUM_PREFIX, log_metadata

    columns = table.column_names
    if "user_id" not in columns:
        raise ValueError("user_id: column missing; profiles are taken per user (see recsys.logs)")
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


# ----------------------------------------------------------------------------------------- config
@dataclass
class UserGANConfig:
    """Hyperparameters of ``fit_user_gan``. Defaults fit ~16k users in ~2 CPU minutes."""

    steps: int = 4000  # generator updates (0 = an untrained generator, e.g. as a reference)
    batch_size: int = 500  # rows per update; a multiple of pac
    latent_dim: int = 32
    generator_hidden: tuple[int, ...] = (256, 256)
    critic_hidden: tuple[int, ...] = (256, 256)
    lr: float = 2e-4  # Adam, both networks
    final_lr_fraction: float = 1.0  # lr decays linearly to lr * this over the steps
    gp_weight: float = 10.0
    n_critic: int = 1  # critic updates per generator update (CTGAN uses 1 with pac)
    pac: int = 10  # rows per critic input (PacGAN)
    critic_dropout: float = 0.5
    tau: float = 0.2  # Gumbel-softmax temperature during training
    ema_decay: float = 0.999  # the returned generator is an exponential moving average of the weights
    calibrate: bool = True  # post-hoc marginal calibration (UserGAN.calibrate_marginals)
    calibration_samples: int = 50_000
    hard_onehot: bool = True  # straight-through Gumbel: exact one-hots forward, soft gradients
    numeric_transform: str = "quantile"  # quantile | mode
    n_quantiles: int = 1000  # quantile transform: CDF knots per numeric column
    max_modes: int = 5  # mode transform: most Gaussian components per numeric column
    seed: int = 0
    max_seconds: float | None = 180.0  # hard wall-clock budget; training stops when exceeded
    log_every: int = 50  # steps between TensorBoard scalars

    def __post_init__(self) -> None:
        for name in ("generator_hidden", "critic_hidden"):
            value = getattr(self, name)
            try:
                value = tuple(int(h) for h in value)
            except (TypeError, ValueError):
                raise ValueError(f"user_gan.{name}: expected a list of layer widths, got {value!r}") from None
            if not value or min(value) < 1:
                raise ValueError(f"user_gan.{name}: expected at least one layer width >= 1, got {list(value)}")
            setattr(self, name, value)
        if self.steps < 0:
            raise ValueError(f"user_gan.steps: must be >= 0, got {self.steps}")
        for name in ("batch_size", "latent_dim", "n_critic", "pac", "n_quantiles", "max_modes", "log_every",
                     "calibration_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"user_gan.{name}: must be >= 1, got {getattr(self, name)}")
        if self.batch_size % self.pac:
            raise ValueError(f"user_gan.batch_size: must be a multiple of pac={self.pac}, got {self.batch_size}")
        for name in ("lr", "tau"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise ValueError(f"user_gan.{name}: must be a finite number > 0, got {getattr(self, name)}")
        if not (self.gp_weight >= 0 and math.isfinite(self.gp_weight)):
            raise ValueError(f"user_gan.gp_weight: must be >= 0, got {self.gp_weight}")
        if not 0.0 <= self.final_lr_fraction <= 1.0:
            raise ValueError(f"user_gan.final_lr_fraction: must be in [0, 1], got {self.final_lr_fraction}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"user_gan.ema_decay: must be in [0, 1) (0 = no averaging), got {self.ema_decay}")
        if not 0.0 <= self.critic_dropout < 1.0:
            raise ValueError(f"user_gan.critic_dropout: must be in [0, 1), got {self.critic_dropout}")
        if self.numeric_transform not in TRANSFORMS:
            raise ValueError(f"user_gan.numeric_transform: got {self.numeric_transform!r}, expected one of {TRANSFORMS}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"user_gan.max_seconds: must be > 0 or None, got {self.max_seconds}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["generator_hidden"], d["critic_hidden"] = list(self.generator_hidden), list(self.critic_hidden)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> UserGANConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# --------------------------------------------------------------------------------- data encoding
@dataclass
class _Span:
    """A block of the encoded row. kind: onehot (a categorical or a numeric's mode), value
    (a quantile-normal number, linear output) or offset (a mode offset, tanh output)."""

    kind: str
    start: int
    size: int


def _quantile_encode(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    refs = np.linspace(0.0, 1.0, len(q))
    # average of the left and right interpolations so tied knots map to their middle (as sklearn)
    u = 0.5 * (np.interp(x, q, refs) - np.interp(-x, -q[::-1], -refs[::-1]))
    return ndtri(np.clip(u, _QUANTILE_CLIP, 1.0 - _QUANTILE_CLIP))


def _quantile_decode(z: np.ndarray, q: np.ndarray) -> np.ndarray:
    return np.interp(ndtr(z), np.linspace(0.0, 1.0, len(q)), q)


def _quantile_map(x: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Monotone map from the distribution with quantiles ``source`` to the one with quantiles
    ``target`` (same levels): Q_target(F_source(x)), ties in ``source`` mapped to their middle."""
    refs = np.linspace(0.0, 1.0, len(source))
    u = 0.5 * (np.interp(x, source, refs) - np.interp(-x, -source[::-1], -refs[::-1]))
    return np.interp(u, np.linspace(0.0, 1.0, len(target)), target)


@dataclass
class ProfileEncoder:
    """Maps profiles to the GAN's encoded rows and generator outputs back to profiles. All
    parameters are plain lists so ``to_json``/``from_json`` round-trip exactly."""

    categorical_names: list[str]
    cardinalities: list[int]
    numeric_names: list[str]
    numeric: list[dict[str, Any]]  # per column: {"kind": "quantile", "quantiles": [...]} or mode params
    numeric_mean: list[float] = field(default_factory=list)  # training data, for ProfileSchema
    numeric_std: list[float] = field(default_factory=list)

    @classmethod
    def fit(cls, data: ProfileData, config: UserGANConfig) -> ProfileEncoder:
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
    def spans(self) -> list[_Span]:
        out, start = [], 0
        for card in self.cardinalities:
            out.append(_Span("onehot", start, card))
            start += card
        for col in self.numeric:
            if col["kind"] == "quantile":
                out.append(_Span("value", start, 1))
                start += 1
            else:
                out.append(_Span("offset", start, 1))
                out.append(_Span("onehot", start + 1, len(col["means"])))
                start += 1 + len(col["means"])
        return out

    @property
    def dim(self) -> int:
        return sum(s.size for s in self.spans)

    def encode(self, data: ProfileData, seed: int) -> np.ndarray:
        """(n, dim) float32 encoded rows; ``seed`` draws each value's mode (mode transform)."""
        g = np.random.default_rng(seed)
        parts = [np.eye(card, dtype=np.float32)[data.categorical[:, j]] for j, card in enumerate(self.cardinalities)]
        for j, col in enumerate(self.numeric):
            x = data.numeric[:, j]
            if col["kind"] == "quantile":
                parts.append(_quantile_encode(x, np.asarray(col["quantiles"]))[:, None])
            else:
                means, stds, w = (np.asarray(col[k]) for k in ("means", "stds", "weights"))
                logp = np.log(w) - np.log(stds) - 0.5 * ((x[:, None] - means) / stds) ** 2
                post = np.exp(logp - logp.max(axis=1, keepdims=True))
                post /= post.sum(axis=1, keepdims=True)
                mode = (g.random(len(x))[:, None] > np.cumsum(post, axis=1)).sum(axis=1)
                mode = np.minimum(mode, len(means) - 1)
                offset = np.clip((x - means[mode]) / (_MODE_SCALE * stds[mode]), -0.99, 0.99)
                parts.append(offset[:, None])
                parts.append(np.eye(len(means))[mode])
        return np.concatenate(parts, axis=1).astype(np.float32)

    def decode(self, onehot_codes: list[np.ndarray], values: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Profiles from the argmax code of every onehot span (in ``spans`` order) and the raw
        value of every value/offset span."""
        n_cat = len(self.cardinalities)
        n = len(onehot_codes[0]) if onehot_codes else len(values[0])
        cat = np.stack(onehot_codes[:n_cat], axis=1).astype(np.int64) if n_cat else np.zeros((n, 0), np.int64)
        modes = iter(onehot_codes[n_cat:])
        num = np.zeros((n, len(self.numeric)))
        for j, col in enumerate(self.numeric):
            if col["kind"] == "quantile":
                num[:, j] = _quantile_decode(values[j], np.asarray(col["quantiles"]))
            else:
                k = next(modes)
                means, stds = np.asarray(col["means"]), np.asarray(col["stds"])
                num[:, j] = np.tanh(values[j]) * _MODE_SCALE * stds[k] + means[k]
        return cat, num

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ProfileEncoder:
        return cls(**d)


def _fit_modes(x: np.ndarray, max_modes: int, seed: int) -> dict[str, Any]:
    """CTGAN mode-specific normalisation parameters: the BIC-best Gaussian mixture with at most
    ``max_modes`` components, fitted on up to ``_MODE_SAMPLE`` values."""
    from sklearn.mixture import GaussianMixture

    g = np.random.default_rng(seed)
    sample = x if len(x) <= _MODE_SAMPLE else g.choice(x, _MODE_SAMPLE, replace=False)
    best, best_bic = None, np.inf
    for k in range(1, min(max_modes, len(np.unique(sample))) + 1):
        gm = GaussianMixture(k, random_state=seed, reg_covar=1e-6 * max(float(np.var(sample)), 1e-12))
        gm.fit(sample[:, None])
        bic = gm.bic(sample[:, None])
        if bic < best_bic:
            best, best_bic = gm, bic
    assert best is not None
    keep = best.weights_ >= _MODE_MIN_WEIGHT
    w = best.weights_[keep] / best.weights_[keep].sum()
    order = np.argsort(best.means_[keep, 0])
    return {
        "kind": "mode",
        "means": best.means_[keep, 0][order].tolist(),
        "stds": np.sqrt(np.maximum(best.covariances_.reshape(-1)[keep], 1e-12))[order].tolist(),
        "weights": w[order].tolist(),
    }


# --------------------------------------------------------------------------------------- networks
class Generator(nn.Module):
    """latent -> raw outputs (logits for onehot spans, pre-activation numbers otherwise).
    Hidden layers concatenate their input to their output (CTGAN's residual blocks)."""

    def __init__(self, latent_dim: int, hidden: tuple[int, ...], out_dim: int) -> None:
        super().__init__()
        layers, width = [], latent_dim
        for h in hidden:
            layers.append(nn.Linear(width, h))
            width += h
        self.hidden = nn.ModuleList(layers)
        self.out = nn.Linear(width, out_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z
        for layer in self.hidden:
            x = torch.cat([F.relu(layer(x)), x], dim=1)
        return self.out(x)


class Critic(nn.Module):
    """Packs of ``pac`` encoded rows -> one score per pack."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], pac: int, dropout: float) -> None:
        super().__init__()
        self.pac = pac
        layers: list[nn.Module] = []
        width = in_dim * pac
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LeakyReLU(0.2), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(-1, x.shape[1] * self.pac))


def _activate(raw: torch.Tensor, spans: list[_Span], tau: float, hard: bool) -> torch.Tensor:
    """Training-time generator outputs in the encoded space (soft Gumbel-softmax one-hots)."""
    parts = []
    for s in spans:
        x = raw[:, s.start:s.start + s.size]
        if s.kind == "onehot":
            parts.append(F.gumbel_softmax(x, tau=tau, hard=hard))
        elif s.kind == "offset":
            parts.append(torch.tanh(x))
        else:
            parts.append(x)
    return torch.cat(parts, dim=1)


def _gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    n_packs = real.shape[0] // critic.pac
    eps = torch.rand(n_packs, 1, 1).expand(n_packs, critic.pac, 1).reshape(-1, 1)
    mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mix).sum(), mix, create_graph=True)
    norms = grad.reshape(n_packs, -1).norm(dim=1)
    return ((norms - 1.0) ** 2).mean()


# ---------------------------------------------------------------------------------------- samplers
def _as_keys(keys: np.ndarray) -> np.ndarray:
    k = np.asarray(keys)
    if k.ndim != 1:
        raise ValueError(f"keys: expected a 1-d array of uint64 user keys, got shape {k.shape}")
    if k.size and not np.issubdtype(k.dtype, np.integer):
        raise ValueError(f"keys: expected unsigned 64-bit integer keys, got {k.dtype}")
    return k.astype(np.uint64)


def sample_keys_for(n: int, seed: int) -> np.ndarray:
    """The ``n`` user keys ``sample(n, seed)`` uses: a prefix of the keys for a larger n."""
    if n < 0:
        raise ValueError(f"n: must be >= 0, got {n}")
    return rng.combine(rng.seed_key(seed), np.arange(n, dtype=np.uint64))


class UserGAN:
    """A trained profile generator. ``sample_keys`` is a pure function of the keys."""

    def __init__(
        self, config: UserGANConfig, encoder: ProfileEncoder, generator: Generator,
        metrics: dict[str, Any] | None = None, calibration: dict[str, Any] | None = None,
    ) -> None:
        self.config, self.encoder, self.generator = config, encoder, generator
        self.metrics: dict[str, Any] = dict(metrics or {})
        self.calibration = calibration  # see calibrate_marginals; None = raw generator
        self._sampler: Generator | None = None

    @property
    def categorical_names(self) -> tuple[str, ...]:
        return tuple(self.encoder.categorical_names)

    @property
    def numeric_names(self) -> tuple[str, ...]:
        return tuple(self.encoder.numeric_names)

    @property
    def cardinalities(self) -> tuple[int, ...]:
        return tuple(self.encoder.cardinalities)

    def profile_schema(self) -> ProfileSchema:
        """The ``envs.world.ProfileSchema`` of generated profiles (numeric location and scale
        from the training data)."""
        std = [s if s > 0 else 1.0 for s in self.encoder.numeric_std]
        return ProfileSchema(
            categorical=dict(zip(self.categorical_names, self.cardinalities, strict=True)),
            numeric={n: (m, s) for n, m, s in zip(self.numeric_names, self.encoder.numeric_mean, std, strict=True)},
        )

    def _generate(self, z: np.ndarray) -> np.ndarray:
        """Raw generator outputs in float64. The network always runs on chunks of exactly
        ``_SAMPLE_CHUNK`` rows (the last one zero-padded): BLAS picks different kernels (and
        summation orders) for different batch shapes, and a fixed shape keeps every user's
        output bitwise independent of the batch it is drawn in."""
        if self._sampler is None:
            self._sampler = _copy_generator(self.generator).double().eval()
        out = np.zeros((len(z), self.encoder.dim))
        with torch.no_grad():
            for start in range(0, len(z), _SAMPLE_CHUNK):
                chunk = z[start:start + _SAMPLE_CHUNK]
                padded = np.zeros((_SAMPLE_CHUNK, z.shape[1]))
                padded[: len(chunk)] = chunk
                out[start:start + len(chunk)] = self._sampler(torch.from_numpy(padded)).numpy()[: len(chunk)]
        return out

    def sample_keys(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(categorical codes (n, n_cat) int64, numeric (n, n_num) float64) for n uint64 user
        keys. Latent noise and Gumbel noise are ``envs.rng`` draws keyed by each user, so
        a user's profile depends only on its key."""
        return self._sample_keys(_as_keys(keys), self.calibration)

    def _sample_keys(self, keys: np.ndarray, calibration: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray]:
        raw = self._generate(rng.normal(keys[:, None], _STREAM_LATENT, np.arange(self.config.latent_dim)[None]))
        onehots = [s for s in self.encoder.spans if s.kind == "onehot"]
        offsets = calibration["logit_offsets"] if calibration else [[0.0] * s.size for s in onehots]
        u = rng.uniform(keys[:, None], _STREAM_GUMBEL, np.arange(raw.shape[1])[None])
        gumbel = -np.log(-np.log(u))
        codes = [
            np.argmax(raw[:, s.start:s.start + s.size] + np.asarray(b) + gumbel[:, s.start:s.start + s.size], axis=1)
            for s, b in zip(onehots, offsets, strict=True)
        ]
        values = [raw[:, s.start] for s in self.encoder.spans if s.kind != "onehot"]
        cat, num = self.encoder.decode(codes, values)
        if calibration:
            for j, col in enumerate(calibration["numeric"]):
                num[:, j] = _quantile_map(num[:, j], np.asarray(col["generated"]), np.asarray(col["target"]))
        return cat, num

    def calibrate_marginals(self, data: ProfileData, n_samples: int = 50_000, seed: int = 0) -> None:
        """Post-hoc marginal calibration: make every generated marginal match ``data``'s while
        keeping the dependence the generator learned. One-hot blocks get per-code logit offsets
        b, fitted so that the mean of softmax(logits + b) over ``n_samples`` generated users
        equals the observed code frequencies; then each numeric output x goes through the
        monotone map Q_data(F_generated(x)) (empirical quantiles, ``n_quantiles`` knots). The
        parameters are plain lists stored in ``config.json``."""
        keys = sample_keys_for(n_samples, seed ^ 0xCA1B)
        raw = self._generate(rng.normal(keys[:, None], _STREAM_LATENT, np.arange(self.config.latent_dim)[None]))
        encoded = self.encoder.encode(data, self.config.seed)
        offsets = []
        for s in (s for s in self.encoder.spans if s.kind == "onehot"):
            target = np.maximum(encoded[:, s.start:s.start + s.size].mean(axis=0), 1e-12)
            logits, b = raw[:, s.start:s.start + s.size], np.zeros(s.size)
            for _ in range(_CALIBRATION_ITERS):
                p = np.exp(logits + b - (logits + b).max(axis=1, keepdims=True))
                p = (p / p.sum(axis=1, keepdims=True)).mean(axis=0)
                b = np.clip(b + np.log(target) - np.log(np.maximum(p, 1e-300)), -_MAX_LOGIT_OFFSET, _MAX_LOGIT_OFFSET)
            offsets.append((b - b.max()).tolist())
        partial = {"logit_offsets": offsets, "numeric": []}
        _, num = self._sample_keys(keys, partial)
        levels = np.linspace(0.0, 1.0, min(self.config.n_quantiles, len(data), n_samples))
        partial["numeric"] = [
            {"generated": np.quantile(num[:, j], levels).tolist(), "target": np.quantile(data.numeric[:, j], levels).tolist()}
            for j in range(num.shape[1])
        ]
        self.calibration = partial

    def sample(self, n: int, seed: int = 0) -> ProfileData:
        """``n`` synthetic profiles for the keys ``sample_keys_for(n, seed)``."""
        cat, num = self.sample_keys(sample_keys_for(n, seed))
        return ProfileData(cat, num, self.categorical_names, self.numeric_names, self.cardinalities)

    # --------------------------------------------------------------------------------- io
    def save(self, directory: str | Path) -> Path:
        """Write ``generator.pt``, ``config.json`` and ``metrics.json`` into ``directory``. The
        files are written into a temporary sibling directory which then replaces ``directory``,
        so a reader never sees a half-written model (an existing directory is swapped out and
        deleted)."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = directory.parent / f".{directory.name}.{uuid.uuid4().hex}.tmp"
        tmp.mkdir()
        try:
            buf = io.BytesIO()
            torch.save(self.generator.state_dict(), buf)
            (tmp / _GENERATOR_FILE).write_bytes(buf.getvalue())
            config = {
                "format": _FORMAT,
                "version": _VERSION,
                "config": self.config.to_json(),
                "generator": {"latent_dim": self.config.latent_dim, "hidden": list(self.config.generator_hidden),
                              "out_dim": self.encoder.dim},
                "encoder": self.encoder.to_json(),
                "calibration": self.calibration,
            }
            (tmp / _CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n")
            (tmp / _METRICS_FILE).write_text(json.dumps(_jsonable(self.metrics), indent=2) + "\n")
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            if directory.exists():
                old = directory.parent / f".{directory.name}.{uuid.uuid4().hex}.old"
                os.replace(directory, old)
                os.replace(tmp, directory)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> UserGAN:
        """Load a directory written by ``save``; raises ``UserGANLoadError`` naming the file."""
        directory = Path(directory)
        cfg_path, gen_path, met_path = (directory / f for f in (_CONFIG_FILE, _GENERATOR_FILE, _METRICS_FILE))
        for path in (cfg_path, gen_path, met_path):
            if not path.is_file():
                raise UserGANLoadError(f"{path}: missing; expected a directory written by UserGAN.save")
        try:
            meta = json.loads(cfg_path.read_text())
            if meta.get("format") != _FORMAT:
                raise ValueError(f"format is {meta.get('format')!r}, expected {_FORMAT!r}")
            if meta.get("version") != _VERSION:
                raise ValueError(f"version {meta.get('version')!r} is not supported (expected {_VERSION})")
            config = UserGANConfig.from_json(meta["config"])
            encoder = ProfileEncoder.from_json(meta["encoder"])
            arch = meta["generator"]
            calibration = meta.get("calibration")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise UserGANLoadError(f"{cfg_path}: not a valid user GAN config ({_one_line(e)})") from None
        try:
            metrics = json.loads(met_path.read_text())
        except ValueError as e:
            raise UserGANLoadError(f"{met_path}: not valid JSON ({_one_line(e)})") from None
        generator = Generator(arch["latent_dim"], tuple(arch["hidden"]), arch["out_dim"])
        try:
            state = torch.load(gen_path, map_location="cpu", weights_only=True)
            generator.load_state_dict(state)
        except Exception as e:  # torch raises several types for corrupt or mismatched files
            raise UserGANLoadError(f"{gen_path}: cannot load the generator weights ({_one_line(e)})") from None
        if arch["out_dim"] != encoder.dim:
            raise UserGANLoadError(f"{cfg_path}: generator out_dim {arch['out_dim']} != encoded width {encoder.dim}")
        return cls(config, encoder, generator.eval(), metrics, calibration)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]


def _copy_generator(g: Generator) -> Generator:
    out = Generator(g.hidden[0].in_features if len(g.hidden) else g.out.in_features,
                    tuple(layer.out_features for layer in g.hidden), g.out.out_features)
    out.load_state_dict(g.state_dict())
    return out


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


class IndependentMarginalsSampler:
    """Baseline: every feature drawn independently from its empirical marginal (categorical
    frequencies; a uniformly chosen training value for numerics). Matches each marginal and
    destroys every dependence between features. Same interface as ``UserGAN``."""

    def __init__(self, data: ProfileData) -> None:
        self.categorical_names, self.numeric_names = data.categorical_names, data.numeric_names
        self.cardinalities = data.cardinalities
        self.frequencies = [
            np.bincount(data.categorical[:, j], minlength=k) / len(data) for j, k in enumerate(data.cardinalities)
        ]
        self.values = np.sort(data.numeric, axis=0)

    def sample_keys(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keys = _as_keys(keys)
        n = len(keys)
        cat = np.zeros((n, len(self.frequencies)), dtype=np.int64)
        for j, p in enumerate(self.frequencies):
            cat[:, j] = rng.categorical(keys, np.broadcast_to(p, (n, len(p))), _STREAM_MARGINAL, j)
        num = np.zeros((n, self.values.shape[1]))
        for j in range(self.values.shape[1]):
            u = rng.uniform(keys, _STREAM_MARGINAL, len(self.frequencies) + j)
            num[:, j] = self.values[np.minimum((u * len(self.values)).astype(np.int64), len(self.values) - 1), j]
        return cat, num

    def sample(self, n: int, seed: int = 0) -> ProfileData:
        cat, num = self.sample_keys(sample_keys_for(n, seed))
        return ProfileData(cat, num, self.categorical_names, self.numeric_names, self.cardinalities)


# ---------------------------------------------------------------------------------------- training
def fit_user_gan(
    data: ProfileData,
    config: UserGANConfig | None = None,
    progress: bool = True,
    tensorboard_dir: Path | None = None,
    callback: Callable[[int, UserGAN], None] | None = None,
) -> UserGAN:
    """Train a WGAN-GP profile generator on ``data`` (one row per user).

    Reproducible: the same data, config and seed give the same weights, provided training
    finishes its ``config.steps`` before ``config.max_seconds`` (the wall-clock budget cuts
    training short otherwise; ``metrics["stopped_by_budget"]`` says so) and torch runs with
    the same number of threads. The global torch RNG is restored afterwards. With
    ``tensorboard_dir``, critic loss, generator loss, gradient penalty, the critic's
    Wasserstein estimate and steps per second are written as TensorBoard scalars."""
    config = config or UserGANConfig()
    if len(data) < config.pac:
        raise ValueError(f"data: {len(data)} users, need at least pac={config.pac}")
    encoder = ProfileEncoder.fit(data, config)
    encoded = torch.from_numpy(encoder.encode(data, config.seed))
    spans = encoder.spans
    batch = min(config.batch_size, len(data) - len(data) % config.pac)
    writer = None
    if tensorboard_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(tensorboard_dir))
        rows = "\n".join(f"|{k}|{v}|" for k, v in config.to_json().items())
        writer.add_text("user_gan/hyperparameters", f"|param|value|\n|-|-|\n{rows}")
    from tqdm.auto import tqdm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        generator = Generator(config.latent_dim, config.generator_hidden, encoder.dim)
        ema = _copy_generator(generator)
        ema_params, gen_params = list(ema.parameters()), list(generator.parameters())
        critic = Critic(encoder.dim, config.critic_hidden, config.pac, config.critic_dropout)
        opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=_ADAM_BETAS, weight_decay=1e-6)
        opt_c = torch.optim.Adam(critic.parameters(), lr=config.lr, betas=_ADAM_BETAS, weight_decay=1e-6)
        index_gen = torch.Generator().manual_seed(config.seed)
        start = time.perf_counter()
        stopped_by_budget, step = False, 0
        last: dict[str, float] = {}
        bar = tqdm(total=config.steps, desc="user GAN", unit="step", disable=not progress)
        try:
            for step in range(1, config.steps + 1):
                lr = config.lr * (1.0 - (1.0 - config.final_lr_fraction) * (step - 1) / max(config.steps, 1))
                for opt in (opt_g, opt_c):
                    for group in opt.param_groups:
                        group["lr"] = lr
                for _ in range(config.n_critic):
                    real = encoded[torch.randint(len(encoded), (batch,), generator=index_gen)]
                    with torch.no_grad():
                        fake = _activate(generator(torch.randn(batch, config.latent_dim)), spans, config.tau, config.hard_onehot)
                    w_est = critic(real).mean() - critic(fake).mean()
                    gp = _gradient_penalty(critic, real, fake) if config.gp_weight > 0 else torch.zeros(())
                    loss_c = -w_est + config.gp_weight * gp
                    opt_c.zero_grad(set_to_none=True)
                    loss_c.backward()
                    opt_c.step()
                fake = _activate(generator(torch.randn(batch, config.latent_dim)), spans, config.tau, config.hard_onehot)
                loss_g = -critic(fake).mean()
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
                with torch.no_grad():
                    decay = min(config.ema_decay, step / (step + 10.0))  # warm-up: early weights fade fast
                    torch._foreach_lerp_(ema_params, gen_params, 1.0 - decay)
                if step % config.log_every == 0 or step == config.steps:
                    elapsed = time.perf_counter() - start
                    last = {"critic_loss": loss_c.item(), "generator_loss": loss_g.item(),
                            "gradient_penalty": gp.item(), "wasserstein_estimate": w_est.item()}
                    if writer is not None:
                        for k, v in last.items():
                            writer.add_scalar(f"user_gan/{k}", v, step)
                        writer.add_scalar("charts/steps_per_second", step / max(elapsed, 1e-9), step)
                    bar.set_postfix(critic=f"{last['critic_loss']:.3f}", gen=f"{last['generator_loss']:.3f}")
                    if callback is not None:
                        callback(step, _snapshot(config, encoder, ema, data))
                bar.update(1)
                if config.max_seconds is not None and time.perf_counter() - start > config.max_seconds:
                    stopped_by_budget = step < config.steps
                    break
        finally:
            bar.close()
            if writer is not None:
                writer.close()
    metrics = {
        "n_train": len(data),
        "steps_done": step if config.steps else 0,
        "steps_configured": config.steps,
        "train_seconds": time.perf_counter() - start,
        "stopped_by_budget": stopped_by_budget,
        **{f"final_{k}": v for k, v in last.items()},
    }
    gan = UserGAN(config, encoder, ema.eval(), metrics)
    if config.calibrate:
        gan.calibrate_marginals(data, config.calibration_samples, config.seed)
    return gan


def _snapshot(config: UserGANConfig, encoder: ProfileEncoder, ema: Generator, data: ProfileData) -> UserGAN:
    gan = UserGAN(config, encoder, _copy_generator(ema).eval(), {})
    if config.calibrate:
        gan.calibrate_marginals(data, config.calibration_samples, config.seed)
    return gan
