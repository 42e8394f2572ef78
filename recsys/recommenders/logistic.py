"""``logistic``: a logistic-regression CTR model on [observation, one-hot offer].

logit p(target | x, a) = w·z + b_a + u_a·z, with z the standardised observation. The
observation×offer interaction u_a (``interactions=True``) is one (obs_dim, n_offers) linear
layer, so it costs nothing extra and all offers are scored in one matrix product; without it
the offer ranking would be the same for every user. L2 through ``weight_decay``. The same
class with ``target="conversion"`` is the p(convert | click) model of ``value_ranker``.
Written here (not DeepCTR-Torch: pinned deps, pickle loads broken by torch >= 2.6, network
calls at import) because it is one linear layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from recsys.recommenders.base import TARGETS, PointwiseRecommender, Standardise, TrainConfig, require


@dataclass
class LogisticConfig(TrainConfig):
    section: ClassVar[str] = "recommender.logistic"
    target: str = "click"  # click | conversion (p(convert | click), fitted on clicked rows)
    interactions: bool = True  # observation x offer weights (one per offer and feature)
    weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self, "target", self.target in TARGETS, f"one of {TARGETS}")


class _LogisticNet(nn.Module):
    def __init__(self, obs_dim: int, n_offers: int, interactions: bool) -> None:
        super().__init__()
        self.norm = Standardise(obs_dim)
        self.shared = nn.Linear(obs_dim, 1)
        self.offer_bias = nn.Parameter(torch.zeros(n_offers))
        self.cross = nn.Linear(obs_dim, n_offers, bias=False) if interactions else None
        if self.cross is not None:
            nn.init.zeros_(self.cross.weight)

    def fit_standardiser(self, x: np.ndarray) -> None:
        self.norm.fit(x)

    def forward(self, x: torch.Tensor, offers: torch.Tensor | None) -> torch.Tensor:
        z = self.norm(x)
        logits = self.shared(z) + self.offer_bias
        if self.cross is not None:
            logits = logits + self.cross(z)
        return logits if offers is None else logits.gather(1, offers)


class LogisticRecommender(PointwiseRecommender):
    name = "logistic"
    config_class = LogisticConfig

    def _build(self) -> nn.Module:
        return _LogisticNet(self.spec.obs_dim, self.spec.n_offers, self.config.interactions)
