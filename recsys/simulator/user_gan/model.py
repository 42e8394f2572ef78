"""``UserGAN``: a fitted profile generator. ``sample_keys`` draws one profile per user key (the
noise keyed by the user, the network run on fixed-shape chunks, so a profile is bitwise a
function of its key); ``calibrate_marginals`` fits per-code logit offsets and per-column
quantile maps that make every marginal match the training data. Saved as a model directory
(``recsys.artifacts.save_model_dir``): ``generator.pt``, ``config.json``, ``metrics.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from envs import rng
from envs.world import Profiles
from recsys.artifacts import CONFIG_FILE, blame_file, load_model_dir, save_model_dir
from recsys.simulator.user_gan.config import UserGANConfig
from recsys.simulator.user_gan.encoding import ProfileEncoder, quantile_map
from recsys.simulator.user_gan.keys import (
    STREAM_CALIBRATION,
    STREAM_GUMBEL,
    STREAM_LATENT,
    as_keys,
    sample_keys_for,
)
from recsys.simulator.user_gan.networks import Generator, copy_generator, head_spec, head_width

_FORMAT, _VERSION = "campaign_gym.user_gan", 1
GENERATOR_FILE = "generator.pt"
_SAMPLE_CHUNK = 256  # sample_keys runs the generator on fixed-shape chunks (see UserGAN._encoded)
_CALIBRATION_ITERS = 50  # fixed-point iterations fitting the one-hot logit offsets
_MAX_LOGIT_OFFSET = 30.0  # a code never seen in the data gets offset -30 (probability ~1e-13)


class UserGAN:
    """A trained profile generator; ``sample_keys`` is a pure function of the user keys."""

    def __init__(
        self, config: UserGANConfig, encoder: ProfileEncoder, generator: Generator,
        metrics: dict[str, Any] | None = None, calibration: dict[str, Any] | None = None,
    ) -> None:
        self.config, self.encoder, self.generator = config, encoder, generator
        self.metrics: dict[str, Any] = dict(metrics or {})
        self.calibration = calibration  # see calibrate_marginals; None = the raw generator
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

    # ------------------------------------------------------------------------------ sampling
    def _encoded(self, keys: np.ndarray, offsets: list[list[float]] | None) -> tuple[np.ndarray, list[np.ndarray]]:
        """Encoded rows for ``keys`` (float64) and the raw logits of every one-hot span.

        The network runs on chunks of exactly ``_SAMPLE_CHUNK`` rows (the last one
        zero-padded): BLAS picks different kernels, with different summation orders, for
        different batch shapes, and a fixed shape keeps every user's output bitwise independent
        of the batch it is drawn in."""
        if self._sampler is None:
            self._sampler = copy_generator(self.generator, torch.float64).eval()
        spans = self.encoder.spans
        onehot_index = {i: k for k, i in enumerate(i for i, s in enumerate(spans) if s.onehot)}
        z = rng.normal(keys[:, None], STREAM_LATENT, np.arange(self.config.latent_dim)[None])
        u = rng.uniform(keys[:, None], STREAM_GUMBEL, np.arange(self.encoder.dim)[None])
        gumbel = -np.log(-np.log(u))
        bias = [torch.tensor(offsets[k] if offsets else np.zeros(spans[i].size), dtype=torch.float64)
                for i, k in onehot_index.items()]
        out = np.zeros((len(keys), self.encoder.dim))
        logits = [np.zeros((len(keys), spans[i].size)) for i in onehot_index]
        for start in range(0, len(keys), _SAMPLE_CHUNK):
            n = min(_SAMPLE_CHUNK, len(keys) - start)
            z_pad, g_pad = np.zeros((_SAMPLE_CHUNK, z.shape[1])), np.zeros((_SAMPLE_CHUNK, gumbel.shape[1]))
            z_pad[:n], g_pad[:n] = z[start:start + n], gumbel[start:start + n]
            g_t = torch.from_numpy(g_pad)

            def pick(i: int, raw: torch.Tensor, start: int = start, n: int = n, g_t: torch.Tensor = g_t) -> torch.Tensor:
                s = spans[i]
                if s.kind == "offset":
                    return torch.tanh(raw)
                if s.kind == "value":
                    return raw
                k = onehot_index[i]
                raw = raw + bias[k]
                logits[k][start:start + n] = raw[:n].numpy()
                return F.one_hot(torch.argmax(raw + g_t[:, s.start:s.start + s.size], dim=1), s.size).to(raw.dtype)

            with torch.no_grad():
                out[start:start + n] = self._sampler(torch.from_numpy(z_pad), pick)[:n].numpy()
        return out, logits

    def sample_keys(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(categorical codes (n, n_cat) int64, numeric values (n, n_num) float64) for n uint64
        user keys. The latent noise and the Gumbel noise are ``envs.rng`` draws keyed by each
        user, so a user's profile depends only on its key, not on the batch."""
        keys = as_keys(keys)
        cal = self.calibration
        cat, num = self.encoder.decode(self._encoded(keys, cal["logit_offsets"] if cal else None)[0])
        if cal:
            for j, col in enumerate(cal["numeric"]):
                num[:, j] = quantile_map(num[:, j], np.asarray(col["generated"]), np.asarray(col["target"]))
        return cat, num

    def sample(self, n: int, seed: int = 0) -> Profiles:
        """``n`` synthetic profiles for the keys ``sample_keys_for(n, seed)``."""
        cat, num = self.sample_keys(sample_keys_for(n, seed))
        return Profiles(cat, num, self.categorical_names, self.numeric_names, self.cardinalities)

    def calibrate_marginals(self, data: Profiles, n_samples: int = 20_000, seed: int = 0) -> None:
        """Post-hoc marginal calibration: every generated marginal is made to match ``data``'s
        while the dependence the generator learned is kept.

        One-hot spans (categoricals and modes), in generation order, get per-code logit
        offsets b fitted so that the mean of softmax(logits + b) over ``n_samples`` generated
        users equals the code frequencies of the encoded data (the probability of a code under
        Gumbel-argmax sampling); then every numeric output x is mapped through
        Q_data(F_generated(x)) (empirical quantiles, ``config.n_quantiles`` knots), a monotone
        map. The parameters are plain lists saved in ``config.json``."""
        keys = sample_keys_for(n_samples, seed ^ STREAM_CALIBRATION)
        encoded = self.encoder.encode(data, self.config.seed)
        onehots = [s for s in self.encoder.spans if s.onehot]
        offsets = [[0.0] * s.size for s in onehots]
        for k, s in enumerate(onehots):  # a span's logits depend on earlier spans' codes only
            logits = self._encoded(keys, offsets)[1][k] - np.asarray(offsets[k])
            target = np.maximum(encoded[:, s.start:s.start + s.size].mean(axis=0), 1e-12)
            b = np.zeros(s.size)
            for _ in range(_CALIBRATION_ITERS):
                p = np.exp(logits + b - (logits + b).max(axis=1, keepdims=True))
                p = (p / p.sum(axis=1, keepdims=True)).mean(axis=0)
                b = np.clip(b + np.log(target) - np.log(np.maximum(p, 1e-300)), -_MAX_LOGIT_OFFSET, _MAX_LOGIT_OFFSET)
            offsets[k] = (b - b.max()).tolist()
        _, num = self.encoder.decode(self._encoded(keys, offsets)[0])
        levels = np.linspace(0.0, 1.0, min(self.config.n_quantiles, len(data), n_samples))
        self.calibration = {
            "logit_offsets": offsets,
            "numeric": [
                {"generated": np.quantile(num[:, j], levels).tolist(), "target": np.quantile(data.numeric[:, j], levels).tolist()}
                for j in range(num.shape[1])
            ],
        }

    # ------------------------------------------------------------------------------------ io
    def save(self, directory: str | Path) -> Path:
        """Write ``generator.pt`` (state_dict), ``config.json`` (architecture, encoder and
        calibration parameters) and ``metrics.json`` into ``directory``, atomically as a set."""
        config = {
            "format": _FORMAT,
            "version": _VERSION,
            "config": self.config.to_json(),
            "generator": {"latent_dim": self.generator.latent_dim,
                          "hidden": [layer.out_features for layer in self.generator.trunk],
                          "head_hidden": head_width(self.generator), "spans": head_spec(self.generator)},
            "encoder": self.encoder.to_json(),
            "calibration": self.calibration,
        }
        return save_model_dir(directory, config, self.generator.state_dict(), GENERATOR_FILE, self.metrics)

    @classmethod
    def load(cls, directory: str | Path) -> UserGAN:
        """Load a directory written by ``save``; ``recsys.artifacts.ModelDirError`` (one line,
        naming the file) if a file is missing, corrupt or inconsistent."""
        directory = Path(directory)
        meta, state, metrics = load_model_dir(directory, GENERATOR_FILE, "user GAN",
                                              "expected a directory written by UserGAN.save", metrics=True)
        with blame_file(directory / CONFIG_FILE, "not a valid user GAN config"):
            if meta.get("format") != _FORMAT:
                raise ValueError(f"format is not {_FORMAT!r}")
            if meta.get("version") != _VERSION:
                raise ValueError(f"version {meta.get('version')!r} is not supported (expected {_VERSION})")
            config = UserGANConfig.from_json(meta["config"])
            encoder = ProfileEncoder.from_json(meta["encoder"])
            arch = meta["generator"]
            spans = [(str(kind), int(size)) for kind, size in arch["spans"]]
            if spans != [(s.kind, s.size) for s in encoder.spans]:
                raise ValueError("generator spans do not match the encoder")
            generator = Generator(int(arch["latent_dim"]), tuple(arch["hidden"]), spans, int(arch["head_hidden"]))
        with blame_file(directory / GENERATOR_FILE, "cannot load the generator weights"):
            generator.load_state_dict(state)
        return cls(config, encoder, generator.eval(), metrics, meta.get("calibration"))
