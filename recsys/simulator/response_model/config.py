"""What a response model is built from: its hyperparameters (``ResponseModelConfig``; the
``history_encoder`` also chooses the class, see ``network.build_response_model``) and what it
was trained on (``DataSpec``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from envs.checks import check_field_types, require
from envs.world import ProfileSchema
from recsys.data.sequences import SequenceData

ENCODERS = ("gru", "attention", "none", "logistic")
HEADS = ("click", "convert", "churn")


@dataclass
class ResponseModelConfig:
    """Hyperparameters of a response model and of its training (``fit_response_model``)."""

    # gru | attention | none: ResponseModel with that history encoder ("none": no history);
    # logistic: LogisticResponseModel
    history_encoder: str = "gru"
    embed_dim: int = 16
    hidden_dim: int = 64
    epochs: int = 40
    batch_size: int = 256  # users per gradient step ...
    # ... at most: small logs get smaller batches, so an epoch has at least this many gradient
    # steps (MovieLens' 752 training users made 3 a epoch at 256: click AUC 0.617 against 0.667
    # at 32; docs/experiments.md). Logs of >= 256 * this many users are unaffected.
    min_steps_per_epoch: int = 25
    lr: float = 3e-3
    weight_decay: float = 1e-5
    patience: int = 4  # epochs without validation improvement before stopping
    # optional wall-clock cap per member; None (default): epochs and patience alone decide, so the
    # same seed gives the same model however loaded the machine is
    max_seconds: Optional[float] = None  # noqa: UP045 (OmegaConf schemas read Optional, not X | None)
    calibrate: bool = True
    seed: int = 0
    # 1: one model (as always); K > 1: an EnsembleResponseModel of K members, member k fitted
    # on a bootstrap resample of the training users with seed + k (fit.fit_response_model)
    ensemble_size: int = 1
    # share what the model learns about an offer with the other offers of its catalog category:
    # every action's event embedding and head rows are a category part plus an offer part, so a
    # rarely logged offer borrows from its category (and category fatigue is one embedding away).
    # Needs the catalog's categories (the pipeline passes them); held-out click AUC on 50,000
    # logged users +0.003 (wide world) / +0.003 (default), docs/experiments.md
    category_sharing: bool = True
    # decayed counts of past sends of the shown offer and of its category (offer counts only without
    # a catalog) as linear terms of every head's logit (module exposure): greedy policies repeat
    # offers far beyond the logs, where the GRU alone extrapolates arbitrarily: a repeated offer's
    # clicks, learned / true, 1.4-1.9x without them, 0.98-1.10x with them, and held-out click AUC
    # +0.002 to +0.010, in the three world configs (docs/experiments.md)
    exposure_features: bool = True

    def __post_init__(self) -> None:
        check_field_types(self, "response_model")
        if self.history_encoder not in ENCODERS:
            raise ValueError(f"response_model.history_encoder: got {self.history_encoder!r}, expected one of {ENCODERS}")
        for name in ("embed_dim", "hidden_dim", "epochs", "batch_size", "min_steps_per_epoch", "patience", "ensemble_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"response_model.{name}: must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"response_model.lr: must be > 0, got {self.lr}")
        if self.max_seconds is not None and not (math.isfinite(self.max_seconds) and self.max_seconds > 0):
            raise ValueError(f"response_model.max_seconds: must be > 0 or null, got {self.max_seconds}")


@dataclass
class DataSpec:
    """What the model was trained on; a LearnedWorld checks it against its catalog."""

    n_actions: int
    cat_names: list[str]
    cardinalities: list[int]
    num_names: list[str]
    num_loc: list[float]
    num_scale: list[float]
    horizon: int
    # category code of every action (0 = the no-offer action, offers' catalog categories + 1);
    # empty when the model was fitted without a catalog (older model directories)
    action_category: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_field_types(self, "response_model.data")
        require(self.n_actions >= 2, "response_model.data.n_actions", ">= 2 (no offer and at least one offer)",
                self.n_actions)
        require(self.horizon >= 1, "response_model.data.horizon", ">= 1", self.horizon)
        require(len(self.cardinalities) == len(self.cat_names) and min(self.cardinalities, default=1) >= 1,
                "response_model.data.cardinalities", "one count >= 1 per categorical feature", self.cardinalities)
        require(len(self.num_loc) == len(self.num_scale) == len(self.num_names)
                and all(s > 0 for s in self.num_scale), "response_model.data.num_scale",
                "one scale > 0 per numeric feature, with a location", self.num_scale)
        require(not self.action_category or (len(self.action_category) == self.n_actions
                                             and min(self.action_category) >= 0),
                "response_model.data.action_category", f"empty or one code >= 0 per action ({self.n_actions})",
                self.action_category)

    @property
    def n_categories(self) -> int:
        """Category codes of ``action_category`` (0 when there are none)."""
        return max(self.action_category) + 1 if self.action_category else 0

    @property
    def profile_schema(self) -> ProfileSchema:
        """The observable profile this model reads (what ``LearnedWorld`` exposes to the env)."""
        return ProfileSchema(
            categorical=dict(zip(self.cat_names, self.cardinalities, strict=True)),
            numeric={n: (lo, sc) for n, lo, sc in zip(self.num_names, self.num_loc, self.num_scale, strict=True)},
        )

    @classmethod
    def from_data(cls, data: SequenceData, offer_category: np.ndarray | None = None) -> DataSpec:
        """The spec of ``data``; ``offer_category`` (the catalog's category per offer) gives
        ``action_category``."""
        if offer_category is not None and len(offer_category) != data.n_actions - 1:
            raise ValueError(f"catalog.category: {len(offer_category)} offers, but the logs have "
                             f"{data.n_actions - 1}; pass the catalog the logs were made with")
        num = data.profile_num.astype(np.float64)
        scale = num.std(axis=0) if len(num) else np.zeros(0)
        return cls(
            n_actions=data.n_actions, cat_names=list(data.cat_names), cardinalities=list(data.cardinalities),
            num_names=list(data.num_names), num_loc=num.mean(axis=0).tolist(),
            num_scale=np.where(scale > 0, scale, 1.0).tolist(), horizon=data.horizon,
            action_category=[] if offer_category is None else [0, *(np.asarray(offer_category) + 1).tolist()],
        )

