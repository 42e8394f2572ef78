"""The one recommender interface, the data it is fitted on, and what every model shares.

A recommender is fitted on logged data only: training and validation ``LoggedData`` (the
per-user sequences plus the replayed observations and action masks every logged decision was
taken on, so features at training time are exactly the ones it sees when acting). It then
scores every action for a batch of observations:

* ``predict(obs, state) -> (N, n_actions)``: the model's own prediction per action, a
  probability of its target (``p(click)``, or ``p(convert | click)``) when
  ``predicts_probabilities``, else a ranking score. Column 0 ("no offer") is 0.
* ``scores(obs, state) -> (N, n_actions)``: what a policy maximises (greedy) or exponentiates
  (softmax). Click models score offers by log-odds (or raw ranking score) and set
  ``always_sends``: they only decide *which* offer to send, so a policy sends one whenever any
  offer is allowed (the score of action 0 is then unused). A model that can rest
  (``always_sends = False``, the value ranker) scores action 0 as "send nothing", i.e. an
  expected profit of 0.

Stateful models (``stateful = True``: MF folds in a user vector, GRU4Rec keeps a hidden
state) keep per-user state as a dict of arrays or tensors with a leading user dimension:
``initial_state(obs)`` builds it from the profile part of the observation and
``advance(state, obs, actions, click, conversion, active)`` updates it after a step. The same
two calls replay the logged history in ``logged`` (hence ``offline_metrics``), so offline
metrics and online acting run the same code.

``offline_metrics(test)`` reports, on held-out users, the AUC (and logloss, with the logloss
of the best constant predictor of the same rows) of the prediction on logged exposures, and
for click models HR@k / NDCG@k of the clicked offer among the offers allowed at that step
(ties count against the model, so a constant scorer gets no credit).

Written here instead of imported: RecBole and DeepCTR-Torch are not usable in this stack
(pinned ray, pickle loads broken by torch >= 2.6, network calls at import),
and each baseline is a few dozen lines of PyTorch or numpy on top of this module.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from recsys.artifacts import CONFIG_FILE, ModelDirError, blame_file, load_model_dir, save_model_dir
from recsys.data.replay import FeatureSpec, LoggedData, replay_history
from recsys.numerics import flush_denormals
from recsys.stats import log_loss, roc_auc
from recsys.training import fit_early_stopping

State = dict[str, Any]  # per-user numpy arrays or torch tensors, leading dimension = users
TARGETS = ("click", "conversion")
WEIGHTS_FILE = "weights.pt"
_EPS = 1e-7  # probability clip for logloss and log-odds
_CHUNK = 16_384  # rows per forward pass when scoring many logged rows


# ------------------------------------------------------------------------------------ configs
def require(config: Any, name: str, ok: bool, expected: str) -> None:
    """Raise the one-line ``ValueError`` naming ``<section>.<name>`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{config.section}.{name}: must be {expected}, got {getattr(config, name)!r}")


@dataclass
class TrainConfig:
    """Optimisation settings shared by the PyTorch recommenders (Adam, early stopping on the
    validation loss, best weights restored)."""

    section: ClassVar[str] = "recommender"
    epochs: int = 30
    batch_size: int = 256  # rows (or users, for sequence models) per gradient step
    lr: float = 3e-3
    weight_decay: float = 1e-5
    patience: int = 3  # epochs without validation improvement before stopping
    max_seconds: float | None = None  # optional wall-clock cap; None: epochs and patience decide
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience"):
            require(self, name, getattr(self, name) >= 1, ">= 1")
        require(self, "lr", math.isfinite(self.lr) and self.lr > 0, "> 0")
        if self.max_seconds is not None:
            require(self, "max_seconds", math.isfinite(self.max_seconds) and self.max_seconds > 0, "> 0 or null")
        require(self, "weight_decay", self.weight_decay >= 0, ">= 0")


# ------------------------------------------------------------------------------------ metrics
def ranking_metrics(pred: np.ndarray, logged: LoggedData, k: int) -> dict[str, float]:
    """HR@k and NDCG@k of the clicked offer among the offers allowed at that step."""
    d = logged.data
    rows = logged.selection("click") & (d.click > 0)
    scores, allowed, target = pred[rows][:, 1:], logged.masks[rows][:, 1:], d.actions[rows] - 1
    mine = scores[np.arange(len(target)), target][:, None]
    rank = (allowed & (scores >= mine)).sum(axis=1) - 1  # 0 = first; ties rank the target last
    hit = rank < k
    return {f"hr_at_{k}": float(hit.mean()) if len(hit) else float("nan"),
            f"ndcg_at_{k}": float(np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0).mean()) if len(hit) else float("nan"),
            "n_ranked": int(rows.sum())}


# ------------------------------------------------------------------------------------ the interface
class Recommender(ABC):
    """Fitted on logs, scores every action for a batch of observations (module docstring)."""

    name: ClassVar[str]
    config_class: ClassVar[type]
    always_sends: ClassVar[bool] = True
    stateful: ClassVar[bool] = False
    predicts_probabilities: ClassVar[bool] = True

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.config_class()
        if not isinstance(self.config, self.config_class):
            raise TypeError(f"config: expected {self.config_class.__name__}, got {type(self.config).__name__}")
        self.spec: FeatureSpec | None = None
        self.fit_seconds: float | None = None

    @property
    def target(self) -> str:
        return getattr(self.config, "target", "click")

    def fit(self, train: LoggedData, validation: LoggedData, progress: bool = False) -> Recommender:
        """Fit on ``train`` (``validation`` selects the stopping epoch); returns ``self``."""
        start = time.perf_counter()
        self.spec = train.spec
        with flush_denormals():
            self._fit(train, validation, progress)
        self.fit_seconds = time.perf_counter() - start
        return self

    @abstractmethod
    def _fit(self, train: LoggedData, validation: LoggedData, progress: bool) -> None: ...

    @abstractmethod
    def predict(self, obs: np.ndarray, state: State | None = None) -> np.ndarray:
        """(N, n_actions) prediction per action; column 0 is 0."""

    def scores(self, obs: np.ndarray, state: State | None = None) -> np.ndarray:
        """(N, n_actions) what a policy ranks by: log-odds of ``predict`` for probability
        models, ``predict`` itself otherwise; column 0 is 0."""
        p = self.predict(obs, state)
        if self.predicts_probabilities:
            p = np.clip(p, _EPS, 1 - _EPS)
            p = np.log(p) - np.log1p(-p)
        p[:, 0] = 0.0
        return p

    def initial_state(self, obs: np.ndarray) -> State | None:
        """Per-user state of users at the start of an episode (None: stateless)."""
        return None

    def advance(self, state: State | None, obs: np.ndarray, actions: np.ndarray, click: np.ndarray,
                conversion: np.ndarray, active: np.ndarray) -> State | None:
        """State after each user saw ``actions`` on ``obs``; rows not ``active`` unchanged."""
        return state

    def logged(self, logged: LoggedData, method: str = "predict") -> np.ndarray:
        """(U, T, n_actions) ``predict`` (or ``scores``) at every logged step, stateful models
        replaying each user's logged history before that step; zeros on padding."""
        fn: Callable[[np.ndarray, State | None], np.ndarray] = getattr(self, method)
        d = logged.data
        if not self.stateful:  # no history to replay: all logged rows at once
            rows = logged.obs[d.mask]
            out = np.zeros((*d.mask.shape, self.spec.n_actions))
            out[d.mask] = np.concatenate([fn(rows[i:i + _CHUNK], None) for i in range(0, len(rows), _CHUNK)] or
                                         [np.zeros((0, out.shape[-1]))])
            return out
        state = self.initial_state(logged.obs[:, 0])

        def advance(t: int, active: np.ndarray) -> None:
            nonlocal state
            state = self.advance(state, logged.obs[:, t], d.actions[:, t], d.click[:, t] > 0,
                                 d.conversion[:, t] > 0, active)

        return replay_history(logged, lambda t, _: fn(logged.obs[:, t], state), advance, self.spec.n_actions)

    def offline_metrics(self, test: LoggedData, k: int = 5) -> dict[str, float]:
        """Metrics of the prediction on held-out users (module docstring)."""
        d, pred = test.data, self.logged(test)
        sel = test.selection(self.target)
        y = (d.conversion if self.target == "conversion" else d.click)[sel]
        p = pred[sel][np.arange(int(sel.sum())), d.actions[sel]]
        t = self.target
        out: dict[str, float] = {f"{t}_auc": roc_auc(y, p), f"n_{t}_rows": int(sel.sum()), f"n_{t}_positives": int(y.sum())}
        if self.predicts_probabilities:
            out[f"{t}_logloss"] = log_loss(y, p)
            out[f"{t}_logloss_base"] = log_loss(y, np.full(len(y), y.mean() if len(y) else 0.5))
        if t == "click":
            out.update(ranking_metrics(pred, test, k))
        return out

    # ---------------------------------------------------------------- persistence
    def _tensors(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _restore(self, tensors: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def save(self, directory: str | Path) -> Path:
        """``config.json`` (name, config, feature spec) and ``weights.pt`` (a dict of tensors),
        written atomically as a set (``recsys.artifacts.save_model_dir``)."""
        if self.spec is None:
            raise ValueError(f"{self.name}: not fitted; call fit() before save()")
        meta = {"recommender": self.name, "config": asdict(self.config), "spec": asdict(self.spec),
                "fit_seconds": self.fit_seconds}
        return save_model_dir(directory, meta, self._tensors(), WEIGHTS_FILE)

    @classmethod
    def load(cls, directory: str | Path) -> Recommender:
        """Load a directory written by ``save``; one-line errors naming the file at fault."""
        directory = Path(directory)
        meta, tensors, _ = load_model_dir(directory, WEIGHTS_FILE, "recommender", "save() writes it")
        if meta.get("recommender") != cls.name:
            raise ModelDirError(
                f"{directory / CONFIG_FILE}: holds recommender {meta.get('recommender')!r}, not {cls.name!r}")
        with blame_file(directory / CONFIG_FILE, f"not a {cls.name} config"):
            rec = cls(cls.config_class(**meta["config"]))
            rec.spec, rec.fit_seconds = FeatureSpec(**meta["spec"]), meta.get("fit_seconds")
        with blame_file(directory / WEIGHTS_FILE, f"cannot load the {cls.name} weights"):
            rec._restore(tensors)
        return rec


# ------------------------------------------------------------------------------------ PyTorch models
class Standardise(nn.Module):
    """Feature-wise (x - loc) / scale with the statistics stored as buffers."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    def fit(self, x: np.ndarray) -> None:
        sd = x.std(axis=0)
        self.loc.copy_(torch.as_tensor(x.mean(axis=0)))
        self.scale.copy_(torch.as_tensor(np.where(sd > 1e-6, sd, 1.0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.loc) / self.scale


def train_module(
    module: nn.Module, loss_fn: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor],
    train: dict[str, torch.Tensor], validation: dict[str, torch.Tensor], config: TrainConfig,
    desc: str, progress: bool,
) -> float:
    """``recsys.training.fit_early_stopping`` on the rows (or users) of ``train``, the
    validation loss taken on all of ``validation`` at once; restores the best weights and
    returns the best validation loss. Reseeds the global torch RNG from ``config.seed``."""
    torch.manual_seed(config.seed)
    return fit_early_stopping(module, loss_fn, train, lambda m: float(loss_fn(m, validation)), config, desc,
                              progress, leave_bar=False)


class TorchRecommender(Recommender):
    """A recommender whose parameters live in one ``nn.Module`` built from spec and config."""

    module: nn.Module

    @abstractmethod
    def _build(self) -> nn.Module: ...

    def _tensors(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def _restore(self, tensors: dict[str, torch.Tensor]) -> None:
        self.module = self._build()
        self.module.load_state_dict(tensors)
        self.module.eval()


class PointwiseRecommender(TorchRecommender):
    """p(target | observation, offer) fitted with binary cross-entropy on logged exposures
    (clicked exposures for ``target="conversion"``). The module maps observations (N, D) and
    offer indices (N, m), or None for all offers, to (N, m) logits, and has
    ``fit_standardiser(x)`` for the statistics of its inputs on the training rows."""

    def _fit(self, train: LoggedData, validation: LoggedData, progress: bool) -> None:
        (x, o, y), (xv, ov, yv) = train.rows(self.target), validation.rows(self.target)
        for split, labels in (("training", y), ("validation", yv)):
            if len(labels) == 0 or labels.min() == labels.max():
                raise ValueError(f"logs: the {split} users have no {self.target} rows with both outcomes; "
                                 f"{self.name} needs positive and negative {self.target} labels")
        torch.manual_seed(self.config.seed)
        self.module = self._build()
        self.module.fit_standardiser(x)

        def tensors(x: np.ndarray, o: np.ndarray, y: np.ndarray) -> dict[str, torch.Tensor]:
            return {"x": torch.as_tensor(x), "o": torch.as_tensor(o)[:, None], "y": torch.as_tensor(y)}

        def loss(module: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
            return nn.functional.binary_cross_entropy_with_logits(module(b["x"], b["o"])[:, 0], b["y"])

        self._train(loss, tensors(x, o, y), tensors(xv, ov, yv), progress)

    def _train(self, loss: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor],
               train: dict[str, torch.Tensor], validation: dict[str, torch.Tensor], progress: bool) -> None:
        train_module(self.module, loss, train, validation, self.config, f"{self.name} ({self.target})", progress)

    @torch.no_grad()
    def predict(self, obs: np.ndarray, state: State | None = None) -> np.ndarray:
        p = torch.sigmoid(self.module(torch.as_tensor(obs, dtype=torch.float32), None)).numpy()
        return np.concatenate([np.zeros((len(p), 1)), p.astype(np.float64)], axis=1)
