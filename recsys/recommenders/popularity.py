"""``popularity``: every user gets the offer with the highest click rate in the logs.

The click rate of each offer is its clicks per logged exposure on the training users,
shrunk towards the overall click rate by ``prior_shows`` pseudo-exposures (a Beta prior), so
a rarely shown offer is not ranked first on a lucky click. It ignores the user entirely: the
floor every personalised model has to beat. Written here rather than imported from RecBole
(pinned ray, pickle loads broken by torch >= 2.6, network calls at import): it is a bincount.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from recsys.data.replay import LoggedData
from recsys.recommenders.base import Recommender, State, require


@dataclass
class PopularityConfig:
    section: ClassVar[str] = "recommender.popularity"
    prior_shows: float = 20.0  # pseudo-exposures at the overall click rate added to every offer

    def __post_init__(self) -> None:
        require(self, "prior_shows", math.isfinite(self.prior_shows) and self.prior_shows >= 0, "finite and >= 0")


class PopularityRecommender(Recommender):
    name = "popularity"
    config_class = PopularityConfig

    def _fit(self, train: LoggedData, validation: LoggedData, progress: bool) -> None:
        _, offers, clicks = train.rows("click")
        if len(clicks) == 0:
            raise ValueError("logs: the training users were never sent an offer; popularity needs exposures")
        n = self.spec.n_offers
        shows = np.bincount(offers, minlength=n).astype(np.float64)
        hits = np.bincount(offers, weights=clicks, minlength=n)
        m, overall = self.config.prior_shows, float(clicks.mean())
        self.ctr = np.where(shows + m > 0, (hits + m * overall) / np.maximum(shows + m, 1e-12), overall)

    def predict(self, obs: np.ndarray, state: State | None = None) -> np.ndarray:
        out = np.zeros((len(obs), self.spec.n_actions))
        out[:, 1:] = self.ctr
        return out

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"ctr": torch.as_tensor(self.ctr)}

    def _restore(self, tensors: dict[str, torch.Tensor]) -> None:
        self.ctr = tensors["ctr"].numpy().astype(np.float64)
